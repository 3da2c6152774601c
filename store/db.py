"""Engine creation and migrations.

    engine = await open_engine("sqlite+aiosqlite:///./orchestrator.db")   # migrates to head
    sessions = async_sessionmaker(engine, expire_on_commit=False)

Several processes may open one database at once (gateway replicas starting together): the
migration runs under a lock (a Postgres advisory lock; a lock file beside a SQLite database), so
one process migrates and the others find the schema at head.
"""

from __future__ import annotations

import asyncio
import fcntl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import event, text
from sqlalchemy.engine import Connection, make_url
import orjson
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from store.urls import mask_text, mask_url

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
MIGRATION_LOCK_KEY = 0x6C6C6D6F  # pg_advisory_lock key held while migrating ("llmo")
DEFAULT_COMMAND_TIMEOUT_S = 30.0


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


def create_engine(url: str, *, command_timeout_s: float | None = DEFAULT_COMMAND_TIMEOUT_S) -> AsyncEngine:
    """An engine for `url`. On Postgres every statement is bounded by `command_timeout_s`
    (asyncpg's `command_timeout`: a hung server or a lock wait raises TimeoutError, which the
    callers treat as transient) and a connection attempt by 10 s."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        db = parsed.database
        if db and db != ":memory:":
            Path(db).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": 30}, json_serializer=_json_dumps)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    connect_args: dict[str, float] = {"timeout": 10.0}
    if command_timeout_s is not None and parsed.get_driver_name() == "asyncpg":
        connect_args["command_timeout"] = command_timeout_s
    return create_async_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20, connect_args=connect_args,
                               json_serializer=_json_dumps)


def _json_dumps(value: object) -> str:
    """JSON columns (a trace's plan, steps and calls on every chat request): orjson, about a
    tenth of the stdlib encoder's CPU; dict keys that are not strings are written as strings, as
    the stdlib does."""
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


@asynccontextmanager
async def _sqlite_file_lock(database: str | None) -> AsyncIterator[None]:
    """An exclusive lock on `<database>.migrate.lock` (nothing for an in-memory database)."""
    if not database or database == ":memory:":
        yield
        return
    path = Path(database).expanduser().with_name(Path(database).name + ".migrate.lock")
    with path.open("a") as f:
        await asyncio.to_thread(fcntl.flock, f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


async def migrate(engine: AsyncEngine) -> None:
    """Upgrade to head, one process at a time."""
    if engine.dialect.name == "postgresql":
        async with engine.connect() as lock_conn:
            await lock_conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK_KEY})
            try:
                async with engine.begin() as conn:
                    await conn.run_sync(_upgrade)
            finally:
                await lock_conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK_KEY})
        return
    async with _sqlite_file_lock(engine.url.database):
        async with engine.begin() as conn:
            await conn.run_sync(_upgrade)


async def open_engine(url: str, *, command_timeout_s: float | None = DEFAULT_COMMAND_TIMEOUT_S) -> AsyncEngine:
    """Create the engine and apply every pending migration.

    On Postgres, migrations run on an engine of their own without the statement timeout (a
    schema change on a large table may take longer than any request should)."""
    engine = create_engine(url, command_timeout_s=command_timeout_s)
    migrator = create_engine(url, command_timeout_s=None) if engine.dialect.name == "postgresql" else engine
    try:
        await migrate(migrator)
    except Exception as e:
        await engine.dispose()
        raise StoreUnavailable(f"cannot open the store at {mask_url(url)}: {type(e).__name__}: {mask_text(str(e), url)}") from e
    finally:
        if migrator is not engine:
            await migrator.dispose()
    return engine
