"""Run directories: what a training run writes, and the rules that keep two runs apart.

=================================  ==============================================================
:func:`claim_new_run_dir`          a fresh ``ROOT/ENV/seedS-YYYYmmdd-HHMMSS[-K]``, created with an
                                   exclusive ``mkdir`` so that parallel jobs never share one
:class:`RunLock`                   an exclusive ``flock`` on ``DIR/.lock`` held for the whole run: a
                                   second process on the directory stops before touching anything
:func:`check_fresh`                ``--out`` for a new run must be missing or empty: a directory
                                   that holds a run, or anything else, is refused
:func:`is_run_dir`                 ``config.json`` with ``train`` and ``trpo`` entries
:class:`CSVLog`                    the one CSV writer (progress.csv, episodes.csv): header, append,
                                   and trimming *by iteration number* for a resume
:func:`save_checkpoint`            ``checkpoint.npz`` with a SHA-256 of its arrays; the previous
                                   one is kept as ``checkpoint.prev.npz``
:func:`load_checkpoint`            the inverse; a corrupt or altered latest checkpoint falls back
                                   to the previous one, with a message
=================================  ==============================================================

Every write goes through :mod:`trpo_ref.fileio` (atomic, 0644, no debris).
This module knows nothing of what a checkpoint's arrays mean: that is
:class:`trpo_ref.train.Trainer`'s ``state_dict`` / ``load_state_dict``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import time
from pathlib import Path

import numpy as np

from .fileio import append_text, atomic_savez, atomic_write_text

__all__ = ["RunDirError", "RunLock", "claim_new_run_dir", "check_fresh", "is_run_dir", "CSVLog",
           "save_checkpoint", "load_checkpoint", "checksum", "CHECKPOINT", "PREVIOUS_CHECKPOINT", "LOCK_NAME",
           "load_npz"]

LOCK_NAME = ".lock"
CHECKPOINT = "checkpoint.npz"
PREVIOUS_CHECKPOINT = "checkpoint.prev.npz"


class RunDirError(ValueError):
    """A run directory that cannot be used as asked (one line, names the directory)."""


# --------------------------------------------------------------------------- naming
def claim_new_run_dir(root, seed: int) -> Path:
    """Create and return a new directory ``root/seed{seed}-{YYYYmmdd-HHMMSS}[-K]``.

    The ``mkdir`` is exclusive: of two jobs started in the same second with
    the same seed, one gets the plain name and the other ``-1``.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    k = 0
    while True:
        d = root / (f"seed{seed}-{stamp}" + (f"-{k}" if k else ""))
        try:
            d.mkdir()
            return d
        except FileExistsError:
            k += 1


# ----------------------------------------------------------------------------- lock
class RunLock:
    """An exclusive, non-blocking ``fcntl.flock`` on ``run_dir/.lock`` (released on exit or process death).

    Raises :class:`RunDirError` when another process holds it.  The lock file
    is the only thing created before the lock is held, and it is empty.
    """

    def __init__(self, run_dir):
        self.run_dir = Path(run_dir)
        self._fh = None

    def __enter__(self) -> "RunLock":
        import fcntl

        fh = open(self.run_dir / LOCK_NAME, "a+")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            raise RunDirError(f"{self.run_dir} is in use by another trpo-ref process (its lock {LOCK_NAME} "
                              "is held); wait for it to finish, or choose another --out") from None
        self._fh = fh
        return self

    def __exit__(self, *exc) -> None:
        if self._fh is not None:
            self._fh.close()  # closing the file releases the flock
            self._fh = None


# -------------------------------------------------------------------------- checks
def is_run_dir(run_dir) -> bool:
    """Whether ``run_dir/config.json`` is a trpo_ref run config (an object with ``train`` and ``trpo``)."""
    path = Path(run_dir) / "config.json"
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and isinstance(doc.get("train"), dict) and isinstance(doc.get("trpo"), dict)


