"""Who holds which device index on one node: the allocator both runtimes use (no I/O).

A node has, per resource, `total` units numbered 0..total-1 (for `gpu`, the indices `nvidia-smi -L`
lists). `allocate` gives a route the lowest free indices it needs and raises `DevicesBusy` when there
are not enough (nothing is taken then); `release` frees a route's indices, and a runtime calls it only
once the route's process has exited; `restore` puts back what a route held before a server restart
(adoption), refusing an index that is already held. `peak` is the most units of each resource ever held
at once (`rollwise simulate` reports it as `max_held`).

The environment a route gets from what it holds is here too: `CUDA_VISIBLE_DEVICES` (the `gpu`
indices, comma separated; set to "" on a node with GPUs for a route that holds none, so it sees none)
with `CUDA_DEVICE_ORDER=PCI_BUS_ID` (CUDA numbers devices as nvidia-smi does, not fastest first)
and `ROLLWISE_RESOURCES` (JSON, resource -> list of indices; `{}` on a node with slots for a route that
holds none).
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from rollwise.runtime.base import Devices, DevicesBusy, RuntimeFailure

GPU = "gpu"
"""The resource whose indices become CUDA_VISIBLE_DEVICES."""


class DeviceTable:
    def __init__(self, total: Mapping[str, int]) -> None:
        self.total: dict[str, int] = {name: int(n) for name, n in total.items()}
        self._holders: dict[str, dict[int, str]] = {name: {} for name in self.total}
        self._held_by: dict[str, Devices] = {}
        self.peak: dict[str, int] = {name: 0 for name in self.total}

    def allocate(self, route_id: str, need: Mapping[str, int]) -> Devices:
        """The lowest free indices for `need` (idempotent for a route that already holds some)."""
        if route_id in self._held_by:
            return self._held_by[route_id]
        picked: dict[str, tuple[int, ...]] = {}
        for name, count in sorted(need.items()):
            if count <= 0:
                continue
            total = self.total.get(name, 0)
            if count > total:
                raise RuntimeFailure(f"route {route_id}: needs {name} {count}, the node has {total}")
            free = [i for i in range(total) if i not in self._holders[name]]
            if len(free) < count:
                raise DevicesBusy(
                    f"route {route_id}: needs {name} {count}, {len(free)} free until other routes' processes exit"
                )
            picked[name] = tuple(free[:count])
        self._take(route_id, picked)
        return picked

    def restore(self, route_id: str, devices: Mapping[str, tuple[int, ...] | list[int]]) -> bool:
        """Mark what an adopted route holds; False (nothing taken) when an index is out of range or
        already held by another route."""
        wanted = {name: tuple(int(i) for i in idx) for name, idx in devices.items() if idx}
        for name, idx in wanted.items():
            holders = self._holders.get(name)
            if holders is None or any(i < 0 or i >= self.total[name] or holders.get(i, route_id) != route_id
                                      for i in idx):
                return False
        self.release(route_id)
        self._take(route_id, wanted)
        return True

    def release(self, route_id: str) -> None:
        for name, idx in self._held_by.pop(route_id, {}).items():
            for i in idx:
                self._holders[name].pop(i, None)

    def held_by(self, route_id: str) -> Devices:
        return self._held_by.get(route_id, {})

    def held(self) -> dict[str, int]:
        return {name: len(holders) for name, holders in self._holders.items()}

    def holders(self) -> dict[str, dict[int, str]]:
        """resource -> index -> route id, for people and tests."""
        return {name: dict(sorted(h.items())) for name, h in self._holders.items()}

    def _take(self, route_id: str, picked: Mapping[str, tuple[int, ...]]) -> None:
        if not picked:
            return
        for name, idx in picked.items():
            for i in idx:
                self._holders[name][i] = route_id
            self.peak[name] = max(self.peak[name], len(self._holders[name]))
        self._held_by[route_id] = dict(picked)


def device_env(devices: Devices, total: Mapping[str, int]) -> dict[str, str]:
    """The variables a route gets from what it holds (module docstring)."""
    env: dict[str, str] = {}
    if total.get(GPU, 0) > 0 or GPU in devices:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in devices.get(GPU, ()))
        env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"  # CUDA's numbering = nvidia-smi's, which the indices follow
    if devices or any(total.values()):
        env["ROLLWISE_RESOURCES"] = json.dumps({name: list(idx) for name, idx in sorted(devices.items())},
                                               separators=(",", ":"))
    return env
