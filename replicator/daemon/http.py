"""The daemon's HTTP side: catalog queries and /metrics, /healthz, and the ingest receivers."""

from __future__ import annotations

from collections.abc import Mapping

import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry

from replicator.daemon.applier import Applier
from replicator.daemon.config import DaemonConfig
from replicator.pipeline.ingest import Publisher, add_ingest_routes
from replicator.pipeline.ingest.verification import IngestAuth
from replicator.pipeline.worker import Worker

log = structlog.get_logger(__name__)


async def serve_http(
    config: DaemonConfig,
    env: Mapping[str, str],
    app: web.Application,
    publisher: Publisher,
    worker: Worker,
    applier: Applier,
    registry: CollectorRegistry,
) -> web.AppRunner:
    """One port: catalog queries and /metrics, /healthz, and the ingest receivers."""

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
                # Routes whose source or destination cannot be used (bucket missing, access
                # refused), with the last error.
                "routes_unhealthy": {
                    route: problem.reason for route, problem in applier.health.problems().items()
                },
            }
        )

    app.router.add_get("/healthz", health)
    token = config.http.ingest_token(env)
    if token or not config.ingest.needs_token():
        auth = IngestAuth(config.ingest, token, registry=registry)
        add_ingest_routes(app, publisher, token, config.http.sns_confirm_hosts, auth)
    else:
        log.warning(
            "ingest endpoints disabled: no shared secret",
            variable=config.http.ingest_token_env,
            file=str(config.http.ingest_token_file or ""),
        )
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, config.http.host, config.http.port)
    await site.start()
    return runner
