"""The supervisor and its worker processes, driven with the fake ``claude``.

Each test starts a real supervisor (in-process) that spawns real worker processes; the
workers run ``tests/fake_claude.py``. Nothing is mocked between the routing API and the
``claude`` process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from structlog.testing import capture_logs

from claudeclaw import control, ipc
from claudeclaw import pool as pool_module
from claudeclaw.errors import IpcError
from claudeclaw.model import (
    GLOBAL_KEY,
    PendingMessage,
    ReplyTo,
    RunDone,
    RunEvent,
    RunFailed,
    RunQueued,
    RunStarted,
    SessionKey,
)
from claudeclaw.pool import WorkerHandle, WorkerPool
from claudeclaw.procs import ProcessIdentity, find_orphans, project_tag, start_ticks
from claudeclaw.supervisor import Supervisor
from tests.fixtures_daemon import (
    ProjectFactory,
    SupervisorStarter,
    collect,
    final,
    new_supervisor,
    started,
    started_supervisor,
    wait_for,
    without_spare,
)

# A run that lasts until the test stops it. Not HANG: the fake ignores an interrupt then,
# and every stop would wait out the worker's 5 s interrupt grace before the kill (that
# escalation has its own test: test_claude_live.py, an ignored interrupt).
LONG = "SLEEP:60"


def _pool_timings(monkeypatch: pytest.MonkeyPatch, **seconds: float) -> None:
    """Shorten the pool's timings named (``PING_INTERVAL_S=0.1``…) for one test."""
    for name, value in seconds.items():
        assert hasattr(pool_module, name), name
        monkeypatch.setattr(pool_module, name, value)


async def test_first_message_creates_session_and_second_resumes(daemon: Supervisor) -> None:
    """1. A new thread's first message runs without --resume and records the session.
    2. The second message resumes it.
    Result: one session id in sessions.json, the fake saw two turns of it."""
    key = SessionKey("111111111111111111")
    first = await collect(daemon, key, "hello")
    done1 = final(first)
    assert isinstance(done1, RunDone)
    assert started(first)[0].resumed is False
    record = (await daemon.session_info(key)).record  # (the files are written on a read)
    assert record is not None and record.session_id == done1.session_id

    second = await collect(daemon, key, "again")
    done2 = final(second)
    assert isinstance(done2, RunDone)
    assert started(second)[0].resumed is True
    assert done2.session_id == done1.session_id
    assert done2.reply == "FAKE-REPLY turn=2 last=again"
    await daemon._writes.flush()  # (turn counts reach the disk a few seconds later)
    stored = json.loads(daemon.paths.thread_sessions_file.read_text())
    entry = stored["threads"][key]
    assert entry["sessionId"] == done1.session_id and entry["turnCount"] == 2


async def test_threads_run_in_parallel(daemon: Supervisor) -> None:
    """1. Four threads each get a long message (one that an interrupt stops at once).
    2. Wait until all four claude processes have started.
    Result: four runs were in flight at once (parallel); cancelling ends each."""
    keys = [SessionKey(f"20000000000000000{i}") for i in range(4)]
    running: set[str] = set()

    def note(key: str):  # type: ignore[no-untyped-def]
        def on_event(event: RunEvent) -> None:
            if isinstance(event, RunStarted):
                running.add(key)

        return on_event

    tasks = [asyncio.create_task(collect(daemon, k, LONG, note(k))) for k in keys]
    await wait_for(lambda: len(running) == 4, "four runs in flight")
    for key in keys:
        assert await daemon.cancel(key)
    results = await asyncio.gather(*tasks)
    for events in results:
        failed = final(events)
        assert isinstance(failed, RunFailed) and failed.reason == "cancelled"


def record_order(sup: Supervisor) -> list[tuple[str, str]]:
    """Events in the order the supervisor receives them from the workers (the true order)."""
    timeline: list[tuple[str, str]] = []
    assert sup.pool is not None
    original = sup.pool.on_event

    def on_event(key: SessionKey, event: RunEvent) -> None:
        if isinstance(event, RunStarted):
            timeline.append(("start", event.msg_id))
        elif isinstance(event, RunDone | RunFailed):
            timeline.append(("end", event.msg_id))
        original(key, event)

    sup.pool.on_event = on_event
    return timeline


def peak_in_flight(timeline: list[tuple[str, str]]) -> int:
    """The most messages that had a claude running at the same moment."""
    live: set[str] = set()
    peak = 0
    for kind, msg_id in timeline:
        if kind == "start":
            live.add(msg_id)
        else:
            live.discard(msg_id)
        peak = max(peak, len(live))
    return peak


async def test_messages_in_one_thread_run_in_order(daemon: Supervisor) -> None:
    """Three messages sent at once to one thread run one after another, in order."""
    key = SessionKey("300000000000000000")
    timeline = record_order(daemon)
    results = []
    for i in range(3):  # submitted back to back, before the first one finishes
        results.append(asyncio.create_task(collect(daemon, key, f"msg{i} SLEEP:0.1")))
        await asyncio.sleep(0)
    results = await asyncio.gather(*results)
    msg_ids = [started(r)[0].msg_id for r in results]
    assert timeline == [
        ("start", msg_ids[0]), ("end", msg_ids[0]),
        ("start", msg_ids[1]), ("end", msg_ids[1]),
        ("start", msg_ids[2]), ("end", msg_ids[2]),
    ]  # fmt: skip
    replies = [final(r) for r in results]
    assert [r.reply for r in replies if isinstance(r, RunDone)] == [
        f"FAKE-REPLY turn={i + 1} last=msg{i} SLEEP:0.1" for i in range(3)
    ]
    # first "in its queue" (the supervisor's), then its worker's count of those ahead
    queued = [e.position for e in results[2] if isinstance(e, RunQueued)]
    assert queued == [0, 2]


