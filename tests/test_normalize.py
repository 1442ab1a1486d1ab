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
