"""The Discord frontend under faults (real discord.py against the loopback fake Discord).

Replayed MESSAGE_CREATEs, replies Discord created behind a 500, slow and failing
reactions, bursts of queued messages, and secrets on every outbound path.
"""

from __future__ import annotations

import asyncio
import json
import stat
import types
from typing import Any

import discord
import pytest

from claudeclaw.agent import INBOX_FILE_MODE
from claudeclaw.frontend import answers, attachments, follow
from claudeclaw.model import GLOBAL_KEY, RunDone, RunFailed, RunProgress
from claudeclaw.paths import PRIVATE_FILE_MODE
from tests.fixtures_discord import message_text

KEY = "sk-ant-api03-" + "Q" * 40  # shaped like an Anthropic key: must never reach Discord


async def final_reactions(fake, message_id, emoji):  # type: ignore[no-untyped-def]
    return await fake.wait_until(
        lambda: fake.reactions[message_id] == [emoji] or None,
        what=f"only {emoji} on {message_id}",
    )


async def test_a_replayed_message_create_runs_and_is_answered_once(
    fake_discord, dispatcher, frontend
):
    fake = fake_discord
    dm = fake.dm_channel(fake.alice)
    msg = await fake.user_says(dm, "once please")
    await fake.wait_for_message(dm, lambda m: m["content"] == "echo: once please")
    await fake.redeliver(msg)  # the gateway replays it
    await fake.user_says(dm, "sentinel")
    await fake.wait_for_message(dm, lambda m: m["content"] == "echo: sentinel")
    assert [message_text(s.prompt) for s in dispatcher.submissions] == ["once please", "sentinel"]
    assert [m["content"] for m in fake.bot_messages(dm)].count("echo: once please") == 1


async def test_a_reply_discord_created_behind_500s_is_posted_once(
    fake_discord, dispatcher, frontend, monkeypatch: pytest.MonkeyPatch
):
    """Discord creates the reply but answers 500 to all five of discord.py's tries;
    our own retry sends the same nonce, so Discord returns the message it has."""
    real_sleep = asyncio.sleep
    fast = types.SimpleNamespace(**vars(asyncio))
    fast.sleep = lambda delay, result=None: real_sleep(0, result)  # discord.py's 1+2n s waits
    monkeypatch.setattr(discord.http, "asyncio", fast)
    fake = fake_discord
    dm = fake.dm_channel(fake.alice)
    fake.fail_after_create[dm] = 5
    msg = await fake.user_says(dm, "exactly one")
    await final_reactions(fake, msg["id"], "✅")
    replies = [m for m in fake.bot_messages(dm) if m["content"] == "echo: exactly one"]
    assert len(replies) == 1
    posts = [r for r in fake.requests if r.method == "POST" and r.path.endswith(f"{dm}/messages")]
    assert len(posts) == 6 and len({p.json["nonce"] for p in posts}) == 1


async def test_slow_reactions_do_not_hold_up_the_reply(fake_discord, dispatcher, frontend):
    fake = fake_discord
    fake.reaction_gate = asyncio.Event()  # every reaction call hangs until set
    dm = fake.dm_channel(fake.alice)
    msg = await fake.user_says(dm, "fast answer")
    await fake.wait_for_message(dm, lambda m: m["content"] == "echo: fast answer")
    assert fake.reactions[msg["id"]] == []  # none has gone through yet
    fake.reaction_gate.set()
    await final_reactions(fake, msg["id"], "✅")


async def test_a_hanging_typing_call_neither_holds_up_the_reply_nor_loses_its_connection(
    fake_discord, dispatcher, frontend
):
    """The typing call still hangs when the answer is ready: the answer goes out anyway
    (posting it ends the indicator on Discord). The call is let finish, not cancelled, so
    its keep-alive connection stays open (cancelling closes it, and the next call to
    Discord would open and TLS-handshake a new one)."""
    fake = fake_discord
    fake.typing_gate = asyncio.Event()
    dm = fake.dm_channel(fake.alice)
    typing_asked = asyncio.Event()
    dispatcher.script = lambda key, prompt: [typing_asked]  # the answer waits for the call

    async def answer_once_typing_is_asked() -> None:
        await fake.wait_until(lambda: fake.typing[dm], what="the typing call")
        typing_asked.set()

    answering = asyncio.create_task(answer_once_typing_is_asked())
    msg = await fake.user_says(dm, "typing is slow")
    await fake.wait_for_message(dm, lambda m: m["content"] == "echo: typing is slow")
    await final_reactions(fake, msg["id"], "✅")
    assert not fake.typing_gate.is_set() and fake.typing[dm] == 1  # still unanswered
    await answering
    (call,) = [r for r in fake.requests if r.path.endswith("/typing")]
    fake.typing_gate.set()
    await fake.wait_until(
        lambda: not frontend.follower.tasks.named("typing"),
        what="the typing call answered",
    )
    dispatcher.script = lambda key, prompt: []
    await fake.user_says(dm, "and another")  # a full round trip later
    await fake.wait_for_message(dm, lambda m: m["content"] == "echo: and another")
    assert not call.transport.is_closing()


