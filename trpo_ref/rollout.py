r"""Sampling on ``gymnasium.vector``: E environments × T steps -> a host batch.

=============================  ==================================================
:func:`make_vector_env`        ``gymnasium.make_vec`` (sync, or async: one process per env),
                               autoreset disabled: this module resets finished envs itself
:func:`check_spaces`           Box / Discrete / MultiDiscrete / MultiBinary actions, Box observations; anything else is an error naming it
:class:`VectorRollout`         collects :class:`RolloutBatch` es and can save / restore the
                               exact state of every env between iterations
:class:`RolloutBatch`          arrays shaped (T, E, ...), episode returns and lengths
=============================  ==================================================

Semantics
---------
* ``terminated`` and ``truncated`` are kept apart.  ``next_obs_te[t]`` is the
  true observation after step t: for a step that ends an episode it is the
  episode's final observation (the one a truncation bootstraps from), never
  the reset observation of the next episode.  Autoreset is *disabled* in the
  vector env; after a step that ends an episode the env is reset here, with a
  seed drawn from this object's own generator, so the final observation is
  simply the step's observation (gymnasium >= 1.0's default NEXT_STEP mode
  would instead spend one extra step returning the reset observation).
* Continuous actions are clipped to the Box bounds only when sent to the env;
  the unclipped action is stored, because its log-probability is the one the
  Gaussian policy assigns.
* Observations are normalised with the statistics passed in, frozen for the
  whole rollout (see :mod:`trpo_ref.normalize`).
* Exact resume: every episode starts from ``reset(seed=s)`` with ``s`` drawn
  from a saved generator, and environments here are deterministic functions of
  (seed, actions).  :meth:`VectorRollout.state_dict` keeps, per env, the seed
  of its current episode and the actions sent so far in it; restoring resets
  with that seed and replays the actions, then checks the observation is the
  saved one bit for bit (a warning names an env that does not replay).  No
  episode is cut at iteration boundaries.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import warnings
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode
from gymnasium.wrappers import OrderEnforcing, PassiveEnvChecker, TimeLimit

from .policy import MLPPolicy

__all__ = ["RolloutBatch", "VectorRollout", "make_vector_env", "check_spaces", "UnsupportedSpaceError"]


class UnsupportedSpaceError(ValueError):
    """An observation or action space this implementation does not handle."""


@contextlib.contextmanager
def _workers_ignore_sigint(active: bool):
    """Ignore SIGINT while async workers are started, so that they inherit it.

    Ctrl-C reaches every process of the terminal's process group; the workers
    would each print a KeyboardInterrupt traceback.  With SIGINT ignored there,
    only this process is interrupted and it stops the workers itself (SIGTERM,
    at its default action in the workers: they end without a word).
    """
    if not active or threading.current_thread() is not threading.main_thread():
        yield
        return
    old_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
    old_term = signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a worker told to stop just stops
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)


def make_vector_env(env_id: str, n_envs: int, vectorization: str = "sync", env_kwargs: dict | None = None):
    """``gymnasium.make_vec(env_id, n_envs)`` with autoreset disabled.

    Parameters
    ----------
    env_id : str
        A registered gymnasium id; an unknown one raises ``ValueError`` naming it.
    n_envs : int
    vectorization : {"sync", "async"}
        One process for all envs, or one subprocess per env (gymnasium's AsyncVectorEnv).
    env_kwargs : dict, optional
        Passed to ``gymnasium.make``.
    """
    if vectorization not in ("sync", "async"):
        raise ValueError(f"vectorization must be 'sync' or 'async', got {vectorization!r}")
    if int(n_envs) < 1:
        raise ValueError(f"n_envs must be >= 1, got {n_envs}")
    if env_id not in gym.registry:
        raise ValueError(f"unknown environment id {env_id!r} (not in gymnasium's registry)")
    try:
        with _workers_ignore_sigint(vectorization == "async"):
            return gym.make_vec(env_id, num_envs=int(n_envs), vectorization_mode=vectorization,
                                vector_kwargs={"autoreset_mode": AutoresetMode.DISABLED, "copy": False},
                                wrappers=[EpisodeReplay], **(env_kwargs or {}))
    except gym.error.DependencyNotInstalled as exc:
        raise ValueError(f"{env_id} needs an optional dependency: {exc} "
                         "(MuJoCo envs: pip install 'trpo-ref[mujoco]')") from exc


class EpisodeReplay(gym.Wrapper):
    """Adds ``replay_episode()``: reset with a seed and step through saved actions.

    The payload is set per env with ``VectorEnv.set_attr("replay_payload", ...)``
    and the replay runs with ``VectorEnv.call("replay_episode")``, so it works
    inside AsyncVectorEnv's worker processes too.
    """

    replay_payload = None

    def replay_episode(self):
        r"""Reset with the payload's seed, replay its actions and clear the payload.

        Returns
        -------
        numpy.ndarray (obs_dim,)
            The observation after the last replayed action.
        """
        seed, actions = self.replay_payload
        obs, _ = self.env.reset(seed=seed)
        for a in actions:
            obs, *_ = self.env.step(a)
        self.replay_payload = None
        return obs


def check_spaces(observation_space, action_space) -> None:
    r"""Raise :class:`UnsupportedSpaceError` unless obs is a 1-D Box and actions a 1-D Box, Discrete,
    1-D MultiDiscrete (start 0) or 1-D MultiBinary.

    Parameters
    ----------
    observation_space, action_space : gymnasium.spaces.Space
    """
    if not (isinstance(observation_space, spaces.Box) and len(observation_space.shape) == 1):
        raise UnsupportedSpaceError(
            f"unsupported observation space {observation_space}: only a 1-D Box is supported "
            "(flatten it with gymnasium.wrappers.FlattenObservation)")
    if isinstance(action_space, spaces.Discrete):
        if action_space.start != 0:
            raise UnsupportedSpaceError(f"unsupported action space {action_space}: Discrete must start at 0")
        return
    if isinstance(action_space, spaces.Box) and len(action_space.shape) == 1:
        return
    if isinstance(action_space, spaces.MultiDiscrete) and len(action_space.nvec.shape) == 1:
        if np.any(action_space.start != 0) or np.any(action_space.nvec < 2):
            raise UnsupportedSpaceError(f"unsupported action space {action_space}: MultiDiscrete needs start 0 "
                                        "and at least 2 choices per sub-action")
        return
    if isinstance(action_space, spaces.MultiBinary) and len(action_space.shape) == 1:
        return
    raise UnsupportedSpaceError(
        f"unsupported action space {type(action_space).__name__} ({action_space}): "
        "only Box (1-D, continuous), Discrete, MultiDiscrete (1-D) and MultiBinary (1-D) are supported")


class HostSampler:
    r"""``policy.sample`` for the per-step loop: the policy's own network and head on the host, no checks.

    θ is checked once here and split into its layers once
    (:meth:`trpo_ref.mlp.MLP.predictor`).  :meth:`act` is what the loop calls
    each step: the network's forward pass on the (E, obs_dim) batch
    (:meth:`~trpo_ref.mlp.MLP.predictor`, the arithmetic of
    :meth:`~trpo_ref.mlp.MLP.forward`), then the head's draw
    (:meth:`trpo_ref.heads.Head.sampler`: :meth:`~trpo_ref.heads.Head.sample` with what depends on
    θ's tail alone, σ, computed once) — the same functions
    :meth:`~trpo_ref.policy.MLPPolicy.sample` calls, so the two give the same
    actions from the same generator (tests/test_rollout.py).  The
    log-probabilities are for logging only (the training loop recomputes
    :math:`\log\pi_{old}` on the update's backend), so the rollout computes
    them after the loop, for the whole batch at once, with :meth:`log_prob`.
    """

    def __init__(self, policy, theta):
        theta = np.asarray(policy._check_theta(np.asarray(theta)), dtype=np.float64)
        m = policy.mlp.num_params
        self.head = policy.head
        self.net = policy.mlp.predictor(theta[:m])
        self.extra = theta[m:]
        self.draw = policy.head.sampler(self.extra)

    def phi(self, obs_no):
        """The distribution's parameters φ for a batch of observations."""
        return self.head.phi(self.net(obs_no), self.extra)

    def act(self, obs_eo, rng, deterministic: bool = False):
        r"""Actions for a batch of observations, in the head's shape and dtype.

        Parameters
        ----------
        obs_eo : float64 (E, obs_dim)
        rng : numpy.random.Generator
            The head's host draw (``standard_normal``, ``gumbel``, ``random``); nothing when deterministic.
        deterministic : bool
            The head's mode.
        """
        if deterministic:
            return self.head.mode(self.head.phi(self.net(obs_eo), self.extra))
        return self.draw(self.net(obs_eo), rng)

    def log_prob(self, obs_no, act):
        r"""log π(a_n | s_n), (N,): the head's log-probability."""
        return self.head.log_prob(self.phi(obs_no), act)

    def __call__(self, theta, obs_eo, rng, deterministic: bool = False):
        """``policy.sample``'s signature: (actions, their log-probabilities)."""
        act = self.act(obs_eo, rng, deterministic)
        return act, self.log_prob(obs_eo, act)


@dataclass
class RolloutBatch:
    """T steps of E environments, on the host.

    Attributes
    ----------
    obs_teo : float64 (T, E, obs_dim)
        Observations as the policy saw them (normalised when a normaliser is used).
    raw_obs_teo : float64 (T, E, obs_dim)
        The same observations before normalisation (to update the statistics).
    act_te : (T, E, act_dim) float64 unclipped, or (T, E) int64
    logp_te : float64 (T, E)
        log π(a|s) at sampling time.
    rew_te : float64 (T, E)
        Raw rewards.
    terminated_te, truncated_te : bool (T, E)
    next_obs_teo : float64 (T, E, obs_dim)
        The true next observation (the final one where the step ends an episode),
        normalised like ``obs_teo``.
    episode_returns, episode_lengths : float64 (K,), int64 (K,)
        Episodes that finished during this rollout, in order of finishing.
    """

    obs_teo: np.ndarray
    raw_obs_teo: np.ndarray
    act_te: np.ndarray
    logp_te: np.ndarray
    rew_te: np.ndarray
    terminated_te: np.ndarray
    truncated_te: np.ndarray
    next_obs_teo: np.ndarray
    episode_returns: np.ndarray
    episode_lengths: np.ndarray

    @property
    def n_steps(self) -> int:
        """T · E, the number of env steps in the batch."""
        return int(self.rew_te.size)


class VectorRollout:
    """E gymnasium envs stepped together, with per-episode seeds and exact save / restore.

    Parameters
    ----------
    env_id : str
    n_envs : int
    seed : int
        Seeds this object's generator of episode seeds.
    vectorization : {"sync", "async"}
    env_kwargs : dict, optional
    """

    def __init__(self, env_id: str, n_envs: int, seed: int, vectorization: str = "sync",
                 env_kwargs: dict | None = None):
        self.env_id = env_id
        self.n_envs = int(n_envs)
        self.envs = make_vector_env(env_id, self.n_envs, vectorization, env_kwargs)
        try:
            check_spaces(self.envs.single_observation_space, self.envs.single_action_space)
        except UnsupportedSpaceError:
            self.envs.close()
            raise
        self.observation_space = self.envs.single_observation_space
        self.action_space = self.envs.single_action_space
        self.obs_dim = int(self.observation_space.shape[0])
        self.discrete = isinstance(self.action_space, (spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary))
        if isinstance(self.action_space, spaces.Discrete):
            self.n_actions = int(self.action_space.n)
            self.act_dim = 1
        elif self.discrete:  # integer rows: MultiDiscrete sub-actions or MultiBinary bits
            self.act_dim = int(self.action_space.shape[0])
        else:
            self.act_dim = int(self.action_space.shape[0])
            self.low = np.asarray(self.action_space.low, dtype=np.float64)
            self.high = np.asarray(self.action_space.high, dtype=np.float64)
        self.seed_rng = np.random.default_rng([int(seed), 0x5EED])
        # Per-env episode bookkeeping.
        self.obs_eo = None
        self.ep_seed_e = np.zeros(self.n_envs, dtype=np.int64)
        self.ep_return_e = np.zeros(self.n_envs, dtype=np.float64)
        self.ep_len_e = np.zeros(self.n_envs, dtype=np.int64)
        self.ep_actions: list[list[np.ndarray]] = [[] for _ in range(self.n_envs)]
        self._direct = None  # see _direct_steps
        # A direct step or reset rounds each observation to the space's dtype, as SyncVectorEnv's
        # batch does before the float64 copy (None: float64 already, nothing to round).
        obs_dtype = np.dtype(self.envs.single_observation_space.dtype)
        self._obs_cast = None if obs_dtype == np.float64 else obs_dtype

    # ------------------------------------------------------------ fast stepping
    def _direct_steps(self):
        r"""Per env, ``(step, max_episode_steps)`` of the bare env, or None to step through the vector env.

        In a sync vector env with autoreset disabled, ``SyncVectorEnv.step`` is
        a loop of each env's ``step`` plus the concatenation of their outputs;
        at one or a few envs that machinery and the pass-through wrappers cost
        more than CartPole's physics (~30 µs against ~9 µs per step).  When
        every wrapper of an env is one that only forwards a step
        (:class:`EpisodeReplay`, ``OrderEnforcing``, ``PassiveEnvChecker``,
        whose one-time step check is then skipped; its reset check still runs)
        or ``TimeLimit``, the env's unwrapped ``step`` is called directly and
        the time limit is applied here, with TimeLimit's own rule (truncated
        once the episode's step count reaches the limit, also on the step
        that terminates).  Episode lengths are this object's ``ep_len_e``,
        which every reset (through the wrappers: TimeLimit's count restarts
        too) sets to 0.  Any other wrapper, an async env, or a vector env that
        is not gymnasium's ``SyncVectorEnv``: None, and the vector env's step
        is used.  The numbers are the same either way (tests/test_rollout.py).
        """
        if self._direct is False:
            return None
        if self._direct is None:
            self._direct = False
            if type(self.envs) is not gym.vector.SyncVectorEnv:
                return None
            direct = []
            for env in self.envs.envs:
                limit = None
                while isinstance(env, gym.Wrapper):
                    if type(env) is TimeLimit and limit is None:
                        limit = int(env._max_episode_steps) if env._max_episode_steps is not None else None
                    elif type(env) not in (EpisodeReplay, OrderEnforcing, PassiveEnvChecker):
                        return None
                    env = env.env
                direct.append((env.step, limit))
            self._direct = direct
        return self._direct

    # ------------------------------------------------------------------ resets
    def _new_seeds(self, mask_e) -> list:
        draws = self.seed_rng.integers(0, 2**31 - 1, size=int(np.sum(mask_e)))
        seeds, k = [], 0
        for i in range(self.n_envs):
            if mask_e[i]:
                seeds.append(int(draws[k]))
                self.ep_seed_e[i] = draws[k]
                k += 1
            else:
                seeds.append(None)
        return seeds

    def _reset(self, mask_e, keep_eo=None) -> np.ndarray:
        """Reset the envs of ``mask_e`` with fresh episode seeds.

        Returns (E, obs_dim) float64: their first observations, and ``keep_eo``'s rows for the
        envs not reset (``keep_eo`` may be None only when every env is reset).  When the envs
        are stepped directly (:meth:`_direct_steps`), each is reset the same way directly, by
        the call ``SyncVectorEnv.reset`` would make (the env with its wrappers, the same seed,
        ``options`` None for all envs and ``{}`` for a masked reset), without the vector env's
        own bookkeeping (a CartPole ``_reset``: 100 against 81 µs, measured); its observation is
        rounded to the observation space's dtype (as the vector env's batch is) and copied into the
        float64 rows, as a direct step's is.  The vector env's own state
        (its last observations, its autoreset flags) is then not updated: with direct steps
        nothing reads it, and :meth:`load_state_dict` resets it whole.
        """
        seeds = self._new_seeds(mask_e)
        every = bool(np.all(mask_e))
        if self._direct_steps() is None:
            options = None if every else {"reset_mask": np.asarray(mask_e, dtype=bool)}
            obs, _ = self.envs.reset(seed=seeds, options=options)
            obs = np.array(obs, dtype=np.float64)  # a copy (copy=False envs reuse their buffer)
            if not every:
                obs = np.where(np.asarray(mask_e)[:, None], obs, keep_eo)
        else:
            obs = np.empty((self.n_envs, self.obs_dim)) if every else np.array(keep_eo, dtype=np.float64)
            cast = self._obs_cast
            for i in np.flatnonzero(mask_e):
                o, _ = self.envs.envs[i].reset(seed=seeds[i], options=None if every else {})
                obs[i] = o if cast is None else np.asarray(o, cast)
        self.ep_return_e[mask_e] = 0.0
        self.ep_len_e[mask_e] = 0
        for i in np.flatnonzero(mask_e):
            self.ep_actions[i] = []
        return obs

    def start(self) -> None:
        """Reset every env with a fresh episode seed (once, before the first rollout)."""
        self.obs_eo = self._reset(np.ones(self.n_envs, dtype=bool))

    # ----------------------------------------------------------------- sampling
    def collect(self, policy, theta, n_steps: int, rng: np.random.Generator, obs_normalizer=None,
                deterministic: bool = False) -> RolloutBatch:
        """Step every env ``n_steps`` times with the policy at θ (a host NumPy array).

        ``rng`` draws the action noise; ``obs_normalizer`` (frozen here) maps raw
        observations to the policy's inputs.  One policy forward per step on the
        (E, obs_dim) batch.
        """
        if self.obs_eo is None:
            self.start()
        T, E, O = int(n_steps), self.n_envs, self.obs_dim
        theta = np.asarray(theta)
        norm = obs_normalizer.normalize if obs_normalizer is not None else (lambda o: o)
        raw_obs_teo = np.empty((T, E, O))
        next_raw_teo = np.empty((T, E, O))
        if isinstance(self.action_space, spaces.Discrete):
            act_te = np.empty((T, E), dtype=np.int64)
        else:
            act_te = np.empty((T, E, self.act_dim), dtype=np.int64 if self.discrete else np.float64)
        env_act_te = act_te if self.discrete else np.empty((T, E, self.act_dim))
        logp_te = np.empty((T, E))
        rew_te = np.empty((T, E))
        term_te = np.empty((T, E), dtype=bool)
        trunc_te = np.empty((T, E), dtype=bool)
        ep_returns, ep_lengths = [], []
        ep_start_e = np.zeros(E, dtype=np.int64)  # first step of the current episode within this rollout
        carry = self.ep_actions

        obs_eo = self.obs_eo
        direct = self._direct_steps()
        if isinstance(policy, MLPPolicy) and type(policy).sample is MLPPolicy.sample:
            sampler = HostSampler(policy, theta)
            act_fn = sampler.act
        else:  # a duck-typed policy: its own sample, log-probabilities as it gives them
            sampler = None

            def act_fn(obs, rng, deterministic):
                act, logp_te[t] = policy.sample(theta, obs, rng, deterministic=deterministic)
                return act

        # Per-env episode bookkeeping as Python numbers inside the loop (no array op per step).
        ep_len = [int(n) for n in self.ep_len_e]
        ep_ret = [float(r) for r in self.ep_return_e]
        limits = [limit for _, limit in direct] if direct is not None else None
        cast = self._obs_cast

        for t in range(T):
            raw_obs_teo[t] = obs_eo
            act = act_te[t] = act_fn(norm(obs_eo), rng, deterministic)
            if self.discrete:
                env_act = act
            else:
                # clipped only for the env (np.clip's dispatch costs more than these two ufuncs)
                env_act = env_act_te[t] = np.minimum(np.maximum(act, self.low), self.high)
            if direct is None:
                next_raw_teo[t], rew_te[t], term_te[t], trunc_te[t], _ = self.envs.step(env_act)  # copies
                rew_e, done_e = rew_te[t].tolist(), (term_te[t] | trunc_te[t]).tolist()
            else:  # each env's own step, TimeLimit counted here (see _direct_steps)
                rew_e, done_e = [], []
                for i, (step_i, _) in enumerate(direct):
                    o, rew, term, trunc, _ = step_i(env_act[i])
                    next_raw_teo[t, i] = o if cast is None else np.asarray(o, cast)
                    trunc = trunc or (limits[i] is not None and ep_len[i] + 1 >= limits[i])
                    rew_te[t, i], term_te[t, i], trunc_te[t, i] = rew, term, trunc
                    rew_e.append(float(rew))
                    done_e.append(bool(term or trunc))
            for i in range(E):
                ep_ret[i] += rew_e[i]
                ep_len[i] += 1
            if True in done_e:
                for i in range(E):
                    if done_e[i]:
                        ep_returns.append(ep_ret[i])
                        ep_lengths.append(ep_len[i])
                        ep_ret[i], ep_len[i] = 0.0, 0
                        carry[i] = []
                        ep_start_e[i] = t + 1
                # final obs already stored in next_raw_teo[t]; the other envs go on from theirs
                obs_eo = self._reset(np.array(done_e), next_raw_teo[t])
            else:
                obs_eo = next_raw_teo[t]  # never written again: safe to read as the next input
        self.obs_eo = obs_eo
        self.ep_len_e = np.array(ep_len, dtype=np.int64)
        self.ep_return_e = np.array(ep_ret, dtype=np.float64)
        # Actions of every episode still running, for exact restore.
        for i in range(E):
            carry[i] = carry[i] + list(env_act_te[ep_start_e[i]:, i])

        obs_teo = norm(raw_obs_teo)
        if sampler is not None:  # log π(a|s) at sampling time, for the whole batch at once (logging only)
            logp_te = sampler.log_prob(obs_teo.reshape(T * E, O), act_te.reshape(T * E, *act_te.shape[2:])).reshape(T, E)
        return RolloutBatch(
            obs_teo=obs_teo, raw_obs_teo=raw_obs_teo, act_te=act_te, logp_te=logp_te, rew_te=rew_te,
            terminated_te=term_te, truncated_te=trunc_te, next_obs_teo=norm(next_raw_teo),
            episode_returns=np.asarray(ep_returns, dtype=np.float64),
            episode_lengths=np.asarray(ep_lengths, dtype=np.int64),
        )

    # ------------------------------------------------------------- save/restore
    def state_dict(self) -> tuple[dict, dict[str, np.ndarray]]:
        """(JSON-able metadata, arrays) that :meth:`load_state_dict` restores exactly."""
        meta = {"seed_rng": self.seed_rng.bit_generator.state, "ep_seed_e": [int(s) for s in self.ep_seed_e],
                "ep_return_e": [float(r) for r in self.ep_return_e], "ep_len_e": [int(n) for n in self.ep_len_e]}
        arrays = {"rollout/obs_eo": np.asarray(self.obs_eo)}
        for i, acts in enumerate(self.ep_actions):
            if isinstance(self.action_space, spaces.Discrete):
                arrays[f"rollout/ep_actions_{i}"] = np.asarray(acts, dtype=np.int64).reshape(len(acts))
            elif self.discrete:  # MultiDiscrete / MultiBinary rows
                arrays[f"rollout/ep_actions_{i}"] = np.asarray(acts, dtype=np.int64).reshape(len(acts), self.act_dim)
            else:
                arrays[f"rollout/ep_actions_{i}"] = np.asarray(acts, dtype=np.float64).reshape(len(acts), self.act_dim)
        return meta, arrays

    def load_state_dict(self, meta: dict, arrays) -> None:
        r"""Reset each env with its episode's seed and replay the saved actions (inside the env's process).

        Parameters
        ----------
        meta : dict
            JSON part of :meth:`state_dict`.
        arrays : mapping of str to array
            Array part of :meth:`state_dict`.
        """
        self.seed_rng.bit_generator.state = meta["seed_rng"]
        self.ep_seed_e = np.asarray(meta["ep_seed_e"], dtype=np.int64)
        self.ep_return_e = np.asarray(meta["ep_return_e"], dtype=np.float64)
        self.ep_len_e = np.asarray(meta["ep_len_e"], dtype=np.int64)
        acts = [np.asarray(arrays[f"rollout/ep_actions_{i}"]) for i in range(self.n_envs)]
        self.ep_actions = [list(a) for a in acts]
        self.envs.reset(seed=[int(s) for s in self.ep_seed_e])
        self.envs.set_attr("replay_payload", [(int(s), a) for s, a in zip(self.ep_seed_e, acts)])
        obs = np.stack([np.asarray(o, dtype=np.float64) for o in self.envs.call("replay_episode")])
        self.obs_eo = obs
        saved = np.asarray(arrays["rollout/obs_eo"], dtype=np.float64)
        bad = [i for i in range(self.n_envs) if not np.array_equal(obs[i], saved[i])]
        if bad:
            warnings.warn(f"{self.env_id}: envs {bad} did not replay to their saved observation; "
                          "the resumed run continues from the replayed state and may differ slightly "
                          "from an uninterrupted one", RuntimeWarning, stacklevel=2)

    def close(self, terminate: bool = False) -> None:
        r"""Close the vector environment (and its worker processes).

        Parameters
        ----------
        terminate : bool
            Stop async workers at once (after an interrupt, when a step may be pending)
            instead of asking each to close.
        """
        if terminate and hasattr(self.envs, "processes"):
            with warnings.catch_warnings():  # "close while waiting for a pending step": that is the point
                warnings.simplefilter("ignore")
                self.envs.close(terminate=True)
        else:
            self.envs.close()
