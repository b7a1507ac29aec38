"""Pure: what the bot writes to Discord.

* :func:`split_message` cuts a reply into messages of at most 2000 characters (counted in
  UTF-16 code units, as Discord does), preferring paragraph, then line, then word
  boundaries; a code fence open at a cut is closed and reopened (with its language) in the
  next chunk; a cut never falls inside a surrogate pair or a grapheme cluster (emoji with
  skin tones, ZWJ sequences, flags, keycaps, combining marks).
* :func:`extract_reactions` pulls ``[react:emoji]`` directives out of a reply.
* :func:`progress_text`, :func:`queued_text` and :func:`failure_text` are the status lines.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from claudeclaw.model import RunFailed, parse_time

DISCORD_LIMIT = 2000
EMPTY_REPLY = "(empty response)"
_FENCE_RESERVE = 8  # room kept for a closing fence ("\n```", or longer)
# ``[react:🎉]`` and ``[react: 🎉 ]`` (the original accepts spaces around the emoji)
_REACT = re.compile(r"\[react:[ \t]*([^\]\s]+)[ \t]*\]")
_FENCE_LINE = re.compile(r"^ {0,3}(`{3,})(.*)$")


def utf16_len(text: str) -> int:
    """Length as Discord (JavaScript) counts it: characters outside the BMP count twice."""
    return len(text) + sum(1 for ch in text if ord(ch) > 0xFFFF)


# ---- grapheme-safe cut points --------------------------------------------------------


def _is_regional_indicator(ch: str) -> bool:
    return 0x1F1E6 <= ord(ch) <= 0x1F1FF


def _extends_previous(ch: str) -> bool:
    """True if ``ch`` belongs to the grapheme cluster before it."""
    cp = ord(ch)
    return (
        0xDC00 <= cp <= 0xDFFF  # low surrogate (only in lone-surrogate strings)
        or cp == 0x200D  # zero width joiner
        or 0xFE00 <= cp <= 0xFE0F  # variation selectors
        or 0xE0100 <= cp <= 0xE01EF
        or 0x1F3FB <= cp <= 0x1F3FF  # skin tone modifiers
        or 0xE0020 <= cp <= 0xE007F  # tag characters (subdivision flags)
        or cp == 0x20E3  # combining enclosing keycap
        or unicodedata.category(ch) in ("Mn", "Me", "Mc")
    )


def is_cut_point(text: str, index: int) -> bool:
    """May ``text`` be cut between ``text[index - 1]`` and ``text[index]``?"""
    if index <= 0 or index >= len(text):
        return True
    prev, cur = text[index - 1], text[index]
    if _extends_previous(cur) or prev == "\u200d":
        return False
    if 0xD800 <= ord(prev) <= 0xDBFF:  # high surrogate: its pair follows
        return False
    if prev == "\r" and cur == "\n":
        return False
    if _is_regional_indicator(prev) and _is_regional_indicator(cur):
        run = 0
        i = index - 1
        while i >= 0 and _is_regional_indicator(text[i]):
            run += 1
            i -= 1
        return run % 2 == 0  # an odd run means prev opens a flag that cur closes
    return True


def _fit(text: str, budget: int) -> int:
    """The largest index ``i`` with ``utf16_len(text[:i]) <= budget``."""
    used = 0
    for i, ch in enumerate(text):
        used += 2 if ord(ch) > 0xFFFF else 1
        if used > budget:
            return i
    return len(text)


def truncate_utf16(text: str, budget: int) -> str:
    """The longest start of ``text`` that is at most ``budget`` UTF-16 units, not cut
    inside a surrogate pair or a grapheme cluster."""
    cut = _fit(text, max(0, budget))
    if cut >= len(text):
        return text
    while cut > 0 and not is_cut_point(text, cut):
        cut -= 1
    return text[:cut]


def _choose_cut(body: str, budget: int, floor: int) -> tuple[int, int]:
    """Where to end this chunk and where the rest starts (the separator is dropped)."""
    hard = _fit(body, budget)
    for sep, share in (("\n\n", 0.5), ("\n", 0.25), (" ", 0.25), ("\n", 0.0), (" ", 0.0)):
        idx = body.rfind(sep, floor, hard)
        if idx > floor and idx >= hard * share:
            return idx, idx + len(sep)
    cut = hard
    while cut > floor + 1 and not is_cut_point(body, cut):
        cut -= 1
    if cut <= floor:  # one enormous grapheme: cut anyway rather than loop forever
        cut = max(hard, floor + 1)
    return cut, cut


def _open_fence_after(chunk: str) -> str | None:
    """The opening fence line still open at the end of ``chunk`` (e.g. ``"```py"``), if any."""
    open_line: str | None = None
    open_ticks = 0
    for line in chunk.split("\n"):
        match = _FENCE_LINE.match(line)
        if match is None:
            continue
        ticks, info = match.group(1), match.group(2).strip()
        if open_line is None:
            lang = info.split()[0] if info else ""
            open_line, open_ticks = ticks + lang, len(ticks)
        elif not info and len(ticks) >= open_ticks:
            open_line, open_ticks = None, 0
    return open_line


def split_message(text: str, limit: int = DISCORD_LIMIT) -> list[str]:
    """Cut ``text`` into Discord-sized chunks (see the module docstring). Empty: ``[]``."""
    text = text.strip("\n").rstrip()
    if not text.strip():
        return []
    chunks: list[str] = []
    reopen = ""
    rest = text
    while rest:
        body = reopen + rest
        if utf16_len(body) <= limit:
            chunks.append(body)
            break
        end, start = _choose_cut(body, limit, len(reopen))
        chunk = body[:end].rstrip()
        fence = _open_fence_after(chunk)
        if fence is not None and utf16_len(chunk) + _FENCE_RESERVE > limit:
            end, start = _choose_cut(body, limit - _FENCE_RESERVE, len(reopen))
            chunk = body[:end].rstrip()
            fence = _open_fence_after(chunk)
        if fence is not None:
            chunk += "\n" + "`" * (len(fence) - len(fence.lstrip("`")))
            reopen = fence[: limit // 4] + "\n"
        else:
            reopen = ""
        if chunk.strip():
            chunks.append(chunk)
        rest = body[start:].lstrip("\n") if fence is None else body[start:]
        if not rest.strip():
            break
    return chunks


# ---- reply rendering -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RenderedReply:
    chunks: list[str]
    reactions: list[str]  # [react:...] directives in order; the first one is used


def extract_reactions(text: str) -> tuple[str, list[str]]:
    """Remove every ``[react:emoji]`` directive; return the text and the emojis."""
    emojis = _REACT.findall(text)
    cleaned = _REACT.sub("", text)
    if emojis:
        cleaned = re.sub(r"[ \t]+\n", "\n", cleaned).strip()
    return cleaned, emojis


def render_reply(text: str, limit: int = DISCORD_LIMIT) -> RenderedReply:
    """Reactions out, then split; an empty reply becomes ``(empty response)``."""
    cleaned, emojis = extract_reactions(text)
    chunks = split_message(cleaned, limit) or [EMPTY_REPLY]
    return RenderedReply(chunks=chunks, reactions=emojis)


# ---- status lines --------------------------------------------------------------------


def format_elapsed(seconds: float) -> str:
    """``42s``, ``3m 05s``, ``1h 02m``."""
    total = max(0, int(seconds))
    hours, rem = divmod(total, 3600)
    minutes, secs = divmod(rem, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def _one_line(text: str, limit: int) -> str:
    line = " ".join(text.split()).replace("`", "'")
    return line if len(line) <= limit else line[: limit - 1] + "…"


def progress_text(*, tool: str, summary: str, writing: bool, elapsed_s: float) -> str:
    """The one status message shown (and edited) while a long run works."""
    head = f"⚙️ Working… {format_elapsed(elapsed_s)}"
    if tool:
        detail = f"🔧 {_one_line(tool, 60)}"
        if summary:
            detail += f": `{_one_line(summary, 180)}`"
        return f"{head}\n{detail}"
    if writing:
        return f"{head}\n✍️ Writing the reply"
    return head


def queued_text(position: int, waiting_for_slot: bool, resets_at: str = "") -> str | None:
    """Said once when a message has to wait; None when it runs next."""
    if resets_at:
        return (
            "⏳ Claude's usage limit is reached; this runs by itself when it resets, "
            f"{_when(resets_at)}. /stop cancels it."
        )
    if position > 0:
        return f"Queued: {position} ahead of you"
    if waiting_for_slot:
        return "Queued: waiting for a free run slot (other threads are busy)"
    return None


def _when(iso: str) -> str:
    moment = parse_time(iso)
    if moment is None:
        return iso
    stamp = int(moment.timestamp())
    return f"<t:{stamp}:t> (<t:{stamp}:R>)"


CONTEXT_RESET_NOTE = (
    "-# The earlier Claude session of this conversation could not be resumed (the CLI no "
    "longer had it), so this reply starts a new one."
)


def with_context_note(reply: str, context_reset: bool) -> str:
    """The reply, preceded by a short note when its session had to be started afresh."""
    return f"{CONTEXT_RESET_NOTE}\n\n{reply}" if context_reset else reply


def failure_text(event: RunFailed) -> str:
    """A clear message per failure reason; ``event.message`` is safe to show."""
    detail = _one_line(event.message, 1500) if event.message else ""
    if event.reason == "timeout":
        return "⏱️ Timed out: the run took too long and was stopped." + (
            f"\n{detail}" if detail else ""
        )
    if event.reason == "rate_limited":
        when = f" It resets at {_when(event.retry_at)}." if event.retry_at else ""
        return f"🚦 Claude usage limit reached.{when} Try again after that."
    if event.reason == "cancelled":
        return "⏹️ Stopped."
    if event.reason == "crashed":
        return "💥 The worker running this session crashed. Please send your message again."
    if event.reason == "kept":
        return "⏸️ " + (detail or "claudeclaw is restarting; this message runs when it is back.")
    if event.reason == "shutdown":
        return "🔌 claudeclaw is shutting down" + (
            f": {detail}" if detail else "; send it again later."
        )
    if event.reason == "spawn":
        return "❌ Claude could not be started." + (f" {detail}" if detail else "")
    return "❌ Error." + (f" {detail}" if detail else "")


# ---- images Claude made, named in its reply ---------------------------------------------

_IMAGE_PATH = re.compile(r"(?<!\S)(/\S+\.(?:png|jpe?g|gif|webp))(?=\s|$)", re.IGNORECASE)


def image_path_candidates(text: str) -> list[str]:
    """Absolute image paths standing alone in ``text`` (the original's rule), in order."""
    seen: list[str] = []
    for match in _IMAGE_PATH.finditer(text):
        if match.group(1) not in seen:
            seen.append(match.group(1))
    return seen


def without_paths(text: str, paths: list[str]) -> str:
    """``text`` with the given paths (uploaded as files instead) taken out."""
    for path in paths:
        text = re.sub(rf"(?<!\S){re.escape(path)}(?=\s|$)", "", text)
    return re.sub(r"[ \t]+\n", "\n", text).strip()
