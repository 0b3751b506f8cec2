"""Results on disk: append-only JSONL that survives a crash, and files replaced atomically.

A JSONL file is written one record per line with a single ``write`` per line, flushed at once, and
fsynced on demand and on close. A crash can therefore only tear the *last* line: the reader ignores
an unterminated, unparseable last line, and a writer reopening the file cuts such a tail off before
appending, so the torn line never ends up in the middle. Whole files (manifests, reports, figures)
go to a temporary file in the same directory, are fsynced and then moved over the old one with
``os.replace``, so a reader sees either the old content or the new, never half of it.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from sim2real.errors import Sim2RealError

log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]


class RecordsError(Sim2RealError):
    """A results file cannot be read or a record cannot be written: names the file and the line."""


def jsonl_line(record: Mapping[str, Any], path: PathLike) -> bytes:
    """One record as a line of strict JSON (NaN and infinities refused), as every JSONL file here holds it."""
    try:
        text = json.dumps(record, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as error:
        raise RecordsError(f"{path}: cannot write record {record!r} as JSON: {error}") from error
    return (text + "\n").encode("utf-8")


class JsonlWriter:
    """Append-only JSON-lines writer: one record per line, flushed as written, fsynced on demand.

    With ``fsync_every`` (seconds), a write also fsyncs once that long has passed since the last
    fsync: a log written at a robot's control rate then bounds what a power cut can take.
    """

    def __init__(self, path: PathLike, fsync_every: float | None = None) -> None:
        self.path = Path(path)
        self.fsync_every = fsync_every
        self._synced = time.monotonic()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "ab+", buffering=0)  # noqa: SIM115 - closed by close()
        try:
            self._repair_tail()
        except BaseException:
            self._file.close()
            raise

    def _repair_tail(self) -> None:
        """Terminate a complete last line, or cut a torn one, so appends start on a fresh line."""
        size = self._file.seek(0, os.SEEK_END)
        if size == 0:
            return
        self._file.seek(max(0, size - 1))
        if self._file.read(1) == b"\n":
            return
        start = self._last_line_start(size)
        self._file.seek(start)
        if _parse(self._file.read()) is not None:
            self._file.write(b"\n")
            return
        log.warning("%s: cutting a torn last line (%d bytes) left by an interrupted write",
                    self.path, size - start)
        self._file.truncate(start)

    def _last_line_start(self, size: int, chunk: int = 1 << 16) -> int:
        """Offset just past the last newline before `size` (0 when there is none)."""
        end = size
        while end > 0:
            begin = max(0, end - chunk)
            self._file.seek(begin)
            newline = self._file.read(end - begin).rfind(b"\n")
            if newline >= 0:
                return begin + newline + 1
            end = begin
        return 0

    def write(self, record: Mapping[str, Any]) -> None:
        """Append one record as a line of strict JSON (NaN and infinities are refused)."""
        view = memoryview(jsonl_line(record, self.path))
        while view:
            view = view[self._file.write(view):]
        if self.fsync_every is not None and time.monotonic() - self._synced >= self.fsync_every:
            self.fsync()

    def fsync(self) -> None:
        """Force the records written so far onto the disk (call at the end of an episode or unit)."""
        self._file.flush()
        os.fsync(self._file.fileno())
        self._synced = time.monotonic()

    def close(self) -> None:
        """Fsync and close the file; closing twice is harmless."""
        if not self._file.closed:
            try:
                self.fsync()
            finally:
                self._file.close()

    def __enter__(self) -> JsonlWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _parse(line: bytes) -> dict[str, Any] | None:
    """The JSON object on a line, or None when the line is not one."""
    try:
        value = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def read_jsonl(path: PathLike) -> list[dict[str, Any]]:
    """Every record of a JSONL file, ignoring a torn last line; a corrupt line elsewhere is an error."""
    path = Path(path)
    data = path.read_bytes()
    lines = data.split(b"\n")
    # The text after the last newline is either empty or an unterminated, possibly torn, line.
    tail = lines.pop()
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        record = _parse(line)
        if record is None:
            raise RecordsError(f"{path}, line {number}: not a JSON object: {line[:80]!r} "
                               f"(each line must be one JSON object; only a torn last line is skipped)")
        records.append(record)
    if tail.strip(b" \t\r\x00"):
        record = _parse(tail)
        if record is None:
            log.warning("%s, line %d: ignoring a torn last line (%d bytes)", path, len(lines) + 1, len(tail))
        else:
            records.append(record)
    return records


def write_bytes_atomic(path: PathLike, data: bytes) -> None:
    """Replace `path` with `data` all at once: temp file in the same directory, fsync, os.replace."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual permissions
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def write_json_atomic(path: PathLike, obj: Any) -> None:
    """Write `obj` as strict, indented JSON to `path` atomically (NaN and infinities are refused)."""
    try:
        text = json.dumps(obj, indent=2, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise RecordsError(f"{path}: cannot write as JSON: {error}") from error
    write_bytes_atomic(path, (text + "\n").encode("utf-8"))


def _fsync_directory(directory: Path) -> None:
    """Make a rename in `directory` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
