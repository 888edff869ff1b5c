"""The dashboard (`/ui/`, docs/dashboard.md) in a real browser: Debian's headless Chromium driven by Selenium
against a real `rollwise server` process with the example model server's routes behind Traefik.

- Auth: without the token only the login view loads; a wrong token is refused with the API's words; the
  right one is asked once (it survives a reload, in session storage only), every /v1 call the page makes
  carries it as the bearer header and no URL ever holds it; signing out forgets it.
- A blue-green rollout followed live: the deployments page shows the deployment ready (2/2), the
  deployment page shows the sub-step change without a reload once the rollout starts, offers exactly the
  verbs the server says apply (Promote, Pause, Abort while awaiting promotion), and Promote completes the
  rollout; a press of a verb that stopped applying (another operator paused first) shows the API's 409 as
  it is; the timeline chart of the rollout is drawn with data points and its started and completed
  marks. An unknown deployment shows the API's 404 as it is.

Screenshots of the deployments page and the deployment page at 1280x800 and of a phone-width view go to
the directory named by ROLLWISE_SCREENSHOTS (default: the test's temporary directory); docs/images holds
the ones committed. Skipped with a clear message without Chromium unless CI is set (tests/e2e/browser.py).
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from rollwise.cli.demo import free_port

from .browser import chromium, require_chromium, requests, set_viewport, wait_dom
from .conftest import model_revision
from .server_proc import ServerProcess, route_processes, traefik_pid

pytestmark = pytest.mark.e2e
NAME = "sentiment"
OTHER = "summarizer"
TOKEN = "dashboard-test-token"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One `rollwise server` for the module; stopped, with whatever it left killed, when the module ends."""
    require_chromium()  # before starting anything
    root = tmp_path_factory.mktemp("dashboard")
    proc = ServerProcess(root / "data", api_port=free_port(), proxy_port=free_port(), token=TOKEN)
    try:
        proc.start()
        yield proc
    finally:
        try:
            proc.stop(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        left = route_processes(proc.data_dir) | ({p} if (p := traefik_pid(proc.data_dir)) else set())
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    where = Path(os.environ.get("ROLLWISE_SCREENSHOTS") or tmp_path / "screenshots")
    where.mkdir(parents=True, exist_ok=True)
    return where


def js(driver: Any, script: str, *args: Any) -> Any:
    return driver.execute_script(script, *args)


def text_of(driver: Any, selector: str) -> str | None:
    """The text of the first element matching `selector` (textContent, whitespace squeezed), or None."""
    found = js(driver, "const e = document.querySelector(arguments[0]); return e ? e.textContent : null;", selector)
    return " ".join(found.split()) if found is not None else None


def shown(driver: Any, element_id: str) -> bool:
    return bool(js(driver, "const e = document.getElementById(arguments[0]); return !!e && !e.hidden;", element_id))


def sign_in(driver: Any, token: str) -> None:
    field = driver.find_element("id", "token")
    field.clear()
    field.send_keys(token)
    driver.find_element("id", "login-button").click()


def verbs(driver: Any) -> list[str]:
    return list(js(driver, "return [...document.querySelectorAll('button.verb')].map(b => b.dataset.verb);"))


def context(server: ServerProcess, driver: Any) -> Any:
    return lambda: f"page: {text_of(driver, 'main')!r}\nserver log:\n{server.log_tail()}"


# ------------------------------------------------------------------------------------------------- tests


def test_the_token_is_asked_once_kept_in_the_session_and_sent_only_as_the_bearer_header(
    server: ServerProcess, tmp_path: Path
) -> None:
    # The static files load without the token; the API does not answer without it.
    assert httpx.get(f"{server.url}/ui/app.js").status_code == 200
    assert httpx.get(f"{server.url}/v1/deployments").status_code == 401
    with chromium(tmp_path / "profile", network_log=True) as driver:
        driver.get(f"{server.url}/ui/")
        wait_dom("the login view", lambda: shown(driver, "login") and not shown(driver, "view"))
        assert text_of(driver, "#view") == "" and text_of(driver, "#live") == "not signed in"

        sign_in(driver, "not-the-token")
        error = wait_dom("the refusal", lambda: text_of(driver, "#login-error"))
        assert error == "401 unauthorized: wrong bearer token", error
        assert js(driver, "return sessionStorage.length") == 0 and shown(driver, "login")

        sign_in(driver, TOKEN)
        wait_dom("the deployments page", lambda: shown(driver, "view") and text_of(driver, "#view h1") == "Deployments"
                 and (text_of(driver, "#live") or "").startswith("live"), context=context(server, driver))
        assert js(driver, "return sessionStorage.getItem('rollwise.token')") == TOKEN
        assert js(driver, "return localStorage.length") == 0 and js(driver, "return document.cookie") == ""

        driver.refresh()  # asked once: a reload of the tab keeps it
        wait_dom("the deployments page after a reload", lambda: text_of(driver, "#view h1") == "Deployments"
                 and not shown(driver, "login"))

        sent = requests(driver)
        api = [r for r in sent if "/v1/" in r["url"]]
        assert api, sent
        tokens = {r["headers"].get("Authorization") for r in api if r["headers"].get("Authorization") != "Bearer not-the-token"}
        assert tokens == {f"Bearer {TOKEN}"}, api
        assert not [r["url"] for r in sent if TOKEN in r["url"] or "not-the-token" in r["url"]]
        assert TOKEN not in driver.current_url

        driver.find_element("id", "signout").click()
        wait_dom("the login view after signing out", lambda: shown(driver, "login") and not shown(driver, "view"))
        assert js(driver, "return sessionStorage.getItem('rollwise.token')") is None


def test_a_blue_green_rollout_is_followed_live_promoted_and_charted(
    server: ServerProcess, tmp_path: Path, shots: Path, request: pytest.FixtureRequest
) -> None:
    api = server.client()
    request.addfinalizer(api.close)
    for name, replicas, policy in ((NAME, 2, {"strategy": "blue_green"}), (OTHER, 1, {"strategy": "rolling"})):
        r = api.post("/v1/deployments", json={"name": name, "replicas": replicas, "policy": policy,
                                              "revision": model_revision("v1")})
        assert r.status_code == 201, r.text

    with chromium(tmp_path / "profile") as driver:
        see = context(server, driver)
        driver.get(f"{server.url}/ui/")
        sign_in(driver, TOKEN)
        row = f"tr[data-name='{NAME}']"
        wait_dom("the deployment ready on the deployments page",
                 lambda: text_of(driver, f"{row} .lifecycle") == "✓ ready" and text_of(driver, f"{row} .ready-count") == "2/2",
                 context=see)

        driver.find_element("css selector", f"{row} a.name").click()
        wait_dom("the deployment page", lambda: text_of(driver, "#fact-lifecycle") == "✓ ready", context=see)
        js(driver, "window.notReloaded = true;")
        assert text_of(driver, "#fact-sub-step") == "–" and verbs(driver) == []

        # A rollout started elsewhere (the API) shows up by itself: no reload, the sub-step moves.
        # v2's processes take 2 s to listen: long enough for the page to show the rollout's first sub-step.
        v2 = model_revision("v2", "--startup-delay", "2")
        number = api.post(f"/v1/deployments/{NAME}/revisions", json=v2).json()["number"]
        assert api.post(f"/v1/deployments/{NAME}/rollout", json={"revision": number}).status_code == 202
        seen: list[str] = []

        def sub_step() -> bool:
            now = text_of(driver, "#fact-sub-step") or ""
            if not seen or seen[-1] != now:
                seen.append(now)
            return now == "‖ awaiting promotion"

        wait_dom("the sub-step to reach awaiting promotion", sub_step, context=lambda: f"seen: {seen}\n{see()}")
        assert seen[0] == "–" and len(seen) >= 3, seen  # none, the rollout's first sub-step(s), awaiting promotion
        assert js(driver, "return window.notReloaded") is True

        # Exactly the verbs the server offers now, in the page's order.
        wait_dom("the verbs awaiting promotion", lambda: verbs(driver) == ["promote", "pause", "abort"], context=see)
        assert api.get(f"/v1/deployments/{NAME}/actions").json()["actions"] == ["promote", "pause", "abort"]
        wait_dom("the chart with both revisions", lambda: js(
            driver, "const c = document.getElementById('timeline-chart'); return c && c.dataset.revisions") == "1,2",
            context=see)
        driver.save_screenshot(str(shots / "dashboard-deployment.png"))

        # The deployments page shows the rollout too (a hash change: still no reload).
        driver.find_element("css selector", "#crumbs a").click()
        wait_dom("the rollout on the deployments page", lambda: text_of(driver, f"{row} .sub-step") == "‖ awaiting promotion"
                 and text_of(driver, f"{row} td[data-label='Deploying']") == f"r{number}", context=see)
        driver.save_screenshot(str(shots / "dashboard-deployments.png"))
        driver.find_element("css selector", f"{row} a.name").click()
        wait_dom("the promote button", lambda: verbs(driver) == ["promote", "pause", "abort"], context=see)

        # Another operator pauses the rollout; a press of the Pause button the page still shows (in the same
        # task as that pause's answer, before any new round could redraw it) gets the API's 409, shown as is.
        pressed = driver.execute_async_script("""
            const done = arguments[arguments.length - 1];
            fetch(arguments[0], {method: "POST", headers: {
                Authorization: "Bearer " + sessionStorage.getItem("rollwise.token")}}).then((answer) => {
              const button = document.querySelector("button.verb-pause");
              if (button) button.click();
              done([answer.status, Boolean(button)]);
            });
        """, f"/v1/deployments/{NAME}/pause")
        assert pressed == [202, True], pressed
        refusal = wait_dom("the refusal shown", lambda: text_of(driver, ".verb-result .error"), context=see)
        assert refusal.endswith(f"pause: 409 verb.not_applicable: deployment '{NAME}': the rollout is already paused"), refusal
        wait_dom("resume offered", lambda: verbs(driver) == ["resume", "abort"], context=see)
        assert api.post(f"/v1/deployments/{NAME}/resume").status_code == 202
        wait_dom("the promote button again", lambda: verbs(driver) == ["promote", "pause", "abort"], context=see)

        driver.find_element("css selector", "button.verb-promote").click()
        wait_dom("the rollout completed", lambda: text_of(driver, "#fact-sub-step") == "✓ completed"
                 and text_of(driver, "#fact-lifecycle") == "✓ ready" and text_of(driver, "#fact-serving") == f"r{number}",
                 context=see)
        result = text_of(driver, ".verb-result") or ""
        assert result.endswith("promote: accepted (202), the server carries it out"), result
        wait_dom("undo offered once it completed", lambda: verbs(driver) == ["undo"], context=see)
        assert js(driver, "return window.notReloaded") is True

        # The finished rollout's chart: ready routes per revision as dots, started and completed marks.
        chart = wait_dom("the finished rollout's chart", lambda: js(driver, """
            const c = document.getElementById('timeline-chart');
            if (!c || !document.querySelector('#rollout-select option')) return null;
            return {points: c.querySelectorAll('circle.point').length, declared: Number(c.dataset.points),
                    kinds: [...c.querySelectorAll('.mark')].map(m => m.dataset.kind),
                    revisions: c.dataset.revisions, caption: document.querySelector('.chart-caption').textContent};
        """) if "completed" in (text_of(driver, ".chart-caption") or "") else None, context=see)
        assert chart["points"] > 0 and chart["points"] == chart["declared"], chart
        assert {"started", "completed"} <= set(chart["kinds"]) and chart["revisions"] == "1,2", chart
        ready_lines = js(driver, "return [...document.querySelectorAll('#timeline-chart path.line')].map(p => p.dataset.revision)")
        assert sorted(ready_lines) == ["1", "2"], ready_lines
        driver.save_screenshot(str(shots / "dashboard-timeline.png"))

        set_viewport(driver, 390, 844)
        wait_dom("the chart redrawn for a phone", lambda: js(
            driver, "const c = document.getElementById('timeline-chart'); return c && c.getAttribute('width')") == str(
            js(driver, "return document.getElementById('timeline').clientWidth")))
        js(driver, "document.querySelectorAll('.panel')[1].scrollIntoView()")  # the verbs, then the chart
        driver.save_screenshot(str(shots / "dashboard-phone.png"))
        set_viewport(driver, 1280, 800)

        # Back to the list (no reload): both deployments, the finished rollout's revision serving.
        driver.find_element("css selector", "#crumbs a").click()
        wait_dom("the deployments page", lambda: text_of(driver, f"{row} td[data-label='Serving']") == f"r{number}"
                 and text_of(driver, f"tr[data-name='{OTHER}'] .lifecycle") == "✓ ready", context=see)
        assert js(driver, "return window.notReloaded") is True

        # An API error is shown as the API said it.
        driver.get(f"{server.url}/ui/#/d/nobody")
        error = wait_dom("the 404", lambda: text_of(driver, ".page-note .error"), context=see)
        assert error == "404 not_found: deployment 'nobody' not found", error
