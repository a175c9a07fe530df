"""The score log's local disk: segments of checksummed records, whole or absent.

A segment is a file of lines, one score log row each: `<crc32 of the JSON, 8 hex> <JSON>\\n`.
A line is trusted only whole (its newline) and intact (its checksum): a write cut short by a
full disk or a crash, or bytes damaged on disk, fail the check. Reading a segment never
stops at such bytes: they are returned apart, with their offset, for the caller to move to
quarantine, and every readable row around them is kept. (A JSON line without a checksum, as
spools before this format held them, is read if it parses whole.)

Appends go in one `write` and one `fdatasync` (one `write` to a file opened `O_DSYNC`, which
is the same guarantee): once `append` returns, the rows survive a
`kill -9` of the process or of the machine. An append that fails (ENOSPC, EIO) cuts the file
back to where it was, so a refused append leaves no partial record behind.

A segment is locked (`flock`) by the process that writes it for as long as it lives; a lock
another process can take is a segment whose writer is gone (ended, crashed, killed), and is
replayed by whoever takes it first.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets
import zlib
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

from pydantic_core import PydanticSerializationError, to_json

JOURNAL, PENDING = "journal-", "pending-"
"""A live worker's segment of the last moments is a journal; one that waits for the database
(an outage, a shutdown) is pending: the spool `/readyz` reports."""
WAITING = ("pending-*.spool", "pending-*.jsonl")
"""Segments that wait for the database, and spool files of the format before (JSON lines)."""
ALL = ("journal-*.spool", *WAITING)
_RECORD = re.compile(rb"([0-9a-f]{8}) (.*)", re.DOTALL)
_TIMES = ("scored_at", "as_of")
"""The score log's time columns: JSON holds them as text, and SQLite's driver takes only
datetimes (a replayed as_of left as text had every spooled row quarantined on SQLite)."""


def jsonable(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in row.items()}


def encode(row: dict[str, Any]) -> bytes:
    """One row as one whole, checksummed line.

    pydantic's serialiser writes a row in ~1.5 us where `json.dumps` took ~7 (one row per
    request, on the event loop's thread); it writes datetimes in ISO 8601 (UTC as `Z`), which
    `datetime.fromisoformat` reads back. What it refuses (a lone surrogate in a string) is
    written by `json` as before."""
    try:
        payload = to_json(row)
    except PydanticSerializationError:
        payload = json.dumps(jsonable(row)).encode()
    return b"%08x %s\n" % (zlib.crc32(payload), payload)


def _row(payload: bytes) -> dict[str, Any]:
    row = json.loads(payload)
    if not isinstance(row, dict):
        raise ValueError("not a JSON object")
    for name in _TIMES:
        if row.get(name) is not None:
            row[name] = datetime.fromisoformat(row[name])
    return row


@dataclass
class Unreadable:
    """Bytes of a segment that are not a whole, intact record."""

    offset: int
    data: bytes
    reason: str


def decode(data: bytes) -> tuple[list[dict[str, Any]], list[Unreadable]]:
    """The rows of a segment's bytes, and the bytes that are not rows (with their offset)."""
    rows: list[dict[str, Any]] = []
    bad: list[Unreadable] = []
    at = 0
    while at < len(data):
        end = data.find(b"\n", at)
        if end < 0:
            bad.append(Unreadable(at, data[at:], "a partial record (no end of line): a write "
                                                 "cut short"))
            break
        line = data[at:end]
        if line.strip():
            try:
                rows.append(_check(line))
            except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
                bad.append(Unreadable(at, line, str(exc)[:200]))
        at = end + 1
    return rows, bad


def _check(line: bytes) -> dict[str, Any]:
    record = _RECORD.fullmatch(line)
    if record is None:  # the format before checksums: a JSON object alone on its line
        return _row(line)
    crc, payload = record.groups()
    if int(crc, 16) != zlib.crc32(payload):
        raise ValueError("checksum mismatch: the record is damaged")
    return _row(payload)


