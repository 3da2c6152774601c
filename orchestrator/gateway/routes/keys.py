"""`/v1/keys`: API keys over HTTP, for admin keys only (the first admin key comes from the CLI:
`orchestrator keys create NAME --admin`).

A key revoked here stops working on this replica at once; other replicas (and revocations made
with the CLI) follow within `key_cache_s` seconds, the time a key lookup is trusted.
"""

from __future__ import annotations

from fastapi import APIRouter

from orchestrator.gateway import errors as E
from orchestrator.gateway.auth import new_api_key
from orchestrator.gateway.deps import AdminKeyDep, State
from orchestrator.protocol import KeyCreate, KeyList, KeyObject
from store.records import ApiKeyRecord

router = APIRouter(prefix="/v1/keys", tags=["keys"])


def key_object(rec: ApiKeyRecord, key: str | None = None) -> KeyObject:
    return KeyObject(id=rec.id, name=rec.name, role="admin" if rec.role == "admin" else "user",
                     created_at=int(rec.created_at.timestamp()) if rec.created_at else 0, revoked=rec.revoked, key=key)


@router.post("", response_model=KeyObject, status_code=201)
async def create_key(body: KeyCreate, st: State, _: AdminKeyDep) -> KeyObject:
    key_id, key, digest = new_api_key()
    with E.map_store_exceptions():
        await st.runtime.store.create_api_key(key_id, body.name, digest, role=body.role)
    return key_object(ApiKeyRecord(id=key_id, name=body.name, role=body.role), key=key)


@router.get("", response_model=KeyList)
async def list_keys(st: State, _: AdminKeyDep) -> KeyList:
    with E.map_store_exceptions():
        return KeyList(data=[key_object(r) for r in await st.runtime.store.list_api_keys()])


@router.delete("/{key_id}", response_model=KeyObject)
async def revoke_key(key_id: str, st: State, _: AdminKeyDep) -> KeyObject:
    with E.map_store_exceptions():
        if not await st.runtime.store.revoke_api_key(key_id[:64]):
            raise E.NotFound(f"no key {key_id[:64]!r}", param="key_id")
        found = next((r for r in await st.runtime.store.list_api_keys() if r.id == key_id), None)
    st.auth.forget(key_id)
    return key_object(found or ApiKeyRecord(id=key_id, name="", revoked=True))
