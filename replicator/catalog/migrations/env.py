"""Alembic environment: migrations run on the connection the catalog passes in."""

from __future__ import annotations

from alembic import context

from replicator.catalog.schema import metadata

context.configure(
    connection=context.config.attributes["connection"],
    target_metadata=metadata,
    # SQLite alters tables by copying them; later migrations get that for free.
    render_as_batch=True,
)
with context.begin_transaction():
    context.run_migrations()
