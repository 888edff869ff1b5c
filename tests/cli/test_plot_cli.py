"""`rollwise history NAME --rollouts` and `--plot FILE.png [--rollout ID]` (docs/cli.md, "Rollout
timeline") against one in-process server (cli_server.InProcessServer: real HTTP, simulated routes that
start in 50 ms): the PNG is a real one, of the size drawn, whose pixels show the revisions' lines (which
a rollout-free figure drawn by the same code does not have); without matplotlib the command says in one
line how to install it.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from click.testing import CliRunner, Result

import rollwise.cli.apply
import rollwise.cli.history  # noqa: F401  (the imports register the commands, as rollwise.cli.main does)
from rollwise.cli.app import app
from rollwise.cli.plot import COLORS, write_timeline_png
from cli_server import InProcessServer, clean_env

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
DEPLOYMENT = """\
name: plotted
replicas: 3
policy: {{strategy: rolling, max_surge: 1, max_unavailable: 0}}
revision:
  command: [model-server, --port, "{{port}}", --version, {version}]
"""


def invoke(*args: str) -> Result:
    runner = CliRunner(env={"ROLLWISE_TOKEN": None, "ROLLWISE_SERVER": None, "ROLLWISE_DATA_DIR": None})
    result = runner.invoke(typer.main.get_group(app), list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.stderr, result.stderr
    return result


def one_red_line(result: Result | subprocess.CompletedProcess[str], code: int) -> str:
    returncode = result.returncode if isinstance(result, subprocess.CompletedProcess) else result.exit_code
    assert returncode == code, (returncode, result.stdout, result.stderr)
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    return result.stderr


def ready_on(number: int) -> Any:
    return lambda d: d["lifecycle"] == "ready" and d["current_revision"] == number and d["ready_replicas"] == 3


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessServer]:
    """A server where `plotted` rolled out v2, then v3 (two completed rollouts)."""
    tmp = tmp_path_factory.mktemp("plot-server")
    with InProcessServer(tmp / "data") as running:
        for number, version in enumerate(("v1", "v2", "v3"), start=1):
            spec = tmp / f"{version}.yaml"
            spec.write_text(DEPLOYMENT.format(version=version))
            assert invoke("apply", "-f", str(spec), *running.args()).exit_code == 0
            running.wait("plotted", ready_on(number))
        yield running


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_SIGNATURE, data[:8]
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


def pixels_near(path: Path, hex_color: str, tolerance: int = 40) -> int:
    """How many pixels of the PNG are within `tolerance` (per channel) of `hex_color`."""
    import numpy as np
    from matplotlib.image import imread

    image = imread(path)[..., :3] * 255.0
    rgb = np.array([int(hex_color[i:i + 2], 16) for i in (1, 3, 5)], dtype=float)
    return int((np.abs(image - rgb).max(axis=-1) <= tolerance).sum())


def test_rollouts_are_listed(server: InProcessServer) -> None:
    table = invoke("history", "plotted", "--rollouts", *server.args())
    assert table.exit_code == 0, table.stderr
    lines = [line.split() for line in table.stdout.splitlines() if "rolling" in line]
    assert [(line[1:4], line[-1]) for line in lines] == [(["1", "->", "2"], "completed"), (["2", "->", "3"], "completed")]
    listed = json.loads(invoke("history", "plotted", "--rollouts", "-o", "json", *server.args()).stdout)
    assert [(r["from_revision"], r["to_revision"], r["outcome"]) for r in listed] == [(1, 2, "completed"),
                                                                                         (2, 3, "completed")]


def test_plot_writes_the_latest_rollouts_timeline(server: InProcessServer, tmp_path: Path) -> None:
    out = tmp_path / "latest.png"
    result = invoke("history", "plotted", "--plot", str(out), *server.args())
    assert result.exit_code == 0, result.stderr
    listed = server.api("/v1/deployments/plotted/rollouts").json()
    timeline = server.api(f"/v1/deployments/plotted/rollouts/{listed[-1]['id']}/timeline").json()
    assert result.stdout.strip() == (f"wrote {out}: rollout {listed[-1]['id']} of plotted, {len(timeline['samples'])} "
                                     f"samples, {len(timeline['events'])} events")
    data = out.read_bytes()
    assert png_size(data) == (1100, 650)
    assert len(data) > 20_000
    zlib.decompress(b"".join(  # every IDAT chunk together is one valid zlib stream: the image is whole
        data[i + 8:i + 8 + struct.unpack(">I", data[i:i + 4])[0]] for i in _chunks(data, b"IDAT")))

    # The same code with no samples and no events draws axes only: none of the revisions' colours.
    empty = tmp_path / "empty.png"
    write_timeline_png({**timeline, "samples": [], "events": []}, empty, title="nothing")
    assert png_size(empty.read_bytes()) == (1100, 650)
    for color in COLORS[:2]:  # r2 and r3: the revisions of the latest rollout
        drawn, blank = pixels_near(out, color), pixels_near(empty, color)
        assert drawn > 1_000 and blank < 50, (color, drawn, blank)


def _chunks(data: bytes, kind: bytes) -> list[int]:
    """Offsets of the chunks of `kind` (each starts with its 4-byte length)."""
    found, i = [], 8
    while i < len(data):
        length = struct.unpack(">I", data[i:i + 4])[0]
        if data[i + 4:i + 8] == kind:
            found.append(i)
        i += 12 + length
    return found


def test_plot_of_an_earlier_rollout_and_of_one_that_does_not_exist(server: InProcessServer, tmp_path: Path) -> None:
    first = server.api("/v1/deployments/plotted/rollouts").json()[0]["id"]
    out = tmp_path / "first.png"
    result = invoke("history", "plotted", "--plot", str(out), "--rollout", str(first), *server.args())
    assert result.exit_code == 0 and f"rollout {first} of plotted" in result.stdout
    assert png_size(out.read_bytes()) == (1100, 650)
    assert pixels_near(out, COLORS[0]) > 1_000

    missing = invoke("history", "plotted", "--plot", str(tmp_path / "x.png"), "--rollout", "999", *server.args())
    assert "deployment 'plotted' has no rollout 999" in one_red_line(missing, 1)
    assert not (tmp_path / "x.png").exists()
    alone = invoke("history", "plotted", "--rollout", str(first), *server.args())
    assert "--rollout ID goes with --plot" in one_red_line(alone, 2)
    unwritable = invoke("history", "plotted", "--plot", str(tmp_path / "no" / "dir.png"), *server.args())
    assert "--plot: cannot write" in one_red_line(unwritable, 1)
    assert "not found" in one_red_line(invoke("history", "nope", "--plot", str(out), *server.args()), 1)


def test_without_matplotlib_the_command_says_how_to_install_it(server: InProcessServer, tmp_path: Path) -> None:
    # A real interpreter in which importing matplotlib fails, as it does where it is not installed.
    probe = ("import sys; sys.modules['matplotlib'] = None; sys.argv = ['rollwise', *sys.argv[1:]]; "
             "from rollwise.cli.main import main; main()")
    out = tmp_path / "never.png"
    result = subprocess.run([sys.executable, "-c", probe, "history", "plotted", "--plot", str(out), *server.args()],
                            capture_output=True, text=True, env=clean_env(), timeout=60)
    assert "Traceback" not in result.stderr, result.stderr
    line = one_red_line(result, 1)
    assert "matplotlib" in line and "pip install 'rollwise[plot]'" in line
    assert not out.exists()
