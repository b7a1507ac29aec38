"""answers.py: an answer Discord will never take is kept on disk and given up; an answer
to a message deleted meanwhile is still posted (real discord.py against the fake Discord).

The same across a real daemon restart: ``tests/test_faults.py``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import pytest
from structlog.testing import capture_logs

from claudeclaw.model import GLOBAL_KEY, PendingMessage, ReplyTo, RunDone, session_key
from tests.fake_discord import DISCORD_ERRORS, FakeDiscord


def posts_to(fake: FakeDiscord, channel: str) -> int:
    return sum(
        1 for r in fake.requests if r.method == "POST" and r.path.endswith(f"/{channel}/messages")
    )


def undeliverable(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] == "discord.answer_undeliverable"]


async def given_up(fake: FakeDiscord, logs: list[dict[str, Any]]) -> dict[str, Any]:
    found = await fake.wait_until(lambda: undeliverable(logs), what="the answer given up")
    return found[0]


@pytest.mark.parametrize("code", [10003, 50001, 50013])
async def test_an_answer_discord_will_never_take_is_saved_and_given_up(
    fake_discord, dispatcher, frontend, code
):
    """Discord answers the reply 404 Unknown Channel / 403 Missing Access / 403 Missing
    Permissions: one attempt, the answer stays in undelivered/ (0600) with the reason, the
    ledger lets it go, one warning names message, channel, reason and file, it is counted,
    and nothing retries it."""
    fake = fake_discord
    dm = fake.dm_channel(fake.alice)
    fake.refuse_posts[dm] = code
    with capture_logs() as logs:
        msg = await fake.user_says(dm, "an answer for nowhere")
        event = await given_up(fake, logs)
    status, text = DISCORD_ERRORS[code]
    assert (event["status"], event["code"]) == (status, code)
    assert text in event["reason"]
    assert str(event["message_id"]) == msg["id"] and str(event["channel_id"]) == dm
    assert event["log_level"] == "warning"
    saved = frontend._paths.undelivered_dir / event["file"].rsplit("/", 1)[-1]
    content = saved.read_text()
    assert "echo: an answer for nowhere" in content and text in content
    assert saved.stat().st_mode & 0o777 == 0o600
    assert len(dispatcher.delivered_ids) == 1  # settled: not tried again after a restart
    assert posts_to(fake, dm) == 1  # a 404/403 is not retried
    assert not frontend._tasks.named("redeliver")
    assert frontend.summary()["undeliverable_answers"] == 1
    assert len(undeliverable(logs)) == 1
    await fake.wait_for_reaction(msg["id"], "❌")


async def test_an_answer_to_a_channel_deleted_while_claude_worked_is_kept_on_disk(
    fake_discord, dispatcher, frontend
):
    """An admin deletes the channel while Claude works: Discord answers 404 10003."""
    fake = fake_discord
    gate = asyncio.Event()
    dispatcher.script = lambda key, prompt: [gate]
    with capture_logs() as logs:
        msg = await fake.user_says(fake.listen_id, "long job")
        await dispatcher.wait_until(lambda: dispatcher.running)
        await fake.delete_channel(fake.listen_id)
        gate.set()
        event = await given_up(fake, logs)
    assert event["code"] == 10003 and "channel is gone" in event["reason"]
    assert str(event["message_id"]) == msg["id"]
    assert (
        "echo: long job"
        in frontend._paths.undelivered_dir.joinpath(event["file"].rsplit("/", 1)[-1]).read_text()
    )
    assert len(dispatcher.delivered_ids) == 1
    assert not frontend._tasks.named("redeliver")


async def test_an_answer_to_a_message_deleted_meanwhile_is_posted_as_a_plain_message(
    fake_discord, dispatcher, frontend
):
    """The author deletes their message while Claude works: the answer still goes to the
    channel (a reply to a missing message is sent with fail_if_not_exists false, which
    Discord posts without the reference instead of refusing it with 400 50035)."""
    fake = fake_discord
    gate = asyncio.Event()
    dispatcher.script = lambda key, prompt: [gate]
    dm = fake.dm_channel(fake.alice)
    msg = await fake.user_says(dm, "never mind, but answer")
    await dispatcher.wait_until(lambda: dispatcher.running)
    await fake.user_deletes(dm, msg["id"])
    gate.set()
    reply = await fake.wait_for_message(dm, lambda m: "never mind" in m["content"])
    assert "message_reference" not in reply  # posted, just not as a reply
    sent = fake.sent_payloads[reply["id"]]["message_reference"]
    assert sent["fail_if_not_exists"] is False
    await dispatcher.wait_until(lambda: dispatcher.delivered_ids)
    assert not list(frontend._paths.undelivered_dir.glob("*.md"))
    assert frontend.summary()["undeliverable_answers"] == 0


def left_over(channel: str, message: str, *, answer: str | None, started: bool = True):
    msg_id = "m-" + message[-6:]
    return PendingMessage(
        msg_id=msg_id,
        key=GLOBAL_KEY if answer is None else session_key(channel),
        prompt="p",
        origin="discord",
        reply_to=ReplyTo(channel, message),
        accepted_at=dt.datetime.now(dt.UTC).isoformat(),
        started=started,
        answer=None if answer is None else RunDone(msg_id=msg_id, reply=answer, session_id="s"),
    )


async def test_after_a_restart_an_answer_whose_message_is_gone_is_still_posted(
    fake_discord, dispatcher, frontend
):
    """The ledger holds an answer; its message was deleted while the daemon was down: the
    answer goes to the channel as a plain message, and the ledger lets it go."""
    fake = fake_discord
    msg = await fake.user_says(fake.thread_id, "asked before the restart", author=fake.bob)
    await fake.user_deletes(fake.thread_id, msg["id"])
    item = left_over(fake.thread_id, msg["id"], answer="the kept answer")
    await frontend.resume([item])
    reply = await fake.wait_for_message(fake.thread_id, lambda m: m["content"] == "the kept answer")
    assert "message_reference" not in reply
    await dispatcher.wait_until(lambda: dispatcher.delivered_ids == [item.msg_id])


async def test_after_a_restart_an_answer_whose_channel_is_gone_is_kept_on_disk(
    fake_discord, dispatcher, frontend
):
    """The thread was deleted while the daemon was down: its stored answer is not thrown
    away (it was before), it is saved, settled and named; a note for a run that had
    started, with nothing of Claude's in it, just leaves the ledger as before."""
    fake = fake_discord
    msg = await fake.user_says(fake.thread_id, "asked before the restart", author=fake.bob)
    thread = fake.thread_id
    await fake.delete_thread(thread)
    answered = left_over(thread, msg["id"], answer="work worth keeping")
    interrupted = left_over(thread, str(int(msg["id"]) + 1), answer=None)
    with capture_logs() as logs:
        await frontend.resume([answered, interrupted])
        event = await given_up(fake, logs)
        await dispatcher.wait_until(lambda: len(dispatcher.delivered_ids) == 2)
    assert str(event["channel_id"]) == thread and event["code"] == 10003
    saved = list(frontend._paths.undelivered_dir.glob("*.md"))
    assert len(saved) == 1 and "work worth keeping" in saved[0].read_text()
    assert sorted(dispatcher.delivered_ids) == sorted([answered.msg_id, interrupted.msg_id])
    assert [e["message_id"] for e in logs if e["event"] == "discord.pending_lost"] == [
        interrupted.reply_to.message_id
    ]
    assert frontend.summary()["undeliverable_answers"] == 1
