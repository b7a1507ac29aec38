"""pytest fixtures for the Discord frontend: the loopback fake Discord and a FakeDispatcher.

``fake_discord`` starts :class:`tests.fake_discord.FakeDiscord` and points discord.py at it
(``Route.BASE`` and ``DiscordWebSocket.DEFAULT_GATEWAY``). ``frontend`` builds a started
:class:`~claudeclaw.frontend.bot.DiscordFrontend` against it and a :class:`FakeDispatcher`.

FakeDispatcher models the routing API's semantics as the frontend relies on them:

* ``submit(key, prompt)`` is an async generator: ``RunQueued(position)`` first, where
  position counts the runs of that key ahead of this one (running or waiting), then
  ``RunStarted`` when it gets the key, then the scripted progress, then exactly one
  ``RunDone`` or ``RunFailed``;
* each key is a FIFO served one run at a time; different keys run in parallel;
* ``cancel(key)`` ends the key's current run with ``RunFailed(reason="cancelled")``;
* ``reset(key)`` forgets the session record (True if there was one);
* the first run of a key creates its session record; ``list_sessions()`` lists every key
  but ``global``.

Scripts: ``dispatcher.script = fn(key, prompt) -> list of steps`` where a step is a run
event (progress, done, failed), a float (sleep seconds) or an ``asyncio.Event`` (a gate
the run waits for). Without a final event the run ends with ``RunDone("echo: <message>")``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

import discord
import pytest
import yarl

from claudeclaw.config import DiscordSettings, Settings
from claudeclaw.model import (
    GLOBAL_KEY,
    PendingMessage,
    Remembered,
    ReplyTo,
    ResetOutcome,
    RunDone,
    RunEvent,
    RunFailed,
    RunQueued,
    RunSession,
    RunStarted,
    SessionId,
    SessionInfo,
    SessionKey,
    SessionRecord,
    WorkspaceDiff,
    WorkspaceStatus,
)
from claudeclaw.paths import ProjectPaths
from tests.fake_discord import FakeDiscord

Step = RunEvent | float | asyncio.Event
Script = Callable[[SessionKey, str], list[Step]]


def message_text(prompt: str) -> str:
    for line in prompt.splitlines():
        if line.startswith("Message: "):
            return line[len("Message: ") :]
    return ""


def containing(needle: str) -> Callable[[dict[str, Any]], bool]:
    """A ``wait_for_message`` predicate: the message's text holds ``needle``."""
    return lambda m: needle in m.get("content", "")


def echo_script(_key: SessionKey, _prompt: str) -> list[Step]:
    return []


@dataclass
class Submission:
    key: SessionKey
    prompt: str
    origin: str
    msg_id: str


