"""Getting Claude's answers into Discord, and never losing one.

Replies go out as a native reply plus follow-up messages; an answer too long for that
goes as its start plus a file; images Claude made in the outbox are uploaded; a message
Discord will not take is retried with backoff and finally saved under
``.claude/claudeclaw/undelivered/`` (0600) and logged, so nothing is lost. When Discord
says no attempt can ever succeed (the channel is gone, the bot has no access there),
:meth:`ReplyDelivery.take_refusal` says so, and where the reply was saved.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import gzip
import hashlib
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import discord

from claudeclaw.config import Settings
from claudeclaw.frontend.attachments import read_regular_file, uploadable_images
from claudeclaw.frontend.render import (
    DISCORD_LIMIT,
    image_path_candidates,
    truncate_utf16,
    utf16_len,
)
from claudeclaw.logs import get_logger
from claudeclaw.model import SessionKey
from claudeclaw.paths import ProjectPaths, ensure_private_dir, write_private_text
from claudeclaw.redaction import screen_upload

log = get_logger(component="discord")

MAX_REPLY_MESSAGES = 8  # a longer answer is sent as its start plus a file
REPLY_FILE_NAME = "reply.md"
MAX_PLAIN_FILE_BYTES = 8 * 1024 * 1024  # a larger reply.md is sent gzipped

REPLY_MENTIONS = discord.AllowedMentions(
    everyone=False, users=False, roles=False, replied_user=True
)
NO_MENTIONS = discord.AllowedMentions.none()


def _read_screened(paths: list[Path]) -> tuple[list[tuple[str, bytes]], list[str]]:
    """The files' names and bytes, minus those holding a secret (and why each was left out)."""
    kept: list[tuple[str, bytes]] = []
    refused: list[str] = []
    for path in paths:
        raw = read_regular_file(path)
        if raw is None:  # gone, or swapped for a link since it was checked
            continue
        data, why = screen_upload(path.name, raw)
        if data is None:
            refused.append(why)
        else:
            kept.append((path.name, data))
    return kept, refused


def chunk_nonce(message_id: int, index: int, text: str) -> str:
    """The nonce of one reply chunk: the same for every attempt to send it (discord.py
    sends it with ``enforce_nonce``, so Discord answers a repeat with the message it
    already created), different for another text (a note, then the answer)."""
    digest = hashlib.sha256(f"{message_id}:{index}:{text}".encode()).hexdigest()
    return digest[:25]  # Discord takes nonces of up to 25 characters


# Discord's JSON error codes that say a reply can never be posted where it should go
FINAL_REFUSALS = {
    10003: "the channel is gone (Unknown Channel)",
    10008: "the message is gone (Unknown Message)",
    50001: "the bot has no access to the channel (Missing Access)",
    50013: "the bot lacks a permission in the channel (Missing Permissions)",
}


def final_refusal(exc: Exception) -> str | None:
    """Why no later attempt can post there (Discord answered 404 or 403: the channel or
    message is gone, or the bot lost access); None when a later attempt may succeed."""
    if not isinstance(exc, discord.NotFound | discord.Forbidden):
        return None
    return FINAL_REFUSALS.get(exc.code) or (
        f"Discord answered {exc.status} (code {exc.code}: {exc.text or 'no reason given'})"
    )


@dataclass(frozen=True)
class Refusal:
    """Discord's final no to a reply, and where the reply is kept instead."""

    reason: str
    status: int
    code: int
    path: Path | None  # the copy under undelivered/ (None: it could not be written)


def retryable(exc: Exception) -> bool:
    """Can a later attempt succeed? Server errors and network trouble: yes. A 4xx (bad
    request, missing permission, unknown channel) fails the same way every time."""
    if isinstance(exc, discord.HTTPException):
        return exc.status >= 500
    return True  # aiohttp.ClientError, OSError (timeouts, resets)


