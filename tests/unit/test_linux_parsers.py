"""Pure parts of the live Linux source: kernel messages, /proc and socket tables, hash cache, tracker."""

from __future__ import annotations

import hashlib
import os
import struct
import sys
from pathlib import Path

import pytest

from agents.linux import fanotify, inotify
from agents.linux.build import UNKNOWN_IMAGE
from agents.linux.hashing import HashCache, file_key
from agents.linux.proc_events import (
    PROC_EVENT_EXEC,
    PROC_EVENT_EXIT,
    PROC_EVENT_FORK,
    ExecEvent,
    ExitEvent,
    ForkEvent,
    decode_wait_status,
    parse_datagram,
)
from agents.linux.processes import ProcessTracker
from agents.linux.procfs import ProcessSnapshot, make_process_key, parse_stat, read_snapshot
from agents.linux.sockets import (
    TCP_ESTABLISHED,
    TCP_LISTEN,
    TCP_SYN_SENT,
    SocketRow,
    active_opens,
    parse_active_opens,
    parse_diag,
    parse_table,
    read_tcp_sockets,
    select_new_outbound,
)
from schemas.codec import encode_event
from schemas.events import NetworkConnect, ProcessEnd, ProcessStart

NO_SUCH_PID = 4_000_001  # above any pid_max: /proc reads always fail


def message(what: int, body: bytes, ts_ns: int = 123) -> bytes:
    event = struct.pack("=IIQ", what, 0, ts_ns) + body
    cn = struct.pack("=IIIIHH", 1, 1, 0, 0, len(event), 0) + event
    return struct.pack("=IHHII", 16 + len(cn), 3, 0, 0, 0) + cn


def test_connector_datagram_yields_process_events_and_skips_threads() -> None:
    data = (message(PROC_EVENT_FORK, struct.pack("=IIII", 10, 10, 11, 11))
            + message(PROC_EVENT_FORK, struct.pack("=IIII", 10, 10, 12, 10))  # a thread of 10
            + message(PROC_EVENT_EXEC, struct.pack("=II", 11, 11))
            + message(PROC_EVENT_EXIT, struct.pack("=IIII", 11, 11, 9, 17))  # killed by SIGKILL
            + message(PROC_EVENT_EXIT, struct.pack("=IIII", 13, 11, 0, 0))  # a thread exiting
            + message(0x200, b"\0" * 24))  # comm change: ignored
    assert parse_datagram(data) == [ForkEvent(10, 11, 123), ExecEvent(11, 123), ExitEvent(11, -9, 123)]


def test_truncated_or_garbage_datagram_is_ignored_not_misread() -> None:
    whole = message(PROC_EVENT_EXEC, struct.pack("=II", 5, 5))
    assert parse_datagram(whole) == [ExecEvent(5, 123)]
    assert parse_datagram(whole[:-4]) == []  # header claims more bytes than arrived
    assert parse_datagram(b"\xff" * 7) == []
    assert parse_datagram(struct.pack("=IHHII", 4, 3, 0, 0, 0) + b"\0" * 40) == []  # length too small


def test_wait_status_decoding() -> None:
    assert decode_wait_status(3 << 8) == 3
    assert decode_wait_status(0) == 0
    assert decode_wait_status(15) == -15


def test_stat_parsing_survives_hostile_comm() -> None:
    fields = " ".join(["S", "77"] + ["0"] * 17 + ["4242"] + ["0"] * 30)
    stat = parse_stat(99, f"99 (evil) (name) {fields}")
    assert (stat.comm, stat.ppid, stat.start_ticks) == ("evil) (name", 77, 4242)


def test_process_key_is_a_stable_hash_of_device_pid_and_start() -> None:
    key = make_process_key("dev", 10, 1_000)
    assert key == make_process_key("dev", 10, 1_000) and len(key) == 32
    assert key != make_process_key("dev", 10, 1_001) != make_process_key("other", 10, 1_000)


TCP = """  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1001 1
   1: 0100007F:D431 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 1002 1
   2: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 1003 1
   3: garbage line
"""
TCP6 = """  sl  local_address                         remote_address                        st
   0: 0000000000000000FFFF00000100007F:A000 0000000000000000FFFF00000A00000A:01BB 02 0:0 00:0 0 0 0 2001 1
   1: 00000000000000000000000001000000:A001 B80D0120000000000000000001000000:0050 01 0:0 00:0 0 0 0 2002 1
"""


