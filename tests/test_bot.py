"""End-to-end: the real discord.py client against the loopback fake Discord.

Triggers, refusals, routing keys, replies (splitting, mentions, reactions), queueing,
parallel threads, progress, failures, undelivered replies, attachments.
"""

from __future__ import annotations

import asyncio
import stat

import pytest
from structlog.testing import capture_logs

from claudeclaw.config import Settings
from claudeclaw.errors import ConfigError
from claudeclaw.model import GLOBAL_KEY, RunDone, RunFailed, RunProgress
from tests.fixtures_discord import discord_settings, message_text


def done(reply: str) -> RunDone:
    return RunDone(msg_id="", reply=reply, session_id="s")


async def final_reactions(fake, message_id, emoji):
    return await fake.wait_until(
        lambda: fake.reactions[message_id] == [emoji] or None,
        what=f"only {emoji} on {message_id}",
    )


async def assert_ignored_then_answered(fake, dispatcher, channel_id, send_ignored):
    """Send something that must be ignored, then a DM that is answered: only the DM runs."""
    before = len(dispatcher.submissions)
    await send_ignored()
    dm = fake.dm_channel(fake.alice)
    await fake.user_says(dm, "sentinel")
    await fake.wait_for_message(dm, lambda m: m["content"] == "echo: sentinel")
    assert [message_text(s.prompt) for s in dispatcher.submissions[before:]] == ["sentinel"]
    assert not fake.bot_messages(channel_id) or channel_id == dm


# ---- triggers and keys -----------------------------------------------------------------


async def test_dm_is_answered_as_a_reply_on_the_global_key(fake_discord, dispatcher, frontend):
    fake = fake_discord
    dm = fake.dm_channel(fake.alice)
    msg = await fake.user_says(dm, "hello there")
    reply = await fake.wait_for_message(dm)
    assert reply["content"] == "echo: hello there"
    assert dispatcher.submissions[0].key == GLOBAL_KEY
    assert dispatcher.submissions[0].origin == "discord"
    payload = fake.sent_payloads[reply["id"]]
    assert str(payload["message_reference"]["message_id"]) == msg["id"]
    assert payload["allowed_mentions"] == {"parse": [], "replied_user": True}
    await final_reactions(fake, msg["id"], "✅")
    # its run started at once: ⚙️ is its first reaction, no 👀 a few milliseconds before it
    assert [(op, e) for op, m, e in fake.reaction_log if m == msg["id"]] == [
        ("add", "⚙️"),
        ("add", "✅"),
        ("remove", "⚙️"),
    ]
    # (typing: an instant answer may end before its request goes out; see test_bot_faults)


async def test_prompt_has_clock_channel_author_and_stripped_mention(
    fake_discord, dispatcher, make_frontend
):
    fake = fake_discord
    await make_frontend(channel_names={fake.general_id: "general-chat"})
    await fake.user_says(fake.general_id, f"<@{fake.bot['id']}> what's up", mentions=[fake.bot])
    await fake.wait_for_message(fake.general_id)
    lines = dispatcher.submissions[0].prompt.splitlines()
    assert lines[0].startswith("[20") and lines[0].endswith("UTC+0]")
    assert lines[1:] == [
        "[Discord Channel: general-chat]",
        "[Discord from alice]",
        "Message: what's up",
    ]


async def test_mention_in_a_thread_uses_the_thread_key(fake_discord, dispatcher, frontend):
    fake = fake_discord
    await fake.user_says(fake.thread_id, f"<@{fake.bot['id']}> start", mentions=[fake.bot])
    await fake.wait_for_message(fake.thread_id)
    assert dispatcher.submissions[0].key == fake.thread_id


async def test_listen_channel_and_its_threads(fake_discord, dispatcher, frontend):
    fake = fake_discord
    await fake.user_says(fake.listen_id, "in the channel")
    await fake.wait_for_message(fake.listen_id)
    await fake.user_says(fake.listen_thread_id, "in the thread")
    await fake.wait_for_message(fake.listen_thread_id)
    assert [s.key for s in dispatcher.submissions] == [GLOBAL_KEY, fake.listen_thread_id]


