"""Incoming Discord attachments: download into the inbox, describe them in the prompt.

Files land in ``<state>/inbox/discord/<key>/<attachment id>-<safe filename>`` (dirs 0700,
files 0600) so Claude can read them with its tools; the prompt names each path. Text files
are also inlined (up to ``maxInlineTextChars``, then ``...[truncated]``), decoded by BOM or
charset (UTF-16 from Windows included) with NULs dropped. A file larger
than ``maxAttachmentBytes`` is not downloaded, and a failed download becomes the original's
"ask them to resend" line instead of an error. Voice messages cannot be transcribed here
(no speech-to-text), so the prompt says so. Old inbox files are pruned by age.

All file I/O runs in a thread (``asyncio.to_thread``): the event loop never blocks.
"""

from __future__ import annotations

import asyncio
import codecs
import os
import re
import stat
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from claudeclaw.agent import agent_account, share_inbox_file
from claudeclaw.logs import get_logger
from claudeclaw.paths import PRIVATE_FILE_MODE, ensure_private_dir

log = get_logger(component="discord.attachments")

Kind = Literal["image", "voice", "text", "file"]
TEXT_EXTENSIONS = frozenset(
    {".txt", ".md", ".markdown", ".log", ".csv", ".tsv", ".json", ".jsonl", ".yaml", ".yml"}
    | {".toml", ".ini", ".cfg", ".xml", ".html", ".css", ".js", ".ts", ".py", ".rs", ".go"}
    | {".java", ".c", ".h", ".cpp", ".hpp", ".sh", ".sql", ".diff", ".patch", ".rst"}
)
TRUNCATED = "...[truncated]"


@dataclass(frozen=True, slots=True)
class AttachmentFacts:
    id: str
    filename: str
    content_type: str
    size: int
    is_voice: bool = False


Download = Callable[[], Awaitable[bytes]]


def classify(att: AttachmentFacts) -> Kind:
    ctype = att.content_type.lower()
    if att.is_voice or ctype.startswith("audio/"):
        return "voice"
    if ctype.startswith("image/"):
        return "image"
    if ctype.startswith("text/") or Path(att.filename).suffix.lower() in TEXT_EXTENSIONS:
        return "text"
    return "file"