async def test_the_typing_indicator_is_renewed_while_claude_works_and_stops_with_the_reply(
    fake_discord, dispatcher, frontend, monkeypatch: pytest.MonkeyPatch
):
    """A long run renews the indicator every TYPING_REFRESH_SECONDS (8 s; shortened here),
    one call each, and its renewal loop is gone once the reply is out."""
    monkeypatch.setattr(follow, "TYPING_REFRESH_SECONDS", 0.01)
    fake = fake_discord
    dm = fake.dm_channel(fake.alice)
    renewed = asyncio.Event()
    dispatcher.script = lambda key, prompt: [renewed]  # the run lasts until then

    async def answer_after_three_calls() -> None:
        await fake.wait_until(lambda: fake.typing[dm] >= 3, what="the indicator renewed twice")
        renewed.set()

    answering = asyncio.create_task(answer_after_three_calls())
    msg = await fake.user_says(dm, "take your time")
    await fake.wait_for_message(dm, lambda m: m["content"] == "echo: take your time")
    await final_reactions(fake, msg["id"], "✅")
    await answering
    renewing = frontend.follower.tasks.named("typing")
    assert renewing == []  # ended with the run, not left to call every 8 s


async def test_failing_reactions_do_not_stop_the_reply(fake_discord, dispatcher, frontend):
    fake = fake_discord
    fake.reaction_status = 403
    dm = fake.dm_channel(fake.alice)
    await fake.user_says(dm, "no reactions allowed")
    await fake.wait_for_message(dm, lambda m: m["content"] == "echo: no reactions allowed")


async def test_queue_notices_only_for_real_waits_and_one_per_burst(
    fake_discord, dispatcher, make_frontend
):
    fake = fake_discord
    frontend = await make_frontend()
    frontend.follower.queue_notice_after = 30.0
    dm = fake.dm_channel(fake.alice)
    gate = asyncio.Event()
    dispatcher.script = lambda key, prompt: [gate] if "slow" in prompt else []
    await fake.user_says(dm, "slow one")
    await dispatcher.wait_until(lambda: dispatcher.running)
    await fake.user_says(dm, "short wait")
    await dispatcher.wait_until(lambda: len(dispatcher.submissions) == 2)
    gate.set()
    await fake.wait_for_message(dm, lambda m: m["content"] == "echo: short wait")
    assert not [m for m in fake.bot_messages(dm) if "Queued" in m["content"]]

    frontend.follower.queue_notice_after = 0.05
    gate.clear()
    # each queued message decides once its wait is over whether to say so; await those
    # decisions before the queue moves (a late one would rightly see the channel free)
    decided: list[str] = []
    original = frontend.follower._queue_notice

    async def queue_notice(channel: Any, text: str, running: asyncio.Event) -> None:
        try:
            await original(channel, text, running)
        finally:
            decided.append(text)

    frontend.follower._queue_notice = queue_notice
    await fake.user_says(dm, "slow two")
    await dispatcher.wait_until(lambda: len(dispatcher.submissions) == 3 and dispatcher.running)
    for n in range(6):
        await fake.user_says(dm, f"burst {n}")
    await fake.wait_for_message(dm, lambda m: "Queued" in m["content"])
    await dispatcher.wait_until(lambda: len(dispatcher.submissions) == 9)
    # five stayed quiet; the sixth posted the notice and holds the channel until it runs
    await fake.wait_until(lambda: len(decided) == 5, what="the queued messages decided")
    gate.set()
    await fake.wait_for_message(dm, lambda m: m["content"] == "echo: burst 5")
    assert sum("Queued" in m["content"] for m in fake.bot_messages(dm)) == 1


