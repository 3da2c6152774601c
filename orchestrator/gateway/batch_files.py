"""Batch files in OpenAI's JSONL shapes: reading an input file, writing the output and error files.

    lines = read_input(content)               # one BatchLine per non-empty line, good or bad
    output_file(batch_id, items)              # b'{"id": ..., "custom_id": ..., "response": {...}, "error": null}\\n...'
    error_file(batch_id, items)

An input line is `{"custom_id", "method": "POST", "url": "/v1/chat/completions", "body": {...}}`.
A line that is not JSON, or not such a request, is not fatal: it becomes a `BatchLine` carrying its
error, and fails alone (it shows in the error file; the other lines are answered).

The results of a finished batch are files without a row of their own: `output_file_id` and
`error_file_id` name the batch (`file-<batch id>-output`, `-errors`) and their content is made
from its stored items when asked for, so nothing is stored twice and they survive restarts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

from pydantic import ValidationError

from orchestrator.gateway import errors as E
from orchestrator.protocol import MAX_BATCH_REQUESTS, BatchRequestItem
from store.records import BatchItemRecord

ResultKind = Literal["output", "errors"]


@dataclass
class BatchLine:
    """One line of an input file: the request, or the error that makes it fail alone."""

    custom_id: str | None
    item: BatchRequestItem | None = None
    error: E.APIError | None = None


def read_input(content: bytes, *, endpoint: str = "/v1/chat/completions") -> list[BatchLine]:
    """Parse a batch input file. Raises `E.BadRequest` only when the file as a whole is unusable
    (not UTF-8, no request, too many); a bad line is returned as a failed `BatchLine`."""
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as e:
        raise E.BadRequest(f"the file is not UTF-8 text (byte {e.start}); a batch file is JSONL", param="file") from None
    raw = [ln for ln in text.splitlines() if ln.strip()]
    if not raw:
        raise E.BadRequest("the file holds no request; a batch file has one JSON request per line", param="file")
    if len(raw) > MAX_BATCH_REQUESTS:
        raise E.BadRequest(f"the file holds {len(raw)} requests; at most {MAX_BATCH_REQUESTS} per batch", param="file")
    lines: list[BatchLine] = []
    seen: set[str] = set()
    for n, ln in enumerate(raw, 1):
        lines.append(_line(n, ln, endpoint, seen))
    return lines


def _line(n: int, raw: str, endpoint: str, seen: set[str]) -> BatchLine:
    try:
        obj = json.loads(raw)
    except ValueError as e:
        return BatchLine(None, error=E.BadRequest(f"line {n}: not valid JSON ({e})", code="invalid_json"))
    custom_id = obj.get("custom_id") if isinstance(obj, dict) else None
    custom_id = str(custom_id)[:256] if custom_id is not None else None
    if not isinstance(obj, dict):
        return BatchLine(None, error=E.BadRequest(f"line {n}: a request must be a JSON object", code="invalid_request"))
    if obj.get("url", endpoint) != endpoint:
        return BatchLine(custom_id, error=E.BadRequest(f"line {n}: url {obj.get('url')!r} differs from the batch's endpoint {endpoint!r}",
                                                       param="url", code="invalid_url"))
    try:
        item = BatchRequestItem.model_validate(obj)
    except ValidationError as e:
        err = E.validation_error(e)
        err.message = f"line {n}: {err.message}"
        return BatchLine(custom_id, error=err)
    if item.custom_id is not None:
        if item.custom_id in seen:
            return BatchLine(custom_id, error=E.BadRequest(f"line {n}: custom_id {item.custom_id!r} appears twice; custom ids must be unique",
                                                           param="custom_id", code="duplicate_custom_id"))
        seen.add(item.custom_id)
    return BatchLine(custom_id, item=item)


def result_file_id(batch_id: str, kind: ResultKind) -> str:
    return f"file-{batch_id}-{kind}"


def parse_result_file_id(file_id: str) -> tuple[str, ResultKind] | None:
    """(batch id, kind) of a result file id, or None for any other id."""
    for kind in ("output", "errors"):
        suffix = f"-{kind}"
        if file_id.startswith("file-batch_") and file_id.endswith(suffix):
            return file_id[len("file-"):-len(suffix)], kind  # type: ignore[return-value]
    return None


def result_lines(batch_id: str, items: list[BatchItemRecord], kind: ResultKind) -> bytes:
    """The JSONL of a batch's successes (`output`) or failures (`errors`), in input order."""
    out = []
    for it in items:
        if it.ok != (kind == "output"):
            continue
        err = None
        if not it.ok:
            info = it.body.get("error", {}) if isinstance(it.body, dict) else {}
            err = {"code": info.get("code"), "message": info.get("message", "failed")}
        line = {"id": f"{batch_id}_req_{it.idx}", "custom_id": it.custom_id,
                "response": {"status_code": it.status_code, "request_id": it.trace_id, "body": it.body}, "error": err}
        out.append(json.dumps(line, separators=(",", ":")))
    return ("\n".join(out) + "\n").encode() if out else b""
