"""Read-only HTTP endpoints over the catalog, for other services, and Prometheus metrics.

``GET /datasets``                                           datasets and locations
``GET /objects?dataset=D[&prefix=P][&after=K][&limit=N][&include_deleted=1]``   listing
``GET /locate?dataset=D&key=K[&prefer=REGION|STORE]``      best fresh copy (404 if none)
``GET /stale[?destination=URL][&source=URL][&limit=N]``    replicas behind their source
``GET /status[?window=1h]``                                 lag figures per route, pauses
``GET /metrics``                                            Prometheus text format

Keys and prefixes travel as query parameters (percent-encoded like any query value), so any
key, including one with '/', '?' or '#', can be asked for.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from replicator.catalog.lag import LagMetrics
from replicator.catalog.model import CatalogError, UnknownDataset, UnknownLocation
from replicator.catalog.repository import Catalog, open_catalog
from replicator.catalog.views import plain
from replicator.engine.units import parse_duration
from replicator.errors import ConfigError

CATALOG = web.AppKey("catalog", Catalog)
METRICS = web.AppKey("metrics", LagMetrics)
Held = Callable[[str], datetime | None]
HELD: web.AppKey[Held] = web.AppKey("held")


def _nothing_held(_: str) -> datetime | None:
    return None


def create_app(
    catalog: Catalog,
    metrics: LagMetrics,
    *,
    held: Held = _nothing_held,
) -> web.Application:
    """The application; ``metrics`` is the one the catalog records into (its registry is
    what ``/metrics`` serves, with the route gauges refreshed from the catalog per scrape).
    ``held``: what this process holds unrecorded per source location (``route_lag``), so a
    daemon's own ``/status`` and watermark gauge account for its ingest backlog."""
    app = web.Application(middlewares=[_errors])
    app[CATALOG] = catalog
    app[METRICS] = metrics
    app[HELD] = held
    app.router.add_get("/datasets", _datasets)
    app.router.add_get("/objects", _objects)
    app.router.add_get("/locate", _locate)
    app.router.add_get("/stale", _stale)
    app.router.add_get("/status", _status)
    app.router.add_get("/metrics", _metrics)
    return app


@web.middleware
async def _errors(
    request: web.Request, handler: Callable[[web.Request], Any]
) -> web.StreamResponse:
    try:
        response: web.StreamResponse = await handler(request)
    except (UnknownDataset, UnknownLocation) as exc:
        return _json({"error": str(exc)}, status=404)
    except (CatalogError, ConfigError, ValueError) as exc:
        return _json({"error": str(exc)}, status=400)
    return response


def _json(value: Any, status: int = 200) -> web.Response:
    return web.json_response(plain(value), status=status)


def _required(request: web.Request, name: str) -> str:
    value = request.query.get(name)
    if value is None:
        raise CatalogError(f"query parameter {name!r} is required")
    return value


def _limit(request: web.Request) -> int:
    return int(request.query.get("limit", "1000"))


async def _datasets(request: web.Request) -> web.Response:
    return _json({"datasets": await request.app[CATALOG].datasets()})


async def _objects(request: web.Request) -> web.Response:
    entries = await request.app[CATALOG].ls(
        _required(request, "dataset"),
        request.query.get("prefix", ""),
        after=request.query.get("after"),
        limit=_limit(request),
        include_deleted=request.query.get("include_deleted") in ("1", "true"),
    )
    next_after = entries[-1].key if len(entries) == _limit(request) else None
    return _json({"objects": entries, "next_after": next_after})


async def _locate(request: web.Request) -> web.Response:
    dataset, key = _required(request, "dataset"), _required(request, "key")
    try:
        found = await request.app[CATALOG].locate(dataset, key, request.query.get("prefer"))
    except CatalogError as exc:
        # Unknown, deleted, or no fresh copy: there is nothing to point at.
        return _json({"error": str(exc)}, status=404)
    return _json(found)


async def _stale(request: web.Request) -> web.Response:
    found = await request.app[CATALOG].stale(
        destination=request.query.get("destination"),
        source=request.query.get("source"),
        limit=_limit(request),
    )
    return _json({"replicas": found})


async def _status(request: web.Request) -> web.Response:
    window = request.query.get("window")
    now = datetime.now(UTC)
    since = now - parse_duration(window) if window else None
    catalog = request.app[CATALOG]
    lags = await catalog.route_lag(since=since, held=request.app[HELD])
    paused = await catalog.paused_destinations()
    return _json(
        {
            "routes": [
                {
                    **lag.as_dict(now),
                    "paused": p.as_dict() if (p := paused.get(lag.route.destination)) else None,
                }
                for lag in lags
            ],
            "pauses": [p.as_dict() for p in await catalog.pauses()],
        }
    )


async def _metrics(request: web.Request) -> web.Response:
    metrics = request.app[METRICS]
    lags = await request.app[CATALOG].route_lag(percentiles=False, held=request.app[HELD])
    metrics.update(lags, datetime.now(UTC))
    return web.Response(
        body=generate_latest(metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


async def serve(url: str, host: str, port: int, *, log: Callable[[str], None]) -> None:
    """Open the catalog at ``url`` and serve it until cancelled."""
    metrics = LagMetrics(CollectorRegistry())
    catalog = await open_catalog(url, metrics=metrics)
    runner = web.AppRunner(create_app(catalog, metrics))
    try:
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        log(f"serving catalog {catalog.url} on http://{host}:{port}/")
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
        await catalog.close()
