"""The training loop and its run directory: rollout -> GAE -> trpo_step -> critic fit -> log -> checkpoint.

Two layers:

* :class:`Trainer` and :func:`iterate` are the loop, with no files: each
  iteration samples, computes advantages, updates the policy and the critic,
  and yields an :class:`Iteration` record (the progress row, the episodes,
  the :class:`~trpo_ref.trpo.StepInfo`).  ``Trainer.state_dict`` /
  ``load_state_dict`` are everything needed to continue exactly.
* :func:`train` adds persistence in one run directory (see
  :mod:`trpo_ref.rundir` for the rules: lock, refusal, trimming, checkpoints)::

    runs/<env>/<run-name>/
        config.json          {"train": TrainConfig, "trpo": TRPOConfig, "policy": spec, "value": spec}
        progress.csv         one row per iteration (columns: PROGRESS_COLUMNS)
        episodes.csv         one row per finished episode: iteration, total_steps, return, length
        checkpoint.npz       everything needed to continue exactly, with a checksum of its arrays
        checkpoint.prev.npz  the checkpoint before it (used when the latest is unusable)
        evaluations.npz      with eval_freq: timesteps, results, ep_lengths (SB3's EvalCallback layout)
        best_policy.npz      with eval_freq: the policy of the best evaluation so far
        policy.npz           the final policy: θ, its spec, the observation normaliser
        plot.png             learning curve, when matplotlib is installed

Reproducibility: every random draw comes from a generator seeded by
``TrainConfig.seed`` (action noise, episode seeds, critic minibatches, the
TRPO config's host draws, the evaluation episodes), the update is
deterministic, and a checkpoint holds the generators' states, θ, the critic
and its Adam state, the normalisers and the env state (see
:mod:`trpo_ref.rollout`: per env, the episode seed and the actions taken in
it, replayed on resume).  So the same seed gives the same progress.csv apart
from the wall-clock columns, and a run killed at any moment and resumed ends
with the same numbers as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import math
import numbers
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from . import backend, rundir
from .advantages import gae
from .config import checked_fields
from .fileio import atomic_savez, atomic_write_text
from .normalize import ObsNormalizer, RewardScaler
from .heads import head_for_space
from .policy import policy_for_head, policy_from_spec
from .rollout import VectorRollout
from .rundir import load_npz
from .trpo import Batch, StepInfo, TRPOConfig, trpo_step
from .value import Adam, ValueFunction, explained_variance, fit_adam, fit_lbfgs

__all__ = ["TrainConfig", "train", "build_configs", "load_policy", "evaluate", "evaluate_episodes",
           "PROGRESS_COLUMNS", "read_run_config", "WALL_CLOCK_COLUMNS", "EPISODE_COLUMNS", "read_progress",
           "CHECKPOINT_FORMAT", "Trainer", "Iteration", "iterate", "check_trainable", "plot_runs",
           "TENSORBOARD_KEYS"]

#: 2: arrays carry a SHA-256 checksum (1: none; still read).
CHECKPOINT_FORMAT = 2


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
    """Write a checkpoint after the first iteration, then every K iterations (and after the last)."""

    checkpoint_seconds: float = 600.0
    """Also write one when this many seconds have passed since the last (long iterations lose little)."""

    eval_freq: int = 0
    """Evaluate the policy every this many environment steps (summed over envs), after the iteration
    that crosses each multiple; 0: never.  Results go to evaluations.npz (SB3's layout) and the best
    policy to best_policy.npz.  SB3 / RL-Zoo: ``eval_freq`` (there counted per env)."""

    eval_episodes: int = 5
    """Episodes per evaluation.  SB3: ``n_eval_episodes``."""

    eval_deterministic: bool = True
    """Evaluate the mode of the policy (SB3's EvalCallback default) rather than sampling."""

    def __post_init__(self):
        # The same checks and messages as TRPOConfig's: "TrainConfig.<field> must be ..., got <value>".
        def bad(name, why):
            raise ValueError(f"TrainConfig.{name} {why}, got {getattr(self, name)!r}")

        def real(name, lo=None, lo_open=False, hi=None):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
                bad(name, "must be a finite number")
            if lo is not None and (v <= lo if lo_open else v < lo):
                bad(name, f"must be {'>' if lo_open else '>='} {lo}")
            if hi is not None and v > hi:
                bad(name, f"must be <= {hi}")
            object.__setattr__(self, name, float(v))

        def integer(name, lo):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < lo:
                bad(name, f"must be an integer >= {lo}")
            object.__setattr__(self, name, int(v))

        def boolean(name):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                bad(name, "must be true or false")
            object.__setattr__(self, name, bool(getattr(self, name)))

        def widths(name):
            v = getattr(self, name)
            if not (isinstance(v, (list, tuple)) and all(
                    not isinstance(h, bool) and isinstance(h, numbers.Integral) and h >= 1 for h in v)):
                bad(name, "must be a list of integers >= 1")
            object.__setattr__(self, name, tuple(int(h) for h in v))

        def choice(name, options):
            if not isinstance(getattr(self, name), str) or getattr(self, name) not in options:
                bad(name, "must be one of " + ", ".join(repr(o) for o in options))

        if not isinstance(self.env_id, str) or not self.env_id:
            bad("env_id", "must be a gymnasium id (a string)")
        integer("seed", 0)
        for name in ("total_steps", "n_envs", "n_steps", "critic_epochs", "critic_batch_size",
                     "critic_lbfgs_iters", "checkpoint_every", "eval_episodes"):
            integer(name, 1)
        integer("eval_freq", 0)
        choice("vectorization", ("sync", "async"))
        real("gamma", 0, hi=1)
        real("gae_lambda", 0, hi=1)
        widths("hidden_sizes")
        widths("vf_hidden_sizes")
        choice("activation", ("tanh", "relu"))
        real("log_std_init")
        choice("critic", ("adam", "lbfgs"))
        real("critic_lr", 0, lo_open=True)
        real("critic_l2", 0)
        real("obs_clip", 0, lo_open=True)
        real("reward_clip", 0, lo_open=True)
        real("checkpoint_seconds", 0, lo_open=True)
        for name in ("normalize_obs", "normalize_reward", "eval_deterministic"):
            boolean(name)
        choice("dtype", ("float32", "float64"))
        if not isinstance(self.device, str) or not (
                self.device in ("cpu", "cuda") or self.device.startswith("cuda:")):
            bad("device", "must be 'cpu' or 'cuda[:K]'")

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
        d = checked_fields(cls, d)
        for k in ("hidden_sizes", "vf_hidden_sizes"):
            if isinstance(d.get(k), list):
                d[k] = tuple(d[k])
        return cls(**d)



def build_configs(env_id: str, preset: str = "sb3-contrib", overrides: dict | None = None,
                  options: dict | None = None) -> tuple[TrainConfig, TRPOConfig]:
    """Preset < per-env table < ``overrides`` (a config file) < ``options``; see :func:`trpo_ref.settings.build_configs`."""
    from .settings import build_configs as _build

    return _build(env_id, preset, overrides, options)


def check_trainable(cfg: TrainConfig, trpo_cfg: TRPOConfig) -> None:
    """Refuse settings under which no policy update can ever happen (one ``ValueError`` line).

    With normalised advantages a batch of one sample has Â = 0 after
    normalisation, so every step would be skipped.
    """
    if trpo_cfg.normalize_adv and cfg.steps_per_iteration < 2:
        raise ValueError(f"n_envs * n_steps = {cfg.steps_per_iteration}: a batch of one sample has normalised "
                         "advantage 0, so no update can ever happen; use n_envs * n_steps >= 2")


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

#: episodes.csv columns: the iteration the episode finished in, env steps at the end of that
#: iteration, its (raw) return and length.
EPISODE_COLUMNS = ("iteration", "total_steps", "return", "length")

#: TensorBoard scalar -> progress column: SB3 / SB3-contrib TRPO's key names where they exist (rollout/, time/,
#: train/kl_divergence_loss, train/explained_variance, train/value_loss, train/is_line_search_success).
TENSORBOARD_KEYS = {
    "rollout/ep_rew_mean": "ep_return_mean",
    "rollout/ep_len_mean": "ep_len_mean",
    "train/kl_divergence_loss": "kl",
    "train/explained_variance": "explained_variance",
    "train/value_loss": "value_loss",
    "train/entropy": "entropy",
    "train/is_line_search_success": "ls_accepted",
    "train/surrogate_change": "surrogate_change",
    "time/fps": "steps_per_s",
    "time/iterations": "iteration",
    "time/total_timesteps": "total_steps",
}


def _stats(x) -> list:
    if len(x) == 0:
        return ["", "", "", ""]
    x = np.asarray(x, dtype=np.float64)
    return [float(x.mean()), float(x.std()), float(x.min()), float(x.max())]


def read_progress(path) -> list[dict]:
    """progress.csv as a list of row dicts (strings)."""
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _logs(run_dir: Path) -> tuple[rundir.CSVLog, rundir.CSVLog]:
    return (rundir.CSVLog(run_dir / "progress.csv", PROGRESS_COLUMNS, one_row_per_iteration=True),
            rundir.CSVLog(run_dir / "episodes.csv", EPISODE_COLUMNS, one_row_per_iteration=False))


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


def _require_run(run_dir: Path) -> dict:
    """The config of the run in ``run_dir`` for a resume; one clear error when there is none."""
    if not (Path(run_dir) / "config.json").is_file():
        raise rundir.RunDirError(f"cannot resume: {run_dir} holds no trpo_ref run to continue (no config.json)")
    return read_run_config(run_dir)


def _json_array(obj) -> np.ndarray:
    return np.array(json.dumps(obj))


# ------------------------------------------------------------------------ the policy
def make_policy(cfg: TrainConfig, rollout: VectorRollout):
    r"""The policy for the rollout's spaces: categorical for Discrete actions, one categorical per
    sub-action for MultiDiscrete, Bernoulli bits for MultiBinary, Gaussian for Box.

    Parameters
    ----------
    cfg : TrainConfig
        Supplies ``hidden_sizes``, ``activation`` and ``log_std_init``.
    rollout : VectorRollout
        Supplies the observation and action dimensions.

    Returns
    -------
    MLPPolicy
    """
    head = head_for_space(rollout.action_space, log_std_init=cfg.log_std_init)
    return policy_for_head(rollout.obs_dim, head, cfg.hidden_sizes, cfg.activation)


def save_policy(path: Path, policy, theta, obs_normalizer, env_id: str) -> None:
    r"""θ (host float64), the policy spec and the observation normaliser, in one .npz.

    Parameters
    ----------
    path : pathlib.Path
    policy : MLPPolicy
    theta : array (P,)
    obs_normalizer : ObsNormalizer or None
    env_id : str
    """
    arrays = {"theta": np.asarray(backend.to_numpy(theta), dtype=np.float64),
              "spec": _json_array(policy.spec()), "env_id": np.array(env_id)}
    if obs_normalizer is not None:
        arrays.update(obs_normalizer.state_dict())
    atomic_savez(path, arrays)


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


# ------------------------------------------------------------------------- the loop
@dataclass
class Iteration:
    """What one iteration of :func:`iterate` produced."""

    row: dict
    """The progress.csv row (PROGRESS_COLUMNS)."""
    episodes: list
    """(return, length) of each episode that finished in the iteration (raw rewards)."""
    info: StepInfo
    """Every intermediate of the policy update."""
    trainer: "Trainer"
    """The trainer, after the update (θ, the critic, the normalisers)."""
    seconds: dict = field(default_factory=dict)
    """Wall-clock seconds of each stage of the iteration: ``rollout``, ``advantages`` (values, GAE, the
    transfer to the update's backend), ``policy_update`` (log π_old and trpo_step), ``critic`` (the fit and
    the explained variance), ``record`` (the progress row).  What scripts/bench_vs_sb3_train.py reports."""


class Trainer:
    """The state of a run and one iteration of it, with no files.

    Everything is seeded from ``cfg.seed``.  :meth:`state_dict` /
    :meth:`load_state_dict` are the checkpoint's content (arrays + JSON meta).

    Parameters
    ----------
    cfg : TrainConfig
    trpo_cfg : TRPOConfig
    step_config : callable, optional
        ``step_config(trpo_cfg, batch) -> TRPOConfig``: the config of each update from its
        batch (e.g. a step size computed from the advantages, as scripts/experiments.py's
        penalty rule does).  Default: ``trpo_cfg`` for every update.
    """

    def __init__(self, cfg: TrainConfig, trpo_cfg: TRPOConfig, step_config=None):
        check_trainable(cfg, trpo_cfg)
        self.cfg, self.trpo_cfg = cfg, trpo_cfg
        self.step_config = step_config
        self.xp, self.dev = backend.get_namespace(cfg.device)
        self.dtype = backend.resolve_dtype(self.xp, cfg.dtype)
        self.rollout = VectorRollout(cfg.env_id, cfg.n_envs, cfg.seed, cfg.vectorization)
        try:
            self.policy = make_policy(cfg, self.rollout)
            self.vf = ValueFunction(self.rollout.obs_dim, cfg.vf_hidden_sizes, cfg.activation)
            self.theta = self.policy.init_params(seed=[cfg.seed, 1], dtype=cfg.dtype, device=cfg.device)
            self.w = self.vf.init_params(seed=[cfg.seed, 2], dtype=cfg.dtype, device=cfg.device)
        except BaseException:
            self.rollout.close()
            raise
        self.adam = None
        self.act_rng = np.random.default_rng([cfg.seed, 3])  # action noise
        self.critic_rng = np.random.default_rng([cfg.seed, 4])  # critic minibatch permutations
        self.obs_norm = ObsNormalizer(self.rollout.obs_dim, cfg.obs_clip) if cfg.normalize_obs else None
        self.rew_scaler = RewardScaler(cfg.n_envs, cfg.gamma, cfg.reward_clip) if cfg.normalize_reward else None
        self.iteration, self.total_steps, self.wall_offset = 0, 0, 0.0
        self._t0 = None

    # ------------------------------------------------------------------ state
    def state_dict(self) -> tuple[dict, dict]:
        """(JSON-able meta, arrays): everything :meth:`load_state_dict` needs to continue exactly."""
        r_meta, r_arrays = self.rollout.state_dict()
        meta = {"format": CHECKPOINT_FORMAT, "iteration": self.iteration, "total_steps": self.total_steps,
                "wall_s": self.wall_s, "act_rng": self.act_rng.bit_generator.state,
                "critic_rng": self.critic_rng.bit_generator.state, "rollout": r_meta}
        arrays = {"theta": backend.to_numpy(self.theta), "w": backend.to_numpy(self.w), **r_arrays}
        if self.adam is not None:
            arrays.update({f"adam/{k}": v for k, v in self.adam.to_dict().items()})
        if self.obs_norm is not None:
            arrays.update(self.obs_norm.state_dict())
        if self.rew_scaler is not None:
            arrays.update(self.rew_scaler.state_dict())
        return meta, arrays

    def load_state_dict(self, meta: dict, arrays: dict, where: str = "checkpoint") -> None:
        """Inverse of :meth:`state_dict` (replays each env's current episode); errors name ``where``."""
        xp, dev, dtype = self.xp, self.dev, self.dtype
        try:
            theta = backend.from_numpy(arrays["theta"], xp, dev, dtype)
            if tuple(theta.shape) != (self.policy.num_params,):
                raise ValueError(f"{where}: theta has shape {tuple(theta.shape)}, the run's policy has "
                                 f"{self.policy.num_params} parameters")
            self.theta = theta
            self.w = backend.from_numpy(arrays["w"], xp, dev, dtype)
            if "adam/m" in arrays:
                self.adam = Adam.from_dict({k[5:]: arrays[k] for k in arrays if k.startswith("adam/")},
                                           xp=xp, device=dev)
            self.act_rng.bit_generator.state = meta["act_rng"]
            self.critic_rng.bit_generator.state = meta["critic_rng"]
            if self.obs_norm is not None:
                self.obs_norm.load_state_dict(arrays)
            if self.rew_scaler is not None:
                self.rew_scaler.load_state_dict(arrays)
            self.rollout.load_state_dict(meta["rollout"], arrays)
            self.iteration, self.total_steps = int(meta["iteration"]), int(meta["total_steps"])
            self.wall_offset = float(meta["wall_s"])
        except KeyError as exc:
            raise ValueError(f"{where}: missing entry {exc.args[0] if exc.args else ''!r} "
                             "(not a trpo_ref checkpoint?)") from None

    @property
    def wall_s(self) -> float:
        """Seconds of training so far (across resumes)."""
        return self.wall_offset + (time.perf_counter() - self._t0 if self._t0 is not None else 0.0)

    def close(self, terminate: bool = False) -> None:
        """Close the environments (``terminate``: stop async workers at once, e.g. on Ctrl-C)."""
        self.rollout.close(terminate=terminate)

    # -------------------------------------------------------------- one step
    def step(self) -> Iteration:
        """One iteration: rollout -> GAE -> trpo_step -> critic fit; returns its record."""
        cfg, xp, dev, dtype = self.cfg, self.xp, self.dev, self.dtype
        if self._t0 is None:
            self._t0 = time.perf_counter()
            if self.iteration == 0 and self.rollout.obs_eo is None:
                self.rollout.start()
        t_iter = time.perf_counter()
        it = self.iteration
        T, E = cfg.n_steps, cfg.n_envs
        policy, vf = self.policy, self.vf

        # ---- 1. rollout on the host with the current θ (normaliser frozen)
        clock = [t_iter]
        batch = self.rollout.collect(policy, backend.to_numpy(self.theta), T, self.act_rng, self.obs_norm)
        self.total_steps += batch.n_steps
        if self.obs_norm is not None:
            self.obs_norm.update(batch.raw_obs_teo)
        rew_te = batch.rew_te
        if self.rew_scaler is not None:
            rew_te = self.rew_scaler.scale(rew_te, batch.terminated_te | batch.truncated_te)

        clock.append(time.perf_counter())
        # ---- 2. to the device, once; values and GAE
        def dev_arr(a, dt=dtype):
            return backend.from_numpy(a, xp, dev, dt)

        obs_no = dev_arr(batch.obs_teo.reshape(T * E, -1))
        next_obs_no = dev_arr(batch.next_obs_teo.reshape(T * E, -1))
        act_shape = self.policy.act_shape(T * E)  # (N,) or (N, A): the policy's action rows
        act = dev_arr(batch.act_te.reshape(act_shape), dtype if self.policy.continuous_actions else xp.int64)
        val_n = vf.predict(self.w, obs_no)
        next_val_n = vf.predict(self.w, next_obs_no)
        adv_te, ret_te = gae(dev_arr(rew_te), xp.reshape(val_n, (T, E)), xp.reshape(next_val_n, (T, E)),
                             dev_arr(batch.terminated_te, xp.bool), dev_arr(batch.truncated_te, xp.bool),
                             cfg.gamma, cfg.gae_lambda)
        adv_n, ret_n = xp.reshape(adv_te, (T * E,)), xp.reshape(ret_te, (T * E,))

        clock.append(time.perf_counter())
        # ---- 3. the policy update (log π_old evaluated on the update's backend: ratio 1 at θ_old)
        logp_old = policy.log_prob(self.theta, obs_no, act)
        step_cfg = dataclasses.replace(self.trpo_cfg,
                                       seed=int(np.random.SeedSequence([cfg.seed, 5, it]).generate_state(1)[0]))
        update_batch = Batch(obs_no, act, adv_n, logp_old)
        if self.step_config is not None:
            step_cfg = self.step_config(step_cfg, update_batch)
        self.theta, info = trpo_step(policy, self.theta, update_batch, step_cfg)

        clock.append(time.perf_counter())
        # ---- 4. the critic
        ev = explained_variance(val_n, ret_n)
        if cfg.critic == "adam":
            self.w, fit = fit_adam(vf, self.w, obs_no, ret_n, epochs=cfg.critic_epochs,
                                   batch_size=cfg.critic_batch_size, lr=cfg.critic_lr, rng=self.critic_rng,
                                   state=self.adam)
            self.adam = fit.state
        else:
            self.w, fit = fit_lbfgs(vf, self.w, obs_no, ret_n, max_iter=cfg.critic_lbfgs_iters, l2=cfg.critic_l2)

        clock.append(time.perf_counter())
        # ---- 5. the record
        self.iteration = it + 1
        cg = info.cg
        row = dict(zip(PROGRESS_COLUMNS, [
            it + 1, self.total_steps, self.wall_s,
            *_stats(batch.episode_returns), *_stats(batch.episode_lengths), len(batch.episode_returns),
            float(info.kl), float(info.entropy), float(info.surrogate_change), int(info.n_backtracks),
            int(info.status in ("accepted", "fixed_step")), info.status,
            0 if cg is None else int(cg.n_iter),
            "" if cg is None else float(backend.to_float(cg.residual_norms[-1])),
            float(fit.loss_before), float(fit.loss_after), float(ev) if math.isfinite(float(ev)) else "",
            batch.n_steps / (time.perf_counter() - t_iter),
        ]))
        episodes = [(float(r), int(n)) for r, n in zip(batch.episode_returns, batch.episode_lengths)]
        clock.append(time.perf_counter())
        seconds = dict(zip(("rollout", "advantages", "policy_update", "critic", "record"), np.diff(clock).tolist()))
        return Iteration(row=row, episodes=episodes, info=info, trainer=self, seconds=seconds)


def iterate(cfg: TrainConfig, trpo_cfg: TRPOConfig, trainer: Trainer | None = None) -> Iterator[Iteration]:
    """The training loop with no files: yields one :class:`Iteration` per update until ``cfg.n_iterations``.

    Parameters
    ----------
    cfg, trpo_cfg : TrainConfig, TRPOConfig
    trainer : Trainer, optional
        Continue this one (e.g. restored from a checkpoint); by default a new one.
        Its environments are closed when the generator finishes or is closed.

    Yields
    ------
    Iteration
    """
    trainer = trainer if trainer is not None else Trainer(cfg, trpo_cfg)
    done = False
    try:
        while trainer.iteration < cfg.n_iterations:
            yield trainer.step()
        done = True
    finally:
        trainer.close(terminate=not done)


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


# ------------------------------------------------------------------ the run directory
def _progress_bar(total: int, initial: int, quiet: bool):
    if quiet or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="step", unit_scale=True, file=sys.stderr)


def _plain_line(row: dict, n_iter: int, eval_mean=None) -> str:
    """One line per iteration off a terminal (SB3 prints a table there)."""
    ret = row.get("ep_return_mean", "")
    ev = f"  eval {eval_mean:.1f}" if eval_mean is not None else ""
    return (f"iteration {row['iteration']}/{n_iter}  steps {row['total_steps']}  "
            f"return {ret:.1f}" if ret != "" else
            f"iteration {row['iteration']}/{n_iter}  steps {row['total_steps']}  return n/a") + \
        f"  kl {row['kl']:.4g}  steps/s {row['steps_per_s']:.0f}{ev}"


class _Evaluations:
    """evaluations.npz (SB3 EvalCallback's layout) and best_policy.npz of a run."""

    def __init__(self, run_dir: Path, cfg: TrainConfig):
        self.path = run_dir / "evaluations.npz"
        self.best_path = run_dir / "best_policy.npz"
        self.cfg = cfg
        self.timesteps: list[int] = []
        self.results: list[list[float]] = []
        self.lengths: list[list[int]] = []

    def trimmed(self, total_steps: int) -> "_Evaluations":
        """Load the file's evaluations made at or before ``total_steps`` (a resume); nothing is written."""
        if self.path.is_file():
            z = load_npz(self.path)
            try:
                keep = [i for i, t in enumerate(z["timesteps"]) if int(t) <= total_steps]
                self.timesteps = [int(z["timesteps"][i]) for i in keep]
                self.results = [[float(x) for x in z["results"][i]] for i in keep]
                self.lengths = [[int(x) for x in z["ep_lengths"][i]] for i in keep]
            except (KeyError, IndexError) as exc:
                raise ValueError(f"{self.path}: not an evaluations file ({exc})") from None
        return self

    @property
    def best(self) -> float:
        return max((float(np.mean(r)) for r in self.results), default=-math.inf)

    def due(self, prev_steps: int, total_steps: int) -> bool:
        f = self.cfg.eval_freq
        return f > 0 and total_steps // f > prev_steps // f

    def run(self, trainer: Trainer) -> float:
        """Evaluate, append, rewrite evaluations.npz; best_policy.npz when the mean beats the best so far."""
        cfg = self.cfg
        seed = int(np.random.SeedSequence([cfg.seed, 6, trainer.total_steps]).generate_state(1)[0] % (2**31))
        rets, lens = evaluate_episodes(trainer.policy, trainer.theta, cfg.env_id, cfg.eval_episodes,
                                       cfg.eval_deterministic, seed, trainer.obs_norm)
        mean = float(np.mean(rets))
        improved = mean > self.best
        self.timesteps.append(int(trainer.total_steps))
        self.results.append([float(r) for r in rets])
        self.lengths.append([int(n) for n in lens])
        self.save()
        if improved:
            save_policy(self.best_path, trainer.policy, trainer.theta, trainer.obs_norm, cfg.env_id)
        return mean

    def save(self) -> None:
        k = self.cfg.eval_episodes
        atomic_savez(self.path, {"timesteps": np.asarray(self.timesteps, dtype=np.int64),
                                 "results": np.asarray(self.results, dtype=np.float64).reshape(-1, k),
                                 "ep_lengths": np.asarray(self.lengths, dtype=np.int64).reshape(-1, k)})


def summary_writer_class():
    """TensorBoard's ``SummaryWriter`` (tensorboardX, else torch.utils.tensorboard).

    Raises
    ------
    ImportError
        Naming the extra to install.
    """
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ImportError("TensorBoard logging needs the tensorboard extra: "
                              "pip install 'trpo-ref[tensorboard]'") from None
    return SummaryWriter


def _tensorboard_writer(log_dir):
    return summary_writer_class()(str(log_dir))


def train(cfg: TrainConfig, trpo_cfg: TRPOConfig, run_dir, *, resume: bool = False, quiet: bool = False,
          plot: bool = True, n_blas_threads: int | None = 1, tensorboard_log=None, log=None) -> dict:
    """Train a policy in a run directory; return the last progress row (a dict) plus ``run_dir``.

    Parameters
    ----------
    cfg, trpo_cfg : TrainConfig, TRPOConfig
    run_dir : path
        For a new run: missing or empty (created if needed).  With ``resume=True``
        it must hold a run; it continues from the newest usable checkpoint, or
        restarts cleanly when it was killed before its first one.  The saved configs
        are used (``cfg.total_steps`` may extend the run).  The directory is locked
        for the whole call (:class:`trpo_ref.rundir.RunLock`).
    quiet : bool
        Nothing per iteration: no progress bar on a terminal, no plain line off one.
    plot : bool
        Write plot.png at the end when matplotlib is installed.
    n_blas_threads : int or None
        BLAS threads while training (see :func:`blas_threads`); None leaves them.
    tensorboard_log : path, optional
        Also write TensorBoard scalars (SB3's key names, :data:`TENSORBOARD_KEYS`) to
        ``tensorboard_log/<run name>`` (needs the ``tensorboard`` extra).
    log : callable, optional
        Receives each per-iteration line (default: print to stdout).  Notes (a fallback
        to the previous checkpoint, a restart) go to stderr.
    """
    import scipy.optimize  # noqa: F401  (load SciPy's BLAS too, so that its threads are limited as well)

    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise rundir.RunDirError(f"{run_dir} exists and is not a directory")
    if not resume:
        rundir.check_fresh(run_dir)  # before creating anything
    else:
        _require_run(run_dir)
    made = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    with rundir.RunLock(run_dir):  # a second process stops here, having touched nothing
        try:
            with blas_threads(n_blas_threads):
                if not resume:
                    rundir.check_fresh(run_dir)  # again, under the lock: another process may have started
                return _train(cfg, trpo_cfg, run_dir, resume=resume, quiet=quiet, plot=plot,
                              tensorboard_log=tensorboard_log, log=log or (lambda s: print(s, flush=True)))
        except BaseException:
            if made:
                rundir.remove_if_empty(run_dir)  # a failed setup leaves no directory behind (lock held)
            raise


def _train(cfg, trpo_cfg, run_dir: Path, *, resume, quiet, plot, tensorboard_log, log) -> dict:
    progress, episodes = _logs(run_dir)
    evals = writer = None
    # ---- 1. everything is read and checked before anything is written
    if resume:
        saved = _require_run(run_dir)  # re-read under the lock
        cfg = dataclasses.replace(TrainConfig.from_dict(saved["train"]), total_steps=cfg.total_steps)
        trpo_cfg = TRPOConfig.from_dict(saved["trpo"])
        ckpt = rundir.load_checkpoint(run_dir)
        trainer = Trainer(cfg, trpo_cfg)
        try:
            if ckpt is not None:
                meta, arrays, path, note = ckpt
                trainer.load_state_dict(meta, arrays, where=str(path))
                if note:
                    print(f"note: {note}", file=sys.stderr, flush=True)
            start_it = trainer.iteration
            progress_text = progress.trimmed(start_it)
            episodes_text = episodes.trimmed(start_it)
            if cfg.eval_freq:
                evals = _Evaluations(run_dir, cfg).trimmed(trainer.total_steps)
            writer = _tensorboard_writer(Path(tensorboard_log) / run_dir.name) if tensorboard_log else None
            # ---- 2. then written
            if saved["train"].get("total_steps") != cfg.total_steps:
                # the run's target changed (extended): record it, so that a later resume without
                # --total-steps continues towards it
                saved["train"]["total_steps"] = cfg.total_steps
                atomic_write_text(run_dir / "config.json", json.dumps(saved, indent=2) + "\n")
            progress.replace(progress_text)
            episodes.replace(episodes_text)
            if evals is not None:
                evals.save()
            if ckpt is None:
                print(f"note: {run_dir} has no checkpoint (it stopped in its first iteration): starting it again",
                      file=sys.stderr, flush=True)
        except BaseException:
            trainer.close()
            if writer is not None:
                writer.close()
            raise
    else:
        trainer = Trainer(cfg, trpo_cfg)
        try:
            writer = _tensorboard_writer(Path(tensorboard_log) / run_dir.name) if tensorboard_log else None
            config_doc = {"train": cfg.to_dict(), "trpo": trpo_cfg.to_dict(), "policy": trainer.policy.spec(),
                          "value": trainer.vf.spec(), "env_id": cfg.env_id}
            atomic_write_text(run_dir / "config.json", json.dumps(config_doc, indent=2) + "\n")
            progress.create()
            episodes.create()
            if cfg.eval_freq:
                evals = _Evaluations(run_dir, cfg)
        except BaseException:
            trainer.close()
            if writer is not None:
                writer.close()
            raise

    # ---- 3. the loop
    n_iter = cfg.n_iterations
    start_it = trainer.iteration
    bar = _progress_bar(n_iter * cfg.steps_per_iteration, trainer.total_steps, quiet)
    lines = not quiet and bar is None
    row: dict[str, Any] = {}
    last_ckpt_t = time.monotonic()
    loop = iterate(cfg, trpo_cfg, trainer)
    try:
        for rec in loop:
            row = rec.row
            it = row["iteration"]
            progress.append([[row[c] for c in PROGRESS_COLUMNS]])
            episodes.append([[it, row["total_steps"], r, n] for r, n in rec.episodes])
            eval_mean = None
            if evals is not None and evals.due(row["total_steps"] - rec.trainer.cfg.steps_per_iteration,
                                               row["total_steps"]):
                eval_mean = evals.run(trainer)
            if writer is not None:
                for key, col in TENSORBOARD_KEYS.items():
                    if row.get(col, "") != "" and col != "step_status":
                        writer.add_scalar(key, float(row[col]), row["total_steps"])
                if eval_mean is not None:
                    writer.add_scalar("eval/mean_reward", eval_mean, row["total_steps"])
                    writer.add_scalar("eval/mean_ep_length", float(np.mean(evals.lengths[-1])), row["total_steps"])
            if bar is not None:
                bar.update(cfg.steps_per_iteration)
                ret = row["ep_return_mean"]
                bar.set_postfix_str(f"return {ret:.1f}  kl {row['kl']:.4f}  {row['steps_per_s']:.0f} steps/s"
                                    if ret != "" else f"kl {row['kl']:.4f}", refresh=False)
            elif lines:
                log(_plain_line(row, n_iter, eval_mean))
            # ---- checkpoint: after the first iteration, every K, every checkpoint_seconds, after the last
            now = time.monotonic()
            if it == 1 or it % cfg.checkpoint_every == 0 or it == n_iter \
                    or now - last_ckpt_t >= cfg.checkpoint_seconds:
                meta, arrays = trainer.state_dict()
                rundir.save_checkpoint(run_dir, meta, arrays)
                last_ckpt_t = now
    finally:
        loop.close()  # on an interrupt: stops the env workers now (iterate's finally)
        if bar is not None:
            bar.close()
        if writer is not None:
            writer.close()
    if not row:  # nothing left to do (the run had reached its target): report where it stands
        row = {"iteration": start_it, "total_steps": trainer.total_steps}
        last = read_progress(progress.path)[-1:] if start_it else []
        if last and last[0].get("ep_return_mean"):
            row["ep_return_mean"] = float(last[0]["ep_return_mean"])

    save_policy(run_dir / "policy.npz", trainer.policy, trainer.theta, trainer.obs_norm, cfg.env_id)
    if plot:
        try:
            plot_runs([run_dir], run_dir / "plot.png")
        except ImportError:
            pass
    return {**row, "run_dir": str(run_dir)}


# ------------------------------------------------------------------------ evaluation
def evaluate_episodes(policy, theta, env_id: str, episodes: int = 10, deterministic: bool = True,
                      seed: int = 12345, obs_normalizer=None) -> tuple[np.ndarray, np.ndarray]:
    """(returns, lengths) of ``episodes`` full episodes (one env, seeds from ``seed``, normaliser frozen)."""
    rollout = VectorRollout(env_id, 1, seed)
    rng = np.random.default_rng(seed)
    returns, lengths = [], []
    theta = np.asarray(backend.to_numpy(theta), dtype=np.float64)
    try:
        while len(returns) < episodes:
            b = rollout.collect(policy, theta, 1000, rng, obs_normalizer, deterministic=deterministic)
            returns.extend(b.episode_returns.tolist())
            lengths.extend(b.episode_lengths.tolist())
    finally:
        rollout.close()
    return np.asarray(returns[:episodes]), np.asarray(lengths[:episodes], dtype=np.int64)


def evaluate(policy, theta, env_id: str, episodes: int = 10, deterministic: bool = True, seed: int = 12345,
             obs_normalizer=None) -> np.ndarray:
    """Returns of ``episodes`` full episodes (one env, seeds from ``seed``)."""
    return evaluate_episodes(policy, theta, env_id, episodes, deterministic, seed, obs_normalizer)[0]




# ----------------------------------------------------------------------------- plots
from .plotting import plot_runs  # noqa: E402  (re-exported: trpo_ref.train.plot_runs)
