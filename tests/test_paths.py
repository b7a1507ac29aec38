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


def test_a_checked_dir_replaced_by_a_symlink_is_refused(tmp_path: Path) -> None:
    """The first check is remembered; a directory swapped for a symlink afterwards (or
    chmod'ed, or removed) is checked again, not trusted."""
    from claudeclaw import jsonstore

    state = tmp_path / "state"
    jsonstore.write_json(state / "x.json", {"v": 1})
    state.chmod(0o755)
    jsonstore.write_json(state / "x.json", {"v": 2})
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    state.rename(tmp_path / "elsewhere")
    state.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(StateError, match="symlink"):
        jsonstore.write_json(state / "x.json", {"v": 3})
    with pytest.raises(StateError, match="symlink"):
        ensure_private_dir(state)
    state.unlink()  # removed: created again, private
    jsonstore.write_json(state / "x.json", {"v": 4})
    assert stat.S_IMODE(state.stat().st_mode) == 0o700 and not state.is_symlink()


def test_atomic_write_skips_a_leftover_temp_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crashed process with our pid may have left a temp file: never written through."""
    from claudeclaw import paths

    names = iter([".x.left.tmp", ".x.new.tmp"])
    monkeypatch.setattr(paths, "temp_name", lambda name: next(names))
    (tmp_path / ".x.left.tmp").write_text("theirs")
    paths.atomic_write_bytes(tmp_path / "x", b"ours")
    assert (tmp_path / "x").read_text() == "ours"
    assert (tmp_path / ".x.left.tmp").read_text() == "theirs"
    assert not (tmp_path / ".x.new.tmp").exists()


def test_temp_names_differ_in_a_forked_child() -> None:
    from claudeclaw import paths

    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.write(write_end, paths.temp_name("x").encode())
        os._exit(0)
    os.close(write_end)
    os.waitpid(pid, 0)
    child = os.read(read_end, 200).decode()
    os.close(read_end)
    ours = paths.temp_name("x")
    assert child.split(".")[2:4] != ours.split(".")[2:4]
    assert child.split(".")[2] == str(pid)
