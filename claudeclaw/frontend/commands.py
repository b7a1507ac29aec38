"""Slash commands: /status, /reset, /stop, /compact, /context, /handoff, /diff, /jobs,
/permissions (and /start, as the original).

Each command works on the session key of the channel it is used in (the thread; else the
global session, or the channel with ``sessionScope: "channel"``), checks the allowlist
first (unauthorized: an ephemeral "Unauthorized.") and talks to the daemon only through
the :class:`~claudeclaw.api.Dispatcher` protocol.
"""

from __future__ import annotations

import asyncio
import io
import shlex
from pathlib import Path
from typing import Any, Protocol

import discord
from discord import app_commands

from claudeclaw.api import Dispatcher
from claudeclaw.config import Settings
from claudeclaw.errors import ClaudeclawError
from claudeclaw.frontend import context as ctx
from claudeclaw.frontend.render import failure_text, format_elapsed
from claudeclaw.frontend.routing import is_authorized, key_for_channel
from claudeclaw.logs import get_logger
from claudeclaw.model import (
    GLOBAL_KEY,
    Remembered,
    RunDone,
    RunFailed,
    SessionInfo,
    SessionKey,
    WorkspaceDiff,
    parse_time,
)
from claudeclaw.redaction import scrub_outbound

log = get_logger(component="discord.commands")

UNAUTHORIZED = "Unauthorized."
MAX_LISTED_THREADS = 10
RESPOND_WITHIN = 2.0  # Discord wants an answer to an interaction within 3 s: defer after this
DIFF_STAT_BUDGET = 1700  # characters of `git diff --stat` shown in the message itself


class CommandHost(Protocol):
    """What the commands need from the frontend."""

    @property
    def settings(self) -> Settings: ...

    @property
    def dispatcher(self) -> Dispatcher: ...

    @property
    def project_root(self) -> Path: ...


def interaction_key(interaction: discord.Interaction, settings: Settings) -> SessionKey:
    """The session key of the channel an interaction comes from."""
    channel = interaction.channel
    channel_id = interaction.channel_id or (channel.id if channel is not None else 0)
    guild_id = str(interaction.guild_id) if interaction.guild_id is not None else None
    if guild_id is None:
        return GLOBAL_KEY
    return key_for_channel(
        guild_id=guild_id,
        channel_id=str(channel_id),
        is_thread=isinstance(channel, discord.Thread),
        discord=settings.discord,
    )


def _scope_name(key: SessionKey, interaction: discord.Interaction) -> str:
    if key == GLOBAL_KEY:
        return "Global"
    return "Thread" if isinstance(interaction.channel, discord.Thread) else "Channel"


def _live_state(info: SessionInfo) -> str:
    if info.running:
        state = f"running ({format_elapsed(info.run_elapsed_s)})"
    else:
        state = "idle"
    if info.queue_length:
        state += f", {info.queue_length} queued"
    return state


def workspace_lines(info: SessionInfo) -> list[str]:
    """The session's own git worktree, for /status (none: nothing to show)."""
    ws = info.workspace
    if ws is None:
        return []
    if not ws.exists:
        return [f"Workspace: `{ws.path}` (gone: {ws.problem}); the next message recreates it"]
    if ws.problem:  # no numbers to show
        return [f"Workspace: `{ws.path}`", f"Branch: `{ws.branch}` ({ws.problem[:300]})"]
    files = f"{ws.changed_files} changed file{'s' if ws.changed_files != 1 else ''}"
    return [
        f"Workspace: `{ws.path}`",
        f"Branch: `{ws.branch or '(detached HEAD)'}` · {ws.ahead} ahead, {ws.behind} behind "
        f"`{ws.base}` · {files}",
    ]


def diff_reply(diff: WorkspaceDiff | None, key: SessionKey) -> tuple[str, bytes]:
    """/diff's message (the stat, cut to fit) and the whole diff as file content (b"": no
    file). Both are redacted like every reply: a diff can hold a key Claude wrote."""
    if diff is None:
        return (
            "This session has no git worktree of its own (`threads.workspace` is "
            '`"shared"`, or the session started before it was set): nothing to diff.',
            b"",
        )
    base = diff.base_commit[:10]
    stat_lines = scrub_outbound(diff.stat.rstrip()).splitlines()
    if not stat_lines:
        return f"No changes since its base (`{base}`).", b""
    *files, summary = stat_lines
    shown: list[str] = []
    used = len(summary)
    for line in files:
        if used + len(line) + 1 > DIFF_STAT_BUDGET:
            shown.append(f" … and {len(files) - len(shown)} more files")
            break
        shown.append(line)
        used += len(line) + 1
    stat = "\n".join([*shown, summary])
    cut = " It is cut at 8 MiB." if diff.truncated else ""
    text = (
        f"📝 Changes since `{base}` (commits and uncommitted work):\n```\n{stat}\n```"
        f"The whole diff is attached as `{diff_file_name(key)}`.{cut}"
    )
    return text, scrub_outbound(diff.patch).encode("utf-8")


