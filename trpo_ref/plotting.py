"""Learning curves of training runs: ``trpo-ref plot`` and the plot.png of ``trpo-ref train``.

=================================  ==============================================================
:func:`learning_curve`             (total_steps, mean episode return) of one run's progress.csv
:func:`plot_runs`                  one panel per env, the mean over runs with a ±1 std band
=================================  ==============================================================

Needs matplotlib (the ``plot`` extra); the figure is written through
:func:`trpo_ref.fileio.atomic_write` (atomic, mode 0644).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from .fileio import atomic_write

__all__ = ["learning_curve", "plot_runs"]


def learning_curve(run_dir) -> tuple[np.ndarray, np.ndarray]:
    """(total_steps, mean episode return) of the iterations where episodes finished."""
    path = Path(run_dir) / "progress.csv"
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    with open(path, newline="") as f:
        header = next(csv.reader(f), [])
    for c in ("total_steps", "ep_return_mean"):
        if c not in header:
            raise ValueError(f"{path}: missing column {c!r} (not a trpo_ref progress.csv?)")
    pts = [(float(r["total_steps"]), float(r["ep_return_mean"])) for r in rows if r["ep_return_mean"] != ""]
    if not pts:
        return np.zeros(0), np.zeros(0)
    x, y = np.asarray(pts).T
    return x, y


def plot_runs(run_dirs, out_path, title: str | None = None) -> Path:
    """Learning curves of runs, one panel per env: the mean over runs with a ±1 std band.

    Curves are put on a common step grid (linear interpolation between
    iterations); a single run is drawn as a line.  Needs matplotlib (the
    ``plot`` extra); raises ImportError with the install command otherwise.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError("plotting needs matplotlib: pip install 'trpo-ref[plot]'") from exc
    groups: dict[str, list] = {}
    from .train import read_run_config

    for d in run_dirs:
        d = Path(d)
        doc = read_run_config(d)
        env_id = doc.get("env_id", doc["train"]["env_id"])
        groups.setdefault(env_id, []).append(learning_curve(d))
    fig, axes = plt.subplots(1, len(groups), figsize=(5.5 * len(groups), 4), squeeze=False)
    for ax, (env_id, curves) in zip(axes[0], groups.items()):
        curves = [c for c in curves if len(c[0])]
        if curves:
            hi = min(c[0][-1] for c in curves)
            lo = max(c[0][0] for c in curves)
            grid = np.linspace(lo, hi, 200)
            ys = np.stack([np.interp(grid, x, y) for x, y in curves])
            mean = ys.mean(axis=0)
            ax.plot(grid, mean, label=f"mean of {len(curves)} run(s)" if len(curves) > 1 else "episode return")
            if len(curves) > 1:
                std = ys.std(axis=0)
                ax.fill_between(grid, mean - std, mean + std, alpha=0.25, label="±1 std over runs")
        ax.set_title(env_id if title is None else f"{title}: {env_id}")
        ax.set_xlabel("environment steps")
        ax.set_ylabel("mean episode return per iteration")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")
    fig.tight_layout()
    out_path = Path(out_path)
    if not out_path.suffix:
        raise ValueError(f"{out_path} has no file extension: name an image file such as {out_path}.png")
    fmt = out_path.suffix[1:].lower()
    try:
        atomic_write(out_path, lambda fh: fig.savefig(fh, dpi=100, format=fmt))
    finally:
        plt.close(fig)
    return out_path