def test_socket_tables_decode_v4_v6_and_v4_mapped_addresses() -> None:
    rows = parse_table(TCP)
    assert rows[0] == SocketRow("127.0.0.1", 8080, "0.0.0.0", 0, TCP_LISTEN, 1001)
    assert rows[1] == SocketRow("127.0.0.1", 54321, "127.0.0.1", 8080, TCP_ESTABLISHED, 1002)
    assert len(rows) == 3  # the garbage line is skipped
    v6 = parse_table(TCP6)
    assert (v6[0].local_ip, v6[0].remote_ip, v6[0].remote_port) == ("127.0.0.1", "10.0.0.10", 443)
    assert (v6[1].local_ip, v6[1].remote_ip, v6[1].remote_port) == ("::1", "2001:db8::1", 80)


def test_outbound_means_connecting_and_not_on_a_listening_port() -> None:
    rows = parse_table(TCP) + parse_table(TCP6)
    fresh, connecting = select_new_outbound(rows, seen=set())
    assert {row.inode for row in fresh} == {1002, 2001, 2002}  # 1003 is the accepted (inbound) side
    assert connecting == {1002, 1003, 2001, 2002}
    assert fresh[0] == SocketRow("127.0.0.1", 54321, "127.0.0.1", 8080, TCP_ESTABLISHED, 1002)
    again, _ = select_new_outbound(rows, seen={1002, 2001})
    assert {row.inode for row in again} == {2002}


def diag_message(
    family: int, state: int, src: bytes, sport: int, dst: bytes, dport: int, inode: int
) -> bytes:
    sockid = struct.pack(">HH", sport, dport) + src.ljust(16, b"\0") + dst.ljust(16, b"\0") + b"\0" * 12
    body = struct.pack("=BBBB", family, state, 0, 0) + sockid + struct.pack("=IIIII", 0, 0, 0, 0, inode)
    return struct.pack("=IHHII", 16 + len(body), 20, 2, 1, 0) + body


def test_sock_diag_messages_decode_and_done_ends_the_dump() -> None:
    v4 = diag_message(2, TCP_ESTABLISHED, bytes([10, 0, 0, 5]), 40000, bytes([93, 184, 216, 34]), 443, 77)
    mapped = diag_message(10, TCP_SYN_SENT, b"\0" * 10 + b"\xff\xff" + bytes([127, 0, 0, 1]), 40001,
                          b"\0" * 15 + b"\1", 8080, 78)
    done, rows = parse_diag(v4 + mapped)
    assert not done
    assert rows == [SocketRow("10.0.0.5", 40000, "93.184.216.34", 443, TCP_ESTABLISHED, 77),
                    SocketRow("127.0.0.1", 40001, "::1", 8080, TCP_SYN_SENT, 78)]
    assert parse_diag(struct.pack("=IHHII", 20, 3, 2, 1, 0) + b"\0" * 4) == (True, [])


SNMP = """Ip: Forwarding DefaultTTL InReceives
Ip: 1 64 123
Tcp: RtoAlgorithm RtoMin RtoMax MaxConn ActiveOpens PassiveOpens AttemptFails
Tcp: 1 200 120000 -1 819967 4242 7
Udp: InDatagrams NoPorts
Udp: 5 0
"""


def test_active_opens_is_read_from_the_tcp_lines_of_snmp() -> None:
    assert parse_active_opens(SNMP) == 819967
    assert parse_active_opens("Tcp: RtoAlgorithm\nTcp: 1\n") is None  # no such column
    assert parse_active_opens("Ip: 1\n") is None
    live = active_opens()
    assert live is not None and live >= 0


