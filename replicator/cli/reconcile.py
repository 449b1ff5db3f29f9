"""``replicator backfill`` and ``replicator verify``: one-shot reconciliations of a source with
its destinations, by URL or by the daemon's routes, through the streamed compare engine
(``replicator.daemon.reconcile``). Exit 0 in sync, 1 not, 2 on an error."""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from connectors.base import ObjectStore
from replicator.errors import ConfigError

if TYPE_CHECKING:
    from replicator.catalog import Catalog
    from replicator.daemon.config import DaemonConfig
    from replicator.daemon.reconcile import Options, Tally
    from replicator.daemon.reconcile.engine import Actions
    from replicator.daemon.reconcile.pricing import Price
    from replicator.pipeline.rules import Route

URLS = Annotated[
    list[str] | None,
    typer.Argument(
        help="SRC_URL DST_URL [DST_URL ...]: a source prefix and its destination prefixes "
        "(omit them to take the routes of --config)."
    ),
]
CONFIG = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="Daemon configuration (TOML): its routes (without URLs), its catalog and Kafka. "
        "Without it, the embedded defaults (the daemon's default catalog).",
    ),
]
ROUTES = Annotated[
    list[str] | None,
    typer.Option("--route", help="Only these routes of --config (repeatable); default all."),
]
INCLUDE = Annotated[
    list[str] | None,
    typer.Option(help="Only keys matching this glob (repeatable; '*' also matches '/')."),
]
EXCLUDE = Annotated[
    list[str] | None, typer.Option(help="Skip keys matching this glob (repeatable).")
]
# A one-shot command has the machine to itself: many objects at once keep small objects'
# round trips overlapped and the stores' connection pools (64) busy, while the memory budget
# still bounds large ones. 2,000 x 4 KiB s3->gs on the test bed: 178 objects/s at 16, 229 at
# 64, 241 at 128 (python -m benchmarks.backfill_vs_rclone --transfers N); the daemon's
# safety net, which shares its process with the event path, keeps [reconcile] transfers.
ONE_SHOT_TRANSFERS = 64
TRANSFERS = Annotated[int, typer.Option(min=1, help="Objects compared and copied at once.")]
JSON = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]
VIA_KAFKA = Annotated[
    bool,
    typer.Option(
        "--via-kafka",
        help="Publish a change event per drifted key for the daemon fleet instead of copying "
        "in this process (recorded in the catalog first, as `scan` does).",
    ),
]
MAX_DELETE = Annotated[
    int,
    typer.Option(min=0, help="Most deletions of one run; the rest are refused and the run fails."),
]


@dataclass(frozen=True)
class Job:
    """One reconciliation: a route (configured, or made of the URLs) and whether the route
    came from the command line's URLs."""

    route: Route
    from_urls: bool


def _url_route(urls: Sequence[str]) -> dict[str, object]:
    """A route made of command-line URLs. Its name is derived from them, so running the same
    command again finds its checkpoint."""
    if len(urls) < 2:
        raise ConfigError("give a source URL and at least one destination URL, or --config")
    prefixes = [url if url.endswith("/") else url + "/" for url in urls]
    return {
        "name": "cli-" + hashlib.sha256("\n".join(prefixes).encode()).hexdigest()[:12],
        "source": prefixes[0],
        "destinations": prefixes[1:],
        # The run's own --max-delete is the guard; --delete is the operator's call.
        "max_deletes_per_minute": 1_000_000,
    }


def _settings(config: Path | None, urls: Sequence[str] | None) -> DaemonConfig:
    """The daemon's configuration (catalog, copy settings, Kafka); with URLs, their route
    replaces the file's routes."""
    from replicator.daemon.config import load_daemon_config

    if urls:
        return load_daemon_config(config, routes=[_url_route(urls)])
    return load_daemon_config(config)


def _jobs(
    urls: Sequence[str] | None,
    settings: DaemonConfig,
    routes: Sequence[str] | None,
    *,
    via_kafka: bool = False,
) -> list[Job]:
    if urls:
        if routes:
            raise ConfigError("--route selects routes of --config; it does not go with URLs")
        if via_kafka:
            # The fleet applies only changes of its own routes.
            raise ConfigError("--via-kafka publishes for the daemons' routes: use --config")
        return [Job(settings.routes[0], from_urls=True)]
    known = {r.name for r in settings.routes}
    unknown = sorted(set(routes or ()) - known)
    if unknown:
        raise ConfigError(
            f"no route named {', '.join(unknown)} in the configuration "
            f"(routes: {', '.join(sorted(known))})"
        )
    return [Job(r, from_urls=False) for r in settings.routes if not routes or r.name in routes]


