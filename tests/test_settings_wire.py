"""The supervisor's settings survive the trip to a worker exactly (but the Discord token)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from claudeclaw import settings_wire
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
                "notifyChannelId": "789",
            },
            "heartbeat": {
                "enabled": True,
                "interval": 30,
                "excludeWindows": [{"start": "22:00", "end": "07:00", "days": [5]}],
            },
            "jobsDir": "jobs",
            "telegram": {"token": "123:abc"},
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
    assert back.heartbeat.exclude_windows[0].days == (5,) and back.jobs_dir == "jobs"
    assert back.discord.notify_channel_id == "789" and back.inert_keys == settings.inert_keys


def test_defaults_round_trip() -> None:
    assert settings_from_wire(json.loads(json.dumps(settings_to_wire(Settings())))) == Settings()


def test_a_frame_that_is_not_settings_is_refused() -> None:
    with pytest.raises(IpcError, match="settings"):
        settings_from_wire(["not", "an", "object"])


def test_prepare_resolves_every_settings_type_so_a_forked_worker_decodes_without_it() -> None:
    """The fork server calls prepare() before forking; a worker's decode then resolves no
    type hints of its own (that was ~90 % of a new worker's settings decode)."""
    settings_wire._fields.cache_clear()
    settings_wire.prepare()
    resolved = settings_wire._fields.cache_info().currsize
    assert resolved >= 5  # Settings and its sections
    wire = json.loads(json.dumps(settings_to_wire(parse_settings({"model": "opus"}))))
    misses = settings_wire._fields.cache_info().misses
    assert settings_from_wire(wire).model == "opus"
    assert settings_wire._fields.cache_info().misses == misses
