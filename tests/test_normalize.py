"""Running statistics: exact agreement with NumPy over the concatenated data, save/restore."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from trpo_ref.normalize import ObsNormalizer, RewardScaler, RunningMeanStd


# ------------------------------------------------------------------ worked examples
def test_running_mean_std__two_batches_by_hand():
    rms = RunningMeanStd(())
    rms.update([1.0, 3.0])  # mean 2, var 1
    rms.update([5.0])  # all: 1, 3, 5 -> mean 3, var 8/3
    assert rms.count == 3
    assert rms.mean == pytest.approx(3.0, abs=1e-15)
    assert rms.var == pytest.approx(8.0 / 3.0, rel=1e-15)


def test_obs_normalizer__clips_and_uses_frozen_stats():
    norm = ObsNormalizer(2, clip=1.5)
    norm.update(np.array([[0.0, 10.0], [2.0, 10.0]]))  # mean (1, 10), var (1, 0)
    out = norm.normalize(np.array([[3.0, 10.0], [1.0, 10.0 + 1e-3]]))
    # (3-1)/√(1+1e-8) ≈ 2 -> clipped to 1.5; second column var 0: (1e-3)/√1e-8 = 10 -> clipped
    np.testing.assert_allclose(out, [[1.5, 0.0], [0.0, 1.5]], atol=1e-7)


def test_reward_scaler__divides_by_std_of_discounted_return():
    sc = RewardScaler(n_envs=1, gamma=0.5, clip=100.0)
    rew = np.array([[1.0], [1.0], [1.0]])
    done = np.array([[False], [True], [False]])
    out = sc.scale(rew, done)
    g = np.array([1.0, 1.5, 1.0])  # G = γG + r, reset to 0 after the done step
    np.testing.assert_allclose(out[:, 0], 1.0 / np.sqrt(np.var(g) + 1e-8), rtol=1e-12)
    assert sc.ret_e[0] == 1.0


# ------------------------------------------------------------------------- properties
@given(seed=st.integers(0, 2**32 - 1), sizes=st.lists(st.integers(1, 40), min_size=1, max_size=6))
def test_running_mean_std__equals_numpy_over_concatenation(seed, sizes):
    rng = np.random.default_rng(seed)
    batches = [rng.normal(3.0, 2.0, size=(n, 3)) for n in sizes]
    rms = RunningMeanStd((3,))
    for b in batches:
        rms.update(b)
    allx = np.concatenate(batches)
    # Chan's merge and numpy's two-pass formula differ only by rounding (data O(10)): 1e-12 relative.
    np.testing.assert_allclose(rms.mean, allx.mean(axis=0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(rms.var, allx.var(axis=0), rtol=1e-12, atol=1e-12)
    assert rms.count == len(allx)


def test_normalizers__state_dict_round_trip_is_exact():
    rng = np.random.default_rng(0)
    norm = ObsNormalizer(4, clip=5.0)
    norm.update(rng.normal(size=(17, 4)))
    sc = RewardScaler(2, 0.99)
    sc.scale(rng.normal(size=(5, 2)), np.zeros((5, 2), bool))
    d = {**norm.state_dict(), **sc.state_dict()}
    np.savez("/dev/null", **d)  # only plain arrays: loadable with allow_pickle=False
    norm2, sc2 = ObsNormalizer(4), RewardScaler(2, 0.99)
    norm2.load_state_dict(d)
    sc2.load_state_dict(d)
    x = rng.normal(size=(3, 4))
    assert np.array_equal(norm.normalize(x), norm2.normalize(x))
    assert norm2.clip == 5.0 and norm2.rms.count == 17
    r = rng.normal(size=(4, 2))
    done = np.zeros((4, 2), bool)
    assert np.array_equal(sc.scale(r, done), sc2.scale(r, done))


# ------------------------------------------------------------------- the fast paths are the formulas, bit for bit
def _scaled_rewards_vectorised(ret_e, gamma, rms, eps, clip, rew_te, done_te):
    """RewardScaler.scale's recursion as one array loop over T (what it computed before the Python-float path)."""
    g_te = np.empty_like(rew_te)
    g = ret_e
    for t in range(rew_te.shape[0]):
        g = gamma * g + rew_te[t]
        g_te[t] = g
        g = np.where(done_te[t], 0.0, g)
    rms.update(g_te.reshape(-1))
    return np.clip(rew_te / np.sqrt(rms.var + eps), -clip, clip), g


@pytest.mark.parametrize("n_envs", [1, 2, 16, 17])  # 17: the array loop itself
def test_reward_scaler__python_float_recursion_is_the_array_loop_bit_for_bit(n_envs):
    rng = np.random.default_rng(n_envs)
    sc = RewardScaler(n_envs, 0.99, clip=0.2)  # std of G ≈ 3/√(1 − 0.99²) ≈ 21: some rewards clipped
    ret_e, rms = np.zeros(n_envs), RunningMeanStd(())
    for rollout in range(3):  # the returns carry over between rollouts
        rew = rng.normal(1.0, 3.0, size=(257, n_envs))
        done = rng.random(rew.shape) < 0.05
        expected, ret_e = _scaled_rewards_vectorised(ret_e, 0.99, rms, sc.eps, sc.clip, rew, done)
        out = sc.scale(rew, done)
        assert out.tobytes() == expected.tobytes()
        assert sc.ret_e.tobytes() == ret_e.tobytes() and sc.ret_e.shape == (n_envs,)
        assert sc.rms.var.tobytes() == rms.var.tobytes() and sc.rms.mean.tobytes() == rms.mean.tobytes()
    assert 0 < np.count_nonzero(np.abs(out) == 0.2) < out.size


def test_obs_normalizer__cached_root_follows_every_change_of_the_statistics():
    rng = np.random.default_rng(0)
    norm = ObsNormalizer(5, clip=3.0)

    def formula(x):  # what normalize computed before the cached root and the in-place clip
        return np.clip((np.asarray(x, dtype=np.float64) - norm.rms.mean) / np.sqrt(norm.rms.var + norm.eps),
                       -norm.clip, norm.clip)

    x = rng.normal(0.0, 4.0, size=(64, 5))
    x[0, 0], x[1, 1], x[2, 2] = np.nan, -0.0, np.inf
    checks = 0
    for change in ("fresh", "update", "update", "eps", "load", "clip"):
        if change == "update":
            norm.update(rng.normal(1.0, 2.0, size=(100, 5)))
        elif change == "eps":
            norm.eps = 1e-2
        elif change == "load":
            other = ObsNormalizer(5)
            other.update(rng.normal(-3.0, 0.5, size=(10, 5)))
            norm.load_state_dict(other.state_dict())
        elif change == "clip":
            norm.clip = 0.5
        for obs in (x, x[3], x[:1], x.astype(np.float32), x.tolist()):
            out = norm.normalize(obs)
            assert out.dtype == np.float64 and out.tobytes() == formula(obs).tobytes()
            checks += 1
    assert checks == 30
    assert np.all(norm.normalize(x)[1:] <= 0.5)  # the last clip applied
