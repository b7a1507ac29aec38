"""The supervisor's settings survive the trip to a worker exactly (but the Discord token)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from claudeclaw.config import Settings, parse_settings
from claudeclaw.errors import IpcError
from claudeclaw.settings_wire import settings_from_wire, settings_to_wire


def test_every_setting_survives_the_frame_but_the_token() -> None:
    settings = parse_settings(
        {
            "model": "opus",
            "api": "sk-test-api",
            "timezone": "Europe/Berlin",
            "security": {"level": "strict", "allowedTools": ["Read"], "disallowedTools": ["Bash"]},
            "discord": {
                "token": "discord-secret-token",
                "allowedUserIds": ["123"],
                "listenChannels": ["456"],
                "channelNames": {"456": "general"},
                "progressAfterSeconds": 7,
            },
            "runner": {"claudePath": "/bin/claude", "coalesceQueuedMessages": True},
            "limits": {"maxConcurrentRuns": 3, "workerIdleSeconds": 12},
        },
        environ={},
        source=Path("/p/settings.json"),
    )
    frame = json.loads(json.dumps(settings_to_wire(settings)))  # as the IPC carries it
    assert "discord-secret-token" not in json.dumps(frame)
    back = settings_from_wire(frame)
    assert back.discord.token == ""
    assert back == dataclasses.replace(
        settings, discord=dataclasses.replace(settings.discord, token="")
    )
    assert back.discord.channel_names["456"] == "general"
    assert back.discord.progress_after_seconds == 7.0
    assert back.api == "sk-test-api" and back.source == Path("/p/settings.json")
    assert back.limits.max_concurrent_runs == 3 and back.runner.coalesce_queued_messages


def test_defaults_round_trip() -> None:
    assert settings_from_wire(json.loads(json.dumps(settings_to_wire(Settings())))) == Settings()


def test_a_frame_that_is_not_settings_is_refused() -> None:
    with pytest.raises(IpcError, match="settings"):
        settings_from_wire(["not", "an", "object"])