def diff_file_name(key: SessionKey) -> str:
    return f"thread-{key}.diff"


def reset_text(scope: str, had: bool, workspace_note: str) -> str:
    text = (
        f"{scope} session reset. Next message starts fresh."
        if had
        else f"No {scope.lower()} session to reset; the next message starts fresh."
    )
    return f"{text}\n{workspace_note}" if workspace_note else text


def remembered_text(remembered: list[Remembered]) -> str:
    """The tools allowed for the rest of this session ("Allow for this session")."""
    if not remembered:
        return "Allowed for this session: none (each tool use is asked)."
    tools = ", ".join(
        f"`{r.tool}`" + (f" (<@{r.by}>)" if r.by.isdigit() else "") for r in remembered
    )
    return f"Allowed for this session: {tools} · revoke with /permissions"


def status_text(
    scope: str,
    info: SessionInfo,
    threads: list[SessionInfo],
    settings: Settings,
    remembered: list[Remembered] | None = None,
) -> str:
    lines: list[str] = []
    record = info.record
    if record is None:
        lines.append(f"📊 No active {scope.lower()} session here; the next message starts one.")
    else:
        lines += [
            f"📊 **{scope} Session Status**",
            f"Session: `{record.session_id[:8]}` · Turns: {record.turn_count}",
            f"Created: {record.created_at}",
            f"Last used: {record.last_used_at}",
        ]
    lines += workspace_lines(info)
    lines.append(f"State: {_live_state(info)}")
    lines.append(f"Worker: pid {info.worker_pid}" if info.worker_pid else "Worker: none")
    lines.append(f"Model: {settings.model or 'default'} · Security: {settings.security.level}")
    if info.last_error:
        lines.append(f"Last error: {info.last_error[:300]}")
    if settings.security.approvals or remembered:
        lines.append(remembered_text(remembered or []))
    active = [t for t in threads if t.running or t.queue_length]
    lines.append("")
    lines.append(f"**Thread sessions:** {len(threads)} ({len(active)} active)")
    listed = sorted(threads, key=lambda t: (not (t.running or t.queue_length), t.key))
    for thread in listed[:MAX_LISTED_THREADS]:
        sid = thread.record.session_id[:8] if thread.record else "-"
        turns = thread.record.turn_count if thread.record else 0
        where = f"<#{thread.key}>" if thread.key.isdigit() else f"`{thread.key}`"
        lines.append(f"  {where} → `{sid}` · {turns} turns · {_live_state(thread)}")
    if len(threads) > MAX_LISTED_THREADS:
        lines.append(f"  … and {len(threads) - MAX_LISTED_THREADS} more")
    return "\n".join(lines)


def _when(iso: str) -> str:
    """An ISO time as a Discord timestamp (each reader sees it in their own zone)."""
    moment = parse_time(iso)
    if moment is None:
        return iso or "-"
    return f"<t:{int(moment.timestamp())}:f>"


def jobs_text(rows: list[dict[str, Any]]) -> str:
    """``/jobs``: one line per job, errors shown; at most 2000 characters."""
    if not rows:
        return "🗓️ No scheduled jobs. Add `<name>.md` files to `.claude/claudeclaw/jobs/`."
    lines = ["🗓️ **Jobs**"]
    for row in rows:
        state = "running" if row["running"] else (row["last_outcome"] or "never ran")
        if row["last_outcome"] == "invalid":
            lines.append(f"⚠️ `{row['name']}`: {row['error'][:300]}")
            continue
        schedule = f"`{row['schedule']}`" if row["schedule"] else "no schedule"
        line = f"• `{row['name']}` {schedule} · next {_when(row['next_run'])}"
        if row["last_run"]:
            line += f" · last {_when(row['last_run'])} ({state})"
        if row["error"]:
            line += f"\n  ↳ {row['error'][:200]}"
        lines.append(line)
    text = "\n".join(lines)
    return text if len(text) <= 2000 else text[:1990] + "\n…"


