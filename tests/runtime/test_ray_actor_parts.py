"""The parts of the Ray route actor that need no cluster (runtime/_ray_actor.py): the node-wide port book
that keeps two routes starting at once on one node from being handed the same port, and the parent-death
signal that takes a route's process down with its actor's worker instead of leaving an orphan."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from rollwise.runtime._ray_actor import PortBook

from .support import is_gone


def test_books_on_one_file_never_hand_out_a_port_twice(tmp_path: Path) -> None:
    path = tmp_path / "ports.json"
    books = [PortBook(path) for _ in range(8)]  # as if 8 actor processes of one node
    with ThreadPoolExecutor(8) as pool:
        taken = list(pool.map(lambda book: book.take("127.0.0.1", 3), books * 4))
    ports = [p for group in taken for p in group]
    assert len(ports) == 96
    assert len(set(ports)) == 96
    assert set(json.loads(path.read_text())) == {str(p) for p in ports}


def test_a_hold_expires_and_a_damaged_book_only_loses_its_holds(tmp_path: Path) -> None:
    path = tmp_path / "ports.json"
    path.write_text(json.dumps({"1": time.time() - 1, "2": time.time() + 100}))
    PortBook(path).take("127.0.0.1", 1)
    held = json.loads(path.read_text())
    assert "1" not in held and "2" in held and len(held) == 2
    path.write_text("{not json")
    assert len(PortBook(path).take("127.0.0.1", 2)) == 2
    assert len(json.loads(path.read_text())) == 2


def test_the_child_dies_with_the_process_that_started_it(tmp_path: Path) -> None:
    """The actor's worker is killed with SIGKILL (no stop call): its route process goes too."""
    script = textwrap.dedent("""
        import sys, time
        from rollwise.runtime._ray_actor import RouteProcess
        proc = RouteProcess._spawn([sys.executable, "-c", "import time; time.sleep(120)"], {})
        print(proc.pid, flush=True)
        time.sleep(120)
    """)
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    child = 0
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert not is_gone(child)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=30)
        deadline = time.monotonic() + 30
        while not is_gone(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert is_gone(child), "the route process outlived its parent"
    finally:
        parent.kill()
        parent.wait(timeout=30)
        if child and not is_gone(child):
            os.kill(child, signal.SIGKILL)
