"""Fit versions in the store: keyed per pool, pinned per pool (`profile use`), the migration's backfill."""

from pathlib import Path

from sqlalchemy import text

from store import Store
from store.records import pool_key

A, B = ["m1", "m2"], ["m1", "m2", "m3"]


async def test_versions_are_per_pool_and_pins_override_the_newest(store_url: str) -> None:
    async with await Store.open(store_url) as store:
        kind = "symbolic-moe-profile"
        v1 = await store.save_artefact(kind, "default", b"a1", {"pool": A})
        v2 = await store.save_artefact(kind, "default", b"b1", {"pool": B})
        v3 = await store.save_artefact(kind, "default", b"a2", {"pool": list(reversed(A))})  # the same pool in another order
        assert (v1, v2, v3) == (1, 2, 3)
        assert (await store.load_artefact(kind, "default", pool=A)).payload == b"a2"
        assert (await store.load_artefact(kind, "default", pool=B)).payload == b"b1"
        assert await store.load_artefact(kind, "default", pool=["m9"]) is None
        assert (await store.load_artefact(kind, "default")).version == 3  # no pool: the newest of any, as before
        assert await store.current_artefact_version(kind, "default", A) == 3
        assert await store.current_artefact_version(kind, "default", ["m9"]) is None
        # Pin v1 for A: A routes with v1, B is untouched; the listing says which is pinned.
        pinned = await store.pin_artefact(kind, "default", 1)
        assert pinned is not None and pinned.pinned and pinned.pool_key == pool_key(A)
        assert await store.current_artefact_version(kind, "default", A) == 1
        rec = await store.load_artefact(kind, "default", pool=A)
        assert rec.version == 1 and rec.pinned and rec.payload == b"a1"
        assert await store.current_artefact_version(kind, "default", B) == 2
        assert [(r.version, r.pinned) for r in await store.list_artefacts(kind)] == [(1, True), (2, False), (3, False)]
        # Re-pinning moves the pin; a version that does not exist, or has no pool, cannot be pinned.
        assert (await store.pin_artefact(kind, "default", 3)).version == 3
        assert await store.current_artefact_version(kind, "default", A) == 3
        assert await store.pin_artefact(kind, "default", 99) is None
        await store.save_artefact("mot", "default", b"ckpt", {"experts": A})
        assert await store.pin_artefact("mot", "default", 1) is None
        assert await store.unpin_artefact(kind, "default", B) == 0
        assert await store.unpin_artefact(kind, "default", A) == 1
        assert not any(r.pinned for r in await store.list_artefacts(kind))


async def test_the_migration_keys_fits_stored_before_it_by_their_pool(tmp_path: Path) -> None:
    from alembic import command

    from store.db import alembic_config

    import sqlite3

    from sqlalchemy import create_engine

    url = f"sqlite+aiosqlite:///{tmp_path / 'old.db'}"
    with create_engine(f"sqlite:///{tmp_path / 'old.db'}").begin() as conn:  # the schema as it was before 0008
        cfg = alembic_config()
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0007_feedback")

    db = sqlite3.connect(tmp_path / "old.db")
    db.execute("INSERT INTO artefacts (kind, name, version, created_at, meta, payload) VALUES "
               "('coe-router', 'default', 1, '2026-01-01 00:00:00', '{\"pool\": [\"m2\", \"m1\"]}', x'00'), "
               "('mot', 'default', 1, '2026-01-01 00:00:00', '{\"experts\": [\"m1\"]}', x'00')")
    db.commit()
    db.close()
    async with await Store.open(url) as store:  # migrates to head
        assert (await store.load_artefact("coe-router", "default", pool=A)).version == 1
        async with store.engine.connect() as conn:
            keys = dict((await conn.execute(text("SELECT kind, pool_key FROM artefacts"))).all())
        assert keys == {"coe-router": pool_key(A), "mot": None}
