"""Alembic environment. Migrations run on an existing connection handed in by `store.db`
(`config.attributes["connection"]`), so they work for the async engines we use."""

from __future__ import annotations

from alembic import context

from store.models import Base

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only `alembic` CLI use without our wrapper
    raise RuntimeError("run migrations through store.db.migrate(), which passes a connection")

context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
