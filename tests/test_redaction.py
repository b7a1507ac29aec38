"""Secret detection for uploads (redaction.secret_in / screen_upload): plain and base64."""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator

import pytest

from claudeclaw import redaction
from claudeclaw.redaction import REDACTED, register_secret, screen_upload, secret_in

TOKEN = "MTIzNDU2Nzg5MDEyMzQ1Njc4.GaBcDe.abcdefghijklmnopqrstuvwxyz0123"  # bot-token shaped
OPAQUE = "opaque-daemon-api-key-7f3a9c"  # registered, but no known shape
KEY = "sk-ant-api03-" + "x1Y2z3" * 6


@pytest.fixture(autouse=True)
def registered() -> Iterator[None]:
    saved = set(redaction._registered)
    register_secret(OPAQUE)
    yield
    redaction._registered.clear()
    redaction._registered.update(saved)


@pytest.mark.parametrize("prefix", [b"", b"a", b"ab", b"abc"])
@pytest.mark.parametrize("urlsafe", [False, True])
def test_a_registered_secret_is_found_in_base64_at_any_offset(prefix: bytes, urlsafe: bool) -> None:
    encode = base64.urlsafe_b64encode if urlsafe else base64.b64encode
    blob = os.urandom(64) + encode(prefix + OPAQUE.encode() + b"\n") + os.urandom(64)
    assert secret_in(blob) == "the bot token or an API key of this daemon"


@pytest.mark.parametrize("secret", [TOKEN, KEY])
def test_key_shapes_are_found_plain_and_in_base64(secret: str) -> None:
    assert secret_in(b"\x89PNG\r\n\x00" + secret.encode() + b"\x00") is not None
    for prefix in (b"", b"token: ", b"xy"):
        blob = b"data:" + base64.b64encode(prefix + secret.encode()) + b"\n"
        assert secret_in(blob) is not None, prefix


def test_ordinary_files_pass_untouched() -> None:
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40
    assert secret_in(png) is None
    assert screen_upload("chart.png", png) == (png, "")
    text = "a table\n| a | b |\n" + base64.b64encode(b"just some words, no key").decode()
    assert screen_upload("notes.md", text.encode()) == (text.encode(), "")


def test_a_file_with_a_secret_is_refused_with_its_name_and_why() -> None:
    data, why = screen_upload("notes.txt", f"the token is {TOKEN}\n".encode())
    assert data is None
    assert "`notes.txt` was not uploaded" in why and "key-shaped secret" in why
    assert TOKEN not in why
    data, why = screen_upload("x.bin", b"\x00" + OPAQUE.encode())
    assert data is None and "bot token or an API key" in why


def test_text_is_scrubbed_like_a_reply(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever the refusal does not catch, the reply scrub still does for text files."""
    monkeypatch.setattr(redaction, "secret_in", lambda data: None)
    data, why = screen_upload("a.txt", f"key {KEY} end".encode())
    assert why == "" and data == f"key {REDACTED} end".encode()


def test_replies_lose_secrets_in_base64_too() -> None:
    """The issue's attack: the token read by a tool came back base64-encoded in the answer."""
    from claudeclaw.redaction import scrub_outbound

    for prefix in (b"", b"x", b"xy"):
        encoded = base64.b64encode(prefix + OPAQUE.encode() + b"\n").decode()
        out = scrub_outbound(f"Here you go: {encoded} (base64)")
        assert out == f"Here you go: {REDACTED} (base64)", out
    shaped = base64.urlsafe_b64encode(f"token={TOKEN}".encode()).decode()
    assert scrub_outbound(f"a {shaped} b") == f"a {REDACTED} b"
    fine = "see src/claudeclaw/a_rather_long_module_name_without_any_secret_in_it.py"
    assert scrub_outbound(fine) == fine
