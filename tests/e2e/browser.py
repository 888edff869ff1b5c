"""Headless Chromium for the dashboard's browser tests: Debian's `chromium` and `chromium-driver` packages
driven by Selenium, nothing downloaded at run time (the driver's path is given, so Selenium Manager never
runs).

`require_chromium()` skips the calling test with a clear message when the browser, its driver or Selenium
is missing and `CI` is unset, and fails it when `CI` is set (`.ci/run` installs them). `chromium(...)`
starts a browser with a fresh profile under the given directory and always quits it (the driver stops the
browser and its helpers), even when the test fails.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
FLAGS = (
    # The network is closed: without these, Chromium keeps trying to reach Google's services.
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--disable-extensions", "--disable-default-apps", "--mute-audio",
    "--hide-scrollbars", "--force-color-profile=srgb", "--lang=en-US",
)


def require_chromium() -> None:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package (pip install -e '.[dev]')")
    if not missing:
        return
    message = (f"browser tests need {', '.join(missing)}: apt-get install -y chromium chromium-driver "
               "(.ci/run installs them)")
    if os.environ.get("CI"):
        pytest.fail(message + "; CI is set, so this is a failure, not a skip")
    pytest.skip(message)


@contextmanager
def chromium(profile: Path, *, width: int = 1280, height: int = 800, network_log: bool = False) -> Iterator[Any]:
    """A Selenium WebDriver of a headless Chromium whose viewport is `width` x `height` CSS pixels.
    `network_log`: keep the DevTools performance log, whose Network events `requests(driver)` reads."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.add_argument(f"--window-size={width},{height}")
    if network_log:
        options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    service = Service(executable_path=str(CHROMEDRIVER), log_output=os.devnull)
    driver = webdriver.Chrome(options=options, service=service)
    try:
        set_viewport(driver, width, height)
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def set_viewport(driver: Any, width: int, height: int) -> None:
    """Make the page's viewport (not the window) `width` x `height` CSS pixels, as a phone's would be."""
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600,
    })


def requests(driver: Any) -> list[dict[str, Any]]:
    """The requests the page sent since the last call (url, method, headers), from the performance log."""
    sent = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") == "Network.requestWillBeSent":
            request = message["params"]["request"]
            sent.append({"url": request["url"], "method": request["method"], "headers": request.get("headers", {})})
    return sent


def wait_dom(what: str, check: Callable[[], Any], *, timeout: float = 30.0, context: Callable[[], str] = str) -> Any:
    """Poll `check` (a vanished or not yet present element counts as "not yet") until it returns something
    truthy; on timeout the error names `what`, the last answer and `context()` (e.g. the server's log)."""
    from selenium.common.exceptions import WebDriverException

    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = check()
            if last:
                return last
        except WebDriverException as e:
            last = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; last: {last!r}\n{context()}")
        time.sleep(0.05)
