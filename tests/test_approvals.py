"""Tool approvals (``security.approvals``): summaries, the broker, and the whole path through
a real in-process supervisor and real workers running the fake ``claude``'s ``PERMIT``
(a ``can_use_tool`` control request), answered through the routing API."""

from __future__ import annotations

import asyncio
import json
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

from structlog.testing import capture_logs

from claudeclaw import control
from claudeclaw.approvals import ApprovalBroker, questions_of, summarize
from claudeclaw.cli import _ask_on_terminal
from claudeclaw.model import (
    RunApproval,
    RunApprovalDone,
    RunDone,
    RunEvent,
    RunFailed,
    SessionKey,
    event_from_dict,
    is_final,
)
from claudeclaw.redaction import register_secret
from claudeclaw.supervisor import Supervisor
from tests.fixtures_daemon import final, started_supervisor

THREAD = SessionKey("520000000000000001")
WRITE = 'PERMIT:Write:{"file_path": "/w/x.txt", "content": "hello"}'


async def start(make_project: Any, **security: Any) -> Supervisor:
    paths = make_project(security={"approvals": True, **security})
    sup = await started_supervisor(paths)
    return sup


Answer = Callable[[RunApproval], Any]


async def run(
    sup: Supervisor, key: SessionKey, prompt: str, answer: Answer | None = None
) -> list[RunEvent]:
    """Submit ``prompt``; each approval request is answered by ``answer`` (None: nobody)."""
    events: list[RunEvent] = []
    async with asyncio.timeout(60):
        async for event in sup.submit(key, prompt, origin="test"):
            events.append(event)
            if isinstance(event, RunApproval) and answer is not None:
                result = answer(event)
                if asyncio.iscoroutine(result):
                    await result
            if is_final(event):
                break
    return events


def of(events: list[RunEvent], kind: type[Any]) -> list[Any]:
    return [e for e in events if isinstance(e, kind)]


# ---- pure parts ----------------------------------------------------------------------------


def test_summaries_show_the_command_the_path_with_size_a_short_diff_and_no_secret() -> None:
    register_secret("sk-very-secret-value-123")
    assert summarize("Bash", {"command": "rm -rf build", "description": "clean"}) == (
        "rm -rf build\n(clean)"
    )
    assert summarize("Write", {"file_path": "/p/a.txt", "content": "a\nb\n"}) == (
        "/p/a.txt (4 bytes, 2 lines)"
    )
    big = summarize("Write", {"file_path": "/p/big", "content": "x" * 50_000})
    assert big == "/p/big (49 KiB, 1 line)"
    diff = summarize("Edit", {"file_path": "/p/a.py", "old_string": "x = 1", "new_string": "x = 2"})
    assert diff == "/p/a.py\n- x = 1\n+ x = 2"
    leaked = summarize("Bash", {"command": "curl -H 'k: sk-very-secret-value-123' x"})
    assert "sk-very-secret" not in leaked and "[redacted]" in leaked
    assert len(summarize("Bash", {"command": "y" * 5000})) <= 900
    questions = questions_of(
        "AskUserQuestion",
        {"questions": [{"question": "Color?", "header": "C", "options": [{"label": "Red"}]}]},
    )
    assert [(q.question, q.header, q.options) for q in questions] == [("Color?", "C", ("Red",))]
    assert questions_of("Write", {"questions": []}) == ()


