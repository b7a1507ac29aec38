"""Every file and socket location of a claudeclaw project, derived from one root.

A project is a directory: Claude's working directory. Its state lives in
``<project>/.claude/claudeclaw/`` exactly where the original ClaudeClaw keeps it, so an
existing state directory keeps working. Runtime sockets live in a private runtime
directory (systemd's ``$RUNTIME_DIRECTORY`` when given) because socket paths must be short
and must not survive a reboot; the daemon advertises their location in ``daemon.json``.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import secrets
import stat
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from claudeclaw.errors import StateError

PRIVATE_DIR_MODE = 0o700
# Also private: the group may pass through but not list (two-user mode, agent.py).
_PASS_THROUGH_DIR_MODE = 0o710
PRIVATE_FILE_MODE = 0o600


@dataclass(frozen=True, slots=True)
class ProjectPaths:
    """Locations for one project. ``root`` is absolute."""

    root: Path

    @classmethod
    def for_project(cls, project: str | os.PathLike[str] | None) -> ProjectPaths:
        """Resolve ``project`` (default: the current directory) to an absolute root."""
        return cls(Path(project or os.getcwd()).expanduser().resolve())

    @property
    def state_dir(self) -> Path:
        return self.root / ".claude" / "claudeclaw"

    @property
    def settings_file(self) -> Path:
        return self.state_dir / "settings.json"

    @property
    def global_session_file(self) -> Path:
        """The global session (DMs, ordinary channels): upstream's ``session.json``."""
        return self.state_dir / "session.json"

    @property
    def thread_sessions_file(self) -> Path:
        """The thread session registry: upstream's ``sessions.json``."""
        return self.state_dir / "sessions.json"

    @property
    def session_changes_file(self) -> Path:
        """Session changes the daemon made since it last wrote the session files, one JSON
        line each (``statewriter.py``): folded into them at its next start after a crash."""
        return self.state_dir / "sessions.changes.jsonl"

    @property
    def lock_file(self) -> Path:
        """flock(2) target serialising writers of the session files across processes."""
        return self.state_dir / ".sessions.lock"

    @property
    def inbox_dir(self) -> Path:
        """Downloaded Discord attachments (pruned after a configurable age)."""
        return self.state_dir / "inbox" / "discord"

    @property
    def outbox_dir(self) -> Path:
        """Where Claude saves images for Discord (default upload root, as in the original)."""
        return self.state_dir / "outbox" / "discord"

    @property
    def undelivered_dir(self) -> Path:
        """Replies Discord would not take, kept so that nothing is lost."""
        return self.state_dir / "undelivered"

    @property
    def discord_channels_file(self) -> Path:
        """Channels (DMs too) where the bot answered lately: where to catch up after a stop."""
        return self.state_dir / "discord-channels.json"

    @property
    def replies_dir(self) -> Path:
        """Answers too large for one IPC frame: the worker writes them here for the bot."""
        return self.state_dir / "replies"

    @property
    def pending_file(self) -> Path:
        """Accepted Discord messages not answered yet: kept across restarts."""
        return self.state_dir / "pending.jsonl"

    @property
    def jobs_dir(self) -> Path:
        """Job files (``<name>.md``), as in the original; ``jobsDir`` may point elsewhere."""
        return self.state_dir / "jobs"

    @property
    def schedule_file(self) -> Path:
        """The scheduler's memory: last runs, outcomes, finished one-shot jobs."""
        return self.state_dir / "schedule.json"

    @property
    def heartbeat_prompt_override(self) -> Path:
        """Replaces the built-in heartbeat template when present (the original's path)."""
        return self.state_dir / "prompts" / "HEARTBEAT.md"

    @property
    def outbox_notices_file(self) -> Path:
        """Messages the bot started (job results, notices) that Discord did not take yet."""
        return self.state_dir / "notices.json"

    @property
    def approvals_file(self) -> Path:
        """Tools allowed "for this session" (``security.approvals``), per session key."""
        return self.state_dir / "approvals.json"

    @property
    def daemon_file(self) -> Path:
        """Written by a running daemon: pid, start time, control socket path."""
        return self.state_dir / "daemon.json"

    def runtime_dir(self) -> Path:
        """Private directory for this project's Unix sockets.

        ``$RUNTIME_DIRECTORY`` (systemd) wins; otherwise ``$XDG_RUNTIME_DIR/claudeclaw/<h>``
        or ``<tmp>/claudeclaw-<uid>/<h>``, where ``<h>`` is a short hash of the project root
        so that several projects never share sockets and paths stay under the 108-byte limit.
        """
        given = os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
        if given:
            return Path(given)
        digest = hashlib.sha256(str(self.root).encode()).hexdigest()[:12]
        xdg = os.environ.get("XDG_RUNTIME_DIR")
        if xdg and Path(xdg).is_dir():
            return Path(xdg) / "claudeclaw" / digest
        return Path(tempfile.gettempdir()) / f"claudeclaw-{os.getuid()}" / digest


