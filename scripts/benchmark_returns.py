#!/usr/bin/env python
r"""Returns benchmark (issue 4): train with default settings over several seeds, compare with published figures.

Each run is ``python -m trpo_ref train ENV --seed S --out ROOT/ENV/seedS`` in a
subprocess with one BLAS thread, at most ``--jobs`` at a time.  A finished run
(its policy.npz exists) is reused unless ``--force``.  The score of a run is
the mean return of its last 20 episodes (episodes.csv); the table gives the
mean ± std of that score over seeds beside the target of the issue and the
published figure.  Learning curves go to ``docs/img/returns-<env>.png``.

The Markdown is written between ``<!-- returns:begin -->`` and
``<!-- returns:end -->`` of ``--md`` (other text in the file is kept).

Usage::

    python scripts/benchmark_returns.py                      # CartPole (5 seeds), Acrobot (3), Pendulum (3)
    python scripts/benchmark_returns.py --mujoco             # + Hopper, HalfCheetah, Walker2d at 1M (hours)
    python scripts/benchmark_returns.py --envs CartPole-v1 --jobs 1
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import csv
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from mdblock import write_marked_block  # scripts/ is sys.path[0]

ROOT = Path(__file__).resolve().parents[1]

#: env -> (seeds, total steps, target text, target test, published figure and its source)
BENCH = {
    "CartPole-v1": (5, 100_000, "≥ 475 on every seed", lambda s: min(s) >= 475,
                    "500 (RL-Zoo TRPO, 100k, 1 run)"),
    "Acrobot-v1": (3, 100_000, "≥ −100", lambda s: np.mean(s) >= -100, "−83.1 (RL-Zoo TRPO, 100k, 1 run)"),
    "Pendulum-v1": (3, 200_000, "mean ≥ −200", lambda s: np.mean(s) >= -200,
                    "−166 (SB3-contrib defaults, 200k); −174.6 (RL-Zoo TRPO with gSDE, 100k)"),
    "Hopper-v5": (3, 1_000_000, "mean ≥ 2500", lambda s: np.mean(s) >= 2500,
                  "3372 ± 215 (SB3-contrib docs, v3, 1M, 3 seeds); 1913 (OpenAI baselines)"),
    "HalfCheetah-v5": (3, 1_000_000, "reported", lambda s: True, "1803 ± 46 (SB3-contrib docs, v3, 1M)"),
    "Walker2d-v5": (3, 1_000_000, "reported", lambda s: True, "4502 ± 234 (SB3-contrib docs, v3, 1M)"),
}
MUJOCO = ("Hopper-v5", "HalfCheetah-v5", "Walker2d-v5")
SOLVED = {"CartPole-v1": 475.0}
WINDOW = 20


def run_one(env_id: str, seed: int, steps: int, out: Path, force: bool) -> tuple[str, int, float]:
    if (out / "policy.npz").is_file() and not force:
        return env_id, seed, 0.0
    if out.exists():
        import shutil

        shutil.rmtree(out)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "trpo_ref", "train", env_id, "--seed", str(seed), "--total-steps",
                    str(steps), "--out", str(out), "--quiet", "--no-plot"], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    return env_id, seed, time.perf_counter() - t0


def episodes(run_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """(total_steps at the end of the iteration each episode finished in, return)."""
    with open(run_dir / "episodes.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return (np.array([float(r["total_steps"]) for r in rows]), np.array([float(r["return"]) for r in rows]))


def score(run_dir: Path) -> float:
    _, ret = episodes(run_dir)
    return float(np.mean(ret[-WINDOW:]))


def steps_to_solve(run_dir: Path, threshold: float) -> float:
    """Env steps at the end of the first iteration where the last-20-episode mean reaches the threshold."""
    steps, ret = episodes(run_dir)
    for k in range(WINDOW, len(ret) + 1):
        if ret[k - WINDOW:k].mean() >= threshold:
            return float(steps[k - 1])
    return float("nan")


def wall_seconds(run_dir: Path) -> float:
    with open(run_dir / "progress.csv", newline="") as f:
        return float(list(csv.DictReader(f))[-1]["wall_s"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--envs", nargs="+", default=["CartPole-v1", "Acrobot-v1", "Pendulum-v1"], choices=list(BENCH))
    ap.add_argument("--mujoco", action="store_true", help="add Hopper, HalfCheetah and Walker2d (1M steps each)")
    ap.add_argument("--jobs", type=int, default=2, help="runs in parallel")
    ap.add_argument("--root", default=str(ROOT / "runs" / "bench"), help="where the runs go")
    ap.add_argument("--md", default=str(ROOT / "docs" / "benchmarks.md"))
    ap.add_argument("--img", default=str(ROOT / "docs" / "img"))
    ap.add_argument("--force", action="store_true", help="rerun finished runs")
    args = ap.parse_args()

    envs = list(args.envs) + ([e for e in MUJOCO if e not in args.envs] if args.mujoco else [])
    root = Path(args.root)
    jobs = [(e, s, BENCH[e][1], root / e / f"seed{s}") for e in envs for s in range(BENCH[e][0])]
    with cf.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futs = [pool.submit(run_one, *j, args.force) for j in jobs]
        for fut in cf.as_completed(futs):
            env_id, seed, dt = fut.result()
            print(f"{env_id} seed {seed}: {'reused' if dt == 0 else f'{dt:.0f} s'}", flush=True)

    sys.path.insert(0, str(ROOT))
    from trpo_ref.train import plot_runs

    img = Path(args.img)
    img.mkdir(parents=True, exist_ok=True)
    lines = ["| env | steps | seeds | last-20-episode return, mean ± std over seeds | per seed | target | met | "
             "published | wall s per run |", "|---|---:|---:|---|---|---|---|---|---:|"]
    extra = []
    for env_id in envs:
        n_seeds, steps, target, test, published = BENCH[env_id]
        dirs = [root / env_id / f"seed{s}" for s in range(n_seeds)]
        scores = [score(d) for d in dirs]
        walls = [wall_seconds(d) for d in dirs]
        lines.append(f"| {env_id} | {steps:,} | {n_seeds} | {np.mean(scores):.1f} ± {np.std(scores):.1f} | "
                     f"{', '.join(f'{s:.0f}' for s in scores)} | {target} | {'yes' if test(scores) else 'NO'} | "
                     f"{published} | {np.mean(walls):.0f} |")
        if env_id in SOLVED:
            solve = [steps_to_solve(d, SOLVED[env_id]) for d in dirs]
            extra.append(f"- {env_id}: the last-20-episode mean first reaches {SOLVED[env_id]:.0f} after "
                         f"{', '.join(f'{s / 1000:.0f}k' for s in solve)} steps (seeds 0–{n_seeds - 1}).")
        plot_runs(dirs, img / f"returns-{env_id}.png", title=f"trpo_ref, {n_seeds} seeds")

    block = "\n".join([
        "Generated by `python scripts/benchmark_returns.py` (default settings of each env, `--preset sb3-contrib`, "
        "one BLAS thread per run, two runs at a time on a shared 2-core machine).  Score of a run: mean return of "
        "its last 20 training episodes (stochastic policy).",
        "",
        *lines,
        "",
        *extra,
        "",
        *[f"![{e}](img/returns-{e}.png)" for e in envs],
    ])
    write_marked_block(args.md, "returns", block, "## Returns")
    print("\n".join(lines + extra))
    print(f"wrote {args.md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
