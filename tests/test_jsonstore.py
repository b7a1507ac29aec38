"""jsonstore: atomic writes, .bak of the last good copy, recovery, flock."""

from __future__ import annotations

import json
import os
import stat
import threading
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from claudeclaw import jsonstore
from claudeclaw.errors import StateError


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_absent_file_reads_none_and_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "state" / "x.json"
    assert jsonstore.read_json(path) is None
    assert not path.parent.exists()


def test_write_creates_private_dir_and_file(tmp_path: Path) -> None:
    path = tmp_path / "state" / "x.json"
    jsonstore.write_json(path, {"a": 1, "big": 1234567890123456789012})
    assert _mode(path.parent) == 0o700
    assert _mode(path) == 0o600
    assert json.loads(path.read_text()) == {"a": 1, "big": 1234567890123456789012}
    assert jsonstore.read_json(path) == {"a": 1, "big": 1234567890123456789012}
    # No temp files left behind.
    assert sorted(p.name for p in path.parent.iterdir()) == ["x.json"]


def test_write_keeps_previous_good_copy_as_bak(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    jsonstore.write_json(path, {"v": 1})
    assert not jsonstore.backup_path(path).exists()
    jsonstore.write_json(path, {"v": 2})
    bak = jsonstore.backup_path(path)
    assert bak.name == "x.json.bak"
    assert json.loads(bak.read_text()) == {"v": 1}
    assert _mode(bak) == 0o600
    assert json.loads(path.read_text()) == {"v": 2}


def test_bak_is_the_previous_file_itself_or_a_copy_where_links_fail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The previous file becomes the .bak by a hard link (no second data write and fsync);
    where links fail, by a copy. Either way no temp file is left behind."""
    path = tmp_path / "x.json"
    jsonstore.write_json(path, {"v": 1})
    inode = path.stat().st_ino
    jsonstore.write_json(path, {"v": 2})
    bak = jsonstore.backup_path(path)
    assert bak.stat().st_ino == inode and bak.stat().st_nlink == 1
    assert json.loads(bak.read_text()) == {"v": 1}

    def no_links(*_args: object, **_kwargs: object) -> None:
        raise OSError(1, "Operation not permitted")

    monkeypatch.setattr(jsonstore.os, "link", no_links)
    jsonstore.write_json(path, {"v": 3})
    assert json.loads(bak.read_text()) == {"v": 2} and _mode(bak) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json", "x.json.bak"]


def test_corrupt_current_never_overwrites_good_bak(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    jsonstore.write_json(path, {"v": 1})
    jsonstore.write_json(path, {"v": 2})
    path.write_text("{torn")
    jsonstore.write_json(path, {"v": 3})
    assert json.loads(jsonstore.backup_path(path).read_text()) == {"v": 1}


def test_corrupt_file_recovered_from_bak_and_kept_aside(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    jsonstore.write_json(path, {"v": 1})
    jsonstore.write_json(path, {"v": 2})
    path.write_text('{"v": 2, ')  # a torn write by some other program
    with capture_logs() as logs:
        data = jsonstore.read_json(path, validate=jsonstore.is_object)
    assert data == {"v": 1}
    assert json.loads(path.read_text()) == {"v": 1}  # the good copy is restored
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("x.json.corrupt-")]
    assert len(aside) == 1
    assert aside[0].read_text() == '{"v": 2, '
    errors = [e for e in logs if e["log_level"] == "error"]
    assert len(errors) == 1
    assert errors[0]["file"] == str(path)
    assert errors[0]["corrupt_copy"] == str(aside[0])
    assert errors[0]["restored_from"] == str(jsonstore.backup_path(path))


def test_wrong_top_level_type_is_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    jsonstore.write_json(path, {"v": 1})
    jsonstore.write_json(path, {"v": 2})
    path.write_text("[1, 2]")
    with capture_logs():
        assert jsonstore.read_json(path, validate=jsonstore.is_object) == {"v": 1}
    # Without the validator a list is fine.
    path.write_text("[1, 2]")
    assert jsonstore.read_json(path) == [1, 2]


def test_corrupt_without_good_copy_raises_and_keeps_file(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_text("not json")
    with pytest.raises(StateError) as info:
        jsonstore.read_json(path)
    message = str(info.value)
    assert str(path) in message
    assert "Fix:" in message
    assert path.read_text() == "not json"  # nothing was destroyed


def test_corrupt_bak_too_raises(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_text("")
    jsonstore.backup_path(path).write_text("{")
    with pytest.raises(StateError, match="corrupt too"):
        jsonstore.read_json(path)


def test_recovery_under_lock_path(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    lock = tmp_path / ".lock"
    jsonstore.write_json(path, {"v": 1})
    jsonstore.write_json(path, {"v": 2})
    path.write_text("{")
    with capture_logs():
        assert jsonstore.read_json(path, lock_path=lock) == {"v": 1}
    assert _mode(lock) == 0o600


def test_update_json_read_modify_write(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    lock = tmp_path / ".lock"

    def add(data: dict[str, int] | None) -> dict[str, int]:
        data = data or {}
        data["n"] = data.get("n", 0) + 1
        return data

    assert jsonstore.update_json(path, lock, add) == {"n": 1}
    assert jsonstore.update_json(path, lock, add) == {"n": 2}
    assert json.loads(path.read_text()) == {"n": 2}


def test_update_json_skips_write_when_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    lock = tmp_path / ".lock"
    jsonstore.write_json(path, {"n": 1})
    before = path.stat().st_ino
    jsonstore.update_json(path, lock, lambda d: d)
    assert path.stat().st_ino == before
    # An absent file stays absent when fn returns None.
    other = tmp_path / "y.json"
    jsonstore.update_json(other, lock, lambda d: None)
    assert not other.exists()


def test_update_json_compares_bytes_so_a_mutating_fn_is_written(tmp_path: Path) -> None:
    """What decides the write is the file's bytes against the new document's: an ``fn``
    that changes its argument in place is written, and a file with the same data in
    another layout (edited by hand) comes back in the usual one."""
    path = tmp_path / "x.json"
    lock = tmp_path / ".lock"
    path.write_text('{"threads":{"1":{"n":1}}}')

    def bump(data: dict[str, Any]) -> dict[str, Any]:
        data["threads"]["1"]["n"] += 1
        return data

    jsonstore.update_json(path, lock, bump)
    assert json.loads(path.read_text()) == {"threads": {"1": {"n": 2}}}
    path.write_text('{"threads":{"1":{"n":2}}}')
    jsonstore.update_json(path, lock, lambda d: d)
    assert path.read_text() == json.dumps({"threads": {"1": {"n": 2}}}, indent=2) + "\n"
    before = path.stat().st_ino
    jsonstore.update_json(path, lock, lambda d: d)
    assert path.stat().st_ino == before


def test_remove_json_keeps_bak(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    jsonstore.write_json(path, {"v": 1})
    assert jsonstore.remove_json(path) is True
    assert not path.exists()
    assert json.loads(jsonstore.backup_path(path).read_text()) == {"v": 1}
    assert jsonstore.remove_json(path) is False


def test_locked_excludes_other_threads(tmp_path: Path) -> None:
    lock = tmp_path / ".lock"
    path = tmp_path / "counter.json"
    jsonstore.write_json(path, {"n": 0})

    def bump() -> None:
        for _ in range(25):
            jsonstore.update_json(path, lock, lambda d: {"n": d["n"] + 1})

    threads = [threading.Thread(target=bump) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert json.loads(path.read_text()) == {"n": 100}


def test_unreadable_file_is_a_state_error(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.mkdir()  # reading a directory fails with an OSError other than "not found"
    with pytest.raises(StateError, match=str(path)):
        jsonstore.read_json(path)


def test_write_is_atomic_against_crash_midway(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "x.json"
    jsonstore.write_json(path, {"v": 1})

    def boom(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        jsonstore.write_json(path, {"v": 2})
    monkeypatch.undo()
    assert json.loads(path.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


# ---- the known-good cache: a file this process wrote or validated is not read again ----


def _count_reads(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    reads: list[Path] = []
    real = jsonstore._read

    def counting(path: Path) -> tuple[bytes, os.stat_result] | None:
        reads.append(path)
        return real(path)

    monkeypatch.setattr(jsonstore, "_read", counting)
    return reads


def test_a_file_this_process_wrote_becomes_bak_without_being_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "x.json"
    reads = _count_reads(monkeypatch)
    jsonstore.write_json(path, {"v": 1}, validate=jsonstore.is_object)
    jsonstore.write_json(path, {"v": 2}, validate=jsonstore.is_object)
    jsonstore.write_json(path, {"v": 3}, validate=jsonstore.is_object)
    assert reads == [path]  # only the first write, which did not know the path
    assert json.loads(jsonstore.backup_path(path).read_text()) == {"v": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json", "x.json.bak"]


def test_a_file_read_and_validated_is_not_parsed_again_by_update_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "x.json"
    lock = tmp_path / ".lock"
    path.write_text('{"n": 1}')  # written by someone else: unknown to this process
    reads = _count_reads(monkeypatch)
    jsonstore.update_json(path, lock, lambda d: {"n": d["n"] + 1}, validate=jsonstore.is_object)
    assert reads == [path]  # update_json's own read; write_json trusted what it validated
    assert json.loads(jsonstore.backup_path(path).read_text()) == {"n": 1}


def test_a_file_another_writer_put_in_place_is_validated_again(tmp_path: Path) -> None:
    """Same size and mtime as the file we wrote, only another inode: read and parsed,
    and being corrupt it does not become the .bak."""
    path = tmp_path / "x.json"
    jsonstore.write_json(path, {"v": 1}, validate=jsonstore.is_object)
    jsonstore.write_json(path, {"v": 2}, validate=jsonstore.is_object)
    ours = path.stat()
    other = tmp_path / "other"
    other.write_bytes(b"{" * ours.st_size)
    os.utime(other, ns=(ours.st_atime_ns, ours.st_mtime_ns))
    os.replace(other, path)
    jsonstore.write_json(path, {"v": 3}, validate=jsonstore.is_object)
    assert json.loads(jsonstore.backup_path(path).read_text()) == {"v": 1}
    # A good replacement is kept as usual.
    good = tmp_path / "good"
    good.write_text('{"v": "theirs"}')
    os.replace(good, path)
    jsonstore.write_json(path, {"v": 4}, validate=jsonstore.is_object)
    assert json.loads(jsonstore.backup_path(path).read_text()) == {"v": "theirs"}


@pytest.mark.parametrize("change", ["bytes", "size"])
def test_a_file_rewritten_in_place_is_validated_again(tmp_path: Path, change: str) -> None:
    """Same inode: new bytes of the same size (the mtime moves), or another size with
    the old mtime put back; either way it is read again, and a torn one is no .bak."""
    path = tmp_path / "x.json"
    jsonstore.write_json(path, {"v": 1}, validate=jsonstore.is_object)
    jsonstore.write_json(path, {"v": 2}, validate=jsonstore.is_object)
    before = path.stat()
    with path.open("r+b") as fh:  # in place, as an editor or the original program would
        if change == "bytes":
            fh.write(b"[" * before.st_size)
        else:
            fh.write(b'{"v": 2, ')
            fh.truncate()
    if change == "bytes":  # the same tick can leave the mtime as it was: move it on
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + 1))
    else:
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert after.st_ino == before.st_ino
    jsonstore.write_json(path, {"v": 3}, validate=jsonstore.is_object)
    assert json.loads(jsonstore.backup_path(path).read_text()) == {"v": 1}


def test_a_file_known_under_another_validator_is_validated_again(tmp_path: Path) -> None:
    """A list written without a validator is known to parse, not to be an object."""
    path = tmp_path / "x.json"
    jsonstore.write_json(path, {"v": 1}, validate=jsonstore.is_object)
    jsonstore.write_json(path, [1, 2])
    jsonstore.write_json(path, {"v": 3}, validate=jsonstore.is_object)
    assert json.loads(jsonstore.backup_path(path).read_text()) == {"v": 1}
    # Data the validator refuses is written, but not remembered as good.
    jsonstore.write_json(path, [3], validate=jsonstore.is_object)
    jsonstore.write_json(path, {"v": 5}, validate=jsonstore.is_object)
    assert json.loads(jsonstore.backup_path(path).read_text()) == {"v": 3}


def _no_links(*_args: object, **_kwargs: object) -> None:
    raise OSError(1, "Operation not permitted")


@pytest.mark.parametrize("umask", [0o077, 0o022, 0o277])
def test_modes_stay_private_whatever_the_umask(tmp_path: Path, umask: int) -> None:
    """0o277 takes the owner's write bit from a new file: it is put back."""
    old = os.umask(umask)
    try:
        path = tmp_path / "state" / "x.json"
        jsonstore.write_json(path, {"v": 1})
        jsonstore.write_json(path, {"v": 2})
        with pytest.MonkeyPatch.context() as mp:  # the copy fallback too
            mp.setattr(jsonstore.os, "link", _no_links)
            jsonstore.write_json(path, {"v": 3})
    finally:
        os.umask(old)
    assert _mode(path.parent) == 0o700
    assert _mode(path) == 0o600
    assert _mode(jsonstore.backup_path(path)) == 0o600
    assert json.loads(path.read_text()) == {"v": 3}
    assert json.loads(jsonstore.backup_path(path).read_text()) == {"v": 2}


def test_update_json_sees_changes_made_in_place(tmp_path: Path) -> None:
    """fn may mutate the document it is given: compared with an independent copy."""
    path = tmp_path / "x.json"
    lock = tmp_path / ".lock"
    jsonstore.write_json(path, {"n": 1, "list": [1]})

    def bump(data: dict[str, Any]) -> dict[str, Any]:
        data["list"].append(2)
        return data

    assert jsonstore.update_json(path, lock, bump) == {"n": 1, "list": [1, 2]}
    assert json.loads(path.read_text()) == {"n": 1, "list": [1, 2]}
    assert json.loads(jsonstore.backup_path(path).read_text()) == {"n": 1, "list": [1]}