def safe_filename(name: str) -> str:
    """Letters, digits, ``.``, ``-``, ``_`` only; no leading dot; at most 100 characters."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", Path(name).name).lstrip(".")
    return cleaned[-100:] or "file"


_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),  # before UTF-16 LE: it starts with the same bytes
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
_CHARSET = re.compile(r"charset\s*=\s*\"?([A-Za-z0-9_.:-]+)", re.IGNORECASE)


def _guess_utf16(data: bytes) -> str | None:
    """UTF-16 without a BOM: mostly-ASCII text has a NUL in every other byte."""
    sample = data[:4096]
    if len(sample) < 4:
        return None
    even, odd = sample[0::2].count(0), sample[1::2].count(0)
    half = len(sample) // 2
    if odd > half * 0.6 and even < half * 0.1:
        return "utf-16-le"
    if even > half * 0.6 and odd < half * 0.1:
        return "utf-16-be"
    return None


def decode_text(data: bytes, content_type: str = "") -> str:
    """A text attachment's bytes as text: by its BOM, else the charset Discord names, else
    UTF-16 when its NULs say so, else UTF-8; undecodable bytes become U+FFFD and NUL
    characters are dropped (a NUL cannot pass through argv). Never raises.

    Windows PowerShell's ``>`` writes UTF-16 LE with a BOM, which UTF-8 turns into
    NUL-riddled noise.
    """
    encoding = "utf-8"
    body = data
    for bom, name in _BOMS:
        if data.startswith(bom):
            encoding, body = name, data[len(bom) :]
            break
    else:
        match = _CHARSET.search(content_type)
        named = match.group(1).lower() if match else ""
        try:
            encoding = codecs.lookup(named).name if named else ""
        except LookupError:
            encoding = ""
        encoding = encoding or _guess_utf16(data) or "utf-8"
    try:
        text = body.decode(encoding, errors="replace")
    except (LookupError, ValueError):  # a codec that cannot decode bytes at all
        text = body.decode("utf-8", errors="replace")
    return text.replace("\x00", "")


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, PRIVATE_FILE_MODE)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(path, PRIVATE_FILE_MODE)


def store_inbox_file(dest_dir: Path, inbox_root: Path, name: str, data: bytes) -> Path:
    """Save ``data`` as ``dest_dir/name`` in the inbox, private to the daemon, or readable
    by the agent in two-user mode (claude runs as the agent and reads it; blocking I/O)."""
    ensure_private_dir(inbox_root)
    ensure_private_dir(dest_dir)
    path = dest_dir / name
    _write_private(path, data)
    if agent_account() is not None:  # two-user mode: claude runs as the agent and reads it
        share_inbox_file(path, inbox_root)
    return path


def _mb(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MB"


def _too_large_line(att: AttachmentFacts, kind: Kind, limit: int) -> str:
    what = "an image" if kind == "image" else "a file"
    return (
        f"The user attached {what} ({att.filename}, {_mb(att.size)}), but it is larger than"
        f" the {_mb(limit)} limit, so it was not downloaded. Tell them it was too large."
    )


def _failed_line(att: AttachmentFacts, kind: Kind) -> str:
    if kind == "image":
        return "The user attached an image, but downloading it failed. Ask them to send it again."
    if kind == "text":
        return (
            f"The user attached a text file ({att.filename}), but downloading it failed."
            " Ask them to send it again."
        )
    return (
        f"The user attached a file ({att.filename}), but downloading it failed."
        " Ask them to send it again."
    )


async def collect_attachments(
    attachments: Sequence[tuple[AttachmentFacts, Download]],
    *,
    inbox_root: Path,
    key: str,
    max_bytes: int,
    max_inline_chars: int,
) -> list[str]:
    """Download what can be downloaded and return the prompt lines describing each file."""
    lines: list[str] = []
    dest_dir = inbox_root / key
    for att, download in attachments:
        kind = classify(att)
        if kind == "voice":
            lines.append(
                "The user sent a voice message, but voice transcription is not available."
                " Ask them to type their message instead."
            )
            continue
        if att.size > max_bytes:
            log.info("attachment.too_large", attachment_id=att.id, size=att.size, limit=max_bytes)
            lines.append(_too_large_line(att, kind, max_bytes))
            continue
        try:
            data = await download()
            if len(data) > max_bytes:
                lines.append(_too_large_line(att, kind, max_bytes))
                continue
            name = f"{att.id}-{safe_filename(att.filename)}"
            path = await asyncio.to_thread(store_inbox_file, dest_dir, inbox_root, name, data)
        except Exception as exc:  # any download or disk failure: tell Claude, not the user
            log.warning(
                "attachment.download_failed",
                attachment_id=att.id,
                kind=kind,
                error=type(exc).__name__,
            )
            lines.append(_failed_line(att, kind))
            continue
        log.info("attachment.saved", attachment_id=att.id, kind=kind, size=len(data))
        if kind == "image":
            lines.append(f"Image path: {path}")
            lines.append("The user attached this image; read the file at that path to see it.")
        elif kind == "text":
            text = decode_text(data, att.content_type)
            if len(text) > max_inline_chars:
                text = text[:max_inline_chars] + TRUNCATED
            lines.append(f"Attached text file ({att.filename}):\n{text}")
            lines.append(f"(The file is saved at {path}.)")
        else:
            ctype = att.content_type or "unknown type"
            lines.append(f"Attached file ({att.filename}, {ctype}): {path}")
    return lines


def prune_inbox(inbox_root: Path, max_age_hours: float, *, now: float | None = None) -> int:
    """Delete inbox files older than ``max_age_hours`` and empty key dirs (blocking I/O)."""
    if not inbox_root.is_dir():
        return 0
    cutoff = (time.time() if now is None else now) - max_age_hours * 3600
    removed = 0
    for key_dir in inbox_root.iterdir():
        if not key_dir.is_dir() or key_dir.is_symlink():
            continue
        for entry in key_dir.iterdir():
            try:
                info = entry.lstat()
                if entry.is_file() and not entry.is_symlink() and info.st_mtime < cutoff:
                    entry.unlink()
                    removed += 1
            except OSError:
                continue
        try:
            key_dir.rmdir()  # only succeeds when empty
        except OSError:
            pass
    return removed


def read_regular_file(path: Path) -> bytes | None:
    """``path``'s bytes if it is still a regular file, not a symlink (blocking).

    Files in the outbox belong to Claude's tools (two users: another account): one checked
    by :func:`uploadable_images` may have been swapped for a symlink or a FIFO since.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return fh.read()


def uploadable_images(
    candidates: list[str],
    roots: list[Path],
    *,
    made_after: float,
    max_bytes: int,
    limit: int = 10,
) -> list[Path]:
    """The candidate paths that may be posted (blocking: stat/realpath, use a thread).

    Only regular files whose real path is inside one of ``roots`` (symlinks resolved, so
    a link cannot smuggle out /etc/…), modified after ``made_after`` (made for this
    request, not an old file named by chance), and not larger than ``max_bytes``.
    """
    allowed: list[Path] = []
    real_roots = [Path(os.path.realpath(root)) for root in roots]
    for candidate in candidates:
        try:
            real = Path(os.path.realpath(candidate))
            info = real.stat()
        except OSError:
            continue
        if not any(real.is_relative_to(root) for root in real_roots):
            continue
        if not stat.S_ISREG(info.st_mode) or info.st_mtime < made_after:
            continue
        if info.st_size > max_bytes:
            continue
        allowed.append(real)
        if len(allowed) == limit:
            break
    return allowed
