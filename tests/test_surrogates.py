"""Lone UTF-16 surrogates (valid JSON, impossible UTF-8) are mended where text enters and
never make a state write fail."""

from __future__ import annotations

import json
from pathlib import Path

from claudeclaw import journal, surrogates
from claudeclaw.claude.stream import ResultMessage, parse_line
from claudeclaw.frontend import wirejson
from claudeclaw.jsonstore import read_json, write_json

HALF = '"cut \\ud83d here, pair \\ud83d\\ude00, low \\udfff"'  # JSON text, as Node writes it
MENDED = "cut \ufffd here, pair \U0001f600, low \ufffd"


def test_mend_replaces_lone_halves_and_keeps_pairs() -> None:
    assert surrogates.mend_text("plain é 😀") == "plain é 😀"
    assert surrogates.mend_text(json.loads(HALF)) == MENDED
    assert surrogates.mend_text("\ud83d\ude00") == "😀"  # both halves as two code points
    document = {"k\udc80": [json.loads(HALF), 3, None]}
    assert surrogates.mend(document) == {"k\ufffd": [MENDED, 3, None]}


def test_loads_mends_only_what_has_surrogate_escapes() -> None:
    assert surrogates.loads(HALF) == MENDED
    assert surrogates.loads(HALF.encode()) == MENDED
    assert surrogates.may_hold_one('"\\uD83D"') and not surrogates.may_hold_one('"\\u00e9"')
    assert surrogates.loads('{"a": "\\u00e9"}') == {"a": "é"}


def test_claude_output_with_half_an_emoji_parses_mended() -> None:
    line = '{"type":"result","subtype":"success","is_error":false,"result":' + HALF + "}"
    message = parse_line(line.encode())
    assert isinstance(message, ResultMessage) and message.result == MENDED
    MENDED.encode("utf-8")  # (what failed before: the reply's nonce, the ledger line)


def test_discord_json_orjson_refuses_is_read_mended_and_written_escaped() -> None:
    assert wirejson.from_json('{"content": ' + HALF + "}") == {"content": MENDED}
    assert wirejson.from_json(b'{"a": 1}') == {"a": 1}
    assert wirejson.to_json({"a": "é"}) == '{"a":"é"}'  # orjson's UTF-8
    assert wirejson.to_json({"a": "x\ud83d"}) == '{"a":"x\\ud83d"}'  # the standard library's


def test_state_writes_survive_a_str_utf8_cannot_hold(tmp_path: Path) -> None:
    odd = {"name": "file\udc80name", "ok": "é"}  # as os.listdir gives an undecodable name
    write_json(tmp_path / "state.json", odd)
    assert read_json(tmp_path / "state.json") == odd
    assert json.loads(journal.encode(odd)) == odd
    assert journal.encode({"ok": "é"}) == '{"ok":"é"}\n'.encode()  # UTF-8 when it can
