"""The spool keeps every event, in order per device, across reopen and a SIGKILL, and blocks at its cap."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agents.spool import Spool, SpoolClosed, SpoolCorrupt, SpoolLocked
from schemas.codec import decode_event, encode_event
from schemas.events import BehaviorEvent, FileWrite, Platform


def event(device: str = "dev-a", path: str = "/tmp/x") -> BehaviorEvent:
    return BehaviorEvent(
        event_id=uuid.uuid4().hex, device_id=device, seq=0, ts=datetime(2026, 1, 1, tzinfo=UTC),
        platform=Platform.LINUX, process_key="k" * 32, payload=FileWrite(path=path),
    )


def drain(spool: Spool, max_events: int = 1000) -> list[BehaviorEvent]:
    out: list[BehaviorEvent] = []
    while (batch := spool.peek(max_events, 1 << 20)) is not None:
        out.extend(decode_event(record) for record in batch.records)
        spool.ack(batch)
    return out


def test_append_numbers_each_device_from_zero_and_peek_is_oldest_first(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.db")
    numbered = spool.append([event("dev-a"), event("dev-b"), event("dev-a")])
    assert [(e.device_id, e.seq) for e in numbered] == [("dev-a", 0), ("dev-b", 0), ("dev-a", 1)]
    first = spool.peek(100, 1 << 20)
    assert first is not None
    assert (first.device_id, first.first_seq, first.last_seq, len(first.records)) == ("dev-a", 0, 1, 2)
    spool.ack(first)
    second = spool.peek(100, 1 << 20)
    assert second is not None and second.device_id == "dev-b"
    spool.ack(second)
    assert spool.peek(100, 1 << 20) is None
    assert (spool.pending_events, spool.pending_bytes) == (0, 0)


def test_unacked_batch_is_offered_again(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.db")
    spool.append([event() for _ in range(3)])
    first = spool.peek(2, 1 << 20)
    again = spool.peek(2, 1 << 20)
    assert first == again  # a send that failed is retried with the very same records


def test_peek_respects_byte_limit_but_always_returns_one(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.db")
    spool.append([event(path="/p" * 200) for _ in range(5)])
    one_size = len(spool.peek(1, 1 << 20).records[0])  # type: ignore[union-attr]
    batch = spool.peek(100, one_size * 2 + 1)
    assert batch is not None and len(batch.records) == 2
    tiny = spool.peek(100, 1)
    assert tiny is not None and len(tiny.records) == 1


def test_reopen_keeps_pending_events_order_and_seq_counter(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.db")
    written = spool.append([event("dev-a", f"/f{i}") for i in range(10)])
    batch = spool.peek(4, 1 << 20)
    assert batch is not None
    spool.ack(batch)
    spool.close()

    reopened = Spool(tmp_path / "s.db")
    assert reopened.pending_events == 6
    assert [e.event_id for e in drain(reopened)] == [e.event_id for e in written[4:]]
    assert reopened.append([event("dev-a")])[0].seq == 10  # never reuses a number, even once drained


def test_sigkill_mid_stream_loses_no_committed_event_and_leaves_no_seq_gap(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    writer = textwrap.dedent(f"""
        import sys, uuid
        from datetime import UTC, datetime
        from pathlib import Path
        from agents.spool import Spool
        from schemas.events import BehaviorEvent, FileWrite, Platform
        spool = Spool(Path({str(db)!r}))
        for group in range(100000):
            spool.append([BehaviorEvent(event_id=uuid.uuid4().hex, device_id="dev-a", seq=0,
                ts=datetime(2026, 1, 1, tzinfo=UTC), platform=Platform.LINUX, process_key="k" * 32,
                payload=FileWrite(path=f"/g{{group}}/{{i}}")) for i in range(7)])
            print(group, flush=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", writer], stdout=subprocess.PIPE, text=True,
                            cwd=Path(__file__).parents[2])
    assert proc.stdout is not None
    committed = -1
    for line in proc.stdout:
        committed = int(line)
        if committed >= 30:
            proc.kill()  # SIGKILL: no close(), no atexit
            break
    proc.wait(timeout=30)
    assert committed >= 30, "the writer never got going"

    seqs = [e.seq for e in drain(Spool(db))]
    assert len(seqs) >= (committed + 1) * 7  # every group reported as committed is there
    assert len(seqs) % 7 == 0  # a group is all or nothing
    assert seqs == list(range(len(seqs)))  # in order, no gap, no duplicate


async def test_put_blocks_at_cap_until_an_ack_frees_room_and_drops_nothing(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.db")
    spool.append([event()])
    one = spool.pending_bytes
    spool.close()
    spool = Spool(tmp_path / "s.db", max_bytes=one * 3)

    await spool.put([event(), event()])  # 3 pending: exactly at the cap
    blocked = asyncio.create_task(spool.put([event()]))
    await asyncio.sleep(0.05)
    assert not blocked.done(), "a full spool must make the producer wait"
    assert spool.blocked_count == 1 and spool.pending_events == 3

    batch = spool.peek(1, 1 << 20)
    assert batch is not None
    spool.ack(batch)
    await asyncio.wait_for(blocked, timeout=2)
    assert spool.pending_events == 3
    assert [e.seq for e in drain(spool)] == [1, 2, 3]


async def test_empty_spool_admits_a_group_larger_than_the_cap(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.db", max_bytes=10)
    await asyncio.wait_for(spool.put([event(), event()]), timeout=1)
    assert spool.pending_events == 2


def test_not_a_database_is_a_typed_error(tmp_path: Path) -> None:
    bad = tmp_path / "s.db"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(SpoolCorrupt, match=str(bad)):
        Spool(bad)


def test_use_after_close_is_a_typed_error(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.db")
    spool.close()
    with pytest.raises(SpoolClosed):
        spool.append([event()])


def test_a_spool_held_by_another_process_is_refused_and_freed_when_that_process_dies(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    holder = subprocess.Popen(
        [sys.executable, "-c", f"from pathlib import Path; from agents.spool import Spool; "
         f"s = Spool(Path({str(db)!r})); print('ready', flush=True); input()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[2],
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        with pytest.raises(SpoolLocked, match=str(db)):
            Spool(db)  # a second writer would reuse seqs: refused, with the path named
    finally:
        holder.kill()  # SIGKILL: no close(); the kernel drops the lock with the process
        holder.wait(timeout=10)
    spool = Spool(db)
    assert spool.append([event()])[0].seq == 0
    spool.close()
    Spool(db).close()  # close() releases the lock for the next user in this process too


def test_spooled_bytes_are_the_numbered_event_even_with_hostile_identifiers(tmp_path: Path) -> None:
    # The spool numbers by splicing seq into the encoded JSON (no model copy): the bytes must be
    # exactly those of the numbered event, whatever quotes or "seq" text the identifiers carry.
    hostile = BehaviorEvent(event_id='e,"seq":7,"x', device_id="dev-a", seq=7, ts=datetime.now(UTC),
                            platform=Platform.LINUX, process_key='k,"seq":7,',
                            payload=FileWrite(path='/"seq":7,'))
    spool = Spool(tmp_path / "s.db")
    try:
        spool.append([event("dev-a") for _ in range(3)])
        asyncio.run(spool.put([hostile, event("dev-a")]))
        batch = spool.peek(10, 1 << 20)
    finally:
        spool.close()
    assert batch is not None and (batch.first_seq, batch.last_seq) == (0, 4)
    assert batch.records[3] == encode_event(hostile.model_copy(update={"seq": 3}))
    assert [decode_event(record).seq for record in batch.records] == [0, 1, 2, 3, 4]