@dataclass
class Segment:
    """One open, locked segment file."""

    path: Path
    file: BinaryIO
    rows: list[dict[str, Any]] | None = field(default=None)
    """Its rows when they are known in memory (None: read them from disk)."""
    dsync: bool = False
    """Opened with O_DSYNC: a write returns once its bytes are on disk, as a write and an
    fdatasync would, in one system call (one release of the GIL, not two)."""
    _end: int | None = field(default=None, repr=False)
    """Where the file ends, once an append has written it (None: ask the file)."""

    @classmethod
    def create(cls, folder: Path, kind: str = JOURNAL) -> Segment:
        """A new empty segment of this process's, locked, its name durable in the folder."""
        path = folder / f"{kind}{os.getpid()}-{secrets.token_hex(6)}.spool"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_DSYNC, 0o644)
        f = os.fdopen(fd, "r+b", buffering=0)
        fcntl.flock(f, fcntl.LOCK_EX)
        sync_folder(folder)
        return cls(path, f, [], dsync=True)

    @classmethod
    def claim(cls, path: Path) -> Segment | None:
        """A segment whose writer is gone, locked for this process; None when its writer is
        alive or another process took it first."""
        try:
            f = path.open("r+b", buffering=0)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.fstat(f.fileno()).st_ino != path.stat().st_ino:
                raise FileNotFoundError  # replaced (rewritten) while we waited
        except (BlockingIOError, FileNotFoundError):
            f.close()
            return None
        return cls(path, f, None)

    @property
    def size(self) -> int:
        return os.fstat(self.file.fileno()).st_size

    def append(self, data: bytes) -> None:
        """Write and fdatasync `data`, whole; on any failure the file is as it was.

        Where the file ends is kept, not asked (an `fstat` per commit released the GIL once
        more on the event loop's thread: a thread waiting for it could take it for up to a
        switch interval)."""
        fd = self.file.fileno()
        at = self.size if self._end is None else self._end
        try:
            view = memoryview(data)
            while view:  # a regular file takes it in one write unless the disk is full
                done = os.write(fd, view)
                view = view[done:]
            if not self.dsync:
                os.fdatasync(fd)
        except OSError:
            self._end = None
            with contextlib.suppress(OSError):  # else a partial record stays: quarantined later
                os.ftruncate(fd, at)
                os.lseek(fd, at, os.SEEK_SET)  # the next append starts there, leaving no hole
                self._end = at
            raise
        self._end = at + len(data)

    def read(self) -> tuple[list[dict[str, Any]], list[Unreadable]]:
        os.lseek(self.file.fileno(), 0, os.SEEK_SET)
        chunks = []
        while chunk := os.read(self.file.fileno(), 1 << 20):
            chunks.append(chunk)
        return decode(b"".join(chunks))

    def replace(self, rows: list[dict[str, Any]]) -> None:
        """This segment holding only `rows`: written beside it, synced, then renamed over it
        (a crash leaves the old file or the new one, never a mix); the new one is locked
        before it takes the name."""
        tmp = self.path.with_name(f".{self.path.name}.{secrets.token_hex(4)}.tmp")
        f = tmp.open("x+b", buffering=0)
        fcntl.flock(f, fcntl.LOCK_EX)
        new = Segment(tmp, f, rows)
        try:
            new.append(b"".join(encode(r) for r in rows))
            os.replace(tmp, self.path)
        except OSError:
            f.close()
            tmp.unlink(missing_ok=True)
            raise
        sync_folder(self.path.parent)
        self.file.close()
        # the new file was opened without O_DSYNC: its appends sync themselves
        self.file, self.rows, self.dsync, self._end = f, rows, False, new._end

    def waiting(self) -> None:
        """Name it pending (it waits for the database); appends to it go on."""
        if self.path.name.startswith(JOURNAL):
            path = self.path.with_name(PENDING + self.path.name.removeprefix(JOURNAL))
            os.rename(self.path, path)
            sync_folder(path.parent)
            self.path = path

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
        self.file.close()

    def close(self) -> None:
        """Release it (its lock with it): empty, it is removed; else whoever comes next
        (another worker, the next start) replays it."""
        if self.size == 0:
            self.path.unlink(missing_ok=True)
        self.file.close()


def sync_folder(folder: Path) -> None:
    """Make a file's creation, rename or removal in `folder` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def segments(folder: Path, patterns: tuple[str, ...] = ALL) -> list[Path]:
    """The folder's segments (default: all, journals too), oldest first."""
    found = []
    for pattern in patterns:
        for p in folder.glob(pattern):
            try:
                found.append((p.stat().st_mtime, p.name, p))
            except FileNotFoundError:  # another worker just finished it
                continue
    return [p for *_, p in sorted(found)]