async def test_whether_a_thread_has_a_session_is_answered_from_memory(
    daemon: Supervisor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bot asks for every unmentioned message in a thread outside the listen channels:
    no session file is read (or written) for it. A session, or a live worker, says yes;
    a reset says no again."""
    key = SessionKey("961000000000000001")

    def no_reading(*_args: object) -> None:
        raise AssertionError("the registry was read")

    assert not daemon.has_session(key)
    assert isinstance(final(await collect(daemon, key, "hello")), RunDone)
    with monkeypatch.context() as patched:  # (not undo(): the fixtures' patches stay)
        patched.setattr(daemon.registry, "get", no_reading)
        patched.setattr(daemon.registry, "list", no_reading)
        assert daemon.has_session(key)
    assert await daemon.reset(key)
    assert not daemon.has_session(key)


async def test_global_queue_stays_serial(daemon: Supervisor) -> None:
    """DMs and channel messages share the global key: never two runs of it at once."""
    timeline = record_order(daemon)
    results = await asyncio.gather(
        *(collect(daemon, GLOBAL_KEY, f"dm{i} SLEEP:0.1") for i in range(3))
    )
    assert [kind for kind, _ in timeline] == ["start", "end"] * 3
    assert peak_in_flight(timeline) == 1
    assert all(isinstance(final(r), RunDone) for r in results)
    await daemon._writes.flush()  # (written within REGISTRY_DELAY_S, or on a read)
    assert daemon.paths.global_session_file.exists()


async def test_idle_worker_exits_and_session_survives(make_project) -> None:  # type: ignore[no-untyped-def]
    """1. A thread runs one message; its worker goes idle.
    2. After workerIdleSeconds the worker exits.
    3. The next message starts a new worker that resumes the same Claude session."""

    paths = make_project(limits={"workerIdleSeconds": 0.3})
    sup = await started_supervisor(paths)
    try:
        key = SessionKey("400000000000000000")
        first = final(await collect(sup, key, "one"))
        assert sup.pool is not None
        handle = sup.pool.find(key)
        assert handle is not None
        first_pid = handle.pid
        async with asyncio.timeout(10):
            await handle.exited.wait()
        assert sup.pool.find(key) is None
        second = await collect(sup, key, "two")
        assert started(second)[0].resumed is True
        done = final(second)
        assert isinstance(done, RunDone) and isinstance(first, RunDone)
        assert done.session_id == first.session_id
        assert done.reply == "FAKE-REPLY turn=2 last=two"
        new = sup.pool.find(key)
        assert new is not None and new.pid != first_pid
    finally:
        await sup.shutdown()


async def test_concurrency_cap_holds_and_threads_take_turns(make_project) -> None:  # type: ignore[no-untyped-def]
    """maxConcurrentRuns=1: thread A has three messages, thread B one.
    Result: never two claude at once, and B runs right after A's first (no starvation)."""

    paths = make_project(limits={"maxConcurrentRuns": 1})
    sup = await started_supervisor(paths)
    try:
        a, b = SessionKey("500000000000000001"), SessionKey("500000000000000002")
        order: list[str] = []
        in_flight = 0
        peak = 0
        b_waiting = asyncio.Event()

        def track(label: str):  # type: ignore[no-untyped-def]
            def on_event(event: RunEvent) -> None:
                nonlocal in_flight, peak
                if isinstance(event, RunStarted) and label not in order:
                    order.append(label)
                    in_flight += 1
                    peak = max(peak, in_flight)
                elif isinstance(event, RunDone | RunFailed):
                    in_flight -= 1
                elif isinstance(event, RunQueued) and event.waiting_for_slot and label == "B1":
                    b_waiting.set()

            return on_event

        timeline = record_order(sup)
        a1 = asyncio.create_task(collect(sup, a, LONG, track("A1")))
        await wait_for(lambda: order == ["A1"], "A1 running")
        rest_a = [asyncio.create_task(collect(sup, a, f"a{i}", track(f"A{i}"))) for i in (2, 3)]
        b1 = asyncio.create_task(collect(sup, b, "b1", track("B1")))
        async with asyncio.timeout(20):
            await b_waiting.wait()
        assert await sup.cancel(a)  # A1 ends; the slot goes to B, not to A's next message
        await asyncio.gather(a1, b1, *rest_a)
        assert order == ["A1", "B1", "A2", "A3"]
        assert peak_in_flight(timeline) == 1
    finally:
        await sup.shutdown()


async def test_sigkill_of_a_worker_loses_no_message(daemon: Supervisor) -> None:
    """1. A thread has one message running and two queued behind it.
    2. Its worker is SIGKILLed mid-run.
    Result: the running message is retried on a new worker, the queued ones follow in
    order, all three get replies; the killed run's claude process is gone."""
    key = SessionKey("600000000000000000")
    first_start: list[RunStarted] = []

    def on_first(event: RunEvent) -> None:
        if isinstance(event, RunStarted):
            first_start.append(event)

    t1 = asyncio.create_task(collect(daemon, key, "one SLEEP:1.5", on_first))
    await wait_for(lambda: bool(first_start), "first run started")
    t2 = asyncio.create_task(collect(daemon, key, "two"))
    t3 = asyncio.create_task(collect(daemon, key, "three"))
    assert daemon.pool is not None
    handle = daemon.pool.find(key)
    assert handle is not None
    await wait_for(lambda: len(daemon.pool.held_by(handle)) == 3, "three pending")
    os.kill(handle.pid, signal.SIGKILL)
    r1, r2, r3 = await asyncio.gather(t1, t2, t3)
    assert [type(final(r)) for r in (r1, r2, r3)] == [RunDone, RunDone, RunDone]
    assert len(started(r1)) >= 2  # ran again after the crash (and maybe reset a session)
    assert not psutil.pid_exists(first_start[0].pid) or (
        psutil.Process(first_start[0].pid).status() == psutil.STATUS_ZOMBIE
    )
    replies = [final(r).reply for r in (r1, r2, r3)]  # type: ignore[union-attr]
    assert [r.split(" last=")[1] for r in replies] == ["one SLEEP:1.5", "two", "three"]
    assert daemon.pool.crash_count == 1


async def test_frames_queued_in_one_pass_leave_in_one_write_in_order(tmp_path: Path) -> None:
    """A run's end queues several frames at once (its final event, the warm report): one
    write, so one wake-up of the other side; an awaited send goes after them."""
    got: list[ipc.Message] = []
    all_four = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (message := await ipc.read_frame(reader)) is not None:
            got.append(message)
            if len(got) == 4:
                all_four.set()
        writer.close()

    server = await ipc.listen(tmp_path / "s.sock", serve)
    channel = await ipc.Channel.connect(str(tmp_path / "s.sock"))
    writes: list[int] = []
    write = channel.writer.write

    def counted(data: bytes) -> None:  # type: ignore[override]
        writes.append(len(data))
        write(data)

    channel.writer.write = counted  # type: ignore[method-assign]
    for n in range(3):
        channel.send_nowait({"type": "event", "n": n})
    assert writes == []  # not yet: at the end of this pass of the loop
    await channel.send({"type": "bye"})
    assert len(writes) == 2  # the three at once, then the awaited one
    async with asyncio.timeout(10):
        await all_four.wait()
    assert [m.get("n", m["type"]) for m in got] == [0, 1, 2, "bye"]
    await channel.close()
    server.close()


async def test_bad_frames_do_not_kill_the_supervisor(daemon: Supervisor) -> None:
    """Garbage, oversized and foreign-version frames on both sockets close only that one
    connection; the daemon goes on serving."""
    assert daemon.pool is not None and daemon.control is not None
    for path in (daemon.pool.socket_path, daemon.control.path):
        for payload in (
            b"\x00\x00\x00\x05hello",  # not JSON
            struct.pack(">I", ipc.MAX_FRAME_BYTES + 1),  # oversized
            ipc.encode_frame({"type": "hello"}).replace(b'"v":1', b'"v":9'),  # version
            b"\xff\xff",  # truncated header
        ):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            await asyncio.to_thread(sock.connect, str(path))
            await asyncio.to_thread(sock.sendall, payload)
            sock.shutdown(socket.SHUT_WR)
            await asyncio.to_thread(sock.recv, 65536)  # the daemon closes it
            sock.close()
    done = final(await collect(daemon, GLOBAL_KEY, "still alive?"))
    assert isinstance(done, RunDone)
    reply = await control.request(daemon.paths, {"type": "ping"})
    assert reply["pid"] == os.getpid()


async def test_status_reports_what_is_really_running(daemon: Supervisor) -> None:
    """status (as ``claudeclaw status --json`` gets it) shows the worker, its running
    claude pid, the queue behind it and real memory figures."""
    key = SessionKey("700000000000000000")
    begun: list[RunStarted] = []
    running = asyncio.create_task(
        collect(daemon, key, LONG, lambda e: begun.append(e) if isinstance(e, RunStarted) else None)
    )
    await wait_for(lambda: bool(begun), "run started")
    queued = asyncio.create_task(collect(daemon, key, "next"))
    assert daemon.pool is not None
    await wait_for(lambda: len(daemon.pool.held_by(daemon.pool.find(key))) == 2, "one queued")  # type: ignore[union-attr]
    report = await control.request(daemon.paths, {"type": "status"})
    rows = {w["key"]: w for w in report["workers"]}
    row = rows[key]
    assert row["state"] == "running"
    assert row["claude_pid"] == begun[0].pid and psutil.pid_exists(row["claude_pid"])
    assert row["queue_length"] == 1
    assert row["rss_bytes"] > 1_000_000
    assert report["daemon"]["running"] == 1
    assert report["daemon"]["pid"] == os.getpid()
    await daemon.cancel(key)
    await asyncio.gather(running, queued)


async def test_reset_forgets_the_session(daemon: Supervisor) -> None:
    key = SessionKey("800000000000000000")
    first = final(await collect(daemon, key, "one"))
    assert await daemon.reset(key) is True
    assert await asyncio.to_thread(daemon.registry.get, key) is None
    again = await collect(daemon, key, "two")
    assert started(again)[0].resumed is False
    done = final(again)
    assert isinstance(done, RunDone) and isinstance(first, RunDone)
    assert done.session_id != first.session_id


async def test_sigterm_leaves_no_process_behind(daemon_process, make_project) -> None:  # type: ignore[no-untyped-def]
    """1. `claudeclaw run` serves a thread whose claude hangs (with a grandchild).
    2. SIGTERM the daemon (grace 1 s).
    Result: it exits 0 and no process of this project is left: no worker, no claude,
    no grandchild."""
    paths = make_project(limits={"shutdownGraceSeconds": 1})
    proc = daemon_process(paths)
    await proc.wait_ready()
    sender, _claude_pid = await send_until_started(paths, "900000000000000000", "GRANDCHILD")
    tag = project_tag(str(paths.root))
    ours = await asyncio.to_thread(lambda: [p for p in psutil.process_iter() if _tagged(p, tag)])
    assert len(ours) >= 2  # the worker and the fake claude at least
    proc.signal(signal.SIGTERM)
    assert await proc.wait_exit() == 0
    await asyncio.gather(sender, return_exceptions=True)
    left = await asyncio.to_thread(
        lambda: [p.pid for p in psutil.process_iter() if _tagged(p, tag)]
    )
    assert left == []


async def send_until_started(paths, key: str, prompt: str):  # type: ignore[no-untyped-def]
    """Send through the control socket in the background; return (task, claude pid) once
    the run has started and claude has written its ``system/init`` (so it is past start-up:
    killing its worker earlier could end it with a broken pipe on that first write)."""
    pids: list[int] = []
    got = asyncio.Event()

    async def send() -> None:
        async for frame in control.stream(paths, {"type": "send", "key": key, "prompt": prompt}):
            if frame["event"]["kind"] == "started":
                pids.append(frame["event"]["pid"])
            elif frame["event"]["kind"] == "session" and pids:
                got.set()

    task = asyncio.create_task(send())
    async with asyncio.timeout(20):
        await got.wait()
    return task, pids[0]


def _tagged(proc: psutil.Process, tag: str) -> bool:
    try:
        return proc.environ().get("CLAUDECLAW_OWNER", "").startswith(tag + ":")
    except psutil.Error:
        return False


async def test_orphans_of_a_dead_daemon_are_ended_at_start(daemon_process, make_project) -> None:  # type: ignore[no-untyped-def]
    """1. A daemon runs a hanging claude; daemon and worker are SIGKILLed (a crash).
    2. The claude process survives as an orphan.
    3. A new daemon starts for the project.
    Result: the orphan is found by its tag (pid + start time of its dead owner) and ended."""
    paths = make_project()
    first = daemon_process(paths)
    await first.wait_ready()
    sender, claude_pid = await send_until_started(paths, "910000000000000000", "HANG IGNORE_TERM")
    worker_pid = psutil.Process(claude_pid).ppid()
    first.signal(signal.SIGSTOP)  # frozen: it cannot clean up after its worker
    os.kill(worker_pid, signal.SIGKILL)
    first.kill()
    await asyncio.gather(sender, return_exceptions=True)
    assert psutil.pid_exists(claude_pid)
    tag = project_tag(str(paths.root))
    assert claude_pid in [p.pid for p in await asyncio.to_thread(find_orphans, tag)]
    second = daemon_process(paths)
    await second.wait_ready()
    await wait_for(lambda: not _alive(claude_pid), "orphan ended")
    second.signal(signal.SIGTERM)
    assert await second.wait_exit() == 0


def test_a_process_identity_tells_a_reused_pid_from_its_process() -> None:
    """The identity kept to end a claude later is pid + start time, read from /proc even
    when the command name holds ') ' (the field a naive split gets wrong)."""
    renamed = "open('/proc/self/comm', 'w').write(') x ( y'); print(flush=True); input()"
    child = subprocess.Popen(
        [sys.executable, "-c", renamed], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert child.stdin is not None and child.stdout is not None
    try:
        child.stdout.readline()  # renamed
        assert psutil.Process(child.pid).name() == ") x ( y"
        identity = ProcessIdentity.of(child.pid)
        assert identity is not None and identity.alive()
        # psutil agrees on when it started (ticks since boot + the boot time)
        ticks = os.sysconf("SC_CLK_TCK")
        created = psutil.Process(child.pid).create_time()
        assert abs(psutil.boot_time() + identity.started / ticks - created) < 0.05
        started_later = ProcessIdentity(child.pid, identity.started + 1)  # a reused pid
        assert not started_later.alive()
        assert not started_later.kill_group()  # never signalled
    finally:
        child.stdin.close()
        child.wait()
    assert not identity.alive()
    assert ProcessIdentity.of(child.pid) is None


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


async def test_second_daemon_for_the_same_project_is_refused(daemon: Supervisor) -> None:
    from claudeclaw.errors import StateError

    other = Supervisor(daemon.paths, daemon.settings, log_mode="json")
    with pytest.raises(StateError, match="already running"):
        await other.startup()


async def test_over_max_idle_workers_the_least_recently_used_leaves_its_key(make_project) -> None:  # type: ignore[no-untyped-def]
    """maxIdleWorkers=2 (workerIdleSeconds stays long).
    1. Threads A, B and C each run a message, one after the other: when C's ends there are
       three idle workers, so A's (the least recently used) leaves its key at once (it
       exits, or closes its claude and becomes the spare); B's and C's stay.
    2. A's next message comes back on another worker and resumes A's session; now B's
       worker is the least recently used idle one and leaves."""
    paths = make_project(limits={"maxIdleWorkers": 2, "workerIdleSeconds": 600})
    sup = await started_supervisor(paths)
    try:
        assert sup.pool is not None
        a, b, c = (SessionKey(f"96000000000000000{i}") for i in range(3))
        first_a = final(await collect(sup, a, "a1"))
        await collect(sup, b, "b1")
        handle_a, handle_b = sup.pool.find(a), sup.pool.find(b)
        assert handle_a is not None and handle_b is not None
        assert sup.pool.find(a) is handle_a and handle_a.state == "ready"  # within budget
        pool = sup.pool

        def left(handle: WorkerHandle) -> bool:
            return handle.exited.is_set() or (pool.spare is handle and handle.state == "spare")

        await collect(sup, c, "c1")
        await wait_for(lambda: left(handle_a), "A's worker left its key")
        assert sup.pool.find(a) is None
        assert sup.pool.find(b) is handle_b and sup.pool.find(c) is not None
        again = await collect(sup, a, "a2")
        assert started(again)[0].resumed is True
        done = final(again)
        assert isinstance(done, RunDone) and isinstance(first_a, RunDone)
        assert done.session_id == first_a.session_id
        assert done.reply == "FAKE-REPLY turn=2 last=a2"
        await wait_for(lambda: left(handle_b), "B's worker left its key")
        assert sup.pool.find(b) is None and sup.pool.find(c) is not None
    finally:
        await sup.shutdown()


async def test_max_workers_evicts_the_idlest_and_waits_when_all_are_busy(make_project) -> None:  # type: ignore[no-untyped-def]
    """maxWorkers=2.
    1. Threads A and B each run a message, then C arrives: the idlest (A) is retired to
       make room, C runs; A's next message comes back on a new worker and resumes.
    2. With B and C both busy, D waits (queued for a slot) until one of them is free."""

    paths = make_project(limits={"maxWorkers": 2, "maxConcurrentRuns": 2})
    sup = await started_supervisor(paths)
    try:
        assert sup.pool is not None
        a, b, c, d = (SessionKey(f"95000000000000000{i}") for i in range(4))
        await collect(sup, a, "a1")
        await collect(sup, b, "b1")
        handle_a = sup.pool.find(a)
        assert handle_a is not None
        await collect(sup, c, "c1")
        async with asyncio.timeout(10):
            await handle_a.exited.wait()
        assert {h.key for h in sup.pool.live_handles() if h.process} <= {b, c}

        # B and C busy; D must wait for room
        b_started, c_started = asyncio.Event(), asyncio.Event()
        tb = asyncio.create_task(
            collect(sup, b, LONG, lambda e: b_started.set() if isinstance(e, RunStarted) else None)
        )
        tc = asyncio.create_task(
            collect(sup, c, LONG, lambda e: c_started.set() if isinstance(e, RunStarted) else None)
        )
        async with asyncio.timeout(20):
            await b_started.wait()
            await c_started.wait()
        d_events: list[RunEvent] = []
        td = asyncio.create_task(collect(sup, d, "d1", d_events.append))
        await wait_for(lambda: len(d_events) >= 2, "D queued")
        assert d_events[0] == RunQueued(d_events[0].msg_id, 0)  # in its queue
        assert isinstance(d_events[1], RunQueued) and d_events[1].waiting_for_slot
        assert sup.pool.find(d) is not None and sup.pool.find(d).process is None  # type: ignore[union-attr]
        await sup.cancel(b)  # B becomes idle → retired → D gets a worker
        done_d = final(await td)
        assert isinstance(done_d, RunDone)
        await sup.cancel(c)
        await asyncio.gather(tb, tc)
        back = await collect(sup, a, "a2")
        assert started(back)[0].resumed is True
    finally:
        await sup.shutdown()


def _ready_spare(pool: WorkerPool, other_than: int = 0) -> WorkerHandle | None:
    """The pool's spare once it has said hello (and is not the process ``other_than``)."""
    spare = pool.spare
    if spare is None or spare.channel is None or spare.pid in (0, other_than):
        return None
    return spare


async def test_a_worker_that_says_hello_before_its_spawn_is_registered_is_accepted(
    daemon: Supervisor,
) -> None:
    """A forked worker can connect before the pool has registered its pid (the spawn
    reply and the hello race). Result: the pool waits for the registration instead of
    refusing the worker; no crash, no second spawn."""
    assert daemon.pool is not None
    pool = daemon.pool
    await without_spare(pool)  # the key's worker must be forked for it
    original = pool.spawner.spawn
    held = asyncio.Event()

    async def slow_registration(args, env):  # type: ignore[no-untyped-def]
        process = await original(args, env)
        # hold the registration until the worker's hello is waiting for it
        await wait_for(lambda: process.pid in pool._pid_waiters, "hello before registration")
        held.set()
        return process

    pool.spawner.spawn = slow_registration  # type: ignore[method-assign]
    done = final(await collect(daemon, SessionKey("960000000000000000"), "hello"))
    assert held.is_set()
    assert isinstance(done, RunDone)
    assert pool.crash_count == 0 and pool.spawn_count == 1


async def test_a_new_key_is_served_by_the_pre_forked_spare_and_a_dead_spare_is_replaced(
    make_project,
    monkeypatch: pytest.MonkeyPatch,  # type: ignore[no-untyped-def]
) -> None:
    """The pool keeps one worker forked, connected and greeted before any key needs it.
    Result: a new key's first message runs on that very process (no fork on its path),
    even when the spare waited longer than the ping timeout (it is not taken for hung),
    the next spare is forked behind it, a spare killed while unused is replaced, and the
    replacement serves the next new key with its session."""
    _pool_timings(monkeypatch, PING_INTERVAL_S=0.1, PING_TIMEOUT_S=0.6)
    daemon = await started_supervisor(make_project())
    try:
        await _spare_scenario(daemon)
    finally:
        await daemon.shutdown()


async def _spare_scenario(daemon: Supervisor) -> None:
    assert daemon.pool is not None
    pool = daemon.pool
    await wait_for(lambda: _ready_spare(pool), "the first spare")
    first = _ready_spare(pool)
    assert first is not None and first.key == ""
    checks = pool.last_health_check
    await wait_for(lambda: time.monotonic() - first.last_pong > 0.6, "past the ping timeout")
    await wait_for(lambda: pool.last_health_check > checks, "a health check since")
    spawns = pool.spawn_count
    key = SessionKey("961000000000000000")
    events = await collect(daemon, key, "hello")
    assert isinstance(final(events), RunDone)
    handle = pool.find(key)
    assert handle is first and handle.pid == first.pid and handle.key == key
    assert pool.spawn_count == spawns + 1
    after = pool.last_health_check
    await wait_for(lambda: pool.last_health_check > after + 0.15, "two health checks since")
    assert not first.hung  # it answers its pings: its long wait as a spare is not a hang
    await wait_for(lambda: _ready_spare(pool, first.pid), "the next spare")
    second = _ready_spare(pool, first.pid)
    assert second is not None
    os.kill(second.pid, signal.SIGKILL)
    await second.exited.wait()
    await wait_for(lambda: _ready_spare(pool, second.pid), "a replacement for the dead spare")
    third = _ready_spare(pool, second.pid)
    assert third is not None and third.pid != first.pid
    other = SessionKey("962000000000000000")
    assert isinstance(final(await collect(daemon, other, "again")), RunDone)
    assert pool.find(other) is third and pool.crash_count == 0
    again = await collect(daemon, key, "resume")
    assert started(again)[0].resumed is True and pool.find(key) is first


def _spare_with_claude(pool: WorkerPool, other_than: int = 0) -> WorkerHandle | None:
    """The pool's ready spare (not ``other_than``) once its claude started ahead is up."""
    spare = _ready_spare(pool, other_than)
    return spare if spare is not None and spare.warm_pid else None


async def _daemon_with_a_spares_claude(
    make_project: ProjectFactory,
    start_supervisor: SupervisorStarter,
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[Supervisor, WorkerPool, WorkerHandle]:
    """A daemon (spares refilled within 50 ms), its pool, and its spare once the claude
    that spare started ahead is up."""
    _pool_timings(monkeypatch, SPARE_REFILL_DELAY_S=0.05)
    daemon = await start_supervisor(make_project())
    assert daemon.pool is not None
    pool = daemon.pool
    await wait_for(lambda: _spare_with_claude(pool), "the spare's claude")
    spare = _spare_with_claude(pool)
    assert spare is not None
    return daemon, pool, spare


async def test_a_new_keys_first_message_runs_on_the_claude_its_spare_started_ahead(
    make_project: ProjectFactory,
    start_supervisor: SupervisorStarter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """runner.prestartClaude (default): the spare starts a new session's claude before any
    key needs it.
    Result: `status` shows the spare and its claude; a new key's first message runs on
    that very process (a new session, nothing started on its path); the next spare
    starts one too."""
    daemon, pool, spare = await _daemon_with_a_spares_claude(
        make_project, start_supervisor, monkeypatch
    )
    ahead = spare.warm_pid
    shown = [w for w in (await daemon.requests.status_report())["workers"] if w["pid"] == spare.pid]
    assert [(w["key"], w["state"], w["claude_pid"]) for w in shown] == [("", "spare", ahead)]
    assert shown[0]["claude_mode"] == "warm" and shown[0]["claude_rss_bytes"] > 0
    key = SessionKey("975100000000000000")
    events = await collect(daemon, key, "hello")
    assert isinstance(final(events), RunDone)
    assert pool.find(key) is spare and started(events)[0].pid == ahead
    assert started(events)[0].resumed is False
    await wait_for(lambda: _spare_with_claude(pool, spare.pid), "the next spare's claude")


async def test_a_spare_killed_with_its_frozen_claude_leaves_no_claude_behind(
    make_project: ProjectFactory,
    start_supervisor: SupervisorStarter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The spare holds the claude it started ahead, frozen (SIGSTOP) while it waits; the
    spare is SIGKILLed (as by the OOM killer). Result: the pool kills that claude (frozen,
    it would never see its stdin close) and the next spare starts one of its own."""
    _daemon, pool, spare = await _daemon_with_a_spares_claude(
        make_project, start_supervisor, monkeypatch
    )
    ahead = psutil.Process(spare.warm_pid)

    def frozen() -> bool:
        with contextlib.suppress(psutil.Error):
            return ahead.status() == psutil.STATUS_STOPPED
        return False

    await wait_for(frozen, "the spare's claude frozen while it waits")
    os.kill(spare.pid, signal.SIGKILL)
    await spare.exited.wait()
    await asyncio.to_thread(ahead.wait, 10)
    await wait_for(lambda: _spare_with_claude(pool, spare.pid), "a new spare with its claude")


async def test_a_stop_ends_the_spare_and_its_claude_gently_without_a_warning(
    make_project: ProjectFactory,
    start_supervisor: SupervisorStarter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A normal stop while the spare holds the claude it started ahead (frozen). Result:
    the spare is sent SIGTERM, on which it closes that claude itself and exits; the stop
    logs it at info, with no ``worker.killed`` or ``claude.warm_killed`` warning, and no
    claude is left."""
    daemon, _pool, spare = await _daemon_with_a_spares_claude(
        make_project, start_supervisor, monkeypatch
    )
    ahead = psutil.Process(spare.warm_pid)
    assert spare.process is not None
    with capture_logs() as logs:
        await daemon.shutdown()
    assert spare.process.returncode == -signal.SIGTERM  # re-raised once its claude closed
    assert not ahead.is_running() or ahead.status() == psutil.STATUS_ZOMBIE
    warnings = [e["event"] for e in logs if e["log_level"] in ("warning", "error")]
    assert warnings == []
    assert [e["worker_pid"] for e in logs if e["event"] == "worker.spare_stopped"] == [spare.pid]


async def test_with_prestart_claude_off_a_new_keys_claude_starts_with_its_message(
    make_project: ProjectFactory, start_supervisor: SupervisorStarter
) -> None:
    """runner.prestartClaude false. Result: the spare serves the new key's first message,
    whose claude is started after the message arrived."""
    off = await start_supervisor(make_project(runner={"prestartClaude": False}))
    assert off.pool is not None
    pool = off.pool
    await wait_for(lambda: _ready_spare(pool), "a spare")
    ticks = os.sysconf("SC_CLK_TCK")
    before = int(time.clock_gettime(time.CLOCK_BOOTTIME) * ticks)  # /proc's start clock
    events = await collect(off, SessionKey("975200000000000000"), "hello")
    assert isinstance(final(events), RunDone)
    start = start_ticks(started(events)[0].pid)
    assert start is not None and start >= before


async def test_over_max_warm_sessions_the_claude_started_ahead_is_closed_first(
    make_project: ProjectFactory,
    start_supervisor: SupervisorStarter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """maxWarmSessions=2, warmIdleSeconds=1.
    1. A's first message takes the spare's claude; the next spare starts one (2 warm).
    2. A's claude is closed for idleness; B's first message takes the spare's, and the next
       spare starts one (2 warm: B's, the spare's).
    3. A's next message starts A's claude again: 3 warm, one over the cap.
    Result: the spare's claude is closed, not B's (the least recently used session's)."""
    _pool_timings(monkeypatch, SPARE_REFILL_DELAY_S=0.05)
    daemon = await start_supervisor(
        make_project(limits={"maxWarmSessions": 2, "warmIdleSeconds": 1})
    )
    assert daemon.pool is not None
    pool = daemon.pool
    a, b = SessionKey("976100000000000000"), SessionKey("976200000000000000")
    await wait_for(lambda: _spare_with_claude(pool), "the first spare's claude")
    assert isinstance(final(await collect(daemon, a, "hello A")), RunDone)
    worker_a = pool.find(a)
    assert worker_a is not None and worker_a.warm_pid
    await wait_for(lambda: _spare_with_claude(pool, worker_a.pid), "the second spare's claude")
    await wait_for(lambda: not worker_a.warm_pid, "A's claude closed for idleness")
    assert isinstance(final(await collect(daemon, b, "hello B")), RunDone)
    worker_b = pool.find(b)
    assert worker_b is not None and worker_b.warm_pid
    claude_b = psutil.Process(worker_b.warm_pid)
    await wait_for(lambda: _spare_with_claude(pool, worker_b.pid), "the third spare's claude")
    spare = pool.spare
    assert spare is not None
    ahead = psutil.Process(spare.warm_pid)
    again = await collect(daemon, a, "A again")
    assert isinstance(final(again), RunDone) and started(again)[0].resumed is True
    await asyncio.to_thread(ahead.wait, 10)
    await wait_for(lambda: not spare.warm_pid, "the spare reports it has none")
    assert claude_b.is_running() and worker_b.warm_pid == claude_b.pid
    assert pool.spare is spare and pool.crash_count == 0


async def _connected_worker(daemon: Supervisor, key: SessionKey) -> tuple[WorkerPool, WorkerHandle]:
    """The pool, and ``key``'s worker once it has answered a first message (idle,
    connected)."""
    assert daemon.pool is not None
    assert isinstance(final(await collect(daemon, key, "hello")), RunDone)
    handle = daemon.pool.find(key)
    assert handle is not None and handle.channel is not None
    return daemon.pool, handle


async def _one_idle_worker_kept(
    make_project: ProjectFactory,
    start_supervisor: SupervisorStarter,
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[Supervisor, WorkerPool]:
    """A daemon with maxIdleWorkers=1 (spares refilled and the cap enforced within 50 ms),
    once its first spare is ready."""
    _pool_timings(monkeypatch, SPARE_REFILL_DELAY_S=0.05, IDLE_CAP_DELAY_S=0.05)
    daemon = await start_supervisor(make_project(limits={"maxIdleWorkers": 1}))
    assert daemon.pool is not None
    pool = daemon.pool
    await wait_for(lambda: _ready_spare(pool), "the first spare")
    return daemon, pool


async def test_an_idle_worker_over_the_cap_becomes_the_spare_instead_of_a_fork(
    make_project: ProjectFactory,
    start_supervisor: SupervisorStarter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """maxIdleWorkers=1.
    1. Key A's first message runs on the spare; the next spare is forked (A idle is kept).
    2. Key B's first message takes that spare: two idle workers, one more than kept.
    Result: A's worker closes its warm claude and becomes the spare (no fork, no exit);
    key C's first message runs on that very process, with a session of its own; A's next
    message resumes A's session."""
    daemon, pool = await _one_idle_worker_kept(make_project, start_supervisor, monkeypatch)
    a, b, c = (SessionKey(f"96{i}100000000000000") for i in (7, 8, 9))
    assert isinstance(final(await collect(daemon, a, "hello A")), RunDone)
    worker_a = pool.find(a)
    assert worker_a is not None and worker_a.warm_pid
    claude_a = psutil.Process(worker_a.warm_pid)
    await wait_for(lambda: _ready_spare(pool, worker_a.pid), "the next spare (forked)")
    second = _ready_spare(pool, worker_a.pid)
    assert second is not None
    assert isinstance(final(await collect(daemon, b, "hello B")), RunDone)
    assert pool.find(b) is second
    await wait_for(lambda: _ready_spare(pool, second.pid), "A's worker as the spare")
    assert pool.spare is worker_a and pool.find(a) is None
    await asyncio.to_thread(claude_a.wait, 10)  # (closed before it said recycled)
    assert not claude_a.is_running()
    server = getattr(pool.spawner, "server", None)
    assert server is not None
    workers = {p.pid for p in psutil.Process(server.pid).children()}
    assert workers == {worker_a.pid, second.pid}  # no third one was forked
    events = await collect(daemon, c, "hello C")
    assert isinstance(final(events), RunDone) and started(events)[0].resumed is False
    assert pool.find(c) is worker_a and worker_a.key == c
    again = await collect(daemon, a, "A again")
    assert isinstance(final(again), RunDone) and started(again)[0].resumed is True
    assert pool.crash_count == 0


async def test_sigterm_ends_a_recycled_spare_and_aborts_a_serving_workers_run(
    make_project: ProjectFactory,
    start_supervisor: SupervisorStarter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The worker's one SIGTERM handler (installed once per process) follows its role.
    1. A's worker is recycled into the spare (maxIdleWorkers=1), which starts a claude
       ahead; SIGTERM it.
    2. Key D's run hangs; SIGTERM D's worker.
    Result: the spare closes its claude and dies of the signal, as one never configured
    does; D's worker kills
    its run and exits by itself (rc 0: it said bye, so the pool did not kill it), and D's
    message is answered with a failure, not lost."""
    daemon, pool = await _one_idle_worker_kept(make_project, start_supervisor, monkeypatch)
    a, b, d = (SessionKey(f"97{i}100000000000000") for i in (1, 2, 3))
    assert isinstance(final(await collect(daemon, a, "hello A")), RunDone)
    worker_a = pool.find(a)
    assert worker_a is not None
    await wait_for(lambda: _ready_spare(pool, worker_a.pid), "the next spare (forked)")
    assert isinstance(final(await collect(daemon, b, "hello B")), RunDone)
    await wait_for(lambda: pool.spare is worker_a and worker_a.channel, "A's worker as the spare")
    await wait_for(lambda: worker_a.warm_pid, "the claude it started ahead")
    ahead = psutil.Process(worker_a.warm_pid)
    os.kill(worker_a.pid, signal.SIGTERM)
    await asyncio.wait_for(worker_a.exited.wait(), 10)
    assert worker_a.process is not None and worker_a.process.returncode == -signal.SIGTERM
    await asyncio.to_thread(ahead.wait, 10)  # closed before the spare died, not orphaned
    await wait_for(lambda: _ready_spare(pool, worker_a.pid), "a new spare")
    hung = asyncio.create_task(collect(daemon, d, "HANG"))
    await wait_for(
        lambda: (h := pool.find(d)) is not None and pool.running_on(h) is not None, "D running"
    )
    worker_d = pool.find(d)
    assert worker_d is not None
    os.kill(worker_d.pid, signal.SIGTERM)
    outcome = final(await asyncio.wait_for(hung, 20))
    assert isinstance(outcome, RunFailed)
    await asyncio.wait_for(worker_d.exited.wait(), 10)
    # it said bye: the pool let it exit by itself (0), not killed it (-9)
    assert worker_d.process is not None and worker_d.process.returncode == 0


async def test_a_stopping_worker_that_closed_its_connection_but_lingers_is_killed(
    make_project: ProjectFactory,
    start_supervisor: SupervisorStarter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A worker that said bye is left to exit by itself, but not forever.
    1. A's worker serves a message, then is frozen (SIGSTOP) and marked stopping, as after
       its bye; its connection is cut.
    Result: it is killed within EXIT_AFTER_BYE_S, and A's next message gets a new worker."""
    _pool_timings(monkeypatch, EXIT_AFTER_BYE_S=0.2)
    daemon = await start_supervisor(make_project())
    a = SessionKey("974100000000000000")
    pool, worker = await _connected_worker(daemon, a)
    assert worker.channel is not None
    os.kill(worker.pid, signal.SIGSTOP)
    worker.state = "stopping"
    worker.channel.writer.transport.abort()
    await asyncio.wait_for(worker.exited.wait(), 10)
    assert worker.process is not None and worker.process.returncode == -signal.SIGKILL
    events = await collect(daemon, a, "A again")
    assert isinstance(final(events), RunDone) and pool.find(a) is not worker


async def test_a_worker_that_dies_while_becoming_the_spare_is_replaced_by_a_fork(
    make_project: ProjectFactory,
    start_supervisor: SupervisorStarter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An idle worker is told to recycle while it is frozen (SIGSTOP), then killed.
    Result: no spare is forked while it recycles; once it is dead one is, and it serves
    the next new key."""
    _pool_timings(monkeypatch, SPARE_REFILL_DELAY_S=0.05)
    daemon = await start_supervisor(make_project())
    assert daemon.pool is not None
    pool = daemon.pool
    await wait_for(lambda: _ready_spare(pool), "the first spare")
    key = SessionKey("963500000000000000")
    assert isinstance(final(await collect(daemon, key, "hello")), RunDone)
    worker = pool.find(key)
    assert worker is not None
    await wait_for(lambda: _ready_spare(pool, worker.pid), "the next spare")
    pool._drop_spare("the test wants none")
    os.kill(worker.pid, signal.SIGSTOP)
    pool._recycle(worker)
    pool._refill_spare()
    assert pool.spare is None and pool.recycling is worker  # nothing forked meanwhile
    os.kill(worker.pid, signal.SIGKILL)
    await worker.exited.wait()
    await wait_for(lambda: _ready_spare(pool, worker.pid), "a forked spare")
    other = SessionKey("963600000000000000")
    assert isinstance(final(await collect(daemon, other, "again")), RunDone)
    assert pool.recycling is None


async def test_a_spare_configured_before_a_reload_runs_on_the_reloaded_settings(
    make_project,  # type: ignore[no-untyped-def]
) -> None:
    """1. The spare is forked, has taken its settings (model-a) at its hello and started
       its claude ahead (runner.prestartClaude).
    2. settings.json says model-b; reload.
    3. A new key's first message.
    Result: the reload reaches the spare at once; it closes its model-a claude and starts
    one on model-b, which answers the message (no start on the message's path), even with
    maxWarmSessions 1: the spare's own claude leaves room for its replacement."""
    paths = make_project(model="model-a", limits={"maxWarmSessions": 1})
    sup = await started_supervisor(paths)
    try:
        assert sup.pool is not None
        pool = sup.pool
        await wait_for(lambda: _spare_with_claude(pool), "a spare's claude")
        spare = _ready_spare(pool)
        assert spare is not None and spare.settings_sent is pool.settings_wire
        old_claude = psutil.Process(spare.warm_pid)
        good = json.loads(paths.settings_file.read_text())
        paths.settings_file.write_text(json.dumps({**good, "model": "model-b"}))
        applied, _message = await sup.reload()
        assert applied and spare.settings_sent is pool.settings_wire
        await wait_for(lambda: spare.warm_pid not in (0, old_claude.pid), "its new claude")
        await asyncio.to_thread(old_claude.wait, 10)
        new_claude = spare.warm_pid
        key = SessionKey("964000000000000000")
        events = await collect(sup, key, "ECHO_ARGV")
        assert _model_of(final(events)) == "model-b"
        assert pool.find(key) is spare and started(events)[0].pid == new_claude
    finally:
        await sup.shutdown()


async def test_a_reload_that_lowers_max_workers_to_the_keys_workers_ends_the_spare(
    make_project,  # type: ignore[no-untyped-def]
) -> None:
    """maxWorkers=2: one key's worker and the spare fill it.
    1. A reload keeps maxWorkers at 2: the spare stays.
    2. A reload lowers it to 1: the spare is killed and exits (it held nothing); the
       key's worker stays and answers."""
    paths = make_project(limits={"maxWorkers": 2})
    sup = await started_supervisor(paths)
    try:
        assert sup.pool is not None
        pool = sup.pool
        key = SessionKey("966000000000000000")
        assert isinstance(final(await collect(sup, key, "one")), RunDone)
        worker = pool.find(key)
        await wait_for(lambda: _ready_spare(pool, worker.pid if worker else 0), "a spare")
        spare = _ready_spare(pool)
        assert spare is not None and spare is not worker
        settings = json.loads(paths.settings_file.read_text())
        applied, _message = await sup.reload()
        assert applied and pool.spare is spare
        settings["limits"]["maxWorkers"] = 1
        paths.settings_file.write_text(json.dumps(settings))
        applied, _message = await sup.reload()
        assert applied and pool.spare is None
        async with asyncio.timeout(10):
            await spare.exited.wait()
        assert pool.find(key) is worker and worker is not None and worker.state == "ready"
        assert isinstance(final(await collect(sup, key, "two")), RunDone)
    finally:
        await sup.shutdown()


async def test_a_message_with_nothing_ahead_gets_its_slot_with_its_run(
    daemon: Supervisor,
) -> None:
    """1. A key's message, its worker idle and a slot free.
    2. A message sent while another of the same key runs.
    Result: the first never asks for a slot (it is granted with the run, saving a round
    trip); the second asks (acquire) when its turn comes, as the cap requires."""
    assert daemon.pool is not None
    pool = daemon.pool
    asked: list[str] = []
    acquire = pool.slots.acquire

    def counting_acquire(handle: WorkerHandle, msg_id: str) -> int:
        asked.append(msg_id)
        return acquire(handle, msg_id)

    pool.slots.acquire = counting_acquire  # type: ignore[method-assign]
    key = SessionKey("965000000000000000")
    marked: list[tuple[str, bool]] = []  # what the ledger was told at accept
    accept = daemon.ledger.accept

    def noting_accept(item: PendingMessage, *, starts_at_once: bool = False) -> None:
        marked.append((item.prompt, starts_at_once))
        accept(item, starts_at_once=starts_at_once)

    daemon.ledger.accept = noting_accept  # type: ignore[method-assign]
    assert isinstance(final(await collect(daemon, key, "its worker is forked")), RunDone)
    events = [
        e async for e in daemon.submit(key, "alone", reply_to=ReplyTo("965000000000000000", "1"))
    ]
    assert isinstance(final(events), RunDone)
    assert asked == []
    assert marked == [("alone", True)]  # written as started with the message itself
    running = asyncio.Event()

    def note(event: RunEvent) -> None:
        if isinstance(event, RunStarted):
            running.set()

    slow = asyncio.create_task(collect(daemon, key, "slow SLEEP:1", on_event=note))
    await running.wait()
    behind = final(
        [e async for e in daemon.submit(key, "behind", reply_to=ReplyTo("965000000000000000", "2"))]
    )
    assert isinstance(final(await slow), RunDone) and isinstance(behind, RunDone)
    assert asked == [behind.msg_id]
    assert marked == [("alone", True), ("behind", False)]  # marked when it really starts


async def freeze_while_running(
    sup: Supervisor, key: SessionKey
) -> tuple[asyncio.Task[list[RunEvent]], RunStarted, WorkerHandle]:
    """Send ``key`` a message that runs a second; once it started, freeze (SIGSTOP) its
    worker. Returns the message's task, its start, and the frozen worker's handle."""
    first: list[RunStarted] = []
    task = asyncio.create_task(
        collect(
            sup,
            key,
            "frozen SLEEP:1",
            lambda e: first.append(e) if isinstance(e, RunStarted) else None,
        )
    )
    await wait_for(lambda: bool(first), "run started")
    assert sup.pool is not None
    handle = sup.pool.find(key)
    assert handle is not None
    os.kill(handle.pid, signal.SIGSTOP)
    return task, first[0], handle


async def test_a_worker_that_stops_answering_is_replaced(
    make_project,
    monkeypatch: pytest.MonkeyPatch,  # type: ignore[no-untyped-def]
) -> None:
    """1. A thread's worker is running a message when it freezes (SIGSTOP).
    2. It misses its pings.
    Result: the pool kills it and its claude process group, and the message is run again
    on a new worker and answered."""
    _pool_timings(monkeypatch, PING_INTERVAL_S=0.1, PING_TIMEOUT_S=0.6)
    paths = make_project()
    sup = await started_supervisor(paths)
    try:
        key = SessionKey("970000000000000000")
        task, run, handle = await freeze_while_running(sup, key)
        claude_pid = run.pid
        events = await task
        assert isinstance(final(events), RunDone)
        assert sup.pool.crash_count == 1
        assert not _alive(claude_pid)  # the frozen worker's claude was killed with it
        assert sup.pool.find(key) is not None and sup.pool.find(key).pid != handle.pid  # type: ignore[union-attr]
    finally:
        await sup.shutdown()


async def test_an_idle_worker_is_pinged_less_often_and_still_found_hung(
    make_project: ProjectFactory,
    start_supervisor: SupervisorStarter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Health checks every 0.05 s, idle workers every 0.5 s, hung after 0.3 s unanswered.
    1. A thread's worker answers its message and sits idle for ten health checks.
    2. It freezes (SIGSTOP) while idle.
    Result: it got at most two of those ten pings (an idle worker costs next to no CPU),
    yet the frozen one is found hung and killed; the thread's next message is answered by
    a new worker."""
    _pool_timings(monkeypatch, PING_INTERVAL_S=0.05, IDLE_PING_INTERVAL_S=0.5, PING_TIMEOUT_S=0.3)
    sup = await start_supervisor(make_project())
    key = SessionKey("971000000000000000")
    pool, handle = await _connected_worker(sup, key)
    assert handle.channel is not None
    pings: list[float] = []
    send = handle.channel.send_nowait

    def counting(frame: ipc.Message) -> None:
        if frame.get("type") == "ping":
            pings.append(time.monotonic())
        send(frame)

    handle.channel.send_nowait = counting  # type: ignore[method-assign]
    checks = pool.last_health_check
    await wait_for(lambda: pool.last_health_check > checks + 0.45, "ten health checks")
    assert len(pings) <= 2
    os.kill(handle.pid, signal.SIGSTOP)
    await wait_for(lambda: handle.exited.is_set(), "the frozen idle worker killed")
    assert handle.hung
    assert isinstance(final(await collect(sup, key, "again")), RunDone)
    assert pool.find(key) is not handle


async def test_an_api_429_does_not_pause_other_threads(make_project) -> None:  # type: ignore[no-untyped-def]
    """Thread A's run gets a plain API 429 (no usage-limit text, no reset time); with a
    hard timeout too short for the runner's backoff it fails at once. Result: A is told
    the API was busy (not "usage limit"), the pool is not paused, and thread B answers."""

    paths = make_project(runner={"hardTimeoutSeconds": 10})
    sup = await started_supervisor(paths)
    try:
        a, b = SessionKey("981000000000000001"), SessionKey("981000000000000002")
        failed = final(await collect(sup, a, "ERROR:api429"))
        assert isinstance(failed, RunFailed) and failed.reason == "error"
        assert "usage limit" not in failed.message and "rate limited" in failed.message
        assert sup.rate_limited_until is None
        b_events = await asyncio.wait_for(collect(sup, b, "hello"), 20)
        assert isinstance(final(b_events), RunDone)
        assert not [e for e in b_events if isinstance(e, RunQueued) and e.resets_at]
    finally:
        await sup.shutdown()


async def test_a_usage_limit_holds_the_work_and_runs_it_at_the_reset(daemon: Supervisor) -> None:
    """1. Thread A's run is refused by Claude's usage limit ("resets 3pm (UTC)").
    2. Thread B sends a message meanwhile.
    Result: neither fails: both wait, told when the limit resets, and no claude starts for
    B; at the reset A runs again (first, at the head of its queue) and B runs; both answer."""
    from datetime import timedelta

    a, b = SessionKey("980000000000000001"), SessionKey("980000000000000002")
    a_events: list[RunEvent] = []
    b_events: list[RunEvent] = []
    ta = asyncio.create_task(collect(daemon, a, "ERROR:ratelimit_once please", a_events.append))
    await wait_for(
        lambda: any(isinstance(e, RunQueued) and e.resets_at for e in a_events), "A waits"
    )
    until = daemon.rate_limited_until
    assert until is not None and until.hour == 15
    assert "usage limit until 15:00" in daemon.status_line()
    tb = asyncio.create_task(collect(daemon, b, "hello", b_events.append))
    await wait_for(
        lambda: any(isinstance(e, RunQueued) and e.resets_at for e in b_events), "B waits"
    )
    assert not started(b_events) and not ta.done()

    assert daemon.pool is not None
    daemon.pool.now = lambda: until + timedelta(seconds=1)  # the limit resets
    assert daemon.rate_limit_holds() is None
    done_a, done_b = final(await ta), final(await tb)
    assert isinstance(done_a, RunDone) and isinstance(done_b, RunDone)
    assert len(started(a_events)) >= 2  # refused once, then run again at the reset
    assert not [e for e in a_events if isinstance(e, RunFailed)]
    assert "usage limit" not in daemon.status_line()


async def test_if_the_fork_server_dies_workers_start_by_exec(daemon: Supervisor) -> None:
    """The fork server is killed; the next new thread still gets a worker (by exec) and an
    answer, and existing workers are unaffected."""
    from claudeclaw.spawn import ExecSpawner, ForkServerSpawner

    assert daemon.pool is not None
    before = final(await collect(daemon, SessionKey("990000000000000001"), "before"))
    assert isinstance(before, RunDone)
    spawner = daemon.pool.spawner
    assert isinstance(spawner, ForkServerSpawner) and spawner.server is not None
    spawner.server.kill()
    await spawner.server.wait()
    await wait_for(lambda: spawner.broken, "the pool noticed")
    after = final(await collect(daemon, SessionKey("990000000000000002"), "after"))
    assert isinstance(after, RunDone)  # (on the spare forked before, if there was one)
    assert daemon.pool.spare is None  # no new spare without the fork server
    later = final(await collect(daemon, SessionKey("990000000000000003"), "later"))
    assert isinstance(later, RunDone)
    assert isinstance(daemon.pool.spawner, ExecSpawner)
    again = final(await collect(daemon, SessionKey("990000000000000001"), "again"))
    assert isinstance(again, RunDone) and again.reply.startswith("FAKE-REPLY turn=2")


async def test_a_worker_that_cannot_start_fails_its_message_instead_of_looping(
    daemon: Supervisor,
) -> None:
    """Workers for a key die before saying hello (here: they are pointed at a socket that
    does not exist). Result: after a few attempts the message fails with a clear reason;
    the daemon does not respawn forever and keeps serving other keys."""
    assert daemon.pool is not None
    pool = daemon.pool
    await without_spare(pool)  # the key's own workers are the ones that cannot start
    original = pool.spawner.spawn

    async def broken(args, env):  # type: ignore[no-untyped-def]
        args = list(args)
        args[args.index("--socket") + 1] = "/nonexistent/workers.sock"
        return await original(args, env)

    pool.spawner.spawn = broken  # type: ignore[method-assign]
    failed = final(await collect(daemon, SessionKey("990000000000000003"), "doomed"))
    assert isinstance(failed, RunFailed) and failed.reason == "spawn"
    assert "cannot start" in failed.message
    assert pool.boot_failures[SessionKey("990000000000000003")] == 3
    pool.spawner.spawn = original  # type: ignore[method-assign]
    fine = final(await collect(daemon, SessionKey("990000000000000004"), "fine"))
    assert isinstance(fine, RunDone)


async def test_a_second_stop_signal_stops_at_once(daemon_process, make_project) -> None:  # type: ignore[no-untyped-def]
    """1. `claudeclaw run` (grace 60 s) runs a claude that ignores SIGTERM.
    2. SIGTERM: it starts a graceful stop and waits for the run.
    3. SIGTERM again.
    Result: it stops now (well inside the grace period), exit 0, nothing of ours left."""
    paths = make_project(limits={"shutdownGraceSeconds": 60})
    proc = daemon_process(paths)
    await proc.wait_ready()
    sender, _claude_pid = await send_until_started(paths, "920000000000000000", "HANG IGNORE_TERM")
    proc.signal(signal.SIGTERM)
    await wait_for(lambda: "daemon.stopping" in proc.log.read_text(), "graceful stop begun")
    proc.signal(signal.SIGTERM)
    assert await proc.wait_exit(within=15) == 0
    assert "daemon.forced_stop" in proc.log.read_text()
    await asyncio.gather(sender, return_exceptions=True)
    tag = project_tag(str(paths.root))
    left = await asyncio.to_thread(
        lambda: [p.pid for p in psutil.process_iter() if _tagged(p, tag)]
    )
    assert left == []


async def test_a_run_retried_after_the_limit_keeps_its_place_ahead_of_the_queue(
    daemon: Supervisor,
) -> None:
    """1. In one thread, message 1 is refused by the usage limit while message 2 waits
       behind it (the worker puts 1 back at its head and asks for a slot for it, not 2).
    2. The limit resets.
    Result: message 1 runs first, then message 2; neither is lost."""
    from datetime import timedelta

    key = SessionKey("985000000000000000")
    timeline = record_order(daemon)
    one: list[RunEvent] = []
    t1 = asyncio.create_task(collect(daemon, key, "ERROR:ratelimit_once first", one.append))
    t2 = asyncio.create_task(collect(daemon, key, "second"))
    await wait_for(lambda: any(isinstance(e, RunQueued) and e.resets_at for e in one), "1 waits")
    assert daemon.pool is not None
    slots = daemon.pool.slots  # (its ``waiting`` deque is replaced on release: read it fresh)
    await wait_for(  # the worker put 1 back at the head and asks for a slot for it
        lambda: [m for _, m in slots.waiting] == [one[0].msg_id],
        "1 asks again, ahead of 2",
    )
    assert daemon.rate_limited_until is not None
    reset = daemon.rate_limited_until
    daemon.pool.now = lambda: reset + timedelta(seconds=1)
    assert daemon.rate_limit_holds() is None
    first, second = final(await t1), final(await t2)
    assert isinstance(first, RunDone) and isinstance(second, RunDone)
    assert first.reply.endswith("first") and second.reply.endswith("second")
    ends = [msg for kind, msg in timeline if kind == "end"]
    assert ends[-2:] == [first.msg_id, second.msg_id]


async def test_coalescing_answers_what_piled_up_in_one_run(make_project) -> None:  # type: ignore[no-untyped-def]
    """runner.coalesceQueuedMessages: while message 1 runs, messages 2 and 3 arrive.
    Result: 2 and 3 are answered by one run that got both texts; 3 ends merged into 2
    (no reply of its own, but it saw the run start); the session counts two turns."""

    paths = make_project(runner={"coalesceQueuedMessages": True})
    sup = await started_supervisor(paths)
    try:
        key = SessionKey("940000000000000000")
        one: list[RunEvent] = []
        t1 = asyncio.create_task(collect(sup, key, "one SLEEP:0.5", one.append))
        await wait_for(lambda: bool(started(one)), "1 running")
        t2 = asyncio.create_task(collect(sup, key, "two"))
        t3 = asyncio.create_task(collect(sup, key, "three"))
        assert sup.pool is not None
        await wait_for(lambda: len(sup.pool.held_by(sup.pool.find(key))) == 3, "2 and 3 queued")  # type: ignore[union-attr]
        r1, r2, r3 = await asyncio.gather(t1, t2, t3)
        d1, d2, d3 = final(r1), final(r2), final(r3)
        assert isinstance(d1, RunDone) and isinstance(d2, RunDone) and isinstance(d3, RunDone)
        assert d1.reply == "FAKE-REPLY turn=1 last=one SLEEP:0.5"
        assert d2.reply == "FAKE-REPLY turn=2 last=two\n\nthree"
        assert d3.reply == "" and d3.merged_into == d2.msg_id
        assert started(r3) and started(r3)[0].pid == started(r2)[0].pid
        await sup._writes.flush()
        record = await asyncio.to_thread(sup.registry.get, key)
        assert record is not None and record.turn_count == 2
    finally:
        await sup.shutdown()


async def test_coalescing_never_merges_a_command(make_project) -> None:  # type: ignore[no-untyped-def]
    """With coalescing on, "two", "/compact" and "three" pile up behind a busy run.
    Result: "/compact" runs alone (its own reply, nothing merged into it or it into
    another), so "compact complete" means what it says; "two" and "three" each run
    separately (a command stands between them)."""

    paths = make_project(runner={"coalesceQueuedMessages": True})
    sup = await started_supervisor(paths)
    try:
        key = SessionKey("940000000000000001")
        one: list[RunEvent] = []
        t1 = asyncio.create_task(collect(sup, key, "one SLEEP:0.5", one.append))
        await wait_for(lambda: bool(started(one)), "1 running")
        t2 = asyncio.create_task(collect(sup, key, "two"))
        await wait_for(lambda: len(sup.pool.held_by(sup.pool.find(key))) == 2, "2 queued")  # type: ignore[union-attr]
        tc = asyncio.create_task(collect(sup, key, "/compact"))
        await wait_for(lambda: len(sup.pool.held_by(sup.pool.find(key))) == 3, "compact queued")  # type: ignore[union-attr]
        t3 = asyncio.create_task(collect(sup, key, "three"))
        await wait_for(lambda: len(sup.pool.held_by(sup.pool.find(key))) == 4, "3 queued")  # type: ignore[union-attr]
        results = await asyncio.gather(t1, t2, tc, t3)
        d2, dc, d3 = (final(r) for r in results[1:])
        assert isinstance(d2, RunDone) and isinstance(dc, RunDone) and isinstance(d3, RunDone)
        assert not d2.merged_into and not dc.merged_into and not d3.merged_into
        assert d2.reply.endswith("last=two")
        assert dc.reply.endswith("last=/compact")
        assert d3.reply.endswith("last=three")
    finally:
        await sup.shutdown()


async def test_a_prompt_over_the_frame_limit_is_refused_where_it_enters(
    daemon: Supervisor,
) -> None:
    """A 4 MiB prompt (JSON-escaped emoji count 12 bytes each) can never reach a worker.
    Result: one clear refusal at once; no worker is started (it used to crash-loop), the
    session's next message is answered."""
    key = SessionKey("982000000000000001")
    events = await collect(daemon, key, "😀" * 400_000)
    failed = final(events)
    assert isinstance(failed, RunFailed) and failed.reason == "error"
    assert "too large" in failed.message and "file attachment" in failed.message
    assert daemon.pool is not None and daemon.pool.find(key) is None
    assert isinstance(final(await collect(daemon, key, "small")), RunDone)


async def test_a_reply_over_the_frame_limit_arrives_whole_as_a_file(daemon: Supervisor) -> None:
    """Claude answers 5 MB (more than a frame holds). Result: the run ends (it used to
    hang, holding its slot), the frame carries the start and the path of a 0600 file that
    holds all of it; the next message runs."""
    key = SessionKey("982000000000000002")
    done = final(await collect(daemon, key, "BIGLINE:5000000"))
    assert isinstance(done, RunDone) and done.reply_file
    path = daemon.paths.replies_dir / f"{done.msg_id}.md"
    assert done.reply_file == str(path) and done.reply == "x" * 4000
    assert path.read_text() == "x" * 5_000_000
    assert (path.stat().st_mode & 0o777) == 0o600
    assert isinstance(final(await collect(daemon, key, "next")), RunDone)


async def test_a_failing_state_write_does_not_stop_replies(
    daemon: Supervisor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The session files cannot be written (a full disk, say): the error is logged, the
    reply still arrives and the session is still resumed (the daemon knows it, and its
    changes journal keeps it); the next write works again and brings the files up to
    date."""
    calls = {"n": 0}
    original = daemon.registry.apply

    def failing(changes):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(daemon.registry, "apply", failing)
    key = SessionKey("950000000000000009")
    done = final(await collect(daemon, key, "disk full"))
    assert isinstance(done, RunDone)
    with capture_logs() as logs:
        await daemon._writes.flush()  # the write that fails
    assert calls["n"] >= 1
    assert [e["error"] for e in logs if e["event"] == "sessions.write_failed"]
    assert daemon.paths.session_changes_file.read_text().count(key) == 1
    monkeypatch.setattr(daemon.registry, "apply", original)
    again = final(await collect(daemon, key, "disk ok"))
    assert isinstance(again, RunDone) and "turn=2" in again.reply
    await daemon._writes.flush()
    assert await asyncio.to_thread(daemon.registry.get, key) is not None
    assert daemon.paths.session_changes_file.read_text() == ""


def _model_of(done: RunEvent) -> str:
    """The --model a run's claude was started with (the fake echoes its argv)."""
    assert isinstance(done, RunDone), done
    argv = json.loads(done.reply)
    return str(argv[argv.index("--model") + 1])


async def test_workers_run_on_the_supervisors_settings_not_the_file(make_project) -> None:  # type: ignore[no-untyped-def]
    """1. The daemon starts with model-a; thread A's worker runs.
    2. settings.json is edited to model-b (valid) without reload: a new thread B's worker
       and the old thread A both still run model-a (no split between old and new workers).
    3. settings.json is made invalid without reload: a new thread C's worker still boots
       and runs, on model-a.
    4. A valid model-c plus reload: every worker, old and new, runs model-c."""

    paths = make_project(model="model-a")
    sup = await started_supervisor(paths)
    try:
        thread_a, thread_b, thread_c = (SessionKey(f"99100000000000000{i}") for i in range(3))
        assert _model_of(final(await collect(sup, thread_a, "ECHO_ARGV"))) == "model-a"

        good = json.loads(paths.settings_file.read_text())
        paths.settings_file.write_text(json.dumps({**good, "model": "model-b"}))
        assert _model_of(final(await collect(sup, thread_b, "ECHO_ARGV"))) == "model-a"
        assert _model_of(final(await collect(sup, thread_a, "ECHO_ARGV"))) == "model-a"

        paths.settings_file.write_text('{"model": "model-b", "limits": {"maxWorkers": "many"')
        assert _model_of(final(await collect(sup, thread_c, "ECHO_ARGV"))) == "model-a"
        assert sup.pool is not None and sup.pool.crash_count == 0

        paths.settings_file.write_text(json.dumps({**good, "model": "model-c"}))
        applied, _message = await sup.reload()
        assert applied
        for key in (thread_a, thread_b, thread_c, SessionKey("991000000000000009")):
            assert _model_of(final(await collect(sup, key, "ECHO_ARGV"))) == "model-c"
    finally:
        await sup.shutdown()


async def test_a_hung_worker_writes_its_stacks_to_the_log_before_it_is_killed(
    make_project,  # type: ignore[no-untyped-def]
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """1. A thread's worker freezes (SIGSTOP) while its message runs and misses its pings.
    2. The pool sends it the stack-dump signal; the worker is let go on (SIGCONT) so it
       can act on it, though its loop is still stuck behind the missed pings.
    Result: faulthandler wrote the worker's stacks to its log (stderr) before the kill,
    and the message is answered by a new worker."""
    _pool_timings(monkeypatch, PING_INTERVAL_S=0.1, PING_TIMEOUT_S=0.6, DUMP_WAIT_S=3.0)
    paths = make_project()
    sup = await started_supervisor(paths)
    try:
        key = SessionKey("992000000000000000")
        task, _, handle = await freeze_while_running(sup, key)
        await wait_for(lambda: handle.hung, "the pool found it hung")
        os.kill(handle.pid, signal.SIGCONT)  # the dump signal is delivered now
        await wait_for(lambda: handle.exited.is_set(), "the hung worker was killed")
        assert isinstance(final(await task), RunDone)
        err = capfd.readouterr().err
        assert "most recent call first" in err
        assert "claudeclaw/worker.py" in err  # written by the worker: before SIGKILL
    finally:
        await sup.shutdown()


async def test_debug_hang_exists_only_behind_the_test_switch(
    daemon: Supervisor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The production control handler has no test hooks; CLAUDECLAW_TEST_HOOKS=1 (set only
    by test harnesses) adds debug.hang."""
    with pytest.raises(IpcError, match=r"unknown request 'debug\.hang'"):
        await control.request(daemon.paths, {"type": "debug.hang", "seconds": 0})
    monkeypatch.setenv("CLAUDECLAW_TEST_HOOKS", "1")
    hooked = Supervisor(daemon.paths, daemon.settings)
    assert "debug.hang" in hooked.requests._handlers
    assert "debug.hang" not in daemon.requests._handlers


async def test_an_api_key_credential_reaches_claude_and_no_log(make_project, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Issue 12.7: ``$CREDENTIALS_DIRECTORY/anthropic-api-key`` becomes claude's
    ANTHROPIC_API_KEY (a Console key, sent as x-api-key), and is a registered secret."""
    from structlog.testing import capture_logs

    from claudeclaw.redaction import scrub

    key = "sk-ant-api03-" + "k" * 40
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "anthropic-api-key").write_text(key + "\n")
    paths = make_project()
    os.environ["CREDENTIALS_DIRECTORY"] = str(creds)
    try:
        sup = await started_supervisor(paths)
    finally:
        del os.environ["CREDENTIALS_DIRECTORY"]
    try:
        with capture_logs():
            events = await collect(sup, SessionKey("77"), "ECHO_ENV")
        env = json.loads(events[-1].reply)  # type: ignore[union-attr]
        assert env["ANTHROPIC_API_KEY"] == key
        assert "CREDENTIALS_DIRECTORY" not in env
        assert scrub(f"x {key} y") == "x [redacted] y"
    finally:
        await sup.shutdown()


async def test_running_as_root_is_warned_at_start(make_project, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Issue 12.10: as root (outside a sandbox) every run would fail: say so at start."""
    from structlog.testing import capture_logs

    from claudeclaw import supervisor as supervisor_module

    paths = make_project()
    monkeypatch.delenv("IS_SANDBOX", raising=False)
    for uid, expected in ((0, True), (1000, False)):
        monkeypatch.setattr(supervisor_module, "_euid", lambda uid=uid: uid)
        sup = new_supervisor(paths)
        with capture_logs() as logs:
            await sup.startup()
        await sup.shutdown()
        warned = [e for e in logs if e["event"] == "daemon.running_as_root"]
        assert bool(warned) is expected, logs
        if warned:
            assert warned[0]["log_level"] == "warning" and "unprivileged" in warned[0]["hint"]


def test_the_worker_parser_is_built_once_so_forked_workers_reuse_it() -> None:
    """The fork server builds the worker's argument parser before it forks: each forked
    worker only parses its arguments with it (building one costs ~1.5 ms per new thread)."""
    from claudeclaw import worker

    parser = worker.build_parser()
    assert worker.build_parser() is parser
    args = parser.parse_args(["--project", "/p", "--key", "123", "--socket", "/s", "--nice", "5"])
    assert (args.project, args.key, args.socket, args.nice, args.log_level) == (
        "/p",
        "123",
        "/s",
        5,
        "info",
    )
