"""stream-json parsing and the verdict, table-driven over the real CLI's recorded outputs."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest

from claudeclaw.claude.stream import (
    AssistantMessage,
    Garbage,
    InitMessage,
    OtherMessage,
    ResultMessage,
    StreamState,
    is_api_throttled,
    is_rate_limited,
    needs_new_session,
    parse_line,
    parse_retry_at,
    summarize_tool,
    translate,
    verdict,
)
from claudeclaw.model import RunDone, RunEvent, RunFailed, RunProgress, RunSession
from tests.fixtures_claude import CLI_SAMPLES

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Expected:
    rc: int
    events: list[RunEvent]
    final: type[RunDone] | type[RunFailed]
    reply: str = ""
    session_id: str = ""
    message_has: str = ""
    cost_usd: float = 0.0
    num_turns: int = 0
    garbage: int = 0
    new_session: bool = False
    extra: dict[str, object] = field(default_factory=dict)


M = "m1"
SAMPLES: dict[str, Expected] = {
    "claude-2.1.197-result-success.json": Expected(
        rc=0,
        events=[RunSession(M, "1c00b330-d2d1-46b2-baee-4d0b92f83e37")],
        final=RunDone,
        reply="FAKE-REPLY user_msgs=1 assistant_msgs=0 last=old 3",
        session_id="1c00b330-d2d1-46b2-baee-4d0b92f83e37",
        cost_usd=0.000235,
        num_turns=1,
    ),
    "claude-2.1.330-result-success.json": Expected(
        rc=0,
        events=[RunSession(M, "0c970f1f-40cd-4fa7-88ab-10c87fd5787f")],
        final=RunDone,
        reply="FAKE-REPLY user_msgs=1 assistant_msgs=0 last=hi",
        session_id="0c970f1f-40cd-4fa7-88ab-10c87fd5787f",
        cost_usd=0.000188,
        num_turns=1,
    ),
    "claude-2.1.330-result-api-error-500.json": Expected(
        rc=1,
        events=[],  # an error result never announces a session
        final=RunFailed,
        message_has="API Error: 500 fake error 500",
    ),
    "claude-2.1.330-result-error-max-turns.json": Expected(
        rc=1, events=[], final=RunFailed, message_has="Reached maximum number of turns (1)"
    ),
    "claude-2.1.330-stream-json-bad-resume.json": Expected(
        rc=1,
        events=[],
        final=RunFailed,
        message_has="No conversation found with session ID: 00000000-0000-4000-8000-000000000000",
        new_session=True,
    ),
    "claude-2.1.330-stream-json-hi.jsonl": Expected(
        rc=0,
        events=[
            RunSession(M, "c0059e33-0a2e-4b6b-963a-176de9807628"),
            RunProgress(M, text="FAKE-REPLY user_msgs=1 assistant_msgs=0 last=hi"),
        ],
        final=RunDone,
        reply="FAKE-REPLY user_msgs=1 assistant_msgs=0 last=hi",
        session_id="c0059e33-0a2e-4b6b-963a-176de9807628",
        cost_usd=0.000188,
        num_turns=1,
    ),
    "claude-2.1.330-stream-json-tool-use.jsonl": Expected(
        rc=0,
        events=[
            RunSession(M, "fce69db2-19f8-4798-9af2-5c54e0bc5933"),
            RunProgress(M, text="Calling Bash."),
            RunProgress(M, tool="Bash", summary="echo hi"),
            RunProgress(M, text="TOOL-RESULT is_error=False: hi"),
        ],
        final=RunDone,
        reply="TOOL-RESULT is_error=False: hi",
        session_id="fce69db2-19f8-4798-9af2-5c54e0bc5933",
        cost_usd=0.000376,
        num_turns=2,
    ),
    # Help text on stdout (a wrong flag set, a wrapper script...): all garbage, no result.
    "claude-2.1.197-help.txt": Expected(
        rc=0, events=[], final=RunFailed, message_has="without a result", extra={"garbage": True}
    ),
    "claude-2.1.330-help.txt": Expected(
        rc=0, events=[], final=RunFailed, message_has="without a result", extra={"garbage": True}
    ),
}


def sample_lines(path: Path) -> list[str]:
    """stdout lines as the CLI printed them (``.json`` samples were pretty-printed later)."""
    text = path.read_text()
    if path.suffix == ".json":
        return [json.dumps(json.loads(text))]
    return text.splitlines()


def run_lines(lines: list[str]) -> tuple[StreamState, list[RunEvent]]:
    state = StreamState()
    events: list[RunEvent] = []
    for line in lines:
        message = parse_line(line)
        if message is not None:
            events += translate(message, state, M)
    return state, events


def test_every_sample_file_has_an_expectation() -> None:
    assert sorted(p.name for p in CLI_SAMPLES.iterdir()) == sorted(SAMPLES)


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_sample_gives_the_right_events_and_verdict(name: str) -> None:
    expected = SAMPLES[name]
    state, events = run_lines(sample_lines(CLI_SAMPLES / name))
    assert events == expected.events
    final = verdict(state, expected.rc, "", msg_id=M, now=NOW)
    assert type(final) is expected.final
    if isinstance(final, RunDone):
        assert final.reply == expected.reply
        assert final.session_id == expected.session_id
        assert final.cost_usd == pytest.approx(expected.cost_usd)
        assert final.num_turns == expected.num_turns
        assert final.context_reset is False
    else:
        assert isinstance(final, RunFailed)
        assert final.reason == "error"
        assert expected.message_has in final.message
        assert final.session_id == ""
    assert needs_new_session(state, expected.rc, "") is expected.new_session
    if expected.extra.get("garbage"):
        assert state.garbage_lines > 10 and state.result is None


def test_success_result_with_nonzero_exit_is_an_error() -> None:
    state, _ = run_lines(sample_lines(CLI_SAMPLES / "claude-2.1.330-stream-json-hi.jsonl"))
    final = verdict(state, 143, "", msg_id=M, now=NOW)
    assert isinstance(final, RunFailed) and final.reason == "error"
    assert final.session_id == "c0059e33-0a2e-4b6b-963a-176de9807628"


def test_unknown_fields_and_garbage_lines_are_tolerated() -> None:
    lines = [
        "",
        "not json at all",
        "[1, 2]",
        '"a string"',
        '{"type": "system", "subtype": "init", "session_id": "s-1", "brand_new": {"x": [1]}}',
        '{"type": "system", "subtype": "status", "status": "thinking"}',
        '{"type": "stream_event", "event": {"type": "message_start"}}',
        '{"type": "assistant", "message": {"content": [{"type": "thinking", "thinking": "hm"},'
        ' {"type": "text", "text": "hello", "citations": null}, "junk",'
        ' {"type": "server_tool_use"}]}, "future": 1}',
        '{"type": "assistant", "message": "not an object"}',
        '{"type": "result", "subtype": "success", "is_error": false, "result": "done",'
        ' "session_id": "s-1", "total_cost_usd": "NaN?", "num_turns": true, "new_key": {}}',
        "{truncated",
    ]
    state, events = run_lines(lines)
    assert events == [RunSession(M, "s-1"), RunProgress(M, text="hello")]
    assert state.garbage_lines == 4
    final = verdict(state, 0, "", msg_id=M, now=NOW)
    assert final == RunDone(msg_id=M, reply="done", session_id="s-1")


def test_parse_line_types() -> None:
    assert parse_line(b"  \n") is None
    assert isinstance(parse_line(b"\xff\xfe"), Garbage)
    assert isinstance(parse_line('{"type":"user"}'), OtherMessage)
    init = parse_line('{"type":"system","subtype":"init","session_id":"x","model":"m","cwd":"/"}')
    assert init == InitMessage(session_id="x", model="m", cwd="/")
    result = parse_line('{"type":"result","is_error":true,"api_error_status":429,"errors":["a"]}')
    assert isinstance(result, ResultMessage)
    assert result.result is None and result.errors == ("a",) and result.api_error_status == 429
    assistant = parse_line('{"type":"assistant","message":{"content":"plain"}}')
    assert assistant == AssistantMessage(texts=("plain",))


@pytest.mark.parametrize(
    ("name", "tool_input", "summary"),
    [
        ("Bash", {"command": "echo hi", "description": "t"}, "echo hi"),
        ("Bash", {"command": "a\n  b\tc"}, "a b c"),
        ("Bash", {"command": "x" * 200}, "x" * 79 + "…"),
        ("Read", {"file_path": "/p/a.py", "limit": 3}, "/p/a.py"),
        ("Edit", {"file_path": "/p/b.py", "old_string": "x"}, "/p/b.py"),
        ("Write", {"file_path": "/p/c.py", "content": "..."}, "/p/c.py"),
        ("Grep", {"pattern": "def .*", "path": "/p"}, "def .*"),
        ("Glob", {"pattern": "**/*.py"}, "**/*.py"),
        ("WebFetch", {"url": "https://x.y", "prompt": "p"}, "https://x.y"),
        ("mcp__thing__do", {"query": "q"}, "q"),
        ("Bash", {}, ""),
        ("TodoWrite", {"todos": []}, ""),
    ],
)
def test_summarize_tool(name: str, tool_input: dict[str, object], summary: str) -> None:
    assert summarize_tool(name, tool_input) == summary
    assert "\n" not in summary and len(summary) <= 80


def _result_state(text: str, status: int | None = None) -> StreamState:
    state = StreamState()
    state.feed(
        ResultMessage(subtype="success", is_error=True, result=text, api_error_status=status)
    )
    return state


@pytest.mark.parametrize(
    "text",
    [
        "You've hit your limit · resets 3pm (UTC)",
        "You\u2019ve hit your limit · resets 3pm",
        "Claude usage: you are OUT OF EXTRA USAGE",
    ],
)
def test_rate_limit_texts_are_detected(text: str) -> None:
    state = _result_state(text)
    assert is_rate_limited(state, "")
    final = verdict(state, 1, "", msg_id=M, now=NOW)
    assert isinstance(final, RunFailed) and final.reason == "rate_limited"


def test_usage_limit_from_stderr_but_a_plain_429_is_not_the_usage_limit() -> None:
    """Only Claude's usage limit (which names a reset) pauses every run; an API 429 is
    one run's trouble: an ordinary failure that says the API was busy."""
    assert is_rate_limited(StreamState(), "You've hit your limit")
    state = _result_state("API Error: Request rejected (429) · slow down", status=429)
    assert not is_rate_limited(state, "") and is_api_throttled(state)
    final = verdict(state, 1, "", msg_id=M, now=NOW)
    assert isinstance(final, RunFailed) and final.reason == "error"
    assert final.retry_at == "" and "rate limited" in final.message
    assert not is_rate_limited(_result_state("API Error: 500"), "")
    assert not is_api_throttled(_result_state("API Error: 500", status=500))


