"""Per-thread git worktrees (``claudeclaw/workspace.py``) against real git in tmp dirs."""

from __future__ import annotations

import asyncio
import stat
import subprocess
from pathlib import Path

import pytest

from claudeclaw.config import parse_settings
from claudeclaw.errors import ConfigError, WorkspaceError
from claudeclaw.model import SessionKey, Workspace
from claudeclaw.paths import ProjectPaths
from claudeclaw.workspace import (
    Workspaces,
    branch_for,
    patches_dir,
    repo_problem,
    slug,
    worktree_path,
)

T1 = SessionKey("111111111111111111")
T2 = SessionKey("222222222222222222")
IDENT = ["-c", "user.name=Test", "-c", "user.email=test@example.invalid"]


def git(cwd: Path, *args: str) -> str:
    out = subprocess.run(
        ["git", "-C", str(cwd), *IDENT, *args], capture_output=True, text=True, check=True
    )
    return out.stdout


async def agit(cwd: Path, *args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        "git", "-C", str(cwd), *IDENT, *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    return out.decode()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    (root / "app.py").write_text("print('v1')\n")
    git(root, "add", "app.py")
    git(root, "commit", "-q", "-m", "init")
    return root


@pytest.fixture
def spaces(repo: Path) -> Workspaces:
    return Workspaces(ProjectPaths.for_project(repo))


def test_names_are_safe_and_short() -> None:
    assert slug("Fix the build!") == "fix-the-build"
    assert slug("Ünïcode — naïve café") == "unicode-naive-cafe"
    assert slug("../../etc; rm -rf /") == "etc-rm-rf"
    assert slug("x" * 80) == "x" * 24
    assert slug("🙂🙂") == ""
    assert branch_for(T1, "Fix the build!") == f"claudeclaw/{T1}-fix-the-build"
    assert branch_for(T1, "") == f"claudeclaw/{T1}"
    with pytest.raises(WorkspaceError, match="global"):
        branch_for(SessionKey("global"))
    with pytest.raises(ValueError, match="digits"):
        worktree_path(ProjectPaths.for_project("/tmp"), SessionKey("../evil"))


async def test_two_threads_writing_one_file_end_on_two_branches(
    repo: Path, spaces: Workspaces
) -> None:
    ws1, ws2 = await asyncio.gather(spaces.ensure(T1, "alpha"), spaces.ensure(T2, "beta"))
    assert ws1.path != ws2.path and ws1.branch != ws2.branch
    assert ws1.branch == f"claudeclaw/{T1}-alpha" and ws2.branch == f"claudeclaw/{T2}-beta"
    assert ws1.base == "main" and ws1.base_commit == git(repo, "rev-parse", "HEAD").strip()

    async def work(ws: Workspace, text: str) -> None:
        Path(ws.cwd, "app.py").write_text(text)
        await agit(Path(ws.cwd), "commit", "-q", "-am", text.strip())

    await asyncio.gather(work(ws1, "print('alpha')\n"), work(ws2, "print('beta')\n"))
    assert git(repo, "show", f"{ws1.branch}:app.py") == "print('alpha')\n"
    assert git(repo, "show", f"{ws2.branch}:app.py") == "print('beta')\n"
    # the main checkout is untouched: same file, same HEAD, nothing to show in git status
    assert (repo / "app.py").read_text() == "print('v1')\n"
    assert git(repo, "symbolic-ref", "--short", "HEAD").strip() == "main"
    assert git(repo, "status", "--porcelain") == ""
    st = await spaces.status(ws1)
    assert (st.branch, st.ahead, st.behind, st.changed_files) == (ws1.branch, 1, 0, 0)
    assert stat.S_IMODE(Path(ws1.path).parent.stat().st_mode) == 0o700


async def test_a_renamed_thread_resumes_in_the_same_directory(spaces: Workspaces) -> None:
    first = await spaces.ensure(T1, "old name")
    Path(first.path, "notes.txt").write_text("keep me\n")
    # the session recorded it: a new name changes nothing
    assert await spaces.ensure(T1, "a brand new name", recorded=first) == first
    # not recorded yet (the first run died before system/init): the worktree is adopted
    adopted = await spaces.ensure(T1, "a brand new name")
    assert (adopted.path, adopted.branch, adopted.base) == (first.path, first.branch, "main")
    assert Path(adopted.path, "notes.txt").read_text() == "keep me\n"


async def test_a_deleted_directory_is_recreated_on_its_branch(
    repo: Path, spaces: Workspaces
) -> None:
    ws = await spaces.ensure(T1, "t")
    Path(ws.path, "new.py").write_text("x = 1\n")
    await agit(Path(ws.path), "add", "new.py")
    await agit(Path(ws.path), "commit", "-q", "-m", "new")
    git(repo, "worktree", "unlock", ws.path)
    git(repo, "worktree", "remove", "--force", ws.path)
    again = await spaces.ensure(T1, "t", recorded=ws)
    assert again == ws and Path(ws.path, "new.py").read_text() == "x = 1\n"


async def test_status_and_diff_include_uncommitted_and_new_files(
    repo: Path, spaces: Workspaces
) -> None:
    ws = await spaces.ensure(T1, "diffs")
    wt = Path(ws.path)
    (wt / "app.py").write_text("print('v2')\n")
    await agit(wt, "commit", "-q", "-am", "v2")
    (wt / "app.py").write_text("print('v3')\n")
    (wt / "brand_new.txt").write_text("hello\n")
    git(repo, "commit", "-q", "--allow-empty", "-m", "main moves on")
    st = await spaces.status(ws)
    assert (st.ahead, st.behind, st.changed_files) == (1, 1, 2)
    diff = await spaces.diff(ws)
    assert "app.py" in diff.stat and "brand_new.txt" in diff.stat
    assert "-print('v1')" in diff.patch and "+print('v3')" in diff.patch
    assert "+hello" in diff.patch and not diff.truncated
    # only a copy of the index took the new file: the thread's own index is as it was
    assert git(wt, "status", "--porcelain", "brand_new.txt") == "?? brand_new.txt\n"
    cut = await spaces.diff(ws, max_bytes=40)
    assert cut.truncated and len(cut.patch.encode()) <= 40


async def test_delete_keeps_a_branch_with_commits_and_saves_a_patch(
    repo: Path, spaces: Workspaces
) -> None:
    ws = await spaces.ensure(T1, "work")
    wt = Path(ws.path)
    (wt / "app.py").write_text("print('committed')\n")
    await agit(wt, "commit", "-q", "-am", "committed")
    (wt / "app.py").write_text("print('uncommitted')\n")
    (wt / "untracked.txt").write_text("new file\n")
    removal = await spaces.remove(T1, ws)
    assert removal.removed and not wt.exists()
    assert removal.kept_branches == (ws.branch,) and removal.deleted_branches == ()
    assert git(repo, "show", f"{ws.branch}:app.py") == "print('committed')\n"
    patch = Path(removal.patch_file)
    assert patch.parent == patches_dir(spaces.paths)
    assert stat.S_IMODE(patch.stat().st_mode) == 0o600
    assert ws.branch in removal.summary() and str(patch) in removal.summary()
    # the patch brings the uncommitted work back on the kept branch
    restore = repo.parent / "restore"
    git(repo, "worktree", "add", "-q", str(restore), ws.branch)
    git(restore, "apply", str(patch))
    assert (restore / "app.py").read_text() == "print('uncommitted')\n"
    assert (restore / "untracked.txt").read_text() == "new file\n"
    assert git(repo, "status", "--porcelain") == ""


async def test_delete_without_work_removes_branch_and_leaves_no_patch(
    repo: Path, spaces: Workspaces
) -> None:
    ws = await spaces.ensure(T1, "nothing")
    removal = await spaces.remove(T1, ws)
    assert removal.removed and removal.deleted_branches == (ws.branch,)
    assert removal.patch_file == "" and removal.kept_branches == ()
    assert ws.branch not in git(repo, "branch", "--list")
    # a new session of the same thread gets a fresh worktree at the same place
    again = await spaces.ensure(T1, "nothing")
    assert again.path == ws.path and again.branch == ws.branch


async def test_a_kept_branch_is_never_reused(repo: Path, spaces: Workspaces) -> None:
    ws = await spaces.ensure(T1, "same")
    Path(ws.path, "f").write_text("1\n")
    await agit(Path(ws.path), "add", "f")
    await agit(Path(ws.path), "commit", "-q", "-m", "f")
    await spaces.remove(T1, ws)
    again = await spaces.ensure(T1, "same")
    assert again.branch == f"{ws.branch}-2" and again.path == ws.path
    assert not Path(again.path, "f").exists()


async def test_a_worktree_locked_by_someone_else_is_left_alone(
    repo: Path, spaces: Workspaces
) -> None:
    ws = await spaces.ensure(T1, "locked")
    git(repo, "worktree", "unlock", ws.path)
    git(repo, "worktree", "lock", "--reason", "on a USB stick", ws.path)
    removal = await spaces.remove(T1, ws)
    assert not removal.removed and "on a USB stick" in removal.problem
    assert Path(ws.path).is_dir() and ws.branch in git(repo, "branch", "--list")


async def test_orphans_are_reported_not_deleted(repo: Path, spaces: Workspaces) -> None:
    ws1 = await spaces.ensure(T1, "kept")
    ws2 = await spaces.ensure(T2, "orphan")
    stray = worktree_path(spaces.paths, SessionKey("333"))
    stray.mkdir()
    (stray / "x").write_text("x")
    found = await spaces.orphans({T1: ws1})
    assert {(o.path, o.branch) for o in found} == {(ws2.path, ws2.branch), (str(stray), "")}
    assert all(o.why for o in found)
    assert Path(ws2.path).is_dir() and stray.is_dir()


async def test_two_threads_never_share_a_worktree(spaces: Workspaces) -> None:
    ws1 = await spaces.ensure(T1, "one")
    with pytest.raises(WorkspaceError, match="was the project moved"):
        await spaces.ensure(T2, "two", recorded=Workspace("/tmp", "b", "main", "0" * 40))
    # a registry naming another thread's worktree is refused too
    with pytest.raises(WorkspaceError, match=f"not {worktree_path(spaces.paths, T2)}"):
        await spaces.ensure(T2, "two", recorded=ws1)
    # a directory at T2's place that is not a worktree is refused, not reused
    place = worktree_path(spaces.paths, T2)
    place.mkdir()
    (place / "someone's file").write_text("x")
    with pytest.raises(WorkspaceError, match="move it away"):
        await spaces.ensure(T2, "two")
    assert Path(ws1.path) != place
    refused = await spaces.remove(T2, ws1)
    assert not refused.removed and Path(ws1.path).is_dir()


async def test_a_non_git_project_is_refused_clearly(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    problem = await repo_problem(plain)
    assert problem is not None and "not inside a git repository" in problem
    assert "git init" in problem and '"shared"' in problem
    with pytest.raises(WorkspaceError, match="not inside a git repository"):
        await Workspaces(ProjectPaths.for_project(plain)).ensure(T1, "x")
    empty = tmp_path / "empty"
    empty.mkdir()
    git(empty, "init", "-q")
    assert "no commit yet" in (await repo_problem(empty) or "")


async def test_a_project_in_a_subdirectory_runs_there(repo: Path) -> None:
    sub = repo / "services" / "api"
    sub.mkdir(parents=True)
    (sub / "main.py").write_text("pass\n")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "sub")
    ws = await Workspaces(ProjectPaths.for_project(sub)).ensure(T1, "sub")
    assert ws.subdir == "services/api"
    assert Path(ws.cwd, "main.py").read_text() == "pass\n"


def test_threads_workspace_setting() -> None:
    assert parse_settings({}).threads.workspace == "shared"
    assert parse_settings({"threads": {"workspace": "worktree"}}).threads.workspace == "worktree"
    with pytest.raises(ConfigError, match=r"threads\.workspace"):
        parse_settings({"threads": {"workspace": "git"}})


async def test_a_detached_head_with_commits_keeps_them_on_a_branch(
    repo: Path, spaces: Workspaces
) -> None:
    ws = await spaces.ensure(T1, "detach")
    wt = Path(ws.path)
    await agit(wt, "checkout", "-q", "--detach")
    (wt / "app.py").write_text("detached work\n")
    await agit(wt, "commit", "-q", "-am", "on a detached HEAD")
    removal = await spaces.remove(T1, ws)
    assert removal.removed and removal.kept_branches == (f"{ws.branch}-detached",)
    assert removal.deleted_branches == (ws.branch,)  # it had nothing of its own
    assert git(repo, "show", f"{ws.branch}-detached:app.py") == "detached work\n"


async def test_a_patch_keeps_bytes_that_are_not_utf8(repo: Path, spaces: Workspaces) -> None:
    ws = await spaces.ensure(T1, "bytes")
    latin1 = "café à la crème\n".encode("latin-1")
    Path(ws.path, "menu.txt").write_bytes(latin1)
    removal = await spaces.remove(T1, ws)
    restore = repo.parent / "restore"
    git(repo, "worktree", "add", "-q", "--detach", str(restore))
    git(restore, "apply", removal.patch_file)
    assert (restore / "menu.txt").read_bytes() == latin1
    # a second removal in the same second does not overwrite the first patch
    again = await spaces.ensure(T1, "bytes")
    Path(again.path, "menu.txt").write_bytes(b"other\n")
    second = await spaces.remove(T1, again)
    assert second.patch_file != removal.patch_file and Path(removal.patch_file).exists()


async def test_a_big_diff_is_read_whole_or_cut_exactly(spaces: Workspaces) -> None:
    ws = await spaces.ensure(T1, "big")
    Path(ws.path, "big.txt").write_text("".join(f"line {i:07d}\n" for i in range(100_000)))
    whole = await spaces.diff(ws)
    assert not whole.truncated and len(whole.patch) > 1_300_000
    assert whole.patch.rstrip().endswith("+line 0099999")
    cut = await spaces.diff(ws, max_bytes=500_000)
    assert cut.truncated and len(cut.patch.encode()) == 500_000
    assert whole.patch.startswith(cut.patch)
