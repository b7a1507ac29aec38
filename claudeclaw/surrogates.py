"""Lone UTF-16 surrogates: valid in JSON text, impossible in UTF-8.

JSON may carry ``"\\ud83d"`` without its other half (a JavaScript string cut between the
two halves of an emoji does), and Python's ``json`` reads it into a ``str`` that cannot be
encoded as UTF-8: a ledger line, a nonce's hash or the pipe to ``claude`` would raise on
it, and the message carrying it would never be answered. So text is mended where it enters,
from Discord (``frontend/wirejson.py``) and from the CLI (``claude/stream.py``,
``claude/live.py``), and a prompt again where it leaves for the CLI (``claude/runner.py``,
``claude/live.py``: a prompt may come from elsewhere, a job or ``claudeclaw send``): each
lone half becomes U+FFFD. State files and journals (:func:`dumps_utf8`) take any str.
"""

from __future__ import annotations

import json
import re
from typing import Any

from claudeclaw.jsonwalk import map_strings

_STR = re.compile(r"[\ud800-\udfff]")
_ESCAPE_STR = re.compile(r"\\u[dD][89a-fA-F]")
_ESCAPE_BYTES = re.compile(rb"\\u[dD][89a-fA-F]")


def mend_text(text: str) -> str:
    """``text`` with each lone surrogate replaced by U+FFFD (pairs kept: they are a
    character; a str holding both halves as two code points gets the character)."""
    if _STR.search(text) is None:
        return text
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def mend(value: Any) -> Any:
    """A parsed JSON document with every string (and key) mended."""
    return map_strings(value, mend_text, keys=True)


def may_hold_one(raw: str | bytes | bytearray) -> bool:
    """Whether JSON text ``raw`` has a surrogate escape (``\\ud800`` to ``\\udfff``): only
    then can parsing it yield a lone surrogate. A pair's escapes match too; harmless."""
    if isinstance(raw, str):
        return _ESCAPE_STR.search(raw) is not None
    return _ESCAPE_BYTES.search(raw) is not None


def loads(raw: str | bytes | bytearray) -> Any:
    """``json.loads``, with lone surrogates mended (the scan is one regex over ``raw``)."""
    data = json.loads(raw)
    return mend(data) if may_hold_one(raw) else data


def dumps_utf8(obj: Any, *, indent: int | None = None) -> bytes:
    """``obj`` as UTF-8 JSON and a newline (state files, journals). A str UTF-8 cannot hold
    (one that did not pass through :func:`mend`: a file name read from disk, say) makes
    the whole document ASCII with ``\\u`` escapes instead, which reads back the same."""
    separators = None if indent is not None else (",", ":")
    text = json.dumps(obj, indent=indent, ensure_ascii=False, separators=separators) + "\n"
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return (json.dumps(obj, indent=indent, separators=separators) + "\n").encode("ascii")
