"""render.py: splitting, fences, graphemes, reactions, status lines."""

from __future__ import annotations

import re

import pytest

from claudeclaw.frontend.render import (
    EMPTY_REPLY,
    extract_reactions,
    failure_text,
    format_elapsed,
    is_cut_point,
    progress_text,
    queued_text,
    render_reply,
    split_message,
    utf16_len,
)
from claudeclaw.model import RunFailed


def fences_balanced(chunk: str) -> bool:
    return len(re.findall(r"^ {0,3}```", chunk, flags=re.M)) % 2 == 0


def test_short_text_is_one_chunk():
    assert split_message("hello") == ["hello"]


def test_empty_text_gives_no_chunks_and_reply_says_empty():
    assert split_message("  \n ") == []
    assert render_reply("").chunks == [EMPTY_REPLY]
    assert render_reply("[react:👍]").chunks == [EMPTY_REPLY]


def test_every_chunk_fits_and_nothing_is_lost():
    words = " ".join(f"word{i}" for i in range(2000))
    chunks = split_message(words)
    assert len(chunks) > 1
    assert all(utf16_len(c) <= 2000 for c in chunks)
    assert " ".join(chunks).split() == words.split()


def test_prefers_paragraph_boundaries():
    para = ("x" * 80 + "\n") * 10
    text = "\n\n".join([para.strip()] * 5)
    chunks = split_message(text)
    assert all(utf16_len(c) <= 2000 for c in chunks)
    # each chunk ends at the end of a paragraph (a full x-line), never mid-line
    for chunk in chunks:
        assert chunk.endswith("x" * 80)
    assert "\n\n".join(chunks) == text


def test_prefers_lines_over_words():
    text = "\n".join(f"line {i:04d} " + "y" * 60 for i in range(100))
    chunks = split_message(text)
    for chunk in chunks:
        assert chunk.splitlines()[-1].startswith("line ")
        assert len(chunk.splitlines()[-1]) == len("line 0000 ") + 60
    assert "\n".join(chunks) == text


def test_word_boundary_then_hard_cut():
    text = "a" * 4500
    chunks = split_message(text)
    assert "".join(chunks) == text
    assert all(len(c) <= 2000 for c in chunks)


def test_code_fence_is_closed_and_reopened_with_language():
    code = "\n".join(f"print({i})  # some code here" for i in range(200))
    text = "Here you go:\n\n```python\n" + code + "\n```\nDone."
    chunks = split_message(text)
    assert len(chunks) >= 3
    assert all(utf16_len(c) <= 2000 for c in chunks)
    assert all(fences_balanced(c) for c in chunks)
    for chunk in chunks[1:-1]:
        assert chunk.startswith("```python\n")
        assert chunk.endswith("\n```")
    assert chunks[-1].endswith("Done.")
    # the code lines all survive, in order
    joined = "\n".join(chunks)
    found = re.findall(r"print\((\d+)\)", joined)
    assert [int(n) for n in found] == list(range(200))


def test_fence_without_language_and_closed_fence_untouched():
    text = "```\n" + ("z" * 50 + "\n") * 60 + "```\n" + "after " * 10
    chunks = split_message(text)
    assert all(fences_balanced(c) for c in chunks)
    assert chunks[1].startswith("```\n")
    assert not chunks[-1].startswith("```python")


@pytest.mark.parametrize(
    "emoji",
    ["😀", "👍🏽", "👨‍👩‍👧‍👦", "🇫🇷", "1️⃣", "é"],
)
def test_emoji_at_the_boundary_is_never_cut(emoji):
    for pad in range(1990, 2001):
        text = "a" * pad + emoji * 5 + "b" * 10
        chunks = split_message(text)
        assert "".join(chunks) == text
        assert all(utf16_len(c) <= 2000 for c in chunks)
        for chunk in chunks[:-1]:
            # a chunk boundary falls between whole graphemes
            index = sum(len(c) for c in chunks[: chunks.index(chunk) + 1])
            assert is_cut_point(text, index)
        assert not any(0xD800 <= ord(ch) <= 0xDFFF for c in chunks for ch in c)


