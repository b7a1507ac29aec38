"""End-to-end: slash commands through the fake Discord's interactions."""

from __future__ import annotations

import asyncio
import json

from claudeclaw.frontend.context import project_dir_name
from claudeclaw.model import GLOBAL_KEY, RunDone, RunFailed

EPHEMERAL = 64


async def run_command(fake, channel_id, name, **kw):
    interaction_id, token = await fake.slash_command(channel_id, name, **kw)
    callback = await fake.wait_for_callback(interaction_id)
    return callback, token


async def test_unauthorized_user_gets_an_ephemeral_refusal(fake_discord, dispatcher, frontend):
    fake = fake_discord
    for name in (
        "status",
        "reset",
        "stop",
        "compact",
        "context",
        "start",
        "handoff",
        "permissions",
    ):
        callback, _ = await run_command(fake, fake.general_id, name, user=fake.bob)
        assert callback["data"]["content"] == "Unauthorized."
        assert callback["data"]["flags"] & EPHEMERAL
    assert dispatcher.resets == [] and dispatcher.cancels == [] and dispatcher.submissions == []


async def test_status_shows_this_session_and_the_threads(fake_discord, dispatcher, frontend):
    fake = fake_discord
    record = dispatcher.add_session(fake.thread_id, "abcdef12-0000-0000-0000-000000000000")
    dispatcher.add_session("1234567890", "99999999-0000-0000-0000-000000000000")
    dispatcher.running.add("1234567890")
    callback, _ = await run_command(fake, fake.thread_id, "status")
    text = callback["data"]["content"]
    assert "Thread Session Status" in text
    assert "`abcdef12`" in text and f"Created: {record.created_at}" in text
    assert "Turns: 0" in text and "Model: default" in text and "Security: moderate" in text
    assert "**Thread sessions:** 2 (1 active)" in text
    assert "<#1234567890> → `99999999`" in text and "running" in text
    assert not callback["data"].get("flags", 0) & EPHEMERAL


async def test_status_without_a_session(fake_discord, dispatcher, frontend):
    fake = fake_discord
    dm = fake.dm_channel(fake.alice)
    callback, _ = await run_command(fake, dm, "status")
    assert "No active global session" in callback["data"]["content"]


async def test_reset_in_a_thread_and_in_a_dm(fake_discord, dispatcher, frontend):
    fake = fake_discord
    dispatcher.add_session(fake.thread_id)
    callback, _ = await run_command(fake, fake.thread_id, "reset")
    assert callback["data"]["content"] == "Thread session reset. Next message starts fresh."
    dm = fake.dm_channel(fake.alice)
    callback, _ = await run_command(fake, dm, "reset")
    assert "global session" in callback["data"]["content"]
    callback, _ = await run_command(fake, fake.general_id, "reset")
    assert dispatcher.resets == [fake.thread_id, GLOBAL_KEY, GLOBAL_KEY]


async def test_stop_cancels_the_run_of_this_key(fake_discord, dispatcher, frontend):
    fake = fake_discord
    gate = asyncio.Event()
    dispatcher.script = lambda key, prompt: [gate]
    msg = await fake.user_says(fake.thread_id, f"<@{fake.bot['id']}> long job", mentions=[fake.bot])
    await dispatcher.wait_until(lambda: fake.thread_id in dispatcher.running)
    callback, _ = await run_command(fake, fake.thread_id, "stop")
    assert callback["data"]["content"] == "⏹️ Stopping the current run."
    reply = await fake.wait_for_message(fake.thread_id, lambda m: "Stopped" in m["content"])
    assert reply
    await fake.wait_until(lambda: fake.reactions[msg["id"]] == ["❌"])
    assert dispatcher.cancels == [fake.thread_id]
    callback, _ = await run_command(fake, fake.thread_id, "stop")
    assert callback["data"]["content"] == "Nothing is running here."


