"""Catalog fixtures: every test runs on a SQLite file and on a real PostgreSQL.

PostgreSQL (the test bed's server, or the one ``REPLICATOR_TEST_POSTGRES`` names: see
``tests/conftest.py``) gets a schema of its own for this test run, dropped at the end; tests
share it and keep apart by using unique dataset names and store URLs.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from replicator.catalog import Catalog, LocationSpec, Role, open_catalog
from replicator.catalog.lag import LagMetrics
from replicator.catalog.model import Dataset

BACKENDS = ("sqlite", "postgresql")


def unique(prefix: str = "t") -> str:
    return f"{prefix}{uuid.uuid4().hex[:12]}"


async def drop_schema(server: str, schema: str) -> None:
    engine = create_async_engine(make_url(server).set(drivername="postgresql+asyncpg"))
    try:
        async with engine.begin() as conn:
            await conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    finally:
        await engine.dispose()


@pytest.fixture(scope="session")
async def postgres_url(postgres_server: str) -> AsyncIterator[str]:
    schema = unique("replicator_test_")
    yield f"{postgres_server}?schema={schema}"
    await drop_schema(postgres_server, schema)


@pytest.fixture(params=BACKENDS)
def catalog_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A catalog URL: a fresh SQLite file, or the run's PostgreSQL schema."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/catalog.db"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
async def catalog(catalog_url: str, registry: CollectorRegistry) -> AsyncIterator[Catalog]:
    opened = await open_catalog(catalog_url, metrics=LagMetrics(registry))
    try:
        yield opened
    finally:
        await opened.close()


DatasetFactory = Callable[..., Awaitable[Dataset]]


@pytest.fixture
def make_dataset(catalog: Catalog) -> DatasetFactory:
    """``await make_dataset()``: a dataset with an S3 source (us-east-1), a GCS replica
    (europe-west1) and an Azure replica (no region), all under unique names."""

    async def make(*, replicas: int = 2) -> Dataset:
        tag = unique("")
        specs = [LocationSpec(f"s3://lake-{tag}/clickstream/", Role.SOURCE, "us-east-1")]
        extra = [
            LocationSpec(f"gs://ml-{tag}/clickstream/", Role.REPLICA, "europe-west1"),
            LocationSpec(f"az://lake-{tag}/clickstream/", Role.REPLICA),
        ]
        return await catalog.add_dataset(f"clickstream-{tag}", specs + extra[:replicas])

    return make


def store_url(ds: Dataset, store: str) -> str:
    """The URL of ``ds``'s location in the store kind ``store`` (s3, gs, az)."""
    return next(loc.url for loc in ds.locations if loc.store == store)
