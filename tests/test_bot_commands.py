"""End-to-end: slash commands through the fake Discord's interactions."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace

from claudeclaw.frontend.commands import diff_reply
from claudeclaw.frontend.context import project_dir_name
from claudeclaw.model import (
    GLOBAL_KEY,
    RunDone,
    RunFailed,
    SessionKey,
    Workspace,
    WorkspaceDiff,
    WorkspaceStatus,
)

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
        "jobs",
        "diff",
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


async def test_jobs_lists_next_and_last_runs_and_file_errors(fake_discord, dispatcher, frontend):
    fake = fake_discord
    dispatcher.jobs = [
        {
            "name": "daily-report",
            "schedule": "0 9 * * 1-5",
            "running": False,
            "next_run": "2026-03-03T09:00:00+01:00",
            "last_run": "2026-03-02T09:00:04+01:00",
            "last_outcome": "ok",
            "error": "",
        },
        {
            "name": "broken",
            "schedule": "",
            "running": False,
            "next_run": "",
            "last_run": "",
            "last_outcome": "invalid",
            "error": "broken.md: schedule: invalid cron expression 'every day'",
        },
    ]
    callback, _ = await run_command(fake, fake.general_id, "jobs")
    text = callback["data"]["content"]
    assert "`daily-report` `0 9 * * 1-5` · next <t:1772524800:f>" in text
    assert "last <t:1772438404:f> (ok)" in text
    assert "⚠️ `broken`: broken.md: schedule: invalid cron expression 'every day'" in text
    dispatcher.jobs = []
    callback, _ = await run_command(fake, fake.general_id, "jobs")
    assert "No scheduled jobs" in callback["data"]["content"]


# ---- thread worktrees (threads.workspace: "worktree") ----------------------------------


def _workspace(path: str = "/srv/p/.claude/claudeclaw/worktrees/1") -> Workspace:
    return Workspace(path, "claudeclaw/1-fix-it", "main", "c0ffee" * 6 + "abcd")


async def test_status_in_a_thread_shows_its_worktree(fake_discord, dispatcher, frontend):
    fake = fake_discord
    dispatcher.add_session(fake.thread_id)
    dispatcher.infos[fake.thread_id] = WorkspaceStatus(
        "/srv/p/.claude/claudeclaw/worktrees/1", "claudeclaw/1-fix-it", "main", 3, 1, 2
    )
    callback, _ = await run_command(fake, fake.thread_id, "status")
    text = callback["data"]["content"]
    assert "Workspace: `/srv/p/.claude/claudeclaw/worktrees/1`" in text
    assert "Branch: `claudeclaw/1-fix-it` · 3 ahead, 1 behind `main` · 2 changed files" in text
    dispatcher.infos[fake.thread_id] = WorkspaceStatus(
        "/w", "claudeclaw/1-fix-it", "main", 0, 0, 0, problem="git took longer than 2 s"
    )
    callback, _ = await run_command(fake, fake.thread_id, "status")
    text = callback["data"]["content"]
    assert "Branch: `claudeclaw/1-fix-it` (git took longer than 2 s)" in text
    assert "ahead" not in text


async def test_diff_posts_the_stat_and_the_whole_diff_as_a_redacted_file(
    fake_discord, dispatcher, frontend
):
    fake = fake_discord
    key = "sk-ant-api03-" + "x" * 40
    patch = f"diff --git a/app.py b/app.py\n-old\n+KEY = '{key}'\n"
    stat = " app.py | 2 +-\n 1 file changed, 1 insertion(+), 1 deletion(-)\n"
    dispatcher.diffs[fake.thread_id] = WorkspaceDiff(stat, patch, False, "c0ffee" * 6 + "abcd")
    interaction_id, token = await fake.slash_command(fake.thread_id, "diff")
    callback = await fake.wait_for_callback(interaction_id)
    assert callback["type"] == 5  # deferred: git may take a moment
    await fake.wait_until(lambda: fake.followups.get(token), what="the /diff follow-up")
    text = fake.followups[token][0]["content"]
    assert "Changes since `c0ffeec0ff`" in text and "app.py | 2 +-" in text
    assert f"thread-{fake.thread_id}.diff" in text
    sent = [r for r in fake.requests if r.method == "POST" and token in r.path]
    files = sent[-1].json["_files"]
    redacted = patch.replace(key, "[redacted]").encode()
    assert files == [{"name": f"thread-{fake.thread_id}.diff", "size": len(redacted)}]


async def test_diff_without_a_worktree_says_so(fake_discord, dispatcher, frontend):
    fake = fake_discord
    interaction_id, token = await fake.slash_command(fake.thread_id, "diff")
    await fake.wait_for_callback(interaction_id)
    await fake.wait_until(lambda: fake.followups.get(token), what="the /diff follow-up")
    assert "no git worktree of its own" in fake.followups[token][0]["content"]


def test_a_long_diff_stat_is_cut_to_fit_one_message() -> None:
    stat = "".join(f" src/module_{i:04d}.py | 10 +++++-----\n" for i in range(400))
    stat += " 400 files changed, 2000 insertions(+), 2000 deletions(-)\n"
    text, payload = diff_reply(WorkspaceDiff(stat, "p", True, "0" * 40), SessionKey("1"))
    assert len(text) < 2000 and "more files" in text and "400 files changed" in text
    assert "cut at 8 MiB" in text and payload == b"p"


async def test_reset_names_the_kept_branch_and_the_patch(fake_discord, dispatcher, frontend):
    fake = fake_discord
    dispatcher.add_session(fake.thread_id)
    note = "Removed the worktree /w. Uncommitted changes were saved as /s/x.patch."
    dispatcher.workspace_notes[fake.thread_id] = note
    callback, _ = await run_command(fake, fake.thread_id, "reset")
    assert (
        callback["data"]["content"] == f"Thread session reset. Next message starts fresh.\n{note}"
    )


async def test_a_slow_reset_is_deferred_then_answered(
    fake_discord, dispatcher, frontend, monkeypatch
):
    from claudeclaw.frontend import commands

    monkeypatch.setattr(commands, "RESPOND_WITHIN", 0.1)  # (the reset is gated: still slow)
    fake = fake_discord
    dispatcher.add_session(fake.thread_id)
    dispatcher.workspace_notes[fake.thread_id] = "Removed the worktree /w."
    dispatcher.reset_gate = asyncio.Event()
    interaction_id, token = await fake.slash_command(fake.thread_id, "reset")
    callback = await fake.wait_for_callback(interaction_id, timeout=10)
    assert callback["type"] == 5 and not fake.followups.get(token)
    dispatcher.reset_gate.set()
    await fake.wait_until(lambda: fake.followups.get(token), what="the /reset follow-up")
    assert fake.followups[token][0]["content"].endswith("Removed the worktree /w.")


async def test_handoff_and_messages_use_the_worktree(fake_discord, dispatcher, frontend):
    fake = fake_discord
    sid = "0ff1ce00-aaaa-bbbb-cccc-ddddeeeeffff"
    record = dispatcher.add_session(fake.thread_id, sid)
    dispatcher.records[fake.thread_id] = replace(record, workspace=_workspace("/w/t 1"))
    callback, _ = await run_command(fake, fake.thread_id, "handoff")
    assert f"cd '/w/t 1' && claude --resume {sid}" in callback["data"]["content"]
    # a thread's messages carry its name, which names a new worktree's branch
    await fake.user_says(fake.thread_id, f"<@{fake.bot['id']}> hi", mentions=[fake.bot])
    await fake.wait_for_message(fake.thread_id)
    assert dispatcher.labels == ["a thread"]


async def test_context_reads_the_transcript_filed_under_the_worktree(
    fake_discord, dispatcher, frontend, tmp_path, monkeypatch
):
    fake = fake_discord
    config = tmp_path / "claude-config"
    monkeypatch.setenv("CLAUDE_CONFIG_DIR", str(config))
    sid = "5e551011-aaaa-bbbb-cccc-ddddeeeeffff"
    worktree = tmp_path / "project" / ".claude" / "claudeclaw" / "worktrees" / "1"
    record = dispatcher.add_session(fake.thread_id, sid)
    dispatcher.records[fake.thread_id] = replace(record, workspace=_workspace(str(worktree)))
    usage = {"input_tokens": 100_000, "output_tokens": 10}
    entry = {"type": "assistant", "message": {"model": "claude-sonnet-4-5", "usage": usage}}
    for where, line in ((frontend.project_root, {}), (worktree, entry)):
        folder = config / "projects" / project_dir_name(where)
        folder.mkdir(parents=True)
        (folder / f"{sid}.jsonl").write_text(json.dumps(line) + "\n")
    callback, _ = await run_command(fake, fake.thread_id, "context")
    assert "100,000 / 200,000 tokens" in callback["data"]["content"]
