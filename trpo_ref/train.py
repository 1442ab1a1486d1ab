"""The training loop: rollout -> GAE -> trpo_step -> critic fit -> log -> checkpoint.

:func:`train` reads top to bottom; everything it writes goes to one run
directory::

    runs/<env>/<run-name>/
        config.json        {"train": TrainConfig, "trpo": TRPOConfig, "policy": spec, "value": spec}
        progress.csv       one row per iteration (columns: PROGRESS_COLUMNS)
        episodes.csv       one row per finished episode: iteration, total_steps, return, length
        checkpoint.npz     everything needed to continue exactly (written atomically)
        policy.npz         the final policy: θ, its spec, the observation normaliser
        plot.png           learning curve, when matplotlib is installed

Reproducibility: every random draw comes from a generator seeded by
``TrainConfig.seed`` (action noise, episode seeds, critic minibatches, the
TRPO config's host draws), the update is deterministic, and a checkpoint
holds the generators' states, θ, the critic and its Adam state, the
normalisers and the env state (see :mod:`trpo_ref.rollout`: per env, the
episode seed and the actions taken in it, replayed on resume).  So the same
seed gives the same progress.csv apart from the wall-clock columns, and a
run killed at any moment and resumed from its last checkpoint ends with the
same numbers as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from . import backend
from .advantages import gae
from .envs import env_defaults
from .normalize import ObsNormalizer, RewardScaler
from .policy import CategoricalMLPPolicy, GaussianMLPPolicy, policy_from_spec
from .rollout import VectorRollout
from .trpo import Batch, TRPOConfig, trpo_step
from .value import Adam, ValueFunction, explained_variance, fit_adam, fit_lbfgs

__all__ = ["TrainConfig", "train", "build_configs", "load_policy", "evaluate", "PROGRESS_COLUMNS", "read_run_config",
           "WALL_CLOCK_COLUMNS", "EPISODE_COLUMNS", "read_progress", "CHECKPOINT_FORMAT"]

CHECKPOINT_FORMAT = 1


@dataclass(frozen=True)
class TrainConfig:
    """Everything about a training run except the update itself (that is :class:`TRPOConfig`)."""

    env_id: str = "CartPole-v1"
    """gymnasium id; its defaults come from :data:`trpo_ref.envs.ENV_DEFAULTS`."""

    seed: int = 0
    """Seeds every generator of the run (action noise, episode seeds, critic minibatches, θ and w init)."""

    total_steps: int = 100_000
    """Environment steps to train for (summed over envs), rounded up to whole iterations.
    SB3: ``total_timesteps``."""

    n_envs: int = 1
    """Environments stepped together (gymnasium.vector).  SB3: ``n_envs``."""

    n_steps: int = 2048
    """Steps per env per iteration; a batch is ``n_envs * n_steps`` samples.  SB3: ``n_steps``;
    Spinning Up: ``steps_per_epoch`` (that one is the total)."""

    vectorization: str = "sync"
    """``"sync"`` (all envs in this process) or ``"async"`` (one subprocess per env)."""

    gamma: float = 0.99
    """Discount γ.  SB3 and Spinning Up: ``gamma``."""

    gae_lambda: float = 0.95
    """GAE λ.  SB3: ``gae_lambda``; Spinning Up: ``lam``."""

    hidden_sizes: tuple[int, ...] = (64, 64)
    """Hidden widths of the policy MLP (SB3's default ``net_arch`` pi=[64, 64])."""

    activation: str = "tanh"
    """Hidden activation of both MLPs: ``"tanh"`` or ``"relu"``."""

    log_std_init: float = 0.0
    """Initial log σ of the Gaussian policy (SB3: ``log_std_init``)."""

    vf_hidden_sizes: tuple[int, ...] = (64, 64)
    """Hidden widths of the critic MLP (SB3's default vf=[64, 64])."""

    critic: str = "adam"
    """Critic fitter: ``"adam"`` (minibatch Adam, SB3-contrib) or ``"lbfgs"`` (modular_rl)."""

    critic_lr: float = 1e-3
    """Adam step size.  SB3-contrib: ``learning_rate``."""

    critic_epochs: int = 10
    """Adam passes over the batch per iteration.  SB3-contrib: ``n_critic_updates``."""

    critic_batch_size: int = 128
    """Adam minibatch size.  SB3-contrib: ``batch_size``."""

    critic_lbfgs_iters: int = 25
    """L-BFGS iterations per iteration (``critic="lbfgs"``; modular_rl: 25)."""

    critic_l2: float = 0.0
    """L2 penalty of the L-BFGS fit (modular_rl: 1e-3)."""

    normalize_obs: bool = False
    """Running mean/std observation normalisation (SB3-zoo ``normalize: true``)."""

    obs_clip: float = 10.0
    """Clip of normalised observations (VecNormalize's ``clip_obs``)."""

    normalize_reward: bool = False
    """Divide rewards by the running std of the discounted return (VecNormalize's ``norm_reward``)."""

    reward_clip: float = 10.0
    """Clip of scaled rewards (VecNormalize's ``clip_reward``)."""

    device: str = "cpu"
    """Where the update runs: ``"cpu"`` (NumPy) or ``"cuda"`` (CuPy).  Sampling always runs on the host."""

    dtype: str = "float64"
    """Floating type of the update: ``"float64"`` or ``"float32"``."""

    checkpoint_every: int = 10
    """Write a checkpoint every K iterations (and always after the last)."""

    def __post_init__(self):
        def bad(name, why):
            raise ValueError(f"{name} {why}, got {getattr(self, name)!r}")

        def is_real(v):
            return not isinstance(v, bool) and isinstance(v, (int, float, np.integer, np.floating))

        for name in ("env_id", "vectorization", "activation", "critic", "device", "dtype"):
            if not isinstance(getattr(self, name), str):
                bad(name, "must be a string")
        for name in ("gamma", "gae_lambda", "log_std_init", "critic_lr", "critic_l2", "obs_clip", "reward_clip"):
            if not is_real(getattr(self, name)):
                bad(name, "must be a number")
            object.__setattr__(self, name, float(getattr(self, name)))
        for name in ("normalize_obs", "normalize_reward"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                bad(name, "must be true or false")
            object.__setattr__(self, name, bool(getattr(self, name)))
        for name in ("hidden_sizes", "vf_hidden_sizes"):
            v = getattr(self, name)
            if not (isinstance(v, (list, tuple)) and all(
                    not isinstance(h, bool) and isinstance(h, (int, np.integer)) and h >= 1 for h in v)):
                bad(name, "must be a list of integers >= 1")
        for name in ("total_steps", "n_envs", "n_steps", "critic_epochs", "critic_batch_size",
                     "critic_lbfgs_iters", "checkpoint_every"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                bad(name, "must be an integer >= 1")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            bad("seed", "must be an integer >= 0")
        if self.vectorization not in ("sync", "async"):
            bad("vectorization", "must be 'sync' or 'async'")
        for name in ("gamma", "gae_lambda"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                bad(name, "must lie in [0, 1]")
        if self.activation not in ("tanh", "relu"):
            bad("activation", "must be 'tanh' or 'relu'")
        if self.critic not in ("adam", "lbfgs"):
            bad("critic", "must be 'adam' or 'lbfgs'")
        for name in ("critic_lr", "obs_clip", "reward_clip"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) > 0):
                bad(name, "must be a finite number > 0")
        if not self.critic_l2 >= 0:
            bad("critic_l2", "must be >= 0")
        if self.dtype not in ("float32", "float64"):
            bad("dtype", "must be 'float32' or 'float64'")
        if not (self.device == "cpu" or self.device == "cuda" or self.device.startswith("cuda:")):
            bad("device", "must be 'cpu' or 'cuda[:K]'")
        object.__setattr__(self, "hidden_sizes", tuple(int(h) for h in self.hidden_sizes))
        object.__setattr__(self, "vf_hidden_sizes", tuple(int(h) for h in self.vf_hidden_sizes))

    @property
    def steps_per_iteration(self) -> int:
        r"""Environment steps per update: ``n_envs * n_steps``."""
        return self.n_envs * self.n_steps

    @property
    def n_iterations(self) -> int:
        r"""Number of updates: ``ceil(total_steps / steps_per_iteration)``."""
        return -(-self.total_steps // self.steps_per_iteration)

    def to_dict(self) -> dict:
        r"""Plain dict (JSON-serialisable; tuples become lists).

        Returns
        -------
        dict
        """
        d = dataclasses.asdict(self)
        d["hidden_sizes"] = list(self.hidden_sizes)
        d["vf_hidden_sizes"] = list(self.vf_hidden_sizes)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        r"""Inverse of :meth:`to_dict`; unknown keys are an error naming them.

        Parameters
        ----------
        d : dict
            Field name to value.

        Returns
        -------
        TrainConfig
        """
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown TrainConfig fields {sorted(unknown)}")
        d = dict(d)
        for k in ("hidden_sizes", "vf_hidden_sizes"):
            if isinstance(d.get(k), list):
                d[k] = tuple(d[k])
        return cls(**d)


def build_configs(env_id: str, preset: str = "sb3-contrib", overrides: dict | None = None) -> tuple[TrainConfig, TRPOConfig]:
    """Preset < per-env table (:mod:`trpo_ref.envs`) < ``overrides``.

    ``overrides`` may be flat (each key a TrainConfig or TRPOConfig field) or
    ``{"train": {...}, "trpo": {...}}``; an unknown key is an error naming it.
    """
    table = env_defaults(env_id)
    train_kw = {"env_id": env_id, **table["train"]}
    trpo_kw = dict(table["trpo"])
    overrides = dict(overrides or {})
    nested_train = overrides.pop("train", None) or {}
    nested_trpo = overrides.pop("trpo", None) or {}
    for name, nested in (("train", nested_train), ("trpo", nested_trpo)):
        if not isinstance(nested, dict):
            raise ValueError(f"config entry {name!r} must be an object of fields, got {nested!r}")
    train_names = {f.name for f in fields(TrainConfig)}
    trpo_names = {f.name for f in fields(TRPOConfig)}
    for k, v in overrides.items():
        if k in train_names:
            train_kw[k] = v
        elif k in trpo_names:
            trpo_kw[k] = v
        else:
            raise ValueError(f"unknown config key {k!r} (not a TrainConfig or TRPOConfig field)")
    train_kw.update(nested_train)
    trpo_kw.update(nested_trpo)
    bad = set(nested_train) - train_names
    if bad:
        raise ValueError(f"unknown TrainConfig fields {sorted(bad)}")
    bad = set(nested_trpo) - trpo_names
    if bad:
        raise ValueError(f"unknown TRPOConfig fields {sorted(bad)}")
    cfg = TrainConfig.from_dict(train_kw)
    return cfg, TRPOConfig.preset(preset, **trpo_kw)


# --------------------------------------------------------------------------- logging
#: progress.csv columns, in order.  Every cell is a finite number, the step status, or empty:
#: episode statistics are empty when no episode finished in the iteration, ``cg_residual`` when
#: CG did not run, ``explained_variance`` when it is undefined (the returns have zero variance).
PROGRESS_COLUMNS = (
    "iteration", "total_steps", "wall_s",
    "ep_return_mean", "ep_return_std", "ep_return_min", "ep_return_max",
    "ep_len_mean", "ep_len_std", "ep_len_min", "ep_len_max", "n_episodes",
    "kl", "entropy", "surrogate_change", "n_backtracks", "ls_accepted", "step_status",
    "cg_iterations", "cg_residual", "value_loss_before", "value_loss", "explained_variance",
    "steps_per_s",
)
#: Columns that depend on the machine's speed (the only ones a rerun may change).
WALL_CLOCK_COLUMNS = ("wall_s", "steps_per_s")


def _stats(x) -> list:
    if len(x) == 0:
        return ["", "", "", ""]
    x = np.asarray(x, dtype=np.float64)
    return [float(x.mean()), float(x.std()), float(x.min()), float(x.max())]


def _fmt(v) -> str:
    if isinstance(v, float):
        return repr(v)
    return str(v)


def read_progress(path) -> list[dict]:
    """progress.csv as a list of row dicts (strings)."""
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


#: episodes.csv columns: the iteration the episode finished in, env steps at the end of that
#: iteration, its (raw) return and length.
EPISODE_COLUMNS = ("iteration", "total_steps", "return", "length")


def _truncate_episodes(path: Path, n_iterations: int) -> None:
    """Keep the episodes of the first ``n_iterations`` iterations."""
    with open(path, newline="") as f:
        lines = f.read().splitlines(keepends=True)
    # a line cut by a kill has no newline: drop it
    keep = lines[:1] + [ln for ln in lines[1:] if ln.endswith("\n") and int(ln.split(",", 1)[0]) <= n_iterations]
    _atomic_write_text(path, "".join(keep))


def _truncate_progress(path: Path, n_rows: int) -> None:
    """Keep the header and the first ``n_rows`` rows (rows written after the checkpoint go)."""
    with open(path, newline="") as f:
        lines = f.read().splitlines(keepends=True)
    lines = lines[: 1 + n_rows]
    if len(lines) != 1 + n_rows or not all(ln.endswith("\n") for ln in lines):
        raise ValueError(f"{path} has fewer complete rows than the checkpoint's {n_rows} iterations")
    _atomic_write_text(path, "".join(lines))


# ----------------------------------------------------------------------- checkpoints
def _atomic_savez(path: Path, arrays: dict) -> None:
    """``np.savez`` to a temporary file in the same directory, fsync, then ``os.replace``."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file in the same directory, fsync, then ``os.replace``."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_run_config(run_dir) -> dict:
    """A run's config.json, checked to hold the ``train`` and ``trpo`` entries; errors name the file."""
    path = Path(run_dir) / "config.json"
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ValueError(f"{path} does not hold a JSON object (not a trpo_ref run config?)")
    for key in ("train", "trpo"):
        if not isinstance(doc.get(key), dict):
            what = "missing entry" if key not in doc else "malformed entry"
            raise ValueError(f"{path}: {what} {key!r} (not a trpo_ref run config?)")
    if "env_id" not in doc["train"]:
        raise ValueError(f"{path}: missing entry 'train.env_id' (not a trpo_ref run config?)")
    return doc


def _json_array(obj) -> np.ndarray:
    return np.array(json.dumps(obj))


def load_npz(path) -> dict:
    """All arrays of a .npz written here (``allow_pickle=False``); a clear error when unreadable."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except Exception as exc:
        raise ValueError(f"cannot read {path}: {exc}") from exc


# ------------------------------------------------------------------------ the policy
def make_policy(cfg: TrainConfig, rollout: VectorRollout):
    r"""The policy for the rollout's spaces: categorical for Discrete actions, Gaussian otherwise.

    Parameters
    ----------
    cfg : TrainConfig
        Supplies ``hidden_sizes``, ``activation`` and ``log_std_init``.
    rollout : VectorRollout
        Supplies the observation and action dimensions.

    Returns
    -------
    GaussianMLPPolicy or CategoricalMLPPolicy
    """
    if rollout.discrete:
        return CategoricalMLPPolicy(rollout.obs_dim, rollout.n_actions, cfg.hidden_sizes, cfg.activation)
    return GaussianMLPPolicy(rollout.obs_dim, rollout.act_dim, cfg.hidden_sizes, cfg.activation,
                             log_std_init=cfg.log_std_init)


def save_policy(path: Path, policy, theta, obs_normalizer, env_id: str) -> None:
    r"""θ (host float64), the policy spec and the observation normaliser, in one .npz.

    Parameters
    ----------
    path : pathlib.Path
    policy : GaussianMLPPolicy or CategoricalMLPPolicy
    theta : array (P,)
    obs_normalizer : ObsNormalizer or None
    env_id : str
    """
    arrays = {"theta": np.asarray(backend.to_numpy(theta), dtype=np.float64),
              "spec": _json_array(policy.spec()), "env_id": np.array(env_id)}
    if obs_normalizer is not None:
        arrays.update(obs_normalizer.state_dict())
    _atomic_savez(path, arrays)


def load_policy(path):
    r"""(policy, θ, obs_normalizer or None, env_id) from a ``policy.npz``.

    Parameters
    ----------
    path : str or pathlib.Path

    Returns
    -------
    policy, theta_p (P,) float64, obs_normalizer or None, env_id
    """
    z = load_npz(path)
    for key in ("theta", "spec", "env_id"):
        if key not in z:
            raise ValueError(f"{path} is not a trpo_ref policy file (no {key!r} entry)")
    policy = policy_from_spec(json.loads(str(z["spec"])))
    norm = None
    if "obs_rms/mean" in z:
        norm = ObsNormalizer(policy.obs_dim)
        norm.load_state_dict(z)
    return policy, z["theta"], norm, str(z["env_id"])


# ------------------------------------------------------------------------- threads
@contextlib.contextmanager
def blas_threads(n: int | None):
    """Run the block with at most ``n`` BLAS threads (threadpoolctl), then restore; ``None``: leave them.

    The networks here are small: on (N = 1024) × 64 products one BLAS thread is
    faster than several, and many times faster on a busy machine.
    """
    if n is None:
        yield
        return
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=int(n), user_api="blas"):
        yield


# ------------------------------------------------------------------------- the loop
def _progress_bar(total: int, initial: int, quiet: bool):
    if quiet or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="step", unit_scale=True, file=sys.stderr)


def train(cfg: TrainConfig, trpo_cfg: TRPOConfig, run_dir, *, resume: bool = False, quiet: bool = False,
          plot: bool = True, n_blas_threads: int | None = 1) -> dict:
    """Train a policy; return the last progress row (a dict) plus ``run_dir``.

    Parameters
    ----------
    cfg, trpo_cfg : TrainConfig, TRPOConfig
    run_dir : path
        Created if needed.  With ``resume=True`` it must hold a checkpoint; the
        configs saved there are used (``cfg.total_steps`` may extend the run).
    quiet : bool
        No progress bar (there is none anyway when stderr is not a terminal).
    plot : bool
        Write plot.png at the end when matplotlib is installed.
    n_blas_threads : int or None
        BLAS threads while training (see :func:`blas_threads`); None leaves them.
    """
    import scipy.optimize  # noqa: F401  (load SciPy's BLAS too, so that its threads are limited as well)

    with blas_threads(n_blas_threads):
        return _train(cfg, trpo_cfg, run_dir, resume=resume, quiet=quiet, plot=plot)


def _train(cfg: TrainConfig, trpo_cfg: TRPOConfig, run_dir, *, resume: bool, quiet: bool, plot: bool) -> dict:
    run_dir = Path(run_dir)
    ckpt_path = run_dir / "checkpoint.npz"
    progress_path = run_dir / "progress.csv"
    episodes_path = run_dir / "episodes.csv"
    if resume:
        if not ckpt_path.is_file():
            raise FileNotFoundError(f"cannot resume: {ckpt_path} does not exist")
        saved = read_run_config(run_dir)
        cfg = dataclasses.replace(TrainConfig.from_dict(saved["train"]), total_steps=cfg.total_steps)
        trpo_cfg = TRPOConfig.from_dict(saved["trpo"])
        if saved["train"].get("total_steps") != cfg.total_steps:
            # the run's target changed (extended): record it, so that a later resume without
            # --total-steps continues towards it
            saved["train"]["total_steps"] = cfg.total_steps
            _atomic_write_text(run_dir / "config.json", json.dumps(saved, indent=2) + "\n")
    else:
        if ckpt_path.exists():
            raise ValueError(f"{run_dir} already holds a run: pass --resume to continue it, or another --out")
        if run_dir.exists() and not run_dir.is_dir():
            raise ValueError(f"{run_dir} exists and is not a directory")
        # the directory is made once setup has succeeded (a failed setup leaves nothing behind)

    # ---- setup: envs, networks, generators (all seeded from cfg.seed)
    xp, dev = backend.get_namespace(cfg.device)
    dtype = backend.resolve_dtype(xp, cfg.dtype)
    rollout = VectorRollout(cfg.env_id, cfg.n_envs, cfg.seed, cfg.vectorization)
    try:
        policy = make_policy(cfg, rollout)
        vf = ValueFunction(rollout.obs_dim, cfg.vf_hidden_sizes, cfg.activation)
        theta = policy.init_params(seed=[cfg.seed, 1], dtype=cfg.dtype, device=cfg.device)
        w = vf.init_params(seed=[cfg.seed, 2], dtype=cfg.dtype, device=cfg.device)
        adam = None
        act_rng = np.random.default_rng([cfg.seed, 3])  # action noise
        critic_rng = np.random.default_rng([cfg.seed, 4])  # critic minibatch permutations
        obs_norm = ObsNormalizer(rollout.obs_dim, cfg.obs_clip) if cfg.normalize_obs else None
        rew_scaler = RewardScaler(cfg.n_envs, cfg.gamma, cfg.reward_clip) if cfg.normalize_reward else None
        start_it, total_steps, wall_offset = 0, 0, 0.0

        if resume:
            z = load_npz(ckpt_path)
            try:
                meta = json.loads(str(z["meta"]))
                if not isinstance(meta, dict):
                    raise ValueError(f"{ckpt_path}: entry 'meta' is not a JSON object (not a trpo_ref checkpoint?)")
                if meta.get("format") != CHECKPOINT_FORMAT:
                    raise ValueError(f"{ckpt_path}: unknown checkpoint format {meta.get('format')!r}")
                theta = backend.from_numpy(z["theta"], xp, dev, dtype)
                w = backend.from_numpy(z["w"], xp, dev, dtype)
                if "adam/m" in z:
                    adam = Adam.from_dict({k[5:]: z[k] for k in z if k.startswith("adam/")}, xp=xp, device=dev)
                act_rng.bit_generator.state = meta["act_rng"]
                critic_rng.bit_generator.state = meta["critic_rng"]
                if obs_norm is not None:
                    obs_norm.load_state_dict(z)
                if rew_scaler is not None:
                    rew_scaler.load_state_dict(z)
                rollout.load_state_dict(meta["rollout"], z)
                start_it, total_steps, wall_offset = meta["iteration"], meta["total_steps"], meta["wall_s"]
            except KeyError as exc:
                raise ValueError(f"{ckpt_path}: missing entry {exc.args[0] if exc.args else ''!r} "
                                 "(not a trpo_ref checkpoint?)") from None
            except json.JSONDecodeError as exc:
                raise ValueError(f"{ckpt_path}: entry 'meta' is not valid JSON ({exc})") from None
            _truncate_progress(progress_path, start_it)
            _truncate_episodes(episodes_path, start_it)
        else:
            config_doc = {"train": cfg.to_dict(), "trpo": trpo_cfg.to_dict(), "policy": policy.spec(),
                          "value": vf.spec(), "env_id": cfg.env_id}
            run_dir.mkdir(parents=True, exist_ok=True)
            _atomic_write_text(run_dir / "config.json", json.dumps(config_doc, indent=2) + "\n")
            with open(progress_path, "w", newline="") as f:
                csv.writer(f).writerow(PROGRESS_COLUMNS)
            with open(episodes_path, "w", newline="") as f:
                csv.writer(f).writerow(EPISODE_COLUMNS)
            rollout.start()

        n_iter = cfg.n_iterations
        bar = _progress_bar(n_iter * cfg.steps_per_iteration, total_steps, quiet)
        t0 = time.perf_counter() - wall_offset
        T, E = cfg.n_steps, cfg.n_envs
        row: dict[str, Any] = {}
        for it in range(start_it, n_iter):
            t_iter = time.perf_counter()

            # ---- 1. rollout on the host with the current θ (normaliser frozen)
            batch = rollout.collect(policy, backend.to_numpy(theta), T, act_rng, obs_norm)
            total_steps += batch.n_steps
            if obs_norm is not None:
                obs_norm.update(batch.raw_obs_teo)
            rew_te = batch.rew_te
            if rew_scaler is not None:
                rew_te = rew_scaler.scale(rew_te, batch.terminated_te | batch.truncated_te)

            # ---- 2. to the device, once; values and GAE
            def dev_arr(a, dt=dtype):
                return backend.from_numpy(a, xp, dev, dt)

            obs_no = dev_arr(batch.obs_teo.reshape(T * E, -1))
            next_obs_no = dev_arr(batch.next_obs_teo.reshape(T * E, -1))
            if rollout.discrete:
                act = dev_arr(batch.act_te.reshape(T * E), xp.int64)
            else:
                act = dev_arr(batch.act_te.reshape(T * E, -1))
            val_n = vf.predict(w, obs_no)
            next_val_n = vf.predict(w, next_obs_no)
            adv_te, ret_te = gae(dev_arr(rew_te), xp.reshape(val_n, (T, E)), xp.reshape(next_val_n, (T, E)),
                                 dev_arr(batch.terminated_te, xp.bool), dev_arr(batch.truncated_te, xp.bool),
                                 cfg.gamma, cfg.gae_lambda)
            adv_n, ret_n = xp.reshape(adv_te, (T * E,)), xp.reshape(ret_te, (T * E,))

            # ---- 3. the policy update (log π_old evaluated on the update's backend: ratio 1 at θ_old)
            logp_old = policy.log_prob(theta, obs_no, act)
            step_cfg = dataclasses.replace(trpo_cfg, seed=int(np.random.SeedSequence([cfg.seed, 5, it]).generate_state(1)[0]))
            theta, info = trpo_step(policy, theta, Batch(obs_no, act, adv_n, logp_old), step_cfg)

            # ---- 4. the critic
            ev = explained_variance(val_n, ret_n)
            if cfg.critic == "adam":
                w, fit = fit_adam(vf, w, obs_no, ret_n, epochs=cfg.critic_epochs, batch_size=cfg.critic_batch_size,
                                  lr=cfg.critic_lr, rng=critic_rng, state=adam)
                adam = fit.state
            else:
                w, fit = fit_lbfgs(vf, w, obs_no, ret_n, max_iter=cfg.critic_lbfgs_iters, l2=cfg.critic_l2)

            # ---- 5. log one row
            wall = time.perf_counter() - t0
            cg = info.cg
            row = dict(zip(PROGRESS_COLUMNS, [
                it + 1, total_steps, wall,
                *_stats(batch.episode_returns), *_stats(batch.episode_lengths), len(batch.episode_returns),
                float(info.kl), float(info.entropy), float(info.surrogate_change), int(info.n_backtracks),
                int(info.status in ("accepted", "fixed_step")), info.status,
                0 if cg is None else int(cg.n_iter),
                "" if cg is None else float(backend.to_float(cg.residual_norms[-1])),
                float(fit.loss_before), float(fit.loss_after), float(ev) if math.isfinite(float(ev)) else "",
                batch.n_steps / (time.perf_counter() - t_iter),
            ]))
            with open(progress_path, "a", newline="") as f:
                f.write(",".join(_fmt(row[c]) for c in PROGRESS_COLUMNS) + "\n")
            with open(episodes_path, "a", newline="") as f:
                for r, n in zip(batch.episode_returns, batch.episode_lengths):
                    f.write(f"{it + 1},{total_steps},{float(r)!r},{int(n)}\n")
            if bar is not None:
                bar.update(batch.n_steps)
                ret = row["ep_return_mean"]
                bar.set_postfix_str(f"return {ret:.1f}  kl {row['kl']:.4f}  {row['steps_per_s']:.0f} steps/s"
                                    if ret != "" else f"kl {row['kl']:.4f}", refresh=False)

            # ---- 6. checkpoint (atomic) every K iterations and at the end
            if (it + 1) % cfg.checkpoint_every == 0 or it + 1 == n_iter:
                r_meta, r_arrays = rollout.state_dict()
                meta = {"format": CHECKPOINT_FORMAT, "iteration": it + 1, "total_steps": total_steps, "wall_s": wall,
                        "act_rng": act_rng.bit_generator.state, "critic_rng": critic_rng.bit_generator.state,
                        "rollout": r_meta}
                arrays = {"meta": _json_array(meta), "theta": backend.to_numpy(theta), "w": backend.to_numpy(w),
                          **r_arrays}
                if adam is not None:
                    arrays.update({f"adam/{k}": v for k, v in adam.to_dict().items()})
                if obs_norm is not None:
                    arrays.update(obs_norm.state_dict())
                if rew_scaler is not None:
                    arrays.update(rew_scaler.state_dict())
                _atomic_savez(ckpt_path, arrays)
        if bar is not None:
            bar.close()
        if not row:  # nothing left to do (the run had reached its target): report where it stands
            row = {"iteration": start_it, "total_steps": total_steps}
            last = read_progress(progress_path)[-1:] if start_it else []
            if last and last[0].get("ep_return_mean"):
                row["ep_return_mean"] = float(last[0]["ep_return_mean"])
    finally:
        rollout.close()

    save_policy(run_dir / "policy.npz", policy, theta, obs_norm, cfg.env_id)
    if plot:
        try:
            plot_runs([run_dir], run_dir / "plot.png")
        except ImportError:
            pass
    return {**row, "run_dir": str(run_dir)}


# ------------------------------------------------------------------------ evaluation
def evaluate(policy, theta, env_id: str, episodes: int = 10, deterministic: bool = True, seed: int = 12345,
             obs_normalizer=None) -> np.ndarray:
    """Returns of ``episodes`` full episodes (one env, seeds from ``seed``)."""
    rollout = VectorRollout(env_id, 1, seed)
    rng = np.random.default_rng(seed)
    returns = []
    theta = np.asarray(backend.to_numpy(theta), dtype=np.float64)
    try:
        while len(returns) < episodes:
            b = rollout.collect(policy, theta, 1000, rng, obs_normalizer, deterministic=deterministic)
            returns.extend(b.episode_returns.tolist())
    finally:
        rollout.close()
    return np.asarray(returns[:episodes])


# ----------------------------------------------------------------------------- plots
def _curve(run_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """(total_steps, mean episode return) of the iterations where episodes finished."""
    path = Path(run_dir) / "progress.csv"
    rows = read_progress(path)
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
    for d in run_dirs:
        d = Path(d)
        doc = read_run_config(d)
        env_id = doc.get("env_id", doc["train"]["env_id"])
        groups.setdefault(env_id, []).append(_curve(d))
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
    fig.savefig(out_path, dpi=100)
    plt.close(fig)
    return out_path
