"""Warm sessions through the daemon: /stop interrupts, busyPolicy, maxWarmSessions, status.

A real in-process supervisor with real workers running the fake ``claude`` in duplex mode.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from claudeclaw.model import RunDone, RunEvent, RunFailed, RunProgress, RunQueued, SessionKey
from claudeclaw.supervisor import Supervisor
from tests.fixtures_daemon import (
    ProjectFactory,
    SupervisorStarter,
    collect,
    final,
    started,
    wait_for,
)

Starter = Callable[..., Awaitable[Supervisor]]


@pytest.fixture
def start(make_project: ProjectFactory, start_supervisor: SupervisorStarter) -> Starter:
    """``await start(**settings_overrides)``: a daemon on a project with those settings,
    shut down after the test."""

    async def start(**overrides: Any) -> Supervisor:
        return await start_supervisor(make_project(**overrides))

    return start


async def claude_status(sup: Supervisor, key: SessionKey) -> tuple[str, int, int]:
    assert sup.pool is not None
    await sup.pool.refresh_stats()
    for worker in sup.pool.status():
        if worker.key == key:
            return worker.claude_mode, worker.claude_pid, worker.claude_rss_bytes
    return "", 0, 0


async def test_stop_interrupts_the_turn_and_the_session_stays_warm(daemon: Supervisor) -> None:
    """1. A message is answered (a warm claude now holds the session).
    2. A long one is stopped (what /stop and `claudeclaw cancel` do).
    Result: it ends "Stopped.", the same claude answers the next message in the same
    session, and status shows it warm with its RSS."""
    key = SessionKey("510000000000000001")
    first = await collect(daemon, key, "one")
    done1 = final(first)
    assert isinstance(done1, RunDone)
    pid = started(first)[0].pid
    mode, claude_pid, rss = await claude_status(daemon, key)
    assert (mode, claude_pid) == ("warm", pid) and rss > 0

    long: list[RunEvent] = []
    task = asyncio.create_task(collect(daemon, key, "SLEEP:60", long.append))
    await wait_for(lambda: bool(started(long)), "the long turn started")
    assert await daemon.cancel(key)
    stopped = final(await task)
    assert isinstance(stopped, RunFailed) and stopped.reason == "cancelled"
    assert stopped.message == "Stopped."

    after = await collect(daemon, key, "after")
    done = final(after)
    assert isinstance(done, RunDone) and done.reply == "FAKE-REPLY turn=2 last=after"
    assert done.session_id == done1.session_id
    assert [s.pid for s in started(long) + started(after)] == [pid, pid]


async def test_steer_passes_a_message_into_the_running_turn(start: Starter) -> None:
    """runner.busyPolicy "steer": message 2 arrives while message 1's tool runs.
    Result: 2 is marked steered at once, the turn's reply answers both, and 2 ends merged
    into 1 (no reply of its own)."""
    sup = await start(runner={"busyPolicy": "steer"})
    key = SessionKey("520000000000000001")
    await collect(sup, key, "warm up")
    one: list[RunEvent] = []
    t1 = asyncio.create_task(collect(sup, key, 'TOOL:Bash:{"command": "x"} SLEEP:3', one.append))
    await wait_for(lambda: bool(started(one)), "1 running")
    two = await collect(sup, key, "two")
    d1, d2 = final(await t1), final(two)
    assert isinstance(d1, RunDone) and isinstance(d2, RunDone)
    assert d1.reply.endswith("steered=two")
    assert d2.merged_into == d1.msg_id and d2.reply == ""
    assert [s.steered for s in started(two)] == [True]
    assert [e.position for e in two if isinstance(e, RunQueued)] == [0]  # never behind 1


async def test_a_slash_command_is_never_steered(start: Starter) -> None:
    """busyPolicy "steer": a /command arriving mid-turn queues and runs on its own."""
    sup = await start(runner={"busyPolicy": "steer"})
    key = SessionKey("530000000000000001")
    one: list[RunEvent] = []
    t1 = asyncio.create_task(collect(sup, key, 'TOOL:Bash:{"command": "x"} SLEEP:1', one.append))
    await wait_for(lambda: bool(started(one)), "1 running")
    cmd = await collect(sup, key, "/compact")
    d1, dc = final(await t1), final(cmd)
    assert isinstance(d1, RunDone) and "steered" not in d1.reply
    assert isinstance(dc, RunDone) and dc.reply == "FAKE-REPLY turn=2 last=/compact"
    assert [s.steered for s in started(cmd)] == [False]


async def test_a_slash_command_is_never_merged(start: Starter) -> None:
    """busyPolicy "coalesce": a /command ends the batch of what piled up, and runs alone."""
    sup = await start(runner={"busyPolicy": "coalesce"})
    key = SessionKey("530000000000000002")
    one: list[RunEvent] = []
    t1 = asyncio.create_task(collect(sup, key, "one SLEEP:0.5", one.append))
    await wait_for(lambda: bool(started(one)), "1 running")
    rest = [asyncio.create_task(collect(sup, key, text)) for text in ("two", "/compact", "four")]
    assert sup.pool is not None
    await wait_for(lambda: len(sup.pool.held_by(sup.pool.find(key))) == 4, "all queued")  # type: ignore[union-attr]
    replies = [final(r) for r in [await t1, *await asyncio.gather(*rest)]]
    assert all(isinstance(r, RunDone) for r in replies)
    assert [r.reply for r in replies if isinstance(r, RunDone)] == [
        "FAKE-REPLY turn=1 last=one SLEEP:0.5",
        "FAKE-REPLY turn=2 last=two",
        "FAKE-REPLY turn=3 last=/compact",
        "FAKE-REPLY turn=4 last=four",
    ]


async def test_over_max_warm_sessions_the_least_recently_used_is_closed(start: Starter) -> None:
    """limits.maxWarmSessions 1: thread A, then thread B answer a message.
    Result: A's warm claude is closed (B's stays); A's next message resumes its session."""
    sup = await start(limits={"maxWarmSessions": 1})
    a, b = SessionKey("540000000000000001"), SessionKey("540000000000000002")
    first_a = final(await collect(sup, a, "a1"))
    assert isinstance(first_a, RunDone)
    assert (await claude_status(sup, a))[0] == "warm"
    assert isinstance(final(await collect(sup, b, "b1")), RunDone)
    modes: dict[str, str] = {}

    async def a_closed() -> bool:
        modes["a"] = (await claude_status(sup, a))[0]
        return modes["a"] == ""

    await wait_for(a_closed, "the least recently used warm claude to close")
    assert (await claude_status(sup, b))[0] == "warm"
    again = final(await collect(sup, a, "a2"))
    assert isinstance(again, RunDone) and again.reply == "FAKE-REPLY turn=2 last=a2"


async def test_warm_sessions_off_runs_each_message_cold(start: Starter) -> None:
    sup = await start(runner={"warmSessions": False})
    key = SessionKey("550000000000000001")
    one = await collect(sup, key, "one")
    two = await collect(sup, key, "two")
    assert final(two).reply == "FAKE-REPLY turn=2 last=two"  # type: ignore[union-attr]
    assert started(one)[0].pid != started(two)[0].pid
    assert (await claude_status(sup, key))[0] == ""


async def test_a_sigkilled_warm_claude_answers_its_message_once(daemon: Supervisor) -> None:
    """The warm claude of a thread is SIGKILLed mid-turn: the worker resumes the session
    cold and the message gets exactly one answer; the next message is warm again."""
    import os
    import signal

    key = SessionKey("560000000000000001")
    first = final(await collect(daemon, key, "one"))
    assert isinstance(first, RunDone)
    events: list[RunEvent] = []
    task = asyncio.create_task(collect(daemon, key, "SLEEP:2 two", events.append))
    await wait_for(lambda: bool(started(events)), "2 running")
    os.kill(started(events)[0].pid, signal.SIGKILL)
    got = await task
    answers = [e for e in got if isinstance(e, RunDone | RunFailed)]
    assert len(answers) == 1 and isinstance(answers[0], RunDone), answers
    assert answers[0].reply == "FAKE-REPLY turn=2 last=SLEEP:2 two"
    assert len(started(got)) == 2  # the warm one, then the cold retry
    third = await collect(daemon, key, "three")
    assert final(third).reply == "FAKE-REPLY turn=3 last=three"  # type: ignore[union-attr]
    assert (await claude_status(daemon, key))[0] == "warm"


async def test_a_dead_workers_warm_claude_is_ended(daemon: Supervisor) -> None:
    """A worker is SIGKILLed between messages: its warm claude (possibly frozen, so it would
    not notice its stdin close) is ended by the pool."""
    import os
    import signal

    import psutil

    key = SessionKey("570000000000000001")
    events = await collect(daemon, key, "one")
    claude_pid = started(events)[0].pid
    assert daemon.pool is not None
    handle = daemon.pool.find(key)
    assert handle is not None
    await wait_for(lambda: handle.warm_pid == claude_pid, "the pool knows the warm claude")
    os.kill(handle.pid, signal.SIGSTOP)  # it cannot close its claude
    os.kill(claude_pid, signal.SIGSTOP)  # frozen, as between turns
    os.kill(handle.pid, signal.SIGKILL)

    def gone() -> bool:
        try:
            return psutil.Process(claude_pid).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    await wait_for(gone, "the warm claude ended")


async def test_a_warm_turn_costs_the_supervisor_three_frames_and_progress_is_sampled(
    daemon: Supervisor,
) -> None:
    """What a worker sends per message (each frame is a wake-up and a decode there):
    1. A warm answer within its first second: started, done and the warm report, nothing
       else (no "queued" with nobody ahead, no session id it knows, no progress).
    2. A turn that calls a tool, then works 1.6 s: its progress once, the latest, a second
       in (not every event Claude printed).
    Result: counted as the supervisor receives them."""
    key = SessionKey("510000000000000009")
    assert daemon.pool is not None
    frames: list[str] = []
    original = daemon.pool._on_frame

    def on_frame(handle: Any, message: dict[str, Any]) -> None:
        if handle.key == key:
            event = message.get("event") or {}
            frames.append(f"{message['type']}:{event.get('kind', '')}".rstrip(":"))
        original(handle, message)

    daemon.pool._on_frame = on_frame  # type: ignore[method-assign]
    await collect(daemon, key, "warm up")
    frames.clear()
    done = final(await collect(daemon, key, "again"))
    assert isinstance(done, RunDone)
    assert sorted(frames) == ["event:done", "event:started", "warm"]
    assert frames[0] == "event:started"

    frames.clear()
    events = await collect(daemon, key, 'TOOL:Bash:{"command": "make test"} SLEEP:1.6')
    assert isinstance(final(events), RunDone)
    progress = [e for e in events if isinstance(e, RunProgress)]
    assert frames.count("event:progress") == 1
    assert progress == [RunProgress(progress[0].msg_id, tool="Bash", summary="make test")]
