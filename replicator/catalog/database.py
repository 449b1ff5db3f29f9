"""Opening the catalog database: URL forms, engines, connection settings and migrations.

Catalog URLs:

* ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db`` (``~`` is expanded): the
  embedded default, in WAL mode with ``synchronous=FULL`` so that a committed row survives a
  power cut. Writes go through one connection that takes the write lock when its transaction
  begins (``BEGIN IMMEDIATE``), so a transaction never has to upgrade a read lock and fail;
  reads use their own pool and never wait for writes. ``?busy_timeout=30s`` (the default) is
  how long a write waits for another process holding the lock.
* ``postgresql://user@host:port/db`` (or ``postgres://``), optionally ``?schema=NAME`` to keep
  the tables in their own schema (created if missing): several daemons share it.

Migrations (Alembic, ``replicator/catalog/migrations``) run on every open, under a lock that
makes concurrent opens by several daemons safe.

Errors: ``Database.write()`` and ``Database.read()`` are the only ways in, and they turn a
database that cannot be reached, went away mid-transaction or stayed locked into
``CatalogUnavailable`` (retried by callers: the catalog blinked), and every other database
error into ``CatalogError``; no driver exception leaves the catalog.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import Connection, Table, event, text
from sqlalchemy import exc as sql_errors
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from replicator.catalog.model import CatalogError, CatalogUnavailable
from replicator.engine.units import parse_duration

MIGRATIONS = Path(__file__).parent / "migrations"
#: The newest migration in ``migrations/versions``. A catalog already at it is not handed to
#: Alembic at all: importing Alembic costs every command that opens a catalog ~0.2 s of CPU.
SCHEMA_HEAD = "0010_halted_uploads"
_SCHEMA_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
# Any fixed number: every process that migrates a catalog takes the same advisory lock.
_MIGRATION_LOCK = 0x7265706C


Backend = Literal["sqlite", "postgresql"]


@dataclass(frozen=True)
class Database:
    """Engines of one open catalog: ``writer`` for transactions that write, ``reader`` for
    queries (the same engine on PostgreSQL)."""

    backend: Backend
    display_url: str
    writer: AsyncEngine
    reader: AsyncEngine

    async def ping(self) -> None:
        """One round trip to the database (readiness checks); raises if it does not answer."""
        async with self.reader.connect() as connection:
            await connection.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        await self.writer.dispose()
        if self.reader is not self.writer:
            await self.reader.dispose()

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A transaction on the writer, committed when the block ends."""
        with _mapped_errors(self.display_url):
            async with self.writer.begin() as connection:
                yield connection

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A connection for queries."""
        with _mapped_errors(self.display_url):
            async with self.reader.connect() as connection:
                yield connection


# Driver errors that mean "not now" rather than "never": the server is down, restarting or
# unreachable, the connection broke, the pool is exhausted, or SQLite stayed locked.
_UNAVAILABLE = (
    sql_errors.OperationalError,
    sql_errors.InterfaceError,
    sql_errors.TimeoutError,
    ConnectionError,
    OSError,
    TimeoutError,
)


@contextlib.contextmanager
def _mapped_errors(display_url: str) -> Iterator[None]:
    try:
        yield
    except CatalogError:
        raise
    except sql_errors.DBAPIError as exc:
        if exc.connection_invalidated or isinstance(exc, _UNAVAILABLE) or _transient_state(exc):
            raise CatalogUnavailable(
                f"catalog {display_url} is unavailable: {_first_line(exc.orig or exc)}"
            ) from exc
        raise CatalogError(f"catalog {display_url} refused a request: {_first_line(exc)}") from exc
    except _UNAVAILABLE as exc:
        raise CatalogUnavailable(
            f"catalog {display_url} is unavailable: {_first_line(exc)}"
        ) from exc
    except sql_errors.SQLAlchemyError as exc:
        raise CatalogError(f"catalog {display_url} refused a request: {_first_line(exc)}") from exc


# SQLSTATEs of a server that is starting, stopping, overloaded or lost the connection, and of
# transactions that only need running again: PostgreSQL's classes 08 (connection exception)
# and 53 (insufficient resources), and 57P01-57P03 (shut down, crashed, not yet accepting
# connections), 40001 (serialization failure), 40P01 (deadlock detected).
_TRANSIENT_STATES = ("57P01", "57P02", "57P03", "40001", "40P01")
_TRANSIENT_CLASSES = ("08", "53")


def _transient_state(exc: sql_errors.DBAPIError) -> bool:
    state = getattr(exc.orig, "sqlstate", None)
    if not isinstance(state, str):
        return False
    return state in _TRANSIENT_STATES or state[:2] in _TRANSIENT_CLASSES


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


def dialect_insert(backend: Backend, table: Table) -> Any:
    """The backend's INSERT construct, the one with ``on_conflict_do_update`` (both dialects
    spell upserts the same way, from different classes)."""
    return sqlite_insert(table) if backend == "sqlite" else pg_insert(table)


def _parse(url: str) -> URL:
    try:
        return make_url(url)
    except ArgumentError:
        raise CatalogError(
            f"invalid catalog URL {url!r}: use sqlite:///PATH or postgresql://USER@HOST:PORT/DB"
        ) from None


async def open_database(url: str) -> Database:
    """Connect to the catalog at ``url`` and bring its schema up to date."""
    parsed = _parse(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        database = await _open_sqlite(parsed)
    elif backend in ("postgresql", "postgres"):
        database = _open_postgresql(parsed)
    else:
        raise CatalogError(
            f"unsupported catalog URL {parsed.render_as_string(hide_password=True)!r}: "
            "use sqlite:///PATH or postgresql://USER@HOST:PORT/DB"
        )
    try:
        await _migrate(database, parsed.query.get("schema"))
    except BaseException:
        await database.dispose()
        raise
    return database


async def _open_sqlite(parsed: URL) -> Database:
    if not parsed.database or parsed.database == ":memory:":
        raise CatalogError("the catalog needs a SQLite file: sqlite:///PATH")
    busy = parsed.query.get("busy_timeout", "30s")
    if not isinstance(busy, str):
        raise CatalogError("busy_timeout is given twice in the catalog URL")
    busy_ms = int(parse_duration(busy).total_seconds() * 1000)
    path = await asyncio.to_thread(_prepare_file, parsed.database)
    driver_url = URL.create("sqlite+aiosqlite", database=str(path))
    # One writer connection: SQLite takes one writer at a time anyway, and the catalog batches
    # concurrent writes into shared transactions instead of queueing on the file lock.
    writer = create_async_engine(driver_url, pool_size=1, max_overflow=0)
    reader = create_async_engine(driver_url)
    _sqlite_settings(writer, begin="BEGIN IMMEDIATE", busy_ms=busy_ms)
    _sqlite_settings(reader, begin="BEGIN", busy_ms=busy_ms)
    return Database("sqlite", f"sqlite:///{path}", writer, reader)


def _prepare_file(database: str) -> Path:
    path = Path(database).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _sqlite_settings(engine: AsyncEngine, *, begin: str, busy_ms: int) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def configure(dbapi_connection: Any, _record: Any) -> None:
        # Transactions are begun explicitly below, not by the driver's own guesswork.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for pragma in (
            "PRAGMA journal_mode=WAL",
            "PRAGMA synchronous=FULL",
            f"PRAGMA busy_timeout={busy_ms}",
            "PRAGMA foreign_keys=ON",
            # The default 2 MiB page cache thrashes once the catalog has ~100k objects.
            "PRAGMA cache_size=-32768",
        ):
            cursor.execute(pragma)
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def start(connection: Connection) -> None:
        connection.exec_driver_sql(begin)


def _open_postgresql(parsed: URL) -> Database:
    schema = parsed.query.get("schema")
    connect_args: dict[str, Any] = {}
    if schema is not None:
        if not isinstance(schema, str) or not _SCHEMA_NAME.fullmatch(schema):
            raise CatalogError(f"invalid schema name {schema!r} in the catalog URL")
        connect_args["server_settings"] = {"search_path": schema}
    driver_url = parsed.set(drivername="postgresql+asyncpg").difference_update_query(["schema"])
    # pool_pre_ping: a pooled connection that a server restart broke is replaced before use
    # instead of failing the first request after the restart.
    engine = create_async_engine(
        driver_url, connect_args=connect_args, pool_size=10, pool_pre_ping=True
    )
    return Database("postgresql", parsed.render_as_string(hide_password=True), engine, engine)


async def _migrate(database: Database, schema: str | tuple[str, ...] | None) -> None:
    if await _at_head(database):
        return
    async with database.write() as connection:
        if database.backend == "postgresql":
            await connection.execute(text(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK})"))
            if isinstance(schema, str):
                quoted = connection.dialect.identifier_preparer.quote_schema(schema)
                await connection.execute(text(f"CREATE SCHEMA IF NOT EXISTS {quoted}"))
        await connection.run_sync(_upgrade)


async def _at_head(database: Database) -> bool:
    """Whether the catalog's schema is already ``SCHEMA_HEAD``. Anything else (a new database,
    an older or newer schema, an error) goes to Alembic, which upgrades or says what is wrong."""
    try:
        async with database.reader.connect() as connection:
            found = await connection.execute(text("SELECT version_num FROM alembic_version"))
            return [row[0] for row in found] == [SCHEMA_HEAD]
    except sql_errors.DBAPIError:
        return False


def _upgrade(connection: Connection, revision: str = "head") -> None:
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    command.upgrade(config, revision)
