"""trpo_ref.distributions: closed forms, their derivatives, Fisher metrics, sampling.

Sections: worked examples with hand-computed numbers; hypothesis properties
(central differences, every backend); Monte-Carlo agreement of the closed forms.
"""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given

from oracles import central_diff, check_fd
from strategies import gaussian_params, logit_pairs, multicategorical_params
from trpo_ref import backend
from trpo_ref.distributions import Bernoulli, Categorical, DiagGaussian, MultiCategorical

LOG_2PI = math.log(2 * math.pi)


def _np(x):
    return backend.to_numpy(x)


# ------------------------------------------------------------ worked examples
def test_gaussian__worked_example_by_hand(xb):
    # One dimension, μ=1, log σ=log 2, a=3: z=(3−1)/2=1
    # log p = −½·1 − log 2 − ½ log 2π = −0.5 − 0.6931471805599453 − 0.9189385332046727
    mean, log_std, act = xb.asarray([[1.0]]), xb.asarray([math.log(2.0)]), xb.asarray([[3.0]])
    np.testing.assert_allclose(_np(DiagGaussian.log_prob(mean, log_std, act)), [-2.112085713764618], rtol=1e-15)
    # ∂/∂μ = (a−μ)/σ² = 0.5; ∂/∂log σ = z² − 1 = 0
    d_mean, d_log_std = DiagGaussian.log_prob_grad(mean, log_std, act)
    np.testing.assert_allclose(_np(d_mean), [[0.5]], rtol=1e-15)
    np.testing.assert_allclose(_np(d_log_std), [[0.0]], atol=1e-15)
    # H = log 2 + ½(1 + log 2π) = 0.6931471805599453 + 1.4189385332046727
    np.testing.assert_allclose(float(_np(DiagGaussian.entropy(log_std))), 2.112085713764618, rtol=1e-15)
    # KL(N(0,1) ‖ N(1,4)) = log 2 + (1 + 1)/8 − ½ = 0.6931471805599453 − 0.25
    kl = DiagGaussian.kl(xb.asarray([[0.0]]), xb.asarray([0.0]), mean, log_std)
    np.testing.assert_allclose(_np(kl), [0.4431471805599453], rtol=1e-15)


def test_categorical__worked_example_by_hand(xb):
    # logits [0, log 3] -> p = [1/4, 3/4]; log p(1) = log 0.75
    logits = xb.asarray([[0.0, math.log(3.0)]])
    np.testing.assert_allclose(_np(Categorical.log_prob(logits, xb.asarray([1]))), [math.log(0.75)], rtol=1e-15)
    # ∂ log p(1)/∂z = e_1 − p = [−0.25, 0.25]
    np.testing.assert_allclose(_np(Categorical.log_prob_grad(logits, xb.asarray([1]))), [[-0.25, 0.25]], rtol=1e-15)
    # H = −(¼ log ¼ + ¾ log ¾) = 0.5623351446188083
    np.testing.assert_allclose(_np(Categorical.entropy(logits)), [0.5623351446188083], rtol=1e-15)
    # KL([¼,¾] ‖ [½,½]) = ¼ log ½ + ¾ log 1.5 = 0.13081203594113694
    kl = Categorical.kl(logits, xb.asarray([[0.0, 0.0]]))
    np.testing.assert_allclose(_np(kl), [0.13081203594113694], rtol=1e-14)
    # M = diag(p) − p pᵀ = [[3/16, −3/16], [−3/16, 3/16]]; M [1, 0] = [3/16, −3/16]
    mu = Categorical.fisher_product(logits, xb.asarray([[1.0, 0.0]]))
    np.testing.assert_allclose(_np(mu), [[0.1875, -0.1875]], rtol=1e-15)


