"""trpo_ref.linesearch: backtracking, the acceptance rules and their boundaries.

Sections: worked example (a 1-D quadratic by hand); 0 / some / all
backtracks; one case on each side of every rule boundary; argument checks;
hypothesis properties (the paper's rule never accepts a step outside the
trust region; the accepted try is the first admissible one), every backend.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from trpo_ref import backend
from trpo_ref.linesearch import LineSearchResult, LineSearchTry, backtracking_line_search

EPS64 = float(np.finfo(np.float64).eps)
PAPER = {"max_kl": 0.5, "require_improvement": "strict"}


def _quadratic_1d(xb, seen=None):
    """L(x) = −(x − 1)², KL(x) = x²/8, both from x0 = 0: ΔL = L(x) − L(0) = 1 − (x − 1)²."""

    def evaluate(x_try):
        x = backend.to_float(x_try[0])
        if seen is not None:
            seen.append(x)
        return 1.0 - (x - 1.0) ** 2, x * x / 8.0

    return evaluate


# ------------------------------------------------------------ worked example
# x0 = 0, full step s = 4, α = 0.5, expected ΔL of the full step = L'(0)·4 = 2·4 = 8.
#   j = 0: x = 4, ΔL = 1 − 9 = −8, KL = 16/8 = 2      -> KL > 0.5 and ΔL < 0: rejected
#   j = 1: x = 2, ΔL = 1 − 1 =  0, KL = 4/8 = 0.5     -> KL = δ passes "<=", ΔL = 0 fails "> 0"
#   j = 2: x = 1, ΔL = 1 − 0 =  1, KL = 1/8 = 0.125   -> accepted; expected 8/4 = 2, ratio 1/2
def test_backtracking__worked_example_by_hand(xb):
    seen = []
    x0 = xb.asarray([0.0])
    res = backtracking_line_search(_quadratic_1d(xb, seen), x0, xb.asarray([4.0]), 8.0, **PAPER)
    assert isinstance(res, LineSearchResult) and res.success and res.accepted_index == 2
    assert seen == [4.0, 2.0, 1.0]                      # evaluate stops after the accepted try
    np.testing.assert_array_equal(backend.to_numpy(res.x), [1.0])
    assert res.tries == (
        LineSearchTry(0, 1.0, 2.0, -8.0, 8.0, -1.0, True, False, False, False),
        LineSearchTry(1, 0.5, 0.5, 0.0, 4.0, 0.0, True, True, False, False),
        LineSearchTry(2, 0.25, 0.125, 1.0, 2.0, 0.5, True, True, True, True),
    )


def test_backtracking__nonstrict_improvement_accepts_the_zero_change_try(xb):
    # Same problem, baselines-style "ΔL >= 0": j = 1 (ΔL = 0, KL = δ) is now admissible.
    res = backtracking_line_search(_quadratic_1d(xb), xb.asarray([0.0]), xb.asarray([4.0]), 8.0,
                                   max_kl=0.5, require_improvement="nonstrict")
    assert res.accepted_index == 1
    np.testing.assert_array_equal(backend.to_numpy(res.x), [2.0])
    # ... unless the KL test is strict (SB3-contrib "KL < δ"): KL = 0.5 fails, j = 2 wins.
    res = backtracking_line_search(_quadratic_1d(xb), xb.asarray([0.0]), xb.asarray([4.0]), 8.0,
                                   max_kl=0.5, kl_strict=True, require_improvement="nonstrict")
    assert res.accepted_index == 2


def test_backtracking__no_backtrack_when_the_full_step_is_admissible(xb):
    # full step 1 lands on the maximum: ΔL = 1, KL = 1/8.
    x0, step = xb.asarray([0.0]), xb.asarray([1.0])
    res = backtracking_line_search(_quadratic_1d(xb), x0, step, 2.0, **PAPER)
    assert res.accepted_index == 0 and len(res.tries) == 1 and res.tries[0].fraction == 1.0
    np.testing.assert_array_equal(backend.to_numpy(res.x), [1.0])


def test_backtracking__all_backtracks_fail_and_return_x0_bit_for_bit(xb):
    # A step away from the maximum (s = −3): ΔL = 1 − (1 + 3f)² < 0 for every f > 0.
    x0_host = np.array([0.0, 0.1 + 0.2])     # a value with a non-trivial bit pattern
    x0 = xb.asarray(x0_host)
    calls = []

    def evaluate(x_try):
        calls.append(1)
        x = backend.to_float(x_try[0])
        return 1.0 - (x - 1.0) ** 2, 0.0

    res = backtracking_line_search(evaluate, x0, xb.asarray([-3.0, 5.0]), 6.0,
                                   backtrack_coeff=0.8, backtrack_iters=7, **PAPER)
    assert not res.success and res.accepted_index is None
    assert res.x is x0
    np.testing.assert_array_equal(backend.to_numpy(res.x), x0_host)
    assert len(calls) == len(res.tries) == 7 and not any(t.accepted for t in res.tries)
    # fractions are α^j computed in Python floats; expected improvement scales with them
    assert [t.fraction for t in res.tries] == [0.8**j for j in range(7)]
    assert [t.expected_improvement for t in res.tries] == [0.8**j * 6.0 for j in range(7)]


# ------------------------------------------------------------ rule boundaries
def _one_try(improvement, kl, expected=1.0, **kwargs):
    """Run a one-try search whose only evaluation returns (improvement, kl)."""
    res = backtracking_line_search(lambda x: (improvement, kl), np.zeros(1), np.ones(1), expected,
                                   backtrack_iters=1, **kwargs)
    return res.tries[0]


DELTA = 0.01
BOUNDARY_CASES = [
    # (improvement, kl, expected, kwargs, accepted)          -- one case on each side of each boundary
    pytest.param(1.0, DELTA, 1.0, {"max_kl": DELTA}, True, id="kl<=max_kl: equal passes"),
    pytest.param(1.0, math.nextafter(DELTA, 1.0), 1.0, {"max_kl": DELTA}, False, id="kl<=max_kl: next float fails"),
    pytest.param(1.0, DELTA, 1.0, {"max_kl": DELTA, "kl_strict": True}, False, id="kl<max_kl: equal fails"),
    pytest.param(1.0, math.nextafter(DELTA, 0.0), 1.0, {"max_kl": DELTA, "kl_strict": True}, True,
                 id="kl<max_kl: float below passes"),
    pytest.param(1.0, 1.5 * DELTA, 1.0, {"max_kl": DELTA, "kl_bound_factor": 1.5}, True, id="kl<=1.5δ: equal passes"),
    pytest.param(1.0, math.nextafter(1.5 * DELTA, 1.0), 1.0, {"max_kl": DELTA, "kl_bound_factor": 1.5}, False,
                 id="kl<=1.5δ: next float fails"),
    pytest.param(1.0, 1.2 * DELTA, 1.0, {"max_kl": DELTA}, False, id="1.2δ fails under δ"),
    pytest.param(1.0, 1.2 * DELTA, 1.0, {"max_kl": DELTA, "kl_bound_factor": 1.5}, True, id="1.2δ passes under 1.5δ"),
    pytest.param(0.0, 0.0, 1.0, {"require_improvement": "strict"}, False, id="ΔL>0: zero fails"),
    pytest.param(5e-324, 0.0, 1.0, {"require_improvement": "strict"}, True, id="ΔL>0: smallest positive passes"),
    pytest.param(0.0, 0.0, 1.0, {"require_improvement": "nonstrict"}, True, id="ΔL>=0: zero passes"),
    pytest.param(-5e-324, 0.0, 1.0, {"require_improvement": "nonstrict"}, False, id="ΔL>=0: -tiny fails"),
    pytest.param(-1.0, 0.0, 1.0, {"require_improvement": "none"}, True, id="no improvement test: loss passes"),
    pytest.param(0.1, None, 1.0, {"improve_ratio": 0.1}, False, id="ratio>0.1: 0.1 fails"),
    pytest.param(math.nextafter(0.1, 1.0), None, 1.0, {"improve_ratio": 0.1}, True, id="ratio>0.1: next float passes"),
    pytest.param(-1.0, None, -1.0, {"improve_ratio": 0.1, "require_improvement": "none"}, False,
                 id="ratio: expected<0 fails though ratio=1"),
    pytest.param(1.0, None, 0.0, {"improve_ratio": 0.1}, False, id="ratio: expected=0 fails"),
    pytest.param(1.0, None, 0.0, {}, True, id="no ratio test: expected=0 irrelevant"),
    pytest.param(math.inf, 0.0, 1.0, {}, False, id="finite: inf improvement fails"),
    pytest.param(math.inf, 0.0, 1.0, {"check_finite": False}, True, id="unchecked: inf improvement passes"),
    pytest.param(1.0, math.nan, 1.0, {}, False, id="finite: NaN kl fails even without max_kl"),
    pytest.param(1.0, math.nan, 1.0, {"check_finite": False}, True, id="unchecked: NaN kl ignored without max_kl"),
    pytest.param(1.0, math.nan, 1.0, {"check_finite": False, "max_kl": DELTA}, False, id="NaN kl fails the KL test"),
]


@pytest.mark.parametrize("improvement, kl, expected, kwargs, accepted", BOUNDARY_CASES)
def test_acceptance_rule__each_side_of_each_boundary(improvement, kl, expected, kwargs, accepted):
    assert _one_try(improvement, kl, expected, **kwargs).accepted is accepted


def test_try_record__flags_and_ratio():
    t = _one_try(0.0, 0.02, 0.0, max_kl=DELTA)
    assert (t.finite, t.kl_ok, t.improvement_ok, t.accepted) == (True, False, False, False)
    assert math.isnan(t.ratio)                                 # expected 0 -> ratio NaN
    t = _one_try(0.3, 0.005, 2.0, max_kl=DELTA, improve_ratio=0.1)
    assert (t.finite, t.kl_ok, t.improvement_ok, t.accepted) == (True, True, True, True)
    assert t.ratio == 0.15 and t.kl == 0.005 and t.expected_improvement == 2.0


def test_evaluate__may_return_0d_arrays(xb):
    res = backtracking_line_search(lambda x: (xb.asarray(1.0), xb.asarray(0.001)), xb.asarray([0.0]),
                                   xb.asarray([1.0]), xb.asarray(2.0), max_kl=DELTA)
    assert res.success and res.tries[0].improvement == 1.0 and res.tries[0].kl == 0.001
    assert res.tries[0].ratio == 0.5


@pytest.mark.parametrize("kwargs, name", [
    ({"backtrack_coeff": 0.0}, "backtrack_coeff"), ({"backtrack_coeff": 1.0}, "backtrack_coeff"),
    ({"backtrack_coeff": math.nan}, "backtrack_coeff"), ({"backtrack_iters": 0}, "backtrack_iters"),
    ({"backtrack_iters": 2.0}, "backtrack_iters"), ({"require_improvement": "yes"}, "require_improvement"),
    ({"max_kl": -0.01}, "max_kl"), ({"kl_bound_factor": 0.0}, "kl_bound_factor"),
    ({"improve_ratio": math.nan}, "improve_ratio"),
])
def test_bad_arguments__raise_naming_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        backtracking_line_search(lambda x: (1.0, 0.0), np.zeros(1), np.ones(1), 1.0, **kwargs)


def test_kl_none_with_max_kl__raises():
    with pytest.raises(ValueError, match="max_kl"):
        backtracking_line_search(lambda x: (1.0, None), np.zeros(1), np.ones(1), 1.0, max_kl=DELTA)


# -------------------------------------------------------------- properties
@given(seed=st.integers(0, 2**32 - 1), p=st.integers(1, 6), step_scale=st.floats(1e-3, 1e3),
       coeff=st.sampled_from([0.5, 0.8]), iters=st.integers(1, 15))
def test_paper_rule__never_accepts_a_step_outside_the_trust_region(xb, seed, p, step_scale, coeff, iters):
    # L(θ) = gᵀd − ½ dᵀHd, KL = ½ dᵀFd with d = θ − θ0, H, F random SPD; a
    # random full step. Whatever is accepted satisfies KL <= δ and ΔL > 0,
    # and every earlier try violated one of them.
    rng = np.random.default_rng(seed)
    g = rng.standard_normal(p)
    M, N = rng.standard_normal((p, p)), rng.standard_normal((p, p))
    H_dev, F_dev, g_dev = xb.asarray(M @ M.T), xb.asarray(N @ N.T + 0.1 * np.eye(p)), xb.asarray(g)
    x0 = xb.asarray(rng.standard_normal(p))
    step = step_scale * rng.standard_normal(p)

    def evaluate(x_try):
        d = x_try - x0
        return (backend.to_float(g_dev @ d - 0.5 * d @ (H_dev @ d)), backend.to_float(0.5 * d @ (F_dev @ d)))

    res = backtracking_line_search(evaluate, x0, xb.asarray(step), float(g @ step), backtrack_coeff=coeff,
                                   backtrack_iters=iters, max_kl=DELTA, require_improvement="strict")
    assert all(not (t.kl <= DELTA and t.improvement > 0) for t in res.tries[:-1])
    if res.success:
        last = res.tries[-1]
        assert last.kl <= DELTA and last.improvement > 0 and res.accepted_index == len(res.tries) - 1
        np.testing.assert_array_equal(backend.to_numpy(res.x), backend.to_numpy(x0 + coeff**last.index * xb.asarray(step)))
    else:
        assert res.x is x0 and len(res.tries) == iters


SPECIAL = st.sampled_from([0.0, -0.0, 1.0, -1.0, DELTA, 1.5 * DELTA, 0.1, math.inf, -math.inf, math.nan])
VALUES = st.one_of(SPECIAL, st.floats(-2.0, 2.0))


@given(values=st.lists(st.tuples(VALUES, VALUES), min_size=1, max_size=8),
       expected=st.one_of(st.sampled_from([0.0, -1.0, 1.0, 10.0]), st.floats(-2.0, 2.0)),
       max_kl=st.sampled_from([None, DELTA]), kl_bound_factor=st.sampled_from([1.0, 1.5]),
       kl_strict=st.booleans(), require_improvement=st.sampled_from(["strict", "nonstrict", "none"]),
       improve_ratio=st.sampled_from([None, 0.1]), check_finite=st.booleans())
def test_accepted_try__is_the_first_admissible_one(xb, values, expected, max_kl, kl_bound_factor, kl_strict,
                                                   require_improvement, improve_ratio, check_finite):
    # Independent statement of the rule, try by try, on scripted (ΔL, KL) values.
    def admissible(j, improvement, kl):
        exp_j = 0.5**j * expected
        finite = not check_finite or (math.isfinite(improvement) and math.isfinite(kl))
        bound = kl_bound_factor * max_kl if max_kl is not None else None
        kl_good = bound is None or (kl < bound if kl_strict else kl <= bound)
        improve_good = {"strict": improvement > 0, "nonstrict": improvement >= 0, "none": True}[require_improvement]
        ratio_good = improve_ratio is None or (exp_j > 0 and improvement / exp_j > improve_ratio)
        return finite and kl_good and improve_good and ratio_good

    script = iter(values)
    res = backtracking_line_search(lambda x: next(script), xb.asarray([0.0]), xb.asarray([1.0]), expected,
                                   backtrack_iters=len(values), max_kl=max_kl, kl_bound_factor=kl_bound_factor,
                                   kl_strict=kl_strict, require_improvement=require_improvement,
                                   improve_ratio=improve_ratio, check_finite=check_finite)
    first = next((j for j, (imp, kl) in enumerate(values) if admissible(j, imp, kl)), None)
    assert res.accepted_index == first and res.success is (first is not None)
    assert len(res.tries) == (len(values) if first is None else first + 1)
    assert [t.accepted for t in res.tries] == [j == first for j in range(len(res.tries))]
