"""The catalog fixtures (a SQLite file and a real PostgreSQL) of ``tests/catalog``."""

from tests.catalog.conftest import (
    catalog,
    catalog_url,
    make_dataset,
    postgres_url,
    registry,
)

__all__ = ["catalog", "catalog_url", "make_dataset", "postgres_url", "registry"]
