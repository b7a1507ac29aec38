"""Tool approvals on Discord: the real supervisor and discord.py against the fake Discord,
real workers running the fake ``claude`` (its ``PERMIT`` asks ``can_use_tool``). Buttons are
pressed through the fake's MESSAGE_COMPONENT interactions."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest

from claudeclaw.frontend.approvals import GONE, PREFIX, REFUSED
from claudeclaw.paths import ProjectPaths
from claudeclaw.supervisor import Supervisor
from tests.fake_discord import FakeDiscord
from tests.fixtures_daemon import SupervisorStarter, discord_settings
from tests.fixtures_discord import containing

WRITE = 'PERMIT:Write:{"file_path": "/w/x.txt", "content": "hello"}'
DaemonFactory = Callable[..., Any]


@pytest.fixture
def approving_daemon(
    make_project: Callable[..., ProjectPaths],
    fake_discord: FakeDiscord,
    start_supervisor: SupervisorStarter,
) -> DaemonFactory:
    """``await approving_daemon(**security)``: a supervisor with approvals on, on the fake."""

    async def start(**security: Any) -> Supervisor:
        paths = make_project(
            discord=discord_settings(fake_discord), security={"approvals": True, **security}
        )
        return await start_supervisor(paths, discord=True)

    return start


async def request_message(fake: FakeDiscord, channel: str, tool: str = "Write") -> dict[str, Any]:
    return await fake.wait_for_message(
        channel,
        lambda m: f"wants to use `{tool}`" in m["content"] and bool(fake.buttons(m)),
        timeout=30,
    )


def button(fake: FakeDiscord, message: dict[str, Any], label: str) -> str:
    (found,) = [b["custom_id"] for b in fake.buttons(message) if b["label"] == label]
    assert found.startswith(PREFIX)
    return str(found)


async def settled(fake: FakeDiscord, message: dict[str, Any], needle: str) -> dict[str, Any]:
    """The request message once edited to its outcome (buttons gone)."""
    return await fake.wait_until(
        lambda: message if needle in message["content"] and not message["components"] else None,
        timeout=30,
        what=f"request edited to {needle!r}",
    )


async def test_allow_by_an_allowlisted_user_and_a_stranger_is_refused(
    approving_daemon: DaemonFactory, fake_discord: FakeDiscord
) -> None:
    """1. Alice asks for a Write in a thread. 2. Bob (not allowlisted) presses Allow.
    3. Alice presses Allow.
    Result: one request message with the tool, its path and size and three buttons; ⏸️ on
    Alice's message while it waits; Bob gets an ephemeral refusal and nothing is decided;
    Alice's press lets the tool run; the message says who allowed it, without buttons."""
    await approving_daemon()
    thread = fake_discord.listen_thread_id
    said = await fake_discord.user_says(thread, WRITE)
    request = await request_message(fake_discord, thread)
    assert "/w/x.txt (5 bytes, 1 line)" in request["content"]
    assert [b["label"] for b in fake_discord.buttons(request)] == [
        "Allow",
        "Allow for this session",
        "Deny",
    ]
    await fake_discord.wait_for_reaction(said["id"], "⏸️", timeout=10)

    pressed, _ = await fake_discord.press_button(
        thread, request["id"], button(fake_discord, request, "Allow"), user=fake_discord.bob
    )
    refusal = await fake_discord.wait_for_callback(pressed)
    assert refusal["type"] == 4 and refusal["data"]["content"] == REFUSED
    assert refusal["data"]["flags"] & 64  # ephemeral: only Bob sees it
    assert fake_discord.buttons(request)  # still waiting

    allow = button(fake_discord, request, "Allow")
    pressed, _ = await fake_discord.press_button(thread, request["id"], allow)
    assert (await fake_discord.wait_for_callback(pressed))["type"] == 6
    reply = await fake_discord.wait_for_message(thread, containing("PERMISSION allow"), timeout=30)
    assert json.loads(reply["content"].removeprefix("PERMISSION allow "))["file_path"] == "/w/x.txt"
    await settled(fake_discord, request, f"✅ `Write` allowed by <@{fake_discord.alice['id']}>")
    await fake_discord.wait_for_reaction(said["id"], "✅", timeout=10)

    late, _ = await fake_discord.press_button(thread, request["id"], allow)  # answered already
    late_answer = await fake_discord.wait_for_callback(late)
    assert late_answer["data"]["content"] == GONE and late_answer["data"]["flags"] & 64


async def test_a_press_before_the_bot_knows_its_request_message_is_taken(
    approving_daemon: DaemonFactory, fake_discord: FakeDiscord
) -> None:
    """Discord shows the request message (the buttons can be pressed) before the bot's POST
    is answered: a press in that window decides the request, it is not refused as answered
    already (this was a race: under load the press got "gone" and the run waited)."""
    await approving_daemon()
    thread = fake_discord.listen_thread_id
    fake_discord.created_gate = asyncio.Event()  # the bot learns of its messages late
    await fake_discord.user_says(thread, WRITE)
    request = await request_message(fake_discord, thread)
    pressed, _ = await fake_discord.press_button(
        thread, request["id"], button(fake_discord, request, "Allow")
    )
    answer = await fake_discord.wait_for_callback(pressed, timeout=30)
    assert answer["type"] == 6, answer  # taken (deferred: the follower edits the message)
    fake_discord.created_gate.set()
    await fake_discord.wait_for_message(thread, containing("PERMISSION allow"), timeout=30)
    await settled(fake_discord, request, f"✅ `Write` allowed by <@{fake_discord.alice['id']}>")


