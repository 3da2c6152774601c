"""`Idempotency-Key` on `POST /v1/batches`: a retried submit returns the job the first one made.

    rec = await submit_once(store, body, caller, key="3f1c...", submit=lambda: runner.submit(body, owner=caller.key_id))

Keys are per caller (the key id that sent them) and stored with a hash of the request: the same
key with another body is a 400; while the first request with a key is still being submitted, a
second waits for it (a 409 if it takes longer than `WAIT_S`).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from orchestrator.gateway import errors as E

if TYPE_CHECKING:
    from orchestrator.gateway.auth import Caller
    from orchestrator.protocol import BatchCreate
    from store.records import BatchRecord
    from store.repository import Store

logger = logging.getLogger("orchestrator.gateway")

HEADER = "Idempotency-Key"
KEY_PATTERN = r"^[\x21-\x7e]{1,255}$"  # printable ASCII, as Stripe and the OpenAI SDKs send (UUIDs)
WAIT_S = 10.0


async def submit_once(store: Store, body: BatchCreate, caller: Caller, key: str,
                      submit: Callable[[], Awaitable[BatchRecord]]) -> BatchRecord:
    """The batch `submit()` creates, or the one an earlier request with `key` and this body made."""
    owner = caller.key_id or ""
    digest = hashlib.sha256(body.model_dump_json().encode()).hexdigest()
    deadline = time.monotonic() + WAIT_S
    while True:
        with E.map_store_exceptions():
            claim = await store.claim_idempotency_key(owner, key, digest)
        if claim.claimed:
            break
        if claim.request_hash != digest:
            raise E.BadRequest(f"this {HEADER} was already used with a different request body; send a new key",
                               param=HEADER, code="idempotency_key_reused")
        if claim.batch_id is not None:
            with E.map_store_exceptions():
                rec = await store.get_batch(claim.batch_id, owner=caller.key_id)
            if rec is None:
                raise E.NotFound(f"the batch this {HEADER} created no longer exists", param=HEADER)
            return rec
        if time.monotonic() > deadline:
            raise E.Conflict(f"a request with this {HEADER} is still being submitted; retry shortly",
                             param=HEADER, code="idempotency_key_in_use", retry_after=1)
        await asyncio.sleep(0.05)
    try:
        rec = await submit()
    except BaseException:
        try:  # the submit failed (say, a 404 input file): the key may be used again, with a fixed body
            await store.release_idempotency_key(owner, key)
        except Exception:  # noqa: BLE001 - the store is down: the claim goes stale and is taken over later
            logger.warning("could not release idempotency key of %s", owner or "anonymous", exc_info=True)
        raise
    with E.map_store_exceptions():
        await store.complete_idempotency_key(owner, key, rec.id)
    return rec
