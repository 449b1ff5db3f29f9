"""``replicator catalog ...`` and ``replicator status``: queries of the federated lake.

Every command takes ``--catalog URL`` (or ``REPLICATOR_CATALOG``), or ``--config FILE`` for the
catalog of a daemon configuration; without either, the catalog the daemon uses without a
configuration (``REPLICATOR_CATALOG__URL``, else the embedded SQLite file). And ``--json`` (one
JSON document, or JSON lines for listings).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from replicator.catalog.model import (
    DEFAULT_CATALOG_URL,
    CatalogError,
    CostRow,
    LocationSpec,
    Pause,
    Role,
)
from replicator.catalog.views import ExportFormat, plain
from replicator.engine.costs import CLASSES, Usage, UsageKey
from replicator.engine.units import parse_duration

if TYPE_CHECKING:
    from replicator.catalog.lag import RouteLag
    from replicator.catalog.repository import Catalog

T = TypeVar("T")

catalog_app = typer.Typer(
    help="The metadata catalog: datasets, their objects and where fresh copies are.",
    no_args_is_help=True,
)

CatalogURL = Annotated[
    str,
    typer.Option(
        "--catalog",
        envvar="REPLICATOR_CATALOG",
        help="sqlite:///PATH or postgresql://USER@HOST:PORT/DB[?schema=NAME]",
    ),
]
OptionalCatalogURL = Annotated[
    str | None,
    typer.Option(
        "--catalog",
        envvar="REPLICATOR_CATALOG",
        help="sqlite:///PATH or postgresql://USER@HOST:PORT/DB[?schema=NAME]",
    ),
]
ConfigFile = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="Daemon configuration (TOML): use its catalog. Default: the daemon's default.",
    ),
]


def _default_resolver(config: Path | None) -> str:
    if config is not None:
        raise CatalogError("--config needs the daemon's configuration reader")
    return DEFAULT_CATALOG_URL


#: The catalog URL of a daemon configuration (file, or None: the defaults). The daemon layer,
#: which reads configurations, sets it (``replicator.cli.app``); the catalog layer cannot
#: import it.
configured_catalog: Callable[[Path | None], str] = _default_resolver


def _url(catalog: str | None, config: Path | None) -> str:
    if catalog and config is not None:
        raise CatalogError("give --catalog or --config, not both")
    return catalog or configured_catalog(config)


JsonOutput = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
Limit = Annotated[int, typer.Option(min=1, max=10_000, help="At most this many rows.")]


def _run(url: str, work: Callable[[Catalog], Awaitable[T]], **options: Any) -> T:
    # The SQL libraries are loaded by the commands that use them: they slow every CLI start.
    from replicator.catalog.repository import open_catalog

    async def main() -> T:
        catalog = await open_catalog(url, **options)
        try:
            return await work(catalog)
        finally:
            await catalog.close()

    return asyncio.run(main())


def _echo_json(value: Any) -> None:
    typer.echo(json.dumps(plain(value)))


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(h) for h in headers]] + [["-" if v is None else str(v) for v in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in cells
    )


def _duration(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _location(text: str, role: Role) -> LocationSpec:
    """``URL`` or ``URL@REGION``; location URLs end with '/', so the region follows '/@'."""
    url, marker, region = text.rpartition("/@")
    if not marker:
        return LocationSpec(text, role)
    return LocationSpec(url + "/", role, region)


def _split_object(path: str) -> tuple[str, str]:
    dataset, _, rest = path.partition("/")
    return dataset, rest


@catalog_app.command("add-dataset")
def add_dataset(
    name: Annotated[str, typer.Argument(help="Dataset name, e.g. clickstream")],
    source: Annotated[
        list[str] | None,
        typer.Option(help="Source location URL ending in '/', optionally @REGION. Repeatable."),
    ] = None,
    replica: Annotated[
        list[str] | None,
        typer.Option(help="Replica location URL ending in '/', optionally @REGION. Repeatable."),
    ] = None,
    catalog: OptionalCatalogURL = None,
    config: ConfigFile = None,
    json_output: JsonOutput = False,
) -> None:
    """Create a dataset, or add locations to it: a logical name over store prefixes."""
    specs = [_location(s, Role.SOURCE) for s in source or []]
    specs += [_location(r, Role.REPLICA) for r in replica or []]
    if not specs:
        raise CatalogError("give at least one --source or --replica location")
    dataset = _run(_url(catalog, config), lambda c: c.add_dataset(name, specs))
    if json_output:
        _echo_json(dataset)
        return
    for loc in dataset.locations:
        typer.echo(f"{dataset.name}  {loc.role.value:<7}  {loc.url}  {loc.region or '-'}")


@catalog_app.command("datasets")
def datasets_command(
    catalog: OptionalCatalogURL = None, config: ConfigFile = None, json_output: JsonOutput = False
) -> None:
    """List datasets and their locations."""
    found = _run(_url(catalog, config), lambda c: c.datasets())
    if json_output:
        for dataset in found:
            _echo_json(dataset)
        return
    rows = [
        (d.name, loc.role.value, loc.store, loc.region, loc.url)
        for d in found
        for loc in d.locations
    ]
    typer.echo(_table(("DATASET", "ROLE", "STORE", "REGION", "LOCATION"), rows))


@catalog_app.command("ls")
def ls_command(
    path: Annotated[str, typer.Argument(help="DATASET or DATASET/PREFIX")],
    after: Annotated[str | None, typer.Option(help="Start after this key (paging).")] = None,
    limit: Limit = 1000,
    include_deleted: Annotated[bool, typer.Option(help="List deleted objects too.")] = False,
    catalog: OptionalCatalogURL = None,
    config: ConfigFile = None,
    json_output: JsonOutput = False,
) -> None:
    """List objects with every location and whether it holds the newest version."""
    dataset, prefix = _split_object(path)
    entries = _run(
        _url(catalog, config),
        lambda c: c.ls(dataset, prefix, after=after, limit=limit, include_deleted=include_deleted),
    )
    if json_output:
        for entry in entries:
            _echo_json(entry)
        return
    rows = []
    for entry in entries:
        where = " ".join(
            f"{loc.region or loc.location.partition('://')[0]}:"
            f"{'fresh' if loc.fresh else loc.state}"
            for loc in entry.locations
        )
        rows.append((entry.key, entry.size, entry.source_event_time.isoformat(), where))
    typer.echo(_table(("KEY", "SIZE", "CHANGED", "LOCATIONS"), rows))


@catalog_app.command("locate")
def locate_command(
    path: Annotated[str, typer.Argument(help="DATASET/KEY")],
    prefer: Annotated[
        str | None, typer.Option(help="Preferred region label or store kind (s3, gs, az, file).")
    ] = None,
    catalog: OptionalCatalogURL = None,
    config: ConfigFile = None,
    json_output: JsonOutput = False,
) -> None:
    """Print the URL of the best fresh copy of one object (never a stale replica)."""
    dataset, key = _split_object(path)
    if not key:
        raise CatalogError("give DATASET/KEY")
    found = _run(_url(catalog, config), lambda c: c.locate(dataset, key, prefer))
    if json_output:
        _echo_json(found)
    else:
        typer.echo(found.url)


@catalog_app.command("stale")
def stale_command(
    route: Annotated[
        str | None,
        typer.Option(help="Only this route: 'SOURCE -> DESTINATION' or a destination location."),
    ] = None,
    limit: Limit = 1000,
    catalog: OptionalCatalogURL = None,
    config: ConfigFile = None,
    json_output: JsonOutput = False,
) -> None:
    """List replicas behind their source (pending, failed or stale), oldest first."""
    source: str | None = None
    destination = route
    if route is not None and "->" in route:
        source, _, destination = (part.strip() for part in route.partition("->"))
    found = _run(
        _url(catalog, config),
        lambda c: c.stale(destination=destination, source=source, limit=limit),
    )
    if json_output:
        for replica in found:
            _echo_json(replica)
        return
    now = datetime.now(UTC)
    rows = [
        (
            r.state.value,
            _duration((now - r.pending_since).total_seconds()) if r.pending_since else None,
            r.attempts,
            r.url,
            r.last_error,
        )
        for r in found
    ]
    typer.echo(_table(("STATE", "BEHIND", "ATTEMPTS", "REPLICA", "LAST ERROR"), rows))


@catalog_app.command("reconciliations")
def reconciliations_command(
    route: Annotated[str | None, typer.Option(help="Only this route.")] = None,
    limit: Limit = 100,
    catalog: OptionalCatalogURL = None,
    config: ConfigFile = None,
    json_output: JsonOutput = False,
) -> None:
    """What the daemons' periodic reconciliations found (drift by kind) and repaired, the
    latest first."""
    found = _run(_url(catalog, config), lambda c: c.reconcile_runs(route, limit=limit))
    if json_output:
        for run in found:
            _echo_json(run)
        return
    rows = [
        (
            run.started_at.isoformat(timespec="seconds"),
            run.route,
            run.compared,
            run.missing,
            run.different,
            run.extra,
            run.repairs,
            run.failed,
            run.error,
        )
        for run in found
    ]
    headers = ("STARTED", "ROUTE", "COMPARED", "MISSING", "DIFFERENT", "EXTRA", "REPAIRS")
    typer.echo(_table((*headers, "FAILED", "ERROR"), rows))


@catalog_app.command("conflicts")
def conflicts_command(
    group: Annotated[str | None, typer.Option(help="Only this replication group.")] = None,
    limit: Limit = 1000,
    catalog: OptionalCatalogURL = None,
    config: ConfigFile = None,
    json_output: JsonOutput = False,
) -> None:
    """Keys changed at two members of a replication group before either change was
    replicated: the winner every member keeps and the recorded loser, the latest first."""
    found = _run(_url(catalog, config), lambda c: c.conflicts(group, limit=limit))
    if json_output:
        for conflict in found:
            typer.echo(json.dumps(conflict.as_json()))
        return

    def side(member: str, version: str | None, time: datetime) -> str:
        what = "deleted" if version is None else version
        return f"{member} {what} @{time.isoformat(timespec='seconds')}"

    rows = [
        (
            c.detected_at.isoformat(timespec="seconds"),
            c.group,
            c.key,
            side(c.winner_member, c.winner_version, c.winner_time),
            side(c.loser_member, c.loser_version, c.loser_time),
        )
        for c in found
    ]
    typer.echo(_table(("DETECTED", "GROUP", "KEY", "WINNER", "LOSER"), rows))


@catalog_app.command("deletes")
def deletes_command(
    due_within: Annotated[
        str | None,
        typer.Option(help="Only deletions due this soon (or overdue), e.g. 1d; default: all."),
    ] = None,
    limit: Limit = 1000,
    catalog: OptionalCatalogURL = None,
    config: ConfigFile = None,
    json_output: JsonOutput = False,
) -> None:
    """List replica deletions scheduled by delayed delete policies, the earliest due first."""
    now = datetime.now(UTC)
    before = now + parse_duration(due_within) if due_within else datetime.max.replace(tzinfo=UTC)
    found = _run(_url(catalog, config), lambda c: c.due_deletes(before, limit=limit))
    if json_output:
        for item in found:
            _echo_json(item)
        return
    rows = [
        (
            item.due.isoformat(timespec="seconds"),
            _duration((item.due - now).total_seconds()) if item.due > now else "overdue",
            item.url,
            item.source_url,
        )
        for item in found
    ]
    typer.echo(_table(("DUE", "IN", "REPLICA", "DELETED SOURCE"), rows))


@catalog_app.command("export")
def export_command(
    output: Annotated[str, typer.Option(help="File to write ('-': standard output, jsonl only).")],
    format_: Annotated[ExportFormat, typer.Option("--format", help="parquet or jsonl")] = "parquet",
    dataset: Annotated[str | None, typer.Option(help="Only this dataset.")] = None,
    catalog: OptionalCatalogURL = None,
    config: ConfigFile = None,
    json_output: JsonOutput = False,
) -> None:
    """Export one row per (object, location) for lake tools (Spark, DuckDB, pandas...)."""
    # pyarrow is imported only by the command that needs it: it slows every CLI start.
    from replicator.catalog.export import export_catalog

    rows = _run(_url(catalog, config), lambda c: export_catalog(c, output, format_, dataset))
    summary = {"rows": rows, "format": format_, "output": output}
    if json_output and output != "-":
        _echo_json(summary)
    else:
        typer.echo(f"exported {rows} rows to {output} ({format_})", err=True)


@catalog_app.command("serve")
def serve_command(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    catalog: OptionalCatalogURL = None,
    config: ConfigFile = None,
) -> None:
    """Serve the catalog queries and the lag metrics over HTTP (read-only JSON, /metrics)."""
    from replicator.catalog.http import serve

    asyncio.run(
        serve(_url(catalog, config), host, port, log=lambda line: typer.echo(line, err=True))
    )


def _cost_totals(rows: Sequence[CostRow], by: Callable[[CostRow], T]) -> dict[T, CostRow]:
    """``rows`` added up per ``by(row)`` (days and stores together)."""
    totals: dict[T, CostRow] = {}
    for row in rows:
        group = by(row)
        found = totals.get(group)
        usage = Usage()
        usage.add(row.usage)
        if found is not None:
            usage.add(found.usage)
        cost = row.cost_usd + (found.cost_usd if found is not None else 0.0)
        key = UsageKey(row.key.route, row.key.destination, "")
        totals[group] = CostRow(row.day, key, usage, cost)
    return totals


def _spent(row: CostRow) -> dict[str, object]:
    return {**row.usage.as_dict(), "cost_usd": row.cost_usd}


def _cost_table(rows: Sequence[CostRow], *, with_day: bool) -> str:
    lines = []
    for row in rows:
        usage = row.usage
        lines.append(
            (
                *((row.day.isoformat(),) if with_day else ()),
                row.key.route or "(none)",
                row.key.destination or "(route)",
                *((row.key.store,) if with_day else ()),
                *(usage.count(kind) for kind in CLASSES),
                usage.bytes_read,
                usage.bytes_written,
                usage.egress_bytes,
                f"{row.cost_usd:.4f}",
            )
        )
    headers = (
        *(("DAY",) if with_day else ()),
        "ROUTE",
        "DESTINATION",
        *(("STORE",) if with_day else ()),
        *(kind.value.upper() for kind in CLASSES),
        "BYTES READ",
        "BYTES WRITTEN",
        "EGRESS BYTES",
        "EST. USD",
    )
    return _table(headers, lines)


@catalog_app.command("costs")
def costs_command(
    since: Annotated[
        str, typer.Option(help="Days from this long ago (UTC days, today included), e.g. 7d.")
    ] = "7d",
    route: Annotated[str | None, typer.Option(help="Only this route (its name).")] = None,
    catalog: OptionalCatalogURL = None,
    config: ConfigFile = None,
    json_output: JsonOutput = False,
) -> None:
    """Requests by class, bytes read, written and leaving a provider or region (egress), and
    their estimated cost, per day, route, destination and store, as the daemons and backfills
    counted them; then each route's totals. A destination "(route)" is the route's own work
    (the source's heads, listings); a route "(none)", a location's housekeeping (the upload
    janitor's, the readiness checks')."""
    first = (datetime.now(UTC) - parse_duration(since)).date()
    rows = _run(_url(catalog, config), lambda c: c.costs(first, route))
    if json_output:
        for row in rows:
            _echo_json(row.as_dict())
        return
    if not rows:
        typer.echo(f"no costs counted since {first.isoformat()}")
        return
    typer.echo(_cost_table(rows, with_day=True))
    totals = _cost_totals(rows, lambda row: (row.key.route, row.key.destination))
    typer.echo(f"\ntotals since {first.isoformat()}:")
    typer.echo(_cost_table([totals[k] for k in sorted(totals)], with_day=False))


def status_command(
    catalog: OptionalCatalogURL = None,
    config: ConfigFile = None,
    json_output: JsonOutput = False,
    slo: Annotated[
        str, typer.Option(help="Latency objective: slower changes count as missed, e.g. 15m.")
    ] = "15m",
    window: Annotated[
        str | None,
        typer.Option(help="Latency figures over changes applied this recently, e.g. 1h."),
    ] = None,
) -> None:
    """Consistency lag per route: pending, failed, latency, oldest pending, watermark, the
    pauses in force (who, why, until when), and today's requests, bytes and estimated cost
    per route and destination (``catalog costs`` for more days)."""
    since = datetime.now(UTC) - parse_duration(window) if window else None

    today = datetime.now(UTC).date()

    async def work(
        c: Catalog,
    ) -> tuple[list[RouteLag], dict[str, Pause], list[Pause], list[CostRow]]:
        return (
            await c.route_lag(since=since),
            await c.paused_destinations(),
            await c.pauses(),
            await c.costs(today),
        )

    lags, paused, pauses, costs = _run(_url(catalog, config), work, slo=parse_duration(slo))
    now = datetime.now(UTC)
    if json_output:
        # Each line is one destination of a source: its costs are what was counted for that
        # destination today, by every route writing to it; and the whole of each such route
        # (all its destinations and its own work: the source's heads, listings).
        by_destination = _cost_totals(costs, lambda row: row.key.destination)
        by_route = _cost_totals(costs, lambda row: row.key.route)
        writers: dict[str, set[str]] = {}
        for row in costs:
            writers.setdefault(row.key.destination, set()).add(row.key.route)
        for lag in lags:
            destination = lag.route.destination
            pause = paused.get(destination)
            spent = by_destination.get(destination)
            line = {
                **lag.as_dict(now),
                "paused": pause and pause.as_dict(),
                "costs_today": spent and _spent(spent),
                "route_costs_today": {
                    name: _spent(by_route[name]) for name in sorted(writers.get(destination, ()))
                },
            }
            typer.echo(json.dumps(line))
        return
    typer.echo(_status_table(lags, now))
    if costs:
        totals = _cost_totals(costs, lambda row: (row.key.route, row.key.destination))
        typer.echo(f"\ncosts today ({today.isoformat()} UTC), per route and destination:")
        typer.echo(_cost_table([totals[k] for k in sorted(totals)], with_day=False))
    for pause in pauses:
        what = f"{pause.route} {pause.destination}".strip()
        until = pause.until.isoformat(timespec="seconds") if pause.until else "resumed by hand"
        typer.echo(
            f"paused ({pause.scope}): {what} by {pause.paused_by} since "
            f"{pause.paused_at.isoformat(timespec='seconds')}, until {until}: {pause.reason}"
        )


def _status_table(lags: Sequence[RouteLag], now: datetime) -> str:
    rows = [
        (
            str(lag.route),
            lag.pending_ops,
            lag.pending_bytes,
            lag.failed_ops,
            _duration(lag.latency_max_seconds),
            _duration(lag.latency_p50_seconds),
            _duration(lag.latency_p99_seconds),
            lag.slo_missed,
            _duration(lag.oldest_pending_age(now)),
            lag.watermark.isoformat(timespec="seconds") if lag.watermark else None,
            lag.deletes_scheduled,
        )
        for lag in lags
    ]
    headers = (
        "ROUTE",
        "PENDING",
        "BYTES PENDING",
        "FAILED",
        "LATENCY",
        "P50",
        "P99",
        "SLO MISSED",
        "OLDEST PENDING",
        "WATERMARK",
        "DELETES SCHEDULED",
    )
    return _table(headers, rows) if rows else "no routes in the catalog yet"
