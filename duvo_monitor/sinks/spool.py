"""The webhook spool: a bounded on-disk queue that outlives outages and restarts.

Layout of the spool directory::

    seg-0000000000000000.log   records, append-only; named by the first sequence number
    seg-0000000000004096.log
    acks                       acknowledged sequence numbers, append-only; "w N" = all below N

A record is one line, ``<seq> <spooled_at> <event JSON>``. :meth:`Spool.append` writes a batch
of records with one ``write`` and fsyncs before it returns, which is when the webhook sink
acknowledges the events to the fan-out. Records are acknowledged out of order (different runs
are posted in parallel); the lowest unacknowledged number is the watermark, and a segment whose
records are all below it is deleted, which is how space comes back. The ack log is fsynced by a
timer and on close, not per ack: an ack lost to a power cut only makes an event go out again
(with the same id), never lose one. The ack log is compacted when it grows.

On open, a partial last record (a crash inside ``append``, which was therefore never
acknowledged) is cut off, and reading starts again at the oldest unacknowledged record, so what
was left is delivered in order.

The methods are synchronous, thread-safe and meant for ``anyio.to_thread``: each takes the one
lock, so an append, a read and an ack never interleave.
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass

import structlog

from duvo_monitor.sinks.file import repair_tail

log = structlog.get_logger("duvo_monitor.sinks.spool")

_SEGMENT = re.compile(r"^seg-(\d{16})\.log$")
ACKS = "acks"
MAX_SEGMENT_BYTES = 64 * 1024**2
MIN_SEGMENT_BYTES = 16 * 1024
COMPACT_ACKS_BYTES = 256 * 1024
_READ_CHUNK = 1024**2


@dataclass(frozen=True, slots=True, kw_only=True)
class Record:
    seq: int
    spooled_at: float
    line: bytes  # the event's JSON line, newline included


@dataclass(slots=True, kw_only=True)
class _Segment:
    first: int
    path: str
    size: int


def _segment_name(first: int) -> str:
    return f"seg-{first:016d}.log"


class Spool:
    def __init__(self, directory: str, *, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.segment_bytes = max(MIN_SEGMENT_BYTES, min(MAX_SEGMENT_BYTES, max_bytes // 16))
        self._lock = threading.Lock()
        self._segments: list[_Segment] = []
        self._writer: int | None = None  # fd of the last segment, O_APPEND
        self._acks: int | None = None
        self._acks_size = 0
        self._acks_dirty = False
        self._next = 0
        self._watermark = 0
        self._acked: set[int] = set()
        self._read_segment = 0  # first seq of the segment being read
        self._read_offset = 0

    # --- sizes ------------------------------------------------------------------------------

    @property
    def size(self) -> int:
        """Bytes of live segments on disk."""
        return sum(segment.size for segment in self._segments)

    @property
    def pending(self) -> int:
        """Records spooled and not yet acknowledged."""
        return self._next - self._watermark - len(self._acked)

    def has_room(self, nbytes: int) -> bool:
        """Whether ``nbytes`` more fit; an empty spool takes any one batch."""
        size = self.size
        return size == 0 or size + nbytes <= self.max_bytes

    # --- open / close -----------------------------------------------------------------------

    def open(self) -> None:
        with self._lock:
            os.makedirs(self.directory, exist_ok=True)
            self._load_acks()
            names = sorted(n for n in os.listdir(self.directory) if _SEGMENT.match(n))
            firsts = [int(_SEGMENT.match(n).group(1)) for n in names]  # type: ignore[union-attr]
            for first, name in zip(firsts, names, strict=True):
                path = os.path.join(self.directory, name)
                self._segments.append(_Segment(first=first, path=path, size=0))
            end = self._watermark
            if self._segments:
                last = self._segments[-1]
                removed = repair_tail(last.path)
                if removed:
                    log.warning("cut off a partial spool record", path=last.path, bytes=removed)
                end = last.first + _count_lines(last.path)
                for segment in self._segments:
                    segment.size = os.path.getsize(segment.path)
                self._watermark = max(self._watermark, self._segments[0].first)
            else:
                end = max([self._watermark, *(a + 1 for a in self._acked)])
                self._watermark = end
            self._next = end
            self._acked = {a for a in self._acked if self._watermark <= a < end}
            self._advance()
            self._delete_acked_segments()
            if self._segments:
                self._read_segment = self._segments[0].first
                self._writer = os.open(self._segments[-1].path, os.O_WRONLY | os.O_APPEND)
            self._read_offset = 0
            self._compact_acks()

    def close(self) -> None:
        with self._lock:
            if self._acks is not None:
                os.fsync(self._acks)
                os.close(self._acks)
                self._acks = None
            if self._writer is not None:
                os.close(self._writer)
                self._writer = None

    # --- append / read / ack ----------------------------------------------------------------

    def append(self, lines: list[bytes], now: float) -> int:
        """Spool ``lines`` (JSON lines) durably: fsynced when this returns. Returns the first
        record's sequence number (the others follow it)."""
        with self._lock:
            if self._writer is None or self._segments[-1].size >= self.segment_bytes:
                self._start_segment()
            assert self._writer is not None
            stamp = b" %.3f " % now
            records = [b"%d%s%s" % (self._next + i, stamp, line) for i, line in enumerate(lines)]
            data = b"".join(records)
            segment = self._segments[-1]
            start = segment.size
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(self._writer, view) :]
                os.fsync(self._writer)
            except OSError:
                try:
                    os.ftruncate(self._writer, start)
                except OSError:
                    log.error("cannot cut a failed spool append back", path=segment.path)
                raise
            segment.size = start + len(data)
            first = self._next
            self._next += len(lines)
            return first

    def read(self, limit: int) -> list[Record]:
        """Up to ``limit`` unacknowledged records after those already read, oldest first."""
        records: list[Record] = []
        with self._lock:
            while len(records) < limit:
                segment = self._segment_at(self._read_segment)
                if segment is None:
                    if not self._segments:
                        break
                    segment, self._read_offset = self._segments[0], 0
                    self._read_segment = segment.first
                if self._read_offset >= segment.size:
                    following = [s for s in self._segments if s.first > segment.first]
                    if not following:
                        break
                    self._read_segment, self._read_offset = following[0].first, 0
                    continue
                with open(segment.path, "rb") as handle:
                    handle.seek(self._read_offset)
                    chunk = handle.read(min(_READ_CHUNK, segment.size - self._read_offset))
                end = chunk.rfind(b"\n") + 1
                if end == 0:
                    if len(chunk) >= _READ_CHUNK:
                        raise ValueError(f"spool record longer than {_READ_CHUNK} bytes")
                    break
                consumed = 0
                for line in chunk[:end].splitlines(keepends=True):
                    if len(records) >= limit:
                        break
                    consumed += len(line)
                    record = _parse(line)
                    if record is None:
                        log.error("skipping a malformed spool record", path=segment.path)
                        continue
                    if record.seq >= self._watermark and record.seq not in self._acked:
                        records.append(record)
                self._read_offset += consumed
        return records

    def ack(self, seqs: list[int]) -> bool:
        """Acknowledge records; True if that freed disk space."""
        with self._lock:
            fresh = [s for s in seqs if s >= self._watermark and s not in self._acked]
            if not fresh:
                return False
            self._acked.update(fresh)
            self._advance()
            self._write_acks(b"".join(b"%d\n" % s for s in fresh))
            freed = self._delete_acked_segments()
            if self._acks_size > COMPACT_ACKS_BYTES:
                self._compact_acks()
            return freed

    def drop_oldest(self, nbytes: int) -> list[int]:
        """Acknowledge the oldest segments' records until ``nbytes`` fit; the dropped seqs."""
        dropped: list[int] = []
        with self._lock:
            size = self.size
            index = 0
            while size + nbytes > self.max_bytes and index < len(self._segments) - 1:
                segment = self._segments[index]
                end = self._segments[index + 1].first
                dropped.extend(
                    s
                    for s in range(max(segment.first, self._watermark), end)
                    if s not in self._acked
                )
                size -= segment.size
                index += 1
            if dropped:
                self._acked.update(dropped)
                self._advance()
                self._write_acks(b"w %d\n" % self._watermark)
                self._delete_acked_segments()
        return dropped

    def sync(self) -> None:
        """Make the acks written so far durable."""
        with self._lock:
            if self._acks is not None and self._acks_dirty:
                os.fsync(self._acks)
                self._acks_dirty = False

    # --- internals (lock held) --------------------------------------------------------------

    def _segment_at(self, first: int) -> _Segment | None:
        for segment in self._segments:
            if segment.first == first:
                return segment
        return None

    def _advance(self) -> None:
        while self._watermark in self._acked:
            self._acked.remove(self._watermark)
            self._watermark += 1

    def _start_segment(self) -> None:
        if self._writer is not None:
            os.close(self._writer)
        path = os.path.join(self.directory, _segment_name(self._next))
        self._writer = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._segments.append(_Segment(first=self._next, path=path, size=0))
        _fsync_dir(self.directory)

    def _delete_acked_segments(self) -> bool:
        freed = False
        while len(self._segments) > 1 and self._segments[1].first <= self._watermark:
            os.unlink(self._segments.pop(0).path)
            freed = True
        if (
            self._segments
            and self._watermark >= self._next
            and self._segments[-1].size >= self.segment_bytes
        ):
            # Everything is acknowledged and the last segment is full: start afresh.
            if self._writer is not None:
                os.close(self._writer)
                self._writer = None
            os.unlink(self._segments.pop().path)
            freed = True
        return freed

    def _load_acks(self) -> None:
        path = os.path.join(self.directory, ACKS)
        try:
            with open(path, "rb") as handle:
                data = handle.read()
        except FileNotFoundError:
            data = b""
        for line in data.split(b"\n"):
            parts = line.split()
            try:
                if len(parts) == 2 and parts[0] == b"w":
                    self._watermark = max(self._watermark, int(parts[1]))
                elif len(parts) == 1:
                    self._acked.add(int(parts[0]))
            except ValueError:
                continue  # a torn last line after a crash: that ack is simply lost

    def _write_acks(self, data: bytes) -> None:
        if self._acks is None:
            path = os.path.join(self.directory, ACKS)
            self._acks = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.write(self._acks, data)
        self._acks_size += len(data)
        self._acks_dirty = True

    def _compact_acks(self) -> None:
        """Rewrite the ack log as the watermark plus the acks above it; atomic rename."""
        path = os.path.join(self.directory, ACKS)
        temporary = path + ".tmp"
        data = b"w %d\n" % self._watermark + b"".join(b"%d\n" % s for s in sorted(self._acked))
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, path)
        _fsync_dir(self.directory)
        if self._acks is not None:
            os.close(self._acks)
        self._acks = os.open(path, os.O_WRONLY | os.O_APPEND)
        self._acks_size = len(data)
        self._acks_dirty = False


def _parse(line: bytes) -> Record | None:
    parts = line.split(b" ", 2)
    if len(parts) != 3 or not parts[2].endswith(b"\n"):
        return None
    try:
        return Record(seq=int(parts[0]), spooled_at=float(parts[1]), line=parts[2])
    except ValueError:
        return None


def _count_lines(path: str) -> int:
    count = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(_READ_CHUNK):
            count += chunk.count(b"\n")
    return count


def _fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
