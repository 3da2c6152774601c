"""Files (`/v1/files`), as OpenAI's Files API for batches: upload a JSONL input file (purpose
"batch"), read it back, and read a finished batch's result files.

    client.files.create(file=open("requests.jsonl", "rb"), purpose="batch")
    client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
    client.files.content(batch.output_file_id).text

Files belong to the key that uploaded them (another key's are 404). Uploads are limited to
ORCHESTRATOR_MAX_FILE_BYTES (413 beyond; the body is read only once the key is checked), a key keeps
at most ORCHESTRATOR_MAX_FILES_PER_KEY files and ORCHESTRATOR_MAX_FILE_STORAGE_BYTES, and an upload
must be UTF-8 JSONL with at most 50,000 requests; the filename is a label, never a path. Each
line is checked when a batch is made from the file (a bad line fails alone). Result files (`file-<batch id>-output`, `-errors`) are made from the batch's stored
results when read; they belong to the batch's owner.
"""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from starlette.datastructures import UploadFile as StarletteUploadFile

from orchestrator.gateway import errors as E
from orchestrator.gateway.auth import Caller
from orchestrator.gateway.batch_files import parse_result_file_id, read_input, result_lines
from orchestrator.gateway.deps import CallerDep, GatewayState, State
from orchestrator.protocol import FileDeleted, FileList, FileObject
from store.records import BatchRecord, FileRecord

router = APIRouter(prefix="/v1/files", tags=["files"])

JSONL = "application/jsonl"


def file_object(rec: FileRecord) -> FileObject:
    return FileObject(id=rec.id, bytes=rec.size, created_at=int(rec.created_at.timestamp()) if rec.created_at else 0,
                      filename=rec.filename, purpose="batch")


def _missing(file_id: str, caller: Caller) -> E.NotFound:
    return E.NotFound(f"no file {file_id[:80]!r}" + (" for this API key" if caller.key_id else ""), param="file_id")


# The body is read by the handler, not by FastAPI: the caller is authenticated first (CallerDep),
# so nobody without a key makes the gateway read an upload (middleware.BodySizeLimit, `streamed`).
UPLOAD_BODY = {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["file", "purpose"],
    "properties": {"file": {"type": "string", "format": "binary", "description": "JSONL, one request per line"},
                   "purpose": {"type": "string", "enum": ["batch"]}},
}}}}


@router.post("", response_model=FileObject, openapi_extra={"requestBody": UPLOAD_BODY})
async def upload_file(request: Request, st: State, caller: CallerDep) -> FileObject:
    form = await request.form(max_files=1, max_fields=8)
    try:
        file, purpose = form.get("file"), form.get("purpose")
        if not isinstance(file, StarletteUploadFile):
            raise E.BadRequest("file: a multipart file field is required (the JSONL of a batch)", param="file")
        if not isinstance(purpose, str):
            raise E.BadRequest("purpose: required ('batch')", param="purpose")
        if purpose != "batch":
            raise E.BadRequest(f"purpose {purpose[:40]!r} is not supported; this gateway stores batch input files (purpose 'batch')",
                               param="purpose")
        content = await file.read()  # bounded: the body size limit of /v1/files
        name = (file.filename or "upload.jsonl")[:256]  # a label only: nothing is written under this name
    finally:
        await form.close()
    read_input(content)  # the file as a whole must be usable; its lines are checked per batch
    with E.map_store_exceptions():
        files, used = await st.runtime.store.file_usage(caller.key_id)
        if files >= st.settings.max_files_per_key or used + len(content) > st.settings.max_file_storage_bytes:
            raise E.BadRequest(f"this key's file storage is full ({files} files, {used} bytes; at most {st.settings.max_files_per_key} "
                               f"files, {st.settings.max_file_storage_bytes} bytes): delete files with DELETE /v1/files/{{id}}",
                               param="file", code="storage_limit_exceeded")
        rec = await st.runtime.store.create_file(FileRecord(id=f"file-{secrets.token_hex(12)}", owner=caller.key_id,
                                                            purpose="batch", filename=name, content=content))
    return file_object(rec)


@router.get("", response_model=FileList)
async def list_files(st: State, caller: CallerDep, limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
                     purpose: str | None = None) -> FileList:
    with E.map_store_exceptions():
        recs = await st.runtime.store.list_files(owner=caller.key_id, purpose=purpose, limit=limit + 1)
    return FileList(data=[file_object(r) for r in recs[:limit]], has_more=len(recs) > limit)


async def _result_batch(st: GatewayState, caller: Caller, file_id: str) -> tuple[BatchRecord, str, bytes] | None:
    """A batch result file: (its batch, kind, content), or None when `file_id` names no such file."""
    parsed = parse_result_file_id(file_id)
    if parsed is None:
        return None
    batch_id, kind = parsed
    with E.map_store_exceptions():
        rec = await st.runtime.store.get_batch(batch_id[:64], owner=caller.key_id)
        if rec is None or rec.status not in ("completed", "cancelled") or (kind == "errors" and not rec.failed):
            return None
        items = await st.runtime.store.batch_items(rec.id)
    return rec, kind, result_lines(rec.id, items, kind)


@router.get("/{file_id}", response_model=FileObject)
async def get_file(file_id: str, st: State, caller: CallerDep) -> FileObject:
    result = await _result_batch(st, caller, file_id)
    if result is not None:
        rec, kind, content = result
        return FileObject(id=file_id, bytes=len(content), filename=f"{rec.id}_{kind}.jsonl", purpose="batch_output",
                          created_at=int((rec.completed_at or rec.created_at).timestamp()) if (rec.completed_at or rec.created_at) else 0)
    with E.map_store_exceptions():
        found = await st.runtime.store.get_file(file_id[:64], owner=caller.key_id)
    if found is None:
        raise _missing(file_id, caller)
    return file_object(found)


@router.get("/{file_id}/content")
async def file_content(file_id: str, st: State, caller: CallerDep) -> Response:
    result = await _result_batch(st, caller, file_id)
    if result is not None:
        return Response(result[2], media_type=JSONL)
    with E.map_store_exceptions():
        found = await st.runtime.store.get_file(file_id[:64], owner=caller.key_id, with_content=True)
    if found is None:
        raise _missing(file_id, caller)
    return Response(found.content or b"", media_type=JSONL)


@router.delete("/{file_id}", response_model=FileDeleted)
async def delete_file(file_id: str, st: State, caller: CallerDep) -> FileDeleted:
    if parse_result_file_id(file_id) is not None:
        raise E.BadRequest("a batch's result file goes with its batch; it cannot be deleted alone", param="file_id")
    with E.map_store_exceptions():
        deleted = await st.runtime.store.delete_file(file_id[:64], owner=caller.key_id)
    if not deleted:
        raise _missing(file_id, caller)
    return FileDeleted(id=file_id, deleted=True)
