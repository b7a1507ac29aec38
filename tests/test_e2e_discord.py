"""The whole path: Discord → supervisor → worker process → claude → reply in Discord.

The real discord.py client runs inside the real supervisor (in-process) and talks to the
loopback fake Discord; the supervisor's real worker processes run the fake ``claude``, and
the last test runs the pinned real Claude CLI against the loopback fake Anthropic API.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from claudeclaw.config import Settings
from claudeclaw.ledger import read_entries
from claudeclaw.model import RunDone, RunFailed, RunStarted, SessionKey
from claudeclaw.paths import ProjectPaths
from claudeclaw.supervisor import Supervisor
from tests.fake_discord import FakeDiscord
from tests.fixtures_daemon import (
    SupervisorStarter,
    discord_settings,
    new_supervisor,
    started_supervisor,
)
from tests.fixtures_discord import containing

DaemonFactory = Callable[..., Any]


@pytest.fixture
def discord_daemon(
    make_project: Callable[..., ProjectPaths],
    fake_discord: FakeDiscord,
    start_supervisor: SupervisorStarter,
) -> DaemonFactory:
    """``await discord_daemon(**settings)``: a started supervisor connected to the fake."""

    async def start(**overrides: Any) -> Supervisor:
        discord_cfg = discord_settings(fake_discord, **overrides.pop("discord", {}))
        return await start_supervisor(make_project(discord=discord_cfg, **overrides), discord=True)

    return start


def pool_order(sup: Supervisor) -> list[tuple[str, str, SessionKey]]:
    """(start|end, msg_id, key) in the order the supervisor got them from workers."""
    timeline: list[tuple[str, str, SessionKey]] = []
    assert sup.pool is not None
    original = sup.pool.on_event

    def on_event(key: SessionKey, event: Any) -> None:
        if isinstance(event, RunStarted):
            timeline.append(("start", event.msg_id, key))
        elif isinstance(event, RunDone | RunFailed):
            timeline.append(("end", event.msg_id, key))
        original(key, event)

    sup.pool.on_event = on_event
    return timeline


async def test_thread_message_gets_its_own_session_and_dm_uses_global(
    discord_daemon: DaemonFactory, fake_discord: FakeDiscord
) -> None:
    """1. Alice writes in a thread under the listen channel, then again.
    2. Alice writes in a DM.
    Result: the thread's replies come from its own resumed session (sessions.json, key =
    thread id); the DM goes to the global session (session.json)."""
    sup = await discord_daemon()
    thread = fake_discord.listen_thread_id
    await fake_discord.user_says(thread, "first in thread")
    await fake_discord.wait_for_message(thread, containing("turn=1"), timeout=30)
    await fake_discord.user_says(thread, "second in thread")
    reply = await fake_discord.wait_for_message(thread, containing("turn=2"), timeout=30)
    assert "last=" in reply["content"] and "second in thread" in reply["content"]
    sent = fake_discord.sent_payloads[reply["id"]]
    assert sent["allowed_mentions"]["parse"] == []  # model output can never ping anyone

    dm = fake_discord.dm_channel(fake_discord.alice)
    await fake_discord.user_says(dm, "hello in a DM")
    await fake_discord.wait_for_message(dm, containing("turn=1"), timeout=30)

    await sup._writes.flush()  # (turn counts reach the disk a few seconds later)
    threads = json.loads(sup.paths.thread_sessions_file.read_text())["threads"]
    assert list(threads) == [thread] and threads[thread]["turnCount"] == 2
    glob = json.loads(sup.paths.global_session_file.read_text())
    assert glob["sessionId"] != threads[thread]["sessionId"]


async def test_two_threads_run_in_parallel_while_the_global_queue_is_serial(
    discord_daemon: DaemonFactory, fake_discord: FakeDiscord
) -> None:
    """Two threads each get a 1 s run and two DMs arrive at once.
    Result: the two thread runs overlap (both started before either ended); the two DM
    runs do not (the global session has one queue)."""
    sup = await discord_daemon()
    timeline = pool_order(sup)
    t1, t2 = fake_discord.thread_id, fake_discord.listen_thread_id
    dm = fake_discord.dm_channel(fake_discord.alice)
    mention = [fake_discord.bot]
    await fake_discord.user_says(t1, f"<@{fake_discord.bot['id']}> one SLEEP:1", mentions=mention)
    await fake_discord.user_says(t2, "two SLEEP:1")
    await fake_discord.user_says(dm, "dm-a SLEEP:0.3")
    await fake_discord.user_says(dm, "dm-b SLEEP:0.3")
    for channel, needle in ((t1, "one"), (t2, "two"), (dm, "dm-a"), (dm, "dm-b")):
        await fake_discord.wait_for_message(channel, containing(needle), timeout=30)
    by_key: dict[str, list[str]] = {}
    for kind, _msg, key in timeline:
        by_key.setdefault(key, []).append(kind)
    threads = [(k, m) for k, m, key in timeline if key in (t1, t2)]
    assert [k for k, _ in threads][:2] == ["start", "start"]  # both in flight at once
    assert by_key["global"] == ["start", "end", "start", "end"]


async def test_deleting_a_thread_removes_its_session_archiving_keeps_it(
    discord_daemon: DaemonFactory, fake_discord: FakeDiscord
) -> None:
    sup = await discord_daemon()
    t1, t2 = fake_discord.thread_id, fake_discord.listen_thread_id
    mention = [fake_discord.bot]
    await fake_discord.user_says(t1, f"<@{fake_discord.bot['id']}> keep me", mentions=mention)
    await fake_discord.user_says(t2, "delete me")
    await fake_discord.wait_for_message(t1, containing("keep me"), timeout=30)
    await fake_discord.wait_for_message(t2, containing("delete me"), timeout=30)
    await fake_discord.archive_thread(t1)
    await fake_discord.delete_thread(t2)
    async with asyncio.timeout(10):
        while SessionKey(t2) in {i.key for i in await sup.list_sessions()}:
            await asyncio.sleep(0.02)
    keys = {i.key for i in await sup.list_sessions()}
    assert keys == {t1}
    assert sup.pool is not None and sup.pool.find(SessionKey(t2)) is None  # worker retired
    # the archived thread resumes its session when the user comes back
    await fake_discord.user_says(t1, f"<@{fake_discord.bot['id']}> back again", mentions=mention)
    reply = await fake_discord.wait_for_message(t1, containing("back again"), timeout=30)
    assert "turn=2" in reply["content"]


@pytest.mark.realcli
async def test_real_claude_cli_answers_in_a_thread_and_resumes(
    discord_daemon: DaemonFactory,
    fake_discord: FakeDiscord,
    real_claude_path: Path,
    real_claude_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The real pinned CLI behind the whole path: first message → new session, second →
    resumed (the fake Anthropic API received the first exchange again)."""
    for name, value in real_claude_env.items():
        monkeypatch.setenv(name, value)
    await discord_daemon(runner={"claudePath": str(real_claude_path)})
    thread = fake_discord.listen_thread_id
    await fake_discord.user_says(thread, "hello real cli")
    first = await fake_discord.wait_for_message(thread, containing("FAKE-REPLY"), timeout=60)
    assert "user_msgs=1" in first["content"]
    await fake_discord.user_says(thread, "and again")
    second = await fake_discord.wait_for_message(thread, containing("user_msgs=2"), timeout=60)
    assert "assistant_msgs=1" in second["content"]


