"""Rollout on gymnasium.vector: flags kept apart, true final observations, clipping, spaces, replay."""

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

from trpo_ref.normalize import ObsNormalizer
from trpo_ref.policy import CategoricalMLPPolicy, GaussianMLPPolicy
from trpo_ref.rollout import UnsupportedSpaceError, VectorRollout, check_spaces


class _Counter(gym.Env):
    """obs = [step index]; terminates when an action of 1 is taken at step >= 2, truncates at 5 (TimeLimit)."""

    observation_space = spaces.Box(-np.inf, np.inf, (1,), np.float64)
    action_space = spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.array([0.0]), {}

    def step(self, action):
        self.t += 1
        return np.array([float(self.t)]), 1.0, bool(action == 1 and self.t >= 2), False, {}


class _BoxEcho(gym.Env):
    """obs = the action the env received; bounds [-1, 1]."""

    observation_space = spaces.Box(-np.inf, np.inf, (2,), np.float64)
    action_space = spaces.Box(-1.0, 1.0, (2,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(2), {}

    def step(self, action):
        return np.asarray(action, dtype=np.float64), 0.0, False, False, {}


gym.register("TrpoRefCounter-v0", entry_point=_Counter, max_episode_steps=5)
gym.register("TrpoRefBoxEcho-v0", entry_point=_BoxEcho, max_episode_steps=1000)


class _FixedPolicy:
    """Stands in for a policy: always the same action (duck-types ``sample``)."""

    def __init__(self, act):
        self.act = np.asarray(act)

    def sample(self, theta, obs, rng, deterministic=False):
        n = obs.shape[0]
        return np.broadcast_to(self.act, (n, *self.act.shape)).copy(), np.full(n, -0.5)


def test_truncation__next_obs_is_the_true_final_observation():
    r = VectorRollout("TrpoRefCounter-v0", 2, seed=0)
    b = r.collect(_FixedPolicy(0), None, 12, np.random.default_rng(0))
    # action 0 never terminates: TimeLimit truncates after 5 steps, obs 1..5 then reset to 0
    assert not b.terminated_te.any()
    np.testing.assert_array_equal(b.truncated_te[:, 0], [0, 0, 0, 0, 1] * 2 + [0, 0])
    np.testing.assert_array_equal(b.next_obs_teo[4, :, 0], [5.0, 5.0])  # final obs, not the reset obs
    np.testing.assert_array_equal(b.obs_teo[5, :, 0], [0.0, 0.0])  # the next episode starts from reset
    np.testing.assert_array_equal(b.episode_lengths, [5, 5, 5, 5])
    np.testing.assert_array_equal(b.episode_returns, [5.0] * 4)
    r.close()


def test_termination__flag_set_and_kept_apart_from_truncation():
    r = VectorRollout("TrpoRefCounter-v0", 1, seed=0)
    b = r.collect(_FixedPolicy(1), None, 6, np.random.default_rng(0))
    np.testing.assert_array_equal(b.terminated_te[:, 0], [0, 1, 0, 1, 0, 1])
    assert not b.truncated_te.any()
    np.testing.assert_array_equal(b.next_obs_teo[:, 0, 0], [1, 2, 1, 2, 1, 2])
    np.testing.assert_array_equal(b.episode_lengths, [2, 2, 2])
    r.close()


def test_continuous_actions__clipped_for_the_env_only():
    r = VectorRollout("TrpoRefBoxEcho-v0", 1, seed=0)
    b = r.collect(_FixedPolicy([3.0, -0.25]), None, 2, np.random.default_rng(0))
    np.testing.assert_array_equal(b.act_te[0, 0], [3.0, -0.25])  # stored unclipped (its log-prob)
    np.testing.assert_allclose(b.next_obs_teo[0, 0], [1.0, -0.25])  # the env got the clipped action
    r.close()


def test_gaussian_logp__is_of_the_unclipped_action():
    r = VectorRollout("Pendulum-v1", 2, seed=0)
    pi = GaussianMLPPolicy(r.obs_dim, r.act_dim, log_std_init=1.0)  # σ = e: many actions beyond ±2
    theta = pi.init_params(0)
    b = r.collect(pi, theta, 50, np.random.default_rng(1))
    assert np.abs(b.act_te).max() > 2.0
    logp = pi.log_prob(theta, b.obs_teo.reshape(100, -1), b.act_te.reshape(100, -1))
    np.testing.assert_allclose(logp, b.logp_te.reshape(100), rtol=1e-12)
    r.close()


@pytest.mark.parametrize("space", [spaces.MultiDiscrete([[2, 3], [2, 2]]), spaces.MultiBinary((2, 2)),
                                   spaces.Tuple((spaces.Discrete(2), spaces.Discrete(2))),
                                   spaces.Box(-1, 1, (2, 2))])
def test_unsupported_action_space__error_names_it(space):
    with pytest.raises(UnsupportedSpaceError, match=type(space).__name__):
        check_spaces(spaces.Box(-1, 1, (3,)), space)


def test_multidiscrete_and_multibinary_action_spaces__accepted_when_1d():
    check_spaces(spaces.Box(-1, 1, (3,)), spaces.MultiDiscrete([2, 3]))
    check_spaces(spaces.Box(-1, 1, (3,)), spaces.MultiBinary(3))
    with pytest.raises(UnsupportedSpaceError, match="start 0"):
        check_spaces(spaces.Box(-1, 1, (3,)), spaces.MultiDiscrete([2, 3], start=[1, 0]))


def test_unsupported_observation_space__error_names_it():
    with pytest.raises(UnsupportedSpaceError, match="Discrete"):
        check_spaces(spaces.Discrete(4), spaces.Discrete(2))


def test_unknown_env_id__value_error_names_it():
    with pytest.raises(ValueError, match="NoSuchEnv-v9"):
        VectorRollout("NoSuchEnv-v9", 1, seed=0)


def test_normalizer__applied_with_frozen_stats():
    r = VectorRollout("CartPole-v1", 2, seed=0)
    norm = ObsNormalizer(4)
    norm.update(np.random.default_rng(0).normal(size=(10, 4)))
    pi = CategoricalMLPPolicy(4, 2)
    b = r.collect(pi, pi.init_params(0), 30, np.random.default_rng(0), norm)
    np.testing.assert_array_equal(b.obs_teo, norm.normalize(b.raw_obs_teo))
    r.close()


@pytest.mark.parametrize("vectorization", ["sync", "async"])
def test_state_dict__replay_continues_exactly(vectorization):
    pi = CategoricalMLPPolicy(4, 2)
    theta = pi.init_params(0)
    a = VectorRollout("CartPole-v1", 2, seed=3, vectorization=vectorization)
    a.collect(pi, theta, 37, np.random.default_rng(0))
    meta, arrays = a.state_dict()
    rng_state = np.random.default_rng(5).bit_generator.state
    rng_a = np.random.default_rng(); rng_a.bit_generator.state = rng_state
    ref = a.collect(pi, theta, 60, rng_a)
    b = VectorRollout("CartPole-v1", 2, seed=99, vectorization=vectorization)
    b.load_state_dict(meta, arrays)
    rng_b = np.random.default_rng(); rng_b.bit_generator.state = rng_state
    got = b.collect(pi, theta, 60, rng_b)
    for name in ("raw_obs_teo", "act_te", "rew_te", "terminated_te", "truncated_te", "next_obs_teo",
                 "episode_returns", "episode_lengths"):
        np.testing.assert_array_equal(getattr(got, name), getattr(ref, name), err_msg=name)
    a.close()
    b.close()


@pytest.mark.parametrize("kind", ["gaussian", "categorical"])
def test_host_sampler__same_actions_and_logp_as_policy_sample(kind):
    from trpo_ref.rollout import HostSampler

    pi = GaussianMLPPolicy(5, 3, (16, 8)) if kind == "gaussian" else CategoricalMLPPolicy(5, 4, (16,), activation="relu")
    theta = pi.init_params(7) * 20  # large weights: spread-out actions
    obs = np.random.default_rng(0).normal(size=(6, 5))
    fast = HostSampler(pi, theta)
    for det in (False, True):
        a1, l1 = fast(theta, obs, np.random.default_rng(3), deterministic=det)
        a2, l2 = pi.sample(theta, obs, np.random.default_rng(3), deterministic=det)
        np.testing.assert_allclose(a1, a2, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(l1, l2, rtol=1e-10, atol=1e-10)  # same formula, other rounding order
