"""Alembic environment: the URL comes from the caller (`database.migrate`), never a file."""

from __future__ import annotations

from alembic import context

from propensity.database import engine_for, metadata

config = context.config
url = config.get_main_option("sqlalchemy.url") or ""
engine = engine_for(url)
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=metadata)
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
