"""prompt.py and attachments.py: the prompt text and the inbox."""

from __future__ import annotations

import datetime as dt
import os
import stat
import time

import pytest

from claudeclaw.frontend.attachments import (
    AttachmentFacts,
    classify,
    collect_attachments,
    decode_text,
    prune_inbox,
    safe_filename,
)
from claudeclaw.frontend.context import (
    ContextUsage,
    context_window,
    find_transcript,
    format_context,
    project_dir_name,
    read_context_usage,
    usage_bar,
)
from claudeclaw.frontend.prompt import PromptParts, build_prompt, clock_prefix

NOW = dt.datetime(2026, 5, 2, 13, 3, 7, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("offset", "expected"),
    [
        (0, "[2026-05-02 13:03:07 UTC+0]"),
        (60, "[2026-05-02 14:03:07 UTC+1]"),
        (330, "[2026-05-02 18:33:07 UTC+5:30]"),
        (-180, "[2026-05-02 10:03:07 UTC-3]"),
    ],
)
def test_clock_prefix(offset, expected):
    assert clock_prefix(NOW, offset) == expected


def test_prompt_for_a_channel_with_a_name():
    prompt = build_prompt(
        PromptParts(
            now=NOW,
            offset_minutes=60,
            is_dm=False,
            channel_id="600",
            username="alice",
            text="hi there",
            channel_names={"600": "general"},
            attachment_lines=["Image path: /x.png"],
        )
    )
    assert prompt.splitlines() == [
        "[2026-05-02 14:03:07 UTC+1]",
        "[Discord Channel: general]",
        "[Discord from alice]",
        "Message: hi there",
        "Image path: /x.png",
    ]


def test_prompt_for_dm_and_unnamed_thread():
    dm = build_prompt(
        PromptParts(now=NOW, offset_minutes=0, is_dm=True, channel_id="1", username="a", text="x")
    )
    assert dm.splitlines()[1] == "[Discord DM]"
    thread = build_prompt(
        PromptParts(
            now=NOW,
            offset_minutes=0,
            is_dm=False,
            channel_id="800",
            username="a",
            text="x",
            channel_names={"600": "general"},
            thread_parent_id="600",
        )
    )
    assert thread.splitlines()[1] == "[Discord Channel: general]"
    unnamed = build_prompt(
        PromptParts(now=NOW, offset_minutes=0, is_dm=False, channel_id="9", username="a", text="")
    )
    assert unnamed.splitlines()[1] == "[Discord Channel: 9]"
    assert not any(line.startswith("Message:") for line in unnamed.splitlines())


def test_classify_and_safe_filename():
    assert classify(AttachmentFacts("1", "a.png", "image/png", 1)) == "image"
    assert classify(AttachmentFacts("1", "notes.md", "", 1)) == "text"
    assert classify(AttachmentFacts("1", "x", "text/plain", 1)) == "text"
    assert classify(AttachmentFacts("1", "v.ogg", "audio/ogg", 1)) == "voice"
    assert classify(AttachmentFacts("1", "d.pdf", "application/pdf", 1)) == "file"
    assert safe_filename("../../etc/pass wd") == "pass_wd"
    assert safe_filename("..hidden") == "hidden"
    assert safe_filename("") == "file"


async def test_collect_attachments_saves_privately_and_describes(tmp_path):
    inbox = tmp_path / "inbox"

    async def data(payload: bytes):
        return payload

    async def broken() -> bytes:
        raise OSError("boom")

    lines = await collect_attachments(
        [
            (AttachmentFacts("11", "cat pic.png", "image/png", 4), lambda: data(b"\x89PNG")),
            (AttachmentFacts("12", "notes.txt", "text/plain", 20), lambda: data(b"x" * 20)),
            (AttachmentFacts("13", "big.png", "image/png", 10_000), lambda: data(b"")),
            (AttachmentFacts("14", "lost.png", "image/png", 4), broken),
            (AttachmentFacts("15", "voice.ogg", "audio/ogg", 4, is_voice=True), broken),
        ],
        inbox_root=inbox,
        key="800",
        max_bytes=1000,
        max_inline_chars=5,
    )
    image = inbox / "800" / "11-cat_pic.png"
    assert f"Image path: {image}" in lines
    assert image.read_bytes() == b"\x89PNG"
    assert stat.S_IMODE(image.stat().st_mode) == 0o600
    assert stat.S_IMODE((inbox / "800").stat().st_mode) == 0o700
    assert "Attached text file (notes.txt):\nxxxxx...[truncated]" in lines
    assert any("larger than" in line and "big.png" in line for line in lines)
    assert any("downloading it failed" in line for line in lines)
    assert any("voice message" in line for line in lines)
    assert not (inbox / "800" / "13-big.png").exists()