async def test_reply_to_the_bot_is_a_trigger(fake_discord, dispatcher, frontend):
    fake = fake_discord
    await fake.user_says(fake.listen_id, "first")
    bot_msg = await fake.wait_for_message(fake.listen_id)
    general_copy = {**bot_msg, "channel_id": fake.general_id}
    fake.messages[fake.general_id].append(general_copy)
    await fake.user_says(fake.general_id, "a reply to you", referenced=general_copy)
    reply = await fake.wait_for_message(
        fake.general_id, lambda m: m["content"] == "echo: a reply to you"
    )
    assert reply


async def test_listen_guild_answers_every_channel(fake_discord, dispatcher, make_frontend):
    fake = fake_discord
    await make_frontend(listen_guilds=(fake.guild_id,))
    await fake.user_says(fake.general_id, "anything")
    await fake.wait_for_message(fake.general_id)
    await fake.user_says(fake.thread_id, "in a thread")
    await fake.wait_for_message(fake.thread_id)
    assert [s.key for s in dispatcher.submissions] == [GLOBAL_KEY, fake.thread_id]


async def test_channel_scope_gives_each_channel_its_own_key(
    fake_discord, dispatcher, make_frontend
):
    fake = fake_discord
    await make_frontend(session_scope="channel")
    await fake.user_says(fake.listen_id, "x")
    await fake.wait_for_message(fake.listen_id)
    dm = fake.dm_channel(fake.alice)
    await fake.user_says(dm, "y")
    await fake.wait_for_message(dm)
    assert [s.key for s in dispatcher.submissions] == [fake.listen_id, GLOBAL_KEY]


async def test_plain_guild_message_is_ignored(fake_discord, dispatcher, frontend):
    fake = fake_discord

    async def send():
        await fake.user_says(fake.general_id, "just chatting")
        await fake.user_says(fake.thread_id, "thread chatter, no mention")

    await assert_ignored_then_answered(fake, dispatcher, fake.general_id, send)
    assert not fake.bot_messages(fake.thread_id)


async def test_system_and_bot_and_empty_messages_are_ignored(fake_discord, dispatcher, frontend):
    fake = fake_discord
    other_bot = {**fake.bob, "bot": True}

    async def send():
        await fake.user_says(fake.listen_id, "thread created", message_type=18)
        await fake.user_says(fake.listen_id, "pinned", message_type=6)
        await fake.user_says(fake.listen_id, "from a bot", author=other_bot)
        await fake.user_says(fake.listen_id, "")

    await assert_ignored_then_answered(fake, dispatcher, fake.listen_id, send)
    # the bot's own replies come back over the gateway and are not answered either
    assert len(dispatcher.submissions) == 1


async def test_the_bots_own_echo_never_becomes_a_message(fake_discord, dispatcher, frontend):
    """The gateway echoes every reply the bot posts; it is dropped at its raw payload,
    before discord.py builds a ``Message`` of it for ``_take`` to throw away."""
    fake = fake_discord
    authors: list[str] = []
    take = frontend._take

    def spy(message, *, from_gateway):
        authors.append(str(message.author.id))
        return take(message, from_gateway=from_gateway)

    frontend._take = spy
    dm = fake.dm_channel(fake.alice)
    await fake.user_says(dm, "one")
    await fake.wait_for_message(dm, lambda m: m["content"] == "echo: one")
    await fake.user_says(dm, "two")  # the gateway is ordered: the echo of "one" came first
    await fake.wait_for_message(dm, lambda m: m["content"] == "echo: two")
    assert len(fake.bot_messages(dm)) == 2  # (the fake echoes each as MESSAGE_CREATE)
    assert authors == [fake.alice["id"], fake.alice["id"]]


# ---- who may use it --------------------------------------------------------------------


async def test_unauthorized_dm_is_refused_and_guild_ignored(fake_discord, dispatcher, frontend):
    fake = fake_discord
    dm = fake.dm_channel(fake.bob)
    await fake.user_says(dm, "let me in", author=fake.bob)
    refusal = await fake.wait_for_message(dm)
    assert refusal["content"] == "Unauthorized."

    async def send():
        await fake.user_says(fake.listen_id, "me too", author=fake.bob)

    await assert_ignored_then_answered(fake, dispatcher, fake.listen_id, send)
    assert all(s.key == GLOBAL_KEY for s in dispatcher.submissions)
    assert len(dispatcher.submissions) == 1


async def test_empty_allowlist_answers_nobody_and_says_how_to_fix(
    fake_discord, dispatcher, make_frontend
):
    fake = fake_discord
    with capture_logs() as logs:
        await make_frontend(allowed_user_ids=())
    hints = [e for e in logs if e["event"] == "discord.allowlist_empty"]
    assert len(hints) == 1 and "allowedUserIds" in hints[0]["hint"]
    dm = fake.dm_channel(fake.alice)
    await fake.user_says(dm, "hi")
    assert (await fake.wait_for_message(dm))["content"] == "Unauthorized."
    assert dispatcher.submissions == []


async def test_allow_everyone_and_reload(fake_discord, dispatcher, make_frontend):
    fake = fake_discord
    frontend = await make_frontend()
    dm = fake.dm_channel(fake.bob)
    await fake.user_says(dm, "one", author=fake.bob)
    await fake.wait_for_message(dm, lambda m: m["content"] == "Unauthorized.")
    frontend.apply_settings(Settings(discord=discord_settings(fake, allow_everyone=True)))
    await fake.user_says(dm, "two", author=fake.bob)
    await fake.wait_for_message(dm, lambda m: m["content"] == "echo: two")
    frontend.apply_settings(Settings(discord=discord_settings(fake, listen_channels=())))
    await fake.user_says(fake.listen_id, "no longer listened")
    await assert_ignored_then_answered(fake, dispatcher, fake.listen_id, lambda: asyncio.sleep(0))


# ---- replies ---------------------------------------------------------------------------


async def test_long_reply_is_split_and_only_the_first_chunk_replies(
    fake_discord, dispatcher, frontend
):
    fake = fake_discord
    text = "\n\n".join(f"Paragraph {i}. " + " ".join(["lorem ipsum"] * 30) for i in range(20))
    dispatcher.script = lambda key, prompt: [done(text)]
    dm = fake.dm_channel(fake.alice)
    msg = await fake.user_says(dm, "long please")
    await final_reactions(fake, msg["id"], "✅")
    chunks = fake.bot_messages(dm)
    assert len(chunks) >= 3
    assert all(len(c["content"]) <= 2000 for c in chunks)
    assert "\n\n".join(c["content"] for c in chunks) == text
    payloads = [fake.sent_payloads[c["id"]] for c in chunks]
    assert "message_reference" in payloads[0]
    assert all("message_reference" not in p for p in payloads[1:])
    assert all(p["allowed_mentions"] == {"parse": []} for p in payloads[1:])


async def test_model_output_cannot_ping(fake_discord, dispatcher, frontend):
    fake = fake_discord
    dispatcher.script = lambda key, prompt: [done("@everyone <@123> <@&456> look")]
    dm = fake.dm_channel(fake.alice)
    await fake.user_says(dm, "ping them")
    reply = await fake.wait_for_message(dm)
    assert fake.sent_payloads[reply["id"]]["allowed_mentions"]["parse"] == []


async def test_react_directive_reacts_and_is_removed(fake_discord, dispatcher, frontend):
    fake = fake_discord
    dispatcher.script = lambda key, prompt: [done("Nice! [react:🎉] [react:👍]")]
    dm = fake.dm_channel(fake.alice)
    msg = await fake.user_says(dm, "I did it")
    reply = await fake.wait_for_message(dm)
    assert reply["content"] == "Nice!"
    reactions = await fake.wait_until(
        lambda: fake.reactions[msg["id"]] if "✅" in fake.reactions[msg["id"]] else None
    )
    assert "🎉" in reactions and "👍" not in reactions


async def test_empty_reply_says_so(fake_discord, dispatcher, frontend):
    fake = fake_discord
    dispatcher.script = lambda key, prompt: [done("")]
    dm = fake.dm_channel(fake.alice)
    await fake.user_says(dm, "say nothing")
    assert (await fake.wait_for_message(dm))["content"] == "(empty response)"