# -------------------------------------------------------------- properties
@given(case=gaussian_params())
def test_gaussian_derivatives__match_central_differences(xb, case):
    m0, s0, m1, s1, rng = case
    act = m0 + np.exp(s0) * rng.standard_normal(m0.shape)
    w = rng.standard_normal(m0.shape[0])
    vm, vs = rng.standard_normal(m0.shape), rng.standard_normal(s0.shape)
    X = xb.asarray
    # log_prob: Σ_n w_n ∂logp_n along (vm, vs)
    dm, ds = DiagGaussian.log_prob_grad(X(m0), X(s0), X(act))
    analytic = np.sum(w[:, None] * (_np(dm) * vm + _np(ds) * vs))
    fd = w @ central_diff(lambda t: DiagGaussian.log_prob(m0 + t * vm, s0 + t * vs, act), 0.0, 1.0)
    check_fd("DiagGaussian.log_prob_grad", analytic, fd)
    # kl in q's parameters and in p's parameters
    dm, ds = DiagGaussian.kl_grad_q(X(m0), X(s0), X(m1), X(s1))
    analytic = np.sum(_np(dm) * vm + _np(ds) * vs, axis=1)
    fd = central_diff(lambda t: DiagGaussian.kl(m0, s0, m1 + t * vm, s1 + t * vs), 0.0, 1.0)
    check_fd("DiagGaussian.kl_grad_q", analytic, fd)
    dm, ds = DiagGaussian.kl_grad_p(X(m0), X(s0), X(m1), X(s1))
    analytic = np.sum(_np(dm) * vm + _np(ds) * vs, axis=1)
    fd = central_diff(lambda t: DiagGaussian.kl(m0 + t * vm, s0 + t * vs, m1, s1), 0.0, 1.0)
    check_fd("DiagGaussian.kl_grad_p", analytic, fd)


@given(case=gaussian_params())
def test_gaussian_fisher_metric__is_hessian_of_kl_at_p_equals_q(xb, case):
    # M = ∂²KL(p‖q)/∂φ_q² at q = p: compare M u with the FD of the analytic KL gradient.
    m0, s0, _, _, rng = case
    um, us = rng.standard_normal(m0.shape), rng.standard_normal(m0.shape)
    # a per-sample tangent of log σ: take the KL per sample with log σ broadcast per row
    fm, fs = DiagGaussian.fisher_product(xb.asarray(s0), xb.asarray(um), xb.asarray(us))
    for i in range(m0.shape[0]):
        def grad_q(t, i=i):
            dm, ds = DiagGaussian.kl_grad_q(m0[i:i + 1], s0, m0[i:i + 1] + t * um[i:i + 1], s0 + t * us[i])
            return np.concatenate([dm[0], ds[0]])
        fd = central_diff(grad_q, 0.0, 1.0)
        analytic = np.concatenate([_np(fm)[i], _np(fs)[i]])
        check_fd("DiagGaussian.fisher_product (vs FD of kl_grad_q)", analytic, fd)


@given(case=logit_pairs())
def test_categorical_derivatives__match_central_differences(xb, case):
    z, y, rng = case
    act = rng.integers(0, z.shape[1], z.shape[0])
    v = rng.standard_normal(z.shape)
    X = xb.asarray
    analytic = np.sum(_np(Categorical.log_prob_grad(X(z), X(act))) * v, axis=1)
    fd = central_diff(lambda t: Categorical.log_prob(z + t * v, act), 0.0, 1.0)
    check_fd("Categorical.log_prob_grad", analytic, fd)
    analytic = np.sum(_np(Categorical.entropy_grad(X(z))) * v, axis=1)
    fd = central_diff(lambda t: Categorical.entropy(z + t * v), 0.0, 1.0)
    check_fd("Categorical.entropy_grad", analytic, fd)
    analytic = np.sum(_np(Categorical.kl_grad_q(X(z), X(y))) * v, axis=1)
    fd = central_diff(lambda t: Categorical.kl(z, y + t * v), 0.0, 1.0)
    check_fd("Categorical.kl_grad_q", analytic, fd)
    analytic = np.sum(_np(Categorical.kl_grad_p(X(z), X(y))) * v, axis=1)
    fd = central_diff(lambda t: Categorical.kl(z + t * v, y), 0.0, 1.0)
    check_fd("Categorical.kl_grad_p", analytic, fd)
    # Fisher metric = Hessian of KL(p‖q) in q's logits at q = p
    analytic = _np(Categorical.fisher_product(X(z), X(v)))
    fd = central_diff(lambda t: Categorical.kl_grad_q(z, z + t * v), 0.0, 1.0)
    check_fd("Categorical.fisher_product (vs FD of kl_grad_q)", analytic, fd)


@given(case=logit_pairs())
def test_kl__nonnegative_and_zero_iff_equal(xb, case):
    z, y, _ = case
    X = xb.asarray
    assert np.all(_np(Categorical.kl(X(z), X(y))) >= 0)
    # KL(p‖p) is a sum of p·0 terms: exactly 0 in floating point.
    np.testing.assert_array_equal(_np(Categorical.kl(X(z), X(z))), 0.0)
    m = z[:, :1]
    s = y[0, :1] * 0.2
    assert np.all(_np(DiagGaussian.kl(X(m), X(s), X(m + 0.1), X(s))) > 0)
    np.testing.assert_allclose(_np(DiagGaussian.kl(X(m), X(s), X(m), X(s))), 0.0, atol=1e-15)


