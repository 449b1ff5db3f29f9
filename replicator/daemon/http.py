"""The daemon's HTTP side, on two listeners:

* admin (``[http] host:port``): ``/healthz``, ``/readyz``, ``/metrics``, the catalog's
  read-only queries and the operator controls (``/controls/...``: pause and resume, the
  failed list and its retry; ``replicator.daemon.controls_http``). With
  ``admin_token_env``/``admin_token_file`` set, every admin request
  but the two probes needs ``Authorization: Bearer TOKEN`` (Prometheus: the ServiceMonitor's
  authorization); the probes stay open for the kubelet, and tell nothing secret.
* ingest (``[http] ingest_host:ingest_port``): the push receivers ``/ingest/s3``,
  ``/ingest/gcs``, ``/ingest/azure``, each verifying its senders as ``[ingest.*]`` says (the
  shared token by default); not started when a receiver needs the token and none is set.
  Only this listener need be reachable from the clouds.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import structlog
from aiohttp import web
from aiohttp.typedefs import Middleware
from prometheus_client import CollectorRegistry

from replicator.daemon.applier import Applier
from replicator.daemon.config import DaemonConfig
from replicator.daemon.controls_http import add_control_routes
from replicator.daemon.readiness import Readiness
from replicator.pipeline.events import ChangeEvent
from replicator.pipeline.ingest.publisher import Publisher
from replicator.pipeline.ingest.receivers import add_ingest_routes
from replicator.pipeline.ingest.verification import IngestAuth
from replicator.pipeline.worker import Worker

log = structlog.get_logger(__name__)

_OPEN_PATHS = frozenset({"/healthz", "/readyz"})
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Listeners:
    admin: web.AppRunner
    ingest: web.AppRunner | None

    @property
    def admin_port(self) -> int:
        return _port(self.admin)

    @property
    def ingest_port(self) -> int | None:
        return _port(self.ingest) if self.ingest is not None else None

    async def cleanup(self) -> None:
        if self.ingest is not None:
            await self.ingest.cleanup()
        await self.admin.cleanup()


def _port(runner: web.AppRunner) -> int:
    port: int = runner.addresses[0][1]
    return port


def _admin_token_check(token: str) -> Middleware:
    expected = f"Bearer {token}".encode()

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        offered = request.headers.get("Authorization", "").encode(errors="surrogateescape")
        if request.path not in _OPEN_PATHS and not hmac.compare_digest(offered, expected):
            raise web.HTTPUnauthorized(text="missing or wrong admin token\n")
        return await handler(request)

    return check


async def serve_http(
    config: DaemonConfig,
    env: Mapping[str, str],
    admin: web.Application,
    publisher: Publisher,
    worker: Worker[ChangeEvent],
    applier: Applier,
    readiness: Readiness,
    registry: CollectorRegistry,
) -> Listeners:
    """Start both listeners; ``admin`` already holds the catalog's queries and /metrics."""

    async def health(_: web.Request) -> web.Response:
        try:
            await applier.guard.refresh()
        except Exception as exc:
            # The last pauses read stand in while the catalog does not answer.
            log.warning("cannot read pauses for /healthz", error=str(exc))
        return web.json_response(
            {
                "status": "ok",
                "applied": worker.stats.applied,
                "dead_lettered": worker.stats.dead_lettered,
                # Routes whose deletions wait for an operator (replicator deletes resume).
                "deletes_paused": sorted(applier.guard.paused),
                # Destinations whose replication an operator paused (replicator resume).
                "destinations_paused": sorted(applier.pauses.paused),
                # Routes whose source or destination cannot be used (bucket missing, access
                # refused), with the last error.
                "routes_unhealthy": {
                    route: problem.reason for route, problem in applier.health.problems().items()
                },
            }
        )

    async def ready(_: web.Request) -> web.Response:
        is_ready, body = readiness.report()
        return web.json_response(body, status=200 if is_ready else 503)

    admin_token = config.http.admin_token(env)
    if admin_token:
        admin.middlewares.insert(0, _admin_token_check(admin_token))
    add_control_routes(admin, applier.catalog)
    admin.router.add_get("/healthz", health)
    admin.router.add_get("/readyz", ready)
    admin_runner = await _start(admin, config.http.host, config.http.port)
    ingest_runner = None
    token = config.http.ingest_token(env)
    if token or not config.ingest.needs_token():
        ingest = web.Application()
        auth = IngestAuth(config.ingest, token, registry=registry)
        add_ingest_routes(ingest, publisher, token, config.http.sns_confirm_hosts, auth)
        host = config.http.ingest_host or config.http.host
        try:
            ingest_runner = await _start(ingest, host, config.http.ingest_port)
        except BaseException:
            await admin_runner.cleanup()
            raise
    else:
        log.warning(
            "ingest listener not started: a receiver verifies the shared token and none is set",
            variable=config.http.ingest_token_env,
            file=str(config.http.ingest_token_file or ""),
        )
    return Listeners(admin_runner, ingest_runner)


async def _start(app: web.Application, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner
