"""Atomic, locked JSON state files that survive crashes and never silently reset.

The original ClaudeClaw rewrote its session files in place and, on a parse error, started
again from an empty map, so one torn write lost every thread's session. Here a write goes
to a temp file in the same directory, is fsynced and renamed over the old file (the old
good copy is kept as ``<name>.bak``); a corrupt file is moved aside, never overwritten, and
the ``.bak`` is restored. Writers in different processes serialise on an ``flock(2)``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from claudeclaw import surrogates
from claudeclaw.errors import StateError
from claudeclaw.logs import get_logger
from claudeclaw.paths import (
    PRIVATE_FILE_MODE,
    atomic_write_bytes,
    corrupt_aside_path,
    ensure_private_dir,
    fsync_dir,
    temp_name,
)

Validator = Callable[[Any], bool]
"""Returns True when a parsed document has the expected shape (e.g. a JSON object)."""


def is_object(data: Any) -> bool:
    """Validator: the top level is a JSON object."""
    return isinstance(data, dict)


def backup_path(path: Path) -> Path:
    """The last good copy of ``path``: ``<name>.bak`` next to it."""
    return path.with_name(path.name + ".bak")


class _Corrupt(Exception):
    """Internal: the bytes on disk are not a valid document (message says why)."""


def _loads(raw: bytes) -> Any:
    return json.loads(raw.decode("utf-8"))


def _parse(raw: bytes, validate: Validator | None) -> Any:
    try:
        data = _loads(raw)
    except UnicodeDecodeError as exc:
        raise _Corrupt(f"not UTF-8 ({exc.reason} at byte {exc.start})") from exc
    except json.JSONDecodeError as exc:
        raise _Corrupt(f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from exc
    if validate is not None and not validate(data):
        raise _Corrupt(f"unexpected top-level type {type(data).__name__}")
    return data


FileIdentity = tuple[int, int, int, int]
"""A file as ``stat`` sees it: device, inode, size, modification time (ns). Writers of
state files replace them (a new inode); one rewritten in place changes size or mtime."""

_known_good: dict[str, tuple[FileIdentity, Validator | None]] = {}
"""Per path, in this process: the file last written or validated there, and the
validator it passed (None: it parses). A file on disk with another identity (another
process or a person changed it) is read and validated again before it becomes ``.bak``."""
_KNOWN_GOOD_MAX = 256


def _identity(info: os.stat_result) -> FileIdentity:
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)


def _remember(key: str, info: os.stat_result, validate: Validator | None) -> None:
    if not stat.S_ISREG(info.st_mode):
        return
    if len(_known_good) >= _KNOWN_GOOD_MAX and key not in _known_good:
        _known_good.clear()
    _known_good[key] = (_identity(info), validate)


def _read(path: Path) -> tuple[bytes, os.stat_result] | None:
    """The bytes of ``path`` and its ``fstat`` taken before reading them (so a change
    after it gives the file another identity than the one remembered), or None."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise _unreadable(path, exc) from exc
    try:
        info = os.fstat(fd)
        raw = os.read(fd, info.st_size + 1)
        if len(raw) > info.st_size or not stat.S_ISREG(info.st_mode):
            chunks = [raw]  # it grew, or is no regular file: read to the end
            while chunk := os.read(fd, 65536):
                chunks.append(chunk)
            raw = b"".join(chunks)
    except OSError as exc:
        raise _unreadable(path, exc) from exc
    finally:
        os.close(fd)
    return raw, info


def _unreadable(path: Path, exc: OSError) -> StateError:
    return StateError(
        f"cannot read {path}: {exc.strerror}; check its owner and mode (chmod 600 {path})"
    )


def _read_bytes(path: Path) -> bytes | None:
    found = _read(path)
    return None if found is None else found[0]


def _dumps(data: Any) -> bytes:
    # Two-space indent like the original's JSON.stringify(data, null, 2).
    return surrogates.dumps_utf8(data, indent=2)