def test_categorical__stays_finite_for_logits_of_magnitude_100(xb):
    z = xb.asarray([[100.0, -100.0, 0.0], [-100.0, 100.0, 99.0]])
    y = xb.asarray([[-100.0, 100.0, 0.0], [0.0, 0.0, 0.0]])
    logp = _np(Categorical.log_prob(z, xb.asarray([1, 0])))
    assert np.all(np.isfinite(logp))
    np.testing.assert_allclose(logp, [-200.0, -200.0 - math.log1p(math.exp(-1.0))], rtol=1e-14)
    kl = _np(Categorical.kl(z, y))
    assert np.all(np.isfinite(kl))
    np.testing.assert_allclose(kl[0], 200.0, rtol=1e-12)  # p ≈ e_0: KL ≈ log p_0 − log q_0 = 0 − (−200)
    assert np.all(np.isfinite(_np(Categorical.entropy(z))))
    assert np.all(np.isfinite(_np(Categorical.kl_grad_p(z, y))))


# ---------------------------------------------------- Monte-Carlo agreement
def test_gaussian_kl_and_entropy__match_monte_carlo():
    rng = np.random.default_rng(0)
    m0, s0 = np.array([[0.3, -1.0]]), np.array([-0.2, 0.4])
    m1, s1 = np.array([[0.0, -0.5]]), np.array([0.1, 0.2])
    n = 400_000
    a = DiagGaussian.sample(np.repeat(m0, n, 0), s0, rng)
    lp = DiagGaussian.log_prob(np.repeat(m0, n, 0), s0, a)
    lq = DiagGaussian.log_prob(np.repeat(m1, n, 0), s1, a)
    est, se = np.mean(lp - lq), np.std(lp - lq) / np.sqrt(n)
    # 5 standard errors: a false failure has probability < 1e-6 (and the seed is fixed)
    assert abs(est - DiagGaussian.kl(m0, s0, m1, s1)[0]) < 5 * se
    ent, se = -np.mean(lp), np.std(lp) / np.sqrt(n)
    assert abs(ent - DiagGaussian.entropy(s0)) < 5 * se


def test_categorical_kl_and_sampling__match_monte_carlo():
    rng = np.random.default_rng(1)
    z, y = np.array([[0.5, -1.0, 2.0]]), np.array([[0.0, 0.3, 1.0]])
    n = 200_000
    a = Categorical.sample(np.repeat(z, n, 0), rng)
    p = np.exp(Categorical.log_softmax(z))[0]
    freq = np.bincount(a, minlength=3) / n
    # multinomial frequencies: 5 standard errors per category
    assert np.all(np.abs(freq - p) < 5 * np.sqrt(p * (1 - p) / n))
    d = Categorical.log_prob(np.repeat(z, n, 0), a) - Categorical.log_prob(np.repeat(y, n, 0), a)
    assert abs(d.mean() - Categorical.kl(z, y)[0]) < 5 * d.std() / np.sqrt(n)


def test_sampling__draws_on_host_so_backends_agree(xb):
    rng_a, rng_b = np.random.default_rng(3), np.random.default_rng(3)
    m, s = np.zeros((4, 2)), np.array([0.0, -1.0])
    a_dev = DiagGaussian.sample(xb.asarray(m), xb.asarray(s), rng_a)
    a_host = DiagGaussian.sample(m, s, rng_b)
    np.testing.assert_array_equal(_np(a_dev), a_host)  # same draws, same exact arithmetic


def test_sample_with_log_prob__equals_log_prob_of_the_draw(xb):
    rng = np.random.default_rng(9)
    m, s = xb.asarray(rng.standard_normal((6, 3))), xb.asarray(rng.uniform(-1, 1, 3))
    act, logp = DiagGaussian.sample_with_log_prob(m, s, np.random.default_rng(1))
    # the same function computes both: bit-identical (the ratio at θ_old is exactly 1)
    np.testing.assert_array_equal(_np(logp), _np(DiagGaussian.log_prob(m, s, act)))
    z = xb.asarray(rng.standard_normal((6, 4)))
    act, logp = Categorical.sample_with_log_prob(z, np.random.default_rng(2))
    np.testing.assert_array_equal(_np(logp), _np(Categorical.log_prob(z, act)))
    np.testing.assert_array_equal(_np(act), _np(Categorical.sample(z, np.random.default_rng(2))))


