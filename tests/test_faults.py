"""The fault suite: no accepted message lost or doubled, across restarts.

A real ``claudeclaw run`` process (``tests/daemon_on_fake.py``: real discord.py against
the loopback fake Discord of this test process, real workers running the fake ``claude``)
is stopped with SIGTERM or SIGKILL at each step of a message's life, with Discord faults
injected (slow attachment downloads, 5xx on replies, 500 after the reply was created,
slow reactions, a dropped gateway). Then it is started again with Discord healthy, and
for every message Alice sent, the bot's replies to it are counted: exactly one answer or
one note (the interim "⏸️ kept, runs when it is back" note does not count) — none is
*lost*, two are *doubled*. Every scenario asserts zero of both; ``TALLY`` adds them up
(printed at the end of the session with ``-s``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from claudeclaw import control
from claudeclaw.ledger import read_entries
from claudeclaw.paths import ProjectPaths
from tests.fake_discord import FakeDiscord
from tests.fixtures_daemon import discord_settings

ROOT = Path(__file__).resolve().parent.parent
KEPT_PREFIX = "⏸️"
DAEMON = [sys.executable, "-m", "tests.daemon_on_fake", "run"]


@dataclass
class Tally:
    messages: int = 0
    faults: int = 0
    lost: int = 0
    doubled: int = 0
    scenarios: list[str] = field(default_factory=list)


TALLY = Tally()


class Rig:
    """The daemon process, the fake Discord, and the bookkeeping of one scenario."""

    def __init__(self, fake: FakeDiscord, paths: ProjectPaths) -> None:
        self.fake = fake
        self.paths = paths
        self.proc: subprocess.Popen[bytes] | None = None
        self.sent: list[tuple[str, str]] = []  # (channel, message id) Alice sent
        self.log = paths.root / "daemon.log"
        self.faults = 0
        self.env: dict[str, str] = {}  # more environment for the daemon

    async def start(self) -> None:
        identified = self.fake.identify_count
        env = dict(os.environ) | self.env
        env["FAKE_DISCORD_API"] = self.fake.api_base
        env["FAKE_DISCORD_GATEWAY"] = self.fake.gateway_url
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [*DAEMON, "--project", str(self.paths.root), "--log-mode", "json"],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
            )
        async with asyncio.timeout(30):
            while not (
                self.fake.identify_count > identified
                and await control.daemon_running(self.paths)
                and self.fake.commands
            ):
                if self.proc.poll() is not None:
                    raise AssertionError(f"daemon exited: {self.log.read_text()[-3000:]}")
                await asyncio.sleep(0.05)

    async def stop(self, sig: int) -> None:
        assert self.proc is not None
        self.faults += 1
        self.proc.send_signal(sig)
        await asyncio.to_thread(self.proc.wait, 60)

    async def says(self, channel: str, text: str, **kwargs: Any) -> dict[str, Any]:
        message = await self.fake.user_says(channel, text, **kwargs)
        self.sent.append((channel, message["id"]))
        return message

    def finals(self, channel: str, message_id: str) -> list[dict[str, Any]]:
        """The bot's replies to one message that answer it (not the interim ⏸️ note)."""
        return [
            m
            for m in self.fake.bot_messages(channel)
            if (m.get("message_reference") or {}).get("message_id") == message_id
            and not m["content"].startswith(KEPT_PREFIX)
        ]

    def start_recorded(self, message_id: str) -> bool:
        """The daemon's pending journal says the run of ``message_id`` started (so a restart
        must not run it again). The ⚙️ reaction can come before that write reaches the
        disk; a SIGKILL in between makes the restart run the message again."""
        pending = read_entries(self.paths.pending_file)
        return any(p["reply_to"]["message_id"] == message_id and p.get("started") for p in pending)

    def settled(self) -> bool:
        pending = read_entries(self.paths.pending_file)
        return not pending and all(self.finals(c, m) for c, m in self.sent)

    async def settle_and_count(self, scenario: str) -> None:
        """Wait until every message has its answer and nothing is pending; then count."""
        try:
            await self.fake.wait_until(self.settled, timeout=60, what="every message answered")
        except AssertionError:
            pass  # counted as lost below
        # a sentinel through every session used (each is a FIFO queue): once they are
        # answered, whatever was still queued in them has run, however slow the machine
        dm = self.fake.dm_channel(self.fake.alice)
        at_bot = f"<@{self.fake.bot['id']}>"
        sentinels = [
            (c, await self.fake.user_says(c, f"{at_bot} sentinel", mentions=[self.fake.bot]))
            for c in dict.fromkeys([dm, *(c for c, _ in self.sent)])
        ]
        await self.fake.wait_until(
            lambda: all(self.finals(c, s["id"]) for c, s in sentinels),
            timeout=30,
            what="the sentinels answered",
        )
        lost = sum(1 for c, m in self.sent if not self.finals(c, m))
        doubled = sum(1 for c, m in self.sent if len(self.finals(c, m)) > 1)
        TALLY.messages += len(self.sent)
        TALLY.faults += self.faults
        TALLY.lost += lost
        TALLY.doubled += doubled
        TALLY.scenarios.append(f"{scenario}: {len(self.sent)} msgs, lost {lost}, doubled {doubled}")
        detail = {
            m: [" ".join(f["content"].split())[-50:] for f in self.finals(c, m)]
            for c, m in self.sent
            if len(self.finals(c, m)) != 1
        }
        assert (lost, doubled) == (0, 0), (detail, str(self.log))

    def posts_to(self, channel: str) -> int:
        return sum(
            1
            for r in self.fake.requests
            if r.method == "POST" and r.path.endswith(f"/channels/{channel}/messages")
        )

    async def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(self.proc.wait, 30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@pytest.fixture
async def rig(
    fake_discord: FakeDiscord, make_project: Callable[..., ProjectPaths]
) -> AsyncIterator[Rig]:
    paths = make_project(
        discord=discord_settings(fake_discord),
        limits={"shutdownGraceSeconds": 1},
    )
    made = Rig(fake_discord, paths)
    try:
        yield made
    finally:
        await made.close()


SIGNALS = pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["term", "kill"])


