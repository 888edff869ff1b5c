"""`rollwise server`: run one rollwise server (API, coordinator, runtime, traffic layer) until Ctrl-C or
SIGTERM. The assembly and the clean stop live in `cli.serve` (`run_server`); this module only turns
command-line options into a `ServerConfig`.

`--resources gpu=4[,NAME=N...]` gives the node's countable slots (`ServerConfig.resources`); without it
the local runtime detects GPUs with `nvidia-smi -L`; `--resources ""` or `none` means no slots and no
detection. `parse_resources` checks it here, before anything starts (one line naming `--resources`,
exit 2); the name rule is `rollwise.model.revision.RESOURCE_NAME`'s, copied so that this module does not
import the model (tests/cli/test_server_resources.py checks they agree).

Called by the `rollwise` Typer app (registered on import). Must not: build any part of the server itself.
"""

from __future__ import annotations

import importlib.util

import asyncio
import logging
import re
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from rollwise.cli.early import EarlyResponder
from rollwise.cli.errors import EXIT_INVALID, cli_errors, fail
from rollwise.cli.app import app


RESOURCE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,29}$")
"""rollwise.model.revision.RESOURCE_NAME (copied: the model is not imported before the server starts)."""
MAX_NODE_RESOURCES = 16
"""Most resource names a node may have (as many as a revision may ask for)."""
MAX_NODE_UNITS = 65536
"""Most units of one resource a node may have (units are device indices 0..N-1)."""
NO_RESOURCES = ("", "none")


def parse_resources(text: str) -> dict[str, int]:
    """`gpu=4,mem_gb=80` -> {"gpu": 4, "mem_gb": 80} (sorted; zero counts dropped); `""` or `none` -> {}.
    Raises ValueError with one line naming `--resources` and the problem."""
    spec = text.strip()
    if spec.lower() in NO_RESOURCES:
        return {}
    found: dict[str, int] = {}
    for entry in spec.split(","):
        item = entry.strip()
        if not item:
            raise ValueError(f"--resources: {text!r} has an empty entry (NAME=COUNT,NAME=COUNT)")
        name, equals, count = (part.strip() for part in item.partition("="))
        if not equals:
            raise ValueError(f"--resources: {item!r} is not NAME=COUNT (e.g. gpu=4)")
        if not RESOURCE_NAME.match(name):
            raise ValueError(f"--resources: {name!r} is not a resource name (a-z first, then a-z, 0-9 or _, "
                             "at most 30)")
        if name in found:
            raise ValueError(f"--resources: {name} is given twice")
        if not count.isascii() or not count.isdigit():
            problem = "is negative" if count.startswith("-") and count[1:].isdigit() else "is not an integer >= 0"
            raise ValueError(f"--resources: {name}: {count!r} {problem}")
        units = int(count)
        if units > MAX_NODE_UNITS:
            raise ValueError(f"--resources: {name}: {units} is over {MAX_NODE_UNITS}")
        found[name] = units
    if len(found) > MAX_NODE_RESOURCES:
        raise ValueError(f"--resources: {len(found)} resources, at most {MAX_NODE_RESOURCES}")
    return {name: units for name, units in sorted(found.items()) if units > 0}


class RuntimeName(str, Enum):
    local = "local"
    simulated = "simulated"
    ray = "ray"


def ray_problem(runtime: RuntimeName, *, ray_address: str | None, resources: str | None) -> str | None:
    """One line when the Ray options do not fit together (or Ray is missing), else None."""
    if runtime is not RuntimeName.ray:
        return "--ray-address: needs --runtime ray" if ray_address is not None else None
    if resources is not None:
        return "--resources: with --runtime ray the cluster's nodes say what they have"
    if importlib.util.find_spec("ray") is None:
        return "--runtime ray: Ray is not installed (pip install 'rollwise[ray]')"
    return None


@app.command()
def server(
    data_dir: Annotated[Path | None, typer.Option(
        "--data-dir", file_okay=False, show_default=False,
        help="Database, token, route logs [env ROLLWISE_DATA_DIR; default ~/.rollwise]")] = None,
    database: Annotated[str | None, typer.Option(
        "--database", show_default=False,
        help="SQLAlchemy URL, e.g. postgresql+asyncpg://user@host/db (default: SQLite in the data dir)")] = None,
    proxy_port: Annotated[int, typer.Option("--proxy-port", min=1, max=65535, help="Traefik's port")] = 8080,
    api_port: Annotated[int, typer.Option("--api-port", min=1, max=65535, help="The REST API's port")] = 8700,
    host: Annotated[str, typer.Option("--host", help="Address the API, the proxy and routes listen on")] = "127.0.0.1",
    token: Annotated[str | None, typer.Option(
        "--token", show_default=False,
        help="API token (visible in ps: prefer --token-file) [env ROLLWISE_TOKEN; default: DATA_DIR/token, "
             "generated on first start]")] = None,
    token_file: Annotated[Path | None, typer.Option(
        "--token-file", dir_okay=False, show_default=False,
        help="Read the API token from this file")] = None,
    runtime: Annotated[RuntimeName, typer.Option(
        "--runtime", help="local: real processes; simulated: no processes (tests, demos); ray: actors on a "
                          "Ray cluster (pip install 'rollwise[ray]')")] = RuntimeName.local,
    ray_address: Annotated[str | None, typer.Option(
        "--ray-address", show_default=False, metavar="HOST:PORT",
        help="The Ray cluster of --runtime ray [default: RAY_ADDRESS, or what Ray finds]")] = None,
    no_proxy: Annotated[bool, typer.Option("--no-proxy", help="Do not run Traefik")] = False,
    resources: Annotated[str | None, typer.Option(
        "--resources", show_default=False, metavar="NAME=N[,NAME=N...]",
        help='The node\'s slots, e.g. gpu=4 (routes get device indices 0..N-1); "" or none: no slots '
             "[default: the local runtime counts GPUs with nvidia-smi -L]")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log the coordinator's work")] = False,
) -> None:
    """Run the rollwise server: REST API, coordinator, route processes and the traffic layer."""
    with cli_errors():
        if token is not None and token_file is not None:
            fail("--token and --token-file: give one of them")
        try:
            slots = None if resources is None else parse_resources(resources)
        except ValueError as e:
            fail(str(e), code=EXIT_INVALID)
        problem = ray_problem(runtime, ray_address=ray_address, resources=resources)
        if problem is not None:
            fail(problem, code=EXIT_INVALID)
        # The API port answers ("starting") before the server's heavy imports: see cli.early.
        try:
            early = EarlyResponder.listen(host, api_port)
        except OSError as e:
            fail(f"--api-port: cannot listen on {host}:{api_port} ({e.strerror or e}); is another server running?")
    try:
        from rollwise.cli.serve import ServerConfig, default_data_dir, run_server  # heavy: only when serving

        logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        config = ServerConfig(
            data_dir=data_dir or default_data_dir(),
            database=database,
            host=host,
            api_port=api_port,
            proxy_port=proxy_port,
            proxy=not no_proxy,
            runtime=runtime.value,
            token=token,
            token_file=token_file,
            resources=slots,
            ray_address=ray_address,
        )
        with cli_errors():
            status = asyncio.run(run_server(config, early=early))
    finally:
        early.close()
    if status:
        raise typer.Exit(status)