async def test_a_rejected_token_stops_the_daemon_with_a_clear_error(
    make_project: Callable[..., ProjectPaths], fake_discord: FakeDiscord
) -> None:
    """Discord answers 401 to the token: the daemon stops at start with the error that
    maps to exit code 5 (which the unit does not restart), and leaves nothing behind."""
    from claudeclaw.errors import EXIT_LOGIN_FAILED, DiscordLoginRejected

    paths = make_project(discord={"token": "wrong-token-0123456789", "allowedUserIds": ["1"]})
    sup = new_supervisor(paths, discord=True)
    with pytest.raises(DiscordLoginRejected, match="rejected the token"):
        await sup.run()
    assert not paths.daemon_file.exists()
    assert EXIT_LOGIN_FAILED == 5
    again = new_supervisor(paths)
    again.settings = Settings()  # no token: local only
    await again.startup()  # the instance lock was released
    await again.shutdown()


async def test_discord_down_at_start_the_daemon_serves_and_connects_when_it_is_back(
    make_project: Callable[..., ProjectPaths], fake_discord: FakeDiscord
) -> None:
    """Issue 12.2: Discord unreachable at start (connection refused).
    1. The daemon starts anyway: startup returns, STATUS says "discord: connecting, retry
       in N s", the local control socket answers and runs messages, a warning is logged.
    2. Discord comes back (same address): the keeper connects by itself.
    Result: a message in a thread is answered in Discord."""
    from structlog.testing import capture_logs

    from claudeclaw import control
    from claudeclaw.model import GLOBAL_KEY
    from tests.fixtures_daemon import collect

    fake = fake_discord
    port = fake.port
    await fake.stop()  # down: nothing listens there
    paths = make_project(
        discord=discord_settings(fake, listen=False),
    )
    sup = new_supervisor(paths, discord=True)
    sup.discord_retry = {"first_retry": 0.3, "max_retry": 0.6}
    try:
        with capture_logs() as logs:
            await asyncio.wait_for(sup.startup(), 10)  # does not wait for Discord
            assert sup.frontend is None
            assert "discord: connecting, retry in" in sup.status_line()
            reply = await control.request(paths, {"type": "status"})
            assert "discord: connecting" in reply["daemon"]["status"]
            events = await collect(sup, GLOBAL_KEY, "hello while Discord is away")
            assert isinstance(events[-1], RunDone), events[-1]
            await fake.wait_until(
                lambda: sum(e["event"] == "discord.unreachable" for e in logs) >= 2,
                timeout=10,
                what="a second attempt",
            )  # capped backoff: it keeps trying
        unreachable = [e for e in logs if e["event"] == "discord.unreachable"]
        assert unreachable[0]["log_level"] == "warning"
        assert unreachable[0]["retry_in_s"] <= 0.6 and unreachable[-1]["retry_in_s"] <= 0.6

        await fake.start(port=port)  # Discord is back
        await fake.wait_until(lambda: sup.frontend is not None, timeout=15, what="connected")
        assert sup.status_line().endswith("discord connected")
        await fake.user_says(
            fake.thread_id, f"<@{fake.bot['id']}> are you there", mentions=[fake.bot]
        )
        answer = await fake.wait_for_message(fake.thread_id, timeout=15)
        assert "FAKE-REPLY" in answer["content"] and "are you there" in answer["content"]
    finally:
        await sup.shutdown()