async def _register(catalog: Catalog, job: Job, settings: DaemonConfig) -> None:
    """Datasets for the routes, so that everything done is recorded in the catalog. A URL
    route only adds locations: to the dataset whose source it is, if there is one (a route
    of the daemon's), else to a dataset of its own; it never drops a dataset's pending work
    as ``register_datasets`` does for a configured route's removed destinations."""
    from replicator.catalog import LocationSpec, Role
    from replicator.daemon.applier import register_datasets

    if not job.from_urls:
        await register_datasets(catalog, settings)
        return
    route = job.route
    specs = [LocationSpec(d.url, Role.REPLICA, d.region) for d in route.destinations]
    for dataset in await catalog.datasets():
        if any(loc.url == route.source and loc.role is Role.SOURCE for loc in dataset.locations):
            await catalog.add_dataset(dataset.name, specs)
            return
    await catalog.add_dataset(route.name, [LocationSpec(route.source, Role.SOURCE), *specs])


class _Progress:
    """Objects, bytes, rate and ETA of the copies found so far: redrawn in place on a
    terminal, a plain line every ``PLAIN_EVERY_S`` seconds otherwise (stderr)."""

    PLAIN_EVERY_S = 10.0

    def __init__(self, label: str, quiet: bool) -> None:
        self.label = label
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self._last_plain = time.monotonic()

    def line(self, tally: Tally) -> str:
        rate = tally.bytes_copied / tally.seconds if tally.seconds > 0 else 0.0
        left = tally.bytes_to_copy - tally.bytes_copied
        eta = f"{left / rate:.0f}s" if rate > 0 and left > 0 else "-"
        objects = tally.copied / tally.seconds if tally.seconds > 0 else 0.0
        return (
            f"{self.label}: {tally.compared} compared, {tally.copied} copied "
            f"({objects:.0f}/s), {tally.deleted} deleted, {tally.failed} failed, "
            f"{tally.bytes_copied / 1e6:.1f} MB at {rate / 1e6:.1f} MB/s, eta {eta}"
        )

    def __call__(self, tally: Tally) -> None:
        if self.quiet:
            return
        if self.tty:
            # Redrawn in place: back to the line's start, then erase what is left of it.
            sys.stderr.write("\r" + self.line(tally) + "\x1b[K")
            sys.stderr.flush()
        elif time.monotonic() - self._last_plain >= self.PLAIN_EVERY_S:
            self._last_plain = time.monotonic()
            typer.echo(self.line(tally), err=True)

    def done(self) -> None:
        if self.tty and not self.quiet:
            sys.stderr.write("\n")


@asynccontextmanager
async def _publisher(
    settings: DaemonConfig, catalog: Catalog
) -> AsyncIterator[Callable[[ObjectStore], Actions]]:
    """What publishes a route's drift for the fleet: each change recorded as accepted first,
    as ``scan`` does."""
    from replicator.cli.publishing import accepting_publisher
    from replicator.daemon.reconcile import PublishActions

    async with accepting_publisher(settings, catalog) as publisher:
        yield lambda source: PublishActions(publisher, source)


