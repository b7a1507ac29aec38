"""Discord's JSON (gateway events, REST bodies) through orjson, safely.

discord.py parses every gateway event and REST answer with ``discord.utils._from_json``
and serialises every payload with ``_to_json``; with orjson importable it uses orjson's,
which take a third of the standard library's time or less (a few per cent of a message's
whole CPU: docs/ARCHITECTURE.md, dependencies).

orjson is stricter than JSON itself: it refuses a lone surrogate (``"\\ud800"``), which
the standard library reads and writes. A gateway event carrying one would make discord.py's
own orjson parser raise inside its receive loop, out of the client's connection, and the
message would never be answered (``tests/test_bot_faults.py`` shows it). :func:`install`
puts in functions that try orjson and fall back to the standard library (mending the text)
for what it refuses, so no event or reply can be poison for the JSON layer.
"""

from __future__ import annotations

import json
from typing import Any

import discord.utils
import orjson

from claudeclaw import surrogates


def from_json(data: str | bytes | bytearray | memoryview) -> Any:
    """``data`` parsed: orjson's speed, the standard library's leniency."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        # a lone surrogate escape, mended here (claudeclaw/surrogates.py); what is not JSON
        # at all raises here too
        return surrogates.mend(json.loads(bytes(data) if isinstance(data, memoryview) else data))


def to_json(obj: Any) -> str:
    """``obj`` as compact JSON text, as discord.py sends it."""
    try:
        return orjson.dumps(obj).decode("utf-8")
    except TypeError:  # a lone surrogate in a str, an int beyond 64 bits, ...
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=True)


def install() -> None:
    """Route discord.py's JSON through :func:`from_json` / :func:`to_json` (idempotent:
    its modules look both up on ``discord.utils`` at each call)."""
    discord.utils._from_json = from_json
    discord.utils._to_json = to_json