@pytest.mark.parametrize(
    ("failure", "needle"),
    [
        (RunFailed(msg_id="", reason="timeout", message="idle for 600s"), "Timed out"),
        (
            RunFailed(
                msg_id="", reason="rate_limited", message="", retry_at="2026-05-02T15:00:00Z"
            ),
            "<t:1777734000:t>",
        ),
        (RunFailed(msg_id="", reason="crashed", message=""), "crashed"),
        (RunFailed(msg_id="", reason="error", message="API Error: 500"), "API Error: 500"),
    ],
)
async def test_failures_get_a_clear_message_and_a_cross(
    fake_discord, dispatcher, frontend, failure, needle
):
    fake = fake_discord
    dispatcher.script = lambda key, prompt: [failure]
    dm = fake.dm_channel(fake.alice)
    msg = await fake.user_says(dm, "do it")
    reply = await fake.wait_for_message(dm)
    assert needle in reply["content"]
    await final_reactions(fake, msg["id"], "❌")


async def test_undelivered_reply_is_retried_then_saved(fake_discord, dispatcher, frontend):
    """Discord refuses the reply (503): it is retried, then saved to disk, and it gets no
    ✅ (the reply is not in Discord) and stays in the ledger; once Discord takes messages
    again it is posted, the saved copy goes, ✅ comes, and the ledger lets it go."""
    fake = fake_discord
    dm = fake.dm_channel(fake.alice)
    fake.fail_posts[dm] = 503  # a 5xx may pass later (a 403 is not retried: test_delivery)
    undelivered = frontend._paths.undelivered_dir
    with capture_logs() as logs:
        msg = await fake.user_says(dm, "important")
        saved = await fake.wait_until(lambda: list(undelivered.glob("*-global.md")))
    posts = [r for r in fake.requests if r.method == "POST" and r.path.endswith(f"{dm}/messages")]
    assert len(posts) >= 1 + len(frontend.delivery.retry_delays)
    assert len(saved) == 1
    assert "echo: important" in saved[0].read_text()
    assert stat.S_IMODE(saved[0].stat().st_mode) == 0o600
    assert any(e["event"] == "discord.reply_undelivered" for e in logs)
    assert "✅" not in fake.reactions[msg["id"]]
    assert not dispatcher.delivered_ids
    del fake.fail_posts[dm]
    await fake.wait_for_message(dm, lambda m: m["content"] == "echo: important")
    await final_reactions(fake, msg["id"], "✅")
    await fake.wait_until(lambda: not list(undelivered.glob("*.md")), what="saved copy removed")
    assert len(dispatcher.delivered_ids) == 1
    assert [m["content"] for m in fake.bot_messages(dm)].count("echo: important") == 1


# ---- queueing and parallelism ----------------------------------------------------------


async def test_threads_run_in_parallel_while_the_global_queue_is_serial(
    fake_discord, dispatcher, make_frontend
):
    fake = fake_discord
    await make_frontend(listen_guilds=(fake.guild_id,))
    gate = asyncio.Event()
    dispatcher.script = lambda key, prompt: [gate]
    second_thread = await fake.create_thread(fake.general_id, "second")
    await fake.user_says(fake.thread_id, "thread one")
    await fake.user_says(second_thread, "thread two")
    dm = fake.dm_channel(fake.alice)
    await fake.user_says(dm, "global one")
    # two channels have no common order: let the DM be first in the global queue
    await dispatcher.wait_until(lambda: GLOBAL_KEY in dispatcher.running)
    await fake.user_says(fake.general_id, "global two")
    await dispatcher.wait_until(lambda: len(dispatcher.running) == 3)
    assert dispatcher.running == {fake.thread_id, second_thread, GLOBAL_KEY}
    queued = await fake.wait_for_message(fake.general_id)
    assert queued["content"] == "Queued: 1 ahead of you"
    gate.set()
    await fake.wait_for_message(fake.thread_id, lambda m: m["content"] == "echo: thread one")
    await fake.wait_for_message(second_thread, lambda m: m["content"] == "echo: thread two")
    await fake.wait_for_message(dm, lambda m: m["content"] == "echo: global one")
    await fake.wait_for_message(fake.general_id, lambda m: m["content"] == "echo: global two")
    assert dispatcher.max_parallel == 3
    assert dispatcher.max_parallel_per_key[GLOBAL_KEY] == 1
    assert sum(1 for m in fake.bot_messages(fake.general_id) if "Queued" in m["content"]) == 1


