"""The ``claudeclaw`` command: init, run, status, send, ask, sessions, jobs, heartbeat,
reload, doctor.

Every command takes ``--project DIR`` (default: the current directory). Commands that talk
to a running daemon go through its control socket; ``sessions`` falls back to the files
when no daemon runs; ``ask`` runs ``claude`` in-process and refuses while a daemon serves
the project (two writers of one session would fork its transcript).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from claudeclaw import __version__, control
from claudeclaw.errors import (
    EXIT_CONFIG,
    EXIT_FAILURE,
    EXIT_LOGIN_FAILED,
    EXIT_NOT_RUNNING,
    EXIT_OK,
    ClaudeclawError,
    ConfigError,
    DaemonNotRunning,
    DiscordLoginRejected,
    IpcError,
    StateError,
)
from claudeclaw.model import (
    GLOBAL_KEY,
    RunApproval,
    RunApprovalDone,
    RunDone,
    RunEvent,
    RunFailed,
    RunProgress,
    RunQueued,
    RunSession,
    RunStarted,
    SessionInfo,
    SessionKey,
    event_from_dict,
    info_to_dict,
    session_key,
)
from claudeclaw.paths import ProjectPaths
from claudeclaw.service import PROJECT_ENV, find_service


def _err(text: str) -> None:
    print(f"claudeclaw: {text}", file=sys.stderr)


def _paths(args: argparse.Namespace) -> ProjectPaths:
    return ProjectPaths.for_project(getattr(args, "project", None))


def _has_state(paths: ProjectPaths) -> bool:
    try:
        return paths.state_dir.is_dir()
    except OSError:  # e.g. a directory this user may not look into
        return False


def _service_paths(args: argparse.Namespace) -> ProjectPaths:
    """The project a command for the running service means, and why (``args.project_why``):
    ``--project``, else ``$CLAUDECLAW_PROJECT``, else the current directory when it is a
    project, else the installed service's project, else the current directory."""
    given = getattr(args, "project", None)
    env = os.environ.get(PROJECT_ENV, "")
    if given:
        args.project_why = "--project"
        return ProjectPaths.for_project(given)
    if env:
        args.project_why = f"${PROJECT_ENV}"
        return ProjectPaths.for_project(env)
    here = ProjectPaths.for_project(None)
    if not _has_state(here):
        layout = find_service()
        if layout is not None:
            args.project_why = f"the installed service's, {layout.unit_file}"
            return ProjectPaths.for_project(layout.project)
    args.project_why = "the current directory"
    return here


def _key(thread: str | None) -> SessionKey:
    return session_key(thread) if thread else GLOBAL_KEY


def _prompt(words: Sequence[str]) -> str:
    if list(words) == ["-"]:
        return sys.stdin.read()
    return " ".join(words)


# ---- progress printing shared by send and ask ------------------------------------------