async def test_the_broker_remembers_per_session_in_a_private_file_and_forgets(
    tmp_path: Path,
) -> None:
    """Allow-for-session is kept in approvals.json (0600) for that key and session id only;
    a new session or /reset forgets it; /permissions revokes one; a second broker (a
    restart) reads it back."""
    sent: list[tuple[SessionKey, dict[str, Any]]] = []
    pushed: list[RunEvent] = []

    def make() -> ApprovalBroker:
        return ApprovalBroker(
            tmp_path / "state" / "approvals.json",
            timeout=lambda: 60.0,
            answer=lambda key, frame: sent.append((key, frame)) or True,
            push=lambda msg_id, event: pushed.append(event) or True,
        )

    broker = make()
    await broker.load()
    frame = {"request_id": "r1", "msg_id": "m1", "tool": "Write", "session_id": "s1"}
    broker.ask(THREAD, frame)
    assert isinstance(pushed[-1], RunApproval) and sent == []
    assert broker.decide("r1", "allow_session", "42") == ""
    assert sent[-1][1] == {"type": "approval_answer", "request_id": "r1", "allow": True}
    assert broker.decide("r1", "deny", "42") == "not waiting"
    await broker.flush()
    path = tmp_path / "state" / "approvals.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text())["keys"][THREAD]["tools"]["Write"]["by"] == "42"

    restarted = make()
    await restarted.load()
    assert [r.tool for r in restarted.remembered(THREAD, "s1")] == ["Write"]
    assert restarted.remembered(THREAD, "s2") == []  # another session: not this one's
    restarted.ask(THREAD, {**frame, "request_id": "r2"})  # answered at once, nobody asked
    assert sent[-1][1]["allow"] is True and sent[-1][1]["request_id"] == "r2"
    assert isinstance(pushed[-1], RunApprovalDone) and pushed[-1].outcome == "allow_session"
    restarted.session_changed(THREAD, "s2")
    assert restarted.remembered(THREAD) == []
    restarted.remember(THREAD, "s2", "Bash", "42")
    assert restarted.revoke(THREAD, "Bash") and not restarted.revoke(THREAD, "Bash")
    restarted.remember(THREAD, "s2", "Edit", "42")
    restarted.forget(THREAD, "reset")
    await restarted.flush()
    assert json.loads(path.read_text())["keys"] == {}


async def test_send_without_a_terminal_denies_and_says_so(monkeypatch: Any, capsys: Any) -> None:
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    event = RunApproval("m", "r", "Write", "/x (1 bytes, 1 line)", timeout_s=60)
    assert await _ask_on_terminal(event) == [{"request_id": "r", "outcome": "deny"}]
    assert "Write denied: approving it needs a terminal" in capsys.readouterr().err


async def test_every_request_and_outcome_is_logged_with_thread_tool_and_user(
    tmp_path: Path,
) -> None:
    """journald fields: ``session_key`` (→ THREAD_ID for threads), TOOL, USER_ID (who
    decided; "" for a timeout)."""
    broker = ApprovalBroker(
        tmp_path / "approvals.json",
        timeout=lambda: 0.05,
        answer=lambda key, frame: True,
        push=lambda msg_id, event: True,
    )
    done = asyncio.Event()
    with capture_logs() as logs:
        for rid in ("a", "b", "c"):
            broker.ask(
                THREAD, {"request_id": rid, "msg_id": "m", "tool": "Bash", "session_id": "s"}
            )
        broker.decide("a", "allow", "41")
        broker.decide("b", "deny", "42")
        asyncio.get_running_loop().call_later(0.2, done.set)
        await done.wait()
    seen = [
        (e["event"], e.get("user_id"), e["tool"], e["session_key"])
        for e in logs
        if e["event"].startswith("approval.")
    ]
    assert seen == [
        ("approval.requested", None, "Bash", THREAD),
        ("approval.requested", None, "Bash", THREAD),
        ("approval.requested", None, "Bash", THREAD),
        ("approval.granted", "41", "Bash", THREAD),
        ("approval.denied", "42", "Bash", THREAD),
        ("approval.timeout", "", "Bash", THREAD),
    ]


