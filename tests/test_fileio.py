"""trpo_ref.fileio: atomic writes leave no debris, name the file on a full disk, create 0644 files."""

import errno
import os
import stat

import numpy as np
import pytest

from trpo_ref.fileio import append_text, atomic_savez, atomic_write, atomic_write_text, default_file_mode


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


# ---------------------------------------------------------------- worked examples
def test_atomic_write_text__content_and_mode_of_open(tmp_path):
    p = atomic_write_text(tmp_path / "a.txt", "héllo\n")
    assert p.read_text() == "héllo\n"
    # the mode open() gives (0666 & ~umask; 0644 under umask 022), not mkstemp's 0600
    assert _mode(p) == default_file_mode()
    old = os.umask(0o022)
    try:
        assert _mode(atomic_write_text(tmp_path / "b.txt", "x")) == 0o644
    finally:
        os.umask(old)


def test_atomic_savez__round_trip_and_keep_previous(tmp_path):
    p = tmp_path / "c.npz"
    atomic_savez(p, {"x": np.arange(3)})
    atomic_savez(p, {"x": np.arange(4)}, keep_previous=tmp_path / "c.prev.npz")
    with np.load(p) as z, np.load(tmp_path / "c.prev.npz") as zp:
        assert z["x"].tolist() == [0, 1, 2, 3] and zp["x"].tolist() == [0, 1, 2]


# ------------------------------------------------------------ review regressions
@pytest.mark.parametrize("exc", [KeyboardInterrupt(), OSError(errno.ENOSPC, "No space left on device"),
                                 RuntimeError("boom")])
def test_atomic_write__failure_leaves_the_old_file_and_no_temporary(tmp_path, exc):
    p = tmp_path / "keep.txt"
    p.write_text("old")

    def write(fh):
        fh.write(b"half")
        raise exc

    with pytest.raises(type(exc)):
        atomic_write(p, write)
    assert p.read_text() == "old"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["keep.txt"]  # no .tmp debris


def test_atomic_write__a_full_disk_names_the_file(tmp_path):
    def write(fh):
        raise OSError(errno.ENOSPC, "No space left on device")  # what a failed write() raises: no filename

    with pytest.raises(OSError) as info:
        atomic_write(tmp_path / "checkpoint.npz", write)
    assert info.value.filename == str(tmp_path / "checkpoint.npz")
    assert info.value.errno == errno.ENOSPC


def test_append_text__error_names_the_file(tmp_path):
    with pytest.raises(OSError) as info:
        append_text(tmp_path / "no" / "such" / "dir.csv", "x")
    assert "dir.csv" in str(info.value.filename)