async def compact_outcome(dispatcher: Dispatcher, key: SessionKey, session_id: str) -> str:
    """Run ``/compact`` on ``key`` through the queue and describe the outcome."""
    short = session_id[:8]
    final: RunDone | RunFailed | None = None
    stream = dispatcher.submit(key, "/compact", origin="discord")
    try:
        async for event in stream:
            if isinstance(event, RunDone | RunFailed):
                final = event
                break
    finally:
        closer = getattr(stream, "aclose", None)
        if closer is not None:
            await closer()
    if isinstance(final, RunDone):
        return f"✅ Session compact complete (`{short}`)"
    if isinstance(final, RunFailed):
        return f"❌ Compact failed (`{short}`)\n{failure_text(final)}"
    return f"❌ Compact failed (`{short}`): no result"


async def context_text(
    info: SessionInfo, *, project_root: Path, model: str, config_dir: Path | None = None
) -> str:
    if info.record is None:
        return "🧠 No active session here, so no context yet."
    session_id = info.record.session_id

    def find() -> Path | None:  # blocking: the files, and a passwd lookup in two-user mode
        base = config_dir or ctx.claude_config_dir()
        return ctx.find_transcript(session_id, project_root, base)

    path = await asyncio.to_thread(find)
    if path is None:
        return f"🧠 No transcript found for session `{session_id[:8]}`."
    usage = await asyncio.to_thread(ctx.read_context_usage, path)
    if usage is None:
        return f"🧠 Session `{session_id[:8]}` has no usage data yet."
    return ctx.format_context(usage, session_id=session_id, fallback_model=model)


def session_dir(info: SessionInfo, project_root: Path) -> Path:
    """Where the session runs: its own worktree, else the project directory."""
    if info.record is not None and info.record.workspace is not None:
        return Path(info.record.workspace.cwd)
    return project_root


def handoff_text(info: SessionInfo, project_root: Path) -> str:
    """How to pick this session up in a terminal (the same cwd, or --resume fails)."""
    if info.record is None:
        return "No session here yet: the next message starts one."
    where = shlex.quote(str(session_dir(info, project_root)))
    command = f"cd {where} && claude --resume {info.record.session_id}"
    busy = " Stop the bot's run first (/stop): two writers fork a session." if info.running else ""
    return (
        "Continue this session in a terminal (as the daemon's user, with its HOME):\n"
        f"```\n{command}\n```{busy}"
    )


