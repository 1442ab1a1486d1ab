"""Atomic file writes: the one helper every output of trpo_ref goes through.

=================================  ==============================================================
:func:`atomic_write`               call ``write(fh)`` on a temporary file beside ``path``, fsync,
                                   then ``os.replace``: a reader sees the old file or the new one,
                                   never half of one
:func:`atomic_write_text`          the same for a string
:func:`atomic_savez`               the same for ``numpy.savez`` / ``savez_compressed``
:func:`append_text`                append to a file, an error naming the file
=================================  ==============================================================

Rules, each a test in tests/test_fileio.py:

* The temporary file is removed on *any* failure, including ``KeyboardInterrupt``
  and a full disk: nothing named ``*.tmp`` is left behind.
* An ``OSError`` raised while writing (``ENOSPC``: "No space left on device")
  names the file that was being written, so the command line can print
  ``PATH: No space left on device``.
* Files are created with the permissions ``open()`` gives (``0666 & ~umask``,
  0644 under the usual umask 022), not the 0600 of ``tempfile.mkstemp``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

__all__ = ["atomic_write", "atomic_write_text", "atomic_savez", "append_text", "default_file_mode"]


def default_file_mode() -> int:
    """The mode ``open(path, "w")`` gives a new file: ``0o666 & ~umask``."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _named(exc: OSError, path: Path) -> OSError:
    """``exc`` with ``filename`` set to ``path`` when it names no file (a write error names none)."""
    if exc.filename is None or str(exc.filename).endswith(".tmp"):
        new = type(exc)(exc.errno, exc.strerror or str(exc), str(path))
        return new
    return exc


def atomic_write(path, write: Callable, binary: bool = True, keep_previous=None) -> Path:
    """Write ``path`` atomically: ``write(fh)`` on a temporary file in the same directory, then rename.

    Parameters
    ----------
    path : str or pathlib.Path
        Destination; its directory must exist.
    write : callable
        Called once with the open temporary file.
    binary : bool
        Open the temporary file in binary (``"wb"``) or text mode (``"w"``, ``newline=""``).
    keep_previous : str or pathlib.Path, optional
        Once the new content is on disk, move the current ``path`` (if any) here
        before the rename, so that the previous version survives.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    OSError
        With ``filename`` = ``path`` when the write itself failed (e.g. a full disk).
    """
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise _named(exc, path) from None
    try:
        os.fchmod(fd, default_file_mode())
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"newline": ""})) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        if keep_previous is not None and path.exists():
            os.replace(path, keep_previous)
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError):
            raise _named(exc, path) from None
        raise
    return path


def atomic_write_text(path, text: str) -> Path:
    """:func:`atomic_write` of a string (UTF-8, newlines as given)."""
    return atomic_write(path, lambda fh: fh.write(text), binary=False)


def atomic_savez(path, arrays: dict, compressed: bool = False, keep_previous=None) -> Path:
    """:func:`atomic_write` of ``numpy.savez`` (or ``savez_compressed``) of ``arrays``."""
    save = np.savez_compressed if compressed else np.savez
    return atomic_write(path, lambda fh: save(fh, **arrays), keep_previous=keep_previous)


def append_text(path, text: str) -> None:
    """Append ``text`` to ``path`` (created if missing) and flush; an OSError names ``path``."""
    path = Path(path)
    try:
        with open(path, "a", newline="") as f:
            f.write(text)
            f.flush()
    except OSError as exc:
        raise _named(exc, path) from None