def test_poller_lists_the_tables_again_only_after_a_connect(monkeypatch: pytest.MonkeyPatch) -> None:
    from agents.linux import net

    opens = [10]
    listings: list[int] = []
    rows = [SocketRow("10.0.0.1", 40000, "10.0.0.2", 443, TCP_ESTABLISHED, 77)]

    def listing() -> list[SocketRow]:
        listings.append(opens[0])
        return list(rows)

    monkeypatch.setattr(net, "active_opens", lambda: opens[0])
    monkeypatch.setattr(net, "read_tcp_sockets", listing)
    monkeypatch.setattr(net, "find_socket_owners", lambda inodes, budget: {})
    poller = net.ConnectionPoller(ProcessTracker("dev", HashCache()))
    assert poller.poll_once() == [] and listings == [10]  # the baseline
    assert poller.poll_once() == [] and listings == [10]  # nothing connected since: not listed
    opens[0] = 11
    rows.append(SocketRow("10.0.0.1", 40001, "10.0.0.3", 22, TCP_SYN_SENT, 78))
    [connect] = poller.poll_once()
    assert listings == [10, 11] and isinstance(connect.payload, NetworkConnect)
    assert connect.payload.dst_port == 22 and connect.process_key == "linux:unattributed"
    monkeypatch.setattr(net, "active_opens", lambda: None)  # unreadable: list every time
    assert poller.poll_once() == [] and poller.poll_once() == [] and len(listings) == 4


def test_live_socket_listing_sees_a_loopback_connection() -> None:
    import socket

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    client = socket.create_connection(server.getsockname())
    try:
        port = server.getsockname()[1]
        rows = read_tcp_sockets()
        fresh, _ = select_new_outbound(rows, seen=set())
        assert any(r.remote_port == port and r.local_port == client.getsockname()[1] for r in fresh)
        assert not any(r.local_port == port for r in fresh)  # the accepted side is inbound
    finally:
        client.close()
        server.close()


def test_inotify_records_parse_with_padding() -> None:
    name = b"a.txt\0\0\0"
    data = struct.pack("=iIII", 1, inotify.Mask.CREATE, 0, len(name)) + name
    data += struct.pack("=iIII", 2, inotify.Mask.IGNORED, 0, 0)
    events = inotify.parse_events(data)
    assert [(e.wd, e.name) for e in events] == [(1, "a.txt"), (2, "")]


def test_hash_cache_hits_until_the_file_changes_and_is_bounded(tmp_path: Path) -> None:
    cache = HashCache(max_entries=2, max_bytes=1 << 20)
    target = tmp_path / "bin"
    target.write_bytes(b"one")
    first = cache.sha256_of(str(target))
    assert first == "7692c3ad3540bb803c020b3aee66cd8887123234ea0c6e7143c0add73ff431ed"
    assert cache.sha256_of(str(target)) == first and cache.hits == 1
    target.write_bytes(b"two")
    os.utime(target, ns=(1, 2))  # a different mtime: must not serve the stale digest
    assert cache.sha256_of(str(target)) != first and cache.misses == 2
    for index in range(3):
        (tmp_path / f"f{index}").write_bytes(b"x")
        cache.sha256_of(str(tmp_path / f"f{index}"))
    assert len(cache) == 2
    big = tmp_path / "big"
    big.write_bytes(b"0" * ((1 << 20) + 1))
    assert cache.sha256_of(str(big)) is None
    assert cache.sha256_of(str(tmp_path / "missing")) is None


def test_a_digest_keyed_while_the_process_lived_is_served_or_hashed_only_from_that_same_file(
    tmp_path: Path,
) -> None:
    cache = HashCache()
    target = tmp_path / "tool"
    target.write_bytes(b"one")
    key = file_key(str(target))
    assert key is not None and file_key(str(tmp_path)) is None  # a folder has no digest
    gone = f"/proc/{NO_SUCH_PID}/exe"  # the process exited: its path is the fallback
    expected = hashlib.sha256(b"one").hexdigest()
    assert cache.sha256_known(key, (gone, str(target))) == expected and cache.misses == 1
    assert cache.sha256_known(key, ()) == expected and cache.hits == 1  # from the cache, nothing opened
    target.write_bytes(b"two")
    os.utime(target, ns=(1, 2))  # the path now holds another version: not the exec'ed file
    other = file_key(str(target))
    assert other is not None and other != key
    assert cache.sha256_known(other, (gone,)) is None
    assert cache.sha256_known(other, (gone, str(target))) == hashlib.sha256(b"two").hexdigest()


