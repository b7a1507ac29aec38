"""The one scrub for every text the bot sends to Discord's REST API.

Replies, progress messages, queue notices, error notes, status lines, the text files a
long answer is attached as: each is built in a different place, and a secret Claude read
(a key in a tool's input, in an error) must not reach the chat from any of them. So the
scrub does not rely on every caller: :func:`install` wraps the client's
``HTTPClient.request`` (through which discord.py sends every channel message, edit and
upload) and passes each string of the JSON payload, and each text file, through
:func:`~claudeclaw.redaction.scrub_outbound`. Slash-command answers go through the
interaction webhook instead; ``commands.py`` scrubs those texts itself.
"""

from __future__ import annotations

import io
import json
from collections.abc import Awaitable, Callable
from typing import Any

import discord

from claudeclaw.jsonwalk import map_strings
from claudeclaw.redaction import scrub_outbound

TEXT_FILE_SUFFIXES = (".md", ".txt", ".log", ".json", ".csv")
MAX_SCRUBBED_FILE_BYTES = 8 * 1024 * 1024  # larger files are sent as they are


def scrub_payload(value: Any) -> Any:
    """``value`` (a JSON document) with every string scrubbed; other values unchanged."""
    return map_strings(value, scrub_outbound)


def _scrub_form(form: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for field in form:
        if field.get("name") == "payload_json" and isinstance(field.get("value"), str):
            document = json.loads(field["value"])
            field = {**field, "value": json.dumps(scrub_payload(document))}
        out.append(field)
    return out


def _scrub_file(file: discord.File) -> None:
    """Scrub a small in-memory text attachment in place (the request's form already holds
    this very buffer); images, other binaries and files on disk are left as they are."""
    name = (file.filename or "").lower()
    fp = file.fp
    if not name.endswith(TEXT_FILE_SUFFIXES) or not isinstance(fp, io.BytesIO):
        return
    start = fp.tell()
    data = fp.getvalue()[start:]
    if len(data) > MAX_SCRUBBED_FILE_BYTES:
        return
    text = data.decode("utf-8", errors="replace")
    clean = scrub_outbound(text)
    if clean != text:
        fp.seek(start)
        fp.truncate()
        fp.write(clean.encode("utf-8"))
    fp.seek(start)


def install(http: discord.http.HTTPClient) -> None:
    """Route every request of ``http`` through the scrub (idempotent)."""
    original: Callable[..., Awaitable[Any]] = http.request
    if getattr(original, "_claudeclaw_scrubbed", False):
        return

    async def request(route: discord.http.Route, **kwargs: Any) -> Any:
        if "json" in kwargs:
            kwargs["json"] = scrub_payload(kwargs["json"])
        form = kwargs.get("form")
        if form:
            kwargs["form"] = _scrub_form(list(form))
        for file in kwargs.get("files") or ():
            if isinstance(file, discord.File):
                _scrub_file(file)
        return await original(route, **kwargs)

    request._claudeclaw_scrubbed = True  # type: ignore[attr-defined]
    http.request = request  # type: ignore[method-assign]
