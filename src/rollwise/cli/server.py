"""`rollwise server`: run one rollwise server (API, coordinator, runtime, traffic layer) until Ctrl-C or
SIGTERM. The assembly and the clean stop live in `cli.serve` (`run_server`); this module only turns
command-line options into a `ServerConfig`.

Called by the `rollwise` Typer app (registered on import). Must not: build any part of the server itself.
"""

from __future__ import annotations

import asyncio
import logging
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from rollwise.cli.early import EarlyResponder
from rollwise.cli.errors import cli_errors, fail
from rollwise.cli.app import app


class RuntimeName(str, Enum):
    local = "local"
    simulated = "simulated"


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
        "--runtime", help="local: real processes; simulated: no processes (tests, demos)")] = RuntimeName.local,
    no_proxy: Annotated[bool, typer.Option("--no-proxy", help="Do not run Traefik")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log the coordinator's work")] = False,
) -> None:
    """Run the rollwise server: REST API, coordinator, route processes and the traffic layer."""
    with cli_errors():
        if token is not None and token_file is not None:
            fail("--token and --token-file: give one of them")
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
        )
        with cli_errors():
            status = asyncio.run(run_server(config, early=early))
    finally:
        early.close()
    if status:
        raise typer.Exit(status)