class ProgressPrinter:
    """Prints run events for a person: progress on stderr, the reply on stdout."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.started = time.monotonic()

    def __call__(self, event: RunEvent) -> None:
        if self.quiet:
            return
        if isinstance(event, RunQueued) and (event.position or event.waiting_for_slot):
            where = "for a free run slot" if event.waiting_for_slot else "behind other messages"
            print(f"… queued ({event.position} ahead, waiting {where})", file=sys.stderr)
        elif isinstance(event, RunStarted):
            mode = "resuming session" if event.resumed else "new session"
            print(f"… claude started (pid {event.pid}, {mode})", file=sys.stderr)
        elif isinstance(event, RunApprovalDone):
            who = f" by {event.by}" if event.by else ""
            print(f"… {event.tool}: {event.outcome}{who} {event.note}".rstrip(), file=sys.stderr)
        elif isinstance(event, RunProgress) and event.tool:
            summary = f": {event.summary}" if event.summary else ""
            print(f"… {event.tool}{summary}", file=sys.stderr)

    def finish(self, event: RunDone | RunFailed) -> int:
        if isinstance(event, RunDone) and event.merged_into:
            print("answered together with an earlier message (see its reply)", file=sys.stderr)
            return EXIT_OK
        if isinstance(event, RunDone):
            if event.context_reset:
                print(
                    "note: the previous Claude session was gone; this reply started a new one",
                    file=sys.stderr,
                )
            print(event.reply)
            if not self.quiet:
                print(
                    f"… done in {event.duration_ms / 1000:.1f} s, session {event.session_id}, "
                    f"${event.cost_usd:.4f}",
                    file=sys.stderr,
                )
            return EXIT_OK
        retry = f" (retry after {event.retry_at})" if event.retry_at else ""
        _err(f"run failed ({event.reason}): {event.message}{retry}")
        return EXIT_FAILURE


# ---- commands --------------------------------------------------------------------------


def cmd_init(args: argparse.Namespace) -> int:
    from claudeclaw.config import write_starter_settings

    paths = _paths(args)
    path = write_starter_settings(paths, force=args.force)
    print(f"wrote {path}")
    print("next: put your Discord bot token in discord.token (or DISCORD_TOKEN), your user id")
    print("in discord.allowedUserIds, then run `claudeclaw doctor` and `claudeclaw run`.")
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    from claudeclaw.config import load_settings
    from claudeclaw.logs import configure_logging
    from claudeclaw.supervisor import run_daemon

    paths = _paths(args)
    configure_logging(level=args.log_level, mode=args.log_mode, process="supervisor")
    settings = load_settings(paths.settings_file)
    return run_daemon(paths, settings, log_mode=args.log_mode, log_level=args.log_level)


def cmd_status(args: argparse.Namespace) -> int:
    report = asyncio.run(control.request(_service_paths(args), {"type": "status"}))
    report.pop("type", None)
    report.pop("v", None)
    if args.json:
        print(json.dumps(report, indent=2))
        return EXIT_OK
    daemon = report["daemon"]
    print(
        f"claudeclaw {daemon['version']} pid {daemon['pid']}, up {daemon['uptime_s']:.0f} s, "
        f"project {daemon['project']}"
    )
    print(f"  {daemon['status']}; rss {daemon['rss_bytes'] / 1e6:.1f} MB")
    next_job = daemon.get("next_job")
    if next_job:
        print(f"  next scheduled: {next_job['name']} at {next_job['at']}")
    if daemon.get("recovered_messages"):
        print(
            f"  {daemon['recovered_messages']} message(s) kept from before a restart wait for "
            "Discord to connect"
        )
    given_up = (daemon.get("discord") or {}).get("undeliverable_answers")
    if given_up:
        undelivered = ProjectPaths(Path(daemon["project"])).undelivered_dir
        print(
            f"  {given_up} answer(s) Discord will never take (channel or message gone, or no "
            f"access) since the start: read them in {undelivered}"
        )
    for orphan in daemon.get("orphan_worktrees", []):
        print(f"  orphan worktree (no session owns it; not deleted): {orphan}")
    workers = report["workers"]
    if not workers:
        print("  no live workers")
        return EXIT_OK
    print(
        f"  {'KEY':<20} {'PID':>7} {'STATE':<9} {'QUEUE':>5} {'RUN_S':>7} {'RSS_MB':>7} "
        f"{'CLAUDE':<6} {'C_PID':>7} {'C_RSS_MB':>8}  SESSION"
    )
    for w in workers:
        mode = w.get("claude_mode") or "-"
        claude_pid = w.get("claude_pid") or "-"
        print(
            f"  {w['key'] or '(spare)':<20} {w['pid']:>7} {w['state']:<9} {w['queue_length']:>5} "
            f"{w['run_elapsed_s']:>7.1f} {w['rss_bytes'] / 1e6:>7.1f} {mode:<6} {claude_pid:>7} "
            f"{w.get('claude_rss_bytes', 0) / 1e6:>8.1f}  {w['session_id'] or '-'}"
        )
    return EXIT_OK


def cmd_send(args: argparse.Namespace) -> int:
    paths = _service_paths(args)
    key = _key(args.thread)
    printer = ProgressPrinter(args.quiet)

    async def go() -> int:
        channel = await control.converse(
            paths, {"type": "send", "key": key, "prompt": _prompt(args.text)}
        )
        try:
            while (frame := await channel.recv()) is not None:
                if frame["type"] == "error":
                    raise IpcError(str(frame.get("message", "unknown error")))
                if frame["type"] != "event":
                    continue
                event = event_from_dict(frame["event"])
                if isinstance(event, RunDone | RunFailed):
                    return printer.finish(event)
                if isinstance(event, RunApproval):
                    for answer in await _ask_on_terminal(event):
                        await channel.send({"type": "approval.answer", **answer})
                    continue
                printer(event)
        finally:
            await channel.close()
        _err("the daemon closed the connection before the run finished")
        return EXIT_FAILURE

    return asyncio.run(go())


async def _ask_on_terminal(event: RunApproval) -> list[dict[str, Any]]:
    """``security.approvals`` on ``claudeclaw send``: y/n on a terminal; denied without one."""
    base = {"request_id": event.request_id}
    if not sys.stdin.isatty():
        _err(
            f"… {event.tool} denied: approving it needs a terminal (or approve it from "
            "Discord, or allow the tool in security.allowedTools)"
        )
        return [{**base, "outcome": "deny"}]
    if event.questions:
        answers = []
        for qi, question in enumerate(event.questions):
            print(f"? {question.question}", file=sys.stderr)
            for oi, label in enumerate(question.options, 1):
                print(f"  {oi}. {label}", file=sys.stderr)
            line = await asyncio.to_thread(input, "choice (number, empty: refuse): ")
            if not line.strip().isdigit() or not 1 <= int(line) <= len(question.options):
                return [{**base, "outcome": "deny"}]
            answers.append({**base, "outcome": "answered", "question": qi, "option": int(line) - 1})
        return answers
    print(f"? Claude wants to use {event.tool}:\n{event.summary}", file=sys.stderr)
    line = await asyncio.to_thread(input, "allow? [y]es / [s]ession / [N]o: ")
    choice = {"y": "allow", "yes": "allow", "s": "allow_session", "session": "allow_session"}
    return [{**base, "outcome": choice.get(line.strip().lower(), "deny")}]


def cmd_cancel(args: argparse.Namespace) -> int:
    key = _key(args.thread)
    reply = asyncio.run(control.request(_service_paths(args), {"type": "cancel", "key": key}))
    print(f"cancelled the current run of {key}" if reply["cancelled"] else f"{key}: nothing runs")
    return EXIT_OK


def cmd_ask(args: argparse.Namespace) -> int:
    from claudeclaw.claude.runner import run_claude
    from claudeclaw.config import load_settings
    from claudeclaw.logs import configure_logging
    from claudeclaw.sessions import SessionRegistry

    paths = _paths(args)
    configure_logging(level="warning", mode="console", process="ask")
    key = _key(args.thread)
    settings = load_settings(paths.settings_file)
    registry = SessionRegistry(paths)
    printer = ProgressPrinter(args.quiet)

    async def go() -> int:
        if await control.daemon_running(paths):
            _err("a daemon is serving this project: use `claudeclaw send` so runs are serialised")
            return EXIT_FAILURE
        await asyncio.to_thread(registry.fold_changes)  # what a killed daemon left
        record = await asyncio.to_thread(registry.get, key)
        workspace = record.workspace if record else None
        if record is None and key != GLOBAL_KEY and settings.threads.workspace == "worktree":
            from claudeclaw.workspace import Workspaces

            workspace = await Workspaces(paths).ensure(key)

        writes: list[asyncio.Task[Any]] = []

        def on_event(event: RunEvent) -> None:
            printer(event)
            if isinstance(event, RunSession) and event.session_id:
                # recorded at once (a later failure keeps it), off the event loop
                writes.append(
                    asyncio.create_task(asyncio.to_thread(registry.record, key, event.session_id))
                )

        final = await run_claude(
            settings,
            _prompt(args.text),
            session_id=record.session_id if record else None,
            msg_id="ask",
            cwd=Path(workspace.cwd) if workspace else paths.root,
            scope=paths.root,
            on_event=on_event,
        )
        await asyncio.gather(*writes)
        if isinstance(final, RunDone) and final.session_id:
            await asyncio.to_thread(registry.record, key, final.session_id)
            await asyncio.to_thread(registry.touch, key)
        if workspace is not None and record is None:  # its worktree belongs with it now
            change = ("workspace", key, json.dumps(workspace.to_json()))
            await asyncio.to_thread(registry.apply, [change])
        return printer.finish(final)

    return asyncio.run(go())


def _sessions_offline(args: argparse.Namespace) -> int:
    """``sessions`` without a daemon: straight from the files (same output shape), with
    what a killed daemon journaled but had not written folded in first."""
    from claudeclaw.logs import configure_logging
    from claudeclaw.sessions import SessionRegistry

    configure_logging(level="warning", mode="console", process="sessions")  # (stderr)
    registry = SessionRegistry(_service_paths(args))
    try:
        registry.fold_changes()
    except (OSError, StateError) as exc:  # (another user's files): show what they say
        _err(f"warning: recent session changes not folded in: {exc}")
    if args.action == "list":
        glob = registry.get(GLOBAL_KEY)
        rows = ([glob] if glob else []) + registry.list()
        if getattr(args, "json", False):
            print(json.dumps([info_to_dict(SessionInfo(r.key, r)) for r in rows], indent=2))
        else:
            _print_records(rows)
        return EXIT_OK
    key = session_key(args.key)
    if args.action == "show":
        record = registry.get(key)
        print(json.dumps(info_to_dict(SessionInfo(key, record)), indent=2))
        return EXIT_OK if record else EXIT_FAILURE
    removed = registry.remove(key)
    print(f"removed session of {key}" if removed else f"no session for {key}")
    return EXIT_OK


def _print_records(rows: list[Any], live: dict[str, dict[str, Any]] | None = None) -> None:
    if not rows:
        print("no sessions")
        return
    print(f"{'KEY':<20} {'SESSION':<36} {'TURNS':>5}  {'LAST USED':<24} STATE")
    for r in rows:
        state = ""
        if live and r.key in live:
            info = live[r.key]
            state = "running" if info["running"] else ("live" if info["worker_pid"] else "")
        print(f"{r.key:<20} {r.session_id:<36} {r.turn_count:>5}  {r.last_used_at:<24} {state}")


def cmd_sessions(args: argparse.Namespace) -> int:
    paths = _service_paths(args)

    async def online() -> int | None:
        if not await control.daemon_running(paths):
            return None
        if args.action == "list":
            reply = await control.request(paths, {"type": "sessions.list"})
            infos = reply["sessions"]
            glob = await control.request(paths, {"type": "sessions.show", "key": GLOBAL_KEY})
            if glob["session"]["record"]:
                infos = [glob["session"], *infos]
            if getattr(args, "json", False):
                print(json.dumps(infos, indent=2))
                return EXIT_OK
            from claudeclaw.model import SessionRecord

            records = [
                SessionRecord(**{**i["record"], "workspace": None}) for i in infos if i["record"]
            ]
            _print_records(records, {i["key"]: i for i in infos})
            return EXIT_OK
        key = session_key(args.key)
        if args.action == "show":
            reply = await control.request(paths, {"type": "sessions.show", "key": key})
            print(json.dumps(reply["session"], indent=2))
            return EXIT_OK if reply["session"]["record"] else EXIT_FAILURE
        reply = await control.request(paths, {"type": "sessions.rm", "key": key})
        print(f"removed session of {key}" if reply["removed"] else f"no session for {key}")
        if reply.get("workspace"):
            print(reply["workspace"])
        return EXIT_OK

    code = asyncio.run(online())
    return code if code is not None else _sessions_offline(args)


def cmd_jobs(args: argparse.Namespace) -> int:
    paths = _paths(args)
    if args.action == "run":
        return _run_now(paths, {"type": "jobs.run", "name": args.name})
    reply = asyncio.run(control.request(paths, {"type": "jobs.list"}))
    rows: list[dict[str, Any]] = reply["jobs"]
    if getattr(args, "json", False):
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    if not rows:
        print(f"no jobs (add <name>.md files to {paths.jobs_dir})")
        return EXIT_OK
    print(f"{'NAME':<24} {'SCHEDULE':<18} {'NEXT RUN':<26} {'LAST RUN':<26} OUTCOME")
    for row in rows:
        outcome = row["last_outcome"] or "-"
        if row["running"]:
            outcome = "running"
        print(
            f"{row['name']:<24} {row['schedule'] or '-':<18} {row['next_run'] or '-':<26} "
            f"{row['last_run'] or '-':<26} {outcome}"
        )
        if row["error"]:
            print(f"    error: {row['error']}")
        for warning in row.get("warnings", []):
            print(f"    warning: {warning}")
    return EXIT_OK


def cmd_heartbeat(args: argparse.Namespace) -> int:
    return _run_now(_paths(args), {"type": "heartbeat.run"})


def _run_now(paths: ProjectPaths, message: dict[str, Any]) -> int:
    """Run a job (or the heartbeat) now in the daemon; its reply on stdout."""

    async def go() -> int:
        async for frame in control.stream(paths, message):
            if frame["type"] != "result":
                continue
            if frame["ok"]:
                print(frame["text"])
                return EXIT_OK
            _err(f"run failed ({frame['reason']}): {frame['text']}")
            return EXIT_FAILURE
        _err("the daemon closed the connection before the run finished")
        return EXIT_FAILURE

    return asyncio.run(go())


def cmd_reload(args: argparse.Namespace) -> int:
    reply = asyncio.run(control.request(_service_paths(args), {"type": "reload"}, reply_within=120))
    print(reply.get("message", "reloaded"))
    return EXIT_OK


def cmd_doctor(args: argparse.Namespace) -> int:
    from claudeclaw.doctor import exit_code, format_checks, run_checks

    checks = asyncio.run(run_checks(_service_paths(args), service=find_service()))
    print(format_checks(checks))
    return exit_code(checks)


def cmd_debug(args: argparse.Namespace) -> int:
    reply = asyncio.run(
        control.request(_paths(args), {"type": "debug.hang", "seconds": args.seconds})
    )
    print(reply.get("message", ""))
    return EXIT_OK


# ---- argument parsing ------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--project",
        metavar="DIR",
        default=argparse.SUPPRESS,  # so a nested parser never resets a value given earlier
        help="the project directory (default: current directory)",
    )
    parser = argparse.ArgumentParser(
        prog="claudeclaw",
        description="Work with Claude Code from Discord: one Claude session per thread.",
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"claudeclaw {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func: Callable[[argparse.Namespace], int], help_: str) -> Any:
        p = sub.add_parser(name, parents=[common], help=help_, description=help_)
        p.set_defaults(func=func)
        return p

    p = add("init", cmd_init, "write a starter settings.json and the state directory")
    p.add_argument("--force", action="store_true", help="overwrite an existing settings.json")

    p = add("run", cmd_run, "run the daemon in the foreground (what systemd starts)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--log-mode", default="auto", choices=["auto", "console", "json", "journal"])

    p = add("status", cmd_status, "show the daemon and its workers")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    for name, func, help_ in (
        ("send", cmd_send, "send a message through the running daemon and print the reply"),
        ("ask", cmd_ask, "run one message directly (no daemon) and print the reply"),
    ):
        p = add(name, func, help_)
        p.add_argument("--thread", metavar="ID", help="the thread's session (default: global)")
        p.add_argument("--quiet", "-q", action="store_true", help="print only the reply")
        p.add_argument("text", nargs="+", help="the message ('-' reads it from stdin)")

    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output"
    )
    p = add("cancel", cmd_cancel, "stop the running claude of a session (the queue goes on)")
    p.add_argument("--thread", metavar="ID", help="the thread's session (default: global)")

    p = add("sessions", cmd_sessions, "list, show or remove thread sessions")
    p.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output"
    )
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("list", parents=[common, as_json], help="every session")
    for action in ("show", "rm"):
        a = actions.add_parser(action, parents=[common, as_json], help=f"{action} one session")
        a.add_argument("key", metavar="THREAD_ID", help="a thread id, or 'global'")

    p = add("jobs", cmd_jobs, "list the scheduled jobs, or run one now")
    p.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output"
    )
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("list", parents=[common, as_json], help="every job: next and last run")
    a = actions.add_parser("run", parents=[common], help="run one job now; print its reply")
    a.add_argument("name", help="the job's name (its file name without .md)")
    p = sub.add_parser("heartbeat", parents=[common], help="run the heartbeat now; print its reply")
    p.set_defaults(func=cmd_heartbeat)
    p.add_argument("action", choices=["run"])

    add("reload", cmd_reload, "re-read settings.json in the running daemon (waits until applied)")
    add("doctor", cmd_doctor, "check the installation, each problem with its fix")

    p = sub.add_parser(
        "debug", parents=[common], help="test hooks (the daemon needs CLAUDECLAW_TEST_HOOKS=1)"
    )
    p.set_defaults(func=cmd_debug)
    p.add_argument("what", choices=["hang"])
    p.add_argument("--seconds", type=float, default=3600.0)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
        return code
    except DiscordLoginRejected as exc:
        _err(str(exc))
        return EXIT_LOGIN_FAILED
    except ConfigError as exc:
        _err(str(exc))
        return EXIT_CONFIG
    except DaemonNotRunning as exc:
        _err(str(exc))
        why = getattr(args, "project_why", "")
        if why and why != "--project":
            _err(f"(the project is {why}; --project DIR asks another)")
        return EXIT_NOT_RUNNING
    except (StateError, IpcError, ClaudeclawError) as exc:
        _err(str(exc))
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130
