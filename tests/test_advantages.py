"""trpo_ref.advantages: GAE, TD residuals, discounted returns.

Sections: worked examples with hand-computed numbers (termination vs
truncation); hypothesis properties (λ = 0 and λ = 1 limits, flag encodings,
float32), every backend; agreement with the O(T²) direct sums in
``oracles.py``; input validation.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from oracles import discounted_returns_direct_sum, gae_direct_sum
from trpo_ref import backend
from trpo_ref.advantages import discounted_returns, gae, td_residuals

EPS64 = float(np.finfo(np.float64).eps)
EPS32 = float(np.finfo(np.float32).eps)


def _flags(xb, a):
    """Host bool flags onto the backend as bool."""
    return xb.asarray(np.asarray(a, dtype=bool), dtype=xb.xp.bool)


# ------------------------------------------------------------ worked examples
# γ = 0.9, λ = 0.5 (γλ = 0.45), T = 3, E = 2.
# env 0 terminates at t = 1 (next_val there, 9.0, must be ignored):
#   td = [1 + 0.9·1 − 0.5, 2 + 0 − 1, 3 + 0.9·2 − 1.5] = [1.4, 1.0, 3.3]
#   Â2 = 3.3, Â1 = 1.0 (episode ends), Â0 = 1.4 + 0.45·1.0 = 1.85;  R̂ = Â + V = [2.35, 2.0, 4.8]
# env 1 is truncated at t = 1; its real final observation has V = 4.0 (the
# reset observation after it has V = 0.0 and must not be used for t = 1):
#   td = [0 + 0.9·2 − 1, 1 + 0.9·4 − 2, 0 + 0.9·1 − 0] = [0.8, 2.6, 0.9]
#   Â2 = 0.9, Â1 = 2.6 (cut), Â0 = 0.8 + 0.45·2.6 = 1.97;            R̂ = [2.97, 4.6, 0.9]
GAMMA, LAM = 0.9, 0.5
REW = np.array([[1.0, 0.0], [2.0, 1.0], [3.0, 0.0]])
VAL = np.array([[0.5, 1.0], [1.0, 2.0], [1.5, 0.0]])
NEXT_VAL = np.array([[1.0, 2.0], [9.0, 4.0], [2.0, 1.0]])
TERM = np.array([[0, 0], [1, 0], [0, 0]], dtype=bool)
TRUNC = np.array([[0, 0], [0, 1], [0, 0]], dtype=bool)
ADV = np.array([[1.85, 1.97], [1.0, 2.6], [3.3, 0.9]])
RET = np.array([[2.35, 2.97], [2.0, 4.6], [4.8, 0.9]])
# Each entry is a sum of ≤ 3 products of numbers ≤ 10 in magnitude: a few ulps of 10.
WORKED_ATOL = 8 * EPS64 * 10


def _gae_worked(xb, next_val=NEXT_VAL, **overrides):
    args = {"rew_te": REW, "val_te": VAL, "next_val_te": next_val}
    args = {k: xb.asarray(v) for k, v in {**args, **overrides}.items()}
    adv, ret = gae(args["rew_te"], args["val_te"], args["next_val_te"], _flags(xb, TERM), _flags(xb, TRUNC), GAMMA, LAM)
    return backend.to_numpy(adv), backend.to_numpy(ret)


def test_gae__worked_example_by_hand(xb):
    adv, ret = _gae_worked(xb)
    np.testing.assert_allclose(adv, ADV, rtol=0, atol=WORKED_ATOL)
    np.testing.assert_allclose(ret, RET, rtol=0, atol=WORKED_ATOL)


def test_gae__truncation_bootstraps_from_next_val_and_termination_does_not(xb):
    adv, _ = _gae_worked(xb)
    # termination: V(s_{t+1}) is multiplied by 0, so any value gives the same bits
    changed = NEXT_VAL.copy()
    changed[1, 0] = -100.0
    np.testing.assert_array_equal(_gae_worked(xb, changed)[0], adv)
    # truncation: V(final obs) 4 -> 5 raises td1 by γ·1 = 0.9, Â1 by 0.9, Â0 by γλ·0.9 = 0.405
    changed = NEXT_VAL.copy()
    changed[1, 1] = 5.0
    adv2, _ = _gae_worked(xb, changed)
    np.testing.assert_allclose(adv2[:, 1] - adv[:, 1], [0.405, 0.9, 0.0], rtol=0, atol=WORKED_ATOL)
    np.testing.assert_array_equal(adv2[:, 0], adv[:, 0])
    # the value of the reset observation after the cut (V[2, 1]) does not reach t = 1 or t = 0
    val = VAL.copy()
    val[2, 1] = 7.0
    adv3, _ = _gae_worked(xb, val_te=val)
    np.testing.assert_array_equal(adv3[:2, 1], adv[:2, 1])


def test_td_residuals__worked_example_by_hand(xb):
    td = td_residuals(xb.asarray(REW), xb.asarray(VAL), xb.asarray(NEXT_VAL), _flags(xb, TERM), GAMMA)
    np.testing.assert_allclose(backend.to_numpy(td), [[1.4, 0.8], [1.0, 2.6], [3.3, 0.9]], rtol=0, atol=WORKED_ATOL)


def test_discounted_returns__worked_example_by_hand(xb):
    # bootstrap b = [10, 20]:
    # env 0: R2 = 3 + 0.9·10 = 12, R1 = 2 (terminated), R0 = 1 + 0.9·2 = 2.8
    # env 1: R2 = 0 + 0.9·20 = 18, R1 = 1 (truncated: no bootstrap inside the batch), R0 = 0.9·1 = 0.9
    ret = discounted_returns(xb.asarray(REW), _flags(xb, TERM), _flags(xb, TRUNC), GAMMA, xb.asarray([10.0, 20.0]))
    np.testing.assert_allclose(backend.to_numpy(ret), [[2.8, 0.9], [2.0, 1.0], [12.0, 18.0]],
                               rtol=0, atol=WORKED_ATOL)
    # without bootstrap the last row is just the reward
    ret = discounted_returns(xb.asarray(REW), _flags(xb, TERM), _flags(xb, TRUNC), GAMMA)
    np.testing.assert_allclose(backend.to_numpy(ret), [[2.8, 0.9], [2.0, 1.0], [3.0, 0.0]], rtol=0, atol=WORKED_ATOL)


def test_discounted_returns__no_bootstrap_after_a_final_row_episode_end(xb):
    ret = discounted_returns(xb.asarray([[1.0, 1.0]]), _flags(xb, [[True, False]]), _flags(xb, [[False, True]]),
                             0.5, xb.asarray([100.0, 100.0]))
    np.testing.assert_array_equal(backend.to_numpy(ret), [[1.0, 1.0]])


# -------------------------------------------------------------- properties
@st.composite
def rollouts(draw, max_t=12, max_e=4, truncation=True):
    """Random (T, E) rollout: rewards, values, next values consistent inside
    episodes (next_val[t] = val[t+1] unless step t ends its episode), flags."""
    T, E = draw(st.integers(1, max_t)), draw(st.integers(1, max_e))
    gamma = draw(st.one_of(st.sampled_from([0.0, 1.0, 0.99]), st.floats(0.0, 1.0)))
    lam = draw(st.one_of(st.sampled_from([0.0, 1.0, 0.95]), st.floats(0.0, 1.0)))
    p_term = draw(st.sampled_from([0.0, 0.2, 0.5]))
    p_trunc = draw(st.sampled_from([0.0, 0.2, 0.5])) if truncation else 0.0
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    rew = rng.standard_normal((T, E))
    val = rng.standard_normal((T, E))
    term = rng.random((T, E)) < p_term
    trunc = rng.random((T, E)) < p_trunc
    next_val = np.concatenate([val[1:], rng.standard_normal((1, E))], axis=0)
    ends = term | trunc
    next_val[ends] = rng.standard_normal(int(ends.sum()))     # final observations of ended episodes
    return rew, val, next_val, term, trunc, gamma, lam


def _scale(rew, val, next_val):
    """Bound on |td| (≤ |r| + |V'| + |V|) times T: a bound on every partial sum of the GAE series."""
    return rew.shape[0] * float(np.max(np.abs(rew) + np.abs(val) + np.abs(next_val)))


@given(case=rollouts())
def test_gae__agrees_with_direct_sum_oracle(xb, case):
    rew, val, next_val, term, trunc, gamma, lam = case
    adv, ret = gae(xb.asarray(rew), xb.asarray(val), xb.asarray(next_val), _flags(xb, term), _flags(xb, trunc),
                   gamma, lam)
    expected = gae_direct_sum(rew, val, next_val, term, trunc, gamma, lam)
    # recursion vs direct sum: both add ≤ T terms bounded by the scale; each
    # sum errs by ≤ T·eps·(Σ|terms|), so 4·T·eps·scale covers the pair.
    atol = 4 * rew.shape[0] * EPS64 * _scale(rew, val, next_val)
    np.testing.assert_allclose(backend.to_numpy(adv), expected, rtol=0, atol=atol)
    np.testing.assert_allclose(backend.to_numpy(ret), expected + val, rtol=0, atol=atol + 2 * EPS64 * np.abs(val).max())


@given(case=rollouts())
def test_gae__lambda_zero_gives_td_residuals(xb, case):
    rew, val, next_val, term, trunc, gamma, _ = case
    args = xb.asarray(rew), xb.asarray(val), xb.asarray(next_val)
    adv, _ = gae(*args, _flags(xb, term), _flags(xb, trunc), gamma, 0.0)
    td = td_residuals(*args, _flags(xb, term), gamma)
    # Â_t = td_t + 0·Â_{t+1}: the same bits
    np.testing.assert_array_equal(backend.to_numpy(adv), backend.to_numpy(td))
    # and td from its definition on the host (one product and two sums: ≤ 3 ulps of the scale)
    td_naive = rew + gamma * np.where(term, 0.0, next_val) - val
    np.testing.assert_allclose(backend.to_numpy(td), td_naive, rtol=0, atol=4 * EPS64 * _scale(rew, val, next_val))


@given(case=rollouts(truncation=False))
def test_gae__lambda_one_without_truncation_is_discounted_return_minus_value(xb, case):
    rew, val, next_val, term, trunc, gamma, _ = case
    adv, ret = gae(xb.asarray(rew), xb.asarray(val), xb.asarray(next_val), _flags(xb, term), _flags(xb, trunc),
                   gamma, 1.0)
    bootstrap = next_val[-1]      # V of the state after the batch (ignored where the last row terminated)
    mc = discounted_returns(xb.asarray(rew), _flags(xb, term), _flags(xb, trunc), gamma, xb.asarray(bootstrap))
    # Telescoping Σγ^k(r + γV' − V) = Σγ^k r + γ^n V_end − V_t holds exactly in
    # real arithmetic; in floats each of ≤ T steps adds ≤ 3 ulps of the scale.
    atol = 8 * rew.shape[0] * EPS64 * _scale(rew, val, next_val)
    np.testing.assert_allclose(backend.to_numpy(adv), backend.to_numpy(mc) - val, rtol=0, atol=atol)
    np.testing.assert_allclose(backend.to_numpy(ret), backend.to_numpy(mc), rtol=0, atol=atol)


@given(case=rollouts())
def test_discounted_returns__agrees_with_direct_sum_oracle(xb, case):
    rew, _, next_val, term, trunc, gamma, _ = case
    bootstrap = next_val[-1]
    ret = discounted_returns(xb.asarray(rew), _flags(xb, term), _flags(xb, trunc), gamma, xb.asarray(bootstrap))
    expected = discounted_returns_direct_sum(rew, term, trunc, gamma, bootstrap)
    # ≤ T+1 terms of size ≤ max(|r|, |b|): 4·T·eps·(T·max) covers both orders of summation.
    scale = rew.shape[0] * max(float(np.abs(rew).max()), float(np.abs(bootstrap).max()))
    np.testing.assert_allclose(backend.to_numpy(ret), expected, rtol=0, atol=4 * (rew.shape[0] + 1) * EPS64 * scale)


@given(case=rollouts(max_t=6, max_e=3))
def test_gae__bool_and_01_flags_give_the_same_bits(xb, case):
    rew, val, next_val, term, trunc, gamma, lam = case
    floats = xb.asarray(rew), xb.asarray(val), xb.asarray(next_val)
    as_bool = gae(*floats, _flags(xb, term), _flags(xb, trunc), gamma, lam)
    as_int = gae(*floats, xb.asarray(term.astype(np.int64)), xb.asarray(trunc.astype(np.int64)), gamma, lam)
    as_float = gae(*floats, xb.asarray(term.astype(np.float64)), xb.asarray(trunc.astype(np.float64)), gamma, lam)
    for other in (as_int, as_float):
        for a, b in zip(as_bool, other):
            np.testing.assert_array_equal(backend.to_numpy(a), backend.to_numpy(b))


@given(case=rollouts(max_t=8))
def test_gae__float32_keeps_dtype_and_agrees_with_float64(xb, case):
    rew, val, next_val, term, trunc, gamma, lam = case
    f32 = [xb.asarray(a, dtype=xb.xp.float32) for a in (rew, val, next_val)]
    adv32, ret32 = gae(*f32, _flags(xb, term), _flags(xb, trunc), gamma, lam)
    assert adv32.dtype == xb.xp.float32 and ret32.dtype == xb.xp.float32
    # float32 inputs are the float64 ones rounded (rel. eps32/2), then the same
    # ≤ T-step recursion in float32: 4·T·eps32·scale, as for float64 above.
    rounded = [a.astype(np.float32).astype(np.float64) for a in (rew, val, next_val)]
    expected = gae_direct_sum(*rounded, term, trunc, gamma, lam)
    atol = 4 * rew.shape[0] * EPS32 * _scale(rew, val, next_val)
    np.testing.assert_allclose(backend.to_numpy(adv32), expected, rtol=0, atol=atol)


# --------------------------------------------------------------- validation
def _valid(xb):
    return {"rew_te": xb.asarray(REW), "val_te": xb.asarray(VAL), "next_val_te": xb.asarray(NEXT_VAL),
            "terminated_te": _flags(xb, TERM), "truncated_te": _flags(xb, TRUNC), "gamma": GAMMA, "gae_lambda": LAM}


@pytest.mark.parametrize("name", ["rew_te", "val_te", "next_val_te", "terminated_te", "truncated_te"])
def test_gae__wrong_shapes_raise_naming_the_argument(xb, name):
    args = _valid(xb)
    for bad in (np.zeros(3), np.zeros((2, 2)), np.zeros((3, 3)), np.zeros((3, 2, 1))):
        args[name] = xb.asarray(bad)
        with pytest.raises(ValueError, match=name if bad.ndim != 2 else "shape"):
            gae(**args)


def test_gae__empty_batch_raises(xb):
    args = {k: (xb.asarray(np.zeros((0, 2))) if k.endswith("_te") else v) for k, v in _valid(xb).items()}
    with pytest.raises(ValueError, match="at least one time step"):
        gae(**args)


@pytest.mark.parametrize("name", ["rew_te", "val_te", "next_val_te"])
@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_gae__non_finite_values_raise_naming_the_argument(xb, name, bad):
    args = _valid(xb)
    host = backend.to_numpy(args[name]).copy()
    host[1, 1] = bad
    args[name] = xb.asarray(host)
    with pytest.raises(ValueError, match=f"{name} contains NaN or inf"):
        gae(**args)


@pytest.mark.parametrize("name", ["terminated_te", "truncated_te"])
def test_gae__flags_other_than_0_1_raise(xb, name):
    args = _valid(xb)
    args[name] = xb.asarray(np.array([[0, 0], [2, 0], [0, 0]]))
    with pytest.raises(ValueError, match=f"{name} must contain only 0 and 1"):
        gae(**args)


@pytest.mark.parametrize("name, value", [("gamma", -0.1), ("gamma", 1.01), ("gamma", math.nan),
                                         ("gae_lambda", -1e-9), ("gae_lambda", 2.0), ("gae_lambda", "0.9")])
def test_gae__gamma_and_lambda_outside_unit_interval_raise(xb, name, value):
    args = _valid(xb)
    args[name] = value
    with pytest.raises(ValueError, match=name):
        gae(**args)


def test_gae__integer_rewards_raise(xb):
    args = _valid(xb)
    args["rew_te"] = xb.asarray(np.ones((3, 2), dtype=np.int64))
    with pytest.raises(ValueError, match="rew_te must be a real floating"):
        gae(**args)


def test_discounted_returns__bad_bootstrap_and_gamma_raise(xb):
    rew, term, trunc = xb.asarray(REW), _flags(xb, TERM), _flags(xb, TRUNC)
    with pytest.raises(ValueError, match="bootstrap_e must have shape"):
        discounted_returns(rew, term, trunc, 0.9, xb.asarray([1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match="bootstrap_e contains NaN"):
        discounted_returns(rew, term, trunc, 0.9, xb.asarray([1.0, math.nan]))
    with pytest.raises(ValueError, match="gamma"):
        discounted_returns(rew, term, trunc, 1.5)


def test_td_residuals__validates_inputs(xb):
    with pytest.raises(ValueError, match="next_val_te contains NaN"):
        td_residuals(xb.asarray(REW), xb.asarray(VAL), xb.asarray(np.full((3, 2), math.nan)), _flags(xb, TERM), 0.9)
    with pytest.raises(ValueError, match="gamma"):
        td_residuals(xb.asarray(REW), xb.asarray(VAL), xb.asarray(NEXT_VAL), _flags(xb, TERM), -0.5)


def test_gae__numpy_scalar_gamma_keeps_float32():
    import numpy as np

    from trpo_ref.advantages import gae as _gae

    f = np.ones((3, 2), dtype=np.float32)
    flags = np.zeros((3, 2), dtype=bool)
    adv, ret = _gae(f, f, f, flags, flags, np.float64(0.99), np.float64(0.95))
    assert adv.dtype == np.float32 and ret.dtype == np.float32


@pytest.mark.parametrize("n_steps, n_envs", [(1, 1), (257, 1), (64, 3), (33, 16)])
def test_gae__host_scan_equals_the_vectorised_loop_bit_for_bit(monkeypatch, n_steps, n_envs):
    # advantages._gae_scan_host evaluates the recursion on Python floats in the loop's order: the same IEEE
    # double operations, so equality is exact (no tolerance).  Flags at 5 % / 3 % cut many episodes.
    import trpo_ref.advantages as adv_mod

    rng = np.random.default_rng(n_steps * 100 + n_envs)
    rew, val, nxt = (rng.standard_normal((n_steps, n_envs)) for _ in range(3))
    term, trunc = rng.random((n_steps, n_envs)) < 0.05, rng.random((n_steps, n_envs)) < 0.03
    fast = adv_mod.gae(rew, val, nxt, term, trunc, 0.99, 0.95)
    monkeypatch.setattr(adv_mod, "_HOST_SCAN_MAX_ENVS", 0)  # the array loop over T
    slow = adv_mod.gae(rew, val, nxt, term, trunc, 0.99, 0.95)
    for f, s in zip(fast, slow):
        np.testing.assert_array_equal(f, s)
        assert f.shape == (n_steps, n_envs) and f.dtype == np.float64
