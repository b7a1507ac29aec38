"""Tool approvals with the pinned real Claude CLI (``--permission-prompt-tool stdio``) behind
the whole daemon (in-process supervisor, real workers), against the fake Anthropic API,
whose ``TOOL:Write:<json>`` makes the model write a file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from claudeclaw.model import RunApproval, RunApprovalDone, RunDone, SessionKey
from claudeclaw.supervisor import Supervisor
from tests.fixtures_daemon import SupervisorStarter, final
from tests.test_approvals import of, run

pytestmark = pytest.mark.realcli

THREAD = SessionKey("530000000000000001")


@pytest.fixture
def real_daemon(
    make_project: Any,
    real_claude_path: Path,
    real_claude_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    start_supervisor: SupervisorStarter,
) -> Any:
    """``await real_daemon(**security)``: approvals on, the real CLI offline."""
    for name, value in real_claude_env.items():
        monkeypatch.setenv(name, value)

    async def start(**security: Any) -> Supervisor:
        paths = make_project(
            runner={"claudePath": str(real_claude_path)},
            security={"approvals": True, **security},
        )
        return await start_supervisor(paths)

    return start


def write(path: Path, content: str = "hello") -> str:
    return "TOOL:Write:" + json.dumps({"file_path": str(path), "content": content})


async def test_allowed_write_writes_the_file(real_daemon: Any) -> None:
    sup = await real_daemon()
    target = sup.paths.root / "allowed.txt"
    events = await run(
        sup, THREAD, write(target), lambda e: sup.decide_approval(e.request_id, "allow", "7")
    )
    (asked,) = of(events, RunApproval)
    assert asked.tool == "Write" and asked.summary == f"{target} (5 bytes, 1 line)"
    reply = final(events)
    assert isinstance(reply, RunDone) and reply.reply.startswith("TOOL-RESULT is_error=False")
    assert target.read_text() == "hello"


async def test_denied_write_writes_nothing_and_claude_is_told(real_daemon: Any) -> None:
    sup = await real_daemon()
    target = sup.paths.root / "denied.txt"
    events = await run(
        sup, THREAD, write(target), lambda e: sup.decide_approval(e.request_id, "deny", "7")
    )
    reply = final(events)
    assert isinstance(reply, RunDone)
    assert reply.reply.startswith(
        "TOOL-RESULT is_error=True: The user denied this tool use (user 7)."
    )
    assert not target.exists()


async def test_allowed_for_the_session_the_second_write_is_not_asked(real_daemon: Any) -> None:
    sup = await real_daemon()
    first, second = sup.paths.root / "one.txt", sup.paths.root / "two.txt"
    events = await run(
        sup,
        THREAD,
        write(first),
        lambda e: sup.decide_approval(e.request_id, "allow_session", "7"),
    )
    assert len(of(events, RunApproval)) == 1 and first.read_text() == "hello"
    again = await run(sup, THREAD, write(second, "again"))  # nobody would answer
    assert of(again, RunApproval) == []
    assert [d.outcome for d in of(again, RunApprovalDone)] == ["allow_session"]
    assert second.read_text() == "again"


async def test_no_answer_in_time_denies_the_write(real_daemon: Any) -> None:
    sup = await real_daemon(approvalTimeoutSeconds=1.5)
    target = sup.paths.root / "late.txt"
    events = await run(sup, THREAD, write(target))
    assert [d.outcome for d in of(events, RunApprovalDone)] == ["timeout"]
    reply = final(events)
    assert isinstance(reply, RunDone)
    assert "Denied: nobody approved this tool use within 1.5 s." in reply.reply
    assert not target.exists()


async def test_a_question_reaches_the_host_and_the_choice_reaches_the_model(
    real_daemon: Any,
) -> None:
    """AskUserQuestion comes through ``can_use_tool`` (2.1.330: ``requires_user_interaction``);
    the chosen label goes back as ``answers`` and the model reads it in the tool result."""
    sup = await real_daemon()
    ask = {
        "questions": [
            {
                "question": "Which color?",
                "header": "Color",
                "options": [
                    {"label": "Red", "description": "warm"},
                    {"label": "Blue", "description": "cool"},
                ],
                "multiSelect": False,
            }
        ]
    }

    def choose(event: RunApproval) -> None:
        assert event.questions[0].options == ("Red", "Blue")
        sup.decide_approval(event.request_id, "answered", "7", question=0, option=1)

    events = await run(sup, THREAD, f"TOOL:AskUserQuestion:{json.dumps(ask)}", choose)
    reply = final(events)
    assert isinstance(reply, RunDone)
    assert '"Which color?"="Blue"' in reply.reply
