"""``replicator deletes ...``: the fleet-wide pause of a route's deletions.

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
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from replicator.catalog.cli import CatalogURL
from replicator.catalog.model import DEFAULT_CATALOG_URL, Pause, PauseScope
from replicator.engine.units import parse_duration
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
    return {
        "route": pause.route,
        "scope": str(pause.scope),
        "reason": pause.reason,
        "paused_by": pause.paused_by,
        "paused_at": pause.paused_at.isoformat(),
        "until": pause.until.isoformat() if pause.until else None,
    }


@deletes_app.command("pause")
def pause(
    route: Annotated[str, typer.Argument(help="The route whose deletions to hold back.")],
    reason: Annotated[str, typer.Option(help="Why, for whoever resumes it.")] = "paused by hand",
    for_: Annotated[
        str | None,
        typer.Option("--for", help="Resume by itself after this long, e.g. 2h (default: never)."),
    ] = None,
    catalog: CatalogURL = DEFAULT_CATALOG_URL,
) -> None:
    """Hold back the route's deletions on every daemon until resumed."""
    until = datetime.now(UTC) + parse_duration(for_) if for_ else None
    who = f"{getpass.getuser()}@{socket.gethostname()}"
    paused = _run(
        catalog,
        lambda c: c.pause(
            route, scope=PauseScope.DELETES, reason=reason, paused_by=who, until=until
        ),
    )
    typer.echo(json.dumps(_describe(paused)))


@deletes_app.command("resume")
def resume(
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
def paused(
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