@pytest.mark.parametrize(
    ("code", "needle"), [(4004, "rejected the token"), (4014, "Message Content Intent")]
)
async def test_a_gateway_refusal_at_start_stays_fatal(
    make_project: Callable[..., ProjectPaths], fake_discord: FakeDiscord, code: int, needle: str
) -> None:
    """Issue 12.2: retrying forever is for an unreachable Discord; Discord's own refusal
    of the token or of the Message Content intent still ends the daemon (exit code 5)."""
    from claudeclaw.errors import DiscordLoginRejected

    fake_discord.gateway_close_code = code
    paths = make_project(discord={"token": fake_discord.token, "allowedUserIds": ["1"]})
    sup = new_supervisor(paths, discord=True)
    with pytest.raises(DiscordLoginRejected, match=needle):
        await asyncio.wait_for(sup.run(), 20)
    assert not paths.daemon_file.exists()


async def test_a_queued_message_survives_a_restart_and_an_interrupted_one_is_told(
    make_project: Callable[..., ProjectPaths], fake_discord: FakeDiscord
) -> None:
    """1. In a thread, message A runs (it hangs) and message B waits behind it.
    2. The daemon stops: A is cut off after the grace period; B never started.
    3. A crash left a second ledger entry whose run had started (written by hand).
    4. The daemon starts again.
    Result: B is answered after the restart, in its thread, as a reply to it; the crashed
    one gets an "interrupted, not run again" note; A was told it did not finish."""
    fake = fake_discord
    paths = make_project(
        discord=discord_settings(fake),
        limits={"shutdownGraceSeconds": 0.2},
    )

    first = await started_supervisor(paths, discord=True)
    thread = fake.listen_thread_id
    a = await fake.user_says(thread, "A HANG")
    assert first.pool is not None
    await fake.wait_until(
        lambda: (
            (h := first.pool.find(SessionKey(thread))) is not None
            and first.pool.running_on(h) is not None
        ),  # type: ignore[union-attr]
        what="A running",
    )
    b = await fake.user_says(thread, "B after the restart")
    await fake.wait_until(lambda: len(first.ledger.accepted) == 2, what="B accepted")
    await first.shutdown()

    kept = await fake.wait_for_message(thread, containing("is kept"))
    assert kept["message_reference"]["message_id"] == b["id"]
    cut = await fake.wait_for_message(thread, containing("shutting down"))
    assert cut["message_reference"]["message_id"] == a["id"]
    ledger = read_entries(paths.pending_file)
    assert [e["reply_to"]["message_id"] for e in ledger] == [b["id"]]

    crashed = await fake.user_says(fake.general_id, "C was running when the daemon died")
    crashed_entry = {
        "msg_id": "m0-crashed",
        "key": "global",
        "prompt": "C",
        "origin": "discord",
        "reply_to": {"channel_id": fake.general_id, "message_id": crashed["id"]},
        "accepted_at": "2026-11-25T00:00:00.000Z",
        "started": True,
    }
    with paths.pending_file.open("a") as journal:  # as the daemon writes it, then dies
        journal.write(json.dumps({"put": crashed_entry}) + "\n")

    second = await started_supervisor(paths, discord=True)
    try:
        answer = await fake.wait_for_message(
            thread, containing("Message: B after the restart"), timeout=30
        )
        assert answer["message_reference"]["message_id"] == b["id"]
        note = await fake.wait_for_message(fake.general_id, containing("did not finish"))
        assert note["message_reference"]["message_id"] == crashed["id"]
        await fake.wait_until(
            lambda: second.ledger.accepted == {} and second.ledger.recovered == []
        )
        await second._writes.join()
        assert read_entries(paths.pending_file) == []
    finally:
        await second.shutdown()


