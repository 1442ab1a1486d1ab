#!/usr/bin/env python
r"""Training throughput and time to solve against SB3-contrib's TRPO (issues 4 and 14), side by side.

Four measurements, one BLAS thread for both libraries (the variables below are
set before NumPy and torch load; torch also gets ``set_num_threads(1)``), the
contenders interleaved repetition by repetition so that load from other
processes hits both:

1. **Env steps per second over whole training runs** on each ``--envs`` id,
   with the same settings on both sides: trpo_ref's table for the env
   (trpo_ref/envs.py: CartPole-v1 = SB3-contrib's defaults, 1 env x 2048
   steps, 10 critic epochs; Hopper-v5 = RL-Zoo's MuJoCo block, 2 envs x 1024
   steps, VecNormalize, 20 critic epochs, CG 25) given to SB3-contrib
   (``n_envs``, ``n_steps``, ``batch_size``, ``n_critic_updates``,
   ``learning_rate``, ``cg_max_steps``, ``cg_damping``, ``target_kl``,
   ``gamma``, ``gae_lambda``, VecNormalize with the same clips).  Timed:
   trpo_ref's ``train()`` (env creation, run directory, logs, checkpoints)
   against SB3's env creation + ``TRPO(...)`` + ``learn()``, for
   ``--iters`` iterations; the ratio is taken per repetition (one pair run
   back to back), and the median and range over ``--reps`` are reported.
2. **Where the time goes**, from the same repetitions: trpo_ref's
   ``Trainer.step`` stage clocks (``Iteration.seconds``: rollout, advantages,
   policy update, critic fit, record) on a run with the same seed (so the same
   work), and the rest of ``train()`` (setup, logging, checkpoints) as the
   difference; SB3's rollout (``collect_rollouts``, between its callback's
   rollout start and end) and the rest (``train()``, logging).
3. **Per-env-step budget of** ``--budget-env`` (Hopper-v5; :func:`hopper_budget`), ``--budget-reps``
   repetitions in one process, each running one after another: MuJoCo's ``mj_step`` × frame_skip alone
   (the physics floor), the bare env's ``step`` (and its resets), one trpo_ref ``Trainer.step`` and one
   SB3-contrib iteration (``collect_rollouts`` + ``train()``), trpo_ref and SB3 swapping order each
   repetition.  SB3's iteration divided by each floor, rep by rep, is the ratio to SB3 that no
   implementation stepping the same env on one core could exceed.  Needs mujoco; ``--no-budget`` leaves
   it out.
4. **Wall-clock to solve CartPole-v1**: trpo_ref with its defaults
   (``trpo-ref train CartPole-v1``) against SB3-contrib ``TRPO("MlpPolicy",
   env)`` with its defaults, ``--solve-seeds`` seeds.  Solved = the mean return
   of the last 20 finished episodes reaches 475; the clock starts when training
   starts (after the model is built) and is read at the end of the iteration
   where the criterion is first met.  Interleaved seed by seed: the two runs of
   a seed back to back, trpo_ref first on even seeds and SB3-contrib first on
   odd ones (:func:`solve_order`); the ratio is taken per seed.

``OPENBLAS_CORETYPE`` / ``OPENBLAS_L2_SIZE``: when set (this machine sets the
core type to Haswell, which slows current OpenBLAS on its AVX-512 processor),
the script starts itself again without them, for its own process only, and
says so in the output.  Every table names the machine and the BLAS kernels
loaded (threadpoolctl).

Writes the Markdown between ``<!-- train:begin -->`` and ``<!-- train:end -->``
of ``--md`` (docs/performance.md).  ``--quick`` (seconds: CartPole-v1's
throughput, one tiny repetition; the solve cut at 2048 steps on seeds 0 and 1, so that
nothing solves but both orders run) writes to a new temporary directory and never
into docs/ (its budget: 2 repetitions of 2 × 32 steps, when mujoco is installed).

Usage::

    python scripts/bench_vs_sb3_train.py                       # 5-25 min on the shared 2-core machine
    python scripts/bench_vs_sb3_train.py --reps 3 --solve-seeds 2
    python scripts/bench_vs_sb3_train.py --quick                # smoke run (tests/test_bench_train_smoke.py)
"""

from __future__ import annotations

import os
import sys

_LIFT = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
if any(k in os.environ for k in _LIFT) and "_TRPO_REF_BENCH_LIFTED" not in os.environ:
    _env = {k: v for k, v in os.environ.items() if k not in _LIFT}
    _env["_TRPO_REF_BENCH_LIFTED"] = ", ".join(f"{k}={os.environ[k]}" for k in _LIFT if k in os.environ)
    os.execve(sys.executable, [sys.executable, *sys.argv], _env)  # same as: env -u OPENBLAS_CORETYPE -u ...

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import csv  # noqa: E402
import platform  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from mdblock import write_marked_block  # noqa: E402  (scripts/ is sys.path[0])

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SOLVE_AT, WINDOW = 475.0, 20
STAGES = ("rollout", "advantages", "policy_update", "critic", "record")