async def test_compact_answers_at_once_then_edits_the_outcome(fake_discord, dispatcher, frontend):
    fake = fake_discord
    dispatcher.add_session(fake.thread_id, "c0ffee00-0000-0000-0000-000000000000")
    gate = asyncio.Event()
    dispatcher.script = lambda key, prompt: [gate, RunDone(msg_id="", reply="", session_id="")]
    callback, token = await run_command(fake, fake.thread_id, "compact")
    assert callback["data"]["content"] == "⏳ Compacting session..."
    gate.set()
    original = await fake.wait_for_original(token, lambda m: "✅" in m["content"])
    assert original["content"] == "✅ Session compact complete (`c0ffee00`)"
    assert [(s.key, s.prompt) for s in dispatcher.submissions] == [(fake.thread_id, "/compact")]


async def test_compact_failure_and_no_session(fake_discord, dispatcher, frontend):
    fake = fake_discord
    callback, _ = await run_command(fake, fake.thread_id, "compact")
    assert callback["data"]["content"] == "No active session to compact."
    dispatcher.add_session(fake.thread_id, "deadbeef-0000-0000-0000-000000000000")
    dispatcher.script = lambda key, prompt: [
        RunFailed(msg_id="", reason="timeout", message="too slow")
    ]
    _, token = await run_command(fake, fake.thread_id, "compact")
    original = await fake.wait_for_original(token, lambda m: "❌" in m["content"])
    assert "Compact failed (`deadbeef`)" in original["content"]


async def test_context_reads_the_transcript(
    fake_discord, dispatcher, frontend, tmp_path, monkeypatch
):
    fake = fake_discord
    config = tmp_path / "claude-config"
    monkeypatch.setenv("CLAUDE_CONFIG_DIR", str(config))
    sid = "5e551011-aaaa-bbbb-cccc-ddddeeeeffff"
    dispatcher.add_session(fake.thread_id, sid)
    folder = config / "projects" / project_dir_name(frontend.project_root)
    folder.mkdir(parents=True)
    usage = {
        "input_tokens": 1000,
        "cache_creation_input_tokens": 9000,
        "cache_read_input_tokens": 40000,
        "output_tokens": 10,
    }
    entry = {"type": "assistant", "message": {"model": "claude-sonnet-4-5", "usage": usage}}
    (folder / f"{sid}.jsonl").write_text(json.dumps(entry) + "\n")
    callback, _ = await run_command(fake, fake.thread_id, "context")
    text = callback["data"]["content"]
    assert "50,000 / 200,000 tokens" in text
    assert "25.0%" in text and "█████░░░░░░░░░░░░░░░" in text


async def test_context_without_a_transcript(
    fake_discord, dispatcher, frontend, tmp_path, monkeypatch
):
    fake = fake_discord
    monkeypatch.setenv("CLAUDE_CONFIG_DIR", str(tmp_path / "empty"))
    callback, _ = await run_command(fake, fake.thread_id, "context")
    assert "No active session" in callback["data"]["content"]
    dispatcher.add_session(fake.thread_id, "12345678-0000-0000-0000-000000000000")
    callback, _ = await run_command(fake, fake.thread_id, "context")
    assert "No transcript found for session `12345678`" in callback["data"]["content"]


async def test_start_says_hello(fake_discord, frontend):
    callback, _ = await run_command(fake_discord, fake_discord.general_id, "start")
    assert callback["data"]["content"].startswith("Hello!")


async def test_a_failing_command_still_answers(fake_discord, dispatcher, frontend):
    async def broken(key):
        raise RuntimeError("supervisor trouble")

    dispatcher.session_info = broken
    callback, _ = await run_command(fake_discord, fake_discord.thread_id, "status")
    assert "command failed" in callback["data"]["content"]
    assert callback["data"]["flags"] & EPHEMERAL


async def test_handoff_gives_the_resume_command_privately(fake_discord, dispatcher, frontend):
    fake = fake_discord
    sid = "0ff1ce00-aaaa-bbbb-cccc-ddddeeeeffff"
    dispatcher.add_session(fake.thread_id, sid)
    callback, _ = await run_command(fake, fake.thread_id, "handoff")
    text = callback["data"]["content"]
    assert callback["data"]["flags"] & EPHEMERAL
    assert f"claude --resume {sid}" in text and str(frontend.project_root) in text
    callback, _ = await run_command(fake, fake.general_id, "handoff")
    assert "No session here yet" in callback["data"]["content"]