def test_categorical__narrow_integer_actions_do_not_wrap():
    # uint8 actions with K = 300 categories: arange(300) in uint8 would wrap to 0..255, 0..43.
    rng = np.random.default_rng(4)
    z = rng.standard_normal((4, 300))
    act = np.array([1, 2, 250, 5], dtype=np.uint8)
    np.testing.assert_array_equal(Categorical.log_prob(z, act), Categorical.log_prob(z, act.astype(np.int64)))


# ------------------------------------------------- MultiDiscrete and MultiBinary heads
def test_multicategorical__worked_example_by_hand(xb):
    # nvec (2, 3), logits 0: p = (1/2, 1/2) and (1/3, 1/3, 1/3)
    mc = MultiCategorical((2, 3))
    z = xb.asarray(np.zeros((1, 5)))
    act = xb.asarray(np.array([[1, 2]]))
    np.testing.assert_allclose(_np(mc.log_prob(z, act)), [math.log(1 / 2) + math.log(1 / 3)], rtol=1e-15)
    np.testing.assert_allclose(_np(mc.entropy(z)), [math.log(2) + math.log(3)], rtol=1e-15)
    # ∂log p/∂z = e_a − p per slice
    np.testing.assert_allclose(_np(mc.log_prob_grad(z, act)), [[-0.5, 0.5, -1 / 3, -1 / 3, 2 / 3]], rtol=1e-15)
    # M u, block by block: (diag p − p pᵀ)u; u = e_0 gives (1/4, −1/4 | 0 0 0)
    u = xb.asarray(np.array([[1.0, 0.0, 0.0, 0.0, 3.0]]))
    np.testing.assert_allclose(_np(mc.fisher_product(z, u)), [[0.25, -0.25, -1 / 3, -1 / 3, 2 / 3]], rtol=1e-15)
    # KL(p‖q) with q's first block (3/4, 1/4): ½ log(½/¾) + ½ log(½/¼) = 0.143841..., second block equal
    y = xb.asarray(np.array([[math.log(3.0), 0.0, 0.0, 0.0, 0.0]]))
    np.testing.assert_allclose(_np(mc.kl(z, y)), [0.5 * math.log(2 / 3) + 0.5 * math.log(2)], rtol=1e-14)


def test_bernoulli__worked_example_by_hand(xb):
    # z = 0: σ = ½; z = log 3: σ = ¾
    z = xb.asarray(np.array([[0.0, math.log(3.0)]]))
    act = xb.asarray(np.array([[1, 0]]))
    np.testing.assert_allclose(_np(Bernoulli.log_prob(z, act)), [math.log(0.5) + math.log(0.25)], rtol=1e-15)
    np.testing.assert_allclose(_np(Bernoulli.entropy(z)),
                               [math.log(2) - 0.75 * math.log(0.75) - 0.25 * math.log(0.25)], rtol=1e-14)
    np.testing.assert_allclose(_np(Bernoulli.log_prob_grad(z, act)), [[0.5, -0.75]], rtol=1e-15)
    np.testing.assert_allclose(_np(Bernoulli.fisher_product(z, xb.asarray(np.ones((1, 2))))), [[0.25, 0.1875]],
                               rtol=1e-15)
    y = xb.asarray(np.array([[math.log(3.0), 0.0]]))
    np.testing.assert_allclose(_np(Bernoulli.kl(z, y)),
                               [0.5 * math.log(2 / 3) + 0.5 * math.log(2) + 0.75 * math.log(1.5) + 0.25 * math.log(0.5)],
                               rtol=1e-14)


def _check_logits_distribution(xb, name, dist, z, y, act, v, kl_floor):
    """Every derivative of a logits distribution (MultiCategorical, Bernoulli) against central differences along
    v, its metric against differences of kl_grad_q, KL >= kl_floor and KL(p, p) = 0 exactly."""
    X = xb.asarray
    for quantity, analytic, f in [
        ("log_prob_grad", dist.log_prob_grad(X(z), X(act)), lambda t: dist.log_prob(z + t * v, act)),
        ("entropy_grad", dist.entropy_grad(X(z)), lambda t: dist.entropy(z + t * v)),
        ("kl_grad_q", dist.kl_grad_q(X(z), X(y)), lambda t: dist.kl(z, y + t * v)),
        ("kl_grad_p", dist.kl_grad_p(X(z), X(y)), lambda t: dist.kl(z + t * v, y)),
    ]:
        check_fd(f"{name}.{quantity}", np.sum(_np(analytic) * v, axis=1), central_diff(f, 0.0, 1.0))
    fd = central_diff(lambda t: dist.kl_grad_q(z, z + t * v), 0.0, 1.0)
    check_fd(f"{name}.fisher_product (vs FD of kl_grad_q)", _np(dist.fisher_product(X(z), X(v))), fd)
    assert np.all(_np(dist.kl(X(z), X(y))) >= kl_floor)
    np.testing.assert_array_equal(_np(dist.kl(X(z), X(z))), 0.0)


