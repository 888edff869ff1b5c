"""`rollwise simulate --capacity N --gpus-per-route N --capacity-fallback replace|wait` through the real
command (in-process, click's CliRunner): `max_held` and each row's `held` in the JSON, the gpu column and
line of the table, and bad values rejected with one line naming the option (exit 2, nothing on stdout)."""

from __future__ import annotations


import pytest

from simulate_runner import last_json, simulate



def test_full_node_completes_with_forced_replacements() -> None:
    done = simulate("--json", "--replicas", "4", "--capacity", "4", "--startup-seconds", "0.5")
    assert done.exit_code == 0, done.stderr
    result = last_json(done.stdout)
    assert (result["outcome"], result["final_revision"], result["max_held"]) == ("completed", "v2", 4)
    assert max(row["held"] for row in result["timeline"]) <= 4
    assert any("replacing one r1 route at a time" in e for row in result["timeline"] for e in row["events"])


def test_two_gpus_per_route() -> None:
    done = simulate("--json", "--replicas", "2", "--capacity", "5", "--gpus-per-route", "2", "--startup-seconds", "0.5")
    assert done.exit_code == 0, done.stderr
    result = last_json(done.stdout)
    assert (result["outcome"], result["max_held"]) == ("completed", 4)


def test_wait_without_room_is_rolled_back_by_the_deadline() -> None:
    # The CLI has no deadline option: the policy's default (600 s) ends the wait, 1200 rounds of 0.5 s.
    done = simulate("--json", "--replicas", "2", "--capacity", "2", "--capacity-fallback", "wait", "--tick", "5")
    assert done.exit_code == 0, done.stderr
    result = last_json(done.stdout)
    assert (result["outcome"], result["final_revision"], result["max_held"]) == ("rolled_back", "v1", 2)
    said = [e for row in result["timeline"] for e in row["events"]]
    assert any("waiting for capacity" in e for e in said), said
    assert result["min_serving"] == 2


def test_without_capacity_max_held_is_null() -> None:
    done = simulate("--json", "--replicas", "2", "--startup-seconds", "0.5")
    assert done.exit_code == 0, done.stderr
    result = last_json(done.stdout)
    assert result["max_held"] is None
    assert {row["held"] for row in result["timeline"]} == {None}


def test_table_shows_gpus_held() -> None:
    done = simulate("--replicas", "2", "--capacity", "3", "--startup-seconds", "0.5")
    assert done.exit_code == 0, done.stderr
    assert "gpu held" in done.stdout
    assert "gpu: max held 3 of 3 at once, 1 per route" in done.stdout
    assert "outcome: completed" in done.stdout


def test_table_without_capacity_has_no_gpu_line() -> None:
    done = simulate("--replicas", "1", "--startup-seconds", "0.5")
    assert done.exit_code == 0, done.stderr
    assert "gpu" not in done.stdout


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (("--capacity", "-1"), "error: --capacity: -1 is negative"),
        (("--capacity", "four"), 'error: --capacity: "four" is not an integer'),
        (("--capacity", "1.5"), 'error: --capacity: "1.5" is not an integer'),
        (("--capacity", "4", "--gpus-per-route", "-2"), "error: --gpus-per-route: -2 is negative"),
        (("--gpus-per-route", "1"), "error: --gpus-per-route: needs a capacity (gpu slots of the simulated node)"),
        (("--capacity", "4", "--gpus-per-route", "5"), "error: --gpus-per-route: 5 is over the capacity 4"),
        (("--capacity", "2"), "error: --capacity: 2 cannot hold the 3 v1 routes of 1 gpu each (at least 3)"),
        (("--capacity", "4", "--capacity-fallback", "evict"),
         'error: --capacity-fallback: "evict" is not "replace" or "wait"'),
    ],
)
def test_bad_values_are_one_line_exit_2(args: tuple[str, ...], line: str) -> None:
    done = simulate("--json", *args)
    assert done.exit_code == 2
    assert done.stdout == ""
    assert done.stderr.strip().splitlines() == [line]


def test_help_names_the_flags() -> None:
    done = simulate("--help")
    assert done.exit_code == 0
    for flag in ("--capacity", "--gpus-per-route", "--capacity-fallback"):
        assert flag in done.stdout