async def test_progress_message_is_edited_in_place_then_deleted(
    fake_discord, dispatcher, make_frontend
):
    fake = fake_discord
    await make_frontend(progress_after_seconds=0.05, progress_edit_interval_seconds=0.05)
    second_step = asyncio.Event()
    finish = asyncio.Event()
    dispatcher.script = lambda key, prompt: [
        RunProgress(msg_id="", tool="Bash", summary="pytest -q"),
        second_step,
        RunProgress(msg_id="", tool="Read", summary="src/app.py"),
        finish,
        done("all green"),
    ]
    dm = fake.dm_channel(fake.alice)
    msg = await fake.user_says(dm, "run the tests")
    status = await fake.wait_for_message(dm, lambda m: "Working" in m["content"])
    assert "Bash" in status["content"] and "pytest -q" in status["content"]
    second_step.set()
    await fake.wait_until(lambda: any("Read" in e for e in fake.edits[status["id"]]))
    finish.set()
    await final_reactions(fake, msg["id"], "✅")
    assert status["id"] in fake.deleted
    working = [m for m in fake.bot_messages(dm) if "Working" in m["content"]]
    assert working == []  # one status message, gone at the end
    statuses = [m for m in fake.requests if m.method == "POST" and "Working" in str(m.json)]
    assert len(statuses) == 1
    assert fake.bot_messages(dm)[-1]["content"] == "all green"


async def test_short_runs_show_no_progress_message(fake_discord, dispatcher, frontend):
    fake = fake_discord
    dm = fake.dm_channel(fake.alice)
    msg = await fake.user_says(dm, "quick")
    await final_reactions(fake, msg["id"], "✅")
    assert [m["content"] for m in fake.bot_messages(dm)] == ["echo: quick"]


# ---- attachments -----------------------------------------------------------------------


async def test_attachments_are_downloaded_and_named_in_the_prompt(
    fake_discord, dispatcher, frontend
):
    fake = fake_discord
    await fake.user_says(
        fake.thread_id,
        f"<@{fake.bot['id']}> look",
        mentions=[fake.bot],
        attachments=[
            {"filename": "shot 1.png", "content_type": "image/png", "data": b"\x89PNGdata"},
            {"filename": "notes.md", "content_type": "text/markdown", "data": b"# Title\nbody"},
        ],
    )
    await fake.wait_for_message(fake.thread_id)
    prompt = dispatcher.submissions[0].prompt
    inbox = frontend._paths.inbox_dir / fake.thread_id
    images = list(inbox.glob("*-shot_1.png"))
    assert len(images) == 1 and images[0].read_bytes() == b"\x89PNGdata"
    assert f"Image path: {images[0]}" in prompt
    assert "Attached text file (notes.md):\n# Title\nbody" in prompt
    assert stat.S_IMODE(images[0].stat().st_mode) == 0o600


async def test_attachment_only_message_is_answered(fake_discord, dispatcher, frontend):
    fake = fake_discord
    dm = fake.dm_channel(fake.alice)
    await fake.user_says(
        dm, "", attachments=[{"filename": "a.txt", "content_type": "text/plain", "data": b"hi"}]
    )
    await fake.wait_for_message(dm)
    assert "Attached text file (a.txt):\nhi" in dispatcher.submissions[0].prompt


# ---- connection ------------------------------------------------------------------------


async def test_ready_summary_and_intents(fake_discord, frontend):
    fake = fake_discord
    assert frontend.ready.is_set()
    await asyncio.wait_for(frontend.wait_ready(), 1)
    assert [c["name"] for c in fake.commands] == [
        "start",
        "status",
        "reset",
        "stop",
        "compact",
        "context",
        "handoff",
        "jobs",
        "diff",
        "permissions",
    ]
    summary = frontend.summary()
    assert summary["connected"] is True and summary["guilds"] == 1
    intents = fake.identified_intents
    assert intents & (1 << 15)  # message content
    assert intents & (1 << 0) and intents & (1 << 9) and intents & (1 << 12)
    assert not intents & (1 << 1) and not intents & (1 << 8)  # no members, no presences
    assert fake.unhandled == []


