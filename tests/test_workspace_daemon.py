"""Thread worktrees in the running daemon: real supervisor, real workers, fake claude, real git."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from claudeclaw import control, session_workspaces
from claudeclaw.claude import transcript_path
from claudeclaw.errors import ConfigError
from claudeclaw.model import GLOBAL_KEY, RunDone, RunEvent, SessionKey, is_final
from claudeclaw.supervisor import Supervisor
from claudeclaw.workspace import Workspaces, worktree_path
from tests.fake_anthropic import FakeAnthropic
from tests.fake_discord import FakeDiscord
from tests.fixtures_daemon import (
    ProjectFactory,
    collect,
    discord_settings,
    new_supervisor,
    started_supervisor,
)

T1 = SessionKey("111111111111111111")
T2 = SessionKey("222222222222222222")
WORKTREE = {"threads": {"workspace": "worktree"}}
IDENT = ["-c", "user.name=Test", "-c", "user.email=test@example.invalid"]


def git(cwd: Path | str, *args: str) -> str:
    out = subprocess.run(
        ["git", "-C", str(cwd), *IDENT, *args], capture_output=True, text=True, check=True
    )
    return out.stdout


def make_repo(root: Path) -> None:
    """The project as a git repository whose state directory is ignored (as users do)."""
    git(root, "init", "-q", "-b", "main")
    (root / ".gitignore").write_text(".claude/\n")
    (root / "app.py").write_text("v1\n")
    git(root, "add", ".gitignore", "app.py")
    git(root, "commit", "-q", "-m", "init")


async def ask(sup: Supervisor, key: SessionKey, prompt: str, label: str = "") -> RunDone:
    events: list[RunEvent] = []
    async with asyncio.timeout(60):
        async for event in sup.submit(key, prompt, origin="test", label=label):
            events.append(event)
            if is_final(event):
                break
    final = events[-1]
    assert isinstance(final, RunDone), final
    return final


@pytest.fixture
async def repo_daemon(make_project: ProjectFactory) -> Any:
    paths = make_project(**WORKTREE)
    make_repo(paths.root)
    sup = await started_supervisor(paths)
    try:
        yield sup
    finally:
        await sup.shutdown()


async def test_two_threads_writing_one_file_at_once_stay_apart(repo_daemon: Supervisor) -> None:
    sup = repo_daemon
    root = sup.paths.root
    one, two = await asyncio.gather(
        ask(sup, T1, "WRITE:app.py=alpha SLEEP:0.3 ECHO_CWD", label="Alpha work"),
        ask(sup, T2, "WRITE:app.py=beta SLEEP:0.3 ECHO_CWD", label="Beta work"),
    )
    ws1, ws2 = sup.workspace_of[T1], sup.workspace_of[T2]
    assert one.reply == ws1.path == str(worktree_path(sup.paths, T1))
    assert two.reply == ws2.path and ws1.path != ws2.path
    assert (ws1.branch, ws2.branch) == (f"claudeclaw/{T1}-alpha-work", f"claudeclaw/{T2}-beta-work")
    assert Path(ws1.path, "app.py").read_text() == "alpha\n"
    assert Path(ws2.path, "app.py").read_text() == "beta\n"
    # the main checkout is untouched
    assert (root / "app.py").read_text() == "v1\n"
    assert git(root, "status", "--porcelain") == ""
    assert git(root, "symbolic-ref", "--short", "HEAD").strip() == "main"
    # the worktrees are on their own branches: commit there, and main does not move
    for ws in (ws1, ws2):
        git(ws.path, "commit", "-q", "-am", "thread work")
    assert git(root, "show", f"{ws1.branch}:app.py") == "alpha\n"
    assert git(root, "show", f"{ws2.branch}:app.py") == "beta\n"
    assert git(root, "show", "main:app.py") == "v1\n"
    # recorded with the session, in the original's file, as an added field
    await sup._writes.flush()  # (the session files are written within REGISTRY_DELAY_S)
    entry = json.loads(sup.paths.thread_sessions_file.read_text())["threads"][T1]
    assert entry["sessionId"] == one.session_id and entry["threadId"] == T1
    assert entry["workspace"] == ws1.to_json()
    # the global session keeps the project directory
    glob = await ask(sup, GLOBAL_KEY, "ECHO_CWD")
    assert glob.reply == str(root)
    info = await sup.session_info(T1)
    assert info.workspace is not None
    assert (info.workspace.branch, info.workspace.ahead, info.workspace.changed_files) == (
        ws1.branch,
        1,
        0,
    )


async def test_a_renamed_thread_resumes_in_the_same_directory(
    make_project: ProjectFactory,
) -> None:
    paths = make_project(**WORKTREE)
    make_repo(paths.root)
    sup = await started_supervisor(paths)
    try:
        first = await ask(sup, T1, "ECHO_CWD", label="First name")
        second = await ask(sup, T1, "ECHO_CWD", label="Renamed thread")
        assert first.reply == second.reply == sup.workspace_of[T1].path
        assert first.session_id == second.session_id
        branch = sup.workspace_of[T1].branch
    finally:
        await sup.shutdown()
    # after a restart the registry puts it back in the same place, resuming the session
    sup = await started_supervisor(paths)
    try:
        third = await ask(sup, T1, "hello", label="Third name")
        assert "turn=3" in third.reply and third.session_id == first.session_id
        assert sup.workspace_of[T1].path == first.reply and sup.workspace_of[T1].branch == branch
    finally:
        await sup.shutdown()


async def test_reset_keeps_a_branch_with_commits_and_saves_a_patch(
    repo_daemon: Supervisor,
) -> None:
    sup = repo_daemon
    await ask(sup, T1, "WRITE:app.py=committed", label="keep me")
    ws = sup.workspace_of[T1]
    git(ws.path, "commit", "-q", "-am", "work worth keeping")
    await ask(sup, T1, "WRITE:app.py=uncommitted WRITE:notes.txt=new")
    diff = await sup.workspace_diff(T1)
    assert diff is not None and "+uncommitted" in diff.patch and "+new" in diff.patch
    outcome = await sup.reset_session(T1)
    assert outcome.had_session
    assert ws.branch in outcome.workspace_note and ".patch" in outcome.workspace_note
    assert not Path(ws.path).exists() and T1 not in sup.workspace_of
    assert git(sup.paths.root, "show", f"{ws.branch}:app.py") == "committed\n"
    patches = list((sup.paths.state_dir / "patches").glob("*.patch"))
    assert len(patches) == 1 and str(patches[0]) in outcome.workspace_note
    assert "+uncommitted" in patches[0].read_text() and "+new" in patches[0].read_text()
    # the next message starts a new session in a fresh worktree on a new branch
    again = await ask(sup, T1, "ECHO_CWD", label="keep me")
    assert again.reply == ws.path and sup.workspace_of[T1].branch == f"{ws.branch}-2"
    assert Path(ws.path, "app.py").read_text() == "v1\n"


async def test_reset_of_a_thread_without_work_leaves_nothing(repo_daemon: Supervisor) -> None:
    sup = repo_daemon
    await ask(sup, T1, "hello", label="nothing")
    ws = sup.workspace_of[T1]
    outcome = await sup.reset_session(T1)
    assert outcome.workspace_note == f"Removed the worktree {ws.path}."
    assert ws.branch not in git(sup.paths.root, "branch", "--list")


async def test_a_non_git_project_is_refused_at_start_and_on_reload(
    make_project: ProjectFactory,
) -> None:
    paths = make_project(**WORKTREE)
    sup = new_supervisor(paths)
    with pytest.raises(ConfigError, match="not inside a git repository") as caught:
        await sup.run()
    assert '"shared"' in str(caught.value) and "git init" in str(caught.value)
    # shared mode starts; switching to worktree by reload is refused and changes nothing
    paths.settings_file.write_text(json.dumps({"runner": {"claudePath": "claude"}}))
    sup = await started_supervisor(paths)
    try:
        paths.settings_file.write_text(json.dumps(WORKTREE))
        applied, message = await sup.reload()
        assert not applied and "not inside a git repository" in message
        assert sup.settings.threads.workspace == "shared"
    finally:
        await sup.shutdown()


async def test_a_session_keeps_its_directory_when_the_setting_changes(
    make_project: ProjectFactory,
) -> None:
    paths = make_project()
    make_repo(paths.root)
    sup = await started_supervisor(paths)
    try:
        before = await ask(sup, T1, "ECHO_CWD")
        assert before.reply == str(paths.root)
        settings = json.loads(paths.settings_file.read_text())
        paths.settings_file.write_text(json.dumps({**settings, **WORKTREE}))
        applied, _ = await sup.reload()
        assert applied
        assert (await ask(sup, T1, "ECHO_CWD")).reply == str(paths.root)
        assert (await ask(sup, T2, "ECHO_CWD")).reply == str(worktree_path(paths, T2))
        assert (await sup.workspace_diff(T1)) is None
    finally:
        await sup.shutdown()


async def test_orphan_worktrees_are_reported_at_start_not_deleted(
    make_project: ProjectFactory,
) -> None:
    paths = make_project(**WORKTREE)
    make_repo(paths.root)
    orphan = await Workspaces(paths).ensure(T2, "left behind")
    with capture_logs() as logs:
        sup = await started_supervisor(paths)
    try:
        assert [o.path for o in sup.orphan_worktrees] == [orphan.path]
        warned = [e for e in logs if e["event"] == "workspace.orphan"]
        assert [(e["path"], e["branch"]) for e in warned] == [(orphan.path, orphan.branch)]
        assert Path(orphan.path).is_dir()
        report = await sup.requests.status_report()
        assert report["daemon"]["orphan_worktrees"] == [orphan.path]
        # the thread's next message adopts it (its first run had died before recording it)
        done = await ask(sup, T2, "ECHO_CWD")
        assert done.reply == orphan.path and sup.workspace_of[T2].branch == orphan.branch
    finally:
        await sup.shutdown()


async def test_the_control_socket_reset_names_the_kept_branch(repo_daemon: Supervisor) -> None:
    sup = repo_daemon
    await ask(sup, T1, "WRITE:app.py=x")
    ws = sup.workspace_of[T1]
    git(ws.path, "commit", "-q", "-am", "x")
    events = await collect(sup, T2, "hello")
    assert isinstance(events[-1], RunDone)
    reply = await control.request(sup.paths, {"type": "sessions.rm", "key": T1})
    assert reply["removed"] is True
    assert f"Branch `{ws.branch}` has commits not in its base and was kept." in reply["workspace"]
    assert T2 in sup.workspace_of and Path(sup.workspace_of[T2].path).is_dir()


@pytest.mark.realcli
async def test_the_real_cli_runs_in_the_thread_worktree(
    make_project: ProjectFactory,
    real_claude_path: Path,
    real_claude_env: dict[str, str],
    fake_anthropic: FakeAnthropic,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """The real pinned CLI, started by a real worker for a thread: its ``system/init``
    line reports the thread's worktree as its cwd, its transcript is filed there, and the
    model is told to work in it (scoped to the project, whose inbox it may read)."""
    for name, value in real_claude_env.items():
        monkeypatch.setenv(name, value)
    stream_log = tmp_path / "stream.jsonl"
    wrapper = tmp_path / "claude-tee"
    wrapper.write_text(
        f'#!/bin/bash\nset -o pipefail\n"{real_claude_path}" "$@" | tee -a "{stream_log}"\n'
    )
    wrapper.chmod(0o755)
    paths = make_project(runner={"claudePath": str(wrapper)}, **WORKTREE)
    make_repo(paths.root)
    sup = await started_supervisor(paths)
    try:
        done = await ask(sup, T1, "hello from a worktree", label="real cli")
        ws = sup.workspace_of[T1]
    finally:
        await sup.shutdown()
    assert "FAKE-REPLY" in done.reply
    inits = [
        line
        for line in map(json.loads, stream_log.read_text().splitlines())
        if line.get("type") == "system" and line.get("subtype") == "init"
    ]
    assert [line["cwd"] for line in inits] == [ws.cwd] and ws.cwd != str(paths.root)
    assert inits[0]["session_id"] == done.session_id
    assert transcript_path(Path(ws.cwd), done.session_id, real_claude_env).is_file()
    system = str(fake_anthropic.message_requests()[-1].body.get("system"))
    assert f"Your working directory {ws.cwd} is a git worktree of its own" in system
    assert f"you are scoped to the directory {paths.root}." in system


async def test_discord_threads_archive_keeps_delete_removes_diff_posts(
    make_project: ProjectFactory, fake_discord: FakeDiscord
) -> None:
    """Through the real bot: each thread answers from its own worktree (branch named after
    the thread), /diff posts its changes, archiving keeps the worktree, deleting the thread
    removes it and saves its uncommitted work as a patch."""
    fake = fake_discord
    paths = make_project(
        discord=discord_settings(fake),
        **WORKTREE,
    )
    make_repo(paths.root)
    sup = await started_supervisor(paths, discord=True)
    try:
        t1, t2 = fake.thread_id, fake.listen_thread_id
        mention = f"<@{fake.bot['id']}>"
        await fake.user_says(t1, f"{mention} WRITE:app.py=one ECHO_CWD", mentions=[fake.bot])
        await fake.user_says(t2, "WRITE:notes.txt=draft ECHO_CWD")
        wt1, wt2 = worktree_path(paths, SessionKey(t1)), worktree_path(paths, SessionKey(t2))
        for thread, where in ((t1, wt1), (t2, wt2)):
            reply = await fake.wait_for_message(
                thread, lambda m, w=where: str(w) in m.get("content", ""), timeout=30
            )
            assert reply["content"].strip() == str(where)
        assert sup.workspace_of[SessionKey(t1)].branch == f"claudeclaw/{t1}-a-thread"
        assert sup.workspace_of[SessionKey(t2)].branch == f"claudeclaw/{t2}-listen-thread"
        assert (paths.root / "app.py").read_text() == "v1\n"

        interaction_id, token = await fake.slash_command(t2, "diff")
        await fake.wait_for_callback(interaction_id)
        followups = await fake.wait_until(lambda: fake.followups.get(token), timeout=30)
        assert "notes.txt" in followups[0]["content"]

        await fake.archive_thread(t1)
        await fake.delete_thread(t2)
        await fake.wait_until(lambda: not wt2.exists(), timeout=30, what="t2's worktree gone")
        patches = list((paths.state_dir / "patches").glob(f"{t2}-*.patch"))
        assert len(patches) == 1 and "+draft" in patches[0].read_text()
        assert wt1.is_dir()  # archived: kept
        await fake.user_says(t1, f"{mention} ECHO_CWD again", mentions=[fake.bot])
        # the archived thread comes back to the same worktree
        await fake.wait_until(
            lambda: [m for m in fake.bot_messages(t1) if m["content"].strip() == str(wt1)][1:],
            timeout=30,
            what="the second answer from t1's worktree",
        )
    finally:
        await sup.shutdown()


async def test_a_registry_pointing_at_another_threads_worktree_is_refused(
    repo_daemon: Supervisor,
) -> None:
    sup = repo_daemon
    await ask(sup, T1, "hello")
    await ask(sup, T2, "hello")
    sup.workspace_of[T2] = sup.workspace_of[T1]  # as an edited sessions.json would load
    events = [event async for event in sup.submit(T2, "ECHO_CWD", origin="test")]
    final = events[-1]
    assert final.kind == "failed" and "was the project moved" in final.message
    outcome = await sup.reset_session(T2)
    assert "is not the worktree of" in outcome.workspace_note
    assert Path(sup.workspace_of[T1].path).is_dir()


async def test_status_gives_up_on_slow_git_in_time_for_discord(
    repo_daemon: Supervisor, monkeypatch: pytest.MonkeyPatch
) -> None:
    sup = repo_daemon
    await ask(sup, T1, "hello")
    monkeypatch.setattr(session_workspaces, "STATUS_WITHIN", 0.0)
    info = await sup.session_info(T1)
    assert info.workspace is not None and "took longer than" in info.workspace.problem
    assert info.workspace.branch == sup.workspace_of[T1].branch
