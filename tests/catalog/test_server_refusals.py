"""A PostgreSQL server that is there but not serving yet (starting up, recovering after a
crash) or any more (shutting down) refuses new connections with SQLSTATE 57P03: the catalog is
unavailable for now, not refusing the request for good. (Found by the chaos suite: after a
PostgreSQL restart, records were dead-lettered with "the database system is not yet
accepting connections".)"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import asyncpg

from replicator.catalog import open_catalog
from replicator.catalog.model import CatalogError, CatalogUnavailable
from replicator.devstack import DevStack


async def test_a_server_refusing_new_connections_is_unavailable(tmp_path: Path) -> None:
    stack = DevStack(tmp_path / "postgres", components=("postgres",))
    state = await asyncio.to_thread(stack.up)
    try:
        url = state.env["REPLICATOR_POSTGRES_URL"]
        catalog = await open_catalog(url)
        holder = await asyncpg.connect(url)
        try:
            # Drop the catalog's pooled connections, then ask for a "smart" shutdown: the
            # server keeps serving the holder's session and refuses every new connection.
            await holder.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE pid <> pg_backend_pid() AND backend_type = 'client backend'"
            )
            os.kill(state.components["postgres"].pid, signal.SIGTERM)
            refused = None
            for _ in range(200):
                try:
                    probe = await asyncpg.connect(url)
                except asyncpg.CannotConnectNowError as exc:
                    refused = exc
                    break
                await probe.close()
                await asyncio.sleep(0.05)
            assert refused is not None, "the server never refused a connection"
            errors: list[CatalogError] = []
            for _ in range(3):
                try:
                    await catalog.datasets()
                except CatalogError as exc:
                    errors.append(exc)
            assert len(errors) == 3
            assert any("shutting down" in str(error) for error in errors), errors
            assert all(isinstance(error, CatalogUnavailable) for error in errors), errors
        finally:
            await holder.close()
            await catalog.close()
    finally:
        await asyncio.to_thread(stack.down)
