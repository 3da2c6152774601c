"""An append-only local journal of the traces a gateway has not committed yet.

    journal = TraceJournal.open(Path("trace-journal"), replica_id="gw-1")   # holds gw-1's lock
    segment = journal.append(trace)      # in the kernel's hands when this returns: a SIGKILL keeps it
    journal.resolved(segment)            # committed (or set aside): empty segments are deleted
    journal.close()
    report = await replay_journals(Path("trace-journal"), store)   # what dead replicas left, once

Why: the trace writer commits in batches off the request path, so a trace lives in memory for up
to one commit interval after its request was answered. Appending it here first (one `write` of
one JSON line, ~10 µs) makes a killed process lose none of them: the kernel has the bytes even
if the process dies the next instant. (A power cut can still lose what the disk has not been
told to keep: the writer fsyncs the open segment once per commit interval.)

Layout of the directory (which replicas may share, e.g. one volume): per replica a lock file
`<replica>.lock`, held with `flock` for as long as that replica runs (the kernel releases it
when the process dies, however it dies), and segments `<replica>.<n>.jsonl`. The open segment is
rotated every `rotate_s`; a segment whose every trace was resolved is deleted (the open one is
truncated). `replay_journals` takes the lock of every replica that no longer holds its own,
writes the traces of its segments that the store does not have yet (by trace id: a trace
committed just before its replica died is not written twice), deletes them, then the lock file.
Two replicas starting at once never replay the same files (the lock), and a replay interrupted
halfway is finished by the next one without duplicates (the id check).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from store.records import TraceRecord
from store.repository import Store

logger = logging.getLogger("store.trace_journal")

REPLAY_CHUNK = 500


class TraceJournal:
    """This replica's journal: append, resolve, rotate; see the module docstring."""

    def __init__(self, directory: Path, replica_id: str, lock_fd: int, *, rotate_s: float = 2.0) -> None:
        self.directory = directory
        self.replica_id = replica_id
        self.rotate_s = rotate_s
        self._lock_fd = lock_fd
        self._segment = 0
        self._fd: int | None = None
        self._opened_at = 0.0
        self._outstanding: dict[int, int] = {}  # segment -> traces appended and not yet resolved
        self._dirty = False  # written since the last fsync
        self.appended = 0

    @classmethod
    def open(cls, directory: Path, replica_id: str, *, rotate_s: float = 2.0) -> "TraceJournal":
        if "." in replica_id or "/" in replica_id:
            raise ValueError(f"a replica id may not contain '.' or '/': {replica_id!r}")
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(directory / f"{replica_id}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RuntimeError(f"replica id {replica_id!r} is in use by a running process (its journal lock is held)") from None
        return cls(directory, replica_id, fd, rotate_s=rotate_s)

    def _path(self, segment: int) -> Path:
        return self.directory / f"{self.replica_id}.{segment}.jsonl"

    def _rotate(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            if self._outstanding.get(self._segment, 0) == 0:
                self._drop(self._segment)
        self._segment += 1
        self._fd = os.open(self._path(self._segment), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._outstanding[self._segment] = 0
        self._opened_at = time.monotonic()

    def _drop(self, segment: int) -> None:
        self._outstanding.pop(segment, None)
        try:
            self._path(segment).unlink()
        except FileNotFoundError:
            pass

    def append(self, trace: TraceRecord) -> int:
        """Write one trace as one line with one `write` call; returns its segment. Raises OSError
        (disk full, directory gone) for the caller to report."""
        if self._fd is None or (time.monotonic() - self._opened_at > self.rotate_s and self._outstanding[self._segment]):
            self._rotate()
        assert self._fd is not None
        # The serializer's bytes as they are: model_dump_json() decodes them to a str that would
        # only be encoded again (same bytes, ~6 us less per trace on the chat path).
        data = TraceRecord.__pydantic_serializer__.to_json(trace) + b"\n"
        written = os.write(self._fd, data)
        while written < len(data):  # a short write (rare, on a full disk it raises instead)
            written += os.write(self._fd, data[written:])
        self._outstanding[self._segment] += 1
        self._dirty = True
        self.appended += 1
        return self._segment

    def resolved(self, segment: int, n: int = 1) -> None:
        """`n` traces of `segment` are committed or set aside; a segment left with none is deleted
        (the open one truncated, so it does not grow while the writer keeps up)."""
        left = self._outstanding.get(segment)
        if left is None:
            return
        left = self._outstanding[segment] = max(0, left - n)
        if left:
            return
        if segment != self._segment:
            self._drop(segment)
        elif self._fd is not None:
            os.ftruncate(self._fd, 0)  # O_APPEND: the next line goes to the new end, offset 0

    def sync(self) -> None:
        """fsync the open segment if anything was written since the last call (run in a thread)."""
        fd = self._fd
        if fd is not None and self._dirty:
            self._dirty = False
            try:
                os.fsync(fd)
            except OSError:  # closed by a rotation meanwhile: its successor is synced next time
                pass

    @property
    def outstanding(self) -> int:
        return sum(self._outstanding.values())

    def close(self) -> None:
        """Close the files; when nothing is outstanding, delete them and the lock file too (else
        the segments stay for the next start to replay)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self.outstanding == 0:
            for segment in list(self._outstanding):
                self._drop(segment)
            (self.directory / f"{self.replica_id}.lock").unlink(missing_ok=True)
        os.close(self._lock_fd)  # releases the flock


@dataclass
class ReplayReport:
    """What `replay_journals` did."""

    replicas: list[str] = field(default_factory=list)  # whose journals were replayed
    written: int = 0  # traces the store did not have
    already_stored: int = 0  # traces committed before their replica died
    rejected: int = 0  # traces the store refuses for good (set aside in a JSONL file)
    torn_lines: int = 0  # a last line cut short by the kill (never acknowledged as written)


def _segments(directory: Path) -> dict[str, list[Path]]:
    out: dict[str, list[Path]] = {}
    for p in directory.glob("*.*.jsonl"):
        replica, _, rest = p.name.partition(".")
        number = rest.removesuffix(".jsonl")
        if number.isdigit():
            out.setdefault(replica, []).append(p)
    for paths in out.values():
        paths.sort(key=lambda p: int(p.name.split(".")[1]))
    return out


def _read(path: Path, report: ReplayReport) -> list[TraceRecord]:
    traces = []
    for line in path.read_bytes().split(b"\n"):
        if not line.strip():
            continue
        try:
            traces.append(TraceRecord.model_validate_json(line))
        except (ValidationError, ValueError):
            report.torn_lines += 1
    return traces


async def _write_absent(store: Store, traces: list[TraceRecord], spill_dir: Path, report: ReplayReport) -> None:
    from store.trace_writer import is_transient, spill

    for i in range(0, len(traces), REPLAY_CHUNK):
        chunk = traces[i : i + REPLAY_CHUNK]
        try:
            new = await store.save_traces_absent(chunk)
            report.written += new
            report.already_stored += len(chunk) - new
            continue
        except Exception as e:  # noqa: BLE001 - classified below
            if is_transient(e):
                raise
        rejected = []
        for t in chunk:  # one trace the store refuses must not keep the others out
            try:
                new = await store.save_traces_absent([t])
                report.written += new
                report.already_stored += 1 - new
            except Exception as e:  # noqa: BLE001
                if is_transient(e):
                    raise
                rejected.append(t)
        if rejected:
            report.rejected += len(rejected)
            logger.error("the store refused %d replayed trace(s); saved in %s", len(rejected), spill(spill_dir, rejected))


async def replay_journals(directory: Path, store: Store, *, exclude: str | None = None, spill_dir: Path | None = None) -> ReplayReport:
    """Write to the store what the journals of dead replicas hold (see the module docstring).

    A transient store error stops the replay with the files left in place (the next call goes
    on where it stopped); traces the store refuses for good go to an `unsaved-traces-*.jsonl`."""
    report = ReplayReport()
    if not directory.is_dir():
        return report
    spill_dir = spill_dir or directory
    replicas = set(_segments(directory)) | {p.stem for p in directory.glob("*.lock")}
    for replica in sorted(replicas - {exclude}):
        lock_path = directory / f"{replica}.lock"
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # that replica is alive (or another replica is replaying it right now)
            if os.fstat(fd).st_nlink == 0:
                continue  # replayed and removed by another replica while we waited for the lock
            segments = _segments(directory).get(replica, [])
            for path in segments:
                traces = _read(path, report)
                await _write_absent(store, traces, spill_dir, report)
                path.unlink()
            lock_path.unlink(missing_ok=True)
            if segments:
                report.replicas.append(replica)
        finally:
            os.close(fd)
    if report.replicas:
        logger.warning("replayed the trace journals of %d stopped replica(s) (%s): %d trace(s) written, %d already stored, "
                       "%d refused, %d torn line(s)", len(report.replicas), ", ".join(report.replicas), report.written,
                       report.already_stored, report.rejected, report.torn_lines)
    return report


def read_segment_ids(path: Path) -> list[str]:
    """The trace ids in one segment file (tests and diagnostics)."""
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line)["id"])
        except (ValueError, KeyError):
            pass
    return out