def reacted(fake: FakeDiscord, message_id: str, emoji: str) -> Callable[[], bool]:
    return lambda: emoji in fake.reactions[message_id]


@SIGNALS
@pytest.mark.parametrize("where", ["dm", "new thread"])
async def test_stop_while_an_attachment_downloads(rig: Rig, sig: int, where: str) -> None:
    """Accepted, its attachment still downloading (the ledger does not have it yet). The
    restart finds it by catching up: a DM because it is on disk, a new thread under a
    listen channel because the gateway lists it among the active threads."""
    fake = rig.fake
    rig.env["FAKE_SLOW_CHANNEL_NOTE"] = "0.5"  # a slow disk must not open a window of loss
    await rig.start()
    fake.download_gate = asyncio.Event()
    if where == "dm":
        channel = fake.dm_channel(fake.alice)
    else:
        channel = await fake.create_thread(fake.listen_id, "with a file")
    await rig.says(
        channel,
        "with a file",
        attachments=[{"filename": "a.txt", "content_type": "text/plain", "data": b"hi"}],
    )
    await fake.wait_until(
        lambda: any(r.path.startswith("/attachments/") for r in fake.requests), what="download"
    )
    if where == "dm":  # on disk before the download starts: how the restart finds it
        assert channel in json.loads(rig.paths.discord_channels_file.read_text())
    await rig.stop(sig)
    fake.download_gate.set()
    await rig.start()
    await rig.settle_and_count(f"downloading in a {where}/{signal.Signals(sig).name}")


@SIGNALS
async def test_stop_while_one_runs_and_one_waits(rig: Rig, sig: int) -> None:
    """A runs (claude sleeps), B waits behind it in the same session."""
    fake = rig.fake
    await rig.start()
    dm = fake.dm_channel(fake.alice)
    a = await rig.says(dm, "first SLEEP:30")
    await fake.wait_until(reacted(fake, a["id"], "⚙️"), what="A running")
    await fake.wait_until(lambda: rig.start_recorded(a["id"]), what="A's start on disk")
    b = await rig.says(dm, "second")
    await fake.wait_until(reacted(fake, b["id"], "👀"), what="B accepted")
    await rig.stop(sig)
    await rig.start()
    await rig.settle_and_count(f"running+queued/{signal.Signals(sig).name}")


@SIGNALS
async def test_stop_while_discord_refuses_the_reply(rig: Rig, sig: int) -> None:
    """The answer is done; Discord answers 503 to it; the daemon stops during the retries."""
    fake = rig.fake
    await rig.start()
    dm = fake.dm_channel(fake.alice)
    fake.fail_posts[dm] = 503
    await rig.says(dm, "answer me")
    await fake.wait_until(lambda: rig.posts_to(dm) >= 2, what="a retried reply")
    await rig.stop(sig)
    del fake.fail_posts[dm]
    await rig.start()
    await rig.settle_and_count(f"reply-503/{signal.Signals(sig).name}")


