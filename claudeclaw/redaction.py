"""Secrets that must never leave the daemon: in logs, in replies, in error messages.

The settings loader registers the Discord token and the API key here; the log pipeline
and the Discord frontend scrub every text they emit. Besides the registered values, text
shaped like an Anthropic API key or a Discord bot token is redacted in replies: Claude can
read files, and a key it finds must not be posted into a chat.
"""

from __future__ import annotations

import re

REDACTED = "[redacted]"

_registered: set[str] = set()

# High-precision shapes only: a false positive here hides text from the user.
_SHAPES = (
    re.compile(r"sk-ant-[A-Za-z0-9_\-]{20,}"),  # Anthropic API keys (sk-ant-api03-…)
    re.compile(r"\b[MNO][A-Za-z\d_\-]{23,27}\.[A-Za-z\d_\-]{6}\.[A-Za-z\d_\-]{27,40}\b"),  # bot
)


def register_secret(value: str) -> None:
    """Never emit ``value``. Short strings are ignored (they would redact ordinary words)."""
    if value and len(value) >= 8:
        _registered.add(value)


def scrub(text: str) -> str:
    """``text`` with every registered secret replaced (what logs use)."""
    for secret in _registered:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def scrub_outbound(text: str) -> str:
    """``text`` safe to post to a chat: registered secrets and key-shaped strings removed."""
    text = scrub(text)
    for shape in _SHAPES:
        text = shape.sub(REDACTED, text)
    return text