def test_snapshot_of_a_live_process_reads_a_long_command_line_whole_and_keys_its_image() -> None:
    import subprocess

    argument = "x" * 10_000  # longer than a page: read in several reads, not cut at the first
    code = "import sys, time; print(flush=True); time.sleep(30)"
    child = subprocess.Popen([sys.executable, "-c", code, argument], stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None and child.stdout.readline() == b"\n"  # it runs
        snap = read_snapshot(child.pid)
        assert snap.command_line == f"{sys.executable} -c {code} {argument}"
        assert snap.exe is not None and snap.exe_key == file_key(snap.exe)
        assert snap.ppid == os.getpid()
    finally:
        child.kill()
        child.wait()


def snapshot(pid: int, ppid: int, exe: str = "/usr/bin/tool") -> ProcessSnapshot:
    return ProcessSnapshot(pid=pid, ppid=ppid, start_time_ns=1_700_000_000_000_000_000, comm="tool",
                           exe=exe, command_line=f"{exe} --flag", uid=1000, cwd="/home")


def test_exec_of_a_process_already_gone_still_yields_a_start_with_its_parent() -> None:
    tracker = ProcessTracker("dev", HashCache())
    tracker.on_fork(NO_SUCH_PID, NO_SUCH_PID + 1, monotonic_ns=5_000_000_000)
    [start] = tracker.on_exec(NO_SUCH_PID + 1, 5_000_100_000, snap=None)
    assert isinstance(start.payload, ProcessStart)
    assert start.payload.image == UNKNOWN_IMAGE and start.payload.ppid == NO_SUCH_PID
    [end] = tracker.on_exit(NO_SUCH_PID + 1, 0, 5_000_200_000)
    assert isinstance(end.payload, ProcessEnd) and end.process_key == start.process_key


def test_fork_only_parent_is_announced_before_its_exec_child() -> None:
    tracker = ProcessTracker("dev", HashCache())
    parent, child = NO_SUCH_PID + 10, NO_SUCH_PID + 11
    tracker.on_fork(NO_SUCH_PID, parent, monotonic_ns=1_000)  # a subshell: fork, no exec
    tracker.on_fork(parent, child, monotonic_ns=2_000)
    events = tracker.on_exec(child, 3_000, snap=snapshot(child, parent))
    assert [e.payload.pid for e in events if isinstance(e.payload, ProcessStart)] == [parent, child]
    assert events[1].parent_process_key == events[0].process_key
    assert tracker.on_exit(parent, 0, 4_000)[0].process_key == events[0].process_key


def test_fork_that_never_execs_or_acts_is_not_reported() -> None:
    tracker = ProcessTracker("dev", HashCache())
    tracker.on_fork(NO_SUCH_PID, NO_SUCH_PID + 20, monotonic_ns=1_000)
    assert tracker.on_exit(NO_SUCH_PID + 20, 0, 2_000) == []
    assert len(tracker) == 0


def test_tracker_table_is_bounded() -> None:
    tracker = ProcessTracker("dev", HashCache(), max_tracked=3)
    for offset in range(10):
        tracker.on_fork(NO_SUCH_PID, NO_SUCH_PID + 100 + offset, monotonic_ns=offset)
    assert len(tracker) == 3


def test_an_exe_path_that_is_not_utf8_still_yields_a_valid_start() -> None:
    tracker = ProcessTracker("dev", HashCache())
    exe = os.fsdecode(b"/tmp/\xe9vil")  # what readlink gives for a Latin-1 file name
    [start] = tracker.on_exec(NO_SUCH_PID + 30, 1_000, snap=snapshot(NO_SUCH_PID + 30, NO_SUCH_PID, exe=exe))
    assert isinstance(start.payload, ProcessStart)
    assert start.payload.image == start.image == "/tmp/\\xe9vil"
    assert encode_event(start)  # the spool can store it (JSON has no lone surrogates)
    [end] = tracker.on_exit(NO_SUCH_PID + 30, 0, 2_000)
    assert end.image == "/tmp/\\xe9vil"


def test_hashing_reads_everything_even_if_the_file_changed_size_since_fstat(tmp_path: Path) -> None:
    from agents.linux.hashing import _hash_fd

    for size in (0, 1, 300, (1 << 20) + 5):
        data = os.urandom(size)
        path = tmp_path / f"f{size}"
        path.write_bytes(data)
        fd = os.open(path, os.O_RDONLY)
        try:  # the size fstat gave, one from before the file grew, and one from before it shrank
            digests = {_hash_fd(fd, claimed) for claimed in (size, 0, size // 2, size * 2 + 7)}
        finally:
            os.close(fd)
        assert digests == {hashlib.sha256(data).hexdigest()}


def _fan_record(info_type: int, handle: bytes, name: bytes) -> bytes:
    body = b"\x01" * 8 + struct.pack("=Ii", len(handle), 1) + handle + name + b"\0"
    body += b"\0" * (-(len(body) + 4) % 4)
    return struct.pack("=BBH", info_type, 0, len(body) + 4) + body


def _fan_event(mask: int, pid: int, *records: bytes) -> bytes:
    info = b"".join(records)
    return struct.pack("=IBBHQii", 24 + len(info), 3, 0, 24, mask, -1, pid) + info


def test_fanotify_events_parse_with_pid_directory_handle_and_names() -> None:
    handle = bytes(range(8))
    data = (_fan_event(fanotify.Mask.CREATE | fanotify.Mask.CLOSE_WRITE, 4242,
                       _fan_record(fanotify.INFO_DFID_NAME, handle, b"a.txt"))
            + _fan_event(fanotify.Mask.RENAME, 7, _fan_record(fanotify.INFO_OLD_DFID_NAME, handle, b"a.txt"),
                         _fan_record(fanotify.INFO_NEW_DFID_NAME, handle, b"b.txt")))
    create, rename = fanotify.parse_events(data)
    assert (create.pid, create.is_dir) == (4242, False)
    assert create.mask & fanotify.Mask.CLOSE_WRITE and create.mask & fanotify.Mask.CREATE
    assert create.entry is not None and create.entry.name == "a.txt" and create.old is None
    assert rename.old is not None and rename.entry is not None
    assert (rename.old.name, rename.entry.name) == ("a.txt", "b.txt")
    assert rename.old.dir_key == rename.entry.dir_key == create.entry.dir_key


def test_fanotify_truncated_or_foreign_records_are_skipped_not_misread() -> None:
    good = _fan_event(fanotify.Mask.DELETE, 9, _fan_record(fanotify.INFO_DFID_NAME, b"h" * 8, b"gone"))
    assert fanotify.parse_events(good[:-6]) == []  # event shorter than it says
    old_version = bytearray(good)
    old_version[4] = 2  # metadata version this parser does not know
    assert fanotify.parse_events(bytes(old_version) + good)[0].entry.name == "gone"  # type: ignore[union-attr]
    lying_record = good[:24] + struct.pack("=BBH", fanotify.INFO_DFID_NAME, 0, 200) + good[28:]
    [event] = fanotify.parse_events(lying_record)  # the record claims more than the event holds
    assert event.entry is None


def test_fanotify_dir_key_matches_what_the_kernel_reports(tmp_path: Path) -> None:
    # name_to_handle_at needs no privilege; this ties the key built at mark time to the event's.
    key = fanotify.dir_key(str(tmp_path))
    assert len(key) > 12 and key == fanotify.dir_key(str(tmp_path))
    assert key != fanotify.dir_key(str(tmp_path.parent))


def test_fork_takes_the_start_time_of_its_exec_snapshot_but_not_from_a_recycled_pid() -> None:
    from agents.linux.source import _exec_start_times

    snap = ProcessSnapshot(pid=7, ppid=1, start_time_ns=123, comm="x", exe="/x", command_line="x", uid=0,
                           cwd=None)
    fork, exec_, exit_ = ForkEvent(1, 7, 10), ExecEvent(7, 11, snap), ExitEvent(7, 0, 12)
    assert _exec_start_times([fork, exec_, exit_]) == {7: 123}  # a short-lived process: still used
    assert _exec_start_times([exit_, fork, exec_]) == {}  # pid 7 ended first: that fork is another one
    assert _exec_start_times([fork, exec_, ExecEvent(7, 13, snap)]) == {}
