"""Where claudeclaw keeps things, and that nobody else can slip in."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from claudeclaw.errors import StateError
from claudeclaw.paths import ProjectPaths, ensure_private_dir, ensure_runtime_dir


def test_runtime_dir_prefers_systemd_then_xdg_then_tmp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = ProjectPaths.for_project(tmp_path / "p")
    monkeypatch.setenv("RUNTIME_DIRECTORY", "/run/claudeclaw:/run/other")
    assert paths.runtime_dir() == Path("/run/claudeclaw")
    monkeypatch.delenv("RUNTIME_DIRECTORY")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert paths.runtime_dir().parent == tmp_path / "claudeclaw"
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    runtime = paths.runtime_dir()
    assert runtime.parent.name == f"claudeclaw-{os.getuid()}"
    assert len(str(runtime / "workers.sock")) < 108  # AF_UNIX path limit


def test_shared_tmp_parent_is_created_private(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tempfile

    monkeypatch.delenv("RUNTIME_DIRECTORY", raising=False)
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    paths = ProjectPaths.for_project(tmp_path / "p")
    runtime = ensure_runtime_dir(paths)
    for path in (runtime, runtime.parent):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700 and path.stat().st_uid == os.getuid()


def test_a_parent_someone_else_owns_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another user created /tmp/claudeclaw-<our uid> first: we refuse to use it."""
    if os.getuid() != 0:
        pytest.skip("needs root to create a directory owned by another user")
    import tempfile

    monkeypatch.delenv("RUNTIME_DIRECTORY", raising=False)
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    trap = tmp_path / f"claudeclaw-{os.getuid()}"
    trap.mkdir(mode=0o777)
    os.chown(trap, 65534, 65534)
    with pytest.raises(StateError, match="belongs to uid 65534"):
        ensure_runtime_dir(ProjectPaths.for_project(tmp_path / "p"))


def test_a_symlink_is_not_a_private_dir(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(StateError, match="symlink"):
        ensure_private_dir(tmp_path / "link")