def test_flags_are_cut_between_pairs_only():
    text = "🇫🇷🇩🇪"
    assert is_cut_point(text, 2)
    assert not is_cut_point(text, 1)
    assert not is_cut_point(text, 3)


def test_utf16_counting_keeps_astral_chunks_under_the_limit():
    text = "😀" * 1500  # 3000 UTF-16 units
    chunks = split_message(text)
    assert all(utf16_len(c) <= 2000 for c in chunks)
    assert "".join(chunks) == text


def test_react_directives_are_extracted_and_removed():
    text, emojis = extract_reactions("Done! [react:🎉] and [react:👍]\nbye")
    assert emojis == ["🎉", "👍"]
    assert "[react" not in text
    assert text.startswith("Done!")
    reply = render_reply("[react:✅] ok")
    assert reply.reactions == ["✅"] and reply.chunks == ["ok"]


def test_react_directive_with_spaces_around_the_emoji():
    """``[react: 🎉]`` (as the original accepts it) reacts and leaves the text."""
    reply = render_reply("Shipped. [react: 🎉]")
    assert reply.reactions == ["🎉"] and reply.chunks == ["Shipped."]
    assert extract_reactions("[react:  👍 ] ok") == ("ok", ["👍"])


def test_status_lines():
    assert format_elapsed(5) == "5s"
    assert format_elapsed(185) == "3m 05s"
    assert format_elapsed(3720) == "1h 02m"
    text = progress_text(tool="Bash", summary="ls `-la`\nrm", writing=False, elapsed_s=12)
    assert "12s" in text and "Bash" in text and "\n🔧" in text
    assert text.count("`") == 2  # the summary cannot break out of its code span
    assert "Writing" in progress_text(tool="", summary="", writing=True, elapsed_s=1)
    assert queued_text(2, False) == "Queued: 2 ahead of you"
    assert queued_text(0, False) is None
    assert "slot" in (queued_text(0, True) or "")


@pytest.mark.parametrize(
    ("reason", "needle"),
    [
        ("timeout", "Timed out"),
        ("rate_limited", "usage limit"),
        ("cancelled", "Stopped"),
        ("crashed", "crashed"),
        ("shutdown", "shutting down"),
        ("kept", "⏸️ details"),
        ("spawn", "could not be started"),
        ("error", "Error"),
    ],
)
def test_failure_text_per_reason(reason, needle):
    text = failure_text(RunFailed(msg_id="m", reason=reason, message="details"))
    assert needle in text


def test_rate_limit_shows_reset_time():
    text = failure_text(
        RunFailed(msg_id="m", reason="rate_limited", message="", retry_at="2026-05-02T15:00:00Z")
    )
    assert "<t:1777734000:t>" in text


def test_plain_text_uses_the_full_limit():
    chunks = split_message("a" * 2000 + "b" * 10)
    assert chunks == ["a" * 2000, "b" * 10]


def test_fence_chunks_with_long_fence_markers_fit():
    text = "````md\n" + ("q" * 99 + "\n") * 50 + "````"
    chunks = split_message(text)
    assert all(utf16_len(c) <= 2000 for c in chunks)
    assert chunks[0].endswith("\n````") and chunks[1].startswith("````md\n")


def test_image_paths_are_found_only_standing_alone():
    from claudeclaw.frontend.render import image_path_candidates, without_paths

    text = "see /a/b.png and /c/d.JPG.\nnot x/e.png nor /f/g.pngx; /h/i.webp"
    assert image_path_candidates(text) == ["/a/b.png", "/h/i.webp"]
    assert without_paths("look: /a/b.png\nbye", ["/a/b.png"]) == "look:\nbye"