# ------------------------------------------------------------------ the machine
def machine_line() -> str:
    """CPU, cores, versions, and the BLAS libraries loaded with their kernel (threadpoolctl)."""
    import gymnasium
    import sb3_contrib
    import torch
    from threadpoolctl import threadpool_info

    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    blas = []
    for lib in threadpool_info():
        if lib.get("user_api") != "blas":
            continue
        name = f"{lib.get('internal_api')} {lib.get('version') or ''}".strip()
        arch = lib.get("architecture")
        blas.append(f"{name} (kernel {arch}, {lib.get('num_threads')} thread)" if arch else
                    f"{name} ({lib.get('num_threads')} thread)")
    lifted = os.environ.get("_TRPO_REF_BENCH_LIFTED")
    lift = (f"lifted for this process: {lifted}" if lifted else "OPENBLAS_CORETYPE not set")
    try:
        import mujoco
        mj = f", mujoco {mujoco.__version__}"
    except ImportError:
        mj = ""
    return (f"**{cpu}** ({os.cpu_count()} logical CPUs, shared with other jobs), Python {platform.python_version()}, "
            f"NumPy {np.__version__}, torch {torch.__version__} ({torch.get_num_threads()} thread), "
            f"sb3-contrib {sb3_contrib.__version__}, gymnasium {gymnasium.__version__}{mj}; "
            f"BLAS: {'; '.join(blas) or 'none reported'}; {lift}.")


# ------------------------------------------------------------------ trpo_ref side
def ours_configs(env_id: str, seed: int, iters: int, n_steps: int | None):
    from trpo_ref.train import build_configs

    over = {"seed": seed}
    if n_steps:
        over["n_steps"] = n_steps
    cfg, tc = build_configs(env_id, "sb3-contrib", over)
    cfg, tc = build_configs(env_id, "sb3-contrib", {**over, "total_steps": iters * cfg.steps_per_iteration})
    return cfg, tc


def ours_train(cfg, tc, out: Path) -> dict:
    """trpo_ref's ``train()``, timed whole; progress and episodes read back."""
    from trpo_ref.train import train

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


# ------------------------------------------------------------------ SB3's model
def sb3_model(cfg, tc, seed: int):
    """SB3-contrib's ``TRPO`` with trpo_ref's settings: ``cfg.n_envs`` envs (``make_vec_env``), VecNormalize
    with the same clips where trpo_ref normalises, the same rollout length, critic schedule, CG and line search."""
    from sb3_contrib import TRPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    venv = make_vec_env(cfg.env_id, n_envs=cfg.n_envs, seed=seed)
    if cfg.normalize_obs or cfg.normalize_reward:
        venv = VecNormalize(venv, norm_obs=cfg.normalize_obs, norm_reward=cfg.normalize_reward,
                            clip_obs=cfg.obs_clip, clip_reward=cfg.reward_clip, gamma=cfg.gamma)
    return TRPO("MlpPolicy", venv, n_steps=cfg.n_steps, batch_size=cfg.critic_batch_size,
                n_critic_updates=cfg.critic_epochs, learning_rate=cfg.critic_lr, gamma=cfg.gamma,
                gae_lambda=cfg.gae_lambda, cg_max_steps=tc.cg_iters, cg_damping=tc.cg_damping,
                target_kl=tc.max_kl, line_search_shrinking_factor=tc.backtrack_coeff,
                line_search_max_iter=tc.backtrack_iters,
                policy_kwargs=dict(net_arch=dict(pi=list(cfg.hidden_sizes), vf=list(cfg.vf_hidden_sizes)),
                                   log_std_init=cfg.log_std_init),
                seed=seed, device="cpu")


