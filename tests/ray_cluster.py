"""A local Ray cluster of two nodes with fake GPUs (2 each), for the tests of the Ray runtime.

Importing this module sets what Ray reads when IT is imported: RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 keeps
"127.0.0.1" as given in ray.init(address=...) instead of replacing it with the machine's other interface
(which the cluster does not listen on), and RAY_AUTH_MODE=disabled. They only matter to Ray, so they stay
set for the rest of the process (and are inherited by the servers a test starts).

`start_cluster()` starts the head and a second node on 127.0.0.1 with a short RAY_TMPDIR (Ray's Unix
socket paths must stay short: not pytest's tmp dir) and shuts everything down on exit, even on failure.
`start_worker_cluster(n)` is the same with a head that holds no GPU and n worker nodes of 2 GPUs each,
whose loss the GCS notices within about a second (fast health checks): for the node-loss tests, which
remove a worker node (never the head) with `cluster.remove_node(node, allow_graceful=False)`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

CLUSTER_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled"}
for _name, _value in CLUSTER_ENV.items():
    os.environ.setdefault(_name, _value)

NODE = {"num_cpus": 1, "num_gpus": 2, "node_ip_address": "127.0.0.1"}
FAST_FAILURE_DETECTION = {
    "health_check_initial_delay_ms": 0, "health_check_period_ms": 300, "health_check_timeout_ms": 300,
    "health_check_failure_threshold": 3,
}


@contextmanager
def start_cluster() -> Iterator[str]:
    """The cluster's address (127.0.0.1:port) while the block runs."""
    with _cluster({**NODE, "include_dashboard": False}, [NODE]) as cluster:
        yield str(cluster.address)


@contextmanager
def start_worker_cluster(workers: int) -> Iterator[Any]:
    """A `ray.cluster_utils.Cluster` (module docstring) while the block runs."""
    head = {**NODE, "num_gpus": 0, "include_dashboard": False, "_system_config": FAST_FAILURE_DETECTION}
    with _cluster(head, [NODE] * workers) as cluster:
        yield cluster


@contextmanager
def _cluster(head: dict[str, Any], nodes: list[dict[str, Any]]) -> Iterator[Any]:
    import ray
    from ray.cluster_utils import Cluster

    tmp = tempfile.mkdtemp(prefix="rwray", dir="/tmp")
    saved = {name: os.environ.get(name) for name in [*CLUSTER_ENV, "RAY_TMPDIR"]}
    os.environ.update(CLUSTER_ENV, RAY_TMPDIR=tmp)
    cluster = None
    try:
        cluster = Cluster(initialize_head=True, head_node_args=head)
        for node in nodes:
            cluster.add_node(**node)
        cluster.wait_for_nodes()
        yield cluster
    finally:
        if ray.is_initialized():
            ray.shutdown()
        if cluster is not None:
            cluster.shutdown()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        shutil.rmtree(tmp, ignore_errors=True)
