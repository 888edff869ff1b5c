"""Many deployments on one server, as a platform team would use it: a real `rollwise server` (simulated
runtime, no proxy, SQLite in a temporary data directory unless --database) and an HTTP client with 16
requests in flight.

Phases (each timed on the client's wall clock):

1. create N deployments of 4 replicas (`POST /v1/deployments`), then wait until all are READY;
2. add a revision to each (`POST .../revisions`), then start a rollout on each (`POST .../rollout`);
3. wait until every rollout is done (READY on revision 2), timed from the last rollout started;
4. page timing at the size reached: `GET /v1/deployments?limit=100` (first page and pages found by
   following cursors), full and `summary=true`, p50/p99 over --page-samples calls; one `rollwise get`
   over everything (it pages through);
5. the server's RSS (VmRSS of its process, /proc).

Every answer is counted by status; a 5xx (e.g. 503 `database is locked`) is a refusal the client did
nothing to earn, and the run reports each distinct message.

`--baseline REV` runs the same phases against the server of git revision REV in the same run (its `src/`
exported to a temporary directory and put first on the server's PYTHONPATH), then against this tree,
and prints both and the ratios. Against a server without paging the waits read the whole list each time.

    .venv/bin/python benchmarks/scale.py [--deployments 2000] [--concurrency 16] [--baseline REV]
        [--database URL] [--replicas 4] [--page-samples 200]

Prints a table per run and, last, one JSON line. Traffic stays on 127.0.0.1; it stops by itself (every
wait is bounded by --timeout).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rollwise.cli.demo import free_port  # noqa: E402
from tests.e2e.server_proc import ROLLWISE, ServerProcess  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
NOT_READY = ["pending", "scaling", "deploying", "destroying"]


def revision(label: str) -> dict[str, Any]:
    # The simulated runtime runs nothing: the command is only stored.
    return {"command": ["model-server", "--port", "{port}", "--version", label], "label": label}


class Tally:
    """Answers by status, and the distinct messages of the 5xx ones."""

    def __init__(self) -> None:
        self.statuses: Counter[int] = Counter()
        self.errors: Counter[str] = Counter()

    def add(self, answer: httpx.Response) -> None:
        self.statuses[answer.status_code] += 1
        if answer.status_code >= 500:
            try:
                message = answer.json().get("message", answer.text)
            except ValueError:
                message = answer.text[:200]
            self.errors[f"{answer.status_code} {message}"] += 1

    @property
    def refused(self) -> int:
        return sum(n for status, n in self.statuses.items() if status >= 500)


async def run_all(n: int, concurrency: int, work: Callable[[int], Awaitable[None]]) -> float:
    """Run work(0..n-1) with `concurrency` in flight; the wall time in seconds."""
    queue = iter(range(n))

    async def worker() -> None:
        for i in queue:
            await work(i)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started


async def list_all(client: httpx.AsyncClient, **params: Any) -> list[dict[str, Any]]:
    """Every deployment, following the cursor when the server pages (an old server sends all at once
    and ignores the parameters it does not know)."""
    found: list[dict[str, Any]] = []
    query: dict[str, Any] = {"limit": 1000, **params}
    while True:
        answer = await client.get("/v1/deployments", params=query, timeout=120)
        answer.raise_for_status()
        found.extend(answer.json())
        cursor = answer.headers.get("x-next-cursor")
        if not cursor:
            return found
        query["cursor"] = cursor


async def wait_until(what: str, check: Callable[[], Awaitable[bool]], timeout: float) -> float:
    """Poll `check` until true; seconds it took. Raises TimeoutError naming `what`."""
    started = time.perf_counter()
    while not await check():
        if time.perf_counter() - started > timeout:
            raise TimeoutError(f"{what}: not done after {timeout:.0f} s")
        await asyncio.sleep(1.0)
    return time.perf_counter() - started


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


async def measure(server: ServerProcess, args: argparse.Namespace) -> dict[str, Any]:
    n, replicas = args.deployments, args.replicas
    names = [f"model-{i:05d}" for i in range(n)]
    limits = httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=args.concurrency)
    headers = {"Authorization": f"Bearer {server.token}"}
    out: dict[str, Any] = {"deployments": n, "replicas": replicas, "concurrency": args.concurrency}
    async with httpx.AsyncClient(base_url=server.url, headers=headers, limits=limits, timeout=60) as client:
        creates = Tally()

        created: set[str] = set()
        rolled: set[str] = set()

        async def create(i: int) -> None:
            body = {"name": names[i], "replicas": replicas, "policy": {"strategy": "rolling", "max_surge": 1},
                    "revision": revision("v1")}
            answer = await client.post("/v1/deployments", json=body)
            creates.add(answer)
            if answer.status_code == 201:
                created.add(names[i])

        seconds = await run_all(n, args.concurrency, create)
        out["create_s"] = round(seconds, 2)
        out["creates_per_s"] = round(n / seconds, 1)
        out["create_statuses"] = dict(creates.statuses)

        async def all_ready(revision_number: int) -> bool:
            assert server.proc is not None
            if server.proc.poll() is not None:
                raise RuntimeError(f"the server exited with {server.proc.returncode}: {server.log_tail()}")
            # A refused create (a 5xx) made no deployment, a refused revision or rollout no rollout.
            wanted = created if revision_number == 1 else rolled

            def done(d: dict[str, Any]) -> bool:
                # A refused (5xx) revision or rollout may still have been written before the refusal:
                # such a deployment may end on either revision.
                ends = (revision_number,) if d["name"] in wanted else (1, revision_number)
                return d["lifecycle"] == "ready" and d["ready_replicas"] == replicas and d["current_revision"] in ends

            # First only those not READY (a server without filters sends all: they are sorted out here),
            # so the wait itself costs the server little; then everything once, to be sure.
            busy = await list_all(client, summary="true", lifecycle=NOT_READY)
            if any(not done(d) for d in busy):
                return False
            deps = await list_all(client, summary="true")
            return len(deps) >= len(wanted) and all(done(d) for d in deps)

        try:
            out["ready_after_create_s"] = round(await wait_until("all READY", lambda: all_ready(1), args.ready_timeout),
                                                2)
        except TimeoutError:
            if not args.no_rollouts:
                raise
            out["ready_after_create_s"] = f"> {args.ready_timeout:g}"  # measured at what was reached
        listed = await list_all(client, summary="true")
        out["ready_deployments"] = sum(1 for d in listed if d["lifecycle"] == "ready")
        out["ready_routes"] = sum(d["ready_replicas"] for d in listed)

        revisions, rollouts = Tally(), Tally()
        if args.no_rollouts:
            out["refused_5xx"] = creates.refused
            out["refusals"] = dict(creates.errors.most_common(5))
            return await measure_reads(server, client, args, out)

        chosen = sorted(created)
        numbers: dict[str, int] = {}

        async def add_revision(i: int) -> None:
            answer = await client.post(f"/v1/deployments/{chosen[i]}/revisions", json=revision("v2"))
            revisions.add(answer)
            if answer.status_code == 201:
                numbers[chosen[i]] = answer.json()["number"]

        async def rollout(i: int) -> None:
            name = chosen[i]
            if name not in numbers:  # its revision was refused: nothing to roll out
                return
            answer = await client.post(f"/v1/deployments/{name}/rollout", json={"revision": numbers[name]})
            rollouts.add(answer)
            if answer.status_code == 202:
                rolled.add(name)

        rev_s = await run_all(len(chosen), args.concurrency, add_revision)
        roll_s = await run_all(len(chosen), args.concurrency, rollout)
        out["revision_s"] = round(rev_s, 2)
        out["revisions_per_s"] = round(len(chosen) / rev_s, 1)
        out["rollout_s"] = round(roll_s, 2)
        out["rollouts_per_s"] = round(len(numbers) / roll_s, 1)
        out["pairs_per_s"] = round(len(numbers) / (rev_s + roll_s), 1)
        out["revision_statuses"] = dict(revisions.statuses)
        out["rollout_statuses"] = dict(rollouts.statuses)
        out["rollouts_done_s"] = round(await wait_until("rollouts done", lambda: all_ready(2), args.timeout), 2)

        errors = creates.errors + revisions.errors + rollouts.errors
        out["refused_5xx"] = creates.refused + revisions.refused + rollouts.refused
        out["refusals"] = dict(errors.most_common(5))
        return await measure_reads(server, client, args, out)


async def measure_reads(server: ServerProcess, client: httpx.AsyncClient, args: argparse.Namespace,
                        out: dict[str, Any]) -> dict[str, Any]:
    """Page timing, `rollwise get` and the server's RSS, at the size reached."""
    # Page timing: the first page, then pages reached by following cursors (collected first).
    cursors: list[str | None] = [None]
    answer = await client.get("/v1/deployments", params={"limit": 100})
    out["paged"] = "x-next-cursor" in answer.headers
    if out["paged"]:
        cursor = answer.headers.get("x-next-cursor")
        while cursor:
            cursors.append(cursor)
            answer = await client.get("/v1/deployments", params={"limit": 100, "cursor": cursor, "summary": "true"})
            cursor = answer.headers.get("x-next-cursor")
    rng = random.Random(1)
    for label, extra in (("page", {}), ("summary_page", {"summary": "true"})):
        times: list[float] = []
        size = 0
        for _ in range(args.page_samples):
            params: dict[str, Any] = {"limit": 100, **extra}
            chosen = rng.choice(cursors)
            if chosen:
                params["cursor"] = chosen
            started = time.perf_counter()
            answer = await client.get("/v1/deployments", params=params, timeout=120)
            times.append(time.perf_counter() - started)
            answer.raise_for_status()
            size = max(size, len(answer.content))
            if not out["paged"] and len(times) >= 5:  # an old server sends everything: 5 calls say enough
                break
        out[f"{label}_p50_ms"] = round(statistics.median(times) * 1000, 1)
        out[f"{label}_p99_ms"] = round(percentile(times, 0.99) * 1000, 1)
        out[f"{label}_kb"] = round(size / 1024, 1)
    # `rollwise get`: the CLI over everything (it pages through when the server pages).
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROLLWISE_")} | {"COLUMNS": "200"}
    started = time.perf_counter()
    done = subprocess.run([ROLLWISE, "get", "--server", server.url, "--token", server.token], env=env,
                          capture_output=True, text=True, timeout=args.timeout)
    out["cli_get_s"] = round(time.perf_counter() - started, 2)
    out["cli_get_rows"] = max(0, len(done.stdout.splitlines()) - 1) if done.returncode == 0 else f"exit {done.returncode}"
    assert server.proc is not None
    out["server_rss_mb"] = round(rss_mb(server.proc.pid), 1)
    return out