async def _run_jobs(
    jobs: Sequence[Job],
    settings: DaemonConfig,
    options: Options,
    *,
    via_kafka: bool,
    quiet: bool,
) -> dict[str, Tally]:
    from replicator.catalog import open_catalog
    from replicator.daemon.applier import Applier
    from replicator.daemon.costs import CostFlusher
    from replicator.daemon.reconcile import ApplierActions, Reconciler
    from replicator.daemon.reconcile.pricing import load_prices
    from replicator.engine.costs import CostLedger
    from replicator.engine.transfer import ByteBudget, Copier
    from replicator.engine.units import parse_part_size, parse_size
    from replicator.pipeline.rules import Router

    copier = Copier(
        part_size=parse_part_size(settings.copy_.part_size),
        concurrency=settings.copy_.concurrency,
        budget=ByteBudget(parse_size(settings.copy_.memory)),
        ordered_uploads=settings.copy_.ordered_uploads,
    )
    results: dict[str, Tally] = {}
    async with AsyncExitStack() as stack:
        catalog = await open_catalog(settings.catalog.resolved_url())
        stack.push_async_callback(catalog.close)
        copier.journal = catalog.journal()
        # What the run's requests cost is added to the catalog's daily totals, like the
        # daemon's (``replicator catalog costs``), once at the end.
        ledger = CostLedger()
        flusher = CostFlusher(ledger, catalog, load_prices(overrides=settings.reconcile.prices))
        stack.push_async_callback(flusher.flush)
        applier = Applier(Router(settings), catalog, copier, ledger=ledger)
        stack.push_async_callback(applier.close)
        publishing = None
        if via_kafka and not options.dry_run:
            publishing = await stack.enter_async_context(_publisher(settings, catalog))
        for job in jobs:
            await _register(catalog, job, settings)
            source = applier.store(job.route.source)
            dests = [applier.store(d.url) for d in job.route.destinations]
            await _create_file_destinations(dests, options.dry_run)
            actions = (
                publishing(source)
                if publishing
                else ApplierActions(applier, source, [d.url for d in job.route.destinations])
            )
            progress = _Progress(job.route.name, quiet)
            reconciler = Reconciler(
                source,
                dests,
                actions,
                options,
                retry=copier.retry,
                checkpoints=catalog,
                checkpoint_name=f"reconcile/{job.route.name}",
                on_progress=progress,
                group=job.route.group,
            )
            with ledger.attribute(job.route.name):
                results[job.route.name] = await reconciler.run()
            progress.done()
    return results


async def _create_file_destinations(dests: Sequence[ObjectStore], dry_run: bool) -> None:
    """A destination directory is created, as ``aws s3 cp``, ``gsutil`` and ``rclone`` do
    (a bucket or container is never created: a missing one is an error of the route)."""
    if dry_run:
        return
    for dest in dests:
        if dest.scheme == "file":
            await dest.create_container()


def _options(
    *,
    transfers: int,
    include: Sequence[str] | None,
    exclude: Sequence[str] | None,
    dry_run: bool = False,
    delete: bool = False,
    max_delete: int = 1000,
    deep: bool = False,
) -> Options:
    from replicator.daemon.reconcile import Options
    from replicator.engine.compare import KeyFilter

    return Options(
        transfers=transfers,
        dry_run=dry_run,
        delete=delete,
        max_delete=max_delete,
        keys=KeyFilter(tuple(include or ()), tuple(exclude or ())),
        deep=deep,
    )


def backfill(
    urls: URLS = None,
    config: CONFIG = None,
    route: ROUTES = None,
    delete: Annotated[
        bool,
        typer.Option(
            help="Delete destination objects absent at the source; only replicas carrying "
            "this product's mark for that source, under the route's delete policy."
        ),
    ] = False,
    max_delete: MAX_DELETE = 1000,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Compare only: counts, bytes and a cost estimate per route; nothing moves.",
        ),
    ] = False,
    prices: Annotated[
        Path | None,
        typer.Option(
            help="With --dry-run: a TOML price table over the built-in one and the "
            "configuration's reconcile.prices table."
        ),
    ] = None,
    via_kafka: VIA_KAFKA = False,
    include: INCLUDE = None,
    exclude: EXCLUDE = None,
    transfers: TRANSFERS = ONE_SHOT_TRANSFERS,
    json_output: JSON = False,
) -> None:
    """Bring destinations in line with a source: copy what is missing or different (streamed
    compare of both listings, page by page), recorded in the catalog. Resumable: killed and
    run again, it continues from its checkpoint. Exit 0 only if everything is in sync."""
    from replicator.cli.app import run_until_signalled

    settings = _settings(config, urls)
    jobs = _jobs(urls, settings, route, via_kafka=via_kafka)
    options = _options(
        transfers=transfers,
        include=include,
        exclude=exclude,
        dry_run=dry_run,
        delete=delete,
        max_delete=max_delete,
    )
    tallies = run_until_signalled(
        _run_jobs(jobs, settings, options, via_kafka=via_kafka, quiet=json_output)
    )
    from replicator.daemon.reconcile.pricing import load_prices

    table = settings.reconcile.prices
    report: dict[str, dict[str, object]] = {}
    for job in jobs:
        tally = tallies[job.route.name]
        summary = tally.summary()
        summary.pop("findings")
        if dry_run:
            summary["cost"] = _cost(job.route, tally, load_prices(prices, table))
        report[job.route.name] = summary
    if json_output:
        typer.echo(json.dumps(report))
    else:
        for name, summary in report.items():
            typer.echo(_describe(name, summary))
    if dry_run:
        in_sync = all(tallies[j.route.name].drift == 0 for j in jobs)
    else:
        # Objects without our mark are not ours to manage: reported, never a failure.
        in_sync = all(t.failed == 0 and t.delete_refused == 0 for t in tallies.values())
    if not in_sync:
        raise typer.Exit(1)