def ensure_runtime_dir(paths: ProjectPaths) -> Path:
    """The project's private runtime directory, created safely.

    Under a shared temporary directory the per-user parent (``claudeclaw-<uid>``) must be
    ours and private too: otherwise another user who created it first could swap our
    directory for theirs between our check and our use of it.
    """
    path = paths.runtime_dir()
    if not os.environ.get("RUNTIME_DIRECTORY", ""):
        ensure_private_dir(path.parent)
    return ensure_private_dir(path)


DirIdentity = tuple[int, int, int, int]
"""A checked directory as ``lstat`` sees it: device, inode, type and mode bits, owner."""

_checked_dirs: dict[str, DirIdentity] = {}
_CHECKED_DIRS_MAX = 256


def _dir_identity(info: os.stat_result) -> DirIdentity:
    return (info.st_dev, info.st_ino, info.st_mode, info.st_uid)


def ensure_private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) with mode 0700 and make sure it is ours and private.

    An existing directory owned by someone else, or a symlink, is refused: sockets and
    state inside it would be readable or replaceable by another user. Mode 0710 is kept
    as it is (two-user mode: the agent passes through to the outbox, lists nothing).

    Every state write calls this, so once a directory passed, later calls cost one
    ``lstat``: the same directory (device, inode), still a directory of ours with the
    mode it had, passes again; anything else (removed, replaced, a symlink put in its
    place, chmod, chown) gets the full check again.
    """
    key = os.fspath(path)
    known = _checked_dirs.get(key)
    if known is not None:
        try:
            if _dir_identity(os.lstat(key)) == known:
                return path
        except OSError:
            pass
        _checked_dirs.pop(key, None)
    try:
        path.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
        info = path.lstat()
    except OSError as exc:
        raise StateError(f"cannot create directory {path}: {exc.strerror}") from exc
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise StateError(f"{path} is not a directory (or is a symlink); remove it and retry")
    if info.st_uid != os.getuid():
        raise StateError(
            f"{path} belongs to uid {info.st_uid}, not to us (uid {os.getuid()}); "
            "run claudeclaw as the directory's owner or fix the ownership"
        )
    if stat.S_IMODE(info.st_mode) not in (PRIVATE_DIR_MODE, _PASS_THROUGH_DIR_MODE):
        os.chmod(path, PRIVATE_DIR_MODE)
        info = path.lstat()
    if len(_checked_dirs) >= _CHECKED_DIRS_MAX:
        _checked_dirs.clear()
    _checked_dirs[key] = _dir_identity(info)
    return path


def _new_temp_token() -> None:
    """Temp names: this process's pid and random bits, then a counter (no getpid or
    getrandom call per name). A forked child draws its own, so names never collide."""
    global _temp_token, _temp_counter
    _temp_token = f"{os.getpid()}.{secrets.token_hex(4)}"
    _temp_counter = itertools.count()


_temp_token = ""
_temp_counter = itertools.count()
_new_temp_token()
os.register_at_fork(after_in_child=_new_temp_token)


def temp_name(name: str) -> str:
    """A hidden name for a temp file beside ``name``, unique in this process; creators
    still use ``O_EXCL`` (or handle EEXIST) against leftovers of a crashed process."""
    return f".{name}.{_temp_token}.{next(_temp_counter)}.tmp"


_TEMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)


def atomic_write_bytes(path: Path, payload: bytes) -> os.stat_result:
    """Replace ``path`` with ``payload`` atomically, mode 0600: a temp file in the same
    directory, fsync, rename. Readers see the old file or the new one, never a mix.

    Returns the new file's ``fstat`` once written (its identity, for callers that
    remember what they wrote). The caller fsyncs the directory.
    """
    directory = os.path.dirname(os.fspath(path))
    name = os.path.basename(os.fspath(path))
    while True:
        tmp = os.path.join(directory, temp_name(name))
        try:
            # Created 0600 (O_EXCL, never through a symlink); the umask can only take
            # bits away, which the fstat below notices.
            fd = os.open(tmp, _TEMP_FLAGS, PRIVATE_FILE_MODE)
        except FileExistsError:  # a crashed process's leftover with our pid: next name
            continue
        break
    try:
        try:
            write_all(fd, payload)
            info = os.fstat(fd)
            if stat.S_IMODE(info.st_mode) != PRIVATE_FILE_MODE:
                os.fchmod(fd, PRIVATE_FILE_MODE)  # changes ctime only: info stays valid
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return info


def write_all(fd: int, payload: bytes) -> None:
    """Write all of ``payload`` to ``fd`` (``os.write`` may take only part of it)."""
    view = memoryview(payload)
    while view:
        view = view[os.write(fd, view) :]


def write_private_text(path: Path, text: str) -> None:
    """Write a small file atomically with mode 0600 in a private directory."""
    ensure_private_dir(path.parent)
    atomic_write_bytes(path, text.encode("utf-8"))


def fsync_dir(directory: Path) -> None:
    """Make a rename durable: fsync the directory entry (best effort on odd filesystems)."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def corrupt_aside_path(path: Path) -> Path:
    """A free name beside ``path`` to keep a file that could not be read."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    candidate = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while candidate.exists():
        candidate = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
        n += 1
    return candidate
