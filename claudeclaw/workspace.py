"""Per-thread git worktrees: parallel threads that change code never edit one checkout.

With ``threads.workspace: "worktree"`` each thread session gets its own ``git worktree``
under ``<state dir>/worktrees/<thread id>``, on a new branch ``claudeclaw/<thread id>-<slug>``
made from the project's HEAD at the thread's first message. The directory is named after
the thread id only, so renaming the thread changes nothing, and two threads never share one.

Every git call is an asyncio subprocess with an argv (never a shell), a timeout, the
repository's hooks switched off (this is bookkeeping, not the user's action) and no
``GIT_*`` variables from our environment that could point it at another repository.
Nothing here deletes work silently: removing a worktree first saves uncommitted changes as
a patch in the state directory, keeps a branch that has commits its base does not, and
leaves alone a worktree that someone else locked.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import tempfile
import time
import unicodedata
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from claudeclaw.errors import StateError, WorkspaceError
from claudeclaw.logs import get_logger
from claudeclaw.model import (
    GLOBAL_KEY,
    SessionKey,
    Workspace,
    WorkspaceDiff,
    WorkspaceStatus,
    session_key,
)
from claudeclaw.paths import (
    PRIVATE_FILE_MODE,
    ProjectPaths,
    ensure_private_dir,
    write_private_text,
)

log = get_logger()

BRANCH_PREFIX = "claudeclaw/"
LOCK_REASON = "claudeclaw session {key}"  # `git worktree lock --reason`: ours, and whose
SLUG_MAX = 24
GIT_TIMEOUT_SECONDS = 120.0
_SECRET_ENV = ("DISCORD_TOKEN", "CREDENTIALS_DIRECTORY")


# ---- names -----------------------------------------------------------------------------


def slug(name: str, max_len: int = SLUG_MAX) -> str:
    """A short, ref-safe form of a thread's name: ``"Fix the build!"`` → ``fix-the-build``."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    text = re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")
    if len(text) > max_len:
        text = text[:max_len].rsplit("-", 1)[0] if "-" in text[:max_len] else text[:max_len]
    return text.strip("-")


def branch_for(key: SessionKey, name: str = "") -> str:
    """``claudeclaw/<thread id>-<slug>`` (``claudeclaw/<thread id>`` for an empty slug)."""
    key = _thread_key(key)
    tail = slug(name)
    return f"{BRANCH_PREFIX}{key}-{tail}" if tail else f"{BRANCH_PREFIX}{key}"


def worktrees_dir(paths: ProjectPaths) -> Path:
    return paths.state_dir / "worktrees"


def patches_dir(paths: ProjectPaths) -> Path:
    """Uncommitted changes of removed worktrees, one patch file each."""
    return paths.state_dir / "patches"


def worktree_path(paths: ProjectPaths, key: SessionKey) -> Path:
    """The worktree of ``key``: named after the (validated) thread id, nothing else."""
    return worktrees_dir(paths) / _thread_key(key)


def _thread_key(key: SessionKey | str) -> SessionKey:
    checked = session_key(key)
    if checked == GLOBAL_KEY:
        raise WorkspaceError("the global session always runs in the project directory")
    return checked


# ---- results ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Removal:
    """What removing a worktree did. ``removed`` False: nothing was deleted (``problem``)."""

    removed: bool
    path: str
    kept_branches: tuple[str, ...] = ()  # have commits their base does not: kept
    deleted_branches: tuple[str, ...] = ()
    patch_file: str = ""  # the uncommitted changes, saved before the worktree went
    problem: str = ""

    def summary(self) -> str:
        """One or two sentences for a reply and the log."""
        if not self.removed:
            return f"The worktree {self.path} was kept: {self.problem}"
        parts = [f"Removed the worktree {self.path}."]
        if self.patch_file:
            parts.append(f"Uncommitted changes were saved as {self.patch_file}.")
        if self.kept_branches:
            names = ", ".join(f"`{b}`" for b in self.kept_branches)
            parts.append(f"Branch {names} has commits not in its base and was kept.")
        if self.problem:
            parts.append(self.problem)
        return " ".join(parts)