@pytest.mark.parametrize(
    ("text", "retry_at"),
    [
        ("resets 3pm (UTC)", "2026-11-24T15:00:00+00:00"),
        ("resets 11:30pm", "2026-11-24T23:30:00+00:00"),
        ("resets 9am (UTC)", "2026-11-25T09:00:00+00:00"),  # already past today: tomorrow
        ("resets 12am", "2026-11-25T00:00:00+00:00"),
        ("resets 12pm", "2026-11-25T12:00:00+00:00"),  # exactly now: the next one
        ("resets at 15:45", "2026-11-24T15:45:00+00:00"),
        ("resets 3pm (Europe/Berlin)", "2026-11-24T14:00:00+00:00"),
        ("resets 3pm (Not/AZone)", "2026-11-24T15:00:00+00:00"),
        ("no time here", ""),
        ("resets 25pm", ""),
    ],
)
def test_parse_retry_at(text: str, retry_at: str) -> None:
    assert parse_retry_at(f"You've hit your limit · {text}", NOW) == retry_at


def test_rate_limited_failure_carries_retry_at() -> None:
    final = verdict(
        _result_state("You've hit your limit · resets 3pm (UTC)"), 1, "", msg_id=M, now=NOW
    )
    assert isinstance(final, RunFailed)
    assert final.retry_at == "2026-11-24T15:00:00+00:00"
    assert "2026-11-24T15:00:00+00:00" in final.message