def _entries(run_dir: Path) -> list[str]:
    return sorted(p.name for p in run_dir.iterdir() if p.name != LOCK_NAME)


def check_fresh(run_dir) -> None:
    """A new run may use ``run_dir`` only when it is missing or empty; otherwise one clear error.

    A directory holding a run (even one killed before its first checkpoint) needs
    ``--resume``; any other non-empty directory is never written into.
    """
    run_dir = Path(run_dir)
    if not run_dir.exists():
        return
    if not run_dir.is_dir():
        raise RunDirError(f"{run_dir} exists and is not a directory")
    entries = _entries(run_dir)
    if not entries:
        return
    if is_run_dir(run_dir):
        raise RunDirError(f"{run_dir} already holds a run: add --resume to continue it, or choose another --out")
    shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
    raise RunDirError(f"{run_dir} is not empty and holds no trpo_ref run ({shown}); "
                      "choose a new or empty directory for --out")


# ---------------------------------------------------------------------------- CSV
class CSVLog:
    """A CSV file whose first column is the iteration number: the one writer of progress and episodes.

    Parameters
    ----------
    path : path
    columns : sequence of str
        The header; the first column must be ``"iteration"``.
    one_row_per_iteration : bool
        progress.csv (exactly one row for each iteration) or episodes.csv (any number).
    """

    def __init__(self, path, columns, one_row_per_iteration: bool):
        self.path = Path(path)
        self.columns = tuple(columns)
        assert self.columns[0] == "iteration"
        self.one_row_per_iteration = one_row_per_iteration

    @staticmethod
    def format_rows(rows) -> str:
        """CSV text of ``rows`` (sequences of cells); floats are written with ``repr`` (round trip)."""
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        for r in rows:
            w.writerow([repr(v) if isinstance(v, float) else v for v in r])
        return buf.getvalue()

    def header(self) -> str:
        """The header line."""
        return self.format_rows([self.columns])

    def create(self) -> None:
        """Write the header only (atomically)."""
        atomic_write_text(self.path, self.header())

    def append(self, rows) -> None:
        """Append rows; an OSError names the file."""
        rows = list(rows)
        if rows:
            append_text(self.path, self.format_rows(rows))

    def trimmed(self, n_iterations: int) -> str:
        """The file's text cut to iterations ``1..n_iterations`` (validated; nothing is written).

        Rows are kept by their iteration number, not their position; a last
        line cut by a kill (no newline) is dropped.  progress.csv must then hold
        exactly iterations 1, ..., n in order; episodes.csv non-decreasing
        iterations.  Anything else is a ``ValueError`` naming the file.
        A missing file counts as empty when ``n_iterations`` is 0.
        """
        if not self.path.is_file():
            if n_iterations == 0:
                return self.header()
            raise ValueError(f"{self.path} is missing: the run's log cannot be continued")
        with open(self.path, newline="") as f:
            lines = f.read().splitlines(keepends=True)
        if not lines or lines[0] != self.header():
            raise ValueError(f"{self.path}: the header is not {','.join(self.columns)} (not this run's log?)")
        keep, iters = [lines[0]], []
        for k, ln in enumerate(lines[1:], start=2):
            if not ln.endswith("\n"):
                continue  # a line cut by a kill
            head = ln.split(",", 1)[0]
            try:
                it = int(head)
            except ValueError:
                raise ValueError(f"{self.path}: line {k}: iteration {head!r} is not an integer") from None
            if it <= n_iterations:
                keep.append(ln)
                iters.append(it)
        if self.one_row_per_iteration:
            if iters != list(range(1, n_iterations + 1)):
                raise ValueError(f"{self.path} does not hold exactly one row for each of iterations 1..{n_iterations} "
                                 "(rows missing, repeated or out of order): the log cannot be continued")
        elif any(b < a for a, b in zip(iters, iters[1:])):
            raise ValueError(f"{self.path}: iterations out of order: the log cannot be continued")
        return "".join(keep)

    def replace(self, text: str) -> None:
        """Replace the file's content atomically."""
        atomic_write_text(self.path, text)