@SIGNALS
async def test_stop_after_discord_created_the_reply_behind_a_500(rig: Rig, sig: int) -> None:
    """Discord creates the reply and answers 500; the daemon stops before it retries."""
    fake = rig.fake
    await rig.start()
    dm = fake.dm_channel(fake.alice)
    fake.fail_after_create[dm] = 1
    await rig.says(dm, "created behind an error")
    await fake.wait_until(lambda: rig.posts_to(dm) >= 1, what="the reply posted")
    await rig.stop(sig)
    await rig.start()
    await rig.settle_and_count(f"500-after-create/{signal.Signals(sig).name}")


@SIGNALS
async def test_stop_while_reactions_hang(rig: Rig, sig: int) -> None:
    """Every reaction call hangs; the daemon stops after the message was accepted."""
    fake = rig.fake
    await rig.start()
    fake.reaction_gate = asyncio.Event()
    dm = fake.dm_channel(fake.alice)
    await rig.says(dm, "slow reactions SLEEP:1")
    await fake.wait_until(
        lambda: any("/reactions/" in r.path for r in fake.requests), what="a reaction call"
    )
    await rig.stop(sig)
    fake.reaction_gate.set()
    await rig.start()
    await rig.settle_and_count(f"slow-reactions/{signal.Signals(sig).name}")


@SIGNALS
async def test_stop_in_a_burst_over_three_sessions_then_again_while_catching_up(
    rig: Rig, sig: int
) -> None:
    """Nine messages over a DM and two threads, some running, some queued, one still
    downloading; stopped; started; stopped again right away; started."""
    fake = rig.fake
    await rig.start()
    at_bot = f"<@{fake.bot['id']}>"
    dm = fake.dm_channel(fake.alice)
    threads = [fake.thread_id, fake.listen_thread_id]
    for n in range(3):
        await rig.says(dm, f"dm {n} SLEEP:2")
        for thread in threads:
            await rig.says(thread, f"{at_bot} t{n} SLEEP:2", mentions=[fake.bot])
    await fake.wait_until(
        lambda: sum("⚙️" in fake.reactions[m] for _, m in rig.sent) >= 2, what="runs started"
    )
    await rig.stop(sig)
    await rig.start()
    await rig.stop(sig)
    await rig.start()
    await rig.settle_and_count(f"burst-twice/{signal.Signals(sig).name}")


async def answer_kept_in_the_ledger(rig: Rig, channel: str, text: str) -> dict[str, Any]:
    """Alice asks in ``channel``; Discord answers 503 to every post there, so the answer
    is stored in the pending journal and not posted. Returns her message."""
    fake = rig.fake
    fake.fail_posts[channel] = 503
    at_bot = f"<@{fake.bot['id']}>"
    message = await rig.says(channel, f"{at_bot} {text}", mentions=[fake.bot])

    def stored() -> bool:
        pending = read_entries(rig.paths.pending_file)
        return any(p.get("answer") for p in pending)

    await fake.wait_until(stored, timeout=30, what="the answer stored in the ledger")
    return message


def events(rig: Rig, name: str) -> list[dict[str, Any]]:
    found = []
    for line in rig.log.read_text().splitlines():
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if isinstance(entry, dict) and entry.get("event") == name:
                found.append(entry)
    return found


