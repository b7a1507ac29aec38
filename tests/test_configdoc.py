"""Each settings key is declared once; the doc, the starter file and the parser follow it."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from claudeclaw import configdoc
from claudeclaw.config import (
    SETTINGS,
    Section,
    Table,
    _Checker,
    parse_settings,
    starter_document,
    walk,
)


def test_configuration_doc_matches_the_declarations() -> None:
    text = configdoc.DOC.read_text(encoding="utf-8")
    assert configdoc.render(text) == text, (
        "docs/CONFIGURATION.md is out of date: run python -m claudeclaw.configdoc --write"
    )


def test_every_key_is_in_the_doc() -> None:
    text = configdoc.DOC.read_text(encoding="utf-8")
    for path, _, k, _ in walk():
        assert f"| `{k.name}` |" in text or isinstance(k.kind, Section | Table), path


def test_check_fails_on_a_stale_doc_and_write_fixes_it(tmp_path: Path) -> None:
    doc = tmp_path / "CONFIGURATION.md"
    fresh = configdoc.DOC.read_text(encoding="utf-8")
    stale = fresh.replace("| `maxWorkers` |", "| `maxWorkerz` |")
    assert stale != fresh
    doc.write_text(stale, encoding="utf-8")
    assert configdoc.main(["--check", "--doc", str(doc)]) == 1
    assert configdoc.main(["--write", "--doc", str(doc)]) == 0
    assert doc.read_text(encoding="utf-8") == fresh
    assert configdoc.main(["--check", "--doc", str(doc)]) == 0


def test_a_section_without_its_block_is_an_error() -> None:
    text = configdoc.DOC.read_text(encoding="utf-8")
    start = text.index("<!-- BEGIN GENERATED: limits -->")
    end = text.index("<!-- END GENERATED -->", start) + len("<!-- END GENERATED -->")
    with pytest.raises(ValueError, match=r"missing \['limits'\]"):
        configdoc.render(text[:start] + text[end:])


def _starter_value(path: str) -> Any:
    node: Any = starter_document()
    for part in path.split("."):
        assert part in node, f"{path} is not in the starter file"
        node = node[part]
    return node


def test_every_default_is_valid_and_in_the_starter_file() -> None:
    """A declared default outside its own range, or a key the starter file forgets, fails."""
    for path, _, k, default in walk():
        if isinstance(k.kind, Section | Table) or default is None:
            continue
        written = _starter_value(path)
        if k.starter is not None and not k.secret:
            chk = _Checker({}, {})
            value = k.kind.read(chk, k.kind.to_json(default), path, None)
            assert chk.errors == [], path
            assert value == default, path
            assert written == k.kind.to_json(default), path
        assert k.doc.strip(), f"{path} has no description"


def test_parse_reads_every_declared_key() -> None:
    """Each key, set to a valid non-default value, reaches its attribute."""
    samples: dict[str, Any] = {
        "model": "opus",
        "timezone": "UTC+1",
        "security.level": "strict",
        "security.allowedTools": ["Read"],
        "security.disallowedTools": ["Bash"],
        "security.approvals": True,
        "security.approvalTimeoutSeconds": 30,
        "timeouts.default": 7,
        "timeouts.discord": 9,
        "timeouts.telegram": 8,
        "timeouts.heartbeat": 16,
        "timeouts.job": 31,
        "discord.allowedUserIds": ["11"],
        "discord.listenChannels": ["12"],
        "discord.listenGuilds": ["13"],
        "discord.channelNames": {"12": "general"},
        "discord.imageOutputRoots": ["/srv"],
        "discord.sessionScope": "channel",
        "discord.removeSessionOnArchive": True,
        "discord.answerInSessionThreads": False,
        "discord.progressAfterSeconds": 1,
        "discord.progressEditIntervalSeconds": 2,
        "discord.maxAttachmentBytes": 10,
        "discord.maxInlineTextChars": 11,
        "discord.inboxMaxAgeHours": 12,
        "runner.claudePath": "/bin/claude",
        "runner.idleTimeoutSeconds": 13,
        "runner.hardTimeoutSeconds": 14,
        "runner.killGraceSeconds": 15,
        "runner.appendSystemPrompt": "hi",
        "runner.coalesceQueuedMessages": True,
        "runner.warmSessions": False,
        "runner.prestartClaude": False,
        "runner.busyPolicy": "coalesce",  # (coalesceQueuedMessages follows the policy)
        "limits.warmIdleSeconds": 20,
        "limits.maxWarmSessions": 5,
        "limits.maxIdleWorkers": 3,
        "limits.maxConcurrentRuns": 9,
        "limits.maxWorkers": 17,
        "limits.workerIdleSeconds": 18,
        "limits.shutdownGraceSeconds": 19,
        "limits.workerStartMethod": "exec",
        "limits.workerNice": 3,
        "discord.notifyChannelId": "14",
        "heartbeat.enabled": True,
        "heartbeat.interval": 30,
        "heartbeat.prompt": "check",
        "heartbeat.excludeWindows": [{"start": "22:00", "end": "07:00", "days": [0, 6]}],
        "jobsDir": "jobs",
        "threads.workspace": "worktree",
    }
    secrets = {"api": "sk-ant-a-secret-value", "discord.token": "a-bot-token-value"}
    doc: dict[str, Any] = {}
    for path, value in {**samples, **secrets}.items():
        *parents, name = path.split(".")
        node = doc
        for part in parents:
            node = node.setdefault(part, {})
        node[name] = value
    settings = parse_settings(doc, environ={})
    assert settings.warnings == ()
    declared = {
        path: attrs
        for path, attrs, k, _ in walk(SETTINGS)
        if not isinstance(k.kind, Section | Table) and path != "timezoneOffsetMinutes"
    }
    kinds = {path: k.kind for path, _, k, _ in walk(SETTINGS)}
    assert set(declared) == set(samples) | set(secrets)  # a new key needs a sample here
    for path, attrs in declared.items():
        expected = {**samples, **secrets}[path]
        node: Any = settings
        for attr in attrs:
            node = node[attr] if isinstance(node, Mapping) else getattr(node, attr)
        if isinstance(expected, list):
            expected = tuple(expected)
        if isinstance(expected, dict):
            node = dict(node)
        # values read into objects (quiet windows) compare as the JSON they were read from
        assert node == expected or kinds[path].to_json(node) == {**samples, **secrets}[path], path