@dataclass(frozen=True, slots=True)
class Orphan:
    """A worktree under the state directory that no session owns (reported, not deleted)."""

    path: str
    branch: str
    key: str
    why: str


@dataclass(frozen=True, slots=True)
class _Entry:
    """One block of ``git worktree list --porcelain``."""

    path: str
    head: str = ""
    branch: str = ""  # short name; "" when detached
    locked: bool = False
    lock_reason: str = ""
    prunable: bool = False


# ---- running git -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Result:
    rc: int
    out: str
    err: str
    cut: bool = False
    data: bytes = b""  # stdout as git wrote it (a patch must keep its bytes)


def _git_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_") and k not in _SECRET_ENV}
    env.update(LC_ALL="C", GIT_TERMINAL_PROMPT="0", GIT_OPTIONAL_LOCKS="0")
    if extra:
        env.update(extra)
    return env


async def _git(
    cwd: Path | str,
    *args: str,
    env: Mapping[str, str] | None = None,
    limit: int = 0,
) -> _Result:
    """``git -C cwd args...``; stdout cut after ``limit`` bytes when ``limit`` > 0."""
    argv = ["git", "-C", str(cwd), "-c", "core.hooksPath=/dev/null", "-c", "core.quotepath=off"]
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=_git_env(env),
        )
    except FileNotFoundError:
        raise WorkspaceError(
            "git is not installed (or not on PATH); install git, or set "
            'threads.workspace to "shared"'
        ) from None
    assert proc.stdout is not None and proc.stderr is not None

    async def read_out() -> tuple[bytes, bool]:
        assert proc.stdout is not None
        if not limit:
            return await proc.stdout.read(), False
        chunks: list[bytes] = []
        size = 0
        while chunk := await proc.stdout.read(1 << 16):
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                proc.kill()  # we have what we can use; the rest would only be thrown away
                return b"".join(chunks)[:limit], True
        return b"".join(chunks), False

    try:
        async with asyncio.timeout(GIT_TIMEOUT_SECONDS):
            (out, cut), err = await asyncio.gather(read_out(), proc.stderr.read())
            rc = await proc.wait()
    except BaseException as exc:  # a timeout, or our caller gave up (cancelled): no stray git
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await asyncio.shield(proc.wait())
        if isinstance(exc, TimeoutError):
            raise WorkspaceError(
                f"git {args[0]} did not finish within {GIT_TIMEOUT_SECONDS:.0f} s"
            ) from None
        raise
    return _Result(
        0 if cut else rc, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"), cut, out
    )


async def _git_ok(
    cwd: Path | str, *args: str, what: str, env: Mapping[str, str] | None = None
) -> str:
    """stdout of a git command that must succeed; WorkspaceError naming ``what`` if not."""
    result = await _git(cwd, *args, env=env)
    if result.rc != 0:
        detail = result.err.strip().splitlines()
        raise WorkspaceError(f"{what}: {detail[-1] if detail else f'git exited {result.rc}'}")
    return result.out


async def repo_problem(root: Path) -> str | None:
    """Why worktrees cannot work for the project at ``root`` (None: they can)."""
    try:
        top = await _git(root, "rev-parse", "--show-toplevel")
    except WorkspaceError as exc:
        return str(exc)
    if top.rc != 0 or not top.out.strip():
        return (
            f'threads.workspace is "worktree" but {root} is not inside a git repository; '
            'run `git init` there and commit, or set threads.workspace to "shared"'
        )
    head = await _git(root, "rev-parse", "--verify", "-q", "HEAD^{commit}")
    if head.rc != 0:
        return (
            f'threads.workspace is "worktree" but the git repository at {top.out.strip()} has '
            "no commit yet (worktrees start from HEAD); make a first commit, or set "
            'threads.workspace to "shared"'
        )
    return None


# ---- blocking file-system helpers (called through asyncio.to_thread) -------------------


def _norm(path: str | Path) -> str:
    """``path`` without ``.``, ``..`` and doubled slashes: pure string work, no I/O (the
    paths git prints and the ones we record compare equal this way)."""
    return os.path.normpath(path)