def _recover(path: Path, reason: str, validate: Validator | None, log: Any) -> tuple[Any, bytes]:
    """``path`` is corrupt: keep it aside, restore ``.bak``, log both names; or refuse.
    Returns the restored document and its bytes."""
    bak = backup_path(path)
    raw_bak = _read_bytes(bak)
    bak_problem = "it does not exist"
    if raw_bak is not None:
        try:
            data = _parse(raw_bak, validate)
        except _Corrupt as exc:
            bak_problem = f"it is corrupt too ({exc})"
        else:
            aside = corrupt_aside_path(path)
            _known_good.pop(os.fspath(path), None)
            os.replace(path, aside)
            atomic_write_bytes(path, raw_bak)
            fsync_dir(path.parent)
            (log or get_logger()).error(
                "state.file_recovered",
                file=str(path),
                corrupt_copy=str(aside),
                restored_from=str(bak),
                reason=reason,
            )
            return data, raw_bak
    raise StateError(
        f"{path} is corrupt ({reason}) and there is no good copy to restore "
        f"({bak}: {bak_problem}). Fix: repair the JSON by hand, or move the file aside "
        f"(mv {path} {path}.corrupt) to start again without the state it held"
    )


def _read_locked_or_unlocked(
    path: Path, validate: Validator | None, log: Any, lock_path: Path | None
) -> tuple[Any, bytes] | None:
    """The document at ``path`` and the bytes it was parsed from, or None."""
    found = _read(path)
    if found is None:
        return None
    try:
        data = _parse(found[0], validate)
    except _Corrupt as exc:
        reason = str(exc)
    else:
        _remember(os.fspath(path), found[1], validate)
        return data, found[0]
    if lock_path is None:  # the caller holds the writers' lock (or there is none)
        return _recover(path, reason, validate, log)
    with locked(lock_path):
        # Another process may have recovered or rewritten it while we waited.
        raw = _read_bytes(path)
        if raw is None:
            return None
        try:
            return _parse(raw, validate), raw
        except _Corrupt as exc:
            return _recover(path, str(exc), validate, log)


def read_json(
    path: Path,
    *,
    validate: Validator | None = None,
    log: Any = None,
    lock_path: Path | None = None,
) -> Any | None:
    """Parsed contents of ``path``, or None when it does not exist.

    A corrupt file (bad JSON, or ``validate`` says no) is moved to
    ``<name>.corrupt-<UTC time>``, the last good copy ``<name>.bak`` is restored and
    returned, and an error event names both files. Without a good copy this raises
    :class:`StateError`: losing state silently is worse than stopping. Reading never writes
    unless it is recovering; pass ``lock_path`` so that recovery happens under the writers'
    lock (never pass it while already holding that lock: flock is not re-entrant).
    """
    found = _read_locked_or_unlocked(path, validate, log, lock_path)
    return None if found is None else found[0]


def write_json(path: Path, data: Any, *, validate: Validator | None = None) -> None:
    """Replace ``path`` with ``data`` atomically (mode 0600, directory 0700).

    The current file, if it parses (and passes ``validate``), is first copied to
    ``<name>.bak``; a corrupt current file never overwrites a good ``.bak``. Hold
    :func:`locked` around read-modify-write cycles (see :func:`update_json`).

    The current file is read and parsed for that only when this process does not know
    it: one it wrote or validated itself (same device, inode, size and mtime, and the
    same ``validate``) becomes the ``.bak`` as it is. ``data`` itself is checked with
    ``validate`` before its file is remembered as good.
    """
    _write_payload(path, data, _dumps(data), validate)