@SIGNALS
async def test_an_answer_whose_thread_was_deleted_meanwhile_is_kept_on_disk_not_retried(
    rig: Rig, sig: int
) -> None:
    """The answer waits in the ledger (Discord 503); the daemon stops; the thread is
    deleted; at the start Discord answers its post 404 Unknown Channel. Result: it stays
    on disk, the ledger lets it go, one warning names it, `claudeclaw status` counts it,
    and the next start does not try it again."""
    fake = rig.fake
    thread = fake.thread_id
    await rig.start()
    asked = await answer_kept_in_the_ledger(rig, thread, "answer me REPLY:kept-answer")
    await rig.stop(sig)
    del fake.fail_posts[thread]
    await fake.delete_thread(thread)
    await rig.start()
    await fake.wait_until(
        lambda: events(rig, "discord.answer_undeliverable"), timeout=30, what="given up"
    )
    await fake.wait_until(lambda: not read_entries(rig.paths.pending_file), what="settled")
    [event] = events(rig, "discord.answer_undeliverable")
    assert event["level"] == "warning" and event["code"] == 10003
    assert (str(event["message_id"]), str(event["channel_id"])) == (asked["id"], thread)
    assert "channel is gone" in event["reason"]
    assert "kept-answer" in Path(event["file"]).read_text()
    status = await control.request(rig.paths, {"type": "status"})
    assert status["daemon"]["discord"]["undeliverable_answers"] == 1
    human = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "claudeclaw", "status", "--project", str(rig.paths.root)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "1 answer(s) Discord will never take" in human.stdout, human.stderr
    posts = rig.posts_to(thread)
    await rig.stop(signal.SIGTERM)
    await rig.start()
    dm = fake.dm_channel(fake.alice)
    await rig.says(dm, "sentinel after the second start")
    await fake.wait_until(lambda: rig.finals(dm, rig.sent[-1][1]), timeout=30, what="sentinel")
    assert rig.posts_to(thread) == posts  # settled: never tried again
    assert len(events(rig, "discord.answer_undeliverable")) == 1


@SIGNALS
async def test_an_answer_whose_message_was_deleted_meanwhile_is_still_posted(
    rig: Rig, sig: int
) -> None:
    """The same, but Alice deleted her message while the daemon was down: the answer goes
    to the thread as a plain message (no reply reference), and the ledger lets it go."""
    fake = rig.fake
    thread = fake.thread_id
    await rig.start()
    asked = await answer_kept_in_the_ledger(rig, thread, "answer me REPLY:still-posted")
    await rig.stop(sig)
    del fake.fail_posts[thread]
    await fake.user_deletes(thread, asked["id"])
    await rig.start()
    reply = await fake.wait_for_message(
        thread, lambda m: m["content"] == "still-posted", timeout=30
    )
    assert "message_reference" not in reply
    await fake.wait_until(lambda: not read_entries(rig.paths.pending_file), what="settled")
    assert [m["content"] for m in fake.bot_messages(thread)].count("still-posted") == 1
    assert not events(rig, "discord.answer_undeliverable")


async def test_gateway_drop_while_running(rig: Rig) -> None:
    """The gateway connection drops while Claude works; the client resumes."""
    fake = rig.fake
    await rig.start()
    dm = fake.dm_channel(fake.alice)
    a = await rig.says(dm, "through a drop SLEEP:1")
    await fake.wait_until(reacted(fake, a["id"], "⚙️"), what="running")
    rig.faults += 1
    await fake.drop_connection()
    await rig.says(dm, "sent around the drop")
    await rig.settle_and_count("gateway-drop")


async def test_a_new_threads_session_survives_a_kill_before_the_session_files_are_written(
    rig: Rig,
) -> None:
    """A new thread's first answer is posted; the daemon is SIGKILLed before it wrote the
    session files (their writes wait up to ``REGISTRY_DELAY_S``, the session was only in
    ``sessions.changes.jsonl``). After the restart the thread's next message resumes
    that session (turn 2), not a new one: the start folded the journal in."""
    fake = rig.fake
    await rig.start()
    thread = await fake.create_thread(fake.listen_id, "kept across a kill")
    first = await rig.says(thread, "first")
    await fake.wait_until(lambda: rig.finals(thread, first["id"]), what="the first answer")
    assert "turn=1" in rig.finals(thread, first["id"])[0]["content"]
    journaled = [
        json.loads(line)
        for line in rig.paths.session_changes_file.read_text().splitlines()
        if line.strip()
    ]
    assert {"op": "record", "key": thread} == {k: journaled[0][k] for k in ("op", "key")}, journaled
    registry = rig.paths.thread_sessions_file
    assert not registry.exists() or thread not in json.loads(registry.read_text())["threads"]
    await rig.stop(signal.SIGKILL)
    await rig.start()
    second = await rig.says(thread, "second")
    await fake.wait_until(lambda: rig.finals(thread, second["id"]), what="the second answer")
    assert "turn=2" in rig.finals(thread, second["id"])[0]["content"]
    assert thread in json.loads(registry.read_text())["threads"]
    await rig.settle_and_count("kill-before-the-session-files")


@pytest.fixture(scope="module", autouse=True)
def _report() -> Any:
    yield
    print(f"\nfault suite: {TALLY}")
