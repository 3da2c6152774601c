"""The one mapping of store failures to a 503 (`errors.map_store_exceptions`), fed the exceptions a
failing database really raises: a refused connection (SQLAlchemy passes it through unwrapped) and
SQLAlchemy's own errors. Other exceptions pass unchanged."""

from __future__ import annotations

import asyncio
from urllib.parse import urlparse

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from conftest import closed_port_url
from orchestrator.gateway import errors as E


async def _query(url: str, sql: str) -> None:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            await conn.execute(text(sql))
    finally:
        await engine.dispose()


def _mapped(url: str, sql: str = "select 1") -> E.APIError:
    async def go() -> E.APIError:
        with pytest.raises(E.APIError) as caught:
            with E.map_store_exceptions():
                await _query(url, sql)
        return caught.value

    return asyncio.run(go())


def test_a_refused_postgres_connection_is_a_503_naming_the_store() -> None:
    port = urlparse(closed_port_url()).port
    err = _mapped(f"postgresql+asyncpg://orch:orch@127.0.0.1:{port}/none")
    assert isinstance(err, E.ServiceUnavailable) and err.status_code == 503 and err.retry_after == 2
    assert err.message == "the store is unavailable (ConnectionRefusedError); retry shortly"
    assert isinstance(err.__cause__, OSError)


def test_an_sqlalchemy_error_is_a_503(tmp_path) -> None:  # type: ignore[no-untyped-def]
    err = _mapped(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}", "select * from no_such_table")  # OperationalError
    assert isinstance(err, E.ServiceUnavailable)
    assert err.message == "the store is unavailable (OperationalError); retry shortly"
    assert type(err.__cause__).__module__ == "sqlalchemy.exc"


def test_other_exceptions_pass_unchanged() -> None:
    with pytest.raises(KeyError):
        with E.map_store_exceptions():
            raise KeyError("not the store")
    with pytest.raises(E.NotFound):
        with E.map_store_exceptions():
            raise E.NotFound("no such trace")
    with E.map_store_exceptions():
        pass  # and nothing at all is nothing
