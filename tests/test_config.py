"""settings.json loading: values, every error path, ids, tokens, starter file."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import pytest

from claudeclaw.config import (
    LimitSettings,
    RunnerSettings,
    Settings,
    load_settings,
    parse_settings,
    starter_document,
    write_starter_settings,
)
from claudeclaw.errors import ConfigError
from claudeclaw.paths import ProjectPaths

TOKEN = "MTIzNDU2Nzg5MDEy.secret-token-value.xyz"
NO_ENV: dict[str, str] = {}


def write(tmp_path: Path, data: Any) -> Path:
    path = tmp_path / "settings.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data, indent=2))
    return path


def load(tmp_path: Path, data: Any, env: dict[str, str] | None = None) -> Settings:
    return load_settings(write(tmp_path, data), NO_ENV if env is None else env)


def error_of(tmp_path: Path, data: Any, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, data, env)
    return str(info.value)


# ---- defaults and a full file ----------------------------------------------------------


def test_missing_file_gives_defaults(tmp_path: Path) -> None:
    s = load_settings(tmp_path / "nope.json", NO_ENV)
    assert s.source is None
    assert s.security.level == "moderate"
    assert s.discord.allowed_user_ids == ()
    assert s.discord.allow_everyone is False
    assert s.discord.token == "" and s.discord.token_source == ""
    assert s.runner == RunnerSettings()
    assert s.timeouts["default"] == 5
    assert s.warnings == ()


def test_missing_file_still_takes_env_token(tmp_path: Path) -> None:
    s = load_settings(tmp_path / "nope.json", {"DISCORD_TOKEN": TOKEN})
    assert s.discord.token == TOKEN and s.discord.token_source == "env"


def test_full_file(tmp_path: Path) -> None:
    s = load(
        tmp_path,
        {
            "model": "opus",
            "api": "sk-ant-api-key-123456",
            "timezone": "UTC+2",
            "security": {"level": "strict", "allowedTools": ["Bash(git:*)"], "disallowedTools": []},
            "timeouts": {"default": 10, "job": 45.5},
            "discord": {
                "token": TOKEN,
                "allowedUserIds": ["111", 222],
                "listenChannels": ["333"],
                "listenGuilds": [444],
                "channelNames": {"333": "general", "555": "random"},
                "imageOutputRoots": ["/srv/images"],
                "sessionScope": "channel",
                "removeSessionOnArchive": True,
                "progressAfterSeconds": 0,
                "progressEditIntervalSeconds": 2.5,
                "maxAttachmentBytes": 1024,
                "maxInlineTextChars": 100,
                "inboxMaxAgeHours": 24,
            },
            "runner": {
                "claudePath": "/opt/claude",
                "idleTimeoutSeconds": 120,
                "hardTimeoutSeconds": 900,
                "killGraceSeconds": 2,
                "appendSystemPrompt": "Be brief.",
            },
            "limits": {
                "maxConcurrentRuns": 3,
                "maxWorkers": 10,
                "workerIdleSeconds": 60,
                "shutdownGraceSeconds": 5,
            },
        },
    )
    assert s.model == "opus"
    assert s.timezone_offset_minutes == 120
    assert s.security.level == "strict"
    assert s.security.allowed_tools == ("Bash(git:*)",)
    assert s.timeouts == {"default": 10, "telegram": 5, "heartbeat": 15, "job": 45.5}
    d = s.discord
    assert d.token == TOKEN and d.token_source == "settings"
    assert d.allowed_user_ids == ("111", "222")
    assert d.listen_channels == ("333",) and d.listen_guilds == ("444",)
    assert dict(d.channel_names) == {"333": "general", "555": "random"}
    assert d.image_output_roots == ("/srv/images",)
    assert d.session_scope == "channel" and d.remove_session_on_archive is True
    assert d.progress_after_seconds == 0 and d.progress_edit_interval_seconds == 2.5
    assert (d.max_attachment_bytes, d.max_inline_text_chars, d.inbox_max_age_hours) == (
        1024,
        100,
        24,
    )
    assert s.runner == RunnerSettings("/opt/claude", 120, 900, 2, "Be brief.")
    assert s.limits == LimitSettings(3, 10, 60, 5)
    assert s.warnings == ()


# ---- errors ----------------------------------------------------------------------------


def test_json_syntax_error_names_line_and_column(tmp_path: Path) -> None:
    text = '{\n  "model": "opus",\n  "discord": {"token": "x",}\n}\n'
    message = error_of(tmp_path, text)
    assert "settings.json:3:" in message
    assert "line 3, column" in message
    assert "Fix:" in message


def test_top_level_must_be_object(tmp_path: Path) -> None:
    assert "expected an object" in error_of(tmp_path, "[1]")


@pytest.mark.parametrize(
    ("doc", "path", "shown", "expected"),
    [
        ({"model": 5}, "model", "5", "a string"),
        ({"security": {"level": "paranoid"}}, "security.level", '"paranoid"', '"locked"'),
        ({"security": "strict"}, "security", '"strict"', "an object"),
        ({"security": {"allowedTools": ["Read", 3]}}, "security.allowedTools[1]", "3", "string"),
        ({"timeouts": {"default": 0}}, "timeouts.default", "0", "> 0"),
        ({"timeouts": {"job": "30"}}, "timeouts.job", '"30"', "a number"),
        ({"timezoneOffsetMinutes": "60"}, "timezoneOffsetMinutes", '"60"', "minutes"),
        (
            {"discord": {"allowedUserIds": ["1", "2", "abc"]}},
            "discord.allowedUserIds[2]",
            '"abc"',
            "digits",
        ),
        ({"discord": {"allowedUserIds": [-1]}}, "discord.allowedUserIds[0]", "-1", "digits"),
        ({"discord": {"allowedUserIds": [1.5]}}, "discord.allowedUserIds[0]", "1.5", "digits"),
        ({"discord": {"allowedUserIds": [True]}}, "discord.allowedUserIds[0]", "true", "digits"),
        ({"discord": {"allowedUserIds": "123"}}, "discord.allowedUserIds", '"123"', "an array"),
        (
            {"discord": {"listenChannels": ["x1"]}},
            "discord.listenChannels[0]",
            '"x1"',
            "channel id",
        ),
        ({"discord": {"listenGuilds": [None]}}, "discord.listenGuilds[0]", "null", "guild"),
        (
            {"discord": {"channelNames": {"abc": "x"}}},
            'discord.channelNames["abc"]',
            '"abc"',
            "channel id",
        ),
        ({"discord": {"channelNames": {"1": 2}}}, 'discord.channelNames["1"]', "2", "a string"),
        (
            {"discord": {"imageOutputRoots": ["rel/dir"]}},
            "discord.imageOutputRoots[0]",
            '"rel/dir"',
            "absolute",
        ),
        ({"discord": {"sessionScope": "guild"}}, "discord.sessionScope", '"guild"', '"thread"'),
        ({"threads": {"workspace": "git"}}, "threads.workspace", '"git"', '"worktree"'),
        ({"threads": "worktree"}, "threads", '"worktree"', "an object"),
        (
            {"discord": {"removeSessionOnArchive": "yes"}},
            "discord.removeSessionOnArchive",
            '"yes"',
            "true or false",
        ),
        (
            {"discord": {"progressEditIntervalSeconds": 0.5}},
            "discord.progressEditIntervalSeconds",
            "0.5",
            ">= 1",
        ),
        (
            {"discord": {"maxAttachmentBytes": 2.5}},
            "discord.maxAttachmentBytes",
            "2.5",
            "whole number",
        ),
        ({"runner": {"claudePath": ""}}, "runner.claudePath", '""', "non-empty"),
        ({"runner": {"idleTimeoutSeconds": -5}}, "runner.idleTimeoutSeconds", "-5", "> 0"),
        ({"runner": {"hardTimeoutSeconds": True}}, "runner.hardTimeoutSeconds", "true", "a number"),
        ({"runner": {"killGraceSeconds": 9999}}, "runner.killGraceSeconds", "9999", "<= 300"),
        ({"limits": {"maxConcurrentRuns": 0}}, "limits.maxConcurrentRuns", "0", "from 1 to 64"),
        ({"limits": {"maxWorkers": 100000}}, "limits.maxWorkers", "100000", "from 1 to 1024"),
        ({"runner": {"busyPolicy": "merge"}}, "runner.busyPolicy", '"merge"', '"steer"'),
        ({"runner": {"warmSessions": "yes"}}, "runner.warmSessions", '"yes"', "true or false"),
        ({"limits": {"maxWarmSessions": -1}}, "limits.maxWarmSessions", "-1", "from 0 to 1024"),
        ({"limits": {"warmIdleSeconds": -1}}, "limits.warmIdleSeconds", "-1", "> 0"),
        (
            {"limits": {"shutdownGraceSeconds": "30"}},
            "limits.shutdownGraceSeconds",
            '"30"',
            "a number",
        ),
    ],
)
def test_bad_value_names_path_value_expectation_and_fix(
    tmp_path: Path, doc: dict[str, Any], path: str, shown: str, expected: str
) -> None:
    message = error_of(tmp_path, doc)
    line = next(line for line in message.splitlines() if line.strip().startswith(path))
    assert f"got {shown}" in line
    assert expected in line
    assert "Fix:" in line


def test_all_errors_reported_together_one_per_line(tmp_path: Path) -> None:
    message = error_of(
        tmp_path,
        {
            "security": {"level": "nope"},
            "discord": {"allowedUserIds": ["1", "x", "y"]},
            "limits": {"maxWorkers": 0},
        },
    )
    lines = message.splitlines()
    assert "4 invalid settings" in lines[0]
    assert str(tmp_path / "settings.json") in lines[0]
    assert len(lines) == 5
    assert any(line.strip().startswith("discord.allowedUserIds[1]:") for line in lines)
    assert any(line.strip().startswith("discord.allowedUserIds[2]:") for line in lines)


def test_nan_and_infinity_rejected(tmp_path: Path) -> None:
    message = error_of(
        tmp_path,
        '{"runner": {"idleTimeoutSeconds": NaN}, "limits": {"workerIdleSeconds": Infinity}}',
    )
    assert "runner.idleTimeoutSeconds" in message and "limits.workerIdleSeconds" in message


# ---- ids -------------------------------------------------------------------------------


def test_big_integer_ids_stay_exact(tmp_path: Path) -> None:
    text = (
        '{"discord": {"allowedUserIds": [1234567890123456789012, "98765432109876543210"],'
        ' "listenChannels": [1098765432109876543], "channelNames": {"1098765432109876543": "x"}}}'
    )
    s = load(tmp_path, text)
    assert s.discord.allowed_user_ids == ("1234567890123456789012", "98765432109876543210")
    assert s.discord.listen_channels == ("1098765432109876543",)
    assert dict(s.discord.channel_names) == {"1098765432109876543": "x"}


@pytest.mark.parametrize("value", ["*", ["*"]])
def test_star_allows_everyone(tmp_path: Path, value: object) -> None:
    s = load(tmp_path, {"discord": {"allowedUserIds": value}})
    assert s.discord.allow_everyone is True
    assert s.discord.allowed_user_ids == ()


def test_star_with_ids_keeps_ids(tmp_path: Path) -> None:
    s = load(tmp_path, {"discord": {"allowedUserIds": ["*", "12"]}})
    assert s.discord.allow_everyone is True and s.discord.allowed_user_ids == ("12",)


def test_star_list_error_index_is_the_original_one(tmp_path: Path) -> None:
    message = error_of(tmp_path, {"discord": {"allowedUserIds": ["*", "12", "bad"]}})
    assert 'discord.allowedUserIds[2]: got "bad"' in message


def test_duplicate_ids_collapsed(tmp_path: Path) -> None:
    s = load(tmp_path, {"discord": {"allowedUserIds": ["12", 12, " 12 "]}})
    assert s.discord.allowed_user_ids == ("12",)


# ---- unknown keys ----------------------------------------------------------------------


def test_upstream_keys_accepted_silently(tmp_path: Path) -> None:
    s = load(
        tmp_path,
        {
            "heartbeat": {"enabled": True, "interval": 15},
            "telegram": {"token": "", "allowedUserIds": [1]},
            "slack": {},
            "web": {"enabled": False, "port": 4632},
            "stt": {},
            "agentic": {"enabled": False},
            "fallback": {"model": "", "api": ""},
            "session": {"autoRotate": False},
            "plugins": {},
            "watchdog": {"maxConsecutiveTimeouts": None},
            "apiToken": "x",
            "jobsDir": "jobs",
            "sessionTimeoutMs": 1800000,
            "discord": {"allowedUserIds": ["1"], "autoThreadChannels": []},
        },
    )
    assert s.warnings == ()


def test_unknown_keys_warn_with_suggestion(tmp_path: Path) -> None:
    s = load(
        tmp_path,
        {
            "runner": {"idleTimeoutSecond": 10},
            "limits": {"maxWorker": 3},
            "discord": {"allowedUserIDs": ["1"]},
            "security": {"levle": "strict"},
            "modle": "opus",
        },
    )
    text = "\n".join(s.warnings)
    assert (
        "runner.idleTimeoutSecond: unknown key, ignored; did you mean 'idleTimeoutSeconds'?" in text
    )
    assert "limits.maxWorker:" in text and "'maxWorkers'" in text
    assert "discord.allowedUserIDs:" in text and "'allowedUserIds'" in text
    assert "security.levle:" in text and "'level'" in text
    assert "modle:" in text and "'model'" in text
    assert s.security.level == "moderate"  # the misspelt key had no effect


def test_duplicate_key_warns(tmp_path: Path) -> None:
    s = load(tmp_path, '{"model": "a", "model": "b"}')
    assert s.model == "b"
    assert any("model: key appears more than once" in w for w in s.warnings)


# ---- timeouts --------------------------------------------------------------------------


def test_hard_timeout_from_upstream_discord_timeout(tmp_path: Path) -> None:
    s = load(tmp_path, {"timeouts": {"discord": 20, "default": 5}})
    assert s.runner.hard_timeout_seconds == 1200
    assert s.timeouts["discord"] == 20


def test_hard_timeout_from_upstream_default_timeout(tmp_path: Path) -> None:
    s = load(tmp_path, {"timeouts": {"default": 30}})
    assert s.runner.hard_timeout_seconds == 1800


def test_explicit_hard_timeout_wins(tmp_path: Path) -> None:
    s = load(tmp_path, {"timeouts": {"discord": 20}, "runner": {"hardTimeoutSeconds": 7200}})
    assert s.runner.hard_timeout_seconds == 7200


def test_idle_longer_than_hard_warns(tmp_path: Path) -> None:
    s = load(tmp_path, {"timeouts": {"default": 5}})  # 300 s hard, 600 s idle default
    assert s.runner.hard_timeout_seconds == 300
    assert any("exceeds the hard timeout" in w and "timeouts" in w for w in s.warnings)


def test_timezone_offset_clamped_and_derived(tmp_path: Path) -> None:
    assert load(tmp_path, {"timezoneOffsetMinutes": 5000}).timezone_offset_minutes == 840
    assert load(tmp_path, {"timezoneOffsetMinutes": -5000}).timezone_offset_minutes == -720
    assert load(tmp_path, {"timezone": "UTC-03:30"}).timezone_offset_minutes == -210
    assert load(tmp_path, {"timezone": "UTC+5:45"}).timezone_offset_minutes == 345
    assert load(tmp_path, {"timezone": "Etc/GMT-3"}).timezone_offset_minutes == 180
    bogus = load(tmp_path, {"timezone": "Mars/Olympus"})
    assert bogus.timezone_offset_minutes == 0 and bogus.warnings


# ---- tokens and secrets ----------------------------------------------------------------


def test_token_precedence(tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "discord-token").write_text("  credential-token-value\n")
    doc = {"discord": {"token": "settings-token-value"}}

    s = load(
        tmp_path, doc, {"CREDENTIALS_DIRECTORY": str(creds), "DISCORD_TOKEN": "env-token-value"}
    )
    assert (s.discord.token, s.discord.token_source) == ("credential-token-value", "credential")

    s = load(tmp_path, doc, {"DISCORD_TOKEN": "env-token-value"})
    assert (s.discord.token, s.discord.token_source) == ("env-token-value", "env")

    s = load(tmp_path, doc, {})
    assert (s.discord.token, s.discord.token_source) == ("settings-token-value", "settings")

    # A credentials dir without our file, and an empty env var, fall through.
    s = load(tmp_path, doc, {"CREDENTIALS_DIRECTORY": str(tmp_path / "none"), "DISCORD_TOKEN": ""})
    assert s.discord.token_source == "settings"


def test_empty_credential_file_warns_and_falls_through(tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "discord-token").write_text("\n")
    s = load(
        tmp_path, {}, {"CREDENTIALS_DIRECTORY": str(creds), "DISCORD_TOKEN": "env-token-value"}
    )
    assert s.discord.token_source == "env"
    assert any("is empty" in w for w in s.warnings)


def test_secrets_not_in_repr_and_registered(tmp_path: Path) -> None:
    s = load(tmp_path, {"api": "sk-ant-api-key-123456", "discord": {"token": TOKEN}})
    assert TOKEN not in repr(s) and "sk-ant-api-key-123456" not in repr(s)
    from claudeclaw.redaction import scrub

    assert scrub(f"a {TOKEN} b sk-ant-api-key-123456") == "a [redacted] b [redacted]"


def test_bad_token_type_not_echoed(tmp_path: Path) -> None:
    message = error_of(
        tmp_path, {"discord": {"token": ["MTIzNDU2.secret-in-a-list.xyz"]}, "api": 12345678901}
    )
    assert "secret-in-a-list" not in message
    assert "12345678901" not in message
    assert "discord.token: got an array (value not shown: it is a secret)" in message
    assert "api: got a number (value not shown: it is a secret)" in message


def test_token_pasted_elsewhere_is_scrubbed_from_errors(tmp_path: Path) -> None:
    message = error_of(tmp_path, {"discord": {"token": TOKEN, "allowedUserIds": [TOKEN]}})
    assert TOKEN not in message
    assert "discord.allowedUserIds[0]" in message and "[redacted]" in message


def test_parse_settings_takes_a_dict() -> None:
    s = parse_settings({"model": "haiku"}, environ={})
    assert s.model == "haiku" and s.source is None


# ---- starter file ----------------------------------------------------------------------


def test_starter_settings_private_and_complete(tmp_path: Path) -> None:
    paths = ProjectPaths(tmp_path / "proj")
    path = write_starter_settings(paths)
    assert path == paths.settings_file
    assert stat.S_IMODE(paths.state_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    doc = json.loads(path.read_text())
    assert doc["discord"]["token"] == "" and doc["discord"]["allowedUserIds"] == []
    assert doc["timezoneOffsetMinutes"] is None  # derived from timezone unless set
    assert doc == starter_document()
    # It loads cleanly, with no warnings, to the defaults.
    s = load_settings(path, {})
    assert s.warnings == ()
    assert s.runner == RunnerSettings()
    assert s.limits == LimitSettings()
    for section in ("security", "timeouts", "discord", "runner", "limits"):
        assert section in doc


def test_starter_settings_refuses_overwrite(tmp_path: Path) -> None:
    paths = ProjectPaths(tmp_path)
    path = write_starter_settings(paths)
    path.write_text('{"model": "mine"}')
    with pytest.raises(ConfigError, match="already exists"):
        write_starter_settings(paths)
    assert json.loads(path.read_text()) == {"model": "mine"}
    write_starter_settings(paths, force=True)
    assert json.loads(path.read_text())["model"] == ""


# ---- heartbeat, jobs, notify channel, the original's inert keys ------------------------


def test_heartbeat_jobs_dir_and_notify_channel(tmp_path: Path) -> None:
    s = load(
        tmp_path,
        {
            "heartbeat": {
                "enabled": True,
                "interval": 30,
                "prompt": "prompts/hb.md",
                "excludeWindows": [
                    {"start": "22:00", "end": "07:30", "days": [5, 6, 5]},
                    {"start": "12:00", "end": "12:00"},
                ],
                "forwardToTelegram": False,
            },
            "jobsDir": "my-jobs",
            "discord": {"notifyChannelId": 123456789012345678},
        },
    )
    hb = s.heartbeat
    assert (hb.enabled, hb.interval_minutes, hb.prompt) == (True, 30, "prompts/hb.md")
    assert [(w.start_minute, w.end_minute, w.days) for w in hb.exclude_windows] == [
        (22 * 60, 7 * 60 + 30, (5, 6)),
        (12 * 60, 12 * 60, ()),
    ]
    assert s.jobs_dir == "my-jobs"
    assert s.discord.notify_channel_id == "123456789012345678"
    assert s.warnings == () and s.inert_keys == ()


def test_heartbeat_errors_name_the_key(tmp_path: Path) -> None:
    text = error_of(
        tmp_path,
        {
            "heartbeat": {
                "interval": 0,
                "excludeWindows": [{"start": "25:00", "end": "07:00", "days": [7]}],
            },
            "discord": {"notifyChannelId": "general"},
        },
    )
    assert "heartbeat.interval: got 0" in text
    assert 'heartbeat.excludeWindows[0].start: got "25:00"' in text
    assert "heartbeat.excludeWindows[0].days: got [7]" in text
    assert 'discord.notifyChannelId: got "general"' in text


def test_inert_upstream_keys_listed_only_when_set(tmp_path: Path) -> None:
    s = load(
        tmp_path,
        {
            "telegram": {"token": "123:abc"},
            "web": {"enabled": True},
            "agentic": {"enabled": False},
            "session": {"autoRotate": True},
            "watchdog": {"maxConsecutiveTimeouts": None, "maxRuntimeSeconds": 600},
            "sessionTimeoutMs": 1800000,
        },
    )
    assert [k.split(":")[0] for k in s.inert_keys] == [
        "telegram.token",
        "web.enabled",
        "session.autoRotate",
        "watchdog.maxRuntimeSeconds",
    ]
    assert all("not implemented in claudeclaw" in k for k in s.inert_keys)
    assert "123:abc" not in " ".join(s.inert_keys)


def test_busy_policy_and_its_old_spelling(tmp_path: Path) -> None:
    """coalesceQueuedMessages: true is busyPolicy "coalesce" (and the flag follows the
    policy); an explicit busyPolicy wins."""
    assert load(tmp_path, {}).runner.busy_policy == "queue"
    old = load(tmp_path, {"runner": {"coalesceQueuedMessages": True}}).runner
    assert old.busy_policy == "coalesce" and old.coalesce_queued_messages
    steer = load(tmp_path, {"runner": {"busyPolicy": "steer", "coalesceQueuedMessages": True}})
    assert steer.runner.busy_policy == "steer" and not steer.runner.coalesce_queued_messages
    new = load(tmp_path, {"runner": {"busyPolicy": "coalesce"}}).runner
    assert new.coalesce_queued_messages


def test_run_and_warm_defaults_follow_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    """maxConcurrentRuns: half the available memory / a running claude, never below 4;
    maxWarmSessions: a quarter of the memory / an idle claude, at least 1."""
    from claudeclaw import config

    gib = 1024**3
    monkeypatch.setattr(config, "_memory_bytes", lambda kind: 1 * gib)
    assert config.default_max_concurrent_runs() == 4
    assert config.default_max_warm_sessions() == 1
    monkeypatch.setattr(config, "_memory_bytes", lambda kind: 24 * gib)
    assert config.default_max_concurrent_runs() == 24 * gib // 2 // config.RUNNING_CLAUDE_RSS_BYTES
    assert config.default_max_warm_sessions() == 24 * gib // 4 // config.IDLE_CLAUDE_RSS_BYTES
    monkeypatch.setattr(config, "_memory_bytes", lambda kind: 1024 * gib)
    assert config.default_max_concurrent_runs() == 64
    assert config.default_max_warm_sessions() == 64
