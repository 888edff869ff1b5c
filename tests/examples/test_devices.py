"""The example model server's `/version` says which devices it was given: CUDA_VISIBLE_DEVICES as
received and ROLLWISE_RESOURCES parsed (what rollwise's local runtime sets for a route holding slots),
null when unset; in both HTTP modes. A ROLLWISE_RESOURCES that is not JSON stops it at start."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from model_server_process import Server, wait_until

from rollwise.examples._serving import devices_from


def test_version_without_the_variables_says_null(start_server: Callable[..., Server]) -> None:
    server = start_server("--version", "v3")
    assert httpx.get(f"{server.url}/version").json() == {"version": "v3", "cuda_visible_devices": None,
                                                         "resources": None}


def test_version_reports_the_devices_it_was_given(start_server: Callable[..., Server]) -> None:
    server = start_server("--version", "v3", env={"CUDA_VISIBLE_DEVICES": "2,3",
                                                  "ROLLWISE_RESOURCES": '{"gpu":[2,3]}'})
    assert httpx.get(f"{server.url}/version").json() == {"version": "v3", "cuda_visible_devices": "2,3",
                                                         "resources": {"gpu": [2, 3]}}


def test_an_empty_cuda_visible_devices_is_reported_as_given(start_server: Callable[..., Server]) -> None:
    # A route that holds no gpu on a node with GPUs gets "" (it sees none) and {} : not the same as unset.
    server = start_server(env={"CUDA_VISIBLE_DEVICES": "", "ROLLWISE_RESOURCES": "{}"})
    body = httpx.get(f"{server.url}/version").json()
    assert (body["cuda_visible_devices"], body["resources"]) == ("", {})


def test_resources_that_are_not_json_stop_it_at_start(start_server: Callable[..., Server]) -> None:
    server = start_server(env={"ROLLWISE_RESOURCES": "gpu=0"}, wait=False)
    wait_until(lambda: server.process.poll() is not None, timeout=10, what="the model server exits")
    code, err = server.stop()
    assert code == 1 and "ROLLWISE_RESOURCES is not JSON" in err, err


@pytest.mark.parametrize(("environ", "expected"), [
    ({}, (None, None)),
    ({"CUDA_VISIBLE_DEVICES": "0"}, ("0", None)),
    ({"ROLLWISE_RESOURCES": '{"gpu": [1], "fpga": [0]}'}, (None, {"gpu": [1], "fpga": [0]})),
])
def test_devices_from(environ: dict[str, str], expected: tuple[object, object]) -> None:
    assert devices_from(environ) == expected