@dataclass
class FakeDispatcher:
    script: Script = echo_script
    submissions: list[Submission] = field(default_factory=list)
    pending: list[PendingMessage] = field(default_factory=list)  # take_pending() hands these out
    delivered_ids: list[str] = field(default_factory=list)  # delivered() was told these
    resets: list[SessionKey] = field(default_factory=list)
    cancels: list[SessionKey] = field(default_factory=list)
    records: dict[SessionKey, SessionRecord] = field(default_factory=dict)
    running: set[SessionKey] = field(default_factory=set)
    max_parallel: int = 0
    max_parallel_per_key: dict[SessionKey, int] = field(default_factory=lambda: defaultdict(int))
    started_order: list[str] = field(default_factory=list)
    _locks: dict[SessionKey, asyncio.Lock] = field(default_factory=dict)
    _depth: dict[SessionKey, int] = field(default_factory=lambda: defaultdict(int))
    _cancel: dict[SessionKey, asyncio.Event] = field(default_factory=dict)
    _concurrent: dict[SessionKey, int] = field(default_factory=lambda: defaultdict(int))
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    jobs: list[dict[str, Any]] = field(default_factory=list)  # what list_jobs answers
    labels: list[str] = field(default_factory=list)  # submit(label=...), in order
    workspace_notes: dict[SessionKey, str] = field(default_factory=dict)  # reset_session()
    reset_gate: asyncio.Event | None = None  # reset_session() waits for it (a slow reset)
    diffs: dict[SessionKey, WorkspaceDiff] = field(default_factory=dict)  # workspace_diff()
    infos: dict[SessionKey, WorkspaceStatus] = field(default_factory=dict)  # session_info()
    last_errors: dict[SessionKey, str] = field(default_factory=dict)  # for session_info

    remembered: dict[SessionKey, list[Remembered]] = field(default_factory=dict)
    decisions: list[tuple[str, str, str]] = field(default_factory=list)  # request, outcome, by

    def decide_approval(
        self, request_id: str, outcome: str, by: str, *, question: int = -1, option: int = -1
    ) -> str:
        self.decisions.append((request_id, outcome, by))
        self._touch()
        return ""

    def remembered_approvals(self, key: SessionKey) -> list[Remembered]:
        return list(self.remembered.get(key, []))

    def revoke_approval(self, key: SessionKey, tool: str) -> bool:
        before = self.remembered.get(key, [])
        self.remembered[key] = [r for r in before if r.tool != tool]
        return len(self.remembered[key]) < len(before)

    def _touch(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()

    async def wait_until(self, predicate: Callable[[], Any], timeout: float = 5.0) -> Any:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not (result := predicate()):
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError("timed out waiting on the FakeDispatcher")
            try:
                await asyncio.wait_for(self.changed.wait(), remaining)
            except TimeoutError:
                pass
        return result

    def add_session(self, key: SessionKey, session_id: str | None = None) -> SessionRecord:
        stamp = dt.datetime.now(dt.UTC).isoformat()
        record = SessionRecord(
            key=key,
            session_id=SessionId(session_id or str(uuid.uuid4())),
            created_at=stamp,
            last_used_at=stamp,
        )
        self.records[key] = record
        return record

    async def submit(
        self,
        key: SessionKey,
        prompt: str,
        *,
        origin: str = "discord",
        reply_to: ReplyTo | None = None,
        label: str = "",
    ) -> AsyncIterator[RunEvent]:
        msg_id = uuid.uuid4().hex[:12]
        self.submissions.append(Submission(key, prompt, origin, msg_id))
        self.labels.append(label)
        lock = self._locks.setdefault(key, asyncio.Lock())
        ahead = self._depth[key]
        self._depth[key] += 1
        self._touch()
        try:
            yield RunQueued(msg_id=msg_id, position=ahead)
            async with lock:
                self.running.add(key)
                self._concurrent[key] += 1
                self.max_parallel = max(self.max_parallel, len(self.running))
                self.max_parallel_per_key[key] = max(
                    self.max_parallel_per_key[key], self._concurrent[key]
                )
                self.started_order.append(msg_id)
                cancel = self._cancel[key] = asyncio.Event()
                self._touch()
                try:
                    yield RunStarted(msg_id=msg_id, run_id=msg_id, pid=4242, resumed=False)
                    record = self.records.get(key) or self.add_session(key)
                    yield RunSession(msg_id=msg_id, session_id=record.session_id)
                    async for event in self._play(key, prompt, msg_id, cancel):
                        yield event
                        if isinstance(event, RunDone | RunFailed):
                            return
                finally:
                    self._concurrent[key] -= 1
                    self.running.discard(key)
                    self._touch()
        finally:
            self._depth[key] -= 1
            self._touch()

    async def _play(
        self, key: SessionKey, prompt: str, msg_id: str, cancel: asyncio.Event
    ) -> AsyncIterator[RunEvent]:
        for step in self.script(key, prompt):
            if isinstance(step, float | int | asyncio.Event):
                waiter: Awaitable[Any] = (
                    asyncio.sleep(step) if isinstance(step, float | int) else step.wait()
                )
                wait_task = asyncio.ensure_future(waiter)
                cancel_task = asyncio.ensure_future(cancel.wait())
                await asyncio.wait({wait_task, cancel_task}, return_when=asyncio.FIRST_COMPLETED)
                wait_task.cancel()
                cancel_task.cancel()
                if cancel.is_set():
                    yield RunFailed(msg_id=msg_id, reason="cancelled", message="cancelled")
                    return
                continue
            yield replace(step, msg_id=msg_id)
            if isinstance(step, RunDone | RunFailed):
                return
        record = self.records[key]
        self.records[key] = replace(record, turn_count=record.turn_count + 1)
        yield RunDone(
            msg_id=msg_id, reply=f"echo: {message_text(prompt)}", session_id=record.session_id
        )

    async def cancel(self, key: SessionKey) -> bool:
        self.cancels.append(key)
        event = self._cancel.get(key)
        if key in self.running and event is not None:
            event.set()
            return True
        return False

    async def reset(self, key: SessionKey) -> bool:
        self.resets.append(key)
        self._touch()
        return self.records.pop(key, None) is not None

    async def reset_session(self, key: SessionKey) -> ResetOutcome:
        if self.reset_gate is not None:
            await self.reset_gate.wait()
        return ResetOutcome(await self.reset(key), self.workspace_notes.get(key, ""))

    async def workspace_diff(self, key: SessionKey) -> WorkspaceDiff | None:
        return self.diffs.get(key)

    async def session_info(self, key: SessionKey) -> SessionInfo:
        depth = self._depth[key]
        running = key in self.running
        return SessionInfo(
            key=key,
            record=self.records.get(key),
            running=running,
            queue_length=max(0, depth - (1 if running else 0)),
            worker_pid=4242 if key in self._locks else 0,
            run_elapsed_s=1.5 if running else 0.0,
            workspace=self.infos.get(key),
            last_error=self.last_errors.get(key, ""),
        )

    def has_session(self, key: SessionKey) -> bool:
        return (
            key in self.records or key in self._locks or key in self.running or self._depth[key] > 0
        )

    def take_pending(self) -> list[PendingMessage]:
        taken, self.pending = self.pending, []
        return taken

    def delivered(self, msg_id: str) -> None:
        self.delivered_ids.append(msg_id)
        self._touch()

    async def list_sessions(self) -> list[SessionInfo]:
        return [await self.session_info(k) for k in self.records if k != GLOBAL_KEY]

    async def list_jobs(self) -> list[dict[str, Any]]:
        return list(self.jobs)


def discord_settings(fake: FakeDiscord, **overrides: Any) -> DiscordSettings:
    base: dict[str, Any] = {
        "token": fake.token,
        "token_source": "settings",
        "allowed_user_ids": (fake.alice["id"],),
        "listen_channels": (fake.listen_id,),
        "progress_after_seconds": 60.0,
        "progress_edit_interval_seconds": 60.0,
    }
    base.update(overrides)
    return DiscordSettings(**base)


@pytest.fixture
async def fake_discord(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeDiscord]:
    fake = FakeDiscord()
    await fake.start()
    monkeypatch.setattr(discord.http.Route, "BASE", fake.api_base)
    monkeypatch.setattr(
        discord.gateway.DiscordWebSocket, "DEFAULT_GATEWAY", yarl.URL(fake.gateway_url)
    )
    try:
        yield fake
    finally:
        await fake.stop()


@pytest.fixture
def dispatcher() -> FakeDispatcher:
    return FakeDispatcher()


FrontendFactory = Callable[..., Awaitable[Any]]


@pytest.fixture
async def make_frontend(
    fake_discord: FakeDiscord, dispatcher: FakeDispatcher, tmp_path: Any
) -> AsyncIterator[FrontendFactory]:
    """``await make_frontend(**discord_overrides)``: a started, ready DiscordFrontend."""
    from claudeclaw.frontend.bot import DiscordFrontend

    made: list[DiscordFrontend] = []

    async def factory(
        *, settings: Settings | None = None, wait_ready: bool = True, **overrides: Any
    ) -> DiscordFrontend:
        if settings is None:
            settings = Settings(discord=discord_settings(fake_discord, **overrides))
        paths = ProjectPaths(tmp_path / "project")
        paths.root.mkdir(parents=True, exist_ok=True)
        frontend = DiscordFrontend(
            settings, dispatcher, paths, client_options={"guild_ready_timeout": 0.01}
        )
        frontend.delivery.retry_delays = (0.01, 0.02)
        frontend.follower.queue_notice_after = 0.0  # tests of the notice set their own
        frontend.answers.redeliver_delays = (0.05, 0.1)
        made.append(frontend)
        await frontend.start()
        if wait_ready:
            await asyncio.wait_for(frontend.ready.wait(), 5)
        return frontend

    try:
        yield factory
    finally:
        for frontend in made:
            await frontend.close()


@pytest.fixture
async def frontend(make_frontend: FrontendFactory) -> Any:
    return await make_frontend()
