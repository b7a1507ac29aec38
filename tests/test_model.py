"""Run events and ledger entries as plain JSON: the fast converter gives what
``dataclasses.asdict`` gave, and every event comes back as it went."""

from __future__ import annotations

import dataclasses
import json

import pytest

from claudeclaw.model import (
    PendingMessage,
    Question,
    ReplyTo,
    RunApproval,
    RunApprovalDone,
    RunDone,
    RunEvent,
    RunFailed,
    RunProgress,
    RunQueued,
    RunSession,
    RunStarted,
    SessionKey,
    as_plain,
    event_from_dict,
    event_to_dict,
)

EVENTS: list[RunEvent] = [
    RunQueued("m1", 2, waiting_for_slot=True, resets_at="2026-12-01T00:00:00Z"),
    RunStarted("m1", "r1", 42, resumed=True, steered=True),
    RunSession("m1", "s1"),
    RunProgress("m1", text="ok", tool="Bash", summary="ls"),
    RunDone("m1", reply="the answer", session_id="s1", cost_usd=0.5, num_turns=3),
    RunFailed("m1", "timeout", "too slow", retry_at="soon"),
    RunApproval(
        "m1",
        "q1",
        "AskUserQuestion",
        "which?",
        questions=(Question("Pick", "h", ("a", "b")), Question("Again")),
        timeout_s=60.0,
    ),
    RunApprovalDone("m1", "q1", "Bash", "allowed", by="7", note="once"),
]


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: e.kind)
def test_an_event_as_a_dict_is_what_asdict_gave_and_comes_back(event: RunEvent) -> None:
    plain = event_to_dict(event)
    assert plain == dataclasses.asdict(event)
    assert event_from_dict(json.loads(json.dumps(plain))) == event


def test_a_ledger_entry_is_what_asdict_gave_without_an_empty_answer() -> None:
    answer = RunDone("m1", reply="x", session_id="s")
    entry = PendingMessage("m1", SessionKey("global"), "hi", "discord", ReplyTo("1", "2"), "t")
    assert "answer" not in entry.to_json()
    answered = dataclasses.replace(entry, answer=answer)
    assert answered.to_json() == dataclasses.asdict(answered)
    assert PendingMessage.from_json(json.loads(json.dumps(answered.to_json()))) == answered
    shared = {"tools": ["a"]}
    assert as_plain(shared) == shared and as_plain(shared) is not shared  # containers rebuilt