async def test_reload_with_a_new_token_reconnects_with_it(
    discord_daemon: DaemonFactory, fake_discord: FakeDiscord
) -> None:
    """1. The daemon serves with token A. 2. The bot's token is reset (A is now rejected)
    and settings.json gets token B; `claudeclaw reload`.
    Result: the daemon keeps serving (it used to exit: "the Discord client stopped"),
    reconnects with B and answers; the answer to a message Claude was working on during
    the reload is posted once, after it."""
    sup = await discord_daemon()
    serving = asyncio.create_task(sup.serve())
    fake = fake_discord
    dm = fake.dm_channel(fake.alice)
    busy = await fake.user_says(dm, "in flight SLEEP:1")
    await fake.wait_until(lambda: "⚙️" in fake.reactions[busy["id"]], what="running")
    behind = await fake.user_says(dm, "queued behind it")
    await fake.wait_until(lambda: "👀" in fake.reactions[behind["id"]], what="accepted")
    fake.token = "new-fake-bot-token-9876543210"
    document = json.loads(sup.paths.settings_file.read_text())
    document["discord"]["token"] = fake.token
    sup.paths.settings_file.write_text(json.dumps(document))
    identified = fake.identify_count
    old = sup.frontend
    cancel_all = old.follower.tasks.cancel_all

    async def slow_close_tail() -> None:  # the gateway is closed; the rest takes a while
        await asyncio.sleep(0.2)
        await cancel_all()

    old.follower.tasks.cancel_all = slow_close_tail
    applied, message = await sup.reload()
    assert applied, message
    assert fake.identify_count == identified + 1
    await fake.user_says(dm, "after the new token")
    await fake.wait_for_message(dm, containing("after the new token"), timeout=30)
    await fake.wait_for_message(dm, containing("in flight SLEEP:1"), timeout=30)
    await fake.wait_until(lambda: read_entries(sup.paths.pending_file) == [])
    await fake.wait_for_message(dm, containing("queued behind it"), timeout=30)
    await fake.wait_until(lambda: read_entries(sup.paths.pending_file) == [])
    assert len([m for m in fake.bot_messages(dm) if "queued behind it" in m["content"]]) == 1
    answers = [m for m in fake.bot_messages(dm) if "in flight SLEEP:1" in m["content"]]
    assert len(answers) == 1
    assert (answers[0].get("message_reference") or {}).get("message_id") == busy["id"]
    assert not serving.done()
    sup.stop_requested.set()
    await asyncio.wait_for(serving, 10)


async def test_a_reply_larger_than_a_frame_reaches_discord_whole(
    discord_daemon: DaemonFactory, fake_discord: FakeDiscord
) -> None:
    """Claude answers 3 MB. Result: one reply with its start and reply.md holding all of
    it (it used to hang the message and leak its run slot)."""
    await discord_daemon()
    fake = fake_discord
    dm = fake.dm_channel(fake.alice)
    await fake.user_says(dm, "BIGLINE:3000000")
    reply = await fake.wait_for_message(dm, lambda m: "reply.md" in m["content"], timeout=30)
    files = fake.sent_payloads[reply["id"]]["_files"]
    assert [f["size"] for f in files] == [3_000_000]


