"""Getting Claude's answers into Discord, and never losing one.

Replies go out as a native reply plus follow-up messages; an answer too long for that
goes as its start plus a file; images Claude made in the outbox are uploaded; a message
Discord will not take is retried with backoff and finally saved under
``.claude/claudeclaw/undelivered/`` (0600) and logged, so nothing is lost.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import io
from pathlib import Path

import aiohttp
import discord

from claudeclaw.config import Settings
from claudeclaw.frontend.attachments import read_regular_file, uploadable_images
from claudeclaw.frontend.render import image_path_candidates
from claudeclaw.logs import get_logger
from claudeclaw.model import SessionKey
from claudeclaw.paths import ProjectPaths, ensure_private_dir, write_private_text
from claudeclaw.redaction import screen_upload

log = get_logger(component="discord")

MAX_REPLY_MESSAGES = 8  # a longer answer is sent as its start plus a file
REPLY_FILE_NAME = "reply.md"

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


class ReplyDelivery:
    """Sends replies for the bot; ``settings`` is swapped on reload."""

    def __init__(self, settings: Settings, paths: ProjectPaths) -> None:
        self.settings = settings
        self.paths = paths
        # Delays between attempts to deliver a reply chunk (then it is saved to disk).
        self.retry_delays: tuple[float, ...] = (1.0, 3.0, 9.0)

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
    ) -> None:
        """A reply longer than MAX_REPLY_MESSAGES messages: its start, and all of it as a
        file (a wall of dozens of messages helps nobody). Falls back to the messages."""
        note = (
            f"\n\n-# The whole answer ({len(reply):,} characters) is attached as "
            f"`{REPLY_FILE_NAME}`."
        )
        head = chunks[0] if len(chunks[0]) + len(note) <= 2000 else chunks[0][: 2000 - len(note)]
        try:
            await message.channel.send(
                head + note,
                file=discord.File(io.BytesIO(reply.encode("utf-8")), filename=REPLY_FILE_NAME),
                reference=message.to_reference(fail_if_not_exists=False),
                mention_author=True,
                allowed_mentions=REPLY_MENTIONS,
            )
        except (discord.HTTPException, aiohttp.ClientError, OSError) as exc:
            log.warning("discord.reply_file_failed", session_key=key, error=type(exc).__name__)
            await self.deliver(message, key, chunks)

    async def deliver(self, message: discord.Message, key: SessionKey, chunks: list[str]) -> bool:
        """Send ``chunks`` (the first as a reply); retry, then save what could not be sent."""
        channel = message.channel
        reference = message.to_reference(fail_if_not_exists=False)
        for index, chunk in enumerate(chunks):
            attempt = 0
            while True:
                try:
                    if index == 0:
                        await channel.send(
                            chunk,
                            reference=reference,
                            mention_author=True,
                            allowed_mentions=REPLY_MENTIONS,
                        )
                    else:
                        await channel.send(chunk, allowed_mentions=NO_MENTIONS)
                    break
                except (discord.HTTPException, aiohttp.ClientError, OSError) as exc:
                    status = getattr(exc, "status", None)
                    if attempt >= len(self.retry_delays):
                        await self._save_undelivered(message, key, chunks, index)
                        return False
                    log.warning(
                        "discord.reply_retry",
                        session_key=key,
                        chunk=index,
                        attempt=attempt + 1,
                        status=status,
                        error=type(exc).__name__,
                    )
                    await asyncio.sleep(self.retry_delays[attempt])
                    attempt += 1
        return True

    async def _save_undelivered(
        self, message: discord.Message, key: SessionKey, chunks: list[str], first_missing: int
    ) -> None:
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        header = (
            f"<!-- claudeclaw: reply Discord did not accept; key={key} "
            f"channel={message.channel.id} message={message.id} "
            f"delivered_chunks={first_missing}/{len(chunks)} -->\n\n"
        )
        text = header + "\n\n".join(chunks) + "\n"
        directory = self.paths.undelivered_dir

        def write() -> Path:
            ensure_private_dir(directory)
            path = directory / f"{stamp}-{key}.md"
            counter = 1
            while path.exists():
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
        log.error(
            "discord.reply_undelivered",
            session_key=key,
            path=str(path),
            chunks=len(chunks),
            delivered=first_missing,
        )
