"""The ``replicator`` command line: the only composition root for the command line."""

from __future__ import annotations

import asyncio
import functools
import json
import shlex
import shutil
import signal
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from connectors import open_object, open_store, store_type
from connectors.base import ContainerNotFound, ObjectStore, StoreError
from replicator.catalog import cli as catalog_cli
from replicator.catalog.cli import catalog_app, status_command
from replicator.cli import logs
from replicator.cli.collector import freeze_after_start_up, start_up
from replicator.cli.controls import deletes_app, failed_app, pause, paused_all, resume
from replicator.cli.dlq import dlq_app
from replicator.cli.reconcile import ONE_SHOT_TRANSFERS, backfill, verify
from replicator.engine.units import parse_part_size, parse_size
from replicator.errors import ConfigError, DependencyUnavailable, ReplicatorError

if TYPE_CHECKING:
    from replicator.catalog import Catalog
    from replicator.devstack import DevStack
    from replicator.engine.explain import CopyExplanation
    from replicator.engine.transfer import Copier, CopyResult

T = TypeVar("T")


class Interrupted(ReplicatorError):
    """Stopped by a signal after cleaning up."""


app = typer.Typer(
    name="replicator",
    help="Keep objects replicated between S3, GCS, Azure Blob Storage and file systems.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
devstack_app = typer.Typer(
    help="The local test bed: S3, GCS and Azure emulators, a Kafka-protocol broker and "
    "PostgreSQL (needs the devstack extra: pip install 'replicator[devstack]').",
    no_args_is_help=True,
)
app.add_typer(devstack_app, name="devstack")


@devstack_app.callback()
def _devstack_packages() -> None:
    from replicator.devstack import require_packages

    require_packages()


@app.callback()
def _global_options(
    log_level: Annotated[
        str, typer.Option(envvar="REPLICATOR_LOG_LEVEL", help="debug, info, warning or error.")
    ] = "error",
    log_format: Annotated[
        str, typer.Option(envvar="REPLICATOR_LOG_FORMAT", help="console or json (for containers).")
    ] = "console",
) -> None:
    if log_format not in ("console", "json"):
        raise ConfigError(f"--log-format must be console or json, not {log_format!r}")
    try:
        logs.configure(log_level, "json" if log_format == "json" else "console")
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _configured_catalog(config: Path | None) -> str:
    from replicator.daemon.config import configured_catalog_url

    return configured_catalog_url(config)


# `status` and `catalog` read the daemon's catalog from its configuration (the catalog layer
# cannot read configurations itself).
catalog_cli.configured_catalog = _configured_catalog
app.add_typer(catalog_app, name="catalog")
app.add_typer(deletes_app, name="deletes")
app.add_typer(failed_app, name="failed")
app.add_typer(dlq_app, name="dlq")
app.command("pause")(pause)
app.command("resume")(resume)
app.command("paused")(paused_all)
app.command("status")(status_command)
app.command("backfill")(backfill)
app.command("verify")(verify)
uploads_app = typer.Typer(
    help="Multipart uploads left in progress (for example by a killed process).",
    no_args_is_help=True,
)
app.add_typer(uploads_app, name="uploads")

StateDir = Annotated[
    Path | None,
    typer.Option(help="Where the running stack's PIDs, ports and logs are kept."),
]


def _stack(state_dir: Path | None, durable: bool = False) -> DevStack:
    # Imported by the devstack commands alone: the test bed is no part of the other commands.
    from replicator.devstack import DevStack

    return DevStack(state_dir, detached=True, durable=durable)


@devstack_app.command("install")
def devstack_install() -> None:
    """Install the parts that do not come from PyPI (Azurite and Node 22, from npm)."""
    from replicator.devstack import install_tools

    install_tools(log=lambda line: typer.echo(line, err=True))


@devstack_app.command("up")
def devstack_up(
    state_dir: StateDir = None,
    durable: Annotated[
        bool,
        typer.Option(help="Keep Kafka topics and offsets on S3 storage across broker restarts."),
    ] = False,
) -> None:
    """Start every emulator, the broker and PostgreSQL in the background, then print their
    environment."""
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
    objects: Annotated[int, typer.Option(help="Number of objects to write to the source.")] = 12,
) -> None:
    """Run the daemon on a private local stack and watch it replicate S3 to GCS, Azure and a
    local directory as notifications arrive."""
    from replicator.cli.demo import run_demo
    from replicator.devstack import EMULATORS, DevStack, environment, require_packages

    require_packages()
    workdir = Path.cwd() / ".devstack" / "demo"
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    stack = DevStack(workdir / "stack", components=EMULATORS)
    echo = functools.partial(typer.echo, err=True)
    with stack as state, environment(state.env):
        echo(
            "local stack up: "
            + ", ".join(f"{n} on 127.0.0.1:{c.port}" for n, c in state.components.items())
        )
        report = asyncio.run(run_demo(objects, workdir, log=echo))
    typer.echo(json.dumps(report, indent=2, default=str))


