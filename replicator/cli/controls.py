"""Operator controls for the whole fleet, kept in the catalog: ``replicator pause|resume|paused``
(a route's or one destination's replication), ``replicator failed list|retry`` (changes whose
retry budget ran out) and ``replicator deletes ...`` (a route's deletions).

While a destination is paused, every daemon (within seconds) writes nothing there and holds
its changes in the catalog (pending: the lag grows); once resumed, by hand or when ``--until``
or ``--for`` ends, whichever daemon is alive publishes them to the changes topic again and the
owner of each key's partition applies them in the key's order, reading each source afresh.
``failed retry`` sends failed changes back the same way.

A route that exceeds ``max_deletes_per_minute`` has its deletions paused by the delete guard;
an operator can also pause them (before a risky migration, say). While paused, every daemon
records the route's deletions as ``delete_paused`` (still to do: they hold its watermark) and
deletes nothing; ``resume`` lets the daemons' deletion sweepers carry them out, each checked
again against the source.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import socket
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from replicator.catalog.cli import CatalogURL
from replicator.catalog.model import (
    DEFAULT_CATALOG_URL,
    HeldChange,
    Pause,
    PauseScope,
    pause_end,
)
from replicator.errors import ConfigError

if TYPE_CHECKING:
    from replicator.catalog.repository import Catalog

T = TypeVar("T")

deletes_app = typer.Typer(
    help="Pause and resume a route's deletions for the whole fleet (the delete guard pauses "
    "them when a route exceeds max_deletes_per_minute).",
    no_args_is_help=True,
)


def _run(url: str, work: Callable[[Catalog], Awaitable[T]]) -> T:
    from replicator.catalog.repository import open_catalog

    async def main() -> T:
        catalog = await open_catalog(url)
        try:
            return await work(catalog)
        finally:
            await catalog.close()

    return asyncio.run(main())


def _describe(pause: Pause) -> dict[str, object]:
    return pause.as_dict()


def _operator() -> str:
    return f"{getpass.getuser()}@{socket.gethostname()}"


def pause_line(pause: Pause) -> str:
    """One pause for people: what, since when, by whom, until when, why."""
    what = f"{pause.route} {pause.destination}".strip()
    until = f" until {pause.until.isoformat(timespec='seconds')}" if pause.until else ""
    return (
        f"{what} ({pause.scope}): paused {pause.paused_at.isoformat(timespec='seconds')} by "
        f"{pause.paused_by}{until}: {pause.reason}"
    )


Destination = Annotated[
    str,
    typer.Option(help="Only this destination of the route (its URL); default: all of them."),
]


def pause(
    route: Annotated[str, typer.Argument(help="The route to pause.")],
    destination: Destination = "",
    until: Annotated[
        str | None,
        typer.Option(help="Resume by itself at this time (ISO 8601, UTC unless zoned)."),
    ] = None,
    for_: Annotated[
        str | None,
        typer.Option("--for", help="Resume by itself after this long, e.g. 2h."),
    ] = None,
    reason: Annotated[str, typer.Option(help="Why, for whoever resumes it.")] = "paused by hand",
    catalog: CatalogURL = DEFAULT_CATALOG_URL,
) -> None:
    """Pause replication to the route's destinations (or one) on every daemon: their changes
    are held in the catalog, not copied, not lost, until resumed."""
    end = pause_end(until, for_)
    paused = _run(
        catalog,
        lambda c: c.pause(
            route,
            scope=PauseScope.REPLICATION,
            destination=destination,
            reason=reason,
            paused_by=_operator(),
            until=end,
        ),
    )
    typer.echo(json.dumps(_describe(paused)))


def resume(
    route: Annotated[str, typer.Argument(help="The route to resume.")],
    destination: Destination = "",
    catalog: CatalogURL = DEFAULT_CATALOG_URL,
) -> None:
    """Resume replication: within seconds the daemons publish the held changes again, and
    each is applied in its key's order (its source read afresh)."""
    resumed = _run(
        catalog,
        lambda c: c.resume(route, scope=PauseScope.REPLICATION, destination=destination),
    )
    if not resumed:
        what = f"{route} {destination}".strip()
        raise ConfigError(f"replication of {what} is not paused (see replicator paused)")
    typer.echo(f"replication of {f'{route} {destination}'.strip()} resumed", err=True)