async def test_send_on_a_terminal_asks_y_n_and_questions_by_number(monkeypatch: Any) -> None:
    from claudeclaw.model import Question

    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    answers = iter(["s", "", "2"])
    monkeypatch.setattr("builtins.input", lambda prompt="": next(answers))
    event = RunApproval("m", "r", "Bash", "ls", timeout_s=60)
    assert await _ask_on_terminal(event) == [{"request_id": "r", "outcome": "allow_session"}]
    assert await _ask_on_terminal(event) == [{"request_id": "r", "outcome": "deny"}]  # default
    question = RunApproval("m", "q", "AskUserQuestion", "", (Question("Color?", "", ("R", "B")),))
    assert await _ask_on_terminal(question) == [
        {"request_id": "q", "outcome": "answered", "question": 0, "option": 1}
    ]


# ---- through the daemon ------------------------------------------------------------------


async def test_allow_deny_and_allow_for_this_session(make_project: Any) -> None:
    """1. A Write is asked and allowed; 2. the same is asked again and denied (Claude gets
    the denial); 3. "allow for this session"; 4. the next Write is not asked. Approvals
    survive in approvals.json and /reset forgets them."""
    sup = await start(make_project)
    try:
        assert sup.approvals is not None
        allowed = await run(
            sup, THREAD, WRITE, lambda e: sup.decide_approval(e.request_id, "allow", "7")
        )
        asked = of(allowed, RunApproval)
        assert [a.tool for a in asked] == ["Write"]
        assert asked[0].summary == "/w/x.txt (5 bytes, 1 line)" and asked[0].timeout_s == 600
        done = final(allowed)
        assert isinstance(done, RunDone) and done.reply.startswith("PERMISSION allow ")
        assert [(d.outcome, d.by) for d in of(allowed, RunApprovalDone)] == [("allow", "7")]

        denied = await run(
            sup, THREAD, WRITE, lambda e: sup.decide_approval(e.request_id, "deny", "7")
        )
        done = final(denied)
        assert isinstance(done, RunDone)
        assert done.reply.startswith("PERMISSION deny The user denied this tool use (user 7)")

        session = await run(
            sup, THREAD, WRITE, lambda e: sup.decide_approval(e.request_id, "allow_session", "7")
        )
        assert isinstance(final(session), RunDone)
        assert [r.tool for r in sup.remembered_approvals(THREAD)] == ["Write"]

        again = await run(sup, THREAD, WRITE)  # nobody answers: it must not be asked
        assert of(again, RunApproval) == []
        assert [(d.outcome, d.by) for d in of(again, RunApprovalDone)] == [("allow_session", "")]
        assert final(again).reply.startswith("PERMISSION allow ")  # type: ignore[union-attr]
        bash = await run(
            sup, THREAD, "PERMIT:Bash:{}", lambda e: sup.decide_approval(e.request_id, "deny", "7")
        )
        assert [a.tool for a in of(bash, RunApproval)] == ["Bash"]  # only that tool

        await sup.approvals.flush()
        stored = json.loads(sup.paths.approvals_file.read_text())
        assert list(stored["keys"][THREAD]["tools"]) == ["Write"]
        await sup.reset(THREAD)
        assert sup.remembered_approvals(THREAD) == []
    finally:
        await sup.shutdown()


async def test_nobody_answers_within_the_timeout_so_it_is_denied(make_project: Any) -> None:
    sup = await start(make_project, approvalTimeoutSeconds=0.5)
    try:
        events = await run(sup, THREAD, WRITE)
        (done,) = of(events, RunApprovalDone)
        assert done.outcome == "timeout" and done.by == ""
        reply = final(events)
        assert isinstance(reply, RunDone)
        assert "PERMISSION deny Denied: nobody approved this tool use within 0.5 s." in reply.reply
    finally:
        await sup.shutdown()


