"""Secrets that must never leave the daemon: in logs, in replies, in error messages.

The settings loader registers the Discord token and the API key here; the log pipeline
and the Discord frontend scrub every text they emit. Besides the registered values, text
shaped like an Anthropic API key or a Discord bot token is redacted in replies: Claude can
read files, and a key it finds must not be posted into a chat. Files Claude asks to upload
are screened the same way, base64 included (:func:`screen_upload`): such a file is not
uploaded at all, since a binary file cannot be scrubbed.
"""

from __future__ import annotations

import base64
import binascii
import re

REDACTED = "[redacted]"

_registered: set[str] = set()

# High-precision shapes only: a false positive here hides text from the user.
_SHAPES = (
    re.compile(r"sk-ant-[A-Za-z0-9_\-]{20,}"),  # Anthropic API keys (sk-ant-api03-…)
    re.compile(r"\b[MNO][A-Za-z\d_\-]{23,27}\.[A-Za-z\d_\-]{6}\.[A-Za-z\d_\-]{27,40}\b"),  # bot
)


# Environment variables that look like credentials: they reach neither workers nor claude,
# except the model provider's that claude itself needs (below).
_SECRET_NAME = re.compile(
    r"TOKEN|SECRET|PASSWORD|PASSWD|API_?KEY|ACCESS_KEY|PRIVATE_KEY|CREDENTIAL"
)
_CLAUDE_NEEDS = ("ANTHROPIC_", "CLAUDE_CODE_", "AWS_", "CLOUD_ML_", "VERTEX_", "GOOGLE_")


def is_secret_env(name: str) -> bool:
    """True for a variable named like a credential that ``claude`` does not need (its model
    provider's variables stay: Anthropic, Bedrock's AWS_*, Vertex's GOOGLE_*/CLOUD_ML_*)."""
    upper = name.upper()
    return bool(_SECRET_NAME.search(upper)) and not upper.startswith(_CLAUDE_NEEDS)


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
    """``text`` safe to post to a chat: registered secrets and key-shaped strings removed,
    plain or base64 (a reply must not carry the token past us encoded)."""
    text = scrub(text)
    for shape in _SHAPES:
        text = shape.sub(REDACTED, text)
    if _BASE64_RUN_TEXT.search(text) is None:
        return text
    forms = [form for secret in _registered for form in _base64_forms(secret.encode())]

    def redact_run(match: re.Match[str]) -> str:
        run = match.group().encode()
        if any(form in run for form in forms) or _decodes_to_shape(run):
            return REDACTED  # the whole run: not even the bytes next to the secret
        return match.group()

    return _BASE64_RUN_TEXT.sub(redact_run, text)


# A run of base64 (standard or URL-safe alphabet) long enough to hold a key or a token.
_BASE64_RUN = re.compile(rb"[A-Za-z0-9+/_-]{32,}={0,2}")
_BASE64_RUN_TEXT = re.compile(_BASE64_RUN.pattern.decode())
# Without the word boundaries: in a file (or decoded base64) a token may be glued to text.
_SHAPES_BYTES = tuple(re.compile(shape.pattern.replace(r"\b", "").encode()) for shape in _SHAPES)


def _base64_forms(secret: bytes) -> list[bytes]:
    """Substrings that every base64 encoding of ``secret`` contains, whatever its offset
    in the encoded data (3 alignments) and alphabet (standard or URL-safe)."""
    forms: list[bytes] = []
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + secret)
        core = encoded[4 if shift else 0 : -4]  # drop chars the neighbours also shape
        if len(core) >= 8:
            forms += [core, core.translate(bytes.maketrans(b"+/", b"-_"))]
    return forms


def _shaped(data: bytes) -> bool:
    return any(shape.search(data) for shape in _SHAPES_BYTES)


def secret_in(data: bytes) -> str | None:
    """What secret ``data`` holds, plain or base64: ``"the bot token or API key"`` (a
    registered secret), ``"a key-shaped secret"``, or None. Blocking; use a thread."""
    for secret in _registered:
        raw = secret.encode()
        if raw in data or any(form in data for form in _base64_forms(raw)):
            return "the bot token or an API key of this daemon"
    if _shaped(data):
        return "a key-shaped secret"
    if any(_decodes_to_shape(run.group()) for run in _BASE64_RUN.finditer(data)):
        return "a key-shaped secret (base64)"
    return None


def _decodes_to_shape(run: bytes) -> bool:
    """Does this base64 run (either alphabet, any start offset) decode to a key shape?"""
    chunk = run.replace(b"-", b"+").replace(b"_", b"/").rstrip(b"=")
    for shift in range(4):  # the run may start mid-group
        piece = chunk[shift:]
        piece = piece[: len(piece) - len(piece) % 4]
        try:
            if _shaped(base64.b64decode(piece, validate=True)):
                return True
        except (binascii.Error, ValueError):
            continue
    return False


def screen_upload(name: str, data: bytes) -> tuple[bytes | None, str]:
    """``(data to upload, "")``, or ``(None, why not)`` when the file holds a secret.

    Text (UTF-8 without NUL bytes) is scrubbed like a reply on top of that.
    """
    found = secret_in(data)
    if found:
        return None, f"`{name}` was not uploaded: it contains {found}."
    if b"\0" not in data:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            return data, ""
        return scrub_outbound(text).encode("utf-8"), ""
    return data, ""
