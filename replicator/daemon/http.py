"""The daemon's HTTP side: catalog queries and /metrics, /healthz, and the ingest receivers."""

from __future__ import annotations

from collections.abc import Mapping

import structlog
from aiohttp import web

from replicator.daemon.config import DaemonConfig
from replicator.daemon.deletes import DeleteGuard
from replicator.pipeline.ingest import Publisher, add_ingest_routes
from replicator.pipeline.worker import Worker

log = structlog.get_logger(__name__)


async def serve_http(
    config: DaemonConfig,
    env: Mapping[str, str],
    app: web.Application,
    publisher: Publisher,
    worker: Worker,
    guard: DeleteGuard,
) -> web.AppRunner:
    """One port: catalog queries and /metrics, /healthz, and the ingest receivers."""

    async def health(_: web.Request) -> web.Response:
        return web.json_response(
            {
                "status": "ok",
                "applied": worker.stats.applied,
                "dead_lettered": worker.stats.dead_lettered,
                # Routes whose deletions wait for an operator (restart to resume).
                "deletes_paused": sorted(guard.paused),
            }
        )

    app.router.add_get("/healthz", health)
    token = config.http.ingest_token(env)
    if token:
        add_ingest_routes(app, publisher, token, config.http.sns_confirm_hosts)
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