async def test_half_a_surrogate_pair_from_claude_or_discord_is_mended_not_poison(
    discord_daemon: DaemonFactory, fake_discord: FakeDiscord
) -> None:
    """1. Claude's answer holds half an emoji (a lone surrogate escape in its JSON).
    2. Alice then sends one herself.
    Result: both are answered on the same warm claude, each lone half shown as U+FFFD
    (it used to fail the reply's nonce, leaving the message unanswered)."""
    await discord_daemon()
    fake = fake_discord
    thread = fake.listen_thread_id
    await fake.user_says(thread, "HALFPAIR please")
    reply = await fake.wait_for_message(thread, containing("half an emoji"), timeout=30)
    assert reply["content"].endswith("half an emoji: \ufffd")
    await fake.user_says(thread, "and \udfff from me")  # the fake sends it escaped too
    second = await fake.wait_for_message(thread, containing("turn=2"), timeout=30)
    assert second["content"].endswith("Message: and \ufffd from me")


async def test_an_answer_discord_refused_is_posted_after_a_restart(
    make_project: Callable[..., ProjectPaths], fake_discord: FakeDiscord
) -> None:
    """1. A message is answered by Claude, but Discord fails the reply (500).
    2. The daemon stops while the reply is still being retried.
    3. Discord works again; the daemon starts.
    Result: the stored answer is posted as a reply to the message, without running Claude
    again (the session has one turn), and the pending ledger is empty."""
    fake = fake_discord
    paths = make_project(
        discord=discord_settings(fake),
    )

    thread = fake.listen_thread_id
    first = new_supervisor(paths, discord=True)
    first.drain_seconds = 0.5
    await first.startup()
    fake.fail_posts[thread] = 500
    asked = await fake.user_says(thread, "the answer must arrive")
    posts = lambda: [  # noqa: E731
        r for r in fake.requests if r.method == "POST" and r.path.endswith(f"{thread}/messages")
    ]
    await fake.wait_until(lambda: posts(), what="the reply was tried")
    await first.shutdown()
    stored = read_entries(paths.pending_file)
    assert [e["reply_to"]["message_id"] for e in stored] == [asked["id"]]
    assert "FAKE-REPLY turn=1" in stored[0]["answer"]["reply"]
    assert not fake.bot_messages(thread)

    del fake.fail_posts[thread]
    second = await started_supervisor(paths, discord=True)
    try:
        answer = await fake.wait_for_message(thread, containing("FAKE-REPLY turn=1"), timeout=30)
        assert answer["message_reference"]["message_id"] == asked["id"]
        assert "the answer must arrive" in answer["content"]
        await fake.wait_until(
            lambda: second.ledger.accepted == {} and second.ledger.recovered == []
        )
        await second._writes.join()
        assert read_entries(paths.pending_file) == []
        assert len(fake.bot_messages(thread)) == 1
    finally:
        await second.shutdown()


async def test_a_messages_channel_is_on_disk_before_it_shows_accepted(
    discord_daemon: DaemonFactory, fake_discord: FakeDiscord
) -> None:
    """A daemon killed right after a status reaction shows, before the ledger has the
    message, finds it again only by catching up in its channel (a DM has no session to name
    it). So the channel is noted on disk before the first reaction request goes out (this
    was a race: the fault suite lost a message under load); the message itself need not
    wait for it. A thread under a listen channel is not noted: catch-up finds it among
    the active threads the gateway lists."""
    from claudeclaw import jsonstore

    sup = await discord_daemon()
    fake = fake_discord
    dm = fake.dm_channel(fake.alice)
    follower = sup.frontend.follower
    original = follower._set_reaction  # the Discord call itself (react() only queues it)
    noted_when_shown: list[bool] = []

    async def set_reaction(message: Any, emoji: str, previous: str | None) -> None:
        if previous is None:  # its first status reaction (⚙️ here: it starts at once)
            stamps = jsonstore.read_json(sup.paths.discord_channels_file) or {}
            noted_when_shown.append(str(message.channel.id) in stamps)
        await original(message, emoji, previous)

    follower._set_reaction = set_reaction  # type: ignore[method-assign]
    said = await fake.user_says(dm, "hello")
    await fake.wait_for_message(
        dm, lambda m: (m.get("message_reference") or {}).get("message_id") == said["id"], timeout=30
    )
    assert noted_when_shown == [True]
    thread = await fake.create_thread(fake.listen_id, "listened")
    said = await fake.user_says(thread, "hello")
    await fake.wait_for_message(
        thread,
        lambda m: (m.get("message_reference") or {}).get("message_id") == said["id"],
        timeout=30,
    )
    assert noted_when_shown == [True, False]
    assert set(jsonstore.read_json(sup.paths.discord_channels_file)) == {dm}
