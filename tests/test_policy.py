"""trpo_ref.policy: every policy quantity as a function of θ, and the analytic FVP.

Sections: worked examples; hypothesis properties on random architectures
(central differences, every backend); agreement with naive oracles
(dense JᵀMJ, score-function Fisher, Monte Carlo); layout; input validation.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import trpo_ref as tr
from oracles import central_diff, check_fd, dense_fisher, relu_kink_margin, score_function_fisher_categorical
from strategies import ALL_KINDS, DISCRETE_KINDS, RELU_KINK_MARGIN, policy_cases
from trpo_ref import backend


def _np(x):
    return backend.to_numpy(x)


# ------------------------------------------------------------------ cases
# Each head is its own test id with the profile's full example budget (drawing the head inside one
# test split the budget four ways, and unevenly: 8 to 25 examples per head in CI).
per_head = pytest.mark.parametrize("kind", ALL_KINDS)


def _perturb(theta, rng, scale=0.2):
    return theta + scale * rng.standard_normal(theta.shape)


# ------------------------------------------------------------ worked examples
def test_gaussian_policy__worked_example_by_hand(xb):
    # obs_dim 1, act_dim 1, no hidden layer: μ = w s + b; θ = [w, b, log σ] = [2, 1, 0]
    # s = 1, a = 4: μ = 3, z = 1 -> log π = −½ − ½ log 2π = −1.4189385332046727
    pi = tr.GaussianMLPPolicy(1, 1, hidden_sizes=())
    theta = xb.asarray([2.0, 1.0, 0.0])
    obs, act = xb.asarray([[1.0]]), xb.asarray([[4.0]])
    np.testing.assert_allclose(_np(pi.log_prob(theta, obs, act)), [-1.4189385332046727], rtol=1e-15)
    # ∇ log π = [(a−μ)/σ² s, (a−μ)/σ², z² − 1] = [1, 1, 0]; adv = 2 -> g = [2, 2, 0]
    g = pi.surrogate_grad(theta, obs, act, xb.asarray([2.0]), pi.log_prob(theta, obs, act))
    np.testing.assert_allclose(_np(g), [2.0, 2.0, 0.0], rtol=1e-15, atol=1e-15)
    # F = E[Jᵀ M J] with J = [[s, 1, 0], [0, 0, 1]], M = diag(1/σ², 2) = diag(1, 2):
    # F = [[1, 1, 0], [1, 1, 0], [0, 0, 2]];  F [1, 2, 3] = [3, 3, 6]
    fv = pi.fisher_vector_product(theta, obs, xb.asarray([1.0, 2.0, 3.0]))
    np.testing.assert_allclose(_np(fv), [3.0, 3.0, 6.0], rtol=1e-15)


def test_categorical_policy__worked_example_by_hand(xb):
    # obs_dim 1, 2 actions, no hidden layer: logits = s W + b, W = [[0, log 3]], b = 0
    # s = 1 -> p = [1/4, 3/4]; J = [[s, 0, 1, 0], [0, s, 0, 1]] (θ = [W00, W01, b0, b1])
    # M = [[3/16, −3/16], [−3/16, 3/16]]; F = Jᵀ M J; F e_W00 = [3, −3, 3, −3]/16
    pi = tr.CategoricalMLPPolicy(1, 2, hidden_sizes=())
    theta = xb.asarray([0.0, math.log(3.0), 0.0, 0.0])
    obs = xb.asarray([[1.0]])
    fv = pi.fisher_vector_product(theta, obs, xb.asarray([1.0, 0.0, 0.0, 0.0]))
    np.testing.assert_allclose(_np(fv), [0.1875, -0.1875, 0.1875, -0.1875], rtol=1e-15)
    # mean entropy = 0.5623351446188083 (see test_distributions)
    np.testing.assert_allclose(float(_np(pi.entropy(theta, obs))), 0.5623351446188083, rtol=1e-15)


# -------------------------------------------------- central-difference checks
@per_head
@given(data=st.data())
def test_log_prob_grad__matches_central_differences(xb, kind, data):
    pi, theta, obs, act, _, rng = data.draw(policy_cases(kinds=(kind,)), label="case")
    w, v = rng.standard_normal(obs.shape[0]), rng.standard_normal(theta.size)
    X = xb.asarray
    analytic = _np(pi.log_prob_grad(X(theta), X(obs), X(act), X(w))) @ v
    fd = w @ central_diff(lambda t: pi.log_prob(t, obs, act), theta, v)
    check_fd(f"policy.log_prob_grad ({pi.kind})", analytic, fd)


@pytest.mark.parametrize("reverse", [False, True])
@per_head
@given(data=st.data())
def test_kl_grad__matches_central_differences_away_from_theta_old(xb, kind, reverse, data):
    # kind and direction are parametrized (not drawn) so every combination gets the full example budget
    pi, theta_old, obs, _, _, rng = data.draw(policy_cases(kinds=(kind,)), label="case")
    theta, v = _perturb(theta_old, rng), rng.standard_normal(theta_old.size)
    assume(relu_kink_margin(pi.mlp, theta, obs) > RELU_KINK_MARGIN)  # the differences are taken at the perturbed θ
    X = xb.asarray
    analytic = _np(pi.kl_grad(X(theta_old), X(theta), X(obs), reverse=reverse)) @ v
    fd = central_diff(lambda t: pi.kl(theta_old, t, obs, reverse=reverse), theta, v)
    name = "KL(new‖old)" if reverse else "KL(old‖new)"
    check_fd(f"policy.kl_grad {name} ({pi.kind})", analytic, fd)


@per_head
@given(data=st.data())
def test_surrogate_grad__matches_central_differences(xb, kind, data):
    pi, theta_old, obs, act, logp_old, rng = data.draw(policy_cases(kinds=(kind,)), label="case")
    theta, v = _perturb(theta_old, rng), rng.standard_normal(theta_old.size)
    assume(relu_kink_margin(pi.mlp, theta, obs) > RELU_KINK_MARGIN)  # the differences are taken at the perturbed θ
    adv = rng.standard_normal(obs.shape[0])
    X = xb.asarray
    analytic = _np(pi.surrogate_grad(X(theta), X(obs), X(act), X(adv), X(logp_old))) @ v
    fd = central_diff(lambda t: pi.surrogate(t, obs, act, adv, logp_old), theta, v)
    check_fd(f"policy.surrogate_grad ({pi.kind})", analytic, fd)


@per_head
@given(data=st.data())
def test_entropy_grad__matches_central_differences(xb, kind, data):
    pi, theta, obs, _, _, rng = data.draw(policy_cases(kinds=(kind,)), label="case")
    v = rng.standard_normal(theta.size)
    analytic = _np(pi.entropy_grad(xb.asarray(theta), xb.asarray(obs))) @ v
    fd = central_diff(lambda t: pi.entropy(t, obs), theta, v)
    check_fd(f"policy.entropy_grad ({pi.kind})", analytic, fd)


# ------------------------------------------------------ Fisher-vector product
@pytest.mark.parametrize("reverse", [False, True])
@per_head
@given(data=st.data())
def test_fisher_vector_product__matches_fd_of_kl_gradient(xb, kind, reverse, data):
    # F = ∇²_θ D̄_KL at θ_old (either direction): (a) in the list.
    pi, theta, obs, _, _, rng = data.draw(policy_cases(kinds=(kind,)), label="case")
    v = rng.standard_normal(theta.size)
    fv = _np(pi.fisher_vector_product(xb.asarray(theta), xb.asarray(obs), xb.asarray(v)))
    fd = central_diff(lambda t: pi.kl_grad(theta, t, obs, reverse=reverse), theta, v)
    name = "KL(new‖old)" if reverse else "KL(old‖new)"
    check_fd(f"FVP vs FD of kl_grad {name} ({pi.kind})", fv, fd)


@per_head
@given(data=st.data())
def test_fisher_vector_product__matches_dense_jacobian_oracle(xb, kind, data):
    pi, theta, obs, _, _, rng = data.draw(policy_cases(kinds=(kind,)), label="case")
    v = rng.standard_normal(theta.size)
    fv = _np(pi.fisher_vector_product(xb.asarray(theta), xb.asarray(obs), xb.asarray(v)))
    check_fd(f"FVP vs dense JᵀMJ oracle ({pi.kind})", fv, dense_fisher(pi, theta, obs) @ v)


@per_head
@given(data=st.data())
def test_fisher_operator__any_block_size_matches_dense_jacobian_oracle(kind, data):
    # The NumPy path sums over the batch in blocks (each block's metric rows sliced
    # from the cached σ or softmax); every block size, including 1 and more than N,
    # must give the same (F + λI)v as the dense oracle.
    pi, theta, obs, _, _, rng = data.draw(policy_cases(kinds=(kind,)), label="case")
    block_rows = data.draw(st.integers(1, obs.shape[0] + 2), label="block_rows")
    v = rng.standard_normal(theta.size)
    fv = tr.FisherOperator(pi, theta, obs, damping=0.1, block_rows=block_rows)(v)
    expected = dense_fisher(pi, theta, obs) @ v + 0.1 * v
    check_fd(f"blocked FVP vs dense JᵀMJ oracle ({pi.kind})", fv, expected)


@pytest.mark.parametrize("kind", DISCRETE_KINDS)
@given(data=st.data())
def test_fisher_vector_product__discrete_heads_equal_score_function_fisher(xb, kind, data):
    # every (joint) action enumerated: the exact E_a[∇log π ∇log πᵀ]
    pi, theta, obs, _, _, rng = data.draw(policy_cases(kinds=(kind,)), label="case")
    v = rng.standard_normal(theta.size)
    F = score_function_fisher_categorical(pi, theta, obs)
    fv = _np(pi.fisher_vector_product(xb.asarray(theta), xb.asarray(obs), xb.asarray(v)))
    check_fd(f"FVP vs score-function Fisher ({pi.kind})", fv, F @ v)


def test_fisher_vector_product__gaussian_matches_monte_carlo_score_fisher():
    # F = E_a[∇log π ∇log πᵀ]; estimate with M draws per state.  Each entry of
    # the estimate of F v is a mean of M iid terms: compare within 5 standard
    # errors (estimated from the draws), per coordinate.
    rng = np.random.default_rng(7)
    pi = tr.GaussianMLPPolicy(3, 2, (5,))
    theta = _np(pi.init_params(0)) + 0.3 * rng.standard_normal(pi.num_params)
    obs = rng.standard_normal((4, 3))
    v = rng.standard_normal(pi.num_params)
    m = 20_000
    obs_rep = np.repeat(obs, m, axis=0)
    act, _ = pi.sample(theta, obs_rep, rng)
    # per-sample scores s_i = ∇ log π(a_i|s_i): terms (s_i·v) s_i, mean over the draws
    # (the per-sample gradient through log_prob_grad with one-hot weights would be
    # O(M N) passes; instead use linearity: Σ_i w_i s_i with w_i = s_i·v needs s_i·v,
    # which is a jvp of log π along v)
    sv = central_diff(lambda t: pi.log_prob(t, obs_rep, act), theta, v)
    est = pi.log_prob_grad(theta, obs_rep, act, sv) / obs_rep.shape[0]
    # standard error of each coordinate: by batches of the same estimator
    batches = np.array([pi.log_prob_grad(theta, obs_rep[k::10], act[k::10], sv[k::10]) / obs_rep[k::10].shape[0]
                        for k in range(10)])
    se = batches.std(axis=0, ddof=1) / np.sqrt(10)
    exact = pi.fisher_vector_product(theta, obs, v)
    assert np.all(np.abs(est - exact) < 5 * se + 1e-12)
    assert np.max(np.abs(exact)) > 10 * np.max(se)  # the test has power: signal ≫ noise


@per_head
@given(data=st.data())
def test_fisher_vector_product__symmetric_and_psd(xb, kind, data):
    pi, theta, obs, _, _, rng = data.draw(policy_cases(kinds=(kind,)), label="case")
    u, v = rng.standard_normal(theta.size), rng.standard_normal(theta.size)
    op = pi.fisher_operator(xb.asarray(theta), xb.asarray(obs))
    fu, fv = _np(op(xb.asarray(u))), _np(op(xb.asarray(v)))
    # uᵀFv and vᵀFu are the same bilinear form evaluated through different products:
    # equal up to rounding of P-term dot products (relative 1e-12 of |u||F||v|).
    scale = np.linalg.norm(u) * np.linalg.norm(fv) + np.linalg.norm(v) * np.linalg.norm(fu)
    assert abs(u @ fv - v @ fu) <= 1e-12 * scale
    # vᵀFv = (1/N) Σ (Jv)ᵀ M (Jv) ≥ 0 exactly in exact arithmetic; allow rounding.
    assert v @ fv >= -1e-12 * np.linalg.norm(v) * np.linalg.norm(fv)


@per_head
@given(data=st.data(), damping=st.floats(1e-4, 10.0))
def test_fisher_vector_product__damping_adds_exactly_damping_times_v(xb, kind, data, damping):
    pi, theta, obs, _, _, rng = data.draw(policy_cases(kinds=(kind,)), label="case")
    v = rng.standard_normal(theta.size)
    X = xb.asarray
    plain = _np(pi.fisher_vector_product(X(theta), X(obs), X(v)))
    damped = _np(pi.fisher_vector_product(X(theta), X(obs), X(v), damping=damping))
    # one addition of damping*v: exact up to one rounding per element
    np.testing.assert_allclose(damped - plain, damping * v, rtol=1e-14, atol=4 * np.finfo(float).eps * np.abs(damped).max())


def test_fisher_vector_product__not_zero_and_moves_log_std():
    # Regressions: an FVP of zero (the old distribution not detached, KL grad
    # of a constant) and a log σ block left out of the update.
    rng = np.random.default_rng(0)
    pi = tr.GaussianMLPPolicy(4, 3, (8, 8))
    theta = pi.init_params(0)
    obs = rng.standard_normal((16, 4))
    v = rng.standard_normal(pi.num_params)
    fv = pi.fisher_vector_product(theta, obs, v)
    assert np.linalg.norm(fv) > 0.1 * np.linalg.norm(v[: pi.mlp.num_params]) * 1e-4
    # the log σ block is exactly 2 v_logσ (M = 2 for log σ, J = I)
    np.testing.assert_allclose(fv[-3:], 2 * v[-3:], rtol=1e-15)
    # a natural-gradient step on a batch with positive advantage for large actions moves log σ
    act, logp = pi.sample(theta, obs, rng)
    adv = np.sum(((act - pi.sample(theta, obs, deterministic=True)[0]) ** 2), axis=1)
    g = pi.surrogate_grad(theta, obs, act, adv, logp)
    assert np.all(np.abs(g[-3:]) > 0)


def test_fisher_operator__reuses_one_forward_pass_and_counts_products():
    pi = tr.CategoricalMLPPolicy(3, 4, (6,))
    rng = np.random.default_rng(1)
    theta, obs = pi.init_params(0), rng.standard_normal((5, 3))
    op = pi.fisher_operator(theta, obs, damping=0.1)
    v = rng.standard_normal(pi.num_params)
    np.testing.assert_array_equal(op(v), pi.fisher_vector_product(theta, obs, v, damping=0.1))
    op(v)
    assert op.n_products == 2


# ------------------------------------------------------------ KL and surrogate
@per_head
@given(data=st.data(), reverse=st.booleans())
def test_kl__zero_with_zero_gradient_at_theta_old_and_nonnegative(xb, kind, data, reverse):
    pi, theta, obs, _, _, rng = data.draw(policy_cases(kinds=(kind,)), label="case")
    X = xb.asarray
    # KL(p‖p): every term is exactly 0 (identical φ) for categorical; the Gaussian
    # closed form cancels to rounding.
    assert abs(float(_np(pi.kl(X(theta), X(theta), X(obs), reverse=reverse)))) <= 1e-15
    grad = _np(pi.kl_grad(X(theta), X(theta), X(obs), reverse=reverse))
    np.testing.assert_allclose(grad, 0.0, atol=1e-14)
    assert float(_np(pi.kl(X(theta), X(_perturb(theta, rng)), X(obs), reverse=reverse))) >= 0.0


@per_head
@given(data=st.data())
def test_surrogate__equals_mean_adv_at_theta_old_and_grad_is_policy_gradient(xb, kind, data):
    pi, theta, obs, act, logp_old, rng = data.draw(policy_cases(kinds=(kind,)), label="case")
    adv = rng.standard_normal(obs.shape[0])
    X = xb.asarray
    # ratio = exp(logp − logp_old) = exp(0) = 1 exactly: L = mean(adv)
    np.testing.assert_allclose(float(_np(pi.surrogate(X(theta), X(obs), X(act), X(adv), X(logp_old)))),
                               np.mean(adv), rtol=1e-15, atol=1e-16)
    g = _np(pi.surrogate_grad(X(theta), X(obs), X(act), X(adv), X(logp_old)))
    pg = _np(pi.log_prob_grad(X(theta), X(obs), X(act), X(adv / obs.shape[0])))
    np.testing.assert_allclose(g, pg, rtol=1e-13, atol=1e-15)


def test_categorical_policy__finite_for_logits_of_magnitude_100():
    pi = tr.CategoricalMLPPolicy(1, 3, hidden_sizes=())
    theta = np.array([100.0, -100.0, 0.0, 0.0, 0.0, 0.0])
    theta_new = np.array([-100.0, 100.0, 0.0, 0.0, 0.0, 0.0])
    obs = np.array([[1.0], [-1.0]])
    assert np.all(np.isfinite(pi.log_prob(theta, obs, np.array([1, 1]))))
    assert np.isfinite(pi.kl(theta, theta_new, obs)) and pi.kl(theta, theta_new, obs) > 100


# ------------------------------------------------------------------- layout
def test_flatten_unflatten__round_trip_and_documented_layout(xb):
    pi = tr.GaussianMLPPolicy(2, 3, (4,))
    theta = xb.asarray(np.arange(pi.num_params, dtype=np.float64))
    named = pi.unflatten(theta)
    assert list(named) == ["W0", "b0", "W1", "b1", "log_std"]
    assert tuple(named["W0"].shape) == (2, 4) and tuple(named["W1"].shape) == (4, 3)
    np.testing.assert_array_equal(_np(named["W0"])[1], [4, 5, 6, 7])  # row-major (in, out)
    np.testing.assert_array_equal(_np(named["log_std"]), [27, 28, 29])
    np.testing.assert_array_equal(_np(pi.flatten(named)), _np(theta))
    cat = tr.CategoricalMLPPolicy(2, 3, (4,))
    th = xb.asarray(np.arange(cat.num_params, dtype=np.float64))
    assert list(cat.unflatten(th)) == ["W0", "b0", "W1", "b1"]
    np.testing.assert_array_equal(_np(cat.flatten(cat.unflatten(th))), _np(th))


def test_spec__round_trip():
    pi = tr.GaussianMLPPolicy(5, 2, (7, 3), "relu", log_std_init=-0.5)
    clone = tr.policy_from_spec(pi.spec())
    assert clone.spec() == pi.spec() and clone.num_params == pi.num_params
    with pytest.raises(ValueError, match="kind"):
        tr.policy_from_spec({**pi.spec(), "kind": "beta"})


def test_init_params__float32_allowed_and_derivatives_keep_dtype():
    pi = tr.GaussianMLPPolicy(3, 2, (4,))
    theta = pi.init_params(0, dtype="float32")
    assert theta.dtype == np.float32
    obs = np.ones((2, 3), dtype=np.float32)
    assert pi.fisher_vector_product(theta, obs, np.ones(pi.num_params, np.float32)).dtype == np.float32
    with pytest.raises(ValueError, match="dtype"):
        pi.init_params(0, dtype="float16")


# --------------------------------------------------------- input validation
@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda a: {**a, "theta": a["theta"][:-1]}, r"theta must have shape \(44,\)"),
        (lambda a: {**a, "obs": a["obs"][:, :2]}, r"obs must have shape \(N, 3\)"),
        (lambda a: {**a, "obs": a["obs"][0]}, r"obs must have shape \(N, 3\)"),
        (lambda a: {**a, "act": np.array([0, 1, 4, 0])}, r"act must lie in \[0, 4\)"),
        (lambda a: {**a, "act": np.array([0, -1, 2, 0])}, r"act must lie in \[0, 4\)"),
        (lambda a: {**a, "act": np.array([0, 1, 2])}, r"act must have shape \(4,\)"),
        (lambda a: {**a, "act": np.array([0.0, 1.0, 2.0, 0.0])}, "integer"),
        (lambda a: {**a, "adv": np.ones(3)}, r"adv must have shape \(4,\)"),
        (lambda a: {**a, "adv": np.ones((4, 1))}, r"adv must have shape \(4,\)"),
        (lambda a: {**a, "logp_old": np.ones(5)}, r"logp_old must have shape \(4,\)"),
        (lambda a: {**a, "adv": np.array([0.0, np.nan, 0.0, 0.0])}, "adv contains NaN or inf"),
        (lambda a: {**a, "obs": np.where(np.eye(4, 3) > 0, np.inf, 0.0)}, "obs contains NaN or inf"),
        (lambda a: {**a, "theta": np.full(44, np.nan)}, "theta contains NaN or inf"),
        (lambda a: {**a, "obs": np.zeros((0, 3)), "act": np.zeros(0, int), "adv": np.zeros(0), "logp_old": np.zeros(0)}, "empty"),
    ],
)
def test_bad_input__raises_value_error_naming_argument(mutate, match):
    pi = tr.CategoricalMLPPolicy(3, 4, (5,))
    args = dict(theta=pi.init_params(0), obs=np.zeros((4, 3)), act=np.array([0, 1, 2, 3]),
                adv=np.ones(4), logp_old=np.zeros(4))
    a = mutate(args)
    with pytest.raises(ValueError, match=match):
        pi.surrogate_grad(a["theta"], a["obs"], a["act"], a["adv"], a["logp_old"])


def test_bad_input__gaussian_actions_and_fvp_vector():
    pi = tr.GaussianMLPPolicy(3, 2, (5,))
    theta, obs = pi.init_params(0), np.zeros((4, 3))
    with pytest.raises(ValueError, match=r"act must have shape \(4, 2\)"):
        pi.log_prob(theta, obs, np.zeros(4))
    with pytest.raises(ValueError, match="act contains NaN"):
        pi.log_prob(theta, obs, np.full((4, 2), np.nan))
    with pytest.raises(ValueError, match=r"v must have shape \(34,\)"):
        pi.fisher_vector_product(theta, obs, np.zeros(33))
    with pytest.raises(ValueError, match="damping"):
        pi.fisher_vector_product(theta, obs, np.zeros(34), damping=-1.0)
    with pytest.raises(ValueError, match="theta_old"):
        pi.kl(theta[:-1], theta, obs)