def _kind(path: Path) -> str:
    """``dir``, ``empty`` (an empty directory), ``missing`` or ``other``."""
    try:
        if not path.is_dir() or path.is_symlink():
            return "missing" if not path.exists() and not path.is_symlink() else "other"
        return "dir" if any(path.iterdir()) else "empty"
    except OSError:
        return "other"


def _ignored_private_dir(path: Path) -> None:
    """A private directory with a ``.gitignore`` of ``*``: worktrees and patches under the
    state directory never show up in the main checkout's ``git status``."""
    ensure_private_dir(path)
    ignore = path / ".gitignore"
    if not ignore.exists():
        write_private_text(ignore, "*\n")


def _write_patch(directory: Path, stem: str, data: bytes) -> Path:
    """``<stem>.patch`` (``<stem>-2.patch``... if taken) in ``directory``, mode 0600."""
    _ignored_private_dir(directory)
    for n in range(1, 1000):
        target = directory / (f"{stem}.patch" if n == 1 else f"{stem}-{n}.patch")
        try:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
        except FileExistsError:
            continue
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        return target
    raise OSError(f"too many patches named {stem} in {directory}")


def _subdirs(base: Path) -> list[str] | None:
    """The directories in ``base`` (None when ``base`` does not exist)."""
    try:
        return sorted(str(p) for p in base.iterdir() if p.is_dir() and not p.is_symlink())
    except FileNotFoundError:
        return None


# ---- the workspaces of one project -----------------------------------------------------


