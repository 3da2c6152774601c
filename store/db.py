"""Engine creation and migrations.

    engine = await open_engine("sqlite+aiosqlite:///./orchestrator.db")   # migrates to head
    sessions = async_sessionmaker(engine, expire_on_commit=False)
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from store.urls import mask_text, mask_url

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


class StoreUnavailable(Exception):
    """Raised when the database cannot be reached or migrated."""


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


def _upgrade(connection: Connection) -> None:
    cfg = alembic_config()
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, "head")


def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    cur = dbapi_connection.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.close()


def create_engine(url: str) -> AsyncEngine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        db = parsed.database
        if db and db != ":memory:":
            Path(db).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": 30})
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    return create_async_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


async def migrate(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.run_sync(_upgrade)


async def open_engine(url: str) -> AsyncEngine:
    """Create the engine and apply every pending migration."""
    engine = create_engine(url)
    try:
        await migrate(engine)
    except Exception as e:
        await engine.dispose()
        raise StoreUnavailable(f"cannot open the store at {mask_url(url)}: {type(e).__name__}: {mask_text(str(e), url)}") from e
    return engine
