"""The live Linux source on this machine, with real processes, files and a loopback connection.

No broker is involved, but these tests need root (netlink connector) and a real kernel, so they
live in the integration tier. Other engineers' processes run on the same host: every assertion
filters on the processes and paths this test created.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import pytest

from agents.linux.build import UNATTRIBUTED_PROCESS_KEY
from agents.linux.procfs import process_key_for
from agents.linux.source import LinuxLiveConfig, LinuxLiveSource, ProcessMode
from schemas.events import (
    BehaviorEvent,
    EventKind,
    FileRename,
    FileWrite,
    NetworkConnect,
    ProcessEnd,
    ProcessStart,
)

pytestmark = pytest.mark.integration

DEVICE = "itest-linux"


class Collected:
    def __init__(self) -> None:
        self.events: list[BehaviorEvent] = []

    def of_kind(self, kind: EventKind) -> list[BehaviorEvent]:
        return [e for e in self.events if e.kind == kind]

    def starts_by_pid(self) -> dict[int, tuple[BehaviorEvent, ProcessStart]]:
        return {e.payload.pid: (e, e.payload) for e in self.events
                if isinstance(e.payload, ProcessStart) and e.payload.pid is not None}

    def ended(self, pid: int) -> tuple[BehaviorEvent, ProcessEnd] | None:
        return next(((e, e.payload) for e in self.events
                     if isinstance(e.payload, ProcessEnd) and e.payload.pid == pid), None)

    def connects_to(self, port: int) -> list[tuple[BehaviorEvent, NetworkConnect]]:
        return [(e, e.payload) for e in self.events
                if isinstance(e.payload, NetworkConnect) and e.payload.dst_port == port]

    async def wait_for(self, predicate: Callable[[Collected], bool], timeout_s: float = 10.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while not predicate(self):
            if asyncio.get_running_loop().time() > deadline:
                kinds = [(e.kind.value, getattr(e.payload, "pid", None) or getattr(e.payload, "path", ""))
                         for e in self.events][-40:]
                raise AssertionError(f"expected events did not arrive; last seen: {kinds}")
            await asyncio.sleep(0.05)


@asynccontextmanager
async def running(config: LinuxLiveConfig) -> AsyncIterator[tuple[LinuxLiveSource, Collected]]:
    source = LinuxLiveSource(config)
    collected = Collected()

    async def consume() -> None:
        async for event in source.events():
            collected.events.append(event)

    task = asyncio.create_task(consume())
    await asyncio.wait_for(source.ready.wait(), timeout=10)
    try:
        yield source, collected
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def script(tmp: Path, port: int) -> str:
    """A shell that starts children, writes files in `tmp` and connects to the test's port."""
    connect = (f"import socket,time; s=socket.create_connection(('127.0.0.1',{port})); "
               f"open('{tmp}/from-python.txt','w').write('x'); time.sleep(2.5)")
    return (f"echo one > {tmp}/a.txt; mkdir {tmp}/sub; sleep 0.3; echo two > {tmp}/sub/b.txt; "
            f"mv {tmp}/a.txt {tmp}/c.txt; rm {tmp}/c.txt; "
            f"{sys.executable} -c \"{connect}\" & sleep 0.2; wait; exit 3")


