"""How many GPUs this machine has: the lines `nvidia-smi -L` prints.

Private to `rollwise.runtime.local`, which calls `detect_gpus()` once when it is built without an
explicit `resources` mapping. It only counts: which route gets which index is `runtime.devices`' job.

`nvidia-smi -L` prints one line per GPU, "GPU <index>: <name> (UUID: GPU-...)", with indented MIG
lines under a GPU when MIG is on ("  MIG 1g.5gb Device 0: (UUID: MIG-...)"); only the "GPU <index>:"
lines count. No binary on PATH, a failure (non-zero exit, timeout, undecodable output) or no such line
all mean no GPU: the node then has no `gpu` slot, and `rollwise server --resources gpu=N` says otherwise
when detection is wrong. The indices are nvidia-smi's (PCI bus order).
"""

from __future__ import annotations

import logging
import re
import subprocess
from collections.abc import Callable, Sequence

logger = logging.getLogger(__name__)

COMMAND: tuple[str, ...] = ("nvidia-smi", "-L")
DEFAULT_TIMEOUT_SECONDS = 5.0
"""nvidia-smi can hang on a wedged driver; detection gives up after this long (no GPU then)."""

_GPU_LINE = re.compile(r"^GPU (\d+):", re.MULTILINE)

Runner = Callable[[Sequence[str], float], str]
"""Runs argv with a timeout in seconds and returns its standard output; raises OSError or
subprocess.SubprocessError when the program is missing, fails or times out."""


def run_command(argv: Sequence[str], timeout: float) -> str:
    """The default runner: the server's environment, stdin closed, output captured, check=True."""
    done = subprocess.run(
        list(argv), stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout, check=True
    )
    return done.stdout.decode()


def count_gpus(listing: str) -> int:
    """The number of distinct "GPU <index>:" lines in `nvidia-smi -L` output."""
    return len({int(index) for index in _GPU_LINE.findall(listing)})


def detect_gpus(run: Runner = run_command, *, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> int:
    """How many GPUs `nvidia-smi -L` lists; 0 when it is absent, fails, times out or lists none."""
    try:
        listing = run(COMMAND, timeout)
    except FileNotFoundError:
        return 0  # no NVIDIA driver tools: the usual case on a machine without GPUs
    except (OSError, subprocess.SubprocessError, UnicodeDecodeError) as e:
        logger.warning("GPU detection: %s failed (%s); assuming no GPU", " ".join(COMMAND), e)
        return 0
    return count_gpus(listing)