def run_until_signalled(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine``; SIGTERM cancels it like Ctrl-C does, so its cleanup (aborting
    uploads) runs before the process exits."""

    async def main() -> T:
        task = asyncio.ensure_future(coroutine)
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, task.cancel)
        try:
            return await task
        except asyncio.CancelledError:
            raise Interrupted("interrupted; in-progress uploads were aborted") from None
        finally:
            loop.remove_signal_handler(signal.SIGTERM)

    return asyncio.run(main())


@app.command()
def cp(
    source: Annotated[
        str, typer.Argument(help="Source object URL, e.g. s3://bucket/key (a prefix with -r)")
    ],
    destination: Annotated[
        str,
        typer.Argument(
            help="Destination object URL; ending in '/' keeps the source name (a prefix with -r)"
        ),
    ],
    recursive: Annotated[
        bool,
        typer.Option(
            "--recursive",
            "-r",
            help="Copy every object under the source prefix to the same relative key under "
            "the destination prefix; what the destination already holds verified is skipped.",
        ),
    ] = False,
    part_size: Annotated[
        str,
        typer.Option(
            help="Part size, raised to fit the destination; 'auto' sizes parts to the object "
            "(about four per parallel slot, within the memory limit, at least 16MiB)."
        ),
    ] = "auto",
    concurrency: Annotated[
        int, typer.Option(min=1, help="Parts in flight at once (per object).")
    ] = 8,
    objects: Annotated[
        int, typer.Option(min=1, help="With --recursive: objects copied at once.")
    ] = ONE_SHOT_TRANSFERS,
    memory: Annotated[str, typer.Option(help="Most object bytes held in memory at once.")] = (
        "512MiB"
    ),
    json_output: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    catalog: Annotated[
        str | None,
        typer.Option(
            envvar="REPLICATOR_CATALOG",
            help="Keep the upload journal in this catalog, so a killed copy resumes from its "
            "completed parts (sqlite:///PATH or postgresql://...).",
        ),
    ] = None,
    explain: Annotated[
        bool,
        typer.Option(
            "--explain",
            help="Move no byte: print the plan the copy would follow and why (with --json, "
            "as JSON; with -r, one per object).",
        ),
    ] = False,
) -> None:
    """Copy one object, or every object under a prefix, between any two stores, verified end
    to end."""
    with start_up():
        from replicator.engine.transfer import ByteBudget, Copier

        for url in (source, destination):
            store_type(url)
        copier = Copier(
            part_size=parse_part_size(part_size),
            concurrency=concurrency,
            budget=ByteBudget(parse_size(memory)),
        )
    if explain:
        for plan in run_until_signalled(_explain(copier, source, destination, recursive)):
            typer.echo(json.dumps(plan.as_json()) if json_output else plan.text())
        return
    if recursive:
        counts = run_until_signalled(_copy_tree(copier, source, destination, catalog, objects))
        if json_output:
            typer.echo(json.dumps(counts))
        else:
            typer.echo(
                f"{counts['copied']} copied, {counts['skipped']} skipped, {counts['failed']} "
                f"failed: {counts['bytes_copied']} bytes in {counts['seconds']} s, "
                f"{counts['objects_per_s']} objects/s, {counts['mb_per_s']} MB/s"
            )
        if counts["failed"]:
            raise typer.Exit(1)
        return
    result = run_until_signalled(_copy_one(copier, source, destination, catalog))
    summary = result.summary()
    if json_output:
        typer.echo(json.dumps(summary))
        return
    if result.status == "skipped":
        typer.echo(f"skipped {source}: {result.reason}")
        return
    typer.echo(
        f"copied {summary['source']} -> {summary['destination']}: {summary['bytes']} bytes, "
        f"{summary['parts']} parts, {summary['strategy']}, {summary['seconds']} s, "
        f"{summary['mb_per_s']} MB/s, {summary['fingerprint']}"
    )


async def _with_journal(copier: Copier, catalog_url: str | None) -> Catalog | None:
    """Open the catalog (only when asked: its SQL stack is a third of a one-object copy's
    start-up) and keep the copier's upload journal in it."""
    if not catalog_url:
        return None
    from replicator.catalog import open_catalog

    catalog = await open_catalog(catalog_url)
    copier.journal = catalog.journal()
    return catalog


async def _copy_tree(
    copier: Copier, source_url: str, dest_url: str, catalog_url: str | None, objects: int
) -> dict[str, object]:
    """``cp -r``: the streamed compare engine of backfill, copying in process."""
    from replicator.daemon.reconcile import CopyActions, Options, Reconciler

    source, dest = open_store(source_url), open_store(dest_url)
    catalog = await _with_journal(copier, catalog_url)
    try:
        async with source, dest:
            if dest.scheme == "file":
                await dest.create_container()
            actions = CopyActions(copier, source, [dest])
            tally = await Reconciler(
                source, [dest], actions, Options(transfers=objects), retry=copier.retry
            ).run()
    finally:
        if catalog is not None:
            await catalog.close()
    summary = tally.summary()
    return {
        "copied": tally.copied,
        "skipped": tally.skipped + tally.in_sync,
        **{k: summary[k] for k in ("failed", "bytes_copied", "seconds", "objects_per_s")},
        **{k: summary[k] for k in ("mb_per_s", "errors")},
    }


async def _explain(
    copier: Copier, source_url: str, dest_url: str, recursive: bool
) -> list[CopyExplanation]:
    """``cp --explain``: the plans, from the engine's own planner; nothing is written. A
    missing destination directory holds nothing: the copy would create it."""
    from replicator.engine.explain import explain_copy, explain_tree
    from replicator.engine.transfer import ABSENT

    if recursive:
        source, dest = open_store(source_url), open_store(dest_url)
        async with source, dest:
            observed = ABSENT if await _directory_missing(dest) else None
            return [
                explanation
                async for explanation in explain_tree(copier, source, dest, dest_observed=observed)
            ]
    source, source_key = open_object(source_url)
    if dest_url.endswith("/"):
        dest_url += source_key.rsplit("/", 1)[-1]
    dest, dest_key = open_object(dest_url)
    async with source, dest:
        observed = ABSENT if await _directory_missing(dest) else None
        return [
            await explain_copy(copier, source, source_key, dest, dest_key, dest_observed=observed)
        ]


async def _directory_missing(dest: ObjectStore) -> bool:
    """A file destination whose directory does not exist yet (``cp`` creates it)."""
    if dest.scheme != "file":
        return False
    try:
        async for _ in dest.list(page_size=1):
            break
    except ContainerNotFound:
        return True
    return False


async def _copy_one(
    copier: Copier, source_url: str, dest_url: str, catalog_url: str | None
) -> CopyResult:
    source, source_key = open_object(source_url)
    if dest_url.endswith("/"):
        dest_url += source_key.rsplit("/", 1)[-1]
    dest, dest_key = open_object(dest_url)
    catalog = await _with_journal(copier, catalog_url)
    try:
        async with source, dest:
            if dest.scheme == "file":
                # As aws s3 cp, gsutil cp, rclone and azcopy do: the directory is created.
                await dest.create_container()
            return await copier.copy(source, source_key, dest, dest_key)
    finally:
        if catalog is not None:
            await catalog.close()


def main() -> None:
    """Entry point: expected failures print one line naming the problem and exit non-zero."""
    freeze_after_start_up()
    try:
        app()
    except Interrupted as exc:
        typer.echo(f"replicator: {exc}", err=True)
        sys.exit(128 + signal.SIGTERM)
    except DependencyUnavailable as exc:
        typer.echo(f"replicator: error: {exc}", err=True)
        sys.exit(DependencyUnavailable.EXIT_CODE)
    except (StoreError, ReplicatorError) as exc:
        typer.echo(f"replicator: error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)


@uploads_app.command("list")
def uploads_list(
    url: Annotated[str, typer.Argument(help="Store URL, e.g. s3://bucket/prefix")],
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON lines.")] = False,
) -> None:
    """List multipart uploads that were started and neither completed nor aborted."""
    from replicator.engine.uploads import list_uploads

    for upload in asyncio.run(list_uploads(url)):
        if json_output:
            typer.echo(json.dumps(upload))
        else:
            typer.echo(f"{upload['initiated'] or '-'}  {upload['upload_id']}  {upload['url']}")


@uploads_app.command("clean")
def uploads_clean(
    url: Annotated[str, typer.Argument(help="Store URL, e.g. s3://bucket/prefix")],
    older_than: Annotated[
        str, typer.Option(help="Only uploads started longer ago than this, e.g. 30m, 6h, 2d.")
    ] = "24h",
) -> None:
    """Abort abandoned multipart uploads so their parts stop costing storage."""
    from replicator.engine.units import parse_duration
    from replicator.engine.uploads import clean_uploads

    aborted = asyncio.run(clean_uploads(url, parse_duration(older_than)))
    for upload in aborted:
        typer.echo(f"aborted {upload['upload_id']}  {upload['url']}")
    typer.echo(f"{len(aborted)} abandoned uploads aborted", err=True)


@app.command()
def bench(
    suite: Annotated[
        str, typer.Option(help="quick (under 10 minutes here) or full (all data sets, sweeps).")
    ] = "quick",
    out: Annotated[
        Path, typer.Option(help="Where results.json, report.md and the plots go.")
    ] = Path("bench-results"),
) -> None:
    """Benchmark replicator against rclone, the raw SDKs and cp on a local test bed of its own
    (throughput, client CPU per GiB, memory, event latency, catalog, start-up)."""
    from replicator.bench import report
    from replicator.bench.suite import SUITES, default_workdir, run_suite

    if suite not in SUITES:
        raise ConfigError(f"--suite must be one of {', '.join(SUITES)}, not {suite!r}")
    workdir = default_workdir()
    try:
        results = run_suite(SUITES[suite], workdir, log=lambda line: typer.echo(line, err=True))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    report.write(results, out, f"replicator bench --suite {suite}")
    typer.echo(f"{out / 'report.md'} ({results.seconds} s)")


ConfigPath = Annotated[
    Path, typer.Option("--config", "-c", help="Daemon configuration file (TOML).")
]
config_app = typer.Typer(help="The daemon's configuration.", no_args_is_help=True)
app.add_typer(config_app, name="config")


@config_app.command("check")
def config_check(
    file: Annotated[
        Path | None,
        typer.Argument(help="Configuration file (TOML); omitted: the embedded defaults."),
    ] = None,
) -> None:
    """Print every problem of the configuration the daemon would run with (the file and the
    REPLICATOR_* environment overrides), one per line; exit 2 if there is any. Secret values
    are never printed."""
    from replicator.daemon.config import check_config

    origin = str(file) if file is not None else "configuration (no file)"
    problems = check_config(file)
    for problem in problems:
        typer.echo(f"{origin}: {problem}", err=True)
    if problems:
        raise typer.Exit(2)
    typer.echo(f"{origin}: ok")


OptionalConfigPath = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="Daemon configuration file (TOML); without one, the embedded defaults. "
        "REPLICATOR_* environment variables override either (REPLICATOR_KAFKA__BOOTSTRAP=...).",
    ),
]