def export_source(rev: str, into: Path) -> Path:
    """`src/` of git revision `rev`, extracted under `into`; the directory to put on PYTHONPATH."""
    into.mkdir(parents=True, exist_ok=True)
    archive = into / "src.tar"
    subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", "-o", str(archive), rev, "src"], check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


def one_run(args: argparse.Namespace, tmp: Path, label: str, pythonpath: Path | None) -> dict[str, Any]:
    env = {"PYTHONPATH": str(pythonpath)} if pythonpath else {}
    server = ServerProcess(tmp / label / "data", api_port=free_port(), proxy_port=free_port(), database=args.database,
                           log_name=f"{label}.log", env=env, extra_args=("--runtime", "simulated", "--no-proxy"))
    (tmp / label).mkdir()
    server.start()
    try:
        result = asyncio.run(measure(server, args))
    finally:
        server.stop()
    result["run"] = label
    return result


ROWS = (
    ("creates_per_s", "creates/s"), ("ready_after_create_s", "all READY after the last create (s)"),
    ("revisions_per_s", "revisions/s"), ("rollouts_per_s", "rollout starts/s"), ("pairs_per_s", "revision+rollout pairs/s"),
    ("rollouts_done_s", "rollouts done after the last start (s)"), ("refused_5xx", "answers 5xx"),
    ("page_p50_ms", "page of 100, p50 (ms)"), ("page_p99_ms", "page of 100, p99 (ms)"), ("page_kb", "page size (KiB)"),
    ("summary_page_p99_ms", "summary page, p99 (ms)"), ("summary_page_kb", "summary page size (KiB)"),
    ("cli_get_s", "rollwise get, all (s)"), ("ready_routes", "ready routes when measured"),
    ("server_rss_mb", "server RSS (MB)"),
)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--deployments", type=int, default=2000)
    p.add_argument("--replicas", type=int, default=4)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--database", default=None, help="SQLAlchemy URL (default: SQLite in the data dir); use a fresh "
                                                    "database per run")
    p.add_argument("--baseline", metavar="REV", default=None, help="also run the server of this git revision first")
    p.add_argument("--page-samples", type=int, default=200)
    p.add_argument("--ready-timeout", type=float, default=900.0,
                   help="seconds to wait for all READY after the creates (with --no-rollouts: then measure anyway)")
    p.add_argument("--no-rollouts", action="store_true",
                   help="create and wait until READY only, then the page, get and RSS figures (for 10,000)")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds any one wait may take")
    args = p.parse_args()
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="rollwise-scale-") as name:
        tmp = Path(name)
        if args.baseline:
            source = export_source(args.baseline, tmp / "baseline-src")
            runs.append(one_run(args, tmp, "baseline", source))
        runs.append(one_run(args, tmp, "current", None))
    print(f"{'':42}" + "".join(f"{r['run']:>14}" for r in runs))
    for key, words in ROWS:
        print(f"{words:42}" + "".join(f"{r.get(key, '-')!s:>14}" for r in runs))
    for r in runs:
        if r["refusals"]:
            print(f"{r['run']}: refusals {r['refusals']}")
    summary: dict[str, Any] = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "runs": runs,
    }
    if len(runs) == 2:
        base, new = runs
        summary["ratios"] = {key: round(new[key] / base[key], 1) for key in ("creates_per_s", "rollouts_per_s", "pairs_per_s")
                             if base.get(key)}
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