def paused_all(
    catalog: CatalogURL = DEFAULT_CATALOG_URL,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON lines.")] = False,
) -> None:
    """List every pause in force (replication and deletions), with who, why and until when."""
    for item in _run(catalog, lambda c: c.pauses()):
        typer.echo(json.dumps(_describe(item)) if json_output else pause_line(item))


failed_app = typer.Typer(
    help="Changes that failed at a destination past their retry budget: list them, send them back.",
    no_args_is_help=True,
)


def _failed_line(item: HeldChange) -> str:
    first = item.first_failed_at.isoformat(timespec="seconds") if item.first_failed_at else "-"
    last = item.last_failed_at.isoformat(timespec="seconds") if item.last_failed_at else "-"
    return (
        f"{item.dataset}  {item.key}  {item.version or '-'}  {item.location}  "
        f"{item.attempts} attempts  {first} .. {last}  {item.last_error or ''}"
    )


@failed_app.command("list")
def failed_list(
    route: Annotated[str | None, typer.Argument(help="Only this route.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="At most this many.")] = 1000,
    catalog: CatalogURL = DEFAULT_CATALOG_URL,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON lines.")] = False,
) -> None:
    """Failed changes: key, version, destination, reason, attempts, first and last failure."""
    routes = [route] if route else []
    found = _run(catalog, lambda c: c.failed_changes(routes=routes, limit=limit))
    for item in found:
        typer.echo(json.dumps(item.as_dict()) if json_output else _failed_line(item))


@failed_app.command("retry")
def failed_retry(
    names: Annotated[
        list[str] | None,
        typer.Argument(help="Routes (by name) or object keys whose failed changes to retry."),
    ] = None,
    all_: Annotated[bool, typer.Option("--all", help="Retry every failed change.")] = False,
    catalog: CatalogURL = DEFAULT_CATALOG_URL,
) -> None:
    """Send failed changes back: the daemons apply them again (reading each source afresh,
    so a fixed permission or a returned bucket just works), with a new retry budget."""
    if not names and not all_:
        raise ConfigError("name routes or keys to retry, or give --all")

    async def work(c: Catalog) -> list[HeldChange]:
        known = {d.name for d in await c.datasets()}
        routes = [n for n in names or [] if n in known]
        keys = [n for n in names or [] if n not in known]
        return await c.retry_failed(routes=routes, keys=keys)

    sent = _run(catalog, work)
    typer.echo(f"{len(sent)} failed changes sent back", err=True)


@deletes_app.command("pause")
def deletes_pause(
    route: Annotated[str, typer.Argument(help="The route whose deletions to hold back.")],
    reason: Annotated[str, typer.Option(help="Why, for whoever resumes it.")] = "paused by hand",
    for_: Annotated[
        str | None,
        typer.Option("--for", help="Resume by itself after this long, e.g. 2h (default: never)."),
    ] = None,
    catalog: CatalogURL = DEFAULT_CATALOG_URL,
) -> None:
    """Hold back the route's deletions on every daemon until resumed."""
    until = pause_end(None, for_)
    paused = _run(
        catalog,
        lambda c: c.pause(
            route, scope=PauseScope.DELETES, reason=reason, paused_by=_operator(), until=until
        ),
    )
    typer.echo(json.dumps(_describe(paused)))


@deletes_app.command("resume")
def deletes_resume(
    route: Annotated[str, typer.Argument(help="The route whose deletions to resume.")],
    catalog: CatalogURL = DEFAULT_CATALOG_URL,
) -> None:
    """Let the route's deletions go on: the daemons carry out the held-back ones (each checked
    again against its source) within a sweep interval."""
    resumed = _run(catalog, lambda c: c.resume(route, scope=PauseScope.DELETES))
    if not resumed:
        raise ConfigError(f"the deletions of route {route!r} are not paused")
    typer.echo(f"deletions of route {route!r} resumed", err=True)


@deletes_app.command("paused")
def deletes_paused(
    catalog: CatalogURL = DEFAULT_CATALOG_URL,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON lines.")] = False,
) -> None:
    """List the routes whose deletions are paused, with who paused them and why."""
    found = [p for p in _run(catalog, lambda c: c.pauses()) if p.scope is PauseScope.DELETES]
    for item in found:
        if json_output:
            typer.echo(json.dumps(_describe(item)))
        else:
            until = f" until {item.until.isoformat(timespec='seconds')}" if item.until else ""
            typer.echo(
                f"{item.route}: paused {item.paused_at.isoformat(timespec='seconds')} by "
                f"{item.paused_by}{until}: {item.reason}"
            )
