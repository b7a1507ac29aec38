"""An append-only file of JSON records, one per line: the pending ledger's storage.

Why not a JSON file rewritten whole (``jsonstore``)? The ledger changes three times per
Discord message (accepted, answered, delivered). Rewriting it each time cost a temp file,
two fsyncs, a rename, a ``.bak`` link and a hop to a thread: ~0.4 ms of CPU, three times
per message. Here a change is one ``write(2)`` of one line on the event loop (a few
microseconds, into the page cache), so it survives a crash, a ``kill -9`` or a restart of
the daemon the moment it returns; ``fdatasync`` follows off the loop, a batch at a time
(see ``statewriter.py``), which bounds what a power cut can take. When the file has grown
well past what it describes, it is rewritten from the live records (compaction), atomically,
in a thread; lines appended meanwhile are carried over.

A line cut short by a crash (the last one, without its newline) is skipped quietly; any
other unreadable line is logged and skipped, and the file that held it is kept aside
(``<name>.corrupt-<time>``) before the next rewrite, so nothing is lost silently.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import threading
from pathlib import Path
from typing import Any

from claudeclaw import surrogates
from claudeclaw.errors import StateError
from claudeclaw.logs import get_logger
from claudeclaw.paths import (
    PRIVATE_FILE_MODE,
    corrupt_aside_path,
    ensure_private_dir,
    fsync_dir,
    temp_name,
    write_all,
)

log = get_logger()

COMPACT_MIN_BYTES = 256 * 1024  # a journal this small is never worth rewriting
_OPEN_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)


def encode(record: dict[str, Any]) -> bytes:
    return surrogates.dumps_utf8(record)


def read_records(path: Path, *, keeps: str) -> tuple[list[dict[str, Any]], list[str]]:
    """Every record in ``path`` (none if it does not exist), and a description of each
    line that could not be read (a torn last line is not one: a crash mid-append).
    StateError when the file is there but cannot be read (naming what it ``keeps``)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return [], []
    except OSError as exc:  # what it keeps must not be dropped: the caller stops
        raise StateError(
            f"cannot read {path}: {exc.strerror or exc}; it keeps {keeps}. "
            f"Fix: make it a file the daemon's user owns and can read (chown, chmod 600 {path})"
        ) from exc
    records: list[dict[str, Any]] = []
    problems: list[str] = []
    lines = raw.split(b"\n")
    torn = lines.pop()  # after the last newline: b"" unless a write was cut short
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            problems.append(f"line {number}: not JSON ({exc})")
            continue
        if not isinstance(record, dict):
            problems.append(f"line {number}: a {type(record).__name__}, not an object")
            continue
        records.append(record)
    if torn.strip():
        log.warning("journal.torn_line_skipped", file=str(path), bytes=len(torn))
    return records, problems


