"""Opening a catalog: URL forms, migrations, SQLite durability settings."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text

from replicator.catalog import CatalogError, open_catalog
from replicator.catalog.database import MIGRATIONS, SCHEMA_HEAD, open_database
from replicator.catalog.schema import metadata
from tests.catalog.conftest import drop_schema, unique


def _differences(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection)
    return list(compare_metadata(context, metadata))


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def _head() -> str | None:
    return ScriptDirectory.from_config(_config()).get_current_head()


def _downgrade(connection: Connection, revision: str) -> None:
    config = _config()
    config.attributes["connection"] = connection
    command.downgrade(config, revision)


@pytest.fixture(params=["sqlite", "postgresql"])
async def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """A catalog URL where nothing exists yet: a new file, or a new schema dropped after."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/nested/dir/catalog.db"
        return
    server: str = request.getfixturevalue("postgres_server")
    schema = unique("replicator_fresh_")
    try:
        yield f"{server}?schema={schema}"
    finally:
        await drop_schema(server, schema)


async def test_concurrent_first_opens_migrate_once_to_the_model(fresh_url: str) -> None:
    """Several daemons opening a new catalog at once all succeed; the database ends at the
    newest migration and matches the table definitions exactly."""
    opened = await asyncio.gather(*(open_catalog(fresh_url) for _ in range(3)))
    try:
        async with opened[0].database.reader.connect() as conn:
            version = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar()
            assert version == _head()
            assert await conn.run_sync(_differences) == []
    finally:
        for catalog in opened:
            await catalog.close()
    again = await open_catalog(fresh_url)
    await again.close()


def test_the_schema_head_names_the_newest_migration() -> None:
    """Opening a catalog at ``SCHEMA_HEAD`` skips Alembic: a new migration must move it."""
    assert _head() == SCHEMA_HEAD


async def test_a_catalog_at_an_older_migration_is_upgraded_when_opened(fresh_url: str) -> None:
    database = await open_database(fresh_url)
    try:
        async with database.write() as conn:
            await conn.run_sync(_downgrade, "0009_group_deletions")
    finally:
        await database.dispose()
    catalog = await open_catalog(fresh_url)
    try:
        async with catalog.database.reader.connect() as conn:
            version = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar()
            assert version == SCHEMA_HEAD
            assert await conn.run_sync(_differences) == []
    finally:
        await catalog.close()


async def test_sqlite_catalog_is_durable_and_journaled(tmp_path: Path) -> None:
    """The embedded catalog runs in WAL mode with synchronous=FULL on every connection."""
    catalog = await open_catalog(f"sqlite:///{tmp_path}/c.db")
    try:
        for engine in (catalog.database.writer, catalog.database.reader):
            async with engine.connect() as conn:
                assert (await conn.execute(text("PRAGMA journal_mode"))).scalar() == "wal"
                assert (await conn.execute(text("PRAGMA synchronous"))).scalar() == 2
    finally:
        await catalog.close()


@pytest.mark.parametrize(
    "url",
    [
        "mysql://root@localhost/db",
        "sqlite://",
        "sqlite:///:memory:",
        "not a url",
        "postgresql://postgres@127.0.0.1:5432/test?schema=bad;name",
    ],
)
async def test_unusable_urls_are_refused_with_the_reason(url: str) -> None:
    """Unsupported databases, in-memory SQLite (a catalog must persist) and unsafe schema
    names are refused before anything is created."""
    with pytest.raises(CatalogError):
        await open_catalog(url)