def build_commands(host: CommandHost) -> list[app_commands.Command[Any, ..., None]]:
    """The slash commands, bound to ``host``; add them to a ``CommandTree``."""

    async def allowed(interaction: discord.Interaction) -> bool:
        if is_authorized(str(interaction.user.id), host.settings.discord):
            return True
        log.info("command.unauthorized", user_id=interaction.user.id)
        await interaction.response.send_message(UNAUTHORIZED, ephemeral=True)
        return False

    @app_commands.command(name="start", description="How to talk to Claude here")
    async def start_cmd(interaction: discord.Interaction) -> None:
        if not await allowed(interaction):
            return
        await interaction.response.send_message(
            "Hello! Send me a message and I'll respond using Claude.\n"
            "Each thread is its own session. Use /reset to start a fresh session."
        )

    @app_commands.command(name="status", description="This session's state and all threads")
    async def status_cmd(interaction: discord.Interaction) -> None:
        if not await allowed(interaction):
            return
        key = interaction_key(interaction, host.settings)
        info, threads = await asyncio.gather(
            host.dispatcher.session_info(key), host.dispatcher.list_sessions()
        )
        scope = _scope_name(key, interaction)
        remembered = host.dispatcher.remembered_approvals(key)
        text = status_text(scope, info, threads, host.settings, remembered)
        await interaction.response.send_message(scrub_outbound(text))  # last error: CLI text

    @app_commands.command(name="reset", description="Forget this thread's (or the global) session")
    async def reset_cmd(interaction: discord.Interaction) -> None:
        if not await allowed(interaction):
            return
        key = interaction_key(interaction, host.settings)
        task = asyncio.ensure_future(host.dispatcher.reset_session(key))
        done, _ = await asyncio.wait({task}, timeout=RESPOND_WITHIN)
        if not done:  # removing its worktree takes a while: answer when it is done
            await interaction.response.defer()
        outcome = await task
        log.info("command.reset", session_key=key, had_session=outcome.had_session)
        scope = _scope_name(key, interaction)
        text = scrub_outbound(reset_text(scope, outcome.had_session, outcome.workspace_note))
        if done:
            await interaction.response.send_message(text)
        else:
            await interaction.followup.send(text)

    @app_commands.command(name="stop", description="Stop the run in progress here")
    async def stop_cmd(interaction: discord.Interaction) -> None:
        if not await allowed(interaction):
            return
        key = interaction_key(interaction, host.settings)
        stopped = await host.dispatcher.cancel(key)
        log.info("command.stop", session_key=key, stopped=stopped)
        await interaction.response.send_message(
            "⏹️ Stopping the current run." if stopped else "Nothing is running here."
        )

    @app_commands.command(name="compact", description="Compact this session's context")
    async def compact_cmd(interaction: discord.Interaction) -> None:
        if not await allowed(interaction):
            return
        key = interaction_key(interaction, host.settings)
        info = await host.dispatcher.session_info(key)
        if info.record is None:
            await interaction.response.send_message("No active session to compact.")
            return
        await interaction.response.send_message("⏳ Compacting session...")
        try:
            outcome = await compact_outcome(host.dispatcher, key, info.record.session_id)
        except Exception as exc:
            log.error("command.compact_failed", session_key=key, error=type(exc).__name__)
            outcome = f"❌ Compact failed (`{info.record.session_id[:8]}`)"
        try:
            await interaction.edit_original_response(content=scrub_outbound(outcome))
        except discord.HTTPException as exc:
            log.warning("command.compact_edit_failed", session_key=key, status=exc.status)

    @app_commands.command(name="context", description="How full this session's context is")
    async def context_cmd(interaction: discord.Interaction) -> None:
        if not await allowed(interaction):
            return
        key = interaction_key(interaction, host.settings)
        info = await host.dispatcher.session_info(key)
        where = session_dir(info, host.project_root)
        text = await context_text(info, project_root=where, model=host.settings.model)
        await interaction.response.send_message(text)

    @app_commands.command(
        name="handoff", description="Continue this session in a terminal (claude --resume)"
    )
    async def handoff_cmd(interaction: discord.Interaction) -> None:
        if not await allowed(interaction):
            return
        key = interaction_key(interaction, host.settings)
        info = await host.dispatcher.session_info(key)
        await interaction.response.send_message(
            handoff_text(info, host.project_root), ephemeral=True
        )

    @app_commands.command(name="jobs", description="Scheduled jobs: next and last run")
    async def jobs_cmd(interaction: discord.Interaction) -> None:
        if not await allowed(interaction):
            return
        rows = await host.dispatcher.list_jobs()
        await interaction.response.send_message(scrub_outbound(jobs_text(rows)))

    @app_commands.command(
        name="diff", description="What this thread changed in its worktree (the diff as a file)"
    )
    async def diff_cmd(interaction: discord.Interaction) -> None:
        if not await allowed(interaction):
            return
        key = interaction_key(interaction, host.settings)
        await interaction.response.defer()  # git may take a moment on a big repository
        try:
            text, payload = diff_reply(await host.dispatcher.workspace_diff(key), key)
        except ClaudeclawError as exc:
            log.warning("command.diff_failed", session_key=key, error=str(exc))
            text, payload = f"❌ Could not read this thread's diff: {exc}", b""
        text = scrub_outbound(text)
        if payload:
            attachment = discord.File(io.BytesIO(payload), filename=diff_file_name(key))
            await interaction.followup.send(text, file=attachment)
        else:
            await interaction.followup.send(text)

    @app_commands.command(
        name="permissions", description="Tools allowed for this session; revoke one"
    )
    @app_commands.describe(revoke='A tool to ask about again (e.g. "Write"), or "all"')
    async def permissions_cmd(interaction: discord.Interaction, revoke: str | None = None) -> None:
        if not await allowed(interaction):
            return
        key = interaction_key(interaction, host.settings)
        remembered = host.dispatcher.remembered_approvals(key)
        if revoke is None:
            text = remembered_text(remembered)
        else:
            wanted = revoke.strip()
            tools = [r.tool for r in remembered if wanted.lower() in ("all", r.tool.lower())]
            for tool in tools:
                host.dispatcher.revoke_approval(key, tool)
            log.info("command.permissions_revoke", session_key=key, tools=tools)
            text = (
                f"Revoked: {', '.join(f'`{t}`' for t in tools)}. Claude asks again next time."
                if tools
                else f"`{wanted[:80]}` was not allowed. {remembered_text(remembered)}"
            )
        await interaction.response.send_message(scrub_outbound(text))

    commands: list[app_commands.Command[Any, ..., None]] = [
        start_cmd,
        status_cmd,
        reset_cmd,
        stop_cmd,
        compact_cmd,
        context_cmd,
        handoff_cmd,
        jobs_cmd,
        diff_cmd,
        permissions_cmd,
    ]
    return commands