@given(case=multicategorical_params())
def test_multicategorical_derivatives__match_central_differences(xb, case):
    nvec, z, y, rng = case
    mc = MultiCategorical(nvec)
    act = np.stack([rng.integers(0, k, z.shape[0]) for k in mc.nvec], axis=1)
    v = rng.standard_normal(z.shape)
    _check_logits_distribution(xb, "MultiCategorical", mc, z, y, act, v, kl_floor=0.0)


@given(case=logit_pairs())
def test_bernoulli_derivatives__match_central_differences(xb, case):
    z, y, rng = case
    act = rng.integers(0, 2, z.shape)
    v = rng.standard_normal(z.shape)
    _check_logits_distribution(xb, "Bernoulli", Bernoulli, z, y, act, v,
                               kl_floor=-1e-15)  # a sum of two non-negative-in-exact terms


def test_multicategorical_and_bernoulli__finite_for_logits_of_magnitude_100(xb):
    z = xb.asarray(np.array([[100.0, -100.0, 0.0, 100.0, -100.0]]))
    y = xb.asarray(np.array([[-100.0, 100.0, 0.0, -100.0, 100.0]]))
    mc = MultiCategorical((3, 2))
    lp = _np(mc.log_prob(z, xb.asarray(np.array([[1, 1]]))))
    np.testing.assert_allclose(lp, [-200.0 - 200.0], rtol=1e-14)  # each slice: z_a − max = −200
    assert np.isfinite(_np(mc.kl(z, y))).all() and np.isfinite(_np(mc.kl_grad_p(z, y))).all()
    lpb = _np(Bernoulli.log_prob(z, xb.asarray(np.array([[0, 1, 1, 1, 0]]))))
    # log σ(−100) = −100 − log1p(e^-100) ≈ −100; log σ(0) = −log 2; log σ(100) ≈ 0
    np.testing.assert_allclose(lpb, [-100.0 - 100.0 - math.log(2) + 0.0 + 0.0], rtol=1e-14)
    kl = _np(Bernoulli.kl(z, y))
    assert np.isfinite(kl).all() and kl[0] > 300  # four bits flipped by 200 in the logits
    assert np.isfinite(_np(Bernoulli.entropy(z))).all() and np.isfinite(_np(Bernoulli.kl_grad_p(z, y))).all()


def test_heads__sampling_draws_on_host_and_matches_log_prob(xb):
    rng_z = np.random.default_rng(0)
    z = rng_z.standard_normal((50, 5))
    mc = MultiCategorical((2, 3))
    a, lp = mc.sample_with_log_prob(xb.asarray(z), 7)
    a_np, _ = mc.sample_with_log_prob(z, 7)
    np.testing.assert_array_equal(_np(a), a_np)  # same host draws on every backend
    np.testing.assert_allclose(_np(lp), mc.log_prob(z, _np(a)), rtol=1e-14)
    b, lpb = Bernoulli.sample_with_log_prob(xb.asarray(z), 7)
    np.testing.assert_array_equal(_np(b), Bernoulli.sample_with_log_prob(z, 7)[0])
    np.testing.assert_allclose(_np(lpb), Bernoulli.log_prob(z, _np(b)), rtol=1e-14)


def test_heads__sampling_frequencies_match_the_probabilities():
    # 20000 draws per row: each frequency within 5 standard errors of its probability
    z = np.array([[0.3, -1.2, 0.0, 2.0, -0.5]])
    reps = 20000
    zz = np.repeat(z, reps, axis=0)
    mc = MultiCategorical((2, 3))
    a, _ = mc.sample_with_log_prob(zz, 3)
    p0 = np.exp(mc.log_softmax(z))[0]
    for col, sl in enumerate(mc.slices):
        freq = np.bincount(a[:, col], minlength=sl.stop - sl.start) / reps
        p = p0[sl]
        assert np.all(np.abs(freq - p) <= 5 * np.sqrt(p * (1 - p) / reps)), (freq, p)
    b, _ = Bernoulli.sample_with_log_prob(zz, 4)
    s = 1 / (1 + np.exp(-z[0]))
    assert np.all(np.abs(b.mean(axis=0) - s) <= 5 * np.sqrt(s * (1 - s) / reps))