def paired_iterations(cfg, tc, seed: int, run_dir: Path) -> dict:
    """One trpo_ref iteration before each SB3-contrib iteration, in one process: per-iteration seconds of each.

    SB3's ``learn`` calls its callback's ``_on_rollout_start`` at the start of
    every iteration; there one trpo_ref iteration runs (``Trainer.step`` and the
    per-iteration file work ``train()`` does: the progress and episode rows, a
    checkpoint after iteration 1, every ``checkpoint_every`` and after the
    last).  SB3's iteration k is then the time from the end of trpo_ref's
    iteration k to the start of trpo_ref's iteration k+1 (or the end of
    ``learn``): its ``collect_rollouts`` and ``train()``.  Load that comes and
    goes on a shared machine hits both sides of each pair alike.
    """
    import torch
    from stable_baselines3.common.callbacks import BaseCallback
    from threadpoolctl import threadpool_limits

    from trpo_ref import rundir
    from trpo_ref.train import EPISODE_COLUMNS, PROGRESS_COLUMNS, Trainer

    torch.set_num_threads(1)
    n_iter = cfg.n_iterations
    trainer = Trainer(cfg, tc)
    run_dir.mkdir(parents=True)
    progress = rundir.CSVLog(run_dir / "progress.csv", PROGRESS_COLUMNS, one_row_per_iteration=True)
    episodes = rundir.CSVLog(run_dir / "episodes.csv", EPISODE_COLUMNS, one_row_per_iteration=False)
    progress.create()
    episodes.create()
    ours, stages, marks, roll_end = [], [], [], []

    def our_iteration():
        t0 = time.perf_counter()
        rec = trainer.step()
        it = rec.row["iteration"]
        t1 = time.perf_counter()
        progress.append([[rec.row[c] for c in PROGRESS_COLUMNS]])
        episodes.append([[it, rec.row["total_steps"], r, n] for r, n in rec.episodes])
        if it == 1 or it % cfg.checkpoint_every == 0 or it == n_iter:
            rundir.save_checkpoint(run_dir, *trainer.state_dict())
        t2 = time.perf_counter()
        ours.append(t2 - t0)
        # (getattr: the script also times older trpo_ref versions, whose records have no stage clocks)
        stages.append({**dict.fromkeys(STAGES, float("nan")), **getattr(rec, "seconds", {}), "files": t2 - t1})
        return t0, t2

    class Pair(BaseCallback):
        def _on_rollout_start(self):
            if len(ours) < n_iter:
                marks.append(our_iteration())
            else:
                marks.append((time.perf_counter(),) * 2)

        def _on_rollout_end(self):
            roll_end.append(time.perf_counter())

        def _on_step(self):
            return True

    model = sb3_model(cfg, tc, seed)
    with threadpool_limits(limits=1, user_api="blas"):
        model.learn(total_timesteps=n_iter * cfg.steps_per_iteration, callback=Pair())
    t_end = time.perf_counter()
    trainer.close()
    starts = [m[0] for m in marks[1:]] + [t_end]
    sb3 = [s_next - m[1] for m, s_next in zip(marks, starts)]
    sb3_roll = [r - m[1] for m, r in zip(marks, roll_end)]
    return {"ours": ours, "stages": stages, "sb3": sb3, "sb3_rollout": sb3_roll,
            "steps": cfg.steps_per_iteration}


# ---------------------------------------------------------------------- SB3 side
class _Clock:
    """SB3 callback: rollout seconds (collect_rollouts), solve time, optional stop when solved."""

    def __new__(cls, stop_when_solved: bool):
        from stable_baselines3.common.callbacks import BaseCallback

        class Clock(BaseCallback):
            def __init__(self):
                super().__init__()
                self.t0 = self.solved = self.t_roll = None
                self.rollout_s = 0.0
                self.returns = []

            def _on_training_start(self):
                self.t0 = time.perf_counter()

            def _on_rollout_start(self):
                self.t_roll = time.perf_counter()

            def _on_step(self):
                for info in self.locals.get("infos", []):
                    if "episode" in info:
                        self.returns.append(info["episode"]["r"])
                return not (stop_when_solved and self.solved is not None)

            def _on_rollout_end(self):
                self.rollout_s += time.perf_counter() - self.t_roll
                if self.solved is None and len(self.returns) >= WINDOW and \
                        np.mean(self.returns[-WINDOW:]) >= SOLVE_AT:
                    self.solved = (self.num_timesteps, time.perf_counter() - self.t0)

        return Clock()


def sb3_run(cfg, tc, seed: int, stop_when_solved: bool = False, defaults: bool = False) -> dict:
    """SB3-contrib's TRPO with trpo_ref's settings (``defaults``: its own defaults), timed from env creation."""
    import torch
    from sb3_contrib import TRPO

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    if defaults:
        import gymnasium as gym

        model = TRPO("MlpPolicy", gym.make(cfg.env_id), seed=seed, device="cpu")
    else:
        model = sb3_model(cfg, tc, seed)
    cb = _Clock(stop_when_solved)
    model.learn(total_timesteps=cfg.total_steps, callback=cb)
    wall = time.perf_counter() - t0
    solved_steps, solved_wall = cb.solved if cb.solved else (float("nan"), float("nan"))
    return {"wall": wall, "steps": model.num_timesteps, "rollout": cb.rollout_s,
            "solved_steps": solved_steps, "solved_wall": solved_wall}


