#!/usr/bin/env python
r"""Training speed against SB3-contrib's TRPO on CartPole-v1 (issue 4), side by side in one process.

Two measurements, one BLAS thread for both libraries (the variables below are
set before NumPy and torch load; torch also gets ``set_num_threads(1)``), the
contenders interleaved seed by seed so load from other processes hits both:

1. **Wall-clock to solve**: trpo_ref with its CartPole defaults
   (``trpo-ref train CartPole-v1``) against SB3-contrib ``TRPO("MlpPolicy", env)``
   with its defaults (one env, n_steps 2048).  Solved = the mean return of the
   last 20 finished episodes reaches 475; the clock starts when training starts
   (after the model is built) and is read at the end of the iteration where
   the criterion is first met.
2. **Env steps per second** over a whole training run (sampling *and* updates)
   with the same settings on both sides: SB3-contrib's defaults (1 env,
   n_steps 2048, 10 critic epochs of minibatch 128, CG 15, damping 0.1), for
   ``--steps`` steps.

Needs the ``bench`` extra (sb3-contrib, which brings torch).  Writes the
Markdown between ``<!-- speed:begin -->`` and ``<!-- speed:end -->`` of ``--md``.

Usage::

    python scripts/bench_vs_sb3_train.py                  # 3 seeds
    python scripts/bench_vs_sb3_train.py --seeds 1 --steps 8192
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import csv  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from mdblock import write_marked_block  # noqa: E402  (scripts/ is sys.path[0])

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SOLVE_AT, WINDOW = 475.0, 20


# ------------------------------------------------------------------ trpo_ref side
def ours(seed: int, total_steps: int, overrides: dict, out: Path) -> dict:
    from trpo_ref.train import build_configs, train

    cfg, tc = build_configs("CartPole-v1", "sb3-contrib", {"seed": seed, "total_steps": total_steps, **overrides})
    t0 = time.perf_counter()
    train(cfg, tc, out, quiet=True, plot=False, n_blas_threads=1)
    wall = time.perf_counter() - t0
    with open(out / "progress.csv", newline="") as f:
        prog = {int(r["iteration"]): (int(r["total_steps"]), float(r["wall_s"])) for r in csv.DictReader(f)}
    with open(out / "episodes.csv", newline="") as f:
        eps = [(int(r["iteration"]), float(r["return"])) for r in csv.DictReader(f)]
    solved_steps = solved_wall = float("nan")
    rets = [r for _, r in eps]
    for k in range(WINDOW, len(eps) + 1):
        if np.mean(rets[k - WINDOW:k]) >= SOLVE_AT:
            solved_steps, solved_wall = prog[eps[k - 1][0]]
            break
    return {"wall": wall, "steps": cfg.n_iterations * cfg.steps_per_iteration,
            "solved_steps": solved_steps, "solved_wall": solved_wall}


# ---------------------------------------------------------------------- SB3 side
def sb3(seed: int, total_steps: int, stop_when_solved: bool) -> dict:
    import gymnasium as gym
    import torch
    from sb3_contrib import TRPO
    from stable_baselines3.common.callbacks import BaseCallback

    torch.set_num_threads(1)

    class Solved(BaseCallback):
        """Records (steps, seconds) when the last-20-episode mean first reaches 475; may stop there."""

        def __init__(self):
            super().__init__()
            self.t0 = None
            self.solved = None
            self.returns = []

        def _on_training_start(self):
            self.t0 = time.perf_counter()

        def _on_step(self):
            for info in self.locals.get("infos", []):
                if "episode" in info:
                    self.returns.append(info["episode"]["r"])
            return not (stop_when_solved and self.solved is not None)

        def _on_rollout_end(self):
            if self.solved is None and len(self.returns) >= WINDOW and np.mean(self.returns[-WINDOW:]) >= SOLVE_AT:
                self.solved = (self.num_timesteps, time.perf_counter() - self.t0)

    env = gym.make("CartPole-v1")
    model = TRPO("MlpPolicy", env, seed=seed, device="cpu")
    cb = Solved()
    t0 = time.perf_counter()
    model.learn(total_timesteps=total_steps, callback=cb)
    wall = time.perf_counter() - t0
    solved_steps, solved_wall = cb.solved if cb.solved else (float("nan"), float("nan"))
    return {"wall": wall, "steps": model.num_timesteps, "solved_steps": solved_steps, "solved_wall": solved_wall}


def fmt(xs, unit=""):
    xs = np.asarray(xs, dtype=float)
    return f"{np.nanmean(xs):.1f}{unit} ± {np.nanstd(xs):.1f}{unit}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--solve-budget", type=int, default=200_000, help="steps at most when timing the solve")
    ap.add_argument("--steps", type=int, default=20_480, help="steps of the steps/s runs (10 iterations of 2048)")
    ap.add_argument("--md", default=str(ROOT / "docs" / "benchmarks.md"))
    args = ap.parse_args()

    import sb3_contrib
    import torch

    sb3_defaults = dict(n_envs=1, n_steps=2048, gamma=0.99, gae_lambda=0.95, critic_epochs=10,
                        critic_batch_size=128, critic_lr=1e-3, cg_damping=0.1)
    solve_ours, solve_sb3, speed_ours, speed_sb3 = [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.seeds):
            o = ours(seed, args.solve_budget, {}, Path(tmp) / f"solve{seed}")
            o["wall"] = o["solved_wall"]
            s = sb3(seed, args.solve_budget, stop_when_solved=True)
            solve_ours.append(o)
            solve_sb3.append(s)
            print(f"solve seed {seed}: trpo_ref {o['solved_wall']:.1f} s at {o['solved_steps']} steps | "
                  f"SB3-contrib {s['solved_wall']:.1f} s at {s['solved_steps']} steps", flush=True)
            o = ours(seed, args.steps, sb3_defaults, Path(tmp) / f"speed{seed}")
            s = sb3(seed, args.steps, stop_when_solved=False)
            speed_ours.append(o["steps"] / o["wall"])
            speed_sb3.append(s["steps"] / s["wall"])
            print(f"speed seed {seed}: trpo_ref {speed_ours[-1]:.0f} steps/s | SB3-contrib {speed_sb3[-1]:.0f} steps/s",
                  flush=True)

    t_ours = [r["solved_wall"] for r in solve_ours]
    t_sb3 = [r["solved_wall"] for r in solve_sb3]
    ratio_solve = np.nanmean(t_sb3) / np.nanmean(t_ours)
    ratio_speed = np.mean(speed_ours) / np.mean(speed_sb3)
    lines = [
        f"Generated by `python scripts/bench_vs_sb3_train.py --seeds {args.seeds}`: sb3-contrib "
        f"{sb3_contrib.__version__}, torch {torch.__version__}, one BLAS/torch thread, CPU, the two libraries "
        "interleaved seed by seed in one process on a shared 2-core machine.",
        "",
        "| measurement | trpo_ref | SB3-contrib TRPO | ratio (SB3 / trpo_ref time) | target |",
        "|---|---|---|---:|---|",
        f"| CartPole-v1 wall-clock to solve (last-20 mean ≥ 475), each with its defaults | {fmt(t_ours, ' s')} "
        f"(at {fmt([r['solved_steps'] / 1000 for r in solve_ours], 'k')} steps) | {fmt(t_sb3, ' s')} "
        f"(at {fmt([r['solved_steps'] / 1000 for r in solve_sb3], 'k')} steps) | {ratio_solve:.1f}× | ≥ 2× |",
        f"| env steps/s over a whole run, SB3 defaults on both sides (1 env, n_steps 2048, {args.steps} steps) | "
        f"{fmt(speed_ours)} | {fmt(speed_sb3)} | {ratio_speed:.1f}× | ≥ 5× |",
        "",
        "trpo_ref's CartPole defaults are SB3-contrib's defaults (trpo_ref/envs.py), so both rows compare the "
        "two implementations on the same settings; they differ in seeds (the solve steps differ by luck).",
    ]
    md = Path(args.md)
    write_marked_block(md, "speed", "\n".join(lines), "## Training speed against SB3-contrib")
    print("\n".join(lines[2:6]))
    print(f"wrote {md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
