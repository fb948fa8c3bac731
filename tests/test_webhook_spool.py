"""The webhook spool on its own: out-of-order acks, segment reclaim, restart, torn tails."""

from __future__ import annotations

from pathlib import Path

from duvo_monitor.sinks.spool import Spool


def line(n: int) -> bytes:
    return b'{"n":%d,"pad":"%s"}\n' % (n, b"x" * 200)


def numbers(spool: Spool, limit: int = 10_000) -> list[int]:
    return [int(r.line.split(b",")[0].split(b":")[1]) for r in spool.read(limit)]


def segments(path: Path) -> list[Path]:
    return sorted(path.glob("seg-*.log"))


def test_out_of_order_acks_reclaim_segments_and_survive_restart(tmp_path: Path) -> None:
    """Acks in any order advance the watermark; fully acked segments are deleted; a reopened
    spool reads exactly the unacknowledged records, oldest first."""
    spool = Spool(str(tmp_path), max_bytes=64 * 1024 * 16)  # 64 KiB segments
    spool.open()
    for start in range(0, 2000, 100):
        spool.append([line(n) for n in range(start, start + 100)], now=1.0)
    records = spool.read(5000)
    assert [r.seq for r in records] == list(range(2000))
    assert len(segments(tmp_path)) > 3
    before = len(segments(tmp_path))
    evens = [r.seq for r in records if r.seq % 2 == 0 and r.seq < 1500]
    odds = [r.seq for r in records if r.seq % 2 == 1 and r.seq < 1500]
    spool.ack(list(reversed(odds)))
    spool.ack([*evens, 1999])
    assert spool.pending == 499
    assert len(segments(tmp_path)) < before
    spool.close()

    again = Spool(str(tmp_path), max_bytes=64 * 1024 * 16)
    again.open()
    assert again.pending == 499
    assert numbers(again) == list(range(1500, 1999))
    again.append([line(5000)], now=2.0)
    assert [r.seq for r in again.read(10)] == [2000]
    again.close()


def test_a_torn_last_record_is_cut_on_open(tmp_path: Path) -> None:
    """A crash inside append leaves half a record: it is cut, the rest is read back."""
    spool = Spool(str(tmp_path), max_bytes=1024**2)
    spool.open()
    spool.append([line(0), line(1)], now=1.0)
    spool.close()
    (last,) = segments(tmp_path)
    with last.open("ab") as handle:
        handle.write(b'2 1.000 {"n":2,"pa')
    again = Spool(str(tmp_path), max_bytes=1024**2)
    again.open()
    assert numbers(again) == [0, 1]
    again.append([line(2)], now=1.0)
    assert numbers(again) == [2]
    again.close()


def test_everything_acked_leaves_an_empty_spool_and_a_compact_ack_log(tmp_path: Path) -> None:
    """After all records are acked, reopening finds nothing pending and numbering continues."""
    spool = Spool(str(tmp_path), max_bytes=64 * 1024 * 16)
    spool.open()
    for start in range(0, 3000, 100):
        spool.append([line(n) for n in range(start, start + 100)], now=1.0)
    for record in spool.read(5000):
        spool.ack([record.seq])
    assert spool.pending == 0
    spool.close()
    assert (tmp_path / "acks").stat().st_size < 64 * 1024
    again = Spool(str(tmp_path), max_bytes=64 * 1024 * 16)
    again.open()
    assert again.pending == 0
    assert again.read(10) == []
    again.append([line(1)], now=1.0)
    assert [r.seq for r in again.read(10)] == [3000]
    again.close()
