"""How long the `rollwise` client commands take, start to exit, on this machine (idle or made busy).

A client command does little work: it reads a file, makes one to three API calls (milliseconds each)
and prints. Its wall time is mostly Python starting and importing, which a busy machine stretches
(a user saw `rollwise apply` take 5.7-13.2 s on a saturated 2-core machine against 1.3 s idle). This
runs each command `--runs` times against a real `rollwise server --runtime simulated --no-proxy` (free
port, temporary data directory, stopped at the end), interleaving the commands round by round, and
prints per command the median wall time and its ratio to `python -c pass` measured in the same rounds.
`--busy K` starts K busy-loop processes per core first (stopped at the end) to reproduce a saturated
machine. `--src DIR` runs the CLI from another source tree (e.g. a `git worktree` of an older commit)
through PYTHONPATH, with this tree's server, to measure a before/after.

    .venv/bin/python benchmarks/cli_start.py [--runs 15] [--busy 2] [--src /tmp/old/src]

The last line is one JSON object: {"runs", "busy_per_core", "cores", "src", "baseline_s",
"commands": {name: {"median_s", "ratio"}}}.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROLLWISE = str(Path(sys.executable).with_name("rollwise"))
NAME = "bench"
DEPLOYMENT = f"""\
name: {NAME}
replicas: 2
policy: {{strategy: rolling, max_surge: 1, max_unavailable: 0}}
revision:
  label: v1
  command: [python, -m, rollwise.examples.model_server, --port, "{{port}}", --version, v1]
  health_check: {{path: /healthz, interval_seconds: 0.5}}
"""


def commands(deployment_file: Path) -> dict[str, tuple[list[str], int]]:
    """name -> (arguments after `rollwise`, expected exit code); the API options are added later."""
    return {
        "apply (unchanged)": (["apply", "-f", str(deployment_file)], 0),
        "get": (["get"], 0),
        "get -o json": (["get", "-o", "json"], 0),
        "describe": (["describe", NAME], 0),
        "history": (["history", NAME], 0),
        "rollout status": (["rollout", "status", NAME], 0),
        "rollout status --watch (ready)": (["rollout", "status", NAME, "--watch"], 0),
        "rollout pause (refused)": (["rollout", "pause", NAME], 1),
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_env(src: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROLLWISE_") and k != "PYTHONPATH"}
    env["NO_COLOR"] = "1"
    if src:
        env["PYTHONPATH"] = src
    return env


@contextmanager
def busy_loops(per_core: int) -> Iterator[int]:
    """`per_core` busy-loop processes per core, stopped on the way out; yields how many."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
             for _ in range(per_core * (os.cpu_count() or 1))]
    try:
        yield len(procs)
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait()


@contextmanager
def server(data_dir: Path) -> Iterator[str]:
    """A `rollwise server --runtime simulated --no-proxy` on a free port; yields its URL."""
    port = free_port()
    log = (data_dir / "server.log").open("w")
    proc = subprocess.Popen(
        [ROLLWISE, "server", "--runtime", "simulated", "--no-proxy", "--api-port", str(port),
         "--data-dir", str(data_dir)],
        stdout=log, stderr=subprocess.STDOUT, env=clean_env(None),
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while not _healthy(url):
            if proc.poll() is not None:
                raise SystemExit(f"the server exited ({proc.returncode}); see {data_dir / 'server.log'}")
            if time.monotonic() > deadline:
                raise SystemExit("the server did not answer /healthz within 120 s")
            time.sleep(0.1)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=2) as answer:
            # "starting": the API answers before the server has taken its role; writes wait for it.
            return bool(answer.status == 200) and json.loads(answer.read()).get("role") != "starting"
    except (urllib.error.URLError, OSError):
        return False


def run(args: list[str], env: dict[str, str], expected: int) -> float:
    """Wall seconds of one run; exits when the command did not end as expected."""
    start = time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)
    took = time.perf_counter() - start
    if done.returncode != expected:
        raise SystemExit(f"{' '.join(args)}: exit {done.returncode}, expected {expected}\n{done.stderr}")
    return took


def wait_ready(url: str, token: str) -> None:
    deadline = time.monotonic() + 120
    request = urllib.request.Request(f"{url}/v1/deployments/{NAME}", headers={"Authorization": f"Bearer {token}"})
    while time.monotonic() < deadline:
        with urllib.request.urlopen(request, timeout=10) as answer:
            dep = json.loads(answer.read())
        if dep["lifecycle"] == "ready" and dep["ready_replicas"] == dep["replicas"]:
            return
        time.sleep(0.2)
    raise SystemExit(f"{NAME} did not become ready")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15, help="runs of each command (default 15)")
    parser.add_argument("--busy", type=int, default=0, metavar="K", help="busy-loop processes per core")
    parser.add_argument("--src", default=None, help="run the CLI from this source tree (PYTHONPATH)")
    options = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="rollwise-bench-") as tmp:
        data_dir = Path(tmp)
        deployment_file = data_dir / "bench.yaml"
        deployment_file.write_text(DEPLOYMENT)
        env = clean_env(options.src)
        with server(data_dir) as url:
            api = ["--server", url, "--data-dir", str(data_dir)]
            run([ROLLWISE, "apply", "-f", str(deployment_file), *api], env, 0)
            wait_ready(url, (data_dir / "token").read_text().strip())
            timed = {name: ([ROLLWISE, *args, *api], code) for name, (args, code) in commands(deployment_file).items()}
            samples: dict[str, list[float]] = {"python -c pass": []} | {name: [] for name in timed}
            with busy_loops(options.busy) as loops:
                for args, code in timed.values():  # warm the file cache and the .pyc files once
                    run(args, env, code)
                for _ in range(options.runs):
                    samples["python -c pass"].append(run([sys.executable, "-c", "pass"], env, 0))
                    for name, (args, code) in timed.items():
                        samples[name].append(run(args, env, code))

    baseline = statistics.median(samples["python -c pass"])
    print(f"{os.cpu_count()} cores, {loops} busy loops, {options.runs} runs each"
          + (f", CLI from {options.src}" if options.src else ""))
    print(f"{'command':34} {'median':>9} {'x pass':>8}")
    result: dict[str, dict[str, float]] = {}
    for name, values in samples.items():
        median = statistics.median(values)
        result[name] = {"median_s": round(median, 4), "ratio": round(median / baseline, 1)}
        print(f"{name:34} {median:8.3f}s {median / baseline:7.1f}x")
    print(json.dumps({"runs": options.runs, "busy_per_core": options.busy, "cores": os.cpu_count(),
                      "src": options.src, "baseline_s": round(baseline, 4), "commands": result}))


if __name__ == "__main__":
    main()