def _write_payload(path: Path, data: Any, payload: bytes, validate: Validator | None) -> None:
    """:func:`write_json` with ``data`` already dumped."""
    directory = path.parent
    ensure_private_dir(directory)
    key = os.fspath(path)
    if not _link_known_good_as_backup(path, key, validate):
        current = _read_bytes(path)
        if current is not None:
            try:
                _parse(current, validate)
            except _Corrupt:
                pass
            else:
                _keep_as_backup(path, current)
    _known_good.pop(key, None)
    info = atomic_write_bytes(path, payload)
    fsync_dir(directory)
    if validate is None or validate(data):
        _remember(key, info, validate)


def _link_known_good_as_backup(path: Path, key: str, validate: Validator | None) -> bool:
    """When the current file is the one this process last wrote or validated (checked on
    the hard link itself, so a file swapped in meanwhile does not pass), make it the
    ``.bak`` without reading it. False: unknown, changed or absent; the caller reads."""
    known = _known_good.get(key)
    if known is None or (validate is not None and known[1] is not validate):
        return False
    return _link_as_backup(path, lambda _link, info: _identity(info) == known[0])


def _keep_as_backup(path: Path, current: bytes) -> None:
    """Make ``path``'s current good file its ``.bak``: by a hard link, so its data (durable
    since it was written) is neither written nor fsynced again, which halves the cost of
    every state write; by a copy where links fail or the file changed under us. The
    caller's directory fsync makes the rename durable."""
    if not _link_as_backup(path, lambda link, _info: link.read_bytes() == current):
        atomic_write_bytes(backup_path(path), current)


def _link_as_backup(path: Path, is_current: Callable[[Path, os.stat_result], bool]) -> bool:
    """Hard-link ``path``'s file as its ``.bak`` if ``is_current(link, its lstat)`` says
    the link holds the file the caller vouches for; False (and no link left) otherwise."""
    bak = backup_path(path)
    link = bak.with_name(temp_name(bak.name))
    try:
        os.link(path, link, follow_symlinks=False)
    except OSError:
        return False
    try:
        info = os.lstat(link)
        if stat.S_ISREG(info.st_mode) and is_current(link, info):
            os.replace(link, bak)
            return True
    except OSError:
        pass
    with contextlib.suppress(OSError):
        os.unlink(link)
    return False


def remove_json(path: Path) -> bool:
    """Delete ``path``, keeping its content as ``<name>.bak``; False if it was absent."""
    current = _read_bytes(path)
    if current is None:
        return False
    _known_good.pop(os.fspath(path), None)
    atomic_write_bytes(backup_path(path), current)
    path.unlink(missing_ok=True)
    fsync_dir(path.parent)
    return True


@contextlib.contextmanager
def locked(lock_path: Path | None) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``lock_path`` (created 0600) for the block; None:
    the caller holds it already, nothing to do.

    Serialises writers across processes and threads (each call opens its own file
    description). Not re-entrant: do not nest two ``locked`` blocks on the same file.
    """
    if lock_path is None:
        yield
        return
    ensure_private_dir(lock_path.parent)
    flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(lock_path, flags, PRIVATE_FILE_MODE)
    except OSError as exc:
        raise StateError(
            f"cannot open lock file {lock_path}: {exc.strerror}; "
            f"check the state directory's owner and mode (chmod 700 {lock_path.parent})"
        ) from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def update_json(
    path: Path,
    lock_path: Path | None,
    fn: Callable[[Any | None], Any],
    *,
    validate: Validator | None = None,
    log: Any = None,
) -> Any:
    """Read-modify-write ``path`` under the lock (``lock_path`` None: the caller holds
    it): ``fn(current or None)`` returns the new document, which is written unless its
    bytes are the file's already. Returns the new document.

    ``fn`` may mutate its argument: what is compared is the file's bytes, not the parsed
    document (no second parse, no deep copy).
    """
    with locked(lock_path):
        found = _read_locked_or_unlocked(path, validate, log, None)
        new = fn(None if found is None else found[0])
        if found is None and new is None:  # an absent file stays absent
            return new
        payload = _dumps(new)
        if found is None or payload != found[1]:
            _write_payload(path, new, payload, validate)
        return new
