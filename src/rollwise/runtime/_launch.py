"""What a route process is given: its argv and environment, built from a LaunchSpec and its ports.

Private to `rollwise.runtime.local`, which calls `check_port_names`, `substitute` and `route_environment`
before spawning. Pure functions: no I/O, no process or file handling (that is `local`'s and `_proc`'s).

Environment rule. A route must not see the server's secrets (ROLLWISE_TOKEN would let model code drive
the control plane), so it inherits only `INHERITED_VARIABLES` from the server; everything else it needs
comes from the revision's env. On top come PORT, PORT_<NAME> per extra port, the device variables
(CUDA_VISIBLE_DEVICES and ROLLWISE_RESOURCES, from `runtime.devices.device_env`, when the node has
slots), and the two markers that name its route and data directory; neither the revision nor the server
can override those: the ports and devices are the ones the runtime reserved for the route, and the
runtime relies on the markers to recognise its processes.

Placeholders. "{port}" is the main port and "{port.NAME}" an extra port, in every argv element and in
every value of the revision's env (not in the inherited server variables: their text is not ours to
interpret). Substitution is a single pass, so a port number can never form a new placeholder. A
"{port.NAME}" naming an undeclared port is an error rather than left as is: the program would otherwise
be given a literal "{port.grpc}" and fail far from the cause.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from rollwise.runtime._proc import DATA_DIR_VAR, ROUTE_ID_VAR

INHERITED_VARIABLES: tuple[str, ...] = ("PATH", "HOME", "LANG", "TZ", "TMPDIR")
"""The only variables a route inherits from the server's environment."""
MAIN_PORT = "port"
"""The reserved name of the main port ("{port}", PORT)."""

_PORT_NAME = re.compile(r"[a-z][a-z0-9_]{0,29}\Z")
_PLACEHOLDER = re.compile(r"\{port(?:\.([a-z][a-z0-9_]{0,29}))?\}")


class UnknownPort(ValueError):
    """A "{port.NAME}" placeholder names a port the spec did not declare."""


def check_port_names(names: Sequence[str]) -> None:
    """ValueError unless the extra port names are valid, distinct and not the main port's name."""
    seen: set[str] = set()
    for name in names:
        if not _PORT_NAME.match(name) or name == MAIN_PORT:
            raise ValueError(f"{name!r} is not a port name (^[a-z][a-z0-9_]{{0,29}}$, not 'port')")
        if name in seen:
            raise ValueError(f"port {name!r} is declared twice")
        seen.add(name)


def substitute(text: str, main_port: int, ports: Mapping[str, int]) -> str:
    """`text` with "{port}" and "{port.NAME}" replaced; UnknownPort for an undeclared NAME."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name is None:
            return str(main_port)
        if name not in ports:
            declared = ", ".join(sorted(ports)) or "none"
            raise UnknownPort(f"{{port.{name}}} names no declared port (declared: {declared})")
        return str(ports[name])

    return _PLACEHOLDER.sub(replace, text)


def port_variable(name: str) -> str:
    """The environment variable that carries extra port `name`: PORT_GRPC for "grpc"."""
    return f"PORT_{name.upper()}"


def route_environment(
    server_env: Mapping[str, str],
    spec_env: Mapping[str, str],
    *,
    main_port: int,
    ports: Mapping[str, int],
    route_id: str,
    data_dir: str,
    device_variables: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The whole environment of a route process; UnknownPort from a value's placeholder.

    `device_variables` (CUDA_VISIBLE_DEVICES, ROLLWISE_RESOURCES) override the revision's values."""
    env = {name: server_env[name] for name in INHERITED_VARIABLES if name in server_env}
    env.update({name: substitute(value, main_port, ports) for name, value in spec_env.items()})
    env["PORT"] = str(main_port)
    env.update({port_variable(name): str(port) for name, port in ports.items()})
    env.update(device_variables or {})
    env[ROUTE_ID_VAR] = route_id
    env[DATA_DIR_VAR] = data_dir
    return env
