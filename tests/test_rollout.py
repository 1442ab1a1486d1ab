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


@pytest.mark.parametrize("kind", ["gaussian", "categorical", "multicategorical", "bernoulli"])
def test_host_sampler__same_actions_and_logp_as_policy_sample(kind):
    # The rollout's sampler is the policy's own network (MLP.predictor, the arithmetic of MLP.forward) and its
    # head's draw, so actions and log-probabilities are the same bits as policy.sample's from the same generator.
    from trpo_ref.policy import BernoulliMLPPolicy, MultiCategoricalMLPPolicy
    from trpo_ref.rollout import HostSampler

    pi = {"gaussian": lambda: GaussianMLPPolicy(5, 3, (16, 8)),
          "categorical": lambda: CategoricalMLPPolicy(5, 4, (16,), activation="relu"),
          "multicategorical": lambda: MultiCategoricalMLPPolicy(5, [3, 2, 4], (16, 8)),
          "bernoulli": lambda: BernoulliMLPPolicy(5, 4, (16,), activation="relu")}[kind]()
    theta = pi.init_params(7) * 20  # large weights: spread-out actions
    obs = np.random.default_rng(0).normal(size=(6, 5))
    fast = HostSampler(pi, theta)
    for det in (False, True):
        a1, l1 = fast(theta, obs, np.random.default_rng(3), deterministic=det)
        a2, l2 = pi.sample(theta, obs, np.random.default_rng(3), deterministic=det)
        assert a1.dtype == a2.dtype and a1.shape == pi.act_shape(6)
        np.testing.assert_array_equal(a1, a2)
        np.testing.assert_array_equal(l1, l2)
    assert len(np.unique(fast.act(obs, np.random.default_rng(4)), axis=0)) > 1  # the draw is not constant


gym.register("TrpoRefBoxEchoShort-v0", entry_point=_BoxEcho, max_episode_steps=7)


@pytest.mark.parametrize("env_id, n_envs, steps", [("CartPole-v1", 3, 700), ("TrpoRefCounter-v0", 2, 23),
                                                   ("TrpoRefBoxEchoShort-v0", 2, 30)])
def test_direct_steps__same_batch_as_stepping_the_vector_env(env_id, n_envs, steps):
    # The bare envs' step with the time limit counted in the rollout (VectorRollout._direct_steps), and each
    # env's own reset (VectorRollout._reset), must give the batch SyncVectorEnv.step and .reset give, bit for
    # bit: same envs, same actions, same seeds.  700 CartPole
    # steps of a random policy end many episodes at different times in the 3 envs (partial resets).
    r = VectorRollout(env_id, n_envs, seed=4)
    if r.discrete:
        pi = CategoricalMLPPolicy(r.obs_dim, r.n_actions)
    else:
        pi = GaussianMLPPolicy(r.obs_dim, r.act_dim, log_std_init=0.5)
    theta = pi.init_params(0)
    batches = []
    for direct in (True, False):
        r = VectorRollout(env_id, n_envs, seed=4)
        if not direct:
            r._direct = False  # step and reset through SyncVectorEnv
        else:
            assert r._direct_steps() is not None

            def vector_reset(**kwargs):
                raise AssertionError("the direct path resets each env itself, not through SyncVectorEnv.reset")

            r.envs.reset = vector_reset
        batches.append(r.collect(pi, theta, steps, np.random.default_rng(1)))
        r.close()
    for name in ("raw_obs_teo", "act_te", "rew_te", "terminated_te", "truncated_te", "next_obs_teo",
                 "episode_returns", "episode_lengths", "logp_te"):
        np.testing.assert_array_equal(getattr(batches[0], name), getattr(batches[1], name), err_msg=name)
    assert len(batches[0].episode_lengths) > 0


class _Float32SpaceFloat64Obs(gym.Env):
    """A float32 Box whose reset and step hand back float64 observations (gymnasium's checker only warns)."""

    observation_space = gym.spaces.Box(-5.0, 5.0, (3,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._t = 0
        return self.np_random.standard_normal(3) / 3, {}  # float64, not representable in float32

    def step(self, action):
        self._t += 1
        return self.np_random.standard_normal(3) / 3, 1.0, self._t % 7 == 0, False, {}


@pytest.mark.filterwarnings("ignore::UserWarning")  # the passive checker's dtype warning is the point
def test_direct_steps__round_observations_to_the_space_dtype_as_the_vector_env_does():
    # SyncVectorEnv batches observations in the space's dtype (float32 here) before the rollout's
    # float64 copy; the direct step and reset must round them the same way (they once wrote the
    # env's float64 values straight in: ~2e-8 apart).
    if "Float32SpaceFloat64Obs-v0" not in gym.registry:
        gym.register("Float32SpaceFloat64Obs-v0", entry_point=_Float32SpaceFloat64Obs, max_episode_steps=50)
    pi = CategoricalMLPPolicy(3, 2)
    batches = []
    for direct in (True, False):
        r = VectorRollout("Float32SpaceFloat64Obs-v0", 2, seed=3)
        if direct:
            assert r._direct_steps() is not None
        else:
            r._direct = False
        batches.append(r.collect(pi, pi.init_params(0), 30, np.random.default_rng(0)))
        r.close()
    for name in ("raw_obs_teo", "next_obs_teo", "act_te", "episode_lengths"):
        np.testing.assert_array_equal(getattr(batches[0], name), getattr(batches[1], name), err_msg=name)
    assert np.array_equal(batches[0].raw_obs_teo, batches[0].raw_obs_teo.astype(np.float32))  # rounded
    assert len(batches[0].episode_lengths) > 0  # resets happened inside the rollout


def test_direct_steps__other_wrappers_step_through_the_vector_env():
    r = VectorRollout("CartPole-v1", 1, seed=0, env_kwargs={"sutton_barto_reward": True})
    assert r._direct_steps() is not None  # env kwargs are not wrappers
    r.close()
    r = VectorRollout("CartPole-v1", 1, seed=0)
    r.envs.envs[0].env = gym.wrappers.ClipReward(r.envs.envs[0].env, 0.0, 0.5)  # a wrapper that changes numbers
    assert r._direct_steps() is None
    b = r.collect(CategoricalMLPPolicy(4, 2), CategoricalMLPPolicy(4, 2).init_params(0), 5, np.random.default_rng(0))
    np.testing.assert_array_equal(b.rew_te, 0.5)
    r.close()