async def test_no_secret_leaves_on_any_outbound_path(fake_discord, dispatcher, make_frontend):
    """A key-shaped secret in a tool's input (progress message), in the answer (reply),
    in a long answer (reply.md), in an error (failure note) and in /status's last error:
    nothing the bot sends to Discord contains it."""
    fake = fake_discord
    await make_frontend(progress_after_seconds=0.0, progress_edit_interval_seconds=0.05)
    dm = fake.dm_channel(fake.alice)
    shown = asyncio.Event()
    long_answer = "\n\n".join(f"part {n} " + "x" * 1900 for n in range(10)) + f" {KEY}"

    def script(key, prompt):  # type: ignore[no-untyped-def]
        text = message_text(prompt)
        if text == "tool":
            return [
                RunProgress(msg_id="", tool="Bash", summary=f"curl -H 'x-api-key: {KEY}'"),
                shown,
                RunDone(msg_id="", reply=f"the key is {KEY}", session_id="s"),
            ]
        if text == "long":
            return [RunDone(msg_id="", reply=long_answer, session_id="s")]
        return [RunFailed(msg_id="", reason="error", message=f"Claude failed: {KEY} rejected")]

    dispatcher.script = script
    await fake.user_says(dm, "tool")
    await fake.wait_for_message(dm, lambda m: "Working" in m["content"])
    shown.set()
    await fake.wait_for_message(dm, lambda m: m["content"].startswith("the key is"))
    await fake.user_says(dm, "long")
    await fake.wait_for_message(dm, lambda m: "reply.md" in m["content"])
    await fake.user_says(dm, "fail")
    await fake.wait_for_message(dm, lambda m: "rejected" in m["content"])
    dispatcher.last_errors[GLOBAL_KEY] = f"error: {KEY} was refused"
    await fake.slash_command(fake.general_id, "status")
    await fake.wait_until(lambda: fake.interaction_callbacks or None)

    bodies = [json.dumps(r.json, ensure_ascii=False) for r in fake.requests if r.json]
    assert bodies and not [b for b in bodies if KEY in b]
    assert fake.file_texts and not [t for t in fake.file_texts if KEY in t]
    assert any("[redacted]" in t for t in fake.file_texts)
    assert not [e for edits in fake.edits.values() for e in edits if KEY in e]
    assert sum("[redacted]" in b for b in bodies) >= 3


async def test_messages_sent_while_the_bot_was_away_are_answered_in_order(
    fake_discord, dispatcher, make_frontend
):
    """While the bot is not connected: two mentions in a thread with a session (between
    them chatter from someone not on the allowlist), one in the listen channel, one in a
    thread created under it meanwhile (no session, not noted on disk: found among the
    active threads the gateway lists), one mention already answered by the bot, and one
    from two hours ago. After connecting: the four missed ones are answered, the thread's
    two in order; the others are not run."""
    import time

    from tests.fake_discord import snowflake

    fake = fake_discord
    dispatcher.add_session(fake.thread_id)
    at_bot = f"<@{fake.bot['id']}>"
    thread = fake.thread_id
    answered = await fake.user_says(thread, f"{at_bot} answered before", mentions=[fake.bot])
    reply = fake._message_payload(thread, fake.bot, "done", message_type=19, referenced=answered)
    fake.messages[thread].append(reply)
    stale = fake._message_payload(thread, fake.alice, f"{at_bot} too old", mentions=[fake.bot])
    stale["id"] = snowflake(at=time.time() - 7200)
    fake.messages[thread].append(stale)
    await fake.user_says(thread, f"{at_bot} missed one", mentions=[fake.bot])
    await fake.user_says(thread, "chatter, not for the bot", author=fake.bob)
    await fake.user_says(thread, f"{at_bot} missed two", mentions=[fake.bot])
    await fake.user_says(fake.listen_id, "missed in the listen channel")
    new_thread = await fake.create_thread(fake.listen_id, "started while away")
    await fake.user_says(new_thread, "missed in a new thread")

    frontend = await make_frontend()
    await frontend.resume([])  # the daemon hands over its ledger (empty), then catch-up
    await fake.wait_for_message(thread, lambda m: m["content"] == "echo: missed two")
    await fake.wait_for_message(
        fake.listen_id, lambda m: m["content"] == "echo: missed in the listen channel"
    )
    await fake.wait_for_message(
        new_thread, lambda m: m["content"] == "echo: missed in a new thread"
    )
    texts = [message_text(s.prompt) for s in dispatcher.submissions]
    assert sorted(texts) == [
        "missed in a new thread",
        "missed in the listen channel",
        "missed one",
        "missed two",
    ]
    assert texts.index("missed one") < texts.index("missed two")
    replies = [m["content"] for m in fake.bot_messages(thread)]
    assert replies.index("echo: missed one") < replies.index("echo: missed two")