class Workspaces:
    """Create, inspect and remove the thread worktrees of one project.

    Calls for one key are serialised (an asyncio lock per key), so a create and a remove
    of the same thread never interleave; different keys run in parallel.
    """

    def __init__(self, paths: ProjectPaths) -> None:
        self.paths = paths
        self._locks: dict[SessionKey, asyncio.Lock] = {}
        # `git worktree add/remove` and branch changes of different keys, one at a time:
        # they share the repository's administrative files
        self._repo_lock = asyncio.Lock()

    def is_own(self, key: SessionKey, ws: Workspace) -> bool:
        """True when ``ws`` lies where ``key``'s worktree belongs (pure: no I/O)."""
        return _norm(ws.path) == str(worktree_path(self.paths, key))

    def _lock(self, key: SessionKey) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())

    async def _toplevel(self) -> Path:
        problem = await repo_problem(self.paths.root)
        if problem:
            raise WorkspaceError(problem)
        out = await _git_ok(self.paths.root, "rev-parse", "--show-toplevel", what="git")
        return Path(_norm(out.strip()))

    async def _worktrees(self) -> dict[str, _Entry]:
        """The repository's worktrees by resolved path."""
        out = await _git_ok(
            self.paths.root, "worktree", "list", "--porcelain", "-z", what="git worktree list"
        )
        entries: dict[str, _Entry] = {}
        for block in out.split("\0\0"):
            fields = [f for f in block.split("\0") if f]
            if not fields or not fields[0].startswith("worktree "):
                continue
            path = _norm(fields[0][len("worktree ") :])
            head = branch = reason = ""
            locked = prunable = False
            for f in fields[1:]:
                name, _, value = f.partition(" ")
                if name == "HEAD":
                    head = value
                elif name == "branch":
                    branch = value.removeprefix("refs/heads/")
                elif name == "locked":
                    locked, reason = True, value
                elif name == "prunable":
                    prunable = True
            entries[path] = _Entry(path, head, branch, locked, reason, prunable)
        return entries

    async def _branch_exists(self, branch: str) -> bool:
        result = await _git(
            self.paths.root, "rev-parse", "--verify", "-q", f"refs/heads/{branch}^{{commit}}"
        )
        return result.rc == 0

    async def _base_ref(self, ws: Workspace) -> str:
        """The base to compare with: its branch while it exists, else the commit."""
        if ws.base != ws.base_commit and await self._branch_exists(ws.base):
            return f"refs/heads/{ws.base}"
        return ws.base_commit

    # ---- create -------------------------------------------------------------------------

    async def ensure(
        self, key: SessionKey, name: str = "", recorded: Workspace | None = None
    ) -> Workspace:
        """The worktree of ``key``, created if needed.

        ``recorded`` is what the session registry holds: its path is kept (and the worktree
        recreated on its branch if someone deleted the directory). Without it, an existing
        worktree at the key's path is reused (a first run that died before its session was
        recorded), else a new branch is made from the project's HEAD.
        """
        key = _thread_key(key)
        async with self._lock(key):
            top = await self._toplevel()
            root = self.paths.root
            subdir = (
                "" if root == top or not root.is_relative_to(top) else str(root.relative_to(top))
            )
            path = worktree_path(self.paths, key)
            if recorded is not None and _norm(recorded.path) != str(path):
                # only the key's own place: a thread never works in another one's worktree
                raise WorkspaceError(
                    f"the session of {key} records the workspace {recorded.path}, not {path} "
                    "(was the project moved?); /reset in the thread starts over (the branch "
                    f"{recorded.branch} is not touched)"
                )
            entry = (await self._worktrees()).get(str(path))
            kind = await asyncio.to_thread(_kind, path)
            if entry is not None and kind == "dir" and not entry.prunable:
                return await self._existing(key, path, entry, recorded, subdir)
            if entry is not None:  # registered, but its directory is gone
                async with self._repo_lock:
                    await self._forget_missing(key, path, entry)
                kind = await asyncio.to_thread(_kind, path)
            if kind == "empty":
                await asyncio.to_thread(path.rmdir)
            elif kind != "missing":
                raise WorkspaceError(
                    f"{path} exists but is not a git worktree of this project; move it "
                    "away (it may hold someone's work), then send the message again"
                )
            async with self._repo_lock:
                return await self._create(key, name, path, recorded, subdir)

    async def _existing(
        self,
        key: SessionKey,
        path: Path,
        entry: _Entry,
        recorded: Workspace | None,
        subdir: str,
    ) -> Workspace:
        if entry.locked and entry.lock_reason != LOCK_REASON.format(key=key):
            log.warning("workspace.locked_by_other", path=str(path), reason=entry.lock_reason)
        if recorded is not None:
            return recorded
        # A worktree our first run made before its session was recorded: adopt it.
        base, base_commit = await self._head_base()
        if entry.branch:
            merge = await _git(self.paths.root, "merge-base", base_commit, entry.branch)
            if merge.rc == 0 and merge.out.strip():
                base_commit = merge.out.strip()
        log.info("workspace.reused", session_key=key, path=str(path), branch=entry.branch)
        return Workspace(str(path), entry.branch or entry.head, base, base_commit, subdir)

    async def _head_base(self) -> tuple[str, str]:
        """(the project's current branch or commit, its commit)."""
        commit = (
            await _git_ok(self.paths.root, "rev-parse", "--verify", "HEAD^{commit}", what="git")
        ).strip()
        ref = await _git(self.paths.root, "symbolic-ref", "--short", "-q", "HEAD")
        return (ref.out.strip() if ref.rc == 0 and ref.out.strip() else commit), commit

    async def _forget_missing(self, key: SessionKey, path: Path, entry: _Entry) -> None:
        """Drop git's record of a worktree whose directory was deleted (ours only)."""
        if entry.locked and entry.lock_reason != LOCK_REASON.format(key=key):
            raise WorkspaceError(
                f"git still records the worktree {path} (its directory is gone) and it is "
                f"locked ({entry.lock_reason or 'no reason given'}); run `git worktree unlock "
                f"{path}` and `git worktree prune` if it is no longer needed"
            )
        if entry.locked:
            await _git(self.paths.root, "worktree", "unlock", str(path))
        await _git(self.paths.root, "worktree", "remove", "--force", str(path))
        await _git(self.paths.root, "worktree", "prune")

    async def _create(
        self,
        key: SessionKey,
        name: str,
        path: Path,
        recorded: Workspace | None,
        subdir: str,
    ) -> Workspace:
        await asyncio.to_thread(_ignored_private_dir, worktrees_dir(self.paths))
        lock = ["--lock", "--reason", LOCK_REASON.format(key=key)]
        if recorded is not None and await self._branch_exists(recorded.branch):
            await _git_ok(
                self.paths.root,
                "worktree",
                "add",
                *lock,
                str(path),
                recorded.branch,
                what=f"cannot recreate the worktree {path} on {recorded.branch}",
            )
            log.warning("workspace.recreated", session_key=key, path=str(path))
            return recorded
        base, base_commit = await self._head_base()
        if recorded is not None:  # its branch is gone too: start again from its base
            base, base_commit = recorded.base, recorded.base_commit
        branch = await self._free_branch(branch_for(key, name))
        await _git_ok(
            self.paths.root,
            "worktree",
            "add",
            *lock,
            "-b",
            branch,
            str(path),
            base_commit,
            what=f"cannot create the worktree {path}",
        )
        if subdir:
            await asyncio.to_thread((path / subdir).mkdir, parents=True, exist_ok=True)
        log.info("workspace.created", session_key=key, path=str(path), branch=branch, base=base)
        return Workspace(str(path), branch, base, base_commit, subdir)

    async def _free_branch(self, wanted: str) -> str:
        """``wanted``, or ``wanted-2``, ``-3``...: a branch kept from an earlier session of
        the same thread is never reused (its commits stay where they are)."""
        for n in range(1, 100):
            candidate = wanted if n == 1 else f"{wanted}-{n}"
            if not await self._branch_exists(candidate):
                return candidate
        raise WorkspaceError(
            f"branches {wanted} to {wanted}-99 all exist; delete the ones you no longer need"
        )

    # ---- inspect ------------------------------------------------------------------------

    async def status(self, ws: Workspace) -> WorkspaceStatus:
        """Path, branch, commits ahead/behind its base, changed files."""
        path = Path(ws.path)
        if await asyncio.to_thread(_kind, path) not in ("dir", "empty"):
            return WorkspaceStatus(
                ws.path, ws.branch, ws.base, 0, 0, 0, exists=False, problem="the directory is gone"
            )
        try:
            base_ref = await self._base_ref(ws)
            counts = await _git_ok(
                path,
                "rev-list",
                "--left-right",
                "--count",
                f"{base_ref}...HEAD",
                what="git rev-list",
            )
            behind, ahead = (int(n) for n in counts.split())
            ref = await _git(path, "symbolic-ref", "--short", "-q", "HEAD")
            changed = await self._changed_files(path)
        except (WorkspaceError, ValueError) as exc:
            return WorkspaceStatus(ws.path, ws.branch, ws.base, 0, 0, 0, problem=str(exc))
        return WorkspaceStatus(ws.path, ref.out.strip(), ws.base, ahead, behind, changed)

    @staticmethod
    async def _changed_files(path: Path) -> int:
        out = await _git_ok(
            path, "status", "--porcelain", "-z", "--untracked-files=all", what="git status"
        )
        fields = out.split("\0")
        count = 0
        i = 0
        while i < len(fields):
            entry = fields[i]
            i += 1
            if len(entry) < 4:
                continue
            count += 1
            if entry[0] in "RC":  # a rename/copy names its source in the next field
                i += 1
        return count

    async def diff(self, ws: Workspace, max_bytes: int = 8 * 1024 * 1024) -> WorkspaceDiff:
        """Stat and full diff of the thread's work since its base: its commits and its
        uncommitted changes, new files included. Reads only: the worktree's own index is
        not touched (a copy of it takes the new files)."""
        path = Path(ws.path)
        if await asyncio.to_thread(_kind, path) not in ("dir", "empty"):
            raise WorkspaceError(f"the worktree {ws.path} is gone")
        base_ref = await self._base_ref(ws)
        merge = await _git(path, "merge-base", base_ref, "HEAD")
        since = merge.out.strip() if merge.rc == 0 and merge.out.strip() else ws.base_commit
        async with self._snapshot_index(path) as env:
            stat = await _git_ok(
                path, "diff", "--cached", "--stat=120", since, env=env, what="git diff --stat"
            )
            patch = await _git(path, "diff", "--cached", since, env=env, limit=max_bytes)
        if patch.rc != 0:
            raise WorkspaceError(f"git diff: {patch.err.strip() or patch.rc}")
        return WorkspaceDiff(stat, patch.out, patch.cut, since)

    @contextlib.asynccontextmanager
    async def _snapshot_index(self, path: Path) -> AsyncIterator[dict[str, str]]:
        """A private copy of the worktree's index with every change added (``git add -A``
        into the copy): diffs against it include new files, and the worktree's real
        index (what the thread has staged) stays as it was."""
        index = (
            await _git_ok(
                path, "rev-parse", "--path-format=absolute", "--git-path", "index", what="git"
            )
        ).strip()
        with tempfile.TemporaryDirectory(prefix="claudeclaw-index-") as tmp:
            copy = Path(tmp) / "index"
            with contextlib.suppress(FileNotFoundError):  # a worktree with no index yet
                await asyncio.to_thread(shutil.copyfile, index, copy)
            env = {"GIT_INDEX_FILE": str(copy)}
            await _git_ok(path, "add", "-A", env=env, what="git add (into a copy of the index)")
            yield env

    # ---- remove -------------------------------------------------------------------------

    async def remove(self, key: SessionKey, ws: Workspace) -> Removal:
        """Remove the worktree of ``key`` without losing work.

        Uncommitted changes (new files too) are first saved as a patch in the state
        directory; a branch with commits its base does not have is kept; a worktree locked
        by someone else is left alone. Returns what happened, for the reply and the log.
        """
        key = _thread_key(key)
        async with self._lock(key), self._repo_lock:
            removal = await self._remove(key, ws)
        log.info(
            "workspace.removed" if removal.removed else "workspace.kept",
            session_key=key,
            path=removal.path,
            kept_branches=list(removal.kept_branches),
            deleted_branches=list(removal.deleted_branches),
            patch_file=removal.patch_file,
            problem=removal.problem,
        )
        return removal

    async def _remove(self, key: SessionKey, ws: Workspace) -> Removal:
        path = Path(_norm(ws.path))
        if path != worktree_path(self.paths, key):  # never another thread's worktree
            return Removal(False, str(path), problem=f"it is not the worktree of {key}")
        try:
            entry = (await self._worktrees()).get(str(path))
        except WorkspaceError as exc:
            return Removal(False, str(path), problem=str(exc))
        if entry is not None and entry.locked and entry.lock_reason != LOCK_REASON.format(key=key):
            return Removal(
                False,
                str(path),
                problem=f"it is locked ({entry.lock_reason or 'no reason given'}); "
                f"`git worktree unlock {path}` first if it may go",
            )
        branches = [ws.branch]
        patch_file = ""
        kind = await asyncio.to_thread(_kind, path)
        if entry is not None and kind == "dir" and not entry.prunable:
            try:
                patch_file = await self._save_patch(key, ws, path)
                if entry.branch and entry.branch not in branches:
                    branches.append(entry.branch)  # the thread switched branches
                if not entry.branch:  # detached: its commits would go with the worktree
                    detached = await self._keep_detached(ws, path)
                    if detached:
                        branches.append(detached)
            except WorkspaceError as exc:
                return Removal(False, str(path), problem=f"{exc}; nothing was deleted")
        if entry is not None:
            if entry.locked:
                await _git(self.paths.root, "worktree", "unlock", str(path))
            gone = await _git(self.paths.root, "worktree", "remove", "--force", str(path))
            if gone.rc != 0:
                await _git(self.paths.root, "worktree", "prune")
                if await asyncio.to_thread(_kind, path) != "missing":
                    return Removal(
                        False,
                        str(path),
                        patch_file=patch_file,
                        problem=f"git worktree remove failed: {gone.err.strip()}",
                    )
        elif kind != "missing":
            return Removal(
                False,
                str(path),
                patch_file=patch_file,
                problem="it is not a git worktree of this project (left as it is)",
            )
        kept, deleted, problems = await self._settle_branches(ws, branches)
        return Removal(
            True,
            str(path),
            tuple(kept),
            tuple(deleted),
            patch_file,
            "; ".join(problems),
        )

    async def _save_patch(self, key: SessionKey, ws: Workspace, path: Path) -> str:
        """Uncommitted changes (new files too) as a ``git apply``-able patch; "" if none."""
        async with self._snapshot_index(path) as env:
            result = await _git(path, "diff", "--cached", "--binary", "HEAD", env=env)
        if result.rc != 0:
            raise WorkspaceError(f"cannot save the uncommitted changes: {result.err.strip()}")
        if not result.data:
            return ""
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        stem = f"{slug(ws.branch.removeprefix(BRANCH_PREFIX), 64) or key}-{stamp}"
        try:
            target = await asyncio.to_thread(
                _write_patch, patches_dir(self.paths), stem, result.data
            )
        except (OSError, StateError) as exc:
            raise WorkspaceError(f"cannot save the uncommitted changes: {exc}") from exc
        return str(target)

    async def _keep_detached(self, ws: Workspace, path: Path) -> str:
        """A branch at a detached HEAD that has commits not in the base (else "")."""
        base_ref = await self._base_ref(ws)
        count = await _git(path, "rev-list", "--count", f"{base_ref}..HEAD")
        if count.rc != 0 or count.out.strip() in ("", "0"):
            return ""
        name = await self._free_branch(f"{ws.branch}-detached")
        await _git_ok(path, "branch", name, "HEAD", what="cannot keep the detached HEAD")
        return name

    async def _settle_branches(
        self, ws: Workspace, branches: list[str]
    ) -> tuple[list[str], list[str], list[str]]:
        """Delete the branches whose commits are all in the base; keep the others."""
        kept: list[str] = []
        deleted: list[str] = []
        problems: list[str] = []
        base_ref = await self._base_ref(ws)
        for branch in branches:
            if not await self._branch_exists(branch):
                continue
            count = await _git(
                self.paths.root, "rev-list", "--count", f"{base_ref}..refs/heads/{branch}"
            )
            if count.rc != 0 or count.out.strip() != "0":
                kept.append(branch)
                continue
            gone = await _git(self.paths.root, "branch", "-D", branch)
            if gone.rc == 0:
                deleted.append(branch)
            else:
                kept.append(branch)
                problems.append(f"branch {branch} was kept: {gone.err.strip()}")
        return kept, deleted, problems

    # ---- orphans ------------------------------------------------------------------------

    async def report_orphans(self, live: Mapping[SessionKey, Workspace | None]) -> list[Orphan]:
        """:meth:`orphans`, each logged as a warning (at start: never deleted silently)."""
        try:
            found = await self.orphans(live)
        except WorkspaceError as exc:
            log.warning("workspace.orphans_unknown", error=str(exc))
            return []
        for orphan in found:
            log.warning(
                "workspace.orphan",
                path=orphan.path,
                branch=orphan.branch,
                why=orphan.why,
                hint="not deleted: check it, then `git worktree remove` it (and its branch)",
            )
        return found

    async def orphans(self, live: Mapping[SessionKey, Workspace | None]) -> list[Orphan]:
        """Worktrees under the state directory that no session owns: ``live`` maps each
        session key to its recorded workspace. Reported only; nothing is deleted."""
        base = worktrees_dir(self.paths)
        children = await asyncio.to_thread(_subdirs, base)
        if children is None:
            return []
        owned = {_norm(ws.path) for ws in live.values() if ws is not None}
        try:
            entries = await self._worktrees()
        except WorkspaceError as exc:
            log.warning("workspace.orphans_unknown", error=str(exc))
            return []
        found: list[Orphan] = []
        seen: set[str] = set()
        for path, entry in entries.items():
            if not Path(path).is_relative_to(base) or path in owned:
                continue
            seen.add(path)
            key = Path(path).name
            why = (
                "no session records it"
                if key not in live
                else "its session records another directory"
            )
            if entry.prunable:
                why = "its directory is gone (`git worktree prune` forgets it)"
            found.append(Orphan(path, entry.branch, key, why))
        for path in children:
            if path not in seen and path not in owned and path not in entries:
                name = os.path.basename(path)
                found.append(Orphan(path, "", name, "not a git worktree of this project"))
        return found
