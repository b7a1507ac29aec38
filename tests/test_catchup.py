"""catchup.py: the channel memory that tells a restarted bot where to catch up."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from claudeclaw.frontend.catchup import NOTE_EVERY_SECONDS, REMEMBER_CHANNEL_DAYS, ChannelMemory


def test_notes_from_many_threads_at_once_all_land(tmp_path: Path) -> None:
    """Messages in 40 channels are taken in at once (each notes its channel from a worker
    thread): every channel is in the file, so a restart catches up in all of them."""
    memory = ChannelMemory(tmp_path / "discord-channels.json")
    now = time.time()
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda n: memory.note(1000 + n, now), range(40)))
    on_disk = json.loads((tmp_path / "discord-channels.json").read_text())
    assert sorted(int(k) for k in on_disk) == list(range(1000, 1040))
    again = ChannelMemory(tmp_path / "discord-channels.json")
    assert sorted(again.recent(now)) == list(range(1000, 1040))


def test_old_channels_are_forgotten_and_notes_are_not_rewritten_each_time(
    tmp_path: Path,
) -> None:
    memory = ChannelMemory(tmp_path / "c.json")
    now = time.time()
    assert memory.note(1, now - (REMEMBER_CHANNEL_DAYS + 1) * 86400)
    assert memory.note(2, now)
    assert not memory.note(2, now + 1)  # noted a moment ago: no write
    assert memory.recent(now) == [2]
    assert json.loads((tmp_path / "c.json").read_text()).keys() == {"2"}


def test_fresh_says_when_no_write_is_due_without_touching_the_disk(tmp_path: Path) -> None:
    """``fresh`` (what the event loop asks before handing ``note`` to a thread) is True
    exactly when ``note`` would not write; before the file was read it says False."""
    path = tmp_path / "c.json"
    now = time.time()
    assert ChannelMemory(path).note(2, now)
    memory = ChannelMemory(path)
    assert not memory.fresh(2, now + 1)  # not loaded yet: the thread reads the file
    assert not memory.note(2, now + 1)
    assert memory.fresh(2, now + 1) and not memory.fresh(3, now + 1)
    later = now + NOTE_EVERY_SECONDS + 1
    assert not memory.fresh(2, later) and memory.note(2, later)
    assert memory.fresh(2, later)