class Journal:
    """``append`` on the event loop; ``sync`` and ``rewrite`` in a thread. One lock keeps
    an append from landing in a file that a rewrite is replacing."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._bytes = 0  # the file's size, as far as this process wrote it
        self._base = 0  # its size right after the last rewrite
        self._carry: list[bytes] | None = None  # lines appended while a rewrite runs
        self.broken = False  # an append or a rewrite failed: the next sync rewrites it all

    def _open(self) -> int:
        if self._fd is None:
            ensure_private_dir(self.path.parent)
            fd, size = _open_private(self.path, 0)
            self._fd, self._bytes, self._base = fd, size, size
        return self._fd

    def append(self, record: dict[str, Any]) -> None:
        """One line, written before this returns (a crash after it keeps it). Raises
        OSError (a full disk); the journal is then ``broken`` until rewritten."""
        line = encode(record)
        if self.broken:  # a failed append may have left half a line: end it first
            # (after a failed rewrite the line before is whole: a blank line, skipped)
            line = b"\n" + line
        with self._lock:
            try:
                write_all(self._open(), line)
            except OSError:
                self.broken = True
                raise
            self._bytes += len(line)
            if self._carry is not None:
                self._carry.append(line)

    def holds_lines(self) -> bool:
        """Anything appended since the file was opened empty or last rewritten empty (or
        a failed append to mend)."""
        return self.broken or self._bytes > 0

    def wants_rewrite(self) -> bool:
        """Grown to over twice its last rewritten size and past COMPACT_MIN_BYTES, or
        broken: each rewrite is paid for by as many bytes appended since."""
        return self.broken or self._bytes > 2 * self._base + COMPACT_MIN_BYTES

    def sync(self) -> None:
        """``fdatasync`` what was appended so far (blocking). The lock is held only to
        take a duplicate of the descriptor: appends do not wait for the disk."""
        with self._lock:
            if self._fd is None:
                return
            fd = os.dup(self._fd)
        try:
            os.fdatasync(fd)
        finally:
            os.close(fd)

    def begin_rewrite(self) -> bool:
        """On the loop, when the records for :meth:`rewrite` are taken: from now on
        appended lines are kept to be carried over. False: a rewrite is running."""
        with self._lock:
            if self._carry is not None:
                return False
            self._carry = []
            return True

    def abandon_rewrite(self) -> None:
        """The rewrite :meth:`begin_rewrite` announced will not happen: appends go on as
        before (the file keeps every line)."""
        with self._lock:
            self._carry = None

    def rewrite(self, records: list[dict[str, Any]]) -> None:
        """Replace the file with ``records`` and the lines appended since
        :meth:`begin_rewrite` (blocking): a temp file, fsync, rename. The temp file's
        descriptor becomes the one appends go to. A file with unreadable lines was kept
        aside by :meth:`keep_aside` first. If it fails, the journal is ``broken``: the
        next :meth:`wants_rewrite` asks for another try."""
        ensure_private_dir(self.path.parent)
        directory, name = os.path.dirname(self.path), os.path.basename(self.path)
        tmp = os.path.join(directory, temp_name(name))
        fd = -1
        try:
            fd, _ = _open_private(tmp, os.O_EXCL)
            payload = b"".join(encode(r) for r in records)
            write_all(fd, payload)
            os.fsync(fd)
            with self._lock:
                carried = b"".join(self._carry or [])
                write_all(fd, carried)
                os.replace(tmp, self.path)
                old, self._fd = self._fd, fd
                self._bytes = len(payload) + len(carried)
                self._base = len(payload)
                self._carry = None
                self.broken = False
            fd = -1
            if old is not None:
                os.close(old)
        except BaseException:
            with self._lock:
                self._carry = None
                self.broken = True
            if fd >= 0:
                os.close(fd)
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
            raise
        fsync_dir(self.path.parent)

    def keep_aside(self, problems: list[str]) -> Path | None:
        """A copy of the file as it is, beside it, before a rewrite drops what could not
        be read (blocking); logged with what was wrong."""
        if not self.path.exists():
            return None
        aside = corrupt_aside_path(self.path)
        try:
            shutil.copyfile(self.path, aside)
            os.chmod(aside, PRIVATE_FILE_MODE)
        except OSError as exc:  # it is not rewritten without its copy: nothing is lost
            raise StateError(
                f"{self.path} has lines that cannot be read ({problems[0]}) and a copy could "
                f"not be kept at {aside}: {exc.strerror or exc}. Fix: free disk space, or "
                f"move the file aside yourself (mv {self.path} {self.path}.corrupt)"
            ) from exc
        log.error(
            "journal.lines_skipped",
            file=str(self.path),
            kept_as=str(aside),
            problems=problems[:5],
            count=len(problems),
        )
        return aside

    def close(self) -> None:
        with self._lock:
            fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


def _open_private(path: str | Path, flags: int) -> tuple[int, int]:
    """``path`` opened for appending with ``flags``, mode 0600 whatever the umask; its
    descriptor and size."""
    fd = os.open(path, _OPEN_FLAGS | flags, PRIVATE_FILE_MODE)
    info = os.fstat(fd)
    if stat.S_IMODE(info.st_mode) != PRIVATE_FILE_MODE:
        os.fchmod(fd, PRIVATE_FILE_MODE)
    return fd, info.st_size
