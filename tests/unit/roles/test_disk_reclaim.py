"""The disk role's reclaim script, where a race could make it touch what it never looked at: a directory
of a world-writable tree (/tmp) swapped for a symlink between the scan and the change."""
from __future__ import annotations

import gzip
import importlib.util
import os
import time
from pathlib import Path
from types import ModuleType

import pytest
from conftest import REPO


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("disk_reclaim", REPO / "roles" / "disk" / "files" / "disk_reclaim.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def swapped(tmp_path: Path) -> tuple[Path, os.stat_result, Path]:
    """tmp/old.log as the scan saw it; then tmp/ is moved away and replaced by a link to protected/, which
    holds a file of the same name."""
    (tmp_path / "tmp").mkdir()
    old = tmp_path / "tmp" / "old.log"
    old.write_text("x" * 4096)
    seen = os.lstat(old)
    (tmp_path / "protected").mkdir()
    precious = tmp_path / "protected" / "old.log"
    precious.write_text("keep me")
    (tmp_path / "tmp").rename(tmp_path / "tmp.moved")
    (tmp_path / "tmp").symlink_to(tmp_path / "protected")
    return old, seen, precious


def test_a_delete_through_a_swapped_directory_fails_and_touches_nothing(
        swapped: tuple[Path, os.stat_result, Path]) -> None:
    old, seen, precious = swapped
    with pytest.raises(OSError):
        _script().Reclaim._delete(str(old), seen)
    assert precious.read_text() == "keep me"


def test_a_rotation_through_a_swapped_directory_fails_and_truncates_nothing(
        swapped: tuple[Path, os.stat_result, Path]) -> None:
    old, seen, precious = swapped
    reclaim = _script().Reclaim.__new__(_script().Reclaim)
    reclaim.now = time.time()
    with pytest.raises(OSError):
        reclaim._rotate(str(old), seen)
    assert precious.read_text() == "keep me"
    assert sorted(p.name for p in precious.parent.iterdir()) == ["old.log"], "no archive was written there"


def test_a_file_replaced_since_the_scan_is_left_alone_and_the_seen_one_is_rotated(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("line\n" * 1000)
    seen = os.lstat(log)
    script = _script()
    reclaim = script.Reclaim.__new__(script.Reclaim)
    reclaim.now = time.time()
    done = reclaim._rotate(str(log), seen)
    assert log.stat().st_size == 0 and gzip.decompress(Path(str(done["archive"])).read_bytes()) == b"line\n" * 1000
    os.link(log, tmp_path / "kept")  # the seen file lives on elsewhere, so its inode is not reused
    (tmp_path / "new").write_text("a new file by the same name")
    os.replace(tmp_path / "new", log)
    with pytest.raises(OSError, match="replaced since it was looked at"):
        script.Reclaim._delete(str(log), seen)
    assert log.read_text() == "a new file by the same name"