async def test_wrong_token_raises_config_error(fake_discord, dispatcher, tmp_path):
    from claudeclaw.frontend.bot import DiscordFrontend
    from claudeclaw.paths import ProjectPaths

    settings = Settings(discord=discord_settings(fake_discord, token="wrong-token-xxxxxxxx"))
    frontend = DiscordFrontend(settings, dispatcher, ProjectPaths(tmp_path))
    with pytest.raises(ConfigError, match=r"Discord rejected the token \(401\)") as info:
        await frontend.start()
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert not frontend.ready.is_set()
    await frontend.close()


async def test_wrong_token_names_the_source_it_came_from(fake_discord, dispatcher, tmp_path):
    """Issue 12.9: a token from the systemd credential is not called DISCORD_TOKEN."""
    from claudeclaw.frontend.bot import DiscordFrontend
    from claudeclaw.paths import ProjectPaths

    settings = Settings(
        discord=discord_settings(
            fake_discord, token="wrong-token-xxxxxxxx", token_source="credential"
        )
    )
    frontend = DiscordFrontend(settings, dispatcher, ProjectPaths(tmp_path))
    with pytest.raises(ConfigError, match="the systemd credential discord-token") as info:
        await frontend.start()
    assert "DISCORD_TOKEN" not in str(info.value) and "discord.token" not in str(info.value)
    await frontend.close()


async def test_missing_token_raises_config_error(fake_discord, dispatcher, tmp_path):
    from claudeclaw.frontend.bot import DiscordFrontend
    from claudeclaw.paths import ProjectPaths

    settings = Settings(discord=discord_settings(fake_discord, token=""))
    frontend = DiscordFrontend(settings, dispatcher, ProjectPaths(tmp_path))
    with pytest.raises(ConfigError, match="DISCORD_TOKEN"):
        await frontend.start()
    await frontend.close()


async def test_reconnect_resumes_and_keeps_answering(fake_discord, dispatcher, make_frontend):
    fake = fake_discord
    dispatcher.add_session(fake.thread_id)
    frontend = await make_frontend()
    await fake.wait_until(lambda: fake.bot["id"] in fake.thread_members[fake.thread_id])
    fake.thread_members[fake.thread_id].clear()
    await fake.drop_connection()
    await fake.wait_until(lambda: fake.resume_count == 1, what="RESUME")
    # the bot rejoined the thread with a session after resuming
    await fake.wait_until(lambda: fake.bot["id"] in fake.thread_members[fake.thread_id])
    assert fake.identify_count == 1
    dm = fake.dm_channel(fake.alice)
    await fake.user_says(dm, "still there?")
    await fake.wait_for_message(dm, lambda m: m["content"] == "echo: still there?")
    assert frontend.summary()["connected"] is True


@pytest.mark.parametrize(
    ("code", "needle"),
    [(4004, r"Discord rejected the token \(401\)"), (4014, "Message Content Intent")],
)
async def test_gateway_refusal_ends_with_config_error(
    fake_discord, dispatcher, make_frontend, code, needle
):
    fake_discord.gateway_close_code = code
    frontend = await make_frontend(wait_ready=False)
    with pytest.raises(ConfigError, match=needle):
        await asyncio.wait_for(frontend.wait_ready(), 5)
    with pytest.raises(ConfigError, match=needle):
        await asyncio.wait_for(frontend.wait_closed(), 5)
    assert not frontend.ready.is_set()
    assert frontend.summary()["connected"] is False


async def test_old_inbox_files_are_pruned_at_start(
    fake_discord, dispatcher, make_frontend, tmp_path
):
    import os
    import time

    from claudeclaw.paths import ProjectPaths

    inbox = ProjectPaths(tmp_path / "project").inbox_dir / "global"
    inbox.mkdir(parents=True)
    old = inbox / "1-old.png"
    old.write_bytes(b"x")
    stamp = time.time() - 100 * 3600
    os.utime(old, (stamp, stamp))
    fresh = inbox / "2-new.png"
    fresh.write_bytes(b"y")
    await make_frontend(inbox_max_age_hours=24.0)
    await fake_discord.wait_until(lambda: not old.exists(), what="prune")
    assert fresh.exists()


