"""Crash-safety soak: many rollouts, each interrupted by SIGKILL of `rollwise server` at a random
moment, the server restarted on the same data directory, and every invariant checked after each run
(the same checks as tests/e2e/test_crash.py, which runs 10 of these in the suite):

- the rollout ended as it should (the new revision serves; revision pointers agree with history);
- the running routes are exactly the route processes of the data directory (no orphan, no duplicate);
- the proxy serves the new revision.

    .venv/bin/python benchmarks/crash_soak.py [--runs 50] [--seed 1] [--database URL]

Prints one line per run and a JSON summary last. Traffic stays on 127.0.0.1; it stops by itself.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rollwise.cli.demo import free_port  # noqa: E402
from tests.e2e.server_proc import ServerProcess  # noqa: E402
from tests.e2e.test_crash import NAME, check_consistent, revision  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--replicas", type=int, default=2)
    p.add_argument("--max-kill-delay", type=float, default=2.0)
    p.add_argument("--database", default=None, help="SQLAlchemy URL (default: SQLite in the data dir)")
    args = p.parse_args()
    rng = random.Random(args.seed)
    failures: list[str] = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="rollwise-soak-") as tmp:
        server = ServerProcess(Path(tmp) / "data", api_port=free_port(), proxy_port=free_port(),
                               database=args.database)
        server.start()
        try:
            with server.client() as client:
                body: dict[str, Any] = {"name": NAME, "replicas": args.replicas,
                                        "policy": {"strategy": "rolling", "max_surge": 1}, "revision": revision("v1")}
                assert client.post("/v1/deployments", json=body).status_code == 201
                check_consistent(server, client, 1, args.replicas)
                for i in range(args.runs):
                    strategy = rng.choice(["rolling", "blue_green", "recreate"])
                    policy: dict[str, Any] = {"strategy": strategy}
                    if strategy == "blue_green":
                        policy["auto_promote"] = True
                    client.patch(f"/v1/deployments/{NAME}", json={"policy": policy}).raise_for_status()
                    number = client.post(f"/v1/deployments/{NAME}/revisions", json=revision(f"v{i + 2}")).json()["number"]
                    client.post(f"/v1/deployments/{NAME}/rollout", json={"revision": number}).raise_for_status()
                    delay = rng.uniform(0, args.max_kill_delay)
                    time.sleep(delay)
                    server.kill()
                    server.start()
                    t0 = time.monotonic()
                    try:
                        check_consistent(server, client, number, args.replicas)
                        verdict = "ok"
                    except AssertionError as e:
                        verdict = f"FAILED: {e}"
                        failures.append(f"run {i + 1}: {e}")
                    print(f"run {i + 1}/{args.runs}: {strategy:10s} killed after {delay:.2f}s, "
                          f"settled in {time.monotonic() - t0:.1f}s: {verdict}", flush=True)
                    if verdict != "ok":
                        break
        finally:
            server.stop()
    print(json.dumps({"runs": args.runs, "failures": len(failures), "seconds": round(time.monotonic() - started, 1),
                      "first_failure": failures[0] if failures else None}))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