class ReplyDelivery:
    """Sends replies for the bot; ``settings`` is swapped on reload."""

    def __init__(self, settings: Settings, paths: ProjectPaths) -> None:
        self.settings = settings
        self.paths = paths
        # Delays between attempts to deliver a reply chunk (then it is saved to disk).
        self.retry_delays: tuple[float, ...] = (1.0, 3.0, 9.0)
        self._forbidden_logged: set[int] = set()  # channels whose 403 was logged
        self._saved: dict[int, Path] = {}  # message id -> its reply saved in undelivered/
        self._refused: dict[int, Refusal] = {}  # message id -> Discord's final no to it

    async def read_spilled_reply(self, path: str) -> str | None:
        """The whole reply a worker wrote to ``replies/`` (too large for a frame); None if
        it is not there (or not inside ``replies/``)."""
        root = self.paths.replies_dir

        def take() -> str | None:
            file = Path(path)
            if file.parent.resolve() != root.resolve() or not file.is_file():
                return None
            return file.read_text(encoding="utf-8", errors="replace")

        try:
            return await asyncio.to_thread(take)
        except OSError as exc:
            log.warning("discord.spilled_reply_unreadable", error=type(exc).__name__)
            return None

    async def send_quietly(self, channel: discord.abc.Messageable, text: str) -> None:
        try:
            await channel.send(text, allowed_mentions=NO_MENTIONS)
        except discord.HTTPException as exc:
            log.warning("discord.send_failed", status=exc.status)

    async def images_to_upload(self, reply: str, accepted_at: float) -> list[Path]:
        """Images named in the reply that may be posted: inside discord.imageOutputRoots (or
        the outbox) and made since the message arrived (the original's rule, 30 s slack)."""
        candidates = image_path_candidates(reply)
        if not candidates:
            return []
        configured = self.settings.discord.image_output_roots
        roots = [Path(r) for r in configured] or [self.paths.outbox_dir]
        return await asyncio.to_thread(
            uploadable_images,
            candidates,
            roots,
            made_after=accepted_at - 30,
            max_bytes=self.settings.discord.max_attachment_bytes,
        )

    async def upload_images(
        self, message: discord.Message, key: SessionKey, images: list[Path]
    ) -> None:
        """Post the images Claude made, after the text (one message, up to 10 files)."""
        try:
            blobs, refused = await asyncio.to_thread(_read_screened, images)
            for note in refused:  # it holds a secret (redaction.screen_upload)
                log.warning("discord.upload_refused", session_key=key, reason=note)
                await self.send_quietly(message.channel, note)
            if not blobs:
                return
            await message.channel.send(
                files=[discord.File(io.BytesIO(data), filename=name) for name, data in blobs],
                allowed_mentions=NO_MENTIONS,
            )
            log.info("discord.images_uploaded", session_key=key, count=len(images))
        except (discord.HTTPException, aiohttp.ClientError, OSError) as exc:
            log.warning("discord.images_failed", session_key=key, error=type(exc).__name__)
            await self.send_quietly(
                message.channel, "The images Claude made could not be uploaded."
            )

    async def deliver_as_file(
        self, message: discord.Message, key: SessionKey, reply: str, chunks: list[str]
    ) -> bool:
        """A reply longer than MAX_REPLY_MESSAGES messages: its start, and all of it as a
        file (a wall of dozens of messages helps nobody). Falls back to the messages when
        the file itself is refused (a 4xx: no Attach Files permission, too large)."""
        note = (
            f"\n\n-# The whole answer ({len(reply):,} characters) is attached as "
            f"`{REPLY_FILE_NAME}`."
        )
        head = truncate_utf16(chunks[0], DISCORD_LIMIT - utf16_len(note))
        data = reply.encode("utf-8")
        name = REPLY_FILE_NAME
        if len(data) > MAX_PLAIN_FILE_BYTES:  # Discord takes 10 MB; text packs well
            data, name = gzip.compress(data), REPLY_FILE_NAME + ".gz"
            note = note.replace(f"`{REPLY_FILE_NAME}`", f"`{name}` (gzip)")
            head = truncate_utf16(chunks[0], DISCORD_LIMIT - utf16_len(note))
        error = await self._send_retrying(
            message.channel,
            key,
            lambda: {
                "content": head + note,
                "file": discord.File(io.BytesIO(data), filename=name),
                "reference": message.to_reference(fail_if_not_exists=False),
                "mention_author": True,
                "allowed_mentions": REPLY_MENTIONS,
            },
            nonce=chunk_nonce(message.id, -1, reply),
            chunk=0,
        )
        if error is None:
            await self._delivered_at_last(message, key)
            return True
        log.warning("discord.reply_file_failed", session_key=key, error=type(error).__name__)
        if retryable(error):  # Discord is down: the messages would fail the same way
            await self._save_undelivered(message, key, [reply], 0)
            return False
        return await self.deliver(message, key, chunks)

    async def deliver(self, message: discord.Message, key: SessionKey, chunks: list[str]) -> bool:
        """Send ``chunks`` (the first as a reply); retry what can succeed, then save what
        could not be sent. Each chunk keeps one nonce across every attempt, so a chunk
        Discord created behind an error is not posted twice."""
        channel = message.channel
        self._refused.pop(message.id, None)
        # fail_if_not_exists=False: the answer to a message its author deleted since is
        # still posted, as a plain message (Discord would refuse the reply: 400 50035)
        reference = message.to_reference(fail_if_not_exists=False)
        for index, chunk in enumerate(chunks):

            def payload(index: int = index, chunk: str = chunk) -> dict[str, Any]:
                if index == 0:
                    return {
                        "content": chunk,
                        "reference": reference,
                        "mention_author": True,
                        "allowed_mentions": REPLY_MENTIONS,
                    }
                return {"content": chunk, "allowed_mentions": NO_MENTIONS}

            error = await self._send_retrying(
                channel, key, payload, nonce=chunk_nonce(message.id, index, chunk), chunk=index
            )
            if error is not None:
                reason = final_refusal(error)
                await self._save_undelivered(message, key, chunks, index, reason)
                if reason is not None:
                    self._refused[message.id] = Refusal(
                        reason,
                        getattr(error, "status", 0),
                        getattr(error, "code", 0),
                        self._saved.get(message.id),
                    )
                return False
        await self._delivered_at_last(message, key)
        return True

    def take_refusal(self, message_id: int) -> Refusal | None:
        """Discord's final no to the last reply to ``message_id`` (no later attempt can
        succeed), if it said one; the reply's saved copy then stays where it is."""
        refusal = self._refused.pop(message_id, None)
        if refusal is not None:
            self._saved.pop(message_id, None)
        return refusal

    async def _delivered_at_last(self, message: discord.Message, key: SessionKey) -> None:
        """A reply saved to disk earlier went through now: its saved copy goes."""
        path = self._saved.pop(message.id, None)
        if path is None:
            return
        with contextlib.suppress(OSError):
            await asyncio.to_thread(path.unlink)
        log.info("discord.reply_redelivered", session_key=key, message_id=message.id)

    async def _send_retrying(
        self,
        channel: discord.abc.Messageable,
        key: SessionKey,
        payload: Callable[[], dict[str, Any]],
        *,
        nonce: str,
        chunk: int,
    ) -> Exception | None:
        """Send one message; on an error that a later attempt can fix (Discord 5xx after
        discord.py's own retries, a network error) retry with backoff. None: sent."""
        attempt = 0
        while True:
            try:
                await channel.send(nonce=nonce, **payload())
                return None
            except (discord.HTTPException, aiohttp.ClientError, OSError) as exc:
                if not retryable(exc):
                    self._log_refused(channel, key, exc)
                    return exc
                if attempt >= len(self.retry_delays):
                    return exc
                log.warning(
                    "discord.reply_retry",
                    session_key=key,
                    chunk=chunk,
                    attempt=attempt + 1,
                    status=getattr(exc, "status", None),
                    error=type(exc).__name__,
                )
                await asyncio.sleep(self.retry_delays[attempt])
                attempt += 1

    def _log_refused(self, channel: Any, key: SessionKey, exc: Exception) -> None:
        """A refusal no retry can fix; a missing permission is named once per channel."""
        status = getattr(exc, "status", None)
        if isinstance(exc, discord.Forbidden):
            channel_id = getattr(channel, "id", 0)
            if channel_id in self._forbidden_logged:
                return
            self._forbidden_logged.add(channel_id)
            in_thread = isinstance(channel, discord.Thread)
            log.error(
                "discord.reply_forbidden",
                session_key=key,
                channel_id=channel_id,
                status=status,
                code=getattr(exc, "code", None),
                fix=(
                    "grant the bot View Channel, "
                    + ("Send Messages in Threads" if in_thread else "Send Messages")
                    + ", Read Message History and Attach Files in this channel "
                    "(Server Settings → Roles, or the channel's Permissions)"
                ),
            )
            return
        log.warning(
            "discord.reply_refused",
            session_key=key,
            status=status,
            code=getattr(exc, "code", None),
            error=type(exc).__name__,
        )

    async def _save_undelivered(
        self,
        message: discord.Message,
        key: SessionKey,
        chunks: list[str],
        first_missing: int,
        final: str | None = None,
    ) -> None:
        """Keep the reply on disk; ``final``: why Discord will never take it (the header
        says so, for the operator who reads it)."""
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        never = f"; never: {final.replace('--', '-')}" if final else ""
        header = (
            f"<!-- claudeclaw: reply Discord did not accept{never}; key={key} "
            f"channel={message.channel.id} message={message.id} "
            f"delivered_chunks={first_missing}/{len(chunks)} -->\n\n"
        )
        text = header + "\n\n".join(chunks) + "\n"
        directory = self.paths.undelivered_dir
        earlier = self._saved.get(message.id)  # a later attempt rewrites the same file

        def write() -> Path:
            ensure_private_dir(directory)
            path = earlier or directory / f"{stamp}-{key}.md"
            counter = 1
            while earlier is None and path.exists():
                path = directory / f"{stamp}-{key}-{counter}.md"
                counter += 1
            write_private_text(path, text)
            return path

        try:
            path = await asyncio.to_thread(write)
        except Exception as exc:
            log.error(
                "discord.reply_lost", session_key=key, error=type(exc).__name__, length=len(text)
            )
            return
        self._saved[message.id] = path
        log.error(
            "discord.reply_undelivered",
            session_key=key,
            path=str(path),
            chunks=len(chunks),
            delivered=first_missing,
        )