async def test_the_fake_enforces_discords_2000_char_limit(fake_discord, frontend):
    import discord

    channel = frontend.client.get_channel(int(fake_discord.general_id))
    with pytest.raises(discord.HTTPException) as info:
        await channel.send("x" * 2001)
    assert info.value.code == 50035
    await channel.send("😀" * 1000)  # 2000 UTF-16 units: accepted


async def test_a_reset_context_is_told_to_the_user(fake_discord, dispatcher, frontend):
    """The CLI no longer had the thread's session, so the reply comes from a new one: the
    user is told, in a small note above the reply."""
    fake = fake_discord
    reset = RunDone(msg_id="", reply="fresh answer", session_id="s2", context_reset=True)
    dispatcher.script = lambda key, prompt: [reset]
    dm = fake.dm_channel(fake.alice)
    msg = await fake.user_says(dm, "do you remember?")
    await final_reactions(fake, msg["id"], "✅")
    content = fake.bot_messages(dm)[0]["content"]
    assert content.startswith("-# The earlier Claude session") and content.endswith("fresh answer")


async def test_secrets_in_a_reply_are_redacted(fake_discord, dispatcher, frontend):
    """Claude's answer contains the bot's own token and an API-key-shaped string (it read
    a file it should not have): neither reaches Discord."""
    fake = fake_discord
    leak = f"token={fake.token} key=sk-ant-api03-abcdefghijklmnopqrstuvwxyz0123 ok"
    dispatcher.script = lambda key, prompt: [done(leak)]
    dm = fake.dm_channel(fake.alice)
    msg = await fake.user_says(dm, "show me the config")
    await final_reactions(fake, msg["id"], "✅")
    content = fake.bot_messages(dm)[0]["content"]
    assert fake.token not in content and "sk-ant-api03" not in content
    assert content == "token=[redacted] key=[redacted] ok"


async def test_messages_in_one_thread_keep_their_order_despite_slow_attachments(
    fake_discord, dispatcher, frontend
):
    """1. Alice sends a message with an attachment whose download is slow, then a short one.
    2. The short one is ready first.
    Result: it waits; both reach the session's queue in the order they were sent."""
    fake = fake_discord
    fake.download_gate = asyncio.Event()
    thread = fake.listen_thread_id
    first = await fake.user_says(
        thread,
        "first, with a file",
        attachments=[{"filename": "notes.txt", "content_type": "text/plain", "data": b"x"}],
    )
    second = await fake.user_says(thread, "second, short")
    await fake.wait_until(lambda: frontend.intake_waiting == 1, what="second waits its turn")
    assert dispatcher.submissions == []
    # neither has started: each shows 👀 (taken) after acknowledge_within, not nothing
    for waiting in (first, second):
        await fake.wait_until(lambda m=waiting: fake.reactions[m["id"]] == ["👀"], what="👀")
    fake.download_gate.set()
    await final_reactions(fake, first["id"], "✅")
    await final_reactions(fake, second["id"], "✅")
    assert [e for op, m, e in fake.reaction_log if m == second["id"] and op == "add"] == [
        "👀",
        "⚙️",
        "✅",
    ]
    prompts = [s.prompt for s in dispatcher.submissions]
    assert "first, with a file" in prompts[0] and "second, short" in prompts[1]


async def test_a_very_long_answer_comes_as_its_start_and_a_file(fake_discord, dispatcher, frontend):
    """An answer of 30 messages' worth is one reply: its start, a note, and reply.md."""
    fake = fake_discord
    text = "\n\n".join(f"paragraph {i} " + "word " * 300 for i in range(40))
    dispatcher.script = lambda key, prompt: [done(text)]
    dm = fake.dm_channel(fake.alice)
    msg = await fake.user_says(dm, "write a book")
    await final_reactions(fake, msg["id"], "✅")
    sent = fake.bot_messages(dm)
    assert len(sent) == 1
    payload = fake.sent_payloads[sent[0]["id"]]
    assert [f["name"] for f in payload["_files"]] == ["reply.md"]
    assert payload["_files"][0]["size"] == len(text.encode())
    assert sent[0]["content"].startswith("paragraph 0")
    assert "is attached as `reply.md`" in sent[0]["content"]
    assert str(payload["message_reference"]["message_id"]) == msg["id"]