async def exercise(collected: Collected, tmp: Path, expect_net: bool = True) -> tuple[int, int]:
    """Run the script against a listening socket; returns (shell pid, listening port)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    try:
        shell = await asyncio.create_subprocess_exec("/bin/sh", "-c", script(tmp, port))
        assert await asyncio.wait_for(shell.wait(), timeout=20) == 3
        await collected.wait_for(lambda c: c.ended(shell.pid) is not None)
        if expect_net:
            await collected.wait_for(lambda c: bool(c.connects_to(port)))
    finally:
        server.close()
    return shell.pid, port


async def test_netlink_sees_the_tree_files_and_connection(tmp_path: Path) -> None:
    config = LinuxLiveConfig(device_id=DEVICE, watch_paths=(str(tmp_path),), process_mode="netlink",
                             net_interval_s=0.2)
    async with running(config) as (source, collected):
        assert source.process_mode == "netlink"
        shell_pid, port = await exercise(collected, tmp_path)
        await collected.wait_for(lambda c: len(c.of_kind(EventKind.FILE_DELETE)) >= 1)

    starts = collected.starts_by_pid()
    shell, _ = starts[shell_pid]
    assert os.path.basename(shell.image or "") in ("sh", "dash", "bash")
    assert shell.parent_process_key == process_key_for(os.getpid(), DEVICE)  # the test process
    ended = collected.ended(shell_pid)
    assert ended is not None and ended[0].process_key == shell.process_key and ended[1].exit_code == 3

    children = [e for e, _ in starts.values() if e.parent_process_key == shell.process_key]
    # mkdir, sleep, mv, rm, python, sleep: each one is seen with its parent link, even those that exit
    # before /proc can be read (their image is then "<unknown>"); the long-lived ones have images.
    assert len(children) == 6, [(e.image, e.payload) for e in children]
    images = [os.path.basename(e.image or "") for e in children]
    assert images.count("sleep") == 2, images
    python_child, python_start = next((e, p) for e, p in starts.values()
                                      if e in children and "create_connection" in p.command_line)
    assert python_start.sha256 is not None and len(python_start.sha256) == 64

    [(connect, connect_payload)] = collected.connects_to(port)
    assert connect.process_key == python_child.process_key
    assert connect_payload.dst_ip == "127.0.0.1" and connect_payload.outbound
    inbound = [e for e in collected.events
               if isinstance(e.payload, NetworkConnect) and e.payload.src_port == port]
    assert inbound == []  # the accepted side of the loopback connection is not outbound

    paths = {(e.kind, getattr(e.payload, "path", None)) for e in collected.events}
    assert (EventKind.FILE_CREATE, str(tmp_path / "a.txt")) in paths
    assert (EventKind.FILE_WRITE, str(tmp_path / "a.txt")) in paths
    assert (EventKind.FILE_WRITE, str(tmp_path / "sub" / "b.txt")) in paths  # folder created after start
    assert (EventKind.FILE_DELETE, str(tmp_path / "c.txt")) in paths
    renames = [(e.payload.old_path, e.payload.path) for e in collected.events
               if isinstance(e.payload, FileRename)]
    assert renames == [(str(tmp_path / "a.txt"), str(tmp_path / "c.txt"))]
    assert all(e.device_id == DEVICE and e.seq == 0 for e in collected.events)


@pytest.mark.parametrize("mode", ["poll"])
async def test_proc_polling_fallback_sees_processes_that_live_past_one_poll(
    tmp_path: Path, mode: ProcessMode
) -> None:
    config = LinuxLiveConfig(device_id=DEVICE, process_mode=mode, proc_poll_interval_s=0.1,
                             net_interval_s=0.2)
    async with running(config) as (source, collected):
        assert source.process_mode == "poll"
        shell = await asyncio.create_subprocess_exec(
            "/bin/sh", "-c", "sleep 0.6 & sleep 0.7; wait; exit 5")
        await asyncio.wait_for(shell.wait(), timeout=10)
        await collected.wait_for(lambda c: c.ended(shell.pid) is not None)

    starts = collected.starts_by_pid()
    shell_start, _ = starts[shell.pid]
    assert shell_start.parent_process_key == process_key_for(os.getpid(), DEVICE)
    sleeps = [e for e, _ in starts.values() if e.parent_process_key == shell_start.process_key]
    assert len(sleeps) == 2 and all(os.path.basename(e.image or "") == "sleep" for e in sleeps)


async def test_process_key_for_matches_the_event_and_is_none_once_gone(tmp_path: Path) -> None:
    config = LinuxLiveConfig(device_id=DEVICE, process_mode="netlink", net_enabled=False)
    async with running(config) as (_source, collected):
        child = await asyncio.create_subprocess_exec("/bin/sleep", "1")
        await collected.wait_for(lambda c: child.pid in c.starts_by_pid())
        assert collected.starts_by_pid()[child.pid][0].process_key == process_key_for(child.pid, DEVICE)
        await child.wait()
    assert process_key_for(child.pid, DEVICE) is None


async def test_fanotify_attributes_file_events_to_the_writing_process(tmp_path: Path) -> None:
    config = LinuxLiveConfig(device_id=DEVICE, watch_paths=(str(tmp_path),), process_mode="netlink",
                             file_mode="fanotify", net_enabled=False)
    writer_script = f"import time; open('{tmp_path}/long.txt','w').write('x'); time.sleep(0.5)"
    async with running(config) as (source, collected):
        assert source.file_mode == "fanotify"
        # a writer that stays alive, one that exits right after writing, then mv and rm processes
        long_lived = await asyncio.create_subprocess_exec(sys.executable, "-c", writer_script)
        short = await asyncio.create_subprocess_exec("/bin/sh", "-c", f"echo hi > {tmp_path}/short.txt")
        assert await short.wait() == 0 and await long_lived.wait() == 0
        mover = await asyncio.create_subprocess_exec("/bin/mv", str(tmp_path / "short.txt"),
                                                     str(tmp_path / "moved.txt"))
        assert await mover.wait() == 0
        remover = await asyncio.create_subprocess_exec("/bin/rm", f"{tmp_path}/moved.txt")
        assert await remover.wait() == 0
        await collected.wait_for(lambda c: c.ended(remover.pid) is not None
                                 and bool(c.of_kind(EventKind.FILE_DELETE)))

    starts = collected.starts_by_pid()
    key_of = {pid: starts[pid][0].process_key for pid in (long_lived.pid, short.pid, mover.pid, remover.pid)}
    by_path = {(e.kind, getattr(e.payload, "path", None)): e for e in collected.events}
    for kind, name, pid in [(EventKind.FILE_CREATE, "long.txt", long_lived.pid),
                            (EventKind.FILE_WRITE, "long.txt", long_lived.pid),
                            (EventKind.FILE_CREATE, "short.txt", short.pid),
                            (EventKind.FILE_WRITE, "short.txt", short.pid),
                            (EventKind.FILE_RENAME, "moved.txt", mover.pid),
                            (EventKind.FILE_DELETE, "moved.txt", remover.pid)]:
        event = by_path[(kind, str(tmp_path / name))]
        assert event.process_key == key_of[pid], (kind, name)
        assert event.parent_process_key == process_key_for(os.getpid(), DEVICE)  # forked by this test
    long_write = by_path[(EventKind.FILE_WRITE, str(tmp_path / "long.txt"))].payload
    assert isinstance(long_write, FileWrite) and long_write.sha256 == hashlib.sha256(b"x").hexdigest()
    write = by_path[(EventKind.FILE_WRITE, str(tmp_path / "short.txt"))]
    # the short-lived writer's write comes after its start and before its end
    order = [e.event_id for e in collected.events]
    short_end = collected.ended(short.pid)
    assert short_end is not None
    assert order.index(starts[short.pid][0].event_id) < order.index(write.event_id) < order.index(
        short_end[0].event_id)


async def test_inotify_mode_reports_file_events_unattributed(tmp_path: Path) -> None:
    config = LinuxLiveConfig(device_id=DEVICE, watch_paths=(str(tmp_path),), process_mode="netlink",
                             file_mode="inotify", net_enabled=False)
    async with running(config) as (source, collected):
        assert source.file_mode == "inotify"
        writer = await asyncio.create_subprocess_exec("/bin/sh", "-c", f"echo hi > {tmp_path}/a.txt")
        assert await writer.wait() == 0
        await collected.wait_for(lambda c: bool(c.of_kind(EventKind.FILE_WRITE)))
    [write] = collected.of_kind(EventKind.FILE_WRITE)
    assert write.process_key == UNATTRIBUTED_PROCESS_KEY and write.parent_process_key is None


async def test_a_sink_gets_events_from_the_callbacks_and_what_it_refuses_comes_from_events(
    tmp_path: Path,
) -> None:
    """The agent's push path (`attach_sink`): one stream, whichever way each event went, in order."""
    config = LinuxLiveConfig(device_id=DEVICE, watch_paths=(str(tmp_path),), process_mode="netlink",
                             file_mode="inotify", net_enabled=False)
    source = LinuxLiveSource(config)
    stream: list[tuple[str, BehaviorEvent]] = []
    refusing = False

    def sink(event: BehaviorEvent) -> bool:
        if refusing:
            return False
        stream.append(("sink", event))
        return True

    source.attach_sink(sink)

    async def consume() -> None:
        async for event in source.events():
            stream.append(("events", event))

    task = asyncio.create_task(consume())
    await asyncio.wait_for(source.ready.wait(), timeout=10)
    shells = []
    try:
        for index, refuse in enumerate((False, True, False)):
            refusing = refuse
            shell = await asyncio.create_subprocess_exec(
                "/bin/sh", "-c", f"echo {index} > {tmp_path}/f{index}.txt; /bin/true; exit {index}")
            assert await shell.wait() == index
            shells.append(shell.pid)
            written = str(tmp_path / f"f{index}.txt")
            await asyncio.wait_for(_until(partial(_seen, stream, shell.pid, written)), 10)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    ids = [event.event_id for _way, event in stream]
    assert len(ids) == len(set(ids))  # nothing delivered twice
    ways = {way for way, event in stream if getattr(event.payload, "pid", None) in shells}
    assert ways == {"sink", "events"}
    for pid in shells:  # each shell: started, then ended, whichever way each went
        kinds = [e.kind for _w, e in stream if getattr(e.payload, "pid", None) == pid]
        assert kinds == [EventKind.PROCESS_START, EventKind.PROCESS_END], kinds
    writes = [e.payload.path for _w, e in stream if isinstance(e.payload, FileWrite)]
    assert [path for path in writes if path.startswith(str(tmp_path))] == [
        str(tmp_path / f"f{index}.txt") for index in range(3)]
    assert source.stats.emitted == len(stream)


def _seen(stream: list[tuple[str, BehaviorEvent]], pid: int, path: str) -> bool:
    """The shell `pid` has ended and its write of `path` (read on a later tick) has come."""
    return any(isinstance(e.payload, ProcessEnd) and e.payload.pid == pid for _way, e in stream) and any(
        isinstance(e.payload, FileWrite) and e.payload.path == path for _way, e in stream)


async def _until(predicate: Callable[[], bool]) -> None:
    while not predicate():
        await asyncio.sleep(0.05)
