"""A failed run is a warning or error journal entry with its (redacted) reason (issue 12.6).

"Not logged in" used to be logged at info without its text, so ``journalctl -p err``
showed nothing while every message failed.
"""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from claudeclaw.model import RunFailed
from claudeclaw.worker import _log_failure


@pytest.mark.parametrize(
    ("reason", "level"),
    [
        ("error", "error"),
        ("spawn", "error"),
        ("crashed", "error"),
        ("timeout", "warning"),
        ("rate_limited", "warning"),
        ("cancelled", "info"),
        ("shutdown", "info"),
    ],
)
def test_failed_runs_are_logged_with_reason_and_text(reason: str, level: str) -> None:
    key = "sk-ant-api03-" + "s" * 40
    final = RunFailed("m1", reason, f"Not logged in · Please run /login (key {key})")  # type: ignore[arg-type]
    with capture_logs() as logs:
        _log_failure(final)
    (entry,) = logs
    assert entry["event"] == "worker.run_failed"
    assert entry["log_level"] == level and entry["reason"] == reason
    assert "Not logged in · Please run /login" in entry["error"]
    assert key not in entry["error"]