def test_empty_stdout_uses_stderr() -> None:
    final = verdict(
        StreamState(),
        1,
        "Error: When using --print, --output-format=stream-json requires --verbose\n",
        msg_id=M,
        now=NOW,
    )
    assert isinstance(final, RunFailed)
    assert final.message == (
        "Claude failed: Error: When using --print, --output-format=stream-json requires --verbose"
    )


def test_killed_by_signal_and_long_errors_are_readable() -> None:
    final = verdict(StreamState(), -9, "", msg_id=M, now=NOW)
    assert isinstance(final, RunFailed) and "killed by signal 9" in final.message
    final = verdict(StreamState(), 1, "E" * 10_000, msg_id=M, now=NOW)
    assert isinstance(final, RunFailed) and len(final.message) < 1600


@pytest.mark.parametrize(
    ("text", "stderr"),
    [
        ("", "No conversation found with session ID: 1234"),
        ("API Error: 400 messages.1.content.0: Invalid `signature` in `thinking` block", ""),
    ],
)
def test_needs_new_session(text: str, stderr: str) -> None:
    state = _result_state(text) if text else StreamState()
    assert needs_new_session(state, 1, stderr)
    assert not needs_new_session(StreamState(), 0, "")


@pytest.mark.parametrize(
    ("stderr", "fix"),
    [
        (
            "--dangerously-skip-permissions cannot be used with root/sudo privileges "
            "for security reasons",
            "ordinary user",
        ),
        ("Not logged in · Please run /login", "/login"),
    ],
)
def test_known_failures_come_with_their_fix(stderr: str, fix: str) -> None:
    from datetime import UTC, datetime

    from claudeclaw.claude.stream import StreamState, verdict

    failed = verdict(StreamState(), 1, stderr, msg_id="m", now=datetime.now(UTC))
    assert isinstance(failed, RunFailed)
    assert "Fix:" in failed.message and fix in failed.message