async def test_several_requests_of_one_turn_are_asked_one_at_a_time_in_order(
    make_project: Any,
) -> None:
    """The fake asks for Write, Bash and Edit at once (parallel tool calls): the person sees
    one request at a time, in that order; the next appears only after the previous one is
    answered."""
    sup = await start(make_project)
    try:
        seen: list[str] = []

        async def answer(event: RunApproval) -> None:
            assert sup.approvals is not None
            seen.append(event.tool)
            assert len(sup.approvals.pending) == 1  # the others wait in the worker
            decision = "deny" if event.tool == "Bash" else "allow"
            sup.decide_approval(event.request_id, decision, "7")

        prompt = 'PERMIT:Write:{"file_path": "a"} PERMIT:Bash:{"command": "ls"} PERMIT:Edit:{}'
        events = await run(sup, THREAD, prompt, answer)
        assert seen == ["Write", "Bash", "Edit"]
        reply = final(events)
        assert isinstance(reply, RunDone)
        parts = reply.reply.split(" | ")
        assert [p.split()[1] for p in parts] == ["allow", "deny", "allow"]
    finally:
        await sup.shutdown()


async def test_a_question_gets_its_chosen_options_back(make_project: Any) -> None:
    sup = await start(make_project)
    try:
        ask = {
            "questions": [
                {
                    "question": "Color?",
                    "header": "C",
                    "options": [{"label": "Red"}, {"label": "Blue"}],
                },
                {"question": "Size?", "header": "S", "options": [{"label": "S"}, {"label": "L"}]},
            ]
        }

        def answer(event: RunApproval) -> None:
            assert [q.options for q in event.questions] == [("Red", "Blue"), ("S", "L")]
            assert sup.decide_approval(event.request_id, "answered", "7", question=0, option=1)
            assert (
                sup.decide_approval(event.request_id, "answered", "7", question=1, option=0) == ""
            )

        events = await run(sup, THREAD, f"PERMIT:AskUserQuestion:{json.dumps(ask)}", answer)
        reply = final(events)
        assert isinstance(reply, RunDone)
        updated = json.loads(reply.reply.removeprefix("PERMISSION allow "))
        assert updated["answers"] == {"Color?": "Blue", "Size?": "S"}
        (done,) = of(events, RunApprovalDone)
        assert done.outcome == "answered" and done.note == "Color?: Blue; Size?: S"
    finally:
        await sup.shutdown()


async def test_a_restart_while_a_request_waits_denies_it_and_ends_the_run(
    make_project: Any,
) -> None:
    """The daemon stops while a Write waits for a person: the request ends "shutdown", the
    run ends as interrupted (``shutdown``, its author is told to send it again), and the
    stop does not wait for the approval timeout."""
    sup = await start(make_project)
    asked = asyncio.Event()
    events: list[RunEvent] = []

    async def follow() -> None:
        async for event in sup.submit(THREAD, WRITE, origin="test"):
            events.append(event)
            if isinstance(event, RunApproval):
                asked.set()

    task = asyncio.create_task(follow())
    async with asyncio.timeout(30):
        await asked.wait()
        await sup.shutdown()
        await task
    (done,) = of(events, RunApprovalDone)
    assert done.outcome == "shutdown"
    reply = final(events)
    assert isinstance(reply, RunFailed) and reply.reason == "shutdown"
    assert "send it again" in reply.message


async def test_stop_while_a_request_waits_ends_the_request_and_the_run(make_project: Any) -> None:
    sup = await start(make_project)
    try:

        async def stop(event: RunApproval) -> None:
            assert await sup.cancel(THREAD)

        events = await run(sup, THREAD, WRITE, stop)
        reply = final(events)
        assert isinstance(reply, RunFailed) and reply.reason == "cancelled"
        assert sup.approvals is not None and sup.approvals.pending == {}
        assert [d.outcome for d in of(events, RunApprovalDone)] == ["deny"]
    finally:
        await sup.shutdown()


async def test_approvals_off_runs_as_before_with_no_prompt(make_project: Any) -> None:
    paths = make_project()
    sup = await started_supervisor(paths)
    try:
        events = await run(sup, THREAD, "ECHO_ARGV")
        argv = json.loads(final(events).reply)  # type: ignore[union-attr]
        assert "--dangerously-skip-permissions" in argv and "--permission-prompt-tool" not in argv
    finally:
        await sup.shutdown()


