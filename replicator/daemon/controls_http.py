"""Operator controls on the daemon's admin listener (behind its admin token, when one is set):

``GET    /controls/pauses``                         pauses in force (replication and deletions)
``POST   /controls/pauses``                         pause: JSON ``{"route": R, "destination":
                                                   URL?, "until": TIME? | "for": "2h"?,
                                                   "reason": TEXT?, "scope": "replication"
                                                   (default) | "deletes", "by": NAME?}``
``DELETE /controls/pauses?route=R[&destination=URL][&scope=S]``   resume
``GET    /controls/failed[?route=R][&key=K...][&limit=N]``        the failed list
``POST   /controls/failed/retry``                   JSON ``{"routes": [..], "keys": [..]}`` or
                                                   ``{"all": true}``: send failed changes back

The state is the catalog's, shared by the fleet: every daemon honours a pause or a resume
within seconds, whichever daemon's listener received it.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from replicator.catalog import Catalog, CatalogError, PauseScope
from replicator.catalog.model import pause_end

CONTROLS_CATALOG = web.AppKey("controls_catalog", Catalog)


def add_control_routes(app: web.Application, catalog: Catalog) -> None:
    app[CONTROLS_CATALOG] = catalog
    app.router.add_get("/controls/pauses", _pauses)
    app.router.add_post("/controls/pauses", _pause)
    app.router.add_delete("/controls/pauses", _resume)
    app.router.add_get("/controls/failed", _failed)
    app.router.add_post("/controls/failed/retry", _retry)


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise CatalogError("the request body must be a JSON object") from None
    if not isinstance(body, dict):
        raise CatalogError("the request body must be a JSON object")
    return body


def _utf8(value: str, name: str) -> str:
    """Text the catalog can store: a lone surrogate (a JSON \\ud800 escape) is refused."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise CatalogError(f"{name!r} is not valid text") from None
    return value


def _text(body: dict[str, Any], name: str, default: str | None = None) -> str | None:
    value = body.get(name, default)
    if value is not None and not isinstance(value, str):
        raise CatalogError(f"{name!r} must be a string")
    return None if value is None else _utf8(value, name)


def _texts(body: dict[str, Any], name: str) -> list[str]:
    value = body.get(name, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise CatalogError(f"{name!r} must be a list of strings")
    return [_utf8(v, name) for v in value]


def _params(request: web.Request, name: str) -> list[str]:
    return [_utf8(v, name) for v in request.query.getall(name, [])]


def _scope(value: str | None) -> PauseScope:
    try:
        return PauseScope(value or PauseScope.REPLICATION)
    except ValueError:
        raise CatalogError(f"scope must be one of {', '.join(PauseScope)}") from None


async def _pauses(request: web.Request) -> web.Response:
    found = await request.app[CONTROLS_CATALOG].pauses()
    return web.json_response({"pauses": [p.as_dict() for p in found]})


async def _pause(request: web.Request) -> web.Response:
    body = await _body(request)
    route = _text(body, "route")
    if not route:
        raise CatalogError("'route' is required")
    paused = await request.app[CONTROLS_CATALOG].pause(
        route,
        scope=_scope(_text(body, "scope")),
        destination=_text(body, "destination", "") or "",
        until=pause_end(_text(body, "until"), _text(body, "for")),
        reason=_text(body, "reason", "paused over HTTP") or "paused over HTTP",
        paused_by=_text(body, "by") or f"http {request.remote or 'unknown'}",
    )
    return web.json_response(paused.as_dict())


async def _resume(request: web.Request) -> web.Response:
    route = _utf8(request.query.get("route", ""), "route")
    if not route:
        raise CatalogError("query parameter 'route' is required")
    destination = _utf8(request.query.get("destination", ""), "destination")
    resumed = await request.app[CONTROLS_CATALOG].resume(
        route, scope=_scope(request.query.get("scope")), destination=destination
    )
    if not resumed:
        return web.json_response({"error": f"{route} {destination} is not paused"}, status=404)
    return web.json_response({"resumed": {"route": route, "destination": destination or None}})


async def _failed(request: web.Request) -> web.Response:
    found = await request.app[CONTROLS_CATALOG].failed_changes(
        routes=_params(request, "route"),
        keys=_params(request, "key"),
        limit=int(request.query.get("limit", "1000")),
    )
    return web.json_response({"failed": [item.as_dict() for item in found]})


async def _retry(request: web.Request) -> web.Response:
    body = await _body(request)
    routes, keys = _texts(body, "routes"), _texts(body, "keys")
    if not (routes or keys or body.get("all") is True):
        raise CatalogError("name 'routes' or 'keys', or send all with {\"all\": true}")
    sent = await request.app[CONTROLS_CATALOG].retry_failed(routes=routes, keys=keys)
    return web.json_response({"sent_back": [item.as_dict() for item in sent]})