@app.command()
def run(config: OptionalConfigPath = None) -> None:
    """Run the daemon: ingest notifications, apply change events, serve status and metrics.

    SIGTERM or Ctrl-C drains in-flight work, commits offsets and leaves the consumer group.
    """
    from replicator.daemon.config import load_daemon_config
    from replicator.daemon.service import Daemon

    daemon = Daemon(load_daemon_config(config))

    def on_hangup() -> None:
        # Routes are not reloaded in place (README, "Changing the configuration"): a new
        # configuration is checked and the operator told to restart, rather than the
        # default of SIGHUP, which would end the daemon without draining.
        from replicator.daemon.config import check_config

        problems = check_config(config)
        logs.get_logger().warning(
            "SIGHUP: configuration not reloaded; restart the daemon to apply it",
            config=str(config) if config else None,
            problems=problems,
        )

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, on_hangup)
        await daemon.run(stop)

    asyncio.run(main())


@app.command()
def scan(
    config: ConfigPath,
    route: Annotated[
        list[str] | None, typer.Option(help="Only these routes (repeatable); default all.")
    ] = None,
) -> None:
    """List the routes' sources and publish a change event per object to Kafka, for stores
    without notifications or to reconcile; the daemons apply them (unchanged objects are cheap
    no-ops). Each change is recorded in the catalog before it is published, so the routes'
    watermarks wait for them."""
    from replicator.catalog import open_catalog
    from replicator.cli.publishing import accepting_publisher
    from replicator.daemon.applier import register_datasets
    from replicator.daemon.config import load_daemon_config
    from replicator.daemon.service import Daemon
    from replicator.pipeline.ingest.scan import scan as scan_source

    settings = load_daemon_config(config)
    daemon = Daemon(settings)
    routes = [r for r in settings.routes if route is None or r.name in route]
    unknown = set(route or []) - {r.name for r in routes}
    if unknown:
        raise ConfigError(f"no route named {', '.join(sorted(unknown))}")

    async def main() -> dict[str, int]:
        catalog = await open_catalog(settings.catalog.resolved_url(daemon.env))
        try:
            async with accepting_publisher(settings, catalog) as publisher:
                await register_datasets(catalog, settings)
                return {r.name: await scan_source(r.source, publisher) for r in routes}
        finally:
            await catalog.close()

    counts = run_until_signalled(main())
    typer.echo(json.dumps({"published": counts}))