# ---------------------------------------------------------------------- checkpoints
def checksum(arrays: dict) -> str:
    """SHA-256 over every array's name, dtype, shape and bytes, in name order (the ``checksum`` entry excluded)."""
    h = hashlib.sha256()
    for k in sorted(arrays):
        if k == "checksum":
            continue
        a = np.ascontiguousarray(arrays[k])
        h.update(f"{k}\0{a.dtype.str}\0{a.shape}\0".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def load_npz(path) -> dict:
    """All arrays of a .npz (``allow_pickle=False``); a ``ValueError`` naming the file when unreadable."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except Exception as exc:
        raise ValueError(f"cannot read {path}: {exc}") from exc


def save_checkpoint(run_dir, meta: dict, arrays: dict) -> Path:
    """Write ``checkpoint.npz`` = ``arrays`` + ``meta`` (JSON) + ``checksum``; the old one becomes
    ``checkpoint.prev.npz`` once the new one is on disk.  Inverse: :func:`load_checkpoint`."""
    run_dir = Path(run_dir)
    out = dict(arrays)
    out["meta"] = np.array(json.dumps(meta))
    out["checksum"] = np.array(checksum(out))
    return atomic_savez(run_dir / CHECKPOINT, out, keep_previous=run_dir / PREVIOUS_CHECKPOINT)


def _read_checkpoint(path: Path, formats) -> tuple[dict, dict]:
    z = load_npz(path)
    if "meta" not in z:
        raise ValueError(f"{path}: missing entry 'meta' (not a trpo_ref checkpoint?)")
    try:
        meta = json.loads(str(z["meta"]))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: entry 'meta' is not valid JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: entry 'meta' is not a JSON object (not a trpo_ref checkpoint?)")
    if meta.get("format") not in formats:
        raise ValueError(f"{path}: unknown checkpoint format {meta.get('format')!r}")
    if "checksum" in z or meta.get("format", 0) >= 2:
        if "checksum" not in z:
            raise ValueError(f"{path}: missing entry 'checksum'")
        if str(z["checksum"]) != checksum(z):
            raise ValueError(f"{path}: checksum mismatch (the file was altered or corrupted)")
    arrays = {k: v for k, v in z.items() if k not in ("meta", "checksum")}
    return meta, arrays


def load_checkpoint(run_dir, formats=(1, 2)):
    """``(meta, arrays, path, note)`` of the newest usable checkpoint, or None when there is none.

    ``note`` is None, or a one-line message when the latest checkpoint was
    missing, corrupt or altered and the previous one is used instead.  When
    no checkpoint is usable the latest one's error is raised (``ValueError``
    naming the file).
    """
    run_dir = Path(run_dir)
    latest, prev = run_dir / CHECKPOINT, run_dir / PREVIOUS_CHECKPOINT
    if not latest.exists() and not prev.exists():
        return None
    first_error = None
    for path in (latest, prev):
        if not path.exists():
            continue
        try:
            meta, arrays = _read_checkpoint(path, formats)
        except ValueError as exc:
            first_error = first_error or exc
            continue
        note = None
        if path == prev:
            why = str(first_error) if first_error is not None else f"{latest} is missing"
            note = f"{why}; continuing from the previous checkpoint {prev.name} (iteration {meta.get('iteration')})"
        return meta, arrays, path, note
    raise first_error


def remove_if_empty(run_dir) -> None:
    """Remove ``run_dir`` (and its lock file) when nothing else is in it."""
    run_dir = Path(run_dir)
    try:
        if run_dir.is_dir() and not _entries(run_dir):
            lock = run_dir / LOCK_NAME
            if lock.exists():
                os.unlink(lock)
            run_dir.rmdir()
    except OSError:
        pass