async def test_approvals_with_warm_sessions_off_still_ask_and_close_the_process(
    make_project: Any,
) -> None:
    sup = await start(make_project)
    await sup.shutdown()
    paths = make_project(security={"approvals": True}, runner={"warmSessions": False})
    sup = await started_supervisor(paths)
    try:
        events = await run(sup, THREAD, "ECHO_ARGV")
        argv = json.loads(final(events).reply)  # type: ignore[union-attr]
        assert argv[argv.index("--permission-prompt-tool") + 1] == "stdio"
        assert "--dangerously-skip-permissions" not in argv
        allowed = await run(
            sup, THREAD, WRITE, lambda e: sup.decide_approval(e.request_id, "allow", "7")
        )
        assert final(allowed).reply.startswith("PERMISSION allow ")  # type: ignore[union-attr]
        assert sup.pool is not None
        await sup.pool.refresh_stats()
        (worker,) = [w for w in sup.pool.status() if w.key == THREAD]
        assert worker.claude_mode == ""  # not kept warm
    finally:
        await sup.shutdown()


async def test_a_worker_killed_while_a_request_waits_ends_it_and_the_retry_asks_again(
    make_project: Any,
) -> None:
    """SIGKILL of the worker while Write waits: the request ends (denied, "the worker
    stopped"); the message is retried once on a new worker, whose request is asked anew."""
    import os
    import signal

    sup = await start(make_project)
    try:
        assert isinstance(final(await run(sup, THREAD, "hello")), RunDone)  # a saved session
        asked: list[RunApproval] = []

        async def answer(event: RunApproval) -> None:
            asked.append(event)
            assert sup.pool is not None
            if len(asked) == 1:
                handle = sup.pool.find(THREAD)
                assert handle is not None
                os.kill(handle.pid, signal.SIGKILL)
            else:
                assert sup.decide_approval(event.request_id, "allow", "7") == ""

        events = await run(sup, THREAD, WRITE, answer)
        assert len(asked) == 2 and asked[0].request_id != asked[1].request_id
        outcomes = [(d.request_id, d.outcome, d.note) for d in of(events, RunApprovalDone)]
        assert outcomes == [
            (asked[0].request_id, "deny", "the worker stopped"),
            (asked[1].request_id, "allow", ""),
        ]
        assert final(events).reply.startswith("PERMISSION allow ")  # type: ignore[union-attr]
    finally:
        await sup.shutdown()


async def test_a_malformed_answer_from_send_is_skipped_and_the_next_one_counts(
    make_project: Any,
) -> None:
    """``claudeclaw send``'s connection carries approval answers. One whose option is not a
    number is logged and skipped; the answer after it on the same connection still
    decides the request (before, the bad frame ended the reading of answers)."""
    sup = await start(make_project)
    try:
        channel = await control.converse(
            sup.paths, {"type": "send", "key": THREAD, "prompt": WRITE}
        )
        try:
            with capture_logs() as logs:
                while (frame := await channel.recv()) is not None:
                    event = event_from_dict(frame["event"]) if frame["type"] == "event" else None
                    if isinstance(event, RunApproval):
                        base = {"type": "approval.answer", "request_id": event.request_id}
                        await channel.send({**base, "outcome": "allow", "option": "two"})
                        await channel.send({**base, "outcome": "allow"})
                    if event is not None and is_final(event):
                        break
        finally:
            await channel.close()
        assert isinstance(event, RunDone) and event.reply.startswith("PERMISSION allow ")
        assert [e["event"] for e in logs if e["event"] == "control.bad_approval_answer"] == [
            "control.bad_approval_answer"
        ]
    finally:
        await sup.shutdown()