@pytest.mark.parametrize("two_users", [False, True], ids=["one-user", "two-users"])
async def test_huge_attachments_reach_claude_as_a_file_not_a_poison_prompt(
    fake_discord, dispatcher, frontend, monkeypatch: pytest.MonkeyPatch, two_users: bool
):
    """Ten text attachments of 51,200 emoji each (6 MB once JSON-escaped: more than an
    IPC frame). Result: the prompt stays small and points at a file holding all of it,
    private to the daemon, or readable by the agent that runs claude in two-user mode
    (shared like the attachments themselves)."""
    if two_users:
        monkeypatch.setattr(attachments, "agent_account", lambda: object())
    fake = fake_discord
    dm = fake.dm_channel(fake.alice)
    big = ("😀" * 51_200).encode()
    files = [
        {"filename": f"e{n}.txt", "content_type": "text/plain", "data": big} for n in range(10)
    ]
    await fake.user_says(dm, "read these", attachments=files)
    await fake.wait_for_message(dm)
    prompt = dispatcher.submissions[0].prompt
    assert len(json.dumps(prompt)) < 4096
    saved = [p for p in (frontend._paths.inbox_dir / "global").glob("*-message.txt")]
    assert len(saved) == 1 and str(saved[0]) in prompt
    text = saved[0].read_text()
    assert text.startswith("Message: read these") and text.count("😀") == 10 * 51_200
    mode = stat.S_IMODE(saved[0].stat().st_mode)
    assert mode == (INBOX_FILE_MODE if two_users else PRIVATE_FILE_MODE)


async def test_a_reply_sent_as_a_file_by_the_worker_is_uploaded_whole(
    fake_discord, dispatcher, frontend
):
    fake = fake_discord
    replies = frontend._paths.replies_dir
    replies.mkdir(parents=True)
    whole = "y" * 3_000_000 + f" {KEY}"
    (replies / "m1.md").write_text(whole)
    dispatcher.script = lambda key, prompt: [
        RunDone(msg_id="", reply="y" * 4000, session_id="s", reply_file=str(replies / "m1.md"))
    ]
    dm = fake.dm_channel(fake.alice)
    msg = await fake.user_says(dm, "write a lot")
    await final_reactions(fake, msg["id"], "✅")
    posted = [m for m in fake.bot_messages(dm) if "reply.md" in m["content"]]
    assert len(posted) == 1
    assert fake.file_texts[-1].startswith("y" * 1000)
    assert len(fake.file_texts[-1]) == 3_000_000 + 1 + len("[redacted]")
    assert not (replies / "m1.md").exists()  # delivered: removed


async def test_a_lone_surrogate_in_discord_json_is_mended_and_answered_not_poison(
    fake_discord, dispatcher, frontend
):
    """JSON may carry half a surrogate pair ("\\ud83d"); orjson (discord.py's JSON here)
    refuses it and UTF-8 cannot hold it. The message is read with U+FFFD in its place and
    answered on the same gateway connection, and so are the messages after it."""
    fake = fake_discord
    dm = fake.dm_channel(fake.alice)
    await fake.user_says(dm, "half a pair \ud83d here")  # sent by the fake as an escape
    mended = "half a pair \ufffd here"
    await fake.wait_for_message(dm, lambda m: m["content"] == f"echo: {mended}")
    await fake.user_says(dm, "sentinel")
    await fake.wait_for_message(dm, lambda m: m["content"] == "echo: sentinel")
    assert [message_text(s.prompt) for s in dispatcher.submissions] == [mended, "sentinel"]
    assert (fake.identify_count, fake.resume_count) == (1, 0)  # never dropped the gateway


async def test_an_answer_that_crashes_our_posting_code_becomes_a_note_and_is_let_go(
    fake_discord, dispatcher, frontend, monkeypatch: pytest.MonkeyPatch
):
    """A bug on one answer's text (here: rendering raises) must not leave its message
    unanswered, nor keep it in the ledger to fail again after each restart."""
    real_render = answers.render_reply

    def render(text: str, *args: Any, **kwargs: Any) -> Any:
        if "BOOM" in text:
            raise RuntimeError("a bug")
        return real_render(text, *args, **kwargs)

    monkeypatch.setattr(answers, "render_reply", render)
    fake = fake_discord
    dm = fake.dm_channel(fake.alice)
    msg = await fake.user_says(dm, "BOOM please")
    note = await fake.wait_for_message(dm, lambda m: "could not post this answer" in m["content"])
    assert "RuntimeError" in note["content"] and "BOOM" not in note["content"]
    await final_reactions(fake, msg["id"], "❌")
    sentinel = await fake.user_says(dm, "sentinel")
    await fake.wait_for_message(dm, lambda m: m["content"] == "echo: sentinel")
    await final_reactions(fake, sentinel["id"], "✅")
    # the crashed one is let go, not kept to be retried
    await fake.wait_until(lambda: len(dispatcher.delivered_ids) == 2, what="both let go")
    assert len(set(dispatcher.delivered_ids)) == 2
