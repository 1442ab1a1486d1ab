"""trpo_ref.cg: conjugate gradient, its stopping rule and its breakdown handling.

Sections: worked examples (a 2×2 system by hand, the stopping-rule
boundaries, b = 0, breakdowns); hypothesis properties on random SPD systems
built as Q diag(eigs) Qᵀ, every backend; agreement with numpy.linalg.solve.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from trpo_ref import backend
from trpo_ref.cg import CGResult, conjugate_gradient

EPS64 = float(np.finfo(np.float64).eps)


def _operator(xb, A):
    """``v -> A v`` on the backend, and a counter of calls."""
    A_dev = xb.asarray(A)
    calls = []

    def matvec(v):
        calls.append(1)
        return A_dev @ v

    return matvec, calls


def _host(x):
    return backend.to_numpy(x)


# ------------------------------------------------------------ worked examples
# A = [[4, 1], [1, 3]], b = [1, 2], x0 = 0, by hand:
#   r0 = p0 = [1, 2], r0ᵀr0 = 5, A p0 = [6, 7], p0ᵀAp0 = 20, α0 = 5/20 = 1/4
#   x1 = [1/4, 1/2], r1 = [1, 2] − [6, 7]/4 = [−1/2, 1/4], r1ᵀr1 = 5/16
#   β0 = (5/16)/5 = 1/16, p1 = [−1/2, 1/4] + [1, 2]/16 = [−7/16, 6/16]
#   A p1 = [−22/16, 11/16], p1ᵀAp1 = (154 + 66)/256 = 55/64, α1 = (5/16)/(55/64) = 4/11
#   x2 = [1/4 − 7/44, 1/2 + 6/44] = [1/11, 7/11]   (check: A x2 = [11/11, 22/11] = b)
# Every number up to α1 is a dyadic rational, so exact in float64.
A_2X2 = np.array([[4.0, 1.0], [1.0, 3.0]])
B_2X2 = np.array([1.0, 2.0])


def test_conjugate_gradient__worked_2x2_example_by_hand(xb):
    matvec, calls = _operator(xb, A_2X2)
    res = conjugate_gradient(matvec, xb.asarray(B_2X2), max_iter=2, keep_iterates=True)
    assert isinstance(res, CGResult)
    assert res.n_iter == 2 and len(calls) == 2 and not res.breakdown
    np.testing.assert_array_equal(_host(res.iterates[0]), [0.25, 0.5])   # exact (dyadic)
    assert res.pAp == (20.0, 55.0 / 64.0)                                   # exact (dyadic)
    assert res.residual_norms[:2] == (math.sqrt(5.0), math.sqrt(5.0 / 16.0))
    # x2 involves α1 = 4/11 (rounded): a few ulps of |x| ≤ 1.
    np.testing.assert_allclose(_host(res.x), [1 / 11, 7 / 11], rtol=0, atol=4 * EPS64)
    # r2 = 0 up to the same rounding, relative to ‖b‖ = √5.
    assert res.residual_norms[2] <= 8 * EPS64 * math.sqrt(5.0)


def test_squared_residual_tol__is_strict_at_the_boundary(xb):
    # r1ᵀr1 = 5/16 = 0.3125 exactly (worked example): the test is rᵀr < tol.
    matvec, _ = _operator(xb, A_2X2)
    b = xb.asarray(B_2X2)
    at = conjugate_gradient(matvec, b, max_iter=5, squared_residual_tol=0.3125)
    above = conjugate_gradient(matvec, b, max_iter=5, squared_residual_tol=math.nextafter(0.3125, math.inf))
    assert at.n_iter == 2           # 0.3125 < 0.3125 is false: goes on (and solves the 2×2 in 2)
    assert above.n_iter == 1 and above.converged
    np.testing.assert_array_equal(_host(above.x), [0.25, 0.5])


def test_atol__is_inclusive_at_the_boundary(xb):
    # ‖r1‖ = sqrt(0.3125); the test is ‖r‖ <= max(rtol‖b‖, atol).
    matvec, _ = _operator(xb, A_2X2)
    b = xb.asarray(B_2X2)
    norm1 = math.sqrt(0.3125)
    at = conjugate_gradient(matvec, b, max_iter=5, atol=norm1)
    below = conjugate_gradient(matvec, b, max_iter=5, atol=math.nextafter(norm1, 0.0))
    assert at.n_iter == 1 and at.converged
    assert below.n_iter == 2


def test_rtol__scales_with_norm_b(xb):
    # ‖r1‖/‖b‖ = sqrt(5/16)/sqrt(5) = 1/4: rtol 0.26 stops after one iteration, 0.24 does not.
    matvec, _ = _operator(xb, A_2X2)
    b = xb.asarray(B_2X2)
    assert conjugate_gradient(matvec, b, max_iter=5, rtol=0.26).n_iter == 1
    assert conjugate_gradient(matvec, b, max_iter=5, rtol=0.24).n_iter == 2
    # the larger threshold counts: atol 0.6 > ‖r1‖ = 0.559 > 0.24·√5 = 0.537
    assert conjugate_gradient(matvec, b, max_iter=5, rtol=0.24, atol=0.6).n_iter == 1


def test_stopping_rule__is_not_applied_before_the_first_iteration(xb):
    # As in baselines / Spinning Up / SB3-contrib: one iteration even when r0 already passes.
    matvec, calls = _operator(xb, A_2X2)
    res = conjugate_gradient(matvec, xb.asarray(B_2X2), atol=1e300, squared_residual_tol=1e300)
    assert res.n_iter == 1 and res.converged and len(calls) == 1
    np.testing.assert_array_equal(_host(res.x), [0.25, 0.5])


def test_max_iter__unconverged_run_reports_not_converged(xb):
    matvec, calls = _operator(xb, A_2X2)
    res = conjugate_gradient(matvec, xb.asarray(B_2X2), max_iter=1)
    assert res.n_iter == 1 and not res.converged and not res.breakdown and len(calls) == 1
    assert len(res.residual_norms) == 2 and len(res.pAp) == 1 and res.iterates is None


def test_b_zero__returns_zeros_at_once(xb):
    matvec, calls = _operator(xb, A_2X2)
    for x0 in (None, xb.asarray([3.0, -1.0])):
        res = conjugate_gradient(matvec, xb.asarray([0.0, 0.0]), x0=x0)
        assert (res.n_iter, res.converged, res.breakdown, res.residual_norms, res.pAp) == (0, True, False, (0.0,), ())
        np.testing.assert_array_equal(_host(res.x), [0.0, 0.0])
    assert not calls


def test_x0__exact_solution_returns_at_once_and_x0_is_not_mutated(xb):
    matvec, calls = _operator(xb, np.diag([2.0, 4.0]))
    x0_host = np.array([0.5, 0.25])          # A x0 = [1, 1] exactly
    x0 = xb.asarray(x0_host)
    res = conjugate_gradient(matvec, xb.asarray([1.0, 1.0]), x0=x0)
    assert (res.n_iter, res.converged, res.breakdown, len(calls)) == (0, True, False, 1)
    np.testing.assert_array_equal(_host(res.x), x0_host)
    # a start that is not the solution: r0 = b − A x0, and x0 is left alone
    res = conjugate_gradient(matvec, xb.asarray([3.0, 1.0]), x0=x0, max_iter=2)
    assert res.residual_norms[0] == 2.0     # r0 = [3, 1] − [1, 1] = [2, 0]
    np.testing.assert_allclose(_host(res.x), [1.5, 0.25], rtol=0, atol=4 * EPS64)
    np.testing.assert_array_equal(_host(x0), x0_host)


def test_indefinite_matrix__breaks_down_in_first_iteration_with_finite_x(xb):
    # A = diag(1, −1), b = [1, 1]: p0ᵀAp0 = 1 − 1 = 0 -> breakdown before any update, x = x0 = 0.
    matvec, _ = _operator(xb, np.diag([1.0, -1.0]))
    res = conjugate_gradient(matvec, xb.asarray([1.0, 1.0]), keep_iterates=True)
    assert res.breakdown and not res.converged and res.n_iter == 0
    assert res.pAp == (0.0,) and res.iterates == ()
    np.testing.assert_array_equal(_host(res.x), [0.0, 0.0])


def test_indefinite_matrix__breaks_down_later_and_returns_last_good_iterate(xb):
    # A = diag(1, −2), b = [1, 0.1]: p0ᵀAp0 = 1 − 0.02 = 0.98 > 0, so one step is taken;
    # then p1ᵀAp1 < 0 (the −2 direction dominates r1) and CG stops with x = x1.
    matvec, _ = _operator(xb, np.diag([1.0, -2.0]))
    res = conjugate_gradient(matvec, xb.asarray([1.0, 0.1]), keep_iterates=True)
    assert res.breakdown and res.n_iter == 1 and len(res.pAp) == 2
    assert res.pAp[0] == pytest.approx(0.98, rel=4 * EPS64) and res.pAp[1] < 0
    x1 = (1.01 / 0.98) * np.array([1.0, 0.1])   # α0 p0, α0 = r0ᵀr0 / p0ᵀAp0
    np.testing.assert_allclose(_host(res.x), x1, rtol=8 * EPS64, atol=0)
    assert res.x is res.iterates[-1]


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_matvec__breaks_down_with_finite_x(xb, bad):
    A_dev = xb.asarray(A_2X2)
    n_calls = []

    def matvec(v):
        n_calls.append(1)
        out = A_dev @ v
        return out * bad if len(n_calls) == 2 else out   # the second product is poisoned

    res = conjugate_gradient(matvec, xb.asarray(B_2X2), max_iter=5)
    assert res.breakdown and not res.converged and res.n_iter == 1
    assert not math.isfinite(res.pAp[-1])
    np.testing.assert_array_equal(_host(res.x), [0.25, 0.5])   # x1 of the worked example


def test_non_finite_b__breaks_down_with_zero_x(xb):
    matvec, calls = _operator(xb, A_2X2)
    res = conjugate_gradient(matvec, xb.asarray([math.nan, 1.0]))
    assert res.breakdown and res.n_iter == 0 and not calls
    np.testing.assert_array_equal(_host(res.x), [0.0, 0.0])


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
def test_overflowing_step__breaks_down_with_finite_x(xb):
    # pᵀAp = 1e-300·‖p‖² is positive but α = rᵀr/pᵀAp = 1e300·... overflows x to inf.
    matvec, _ = _operator(xb, np.diag([1e-300, 1e-300]))
    res = conjugate_gradient(matvec, xb.asarray([1e10, 1e10]))
    assert res.breakdown and res.n_iter == 0
    np.testing.assert_array_equal(_host(res.x), [0.0, 0.0])


def test_callback__called_once_per_iteration_with_the_iterate(xb):
    matvec, _ = _operator(xb, np.diag([1.0, 2.0, 3.0, 4.0]))
    seen = []
    res = conjugate_gradient(matvec, xb.asarray([1.0, 1.0, 1.0, 1.0]), max_iter=3,
                             callback=seen.append, keep_iterates=True)
    assert res.n_iter == 3 and len(seen) == 3
    assert all(a is b for a, b in zip(seen, res.iterates))


@pytest.mark.parametrize("kwargs, name", [
    ({"max_iter": -1}, "max_iter"), ({"max_iter": 2.5}, "max_iter"), ({"rtol": -1e-3}, "rtol"),
    ({"atol": math.nan}, "atol"), ({"squared_residual_tol": -1.0}, "squared_residual_tol"),
    ({"x0": np.zeros(3)}, "x0"),
])
def test_bad_arguments__raise_naming_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        conjugate_gradient(lambda v: v, np.ones(2), **kwargs)


def test_matrix_b__raises():
    with pytest.raises(ValueError, match="b must be a 1-D"):
        conjugate_gradient(lambda v: v, np.ones((2, 2)))


# -------------------------------------------------------------- properties
@st.composite
def spd_systems(draw, max_log10_cond=6.0, max_n=16):
    """A = Q diag(eigs) Qᵀ with Q orthogonal, eigs in [s, s·κ] (both ends present), b random."""
    n = draw(st.integers(1, max_n))
    log10_cond = draw(st.floats(0.0, max_log10_cond))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    scale = 10.0 ** rng.uniform(-3, 3)
    eigs = 10.0 ** np.concatenate([[0.0, log10_cond], rng.uniform(0.0, log10_cond, n)])[:n]
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    A = (Q * (scale * eigs)) @ Q.T
    A = 0.5 * (A + A.T)                 # exactly symmetric
    b = rng.standard_normal(n)
    return A, b, float(eigs.max() / eigs.min())


@given(system=spd_systems())
def test_conjugate_gradient__solves_random_spd_systems_and_agrees_with_numpy_solve(xb, system):
    A, b, kappa = system
    n = b.size
    matvec, _ = _operator(xb, A)
    rtol = 1e-10
    # In exact arithmetic CG ends in n steps; in floating point, lost
    # orthogonality delays it by an amount growing with κ (Greenbaum & Strakoš
    # 1992). Measured over 6000 draws (n ≤ 16, κ ≤ 1e6) CG needed ≤ 3n steps
    # to reach rtol; 10n leaves room and still catches a non-converging solver.
    res = conjugate_gradient(matvec, xb.asarray(b), max_iter=10 * n, rtol=rtol)
    assert res.converged and not res.breakdown and res.n_iter <= 10 * n
    assert res.residual_norms[-1] <= rtol * np.linalg.norm(b)
    x = _host(res.x)
    # The true residual b − Ax drifts from the recursive one by rounding:
    # each matvec errs by ≲ n·eps·‖A‖‖x‖ ≤ n·eps·κ‖b‖, accumulated over
    # n_iter steps (Greenbaum 1997, attainable accuracy). Measured worst:
    # (rtol + n_iter·eps·κ)·‖b‖; accepted: (rtol + n·n_iter·eps·κ)·‖b‖.
    true_rel = np.linalg.norm(A @ x - b) / np.linalg.norm(b)
    assert true_rel <= rtol + n * res.n_iter * EPS64 * kappa
    # Forward error against LAPACK: ‖x − x*‖/‖x*‖ ≤ κ·‖Ax − b‖/‖b‖ for each
    # of the two solutions (plus the n·eps·κ rounding of computing the residual).
    x_ref = np.linalg.solve(A, b)
    ref_rel = np.linalg.norm(A @ x_ref - b) / np.linalg.norm(b)
    bound = kappa * (true_rel + ref_rel + 2 * n * EPS64 * kappa)
    assert np.linalg.norm(x - x_ref) <= bound * np.linalg.norm(x_ref)


@given(system=spd_systems(max_log10_cond=math.log10(4.0)))
def test_conjugate_gradient__exact_to_rounding_after_n_steps_when_well_conditioned(xb, system):
    A, b, kappa = system
    n = b.size
    matvec, calls = _operator(xb, A)
    res = conjugate_gradient(matvec, xb.asarray(b), max_iter=n)
    assert not res.breakdown and res.n_iter <= n and len(calls) == res.n_iter
    # Backward error of the n-step solution: n·eps·κ per the matvec rounding
    # model; measured worst over 3000 draws (κ ≤ 4, n ≤ 16) 1.5·n·eps·κ.
    x = _host(res.x)
    assert np.linalg.norm(A @ x - b) <= 10 * n * EPS64 * kappa * np.linalg.norm(b)
    # and the same x as LAPACK to rounding: forward error ≤ κ × backward error.
    np.testing.assert_allclose(x, np.linalg.solve(A, b), rtol=0,
                               atol=20 * n * EPS64 * kappa**2 * np.linalg.norm(np.linalg.solve(A, b)))


@given(system=spd_systems(), log10_tol=st.floats(-20.0, 2.0))
def test_squared_residual_tol__stops_at_first_iteration_below(xb, system, log10_tol):
    # The stopping rule changes no arithmetic, so the stopped run is a prefix
    # of the free run: it must end at the first k >= 1 with r_kᵀr_k < tol.
    A, b, _ = system
    n = b.size
    tol = 10.0**log10_tol
    matvec, _ = _operator(xb, A)
    free = conjugate_gradient(matvec, xb.asarray(b), max_iter=n)
    stopped = conjugate_gradient(matvec, xb.asarray(b), max_iter=n, squared_residual_tol=tol)
    below = [k for k in range(1, free.n_iter + 1) if free.residual_norms[k] ** 2 < tol]
    assert stopped.n_iter == (below[0] if below else free.n_iter)
    assert stopped.converged == (bool(below) or free.converged)
    assert stopped.residual_norms == free.residual_norms[: stopped.n_iter + 1]


@given(data=st.data())
def test_squared_residual_tol__converges_in_as_many_steps_as_distinct_eigenvalues(xb, data):
    # A = diag with k distinct eigenvalues (from 1..10, repeated): the Krylov
    # space has dimension k, so exact CG solves in k steps and not fewer
    # (rᵀr after k−1 steps is a nonzero polynomial residual). With
    # |b_i| ∈ [0.5, 1] and eigenvalues ≥ 1 apart, r_{k−1}ᵀr_{k−1} stays far
    # above 1e-10 while r_kᵀr_k is rounding (~1e-30): the rule stops at k.
    values = data.draw(st.lists(st.integers(1, 10), min_size=1, max_size=5, unique=True))
    reps = data.draw(st.lists(st.integers(1, 4), min_size=len(values), max_size=len(values)))
    seed = data.draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    eigs = np.repeat(np.array(values, dtype=np.float64), reps)
    b = rng.choice([-1.0, 1.0], eigs.size) * rng.uniform(0.5, 1.0, eigs.size)
    matvec, _ = _operator(xb, np.diag(eigs))
    res = conjugate_gradient(matvec, xb.asarray(b), max_iter=20, squared_residual_tol=1e-10)
    k = len(values)
    assert res.converged and res.n_iter == k
    assert res.residual_norms[k - 1] ** 2 >= 1e-10 > res.residual_norms[k] ** 2
    # κ ≤ 10 and k ≤ 5 steps: x to ~1e-5 (the residual test bounds ‖r‖ by 1e-5,
    # and ‖x − x*‖ ≤ ‖r‖/λ_min with λ_min ≥ 1).
    np.testing.assert_allclose(_host(res.x), b / eigs, rtol=0, atol=1e-5)


@given(system=spd_systems(max_n=8))
def test_conjugate_gradient__does_not_mutate_b_or_x0_and_reports_consistent_lengths(xb, system):
    A, b, _ = system
    x0_host = np.random.default_rng(0).standard_normal(b.size)
    b_dev, x0_dev = xb.asarray(b), xb.asarray(x0_host)
    matvec, calls = _operator(xb, A)
    res = conjugate_gradient(matvec, b_dev, x0=x0_dev, max_iter=b.size, keep_iterates=True)
    np.testing.assert_array_equal(_host(b_dev), b)
    np.testing.assert_array_equal(_host(x0_dev), x0_host)
    assert len(res.residual_norms) == res.n_iter + 1 == len(res.iterates) + 1
    assert len(res.pAp) == res.n_iter + int(res.breakdown)
    assert len(calls) == res.n_iter + 1 + int(res.breakdown)     # + the r0 = b − A x0 product
    # r0 = b − A x0: the host recomputation differs by the rounding of an
    # n-term sum, ≤ n·eps·max|A|·‖x0‖₁ ≈ 1e-13·max|A| here (n ≤ 8, |x0_i| ≲ 3).
    r0 = b - A @ x0_host
    assert res.residual_norms[0] == pytest.approx(np.linalg.norm(r0), rel=1e-12, abs=1e-12 * np.abs(A).max())


def test_alpha_eps__enters_the_step_denominator_only_when_asked():
    # 1-D system 2 x = 4: one CG step gives α = rᵀr/(pᵀAp + ε) = 16/(32 + ε), x = 4α.
    cg = conjugate_gradient
    A = lambda v: 2.0 * v  # noqa: E731
    b = np.array([4.0])
    assert cg(A, b, max_iter=1).x[0] == 2.0
    eps = 1e-3
    np.testing.assert_allclose(cg(A, b, max_iter=1, alpha_eps=eps).x[0], 4 * 16 / (32 + eps), rtol=1e-15)
    with pytest.raises(ValueError, match="alpha_eps"):
        cg(A, b, alpha_eps=-1.0)


def test_check_initial__returns_x0_when_r0_already_meets_the_rule(xb):
    # A = I, b = [1, 0], x0 = [1, 1e-6]: r0 = [0, −1e-6], r0ᵀr0 = 1e-12 < 1e-10.
    A = lambda v: v  # noqa: E731
    b, x0 = xb.asarray([1.0, 0.0]), xb.asarray([1.0, 1e-6])
    res = conjugate_gradient(A, b, squared_residual_tol=1e-10, x0=x0, check_initial=True)
    assert res.n_iter == 0 and res.converged
    np.testing.assert_array_equal(backend.to_numpy(res.x), [1.0, 1e-6])
    # without the check CG iterates once and lands on the exact solution
    res = conjugate_gradient(A, b, squared_residual_tol=1e-10, x0=x0)
    assert res.n_iter == 1
    np.testing.assert_allclose(backend.to_numpy(res.x), [1.0, 0.0], atol=1e-22)
