"""jobfiles.py: the original's job file format, errors per file, never fatal."""

from __future__ import annotations

from pathlib import Path

import pytest

from claudeclaw.jobfiles import directory_stamp, load_jobs, parse_job

UPSTREAM_STYLE = """---
schedule: "0 9 * * 1-5"
recurring: true
notify: error
model: sonnet
timeout: 600
retry: 2
retry_delay: 60
label: Morning
---
Summarise yesterday's commits.
"""


def test_upstream_file_reads_every_key(tmp_path: Path) -> None:
    job = parse_job("daily-report", UPSTREAM_STYLE, tmp_path / "daily-report.md")
    assert job.schedule is not None and job.schedule.expr == "0 9 * * 1-5"
    assert job.recurring is True
    assert job.notify == "error"
    assert job.model == "sonnet"
    assert job.timeout_s == 600
    assert job.retry == 2 and job.retry_delay_s == 60
    assert job.label == "Morning"
    assert job.prompt == "Summarise yesterday's commits."
    assert job.catch_up is True and job.enabled is True
    assert job.warnings == ()


def test_defaults_and_legacy_daily_alias(tmp_path: Path) -> None:
    job = parse_job("x", "---\nschedule: 0 8 * * *\n---\nhello", tmp_path / "x.md")
    assert job.recurring is False  # the original's default: one-shot
    assert job.notify == "always"
    daily = parse_job("y", "---\nschedule: 0 8 * * *\ndaily: yes\n---\nhi", tmp_path / "y.md")
    assert daily.recurring is True


def test_catch_up_false_and_disabled_and_crlf(tmp_path: Path) -> None:
    text = "---\r\nschedule: '@daily'\r\ncatchUp: false\r\nenabled: no\r\n---\r\nhi\r\n"
    job = parse_job("z", text, tmp_path / "z.md")
    assert job.catch_up is False
    assert job.enabled is False
    assert job.schedule is not None and job.schedule.fields == "0 0 * * *"


def test_missing_schedule_is_a_finished_upstream_one_shot_not_an_error(tmp_path: Path) -> None:
    job = parse_job("done", "---\nrecurring: false\n---\nold prompt", tmp_path / "done.md")
    assert job.schedule is None


def test_unknown_keys_and_agent_are_warnings(tmp_path: Path) -> None:
    job = parse_job("w", "---\nschedule: 0 8 * * *\nshedule: x\nagent: ops\n---\nhi", tmp_path)
    assert any("unknown key 'shedule'" in w for w in job.warnings)
    assert any("agent: 'ops' is not supported" in w for w in job.warnings)


@pytest.mark.parametrize(
    ("name", "text", "needle"),
    [
        ("ok", "no frontmatter here", "no frontmatter"),
        ("ok", "---\nschedule: 61 * * * *\n---\nhi", "schedule: invalid cron expression"),
        ("ok", "---\nschedule: 0 8 * * *\n---\n", "prompt"),
        ("ok", "---\nschedule: 0 8 * * *\nnotify: sometimes\n---\nhi", "notify: 'sometimes'"),
        ("ok", "---\nschedule: 0 8 * * *\nrecurring: treu\n---\nhi", "recurring: 'treu'"),
        ("ok", "---\nschedule: 0 8 * * *\ntimeout: soon\n---\nhi", "timeout: 'soon'"),
        ("ok", "---\nschedule: 0 8 * * *\nretry: -1\n---\nhi", "retry: '-1'"),
        ("ok", "---\njust text\n---\nhi", "is not 'key: value'"),
        ("../evil", "---\nschedule: 0 8 * * *\n---\nhi", "not a usable job name"),
        ("ok", "---\nschedule: 0 8 * * *\n---\n../../etc/passwd.txt", "inside the project"),
    ],
)
def test_errors_name_the_problem(name: str, text: str, needle: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError) as info:
        parse_job(name, text, tmp_path / "f.md")
    assert needle in str(info.value)


def test_load_reports_bad_files_and_keeps_the_good_ones(tmp_path: Path) -> None:
    (tmp_path / "good.md").write_text("---\nschedule: 0 8 * * *\n---\nhello\n")
    (tmp_path / "bad.md").write_text("---\nschedule: every day\n---\nhello\n")
    (tmp_path / "binary.md").write_bytes(b"\xff\xfe---")
    (tmp_path / "notes.txt").write_text("ignored")
    (tmp_path / "has space.md").write_text("---\nschedule: 0 8 * * *\n---\nhi\n")
    jobs, errors = load_jobs(tmp_path)
    assert [j.name for j in jobs] == ["good"]
    by_name = {e.name: e.message for e in errors}
    assert set(by_name) == {"bad", "binary", "has space"}
    assert "invalid cron expression 'every day'" in by_name["bad"]
    assert "UTF-8" in by_name["binary"]


def test_missing_directory_has_no_jobs(tmp_path: Path) -> None:
    assert load_jobs(tmp_path / "nope") == ([], [])
    assert directory_stamp(tmp_path / "nope") == ()


def test_prompt_file_is_read_at_each_run(tmp_path: Path) -> None:
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "p.md").write_text("first\n")
    job = parse_job("p", "---\nschedule: 0 8 * * *\n---\nprompts/p.md\n", tmp_path / "p.md")
    assert job.read_prompt(tmp_path) == "first"
    (tmp_path / "prompts" / "p.md").write_text("second\n")
    assert job.read_prompt(tmp_path) == "second"


def test_stamp_changes_when_a_file_is_edited_added_or_removed(tmp_path: Path) -> None:
    first = directory_stamp(tmp_path)
    (tmp_path / "a.md").write_text("x")
    second = directory_stamp(tmp_path)
    assert second != first
    (tmp_path / "a.md").write_text("xy")
    third = directory_stamp(tmp_path)
    assert third != second
    (tmp_path / "a.md").unlink()
    assert directory_stamp(tmp_path) == first