@pytest.mark.parametrize(
    ("data", "ctype"),
    [
        ("héllo wörld\r\n".encode("utf-16"), "text/plain"),  # PowerShell's > (LE + BOM)
        (b"\xff\xfe" + "héllo wörld\r\n".encode("utf-16-le"), ""),
        (b"\xfe\xff" + "héllo wörld\r\n".encode("utf-16-be"), ""),
        ("héllo wörld\r\n".encode("utf-16-le"), "text/plain"),  # no BOM: NULs say so
        ("héllo wörld\r\n".encode("utf-16-be"), ""),
        ("héllo wörld\r\n".encode("utf-8-sig"), ""),
        ("héllo wörld\r\n".encode("utf-32"), ""),
        ("héllo wörld\r\n".encode("latin-1"), "text/plain; charset=ISO-8859-1"),
        ("héllo wörld\r\n".encode("utf-16-le"), 'text/plain; charset="utf-16le"'),
    ],
)
def test_text_attachments_are_decoded_by_bom_and_charset(data: bytes, ctype: str) -> None:
    assert decode_text(data, ctype) == "héllo wörld\r\n"


def test_nul_bytes_and_garbage_never_fail_decoding() -> None:
    assert decode_text(b"a\x00b\xffc") == "ab\ufffdc"
    assert decode_text(b"abc", "text/plain; charset=no-such-codec") == "abc"
    assert decode_text(b"", "text/plain; charset=utf-16") == ""
    assert "\x00" not in build_prompt(
        PromptParts(
            now=NOW,
            offset_minutes=0,
            is_dm=True,
            channel_id="1",
            username="a\x00b",
            text="x\x00y",
            attachment_lines=["Attached text file (n\x00.txt):\nz"],
        )
    )


async def test_a_utf16_attachment_is_inlined_as_text(tmp_path):
    """A UTF-16 file with a BOM (Windows) is inlined as its text, without NULs."""
    payload = "Get-Process output\r\n".encode("utf-16")

    async def data() -> bytes:
        return payload

    lines = await collect_attachments(
        [(AttachmentFacts("21", "ps.txt", "text/plain", len(payload)), data)],
        inbox_root=tmp_path / "inbox",
        key="global",
        max_bytes=1000,
        max_inline_chars=1000,
    )
    assert lines[0] == "Attached text file (ps.txt):\nGet-Process output\r\n"
    assert (tmp_path / "inbox" / "global" / "21-ps.txt").read_bytes() == payload


def test_prune_inbox(tmp_path):
    key_dir = tmp_path / "inbox" / "global"
    key_dir.mkdir(parents=True)
    old = key_dir / "1-old.png"
    new = key_dir / "2-new.png"
    old.write_bytes(b"o")
    new.write_bytes(b"n")
    two_days_ago = time.time() - 48 * 3600
    os.utime(old, (two_days_ago, two_days_ago))
    assert prune_inbox(tmp_path / "inbox", 24) == 1
    assert not old.exists() and new.exists()
    os.utime(new, (two_days_ago, two_days_ago))
    assert prune_inbox(tmp_path / "inbox", 24) == 1
    assert not key_dir.exists()
    assert prune_inbox(tmp_path / "missing", 24) == 0


def test_context_window_table_and_bar():
    assert context_window("claude-opus-5-20260101") == 1_000_000
    assert context_window("claude-sonnet-4-5") == 200_000
    assert context_window("") == 200_000
    assert usage_bar(50, 100) == "█" * 10 + "░" * 10
    assert usage_bar(500, 100) == "█" * 20


def test_transcript_path_and_usage(tmp_path):
    cwd = tmp_path / "my.project_dir"
    assert project_dir_name("/home/a.b/c_d") == "-home-a-b-c-d"
    config = tmp_path / "claude"
    folder = config / "projects" / project_dir_name(cwd)
    folder.mkdir(parents=True)
    sid = "0b9a6c7e-1111-2222-3333-444455556666"
    lines = [
        '{"type":"user","message":{"content":"hi"}}',
        '{"type":"assistant","message":{"model":"claude-opus-5","usage":'
        '{"input_tokens":10,"cache_creation_input_tokens":100,"cache_read_input_tokens":1000,'
        '"output_tokens":5}}}',
        "not json",
        '{"type":"assistant","message":{"model":"claude-opus-5","usage":'
        '{"input_tokens":20,"cache_creation_input_tokens":200,"cache_read_input_tokens":2000,'
        '"output_tokens":7}}}',
    ]
    (folder / f"{sid}.jsonl").write_text("\n".join(lines) + "\n")
    path = find_transcript(sid, cwd, config)
    assert path == folder / f"{sid}.jsonl"
    usage = read_context_usage(path)
    assert usage == ContextUsage(20, 200, 2000, 12, 2, "claude-opus-5")
    text = format_context(usage, session_id=sid, fallback_model="")
    assert "2,220 / 1,000,000" in text and sid[:8] in text
    # found under another project dir too (a thread running elsewhere)
    assert find_transcript(sid, tmp_path / "elsewhere", config) == path
    assert find_transcript("../etc", cwd, config) is None