def _cost(route: Route, tally: Tally, table: dict[str, Price]) -> dict[str, float]:
    from connectors import parse_store_url
    from replicator.daemon.reconcile.pricing import estimate

    source = parse_store_url(route.source)
    total: dict[str, float] = {}
    for dest in route.destinations:
        parsed = parse_store_url(dest.url)
        found = estimate(
            table,
            source.scheme,
            parsed.scheme,
            listed=tally.compared + tally.extra,
            copies=tally.missing + tally.different,
            copy_bytes=tally.bytes_to_copy,
            same_store=source.root == parsed.root,
        )
        for name, value in found.summary().items():
            total[name] = total.get(name, 0.0) + value
    return total


def _describe(name: str, summary: dict[str, object]) -> str:
    line = (
        f"{name}: {summary['compared']} compared, {summary['in_sync']} in sync, "
        f"{summary['missing']} missing, {summary['different']} different, "
        f"{summary['extra']} extra; {summary['copied']} copied "
        f"({summary['bytes_copied']} bytes), {summary['skipped']} skipped, "
        f"{summary['deleted']} deleted, {summary['published']} published, "
        f"{summary['failed']} failed"
    )
    if summary.get("delete_refused"):
        line += f", {summary['delete_refused']} deletions refused (--max-delete)"
    if summary.get("not_ours"):
        line += f", {summary['not_ours']} extra objects without our mark left alone"
    cost = summary.get("cost")
    if isinstance(cost, dict):
        line += (
            f"; {summary['bytes_to_copy']} bytes to copy, estimated cost "
            f"${cost['total_usd']:.4f} (requests ${cost['requests_usd']:.4f}, egress "
            f"${cost['egress_usd']:.4f})"
        )
    errors = summary.get("errors")
    if isinstance(errors, list):
        line += "".join(f"\n  failed: {error}" for error in errors)
    return line


def verify(
    urls: URLS = None,
    config: CONFIG = None,
    route: ROUTES = None,
    deep: Annotated[
        bool,
        typer.Option(
            help="Read both ends of every key again and compare their fingerprints "
            "(default: sizes and the recorded fingerprints and checksums)."
        ),
    ] = False,
    repair: Annotated[
        bool,
        typer.Option(
            help="Turn the differences into copies and deletions (of replicas carrying our "
            "mark), as a backfill with --delete does."
        ),
    ] = False,
    max_delete: MAX_DELETE = 1000,
    via_kafka: VIA_KAFKA = False,
    include: INCLUDE = None,
    exclude: EXCLUDE = None,
    transfers: TRANSFERS = ONE_SHOT_TRANSFERS,
    json_output: JSON = False,
) -> None:
    """Compare a source with its destinations: missing, different and extra objects. Exit 0
    in sync, 1 not, 2 on an error."""
    from replicator.cli.app import run_until_signalled

    if via_kafka and not repair:
        raise ConfigError("--via-kafka goes with --repair")
    settings = _settings(config, urls)
    jobs = _jobs(urls, settings, route, via_kafka=via_kafka)
    options = _options(
        transfers=transfers,
        include=include,
        exclude=exclude,
        dry_run=not repair,
        delete=repair,
        max_delete=max_delete,
        deep=deep,
    )
    tallies = run_until_signalled(
        _run_jobs(jobs, settings, options, via_kafka=via_kafka, quiet=json_output)
    )
    report = {name: tally.summary() for name, tally in tallies.items()}
    if json_output:
        typer.echo(json.dumps(report))
    else:
        for name, tally in tallies.items():
            for finding in tally.findings:
                typer.echo(f"{finding['verdict']}: {finding['destination']}{finding['key']}")
            state = "in sync" if tally.drift == 0 else "NOT in sync"
            typer.echo(
                f"{name}: {state}: {tally.compared} compared, {tally.missing} missing, "
                f"{tally.different} different, {tally.extra} extra"
                + (f"; {tally.copied} copied, {tally.deleted} deleted" if repair else "")
            )
    if repair:
        ok = all(t.failed == 0 and t.delete_refused == 0 for t in tallies.values())
    else:
        ok = all(t.drift == 0 and t.failed == 0 for t in tallies.values())
    if not ok:
        raise typer.Exit(1)