# --------------------------------------------------------------- env stepping alone
def env_step_costs(n_envs_list=(1, 8, 64), steps: int = 2000, reps: int = 5) -> list[str]:
    """µs per env step of CartPole-v1 three ways, interleaved, median over ``reps``: gymnasium's
    SyncVectorEnv, the bare envs the rollout steps (``VectorRollout._direct_steps``), and gymnasium's own
    vectorised CartPole (``make_vec(..., vectorization_mode="vector_entry_point")``); constant action 0,
    the first two resetting an env whose episode ended (through ``SyncVectorEnv.reset``, and each env
    itself, as :meth:`VectorRollout._reset` does for each path), the third autoresetting itself
    (NEXT_STEP)."""
    import gymnasium as gym

    from trpo_ref.rollout import VectorRollout

    rows = []
    for E in n_envs_list:
        n = max(steps // E, 50)
        roll = VectorRollout("CartPole-v1", E, seed=0)  # the rollout's path: bare steps, each env reset itself
        roll.start()
        direct = roll._direct_steps()
        roll_sync = VectorRollout("CartPole-v1", E, seed=0)  # the fallback: SyncVectorEnv's step and reset
        roll_sync._direct = False
        roll_sync.start()
        vec = gym.make_vec("CartPole-v1", num_envs=E, vectorization_mode="vector_entry_point")
        vec.reset(seed=0)
        a_e = np.zeros(E, dtype=np.int64)

        def sync():
            for _ in range(n):
                obs, _, te, tr, _ = roll_sync.envs.step(a_e)
                if (te | tr).any():
                    roll_sync._reset(te | tr, obs)

        def bare():
            for _ in range(n):
                done = []
                for i, (step_i, _) in enumerate(direct):
                    _, _, te, tr, _ = step_i(a_e[i])
                    if te or tr:
                        done.append(i)
                if done:
                    roll._reset(np.isin(np.arange(E), done), roll.obs_eo)

        def vector():
            for _ in range(n):
                vec.step(a_e)

        t = {f: [] for f in (sync, bare, vector)}
        for _ in range(reps):
            for f in t:
                t0 = time.perf_counter()
                f()
                t[f].append((time.perf_counter() - t0) / (n * E) * 1e6)
        roll.close()
        roll_sync.close()
        vec.close()
        m = {f.__name__: float(np.median(v)) for f, v in t.items()}
        rows.append(f"| {E} | {m['sync']:.2f} | {m['bare']:.2f} | {m['vector']:.2f} |")
    return rows


# ------------------------------------------------------------- Hopper's per-step budget
def hopper_budget(env_id: str, reps: int, n_steps: int | None = None, seed: int = 0) -> dict:
    r"""Per env step (µs), interleaved rep by rep: the physics floor, the bare env, each library's rollout and iteration.

    Each repetition runs, one after another, on ``cfg.steps_per_iteration`` env steps:

    (a) *physics floor*: ``mujoco.mj_step(model, data, nstep=frame_skip)`` alone, on the unwrapped env's
        model and data, driven by actions :math:`\mathrm{clip}(\mathcal N(0, I), -1, 1)` (what a fresh
        Gaussian policy with log σ = 0 draws); only the ``mj_step`` call is timed, the env is reset
        (untimed) when it becomes unhealthy, so the states are those of early training;
    (b) *bare env step*: ``env.unwrapped.step(action)`` (``do_simulation``, ``mj_rnePostConstraint``,
        observation, reward, health), same actions, reset untimed; and the resets, timed apart,
        spread over the steps (column "bare step + resets");
    (c, e) trpo_ref: one ``Trainer.step`` (the table's settings): its rollout stage
        (``VectorRollout.collect``, the normaliser updates) and the whole step;
    (d, e) SB3-contrib: ``collect_rollouts`` and then ``train()`` (``learn``'s loop body without
        ``dump_logs``) on a model built by :func:`sb3_model`;
    (f) *trpo_ref's matrix products alone*: the bare matrix products (:func:`linear_algebra_floor`) of
        that repetition's update, as many FVPs as its CG and β actually made, and of the critic's
        ``critic_epochs`` × ⌈S / ``critic_batch_size``⌉ minibatch forward and backward passes, each
        the fastest of 3 calls: what the update costs with no Python, no elementwise work and no
        allocation.  The smaller products (θ_old's forward, the gradient, the line search, the
        critic's values for GAE) are left out, so (f) is a lower bound.

    trpo_ref and SB3 swap order every repetition.  The first repetition is warm-up and left out
    (unless there is only one).  Returns the per-step µs of each quantity per repetition.
    """
    import gymnasium as gym
    import mujoco
    import torch
    from threadpoolctl import threadpool_limits

    from trpo_ref.train import Trainer

    torch.set_num_threads(1)
    cfg, tc = ours_configs(env_id, seed, reps, n_steps)
    S = cfg.steps_per_iteration
    env = gym.make(env_id)
    u = env.unwrapped
    frame_skip = int(u.frame_skip)
    act_rng = np.random.default_rng([seed, 7])
    lo, hi = env.action_space.low, env.action_space.high

    def physics() -> float:
        env.reset(seed=int(act_rng.integers(2**31)))
        m, d, dt = u.model, u.data, 0.0
        for _ in range(S):
            d.ctrl[:] = np.clip(act_rng.standard_normal(lo.shape), lo, hi)
            t0 = time.perf_counter()
            mujoco.mj_step(m, d, nstep=frame_skip)
            dt += time.perf_counter() - t0
            if not u.is_healthy:
                env.reset(seed=int(act_rng.integers(2**31)))
        return dt

    def bare() -> tuple[float, float]:
        env.reset(seed=int(act_rng.integers(2**31)))
        step, t_step, t_reset = u.step, 0.0, 0.0
        for _ in range(S):
            a = np.clip(act_rng.standard_normal(lo.shape), lo, hi)
            t0 = time.perf_counter()
            _, _, term, _, _ = step(a)
            t1 = time.perf_counter()
            t_step += t1 - t0
            if term:
                env.reset(seed=int(act_rng.integers(2**31)))
                t_reset += time.perf_counter() - t1
        return t_step, t_reset

    trainer = Trainer(cfg, tc)
    model = sb3_model(cfg, tc, seed)
    model._setup_learn(total_timesteps=(reps + 1) * S, callback=None)  # what learn() does before its loop
    callback = model._init_callback(None)
    callback.on_training_start(locals(), globals())

    def ours() -> tuple[float, float, int]:
        rec = trainer.step()
        return rec.seconds["rollout"], sum(rec.seconds.values()), rec.info.n_fisher_products

    def sb3() -> tuple[float, float]:
        t0 = time.perf_counter()
        model.collect_rollouts(model.env, callback, model.rollout_buffer, n_rollout_steps=model.n_steps)
        t1 = time.perf_counter()
        model.train()
        return t1 - t0, time.perf_counter() - t0

    fvp_floor, critic_floor, critic_minibatches = linear_algebra_floor(trainer, S)
    keys = ("physics", "bare", "bare_resets", "ours_rollout", "ours_iter", "sb3_rollout", "sb3_iter", "algebra")
    out = {k: [] for k in keys}
    n_fvps = []
    with threadpool_limits(limits=1, user_api="blas"):
        for rep in range(reps):
            ph = physics()
            b_step, b_reset = bare()
            if rep % 2 == 0:
                o, s3 = ours(), sb3()
            else:
                s3, o = sb3(), ours()
            *o, n_fvp = o
            algebra = best_of(fvp_floor) * n_fvp + best_of(critic_floor)
            if rep == 0 and reps > 1:
                continue
            n_fvps.append(n_fvp)
            for k, v in zip(keys, (ph, b_step, b_step + b_reset, *o, *s3, algebra)):
                out[k].append(v / S * 1e6)
    trainer.close()
    model.env.close()
    env.close()
    return {"per_step_us": out, "frame_skip": frame_skip, "steps": S, "n_envs": cfg.n_envs,
            "n_steps": cfg.n_steps, "pairs": len(out["physics"]), "n_fvps": n_fvps,
            "critic_minibatches": critic_minibatches}


def best_of(fn, k: int = 3) -> float:
    """The fastest of ``k`` calls of ``fn``, in seconds: load only ever adds time, and (f) is a lower bound."""
    times = []
    for _ in range(k):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def linear_algebra_floor(trainer, n_rows: int):
    """(one FVP's bare matrix products, the critic fit's bare matrix products, as callables; the fit's minibatches).

    The FVP's are scripts/bench.py's :func:`matmul_floor` on the trainer's policy network, ``n_rows``
    samples (the batch; the presets here use all of it for the Fisher).  The critic's are those of
    :func:`trpo_ref.value.fit_adam`'s ``critic_epochs`` epochs of ⌈n_rows / B⌉ minibatches (B =
    ``critic_batch_size``; the last one has the remaining rows): every layer's ``h W`` (forward),
    ``hᵀ z̄`` and, but for the first layer, ``z̄ Wᵀ`` (backward).  Operands
    are precomputed in the trainer's dtype, so only the products are timed.
    """
    from bench import matmul_floor  # scripts/ is sys.path[0]

    cfg = trainer.cfg
    rng = np.random.default_rng(3)
    theta = np.asarray(trainer.theta)
    obs = rng.standard_normal((n_rows, trainer.rollout.obs_dim)).astype(theta.dtype)
    fvp_floor = matmul_floor(trainer.policy.mlp, theta, obs, rng)
    B = cfg.critic_batch_size
    sizes = [B] * (n_rows // B) + ([n_rows % B] if n_rows % B else [])  # one epoch's minibatches
    w = np.asarray(trainer.w)
    operands = {}
    for rows in set(sizes):
        _, cache = trainer.vf.mlp.forward(w, obs[:rows])
        operands[rows] = (cache.inputs, cache.weights,
                          [rng.standard_normal((rows, W.shape[1])).astype(w.dtype) for W in cache.weights])

    def critic_floor():
        for _ in range(cfg.critic_epochs):
            for rows in sizes:
                hs, Ws, z_bars = operands[rows]
                for h, W in zip(hs, Ws):
                    h @ W
                for l, (h, W, z_bar) in enumerate(zip(hs, Ws, z_bars)):
                    h.T @ z_bar
                    if l > 0:
                        z_bar @ W.T

    return fvp_floor, critic_floor, cfg.critic_epochs * len(sizes)


def budget_lines(env_id: str, b: dict) -> list[str]:
    """The per-env-step budget table and the ceilings derived from it (rep by rep: SB3's iteration ÷ each floor)."""
    us = {k: np.asarray(v) for k, v in b["per_step_us"].items()}

    def cell(k):
        return med(us[k])

    rows = [
        ("(a) physics floor: `mujoco.mj_step` × frame_skip "
         f"({b['frame_skip']}) per env step", "physics"),
        ("(b) bare env step: `env.unwrapped.step` (no wrappers, no resets)", "bare"),
        ("(b′) bare env step + its resets, spread over the steps", "bare_resets"),
        ("(c) trpo_ref rollout (`Trainer.step`'s rollout stage: `VectorRollout.collect`)", "ours_rollout"),
        ("(d) SB3-contrib `collect_rollouts`", "sb3_rollout"),
        ("(e) trpo_ref whole iteration (`Trainer.step`)", "ours_iter"),
        ("(e) SB3-contrib whole iteration (`collect_rollouts` + `train()`)", "sb3_iter"),
        ("(f) trpo_ref's update as bare matrix products, a lower bound: its FVPs "
         f"(median {np.median(b['n_fvps']):.0f} per update, {min(b['n_fvps'])}–{max(b['n_fvps'])}, as its CG and β "
         f"made them) and the critic's "
         f"{b['critic_minibatches']} minibatch passes", "algebra"),
    ]
    share = lambda a, b_: med(100 * us[a] / us[b_])  # noqa: E731
    # From the medians, not rep by rep: (b′) and an iteration are timed seconds apart, and a loaded
    # repetition can make one iteration less (b′) negative.
    env_us = np.median(us["bare_resets"])
    own_work = (np.median(us["sb3_iter"]) - env_us) / (np.median(us["ours_iter"]) - env_us)
    lines = [
        f"### {env_id} per-env-step budget (µs per env step, median (min–max) over {b['pairs']} interleaved "
        "repetitions)",
        "",
        f"Each repetition: (a), (b), then one trpo_ref iteration and one SB3-contrib iteration (their order "
        f"swapped every repetition), each on {b['steps']} env steps ({b['n_envs']} envs × {b['n_steps']}); "
        "the first repetition left out as warm-up. (a) and (b) are driven by clip(N(0, I), −1, 1) actions "
        "(a fresh policy's), reset when the hopper falls, the reset outside the clock. "
        "`scripts/bench_vs_sb3_train.py` `hopper_budget`.",
        "",
        "| quantity | µs per env step |",
        "|---|---|",
        *[f"| {name} | {cell(k)} |" for name, k in rows],
        "",
        "| derived (rep by rep) | median (min–max) |",
        "|---|---|",
        f"| physics floor as a share of trpo_ref's rollout | {share('physics', 'ours_rollout')} % |",
        f"| bare env step + resets as a share of trpo_ref's rollout | {share('bare_resets', 'ours_rollout')} % |",
        f"| trpo_ref's rollout as a share of its iteration | {share('ours_rollout', 'ours_iter')} % |",
        f"| SB3 / trpo_ref whole iteration (this table's pairs) | {ratio_cell(us['sb3_iter'] / us['ours_iter'], 5.0)} |",
        f"| **ceiling**: SB3 whole iteration ÷ physics floor | {med(us['sb3_iter'] / us['physics'])}× |",
        f"| **ceiling**: SB3 whole iteration ÷ bare env step | {med(us['sb3_iter'] / us['bare'])}× |",
        f"| **ceiling**: SB3 whole iteration ÷ (bare env step + resets) | {med(us['sb3_iter'] / us['bare_resets'])}× |",
        "| **ceiling with the update's matrix products**: SB3 whole iteration ÷ ((b′) + (f)) "
        f"| {med(us['sb3_iter'] / (us['bare_resets'] + us['algebra']))}× |",
        "| the trainers' own work: SB3 / trpo_ref, each whole iteration less (b′), from the medians above "
        f"| {own_work:.1f}× |",
        "",
        "A ceiling is the SB3 / ours ratio an implementation would reach if its whole iteration cost only that "
        "floor per env step (nothing for the policy, the update, the critic): no implementation stepping the "
        "same env on one core can exceed it. The last ceiling adds (f), the matrix products trpo_ref's "
        "update cannot do without at these settings and dtype: no trpo_ref iteration, however lean its "
        "Python and elementwise work, can exceed it. The last row takes the env's own cost (b′) out of both "
        "iterations: what each library adds per env step (its policy, wrappers, update and critic).",
    ]
    return lines


# ----------------------------------------------------------------------- helpers
def solve_order(seed: int) -> tuple[str, str]:
    """Which library times its solve first for ``seed``: trpo_ref on even seeds, SB3-contrib on odd ones."""
    return ("trpo_ref", "SB3-contrib") if seed % 2 == 0 else ("SB3-contrib", "trpo_ref")


def med(xs) -> str:
    xs = np.asarray(xs, dtype=float)
    xs = xs[np.isfinite(xs)]
    if xs.size == 0:
        return "n/a"
    f = (lambda x: f"{x:.0f}") if np.min(xs) >= 100 else (lambda x: f"{x:.3g}")
    return f"{f(np.median(xs))} ({f(np.min(xs))}–{f(np.max(xs))})" if xs.size > 1 else f(xs[0])


def ratio_cell(xs, target: float) -> str:
    xs = np.asarray(xs, dtype=float)
    xs = xs[np.isfinite(xs)]
    if xs.size == 0:
        return "n/a"
    m = float(np.median(xs))
    rng = f" ({np.min(xs):.2f}–{np.max(xs):.2f})" if xs.size > 1 else ""
    return f"{m:.2f}×{rng} {'✅' if m >= target else '❌'}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--envs", nargs="+", default=["CartPole-v1", "Hopper-v5"])
    ap.add_argument("--reps", type=int, default=3, help="throughput runs per env (each of --iters paired iterations)")
    ap.add_argument("--iters", type=int, default=10, help="training iterations per throughput run")
    ap.add_argument("--solve-seeds", type=int, default=3)
    ap.add_argument("--solve-budget", type=int, default=100_000, help="steps at most when timing the solve")
    ap.add_argument("--no-env-steps", action="store_true", help="leave out the CartPole stepping-alone table")
    ap.add_argument("--budget-env", default="Hopper-v5", help="env of the per-env-step budget table (MuJoCo)")
    ap.add_argument("--budget-reps", type=int, default=9, help="repetitions of the budget (the first is warm-up)")
    ap.add_argument("--no-budget", action="store_true", help="leave out the per-env-step budget table")
    ap.add_argument("--md", default=None, help="Markdown file to write (default docs/performance.md)")
    ap.add_argument("--quick", action="store_true",
                    help="seconds: CartPole-v1, 1 rep, 2 iterations of 256 steps, a 2048-step solve on 2 seeds; "
                         "a temporary directory")
    args = ap.parse_args()
    n_steps, budget_steps = None, None
    if args.quick:
        args.envs, args.reps, args.iters, args.solve_seeds, n_steps = ["CartPole-v1"], 1, 2, 2, 256
        args.solve_budget = 2048  # one iteration per library and seed: nothing solves, both orders run
        args.budget_reps, budget_steps = 2, 32
        md = Path(tempfile.mkdtemp(prefix="bench_train_")) / "performance.md"
        if args.md is not None:
            print("--quick ignores --md: it writes to a temporary directory, never into docs/", file=sys.stderr)
    else:
        md = Path(args.md) if args.md else ROOT / "docs" / "performance.md"

    machine = machine_line()
    print(machine, flush=True)
    rows, stage_rows, ratio_all = [], [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for env_id in args.envs:
            ours_it, sb3_it, ratios, st_ours, sb3_roll = [], [], [], [], []
            for rep in range(args.reps):
                cfg, tc = ours_configs(env_id, rep, args.iters, n_steps)
                res = paired_iterations(cfg, tc, rep, Path(tmp) / f"{env_id}-{rep}")
                skip = 0 if args.quick else 1  # the first pair of each run: warm-up (first calls, caches)
                for k in range(skip, len(res["ours"])):
                    ours_it.append(res["ours"][k])
                    sb3_it.append(res["sb3"][k])
                    ratios.append(res["sb3"][k] / res["ours"][k])
                    st_ours.append(res["stages"][k])
                    sb3_roll.append(res["sb3_rollout"][k])
                print(f"{env_id} rep {rep}: trpo_ref {cfg.steps_per_iteration / np.median(res['ours']):.0f} steps/s | "
                      f"SB3-contrib {cfg.steps_per_iteration / np.median(res['sb3']):.0f} steps/s | ratio "
                      f"{np.median(np.divide(res['sb3'], res['ours'])):.2f}", flush=True)
            ratio_all[env_id] = ratios
            spi = cfg.steps_per_iteration
            rows.append(f"| {env_id} | {cfg.n_envs} × {cfg.n_steps}, {cfg.critic_epochs} critic epochs of "
                        f"{cfg.critic_batch_size}, CG {tc.cg_iters}{', VecNormalize' if cfg.normalize_obs else ''} "
                        f"| {len(ratios)} | {med(spi / np.asarray(ours_it))} | {med(spi / np.asarray(sb3_it))} | "
                        f"{ratio_cell(ratios, 5.0)} |")
            keys = (*STAGES, "files")
            ms = {k: np.median([d[k] for d in st_ours]) * 1e3 for k in keys}
            whole = np.median(ours_it) * 1e3
            stage_rows.append(f"| {env_id} | trpo_ref | " + " | ".join(
                f"{ms[k]:.1f} ({100 * ms[k] / whole:.0f} %)" for k in keys) + f" | {whole:.1f} |")
            r_ms, s_ms = np.median(sb3_roll) * 1e3, np.median(sb3_it) * 1e3
            stage_rows.append(f"| {env_id} | SB3-contrib | {r_ms:.1f} ({100 * r_ms / s_ms:.0f} %) | — | "
                              f"{s_ms - r_ms:.1f} ({100 * (s_ms - r_ms) / s_ms:.0f} %): policy step, critic "
                              f"epochs, logging | — | — | — | {s_ms:.1f} |")

        budget = []
        if not args.no_budget:
            import importlib.util

            if importlib.util.find_spec("mujoco") is None:
                print("no per-env-step budget: mujoco is not installed (the `mujoco` extra)", flush=True)
            else:
                b = hopper_budget(args.budget_env, args.budget_reps, budget_steps)
                budget = budget_lines(args.budget_env, b)
                print("\n".join(budget), flush=True)
        env_rows = [] if args.no_env_steps else env_step_costs((1, 8) if args.quick else (1, 8, 64),
                                                               steps=200 if args.quick else 2000)
        from trpo_ref.train import build_configs

        solve_o, solve_s = [], []
        for seed in range(args.solve_seeds):  # interleaved: the two runs of a seed back to back, the first swapped
            cfg, tc = build_configs("CartPole-v1", "sb3-contrib", {"seed": seed, "total_steps": args.solve_budget})
            runs = {"trpo_ref": lambda: ours_train(cfg, tc, Path(tmp) / f"solve{seed}"),
                    "SB3-contrib": lambda: sb3_run(cfg, tc, seed, stop_when_solved=True, defaults=True)}
            order = solve_order(seed)
            got = {name: runs[name]() for name in order}
            o, s = got["trpo_ref"], got["SB3-contrib"]
            solve_o.append(o)
            solve_s.append(s)
            print(f"solve seed {seed} ({order[0]} first): trpo_ref {o['solved_wall']:.2f} s at {o['solved_steps']} "
                  f"steps | SB3-contrib {s['solved_wall']:.2f} s at {s['solved_steps']} steps | ratio "
                  f"{s['solved_wall'] / o['solved_wall']:.2f}", flush=True)

    cmd = "python scripts/bench_vs_sb3_train.py" + (" --quick" if args.quick else
                                                    f" --reps {args.reps} --iters {args.iters} "
                                                    f"--solve-seeds {args.solve_seeds}"
                                                    f"{' --no-budget' if args.no_budget else f' --budget-reps {args.budget_reps}'}")
    lines = [
        f"Run of {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC (`{cmd}`) on {machine}",
        f"Throughput: {args.reps} runs of {args.iters} iterations per env, one trpo_ref iteration before each "
        "SB3-contrib iteration in one process (scripts/bench_vs_sb3_train.py `paired_iterations`); the ratio is "
        "taken within each pair, and medians (min–max) are over the pairs"
        f"{'' if args.quick else ' (the first pair of each run left out as warm-up)'}.",
        "",
        "### Env steps per second over whole training iterations, same settings on both sides",
        "",
        "| env | settings (trpo_ref's table, given to SB3-contrib) | pairs | trpo_ref steps/s | SB3-contrib steps/s "
        "| SB3 / ours time per iteration (target ≥ 5×) |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
        "An iteration is, for trpo_ref, `Trainer.step` plus the file work `train()` does after it (progress and "
        "episode rows, the checkpoint after iteration 1, every 10 and after the last); for SB3-contrib, "
        "`collect_rollouts` and `train()` with its logging. trpo_ref computes in float64, SB3 in float32.",
        "",
        "### Where the time goes, per iteration (ms, median over the pairs; share of the median iteration)",
        "",
        "| env | library | rollout | advantages (values, GAE) | policy update (log π_old, trpo_step) "
        "| critic fit | record | files (logs, checkpoints) | whole iteration |",
        "|---|---|---|---|---|---|---|---|---|",
        *stage_rows,
        "",
        "trpo_ref's stages are `Iteration.seconds`. SB3's rollout is `collect_rollouts` (callback clock); the "
        "rest is its `train()` (policy step and critic epochs) and logging.",
    ]
    if budget:
        lines += ["", *budget]
    if env_rows:
        lines += [
            "",
            "### CartPole-v1 stepping alone (µs per env step, median of 5 interleaved repetitions)",
            "",
            "| envs | gymnasium SyncVectorEnv.step | the bare envs' step (what the rollout calls) "
            "| gymnasium `vector_entry_point` (CartPoleVectorEnv.step) |",
            "|---|---|---|---|",
            *env_rows,
        ]
    if solve_o:
        t_o = [r["solved_wall"] for r in solve_o]
        t_s = [r["solved_wall"] for r in solve_s]
        r_solve = [b / a for a, b in zip(t_o, t_s)]
        lines += [
            "",
            "### Wall-clock to solve CartPole-v1 (last-20-episode mean ≥ 475), each library with its defaults",
            "",
            "| | trpo_ref (`trpo-ref train CartPole-v1`) | SB3-contrib `TRPO(\"MlpPolicy\", env)` "
            "| SB3 / ours (target ≥ 5×) |",
            "|---|---|---|---|",
            f"| seconds, median (min–max) over seeds 0–{args.solve_seeds - 1} | {med(t_o)} | {med(t_s)} | "
            f"{ratio_cell(r_solve, 5.0)} |",
            f"| steps at the solve | {med([r['solved_steps'] for r in solve_o])} | "
            f"{med([r['solved_steps'] for r in solve_s])} | |",
            "",
            "| seed | first | trpo_ref s (steps) | SB3-contrib s (steps) | SB3 / ours |",
            "|---|---|---|---|---|",
            *(f"| {seed} | {solve_order(seed)[0]} | {o['solved_wall']:.2f} ({o['solved_steps']}) | "
              f"{s['solved_wall']:.2f} ({s['solved_steps']}) | {r:.2f}× |"
              for seed, (o, s, r) in enumerate(zip(solve_o, solve_s, r_solve))),
            "",
            "Interleaved: each seed's two runs back to back, trpo_ref first on even seeds and SB3-contrib first on "
            "odd ones; the ratio is taken per seed, and the median (min–max) is over the seeds. Seeds pair the "
            "runs, not their luck: the two libraries draw differently, so the steps to solve differ run by run; "
            "the time per step is the throughput row above.",
        ]
    body = "\n".join(lines)
    write_marked_block(md, "train", body, "## Training throughput against SB3-contrib")
    print(body)
    print(f"wrote {md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