async def test_deny_then_allow_for_this_session_then_status_and_permissions(
    approving_daemon: DaemonFactory, fake_discord: FakeDiscord
) -> None:
    """Deny: Claude is told, the message says who denied. Allow for this session: the next
    Write is not asked; /status lists it; /permissions revoke:Write makes it asked again."""
    await approving_daemon()
    thread = fake_discord.listen_thread_id
    alice = f"<@{fake_discord.alice['id']}>"
    await fake_discord.user_says(thread, WRITE + " one")
    request = await request_message(fake_discord, thread)
    await fake_discord.press_button(thread, request["id"], button(fake_discord, request, "Deny"))
    await fake_discord.wait_for_message(
        thread, containing("PERMISSION deny The user denied this tool use"), timeout=30
    )
    await settled(fake_discord, request, f"🚫 `Write` denied by {alice}")

    await fake_discord.user_says(thread, WRITE + " two")
    second = await fake_discord.wait_for_message(
        thread,
        lambda m: m["id"] != request["id"] and bool(fake_discord.buttons(m)),
        timeout=30,
    )
    await fake_discord.press_button(
        thread, second["id"], button(fake_discord, second, "Allow for this session")
    )
    await settled(fake_discord, second, f"✅ `Write` allowed for this session by {alice}")
    await fake_discord.wait_for_message(thread, containing("PERMISSION allow"), timeout=30)

    def allowed_replies() -> list[dict[str, Any]]:
        return [m for m in fake_discord.bot_messages(thread) if "PERMISSION allow" in m["content"]]

    before = len(fake_discord.bot_messages(thread))
    await fake_discord.user_says(thread, WRITE + " three")
    await fake_discord.wait_until(
        lambda: len(allowed_replies()) == 2, timeout=30, what="the third Write answered"
    )
    # answered without a new request message
    assert not [m for m in fake_discord.bot_messages(thread)[before:] if fake_discord.buttons(m)]

    status_id, _ = await fake_discord.slash_command(thread, "status")
    status = await fake_discord.wait_for_callback(status_id)
    assert f"Allowed for this session: `Write` ({alice})" in status["data"]["content"]
    revoke_id, _ = await fake_discord.slash_command(
        thread, "permissions", [{"name": "revoke", "type": 3, "value": "write"}]
    )
    revoked = await fake_discord.wait_for_callback(revoke_id)
    assert revoked["data"]["content"].startswith("Revoked: `Write`.")

    await fake_discord.user_says(thread, WRITE + " four")
    fourth = await fake_discord.wait_for_message(
        thread,
        lambda m: m["id"] not in (request["id"], second["id"]) and bool(fake_discord.buttons(m)),
        timeout=30,
    )
    assert "wants to use `Write`" in fourth["content"]  # asked again


async def test_no_answer_in_time_is_a_denial_and_the_message_says_so(
    approving_daemon: DaemonFactory, fake_discord: FakeDiscord
) -> None:
    await approving_daemon(approvalTimeoutSeconds=1)
    thread = fake_discord.listen_thread_id
    await fake_discord.user_says(thread, WRITE)
    request = await request_message(fake_discord, thread)
    assert "Denied if nobody answers within 1s" in request["content"]
    await settled(fake_discord, request, "⌛ `Write` denied: nobody answered within 1s")
    await fake_discord.wait_for_message(
        thread,
        containing("PERMISSION deny Denied: nobody approved this tool use within 1 s."),
        timeout=30,
    )


async def test_a_question_shows_its_options_as_buttons_and_sends_the_choice_back(
    approving_daemon: DaemonFactory, fake_discord: FakeDiscord
) -> None:
    await approving_daemon()
    thread = fake_discord.listen_thread_id
    ask = {
        "questions": [
            {"question": "Color?", "header": "C", "options": [{"label": "Red"}, {"label": "Blue"}]}
        ]
    }
    await fake_discord.user_says(thread, f"PERMIT:AskUserQuestion:{json.dumps(ask)}")
    request = await fake_discord.wait_for_message(
        thread,
        lambda m: "Claude asks" in m["content"] and bool(fake_discord.buttons(m)),
        timeout=30,
    )
    assert "**C** · Color?" in request["content"]
    labels = [b["label"] for b in fake_discord.buttons(request)]
    assert labels == ["Red", "Blue", "Don't answer"]
    await fake_discord.press_button(thread, request["id"], button(fake_discord, request, "Blue"))
    reply = await fake_discord.wait_for_message(thread, containing("PERMISSION allow"), timeout=30)
    assert json.loads(reply["content"].removeprefix("PERMISSION allow "))["answers"] == {
        "Color?": "Blue"
    }
    await settled(fake_discord, request, "💬 Answered by")
    assert "Color?: Blue" in request["content"]


async def test_a_restart_while_a_request_waits_denies_it_and_tells_the_user(
    approving_daemon: DaemonFactory, fake_discord: FakeDiscord
) -> None:
    sup = await approving_daemon()
    thread = fake_discord.listen_thread_id
    said = await fake_discord.user_says(thread, WRITE)
    request = await request_message(fake_discord, thread)
    await sup.shutdown()
    await settled(fake_discord, request, "🚫 `Write` denied: claudeclaw is restarting")
    told = await fake_discord.wait_for_message(
        thread,
        lambda m: (
            m["id"] != request["id"]
            and "PERMISSION" not in m["content"]
            and m.get("message_reference", {}).get("message_id") == said["id"]
        ),
        timeout=10,
    )
    assert told["content"].startswith("🔌 claudeclaw is shutting down")
    assert "send it again" in told["content"]