async def test_images_claude_made_in_the_outbox_are_uploaded(
    fake_discord, dispatcher, frontend, tmp_path
):
    """Only a fresh image inside the outbox is posted (and its path taken out of the text);
    an old one, one outside the outbox and a symlink pointing out of it are not."""
    import os
    import time as _time

    fake = fake_discord
    outbox = frontend.project_root / ".claude" / "claudeclaw" / "outbox" / "discord"
    outbox.mkdir(parents=True)
    good = outbox / "chart.png"
    good.write_bytes(b"\x89PNG fresh")
    old = outbox / "old.png"
    old.write_bytes(b"\x89PNG old")
    os.utime(old, (_time.time() - 3600, _time.time() - 3600))
    outside = tmp_path / "secret.png"
    outside.write_bytes(b"\x89PNG elsewhere")
    link = outbox / "link.png"
    link.symlink_to(outside)
    reply = f"Here it is: {good}\nold: {old}\noutside: {outside}\nlink: {link}"
    dispatcher.script = lambda key, prompt: [done(reply)]
    dm = fake.dm_channel(fake.alice)
    msg = await fake.user_says(dm, "draw me a chart")
    await final_reactions(fake, msg["id"], "✅")
    sent = fake.bot_messages(dm)
    assert len(sent) == 2
    text, files = sent
    assert str(good) not in text["content"] and "Here it is:" in text["content"]
    assert str(old) in text["content"] and str(outside) in text["content"]
    uploaded = fake.sent_payloads[files["id"]]["_files"]
    assert [f["name"] for f in uploaded] == ["chart.png"]
    assert uploaded[0]["size"] == len(b"\x89PNG fresh")


async def test_an_outbox_file_holding_a_secret_is_not_uploaded_and_the_user_is_told(
    fake_discord, dispatcher, frontend
):
    """A "picture" Claude made out of an API key (plain, or base64 inside real image bytes)
    stays on disk; the clean image next to it goes out, and the user reads why."""
    import base64

    fake = fake_discord
    key = "sk-ant-api03-" + "Zq9" * 12
    outbox = frontend.project_root / ".claude" / "claudeclaw" / "outbox" / "discord"
    outbox.mkdir(parents=True)
    plain = outbox / "plain.png"
    plain.write_bytes(b"\x89PNG\r\n" + key.encode())
    encoded = outbox / "encoded.png"
    encoded.write_bytes(b"\x89PNG\r\n\x00\x01" + base64.b64encode(b"key=" + key.encode()))
    clean = outbox / "clean.png"
    clean.write_bytes(b"\x89PNG\r\n\x00 a chart")
    reply = f"Done: {plain} {encoded} {clean}"
    dispatcher.script = lambda key, prompt: [done(reply)]
    dm = fake.dm_channel(fake.alice)
    msg = await fake.user_says(dm, "draw my key")
    await final_reactions(fake, msg["id"], "✅")
    sent = fake.bot_messages(dm)
    notes = [m["content"] for m in sent if "was not uploaded" in m["content"]]
    assert len(notes) == 2, [m["content"] for m in sent]
    assert any("`plain.png`" in n for n in notes) and any("`encoded.png`" in n for n in notes)
    assert all(key not in m["content"] for m in sent)
    files = [f for m in sent for f in fake.sent_payloads[m["id"]].get("_files", [])]
    assert [f["name"] for f in files] == ["clean.png"]


async def test_a_message_answered_together_with_another_gets_no_reply_of_its_own(
    fake_discord, dispatcher, frontend
):
    fake = fake_discord
    merged = RunDone(msg_id="", reply="", session_id="s", merged_into="m-first")
    dispatcher.script = lambda key, prompt: [merged]
    dm = fake.dm_channel(fake.alice)
    msg = await fake.user_says(dm, "and also this")
    await final_reactions(fake, msg["id"], "✅")
    assert fake.bot_messages(dm) == []
