r"""Tests of :mod:`trpo_ref.tabular`: the monotonic improvement bound, exactly.

Sections: worked examples with hand-computed numbers; hypothesis properties on
random MDPs (2–20 states, 2–5 actions, γ in [0.5, 0.99], arrays built from a
drawn seed); Gymnasium toy-text MDPs through their transition tables;
agreement with independent references (iterative policy evaluation, SLSQP
against the KKT solver of the penalised problem, the policy module's FVP).

``python -m tests.test_tabular`` runs a larger sweep of random pairs and
prints the smallest slack η(π̃) − [L_π(π̃) − C·D_KL^max] it found (see
:func:`bound_sweep`).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from oracles import FD_H, central_diff, check_fd, rel_err
from trpo_ref import tabular as T
from trpo_ref.policy import CategoricalMLPPolicy

# --------------------------------------------------------------------- helpers
#: Rounding tolerance for quantities from one dense solve of I − γP_π, relative to
#: ``scale = max|R| / (1 − γ)`` (a bound on |V|).  The ∞-norm condition number of
#: I − γP_π is ≤ (1 + γ)/(1 − γ) ≤ 199 for γ ≤ 0.99, so a backward-stable LU gives
#: ~199 · eps ≈ 4.4e-14 relative error; 1e-10 leaves three orders of margin and is
#: still ten orders below the O(1) error of a wrong formula.
SOLVE_RTOL = 1e-10


@st.composite
def mdps(draw, max_states=20, max_actions=5):
    """(mdp, rng): a random MDP and the generator that made it, for the rest of the arrays.

    The Dirichlet concentration of the transition rows is drawn too: 0.1 gives nearly
    deterministic transitions, 10 nearly uniform ones.
    """
    n_states = draw(st.integers(2, max_states))
    n_actions = draw(st.integers(2, max_actions))
    gamma = draw(st.floats(0.5, 0.99))
    concentration = draw(st.sampled_from([0.1, 1.0, 10.0]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return T.random_mdp(n_states, n_actions, gamma, rng, concentration=concentration), rng


def _random_logits(rng, shape):
    """Logits with a drawn spread, from nearly uniform to nearly deterministic policies."""
    return rng.normal(size=shape) * rng.uniform(0.1, 4.0)


def _candidate_new_logits(mdp, z_sa, rng):
    """New logits near and far from z: random directions and advantage (greedy) directions.

    Steps are log-uniform over [1e-4, 10]; the greedy direction A_π is the one
    that makes L_π(π̃) − η(π) largest for its size, so it tests the bound where
    the surrogate promises the most.
    """
    adv_sa = T.policy_evaluation(mdp, T.softmax_policy(z_sa)).adv_sa
    adv_dir = adv_sa / max(float(np.max(np.abs(adv_sa))), 1e-300)
    out = [z_sa.copy()]
    for _ in range(4):
        step = 10.0 ** rng.uniform(-4, 1)
        out.append(z_sa + step * rng.normal(size=z_sa.shape))
        out.append(z_sa + step * adv_dir)
    return out


def _assert_bound(terms: T.BoundTerms):
    # η(π̃) ≥ L − C·KLmax up to the rounding of the solves (relative to scale) and of
    # the product C·KLmax (relative to itself).
    tol = SOLVE_RTOL * max(terms.scale, terms.C * terms.kl_max)
    assert terms.slack >= -tol, terms


def bound_sweep(n_mdps: int = 200, seed: int = 0):
    """Slack of Theorem 1 over random MDPs and pairs, including the minorant's maximisers.

    Returns a dict over pairs with π̃ ≠ π: ``min_slack`` (smallest η(π̃) − bound),
    ``min_slack_over_scale`` (each slack divided by max|R|/(1−γ) first),
    ``max_penalty_fraction`` = max (L − η(π̃)) / (C·D_KL^max) (Theorem 1 says ≤ 1:
    how much of the penalty the true loss L − η(π̃) ever used), ``n_pairs``; and
    ``max_abs_identity_slack_over_scale``, the computed |slack| at π̃ = π, where it is
    exactly 0 in exact arithmetic (rounding only).
    """
    rng = np.random.default_rng(seed)
    min_slack, min_rel, max_frac, n_pairs, identity = math.inf, math.inf, -math.inf, 0, 0.0
    for _ in range(n_mdps):
        mdp = T.random_mdp(int(rng.integers(2, 21)), int(rng.integers(2, 6)), float(rng.uniform(0.5, 0.99)), rng)
        z_sa = _random_logits(rng, (mdp.n_states, mdp.n_actions))
        candidates = _candidate_new_logits(mdp, z_sa, rng)
        candidates.append(T.penalized_step(mdp, z_sa).logits)  # the maximiser of the minorant
        for z_new in candidates:
            terms = T.bound_terms(mdp, T.softmax_policy(z_sa), T.softmax_policy(z_new),
                                  logits=z_sa, logits_new=z_new)
            if np.array_equal(z_new, z_sa):
                identity = max(identity, abs(terms.slack) / terms.scale)
                continue
            n_pairs += 1
            min_slack = min(min_slack, terms.slack)
            min_rel = min(min_rel, terms.slack / terms.scale)
            if terms.C * terms.kl_max > 0:
                max_frac = max(max_frac, (terms.surrogate - terms.eta_new) / (terms.C * terms.kl_max))
    return {"min_slack": min_slack, "min_slack_over_scale": min_rel, "max_penalty_fraction": max_frac,
            "n_pairs": n_pairs, "max_abs_identity_slack_over_scale": identity}


def _iterative_policy_evaluation(mdp, pi_sa, tol=1e-13):
    """Naive reference: V ← r_π + γ P_π V from V = 0 until the update is below tol·scale.

    Contraction by γ per sweep, so the error after stopping is ≤ γ/(1−γ) · tol · scale.
    """
    p_pi_ss = np.einsum("sa,sat->st", pi_sa, mdp.P)
    r_pi_s = np.sum(pi_sa * mdp.R, axis=1)
    scale = max(float(np.max(np.abs(mdp.R))), 1e-300) / (1 - mdp.gamma)
    v_s = np.zeros(mdp.n_states)
    for _ in range(100_000):
        v_next = r_pi_s + mdp.gamma * p_pi_ss @ v_s
        if np.max(np.abs(v_next - v_s)) <= tol * scale:
            return v_next
        v_s = v_next
    raise AssertionError("iterative policy evaluation did not converge")


# ============================================================ worked examples
def _two_state_mdp(gamma=0.5):
    # States {0, 1}; action 0 "stay", action 1 "switch", deterministic.
    # Reward 1 for acting in state 1, 0 in state 0; start in state 0.
    p_sas = np.zeros((2, 2, 2))
    p_sas[0, 0, 0] = p_sas[1, 0, 1] = 1.0  # stay
    p_sas[0, 1, 1] = p_sas[1, 1, 0] = 1.0  # switch
    r_sa = np.array([[0.0, 0.0], [1.0, 1.0]])
    return T.TabularMDP(p_sas, r_sa, np.array([1.0, 0.0]), gamma)


def test_worked_example__two_state_values_and_bound_by_hand():
    # γ = 1/2, π uniform.  Under π both rows of P_π are (1/2, 1/2), so
    # V(s) = r(s) + γ m with m = (V(0) + V(1))/2; averaging, m = 1/2 + m/2, m = 1:
    #   V = (0.5, 1.5),  η = μ0·V = V(0) = 0.5.
    # Q(s,a) = R(s,a) + γ V(next):  Q(0,·) = (0.25, 0.75),  Q(1,·) = (1.75, 1.25);
    #   A(0,·) = (−0.25, +0.25),  A(1,·) = (+0.25, −0.25);  ε = 0.25,
    #   C = 4 ε γ / (1 − γ)² = 4 · 0.25 · 0.5 / 0.25 = 2.
    # ρ = μ0 + γ ρ P_π = (1, 0) + 0.5 · (1, 1) = (1.5, 0.5)   (sums to 1/(1 − γ) = 2).
    # π̃(·|0) = (1/4, 3/4), π̃(·|1) = (3/4, 1/4)  (shifted towards the advantage):
    #   L = 0.5 + 1.5 · 0.125 + 0.5 · 0.125 = 0.75;
    #   KL_s = ½ log(½ / ¼) + ½ log(½ / ¾) = ½ log(4/3) in both states;
    #   bound = 0.75 − 2 · ½ log(4/3) = 0.75 − log(4/3) ≈ 0.462318.
    # True η(π̃): rows of P_π̃ are both (1/4, 3/4), m' = 3/4 + m'/2 = 1.5,
    #   V_π̃ = (0.75, 1.75), η(π̃) = 0.75 ≥ 0.4623.
    mdp = _two_state_mdp()
    pi = np.full((2, 2), 0.5)
    pi_new = np.array([[0.25, 0.75], [0.75, 0.25]])
    vals = T.policy_evaluation(mdp, pi)
    # Tolerances: a 2×2 solve of numbers with short binary expansions: rounding level.
    np.testing.assert_allclose(vals.v_s, [0.5, 1.5], rtol=0, atol=1e-15)
    np.testing.assert_allclose(vals.q_sa, [[0.25, 0.75], [1.75, 1.25]], rtol=0, atol=1e-15)
    np.testing.assert_allclose(vals.adv_sa, [[-0.25, 0.25], [0.25, -0.25]], rtol=0, atol=1e-15)
    np.testing.assert_allclose(T.visitation(mdp, pi), [1.5, 0.5], rtol=0, atol=1e-15)
    np.testing.assert_allclose(T.visitation(mdp, pi, normalize=True), [0.75, 0.25], rtol=0, atol=1e-15)
    assert T.eta(mdp, pi) == pytest.approx(0.5, rel=1e-15)
    assert T.epsilon(mdp, pi) == pytest.approx(0.25, rel=1e-15)
    assert T.penalty_C(mdp, pi) == pytest.approx(2.0, rel=1e-15)
    assert T.surrogate_L(mdp, pi, pi_new) == pytest.approx(0.75, rel=1e-15)
    assert T.kl_max(pi, pi_new) == pytest.approx(0.5 * math.log(4 / 3), rel=1e-15)
    assert T.lower_bound(mdp, pi, pi_new) == pytest.approx(0.75 - math.log(4 / 3), rel=1e-14)
    np.testing.assert_allclose(T.policy_evaluation(mdp, pi_new).v_s, [0.75, 1.75], rtol=0, atol=1e-15)
    terms = T.bound_terms(mdp, pi, pi_new, logits=np.log(pi), logits_new=np.log(pi_new))
    assert terms.eta_new == pytest.approx(0.75, rel=1e-15)
    assert terms.slack == pytest.approx(math.log(4 / 3), rel=1e-14)


def test_worked_example__cliffwalking_always_right_falls_forever():
    # From the start cell (36), "right" (action 1) steps into the cliff: reward −100 and
    # back to the start, never terminating: V(36) = −100 Σ γ^t = −100 / (1 − γ) = −1000.
    mdp = T.from_gymnasium("CliffWalking-v1", 0.9)
    pi = np.zeros((mdp.n_states, mdp.n_actions))
    pi[:, 1] = 1.0
    assert T.eta(mdp, pi) == pytest.approx(-1000.0, rel=1e-13)  # rounding of a 49×49 solve


def test_worked_example__frozenlake_deterministic_path_earns_gamma_to_the_fifth():
    # Non-slippery 4x4 map SFFF/FHFH/FFFH/HFFG, actions 0 left, 1 down, 2 right, 3 up.
    # Path 0 -down-> 4 -down-> 8 -right-> 9 -right-> 10 -down-> 14 -right-> 15 (goal):
    # the reward 1 comes on the sixth step (t = 5), then the absorbing state: η = γ⁵.
    gamma = 0.9
    mdp = T.from_gymnasium("FrozenLake-v1", gamma, is_slippery=False)
    pi = np.zeros((mdp.n_states, mdp.n_actions))
    pi[:, 0] = 1.0
    for s, a in [(0, 1), (4, 1), (8, 2), (9, 2), (10, 1), (14, 2)]:
        pi[s] = 0.0
        pi[s, a] = 1.0
    assert T.eta(mdp, pi) == pytest.approx(gamma**5, rel=1e-14)


def test_from_gymnasium__absorbing_state_and_initial_distribution():
    lake = T.from_gymnasium("FrozenLake-v1", 0.95)
    assert (lake.n_states, lake.n_actions) == (17, 4)
    np.testing.assert_array_equal(lake.P[16, :, 16], 1.0)  # absorbing under every action
    np.testing.assert_array_equal(lake.R[16], 0.0)
    assert lake.mu0[0] == 1.0 and lake.mu0.sum() == 1.0  # FrozenLake starts at cell 0
    # Slippery: from the goal's neighbour 14, "right" reaches the goal w.p. 1/3 (reward 1).
    assert lake.P[14, 2, 16] == pytest.approx(1 / 3, rel=1e-15)
    assert lake.R[14, 2] == pytest.approx(1 / 3, rel=1e-15)
    taxi = T.from_gymnasium("Taxi-v4", 0.95)
    assert (taxi.n_states, taxi.n_actions) == (501, 6)
    np.testing.assert_allclose(taxi.mu0[taxi.mu0 > 0], 1 / 300, rtol=1e-15)  # 300 legal starts
    assert np.count_nonzero(taxi.mu0) == 300 and taxi.mu0[500] == 0.0


def test_from_gymnasium__refuses_dynamics_outside_P():
    with pytest.raises(ValueError, match="fickle"):
        T.from_gymnasium("Taxi-v4", 0.9, fickle_passenger=True)


def test_from_gymnasium__accepts_an_env_and_warns_without_initial_distribution():
    import gymnasium as gym

    env = gym.make("CliffWalking-v1")
    try:
        direct = T.from_gymnasium(env, 0.9)
        np.testing.assert_array_equal(direct.P, T.from_gymnasium("CliffWalking-v1", 0.9).P)
        del env.unwrapped.initial_state_distrib
        with pytest.warns(UserWarning, match="uniform"):
            uniform = T.from_gymnasium(env, 0.9)
        np.testing.assert_allclose(uniform.mu0[:48], 1 / 48, rtol=1e-15)
    finally:
        env.close()


@pytest.mark.parametrize("bad, match", [
    (dict(P=np.full((2, 2, 2), 0.6)), "sum to 1"),
    (dict(P=np.ones((2, 2, 3)) / 3), "shape"),
    (dict(R=np.zeros((2, 3))), "R must have shape"),
    (dict(mu0=np.array([0.5, 0.6])), "mu0 must sum to 1"),
    (dict(mu0=np.array([1.5, -0.5])), "negative"),
    (dict(gamma=1.0), "gamma"),
    (dict(R=np.array([[0.0, np.nan], [0.0, 0.0]])), "NaN"),
])
def test_tabular_mdp__validation(bad, match):
    good = dict(P=np.full((2, 2, 2), 0.5), R=np.zeros((2, 2)), mu0=np.array([0.5, 0.5]), gamma=0.9)
    with pytest.raises(ValueError, match=match):
        T.TabularMDP(**{**good, **bad})


def test_tabular_mdp__is_frozen_and_read_only():
    mdp = _two_state_mdp()
    with pytest.raises(ValueError):
        mdp.P[0, 0, 0] = 0.5
    with pytest.raises(AttributeError):
        mdp.gamma = 0.1  # type: ignore[misc]


def test_kl_states__zero_probabilities_are_guarded():
    # 0·log(0/q) = 0 for any q (first row); p > 0 where q = 0 gives +inf (second row).
    pi = np.array([[1.0, 0.0], [0.5, 0.5]])
    pi_new = np.array([[0.5, 0.5], [1.0, 0.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no divide-by-zero or invalid-value warnings leak
        kl_s = T.kl_states(pi, pi_new)
    assert kl_s[0] == pytest.approx(math.log(2), rel=1e-15)
    assert kl_s[1] == math.inf
    assert T.kl_max(pi, pi_new) == math.inf
    assert T.kl_states(pi, pi)[0] == 0.0


# ====================================================== hypothesis properties
@given(mdps())
def test_surrogate__equals_eta_at_the_old_policy(mdp_rng):
    # L_π(π) − η(π) = Σ_s ρ(s) Σ_a π(a|s) A(s,a) = ρ · (r_π + γ P_π V − V): exactly the
    # residual of the solve that produced V (the same linear system), so it is at
    # rounding level: ‖ρ‖₁ = 1/(1−γ) times ~κ·eps·scale.  Checked relative to scale.
    mdp, rng = mdp_rng
    pi = T.softmax_policy(_random_logits(rng, (mdp.n_states, mdp.n_actions)))
    scale = float(np.max(np.abs(mdp.R))) / (1 - mdp.gamma)
    eta_pi = T.eta(mdp, pi)
    assert abs(T.surrogate_L(mdp, pi, pi) - eta_pi) <= SOLVE_RTOL * scale
    # Two derivations of η agree: μ0·V and ρ·r_π (the dual solve).
    _, r_pi_s = T.induced_chain(mdp, pi)
    assert abs(float(T.visitation(mdp, pi) @ r_pi_s) - eta_pi) <= SOLVE_RTOL * scale
    assert T.visitation(mdp, pi).sum() == pytest.approx(1 / (1 - mdp.gamma), rel=SOLVE_RTOL)


@given(mdps())
def test_surrogate_grad__matches_eta_grad_at_the_old_policy(mdp_rng):
    # First-order agreement ∇L_π = ∇η at π (Schulman et al. 2015, below eq. (3)), checked
    # three ways along a random unit direction v of the logits: central differences of the
    # exact η, central differences of L_π(π_z̃) at z̃ = z, and the closed form ρπA.
    mdp, rng = mdp_rng
    shape = (mdp.n_states, mdp.n_actions)
    z_sa = _random_logits(rng, shape)
    pi = T.softmax_policy(z_sa)
    v_sa = rng.normal(size=shape)
    v_sa /= np.linalg.norm(v_sa)
    # Error model (as in tests/oracles.fd_step, adapted to η): along a unit v, η's k-th
    # derivative is at most ~k!·max|R|/(1 − γ)^(k+1) (each derivative of (I − γP_π)⁻¹
    # brings a factor γ/(1 − γ)), so with deriv_scale = max|R|/(1 − γ)² (which bounds
    # |∂η/∂z| ≤ ‖ρ‖₁·2max|A|, up to a factor 4) the truncation error h²f'''/6 is
    # ≲ (h/(1 − γ))²·deriv_scale and the rounding error eps·|η|/h ≲ eps/(h(1 − γ))·deriv_scale.
    # h = eps^(1/3)·(1 − γ) balances both at eps^(2/3) ≈ 4e-11 of deriv_scale (softmax is
    # shift-invariant, so |z| sets no length scale); held to oracles.FD_TOL of deriv_scale.
    h = FD_H * (1.0 - mdp.gamma)
    d_eta = central_diff(lambda z: T.eta(mdp, T.softmax_policy(z)), z_sa, v_sa, h=h)
    d_surr = central_diff(lambda z: T.surrogate_L(mdp, pi, T.softmax_policy(z)), z_sa, v_sa, h=h)
    analytic = float(np.sum(T.policy_gradient(mdp, z_sa) * v_sa))
    analytic_surr = float(np.sum(T.surrogate_grad_logits(mdp, pi, z_sa) * v_sa))
    deriv_scale = max(float(np.max(np.abs(mdp.R))), 1e-300) / (1 - mdp.gamma) ** 2
    check_fd("tabular.policy_gradient (vs FD of eta)", analytic, d_eta, scale=deriv_scale)
    check_fd("tabular.policy_gradient (vs FD of surrogate_L)", analytic, d_surr, scale=deriv_scale)
    # The two closed forms are the same expression at z̃ = z: rounding level.
    assert abs(analytic_surr - analytic) <= SOLVE_RTOL * deriv_scale


@given(mdps())
def test_bound__holds_for_random_policy_pairs(mdp_rng):
    # Theorem 1 (Schulman et al. 2015): η(π̃) ≥ L_π(π̃) − C D_KL^max with C = 4εγ/(1−γ)².
    # Measured with bound_sweep (seeds 0, 1, 2: 2,200 random MDPs, 19,800 pairs π̃ ≠ π, the
    # minorant's maximisers included): no violation.  Smallest slack η(π̃) − bound:
    # +9.5e-10 (4.6e-10 of max|R|/(1−γ)), at the 1e-4 steps where slack ~ C·KL is
    # smallest; the true loss L − η(π̃) never used more than 6.1% of the penalty C·KL^max.
    # At π̃ = π the computed slack (exactly 0) stays within 6e-15 of the scale.
    mdp, rng = mdp_rng
    z_sa = _random_logits(rng, (mdp.n_states, mdp.n_actions))
    pi = T.softmax_policy(z_sa)
    for z_new in _candidate_new_logits(mdp, z_sa, rng):
        terms = T.bound_terms(mdp, pi, T.softmax_policy(z_new), logits=z_sa, logits_new=z_new)
        _assert_bound(terms)
        assert terms.lower_bound == pytest.approx(T.lower_bound(mdp, pi, T.softmax_policy(z_new)),
                                                  rel=1e-12, abs=SOLVE_RTOL * terms.scale)


@given(mdps())
def test_penalized_step__never_decreases_eta(mdp_rng):
    # Minorize–maximize: M(π̃) = L − C·KLmax ≤ η(π̃) with M(π) = η(π), so any π̃ with
    # M(π̃) ≥ M(π) has η(π̃) ≥ η(π) + (M(π̃) − η(π)).  Tolerance: rounding of the solves.
    mdp, rng = mdp_rng
    z_sa = _random_logits(rng, (mdp.n_states, mdp.n_actions))
    eta_old = T.eta(mdp, T.softmax_policy(z_sa))
    res = T.penalized_step(mdp, z_sa)
    eta_new = T.eta(mdp, T.softmax_policy(res.logits))
    scale = float(np.max(np.abs(mdp.R))) / (1 - mdp.gamma)
    assert eta_new >= eta_old + res.gain - SOLVE_RTOL * scale
    assert res.gain >= 0.0
    if not res.accepted:
        np.testing.assert_array_equal(res.logits, z_sa)  # restored bit for bit


@given(mdps(max_states=8))
def test_tabular_fisher__is_the_hessian_of_the_average_kl(mdp_rng):
    # F = ∇²_z̃ Σ_s d(s) KL(π_s ‖ π̃_s) at z̃ = z, checked as central differences of the
    # analytic KL gradient d(s)(π̃_s − π_s) (Categorical.kl_grad_q) along random v; and
    # as the score-function form Σ_s d(s) Σ_a π(a|s) ∇log π ∇log πᵀ, ∇_z log π(a|s) = e_a − π_s.
    mdp, rng = mdp_rng
    shape = (mdp.n_states, mdp.n_actions)
    z_sa = _random_logits(rng, shape)
    pi = T.softmax_policy(z_sa)
    d_s = T.visitation(mdp, pi, normalize=True)
    fisher = T.tabular_fisher(pi, d_s)
    v_sa = rng.normal(size=shape)

    def kl_grad(z_new_flat):
        from trpo_ref.distributions import Categorical

        return (d_s[:, None] * Categorical.kl_grad_q(z_sa, z_new_flat.reshape(shape))).ravel()

    hv = central_diff(kl_grad, z_sa.ravel(), v_sa.ravel())
    # FD error model (oracles.fd_step): eps^(2/3)·scale; the KL gradient and its
    # derivatives are O(1)·max|v|: held to oracles.FD_TOL.
    check_fd("tabular_fisher (vs FD of the KL gradient)", fisher @ v_sa.ravel(), hv)
    score_fisher = np.zeros_like(fisher)
    n_a = mdp.n_actions
    for s in range(mdp.n_states):
        for a in range(n_a):
            score = np.zeros(fisher.shape[0])
            score[s * n_a:(s + 1) * n_a] = np.eye(n_a)[a] - pi[s]
            score_fisher += d_s[s] * pi[s, a] * np.outer(score, score)
    assert rel_err(fisher, score_fisher) <= 1e-14  # same sums, different order: rounding
    fv = T.tabular_fisher_vector_product(pi, d_s, v_sa)
    assert rel_err(fv.ravel(), fisher @ v_sa.ravel()) <= 1e-14
    # Null direction: adding a constant to one state's logits leaves π unchanged.
    assert rel_err(fisher @ np.ones(fisher.shape[0]), np.zeros(fisher.shape[0])) <= 1e-15


@given(n_states=st.integers(2, 8), n_actions=st.integers(2, 5), seed=st.integers(0, 2**32 - 1))
def test_tabular_fisher__matches_linear_policy_fvp_on_one_hot_states(n_states, n_actions, seed):
    # CategoricalMLPPolicy(obs_dim=S, n_actions=A, hidden_sizes=()) computes z = x W0 + b0.
    # On one-hot rows e_s it gives z_sa = W0[s, a] + b0[a], so with θ = [W0 row-major, b0]
    # the Jacobian to the logits table is J = [I_SA | 1_S ⊗ I_A] (onehot_linear_jacobian).
    # Feeding state s c_s times, the policy's (1/N) Σ_n J_nᵀ M_n J_n is Σ_s (c_s/N) ... =
    # Jᵀ F J with F = tabular_fisher(π, d), d = c / N.  With b0 = 0 and W0 = the logits
    # table, π is the same tabular policy.
    rng = np.random.default_rng(seed)
    counts_s = rng.integers(0, 4, size=n_states)
    counts_s[rng.integers(n_states)] += 1  # at least one sample
    d_s = counts_s / counts_s.sum()
    z_sa = _random_logits(rng, (n_states, n_actions))
    obs_no = np.repeat(np.eye(n_states), counts_s, axis=0)
    policy = CategoricalMLPPolicy(n_states, n_actions, hidden_sizes=())
    theta_p = np.concatenate([z_sa.ravel(), np.zeros(n_actions)])
    named = policy.unflatten(theta_p)
    np.testing.assert_array_equal(named["W0"], z_sa)  # layout check: W0 is (S, A) row-major
    np.testing.assert_array_equal(named["b0"], 0.0)
    jac = T.onehot_linear_jacobian(n_states, n_actions)
    fisher_wb = jac.T @ T.tabular_fisher(T.softmax_policy(z_sa), d_s) @ jac
    for _ in range(3):
        v_p = rng.normal(size=policy.num_params)
        fv_policy = np.asarray(policy.fisher_vector_product(theta_p, obs_no, v_p))
        # Both are a few dozen flops per entry on O(1) numbers: rounding level.
        assert rel_err(fv_policy, fisher_wb @ v_p) <= 1e-13
    # The W block alone (v_b = 0) is the tabular F v.
    v_p = np.concatenate([rng.normal(size=n_states * n_actions), np.zeros(n_actions)])
    fv_policy = np.asarray(policy.fisher_vector_product(theta_p, obs_no, v_p))
    fv_tab = T.tabular_fisher_vector_product(T.softmax_policy(z_sa), d_s, v_p[:-n_actions].reshape(n_states, n_actions))
    assert rel_err(fv_policy[:-n_actions], fv_tab.ravel()) <= 1e-13
    assert rel_err(fv_policy[-n_actions:], fv_tab.sum(axis=0)) <= 1e-13  # bias block: Σ_s (F v)_s


@given(mdps())
def test_kl_states__probabilities_and_logits_agree(mdp_rng):
    mdp, rng = mdp_rng
    shape = (mdp.n_states, mdp.n_actions)
    z_sa, z_new_sa = _random_logits(rng, shape), _random_logits(rng, shape)
    kl_logits = T.kl_states_logits(z_sa, z_new_sa)
    kl_probs = T.kl_states(T.softmax_policy(z_sa), T.softmax_policy(z_new_sa))
    # softmax gives p and q to relative error ~eps, so each term p·log(p/q) errs by about
    # eps·p·(2 + |log(p/q)|); summed over A ≤ 5 actions with |log(p/q)| ≲ 40 for these
    # logits that is < 1e-13 absolute.  1e-12 absolute (KL can be ~0), 1e-10 relative.
    np.testing.assert_allclose(kl_probs, kl_logits, rtol=1e-10, atol=1e-12)
    assert np.all(kl_logits >= 0)
    d_s = T.visitation(mdp, T.softmax_policy(z_sa), normalize=True)
    assert T.average_kl(z_sa, z_new_sa, d_s) <= T.kl_max_logits(z_sa, z_new_sa) * (1 + 1e-15)


# ================================================= Gymnasium toy-text MDPs
_GYM_CASES = [
    ("FrozenLake-v1", {}, 0.95),
    ("FrozenLake-v1", {"map_name": "8x8"}, 0.99),
    ("CliffWalking-v1", {}, 0.9),
    ("Taxi-v4", {}, 0.95),
]


@pytest.fixture(scope="module", params=_GYM_CASES, ids=lambda c: f"{c[0]}{c[1].get('map_name', '')}-g{c[2]}")
def gym_mdp(request):
    env_id, kwargs, gamma = request.param
    return T.from_gymnasium(env_id, gamma, **kwargs)


def test_gym__identities_and_bound_through_transition_tables(gym_mdp):
    mdp = gym_mdp
    rng = np.random.default_rng(7)
    shape = (mdp.n_states, mdp.n_actions)
    scale = float(np.max(np.abs(mdp.R))) / (1 - mdp.gamma)
    for _ in range(2):
        z_sa = rng.normal(size=shape)
        pi = T.softmax_policy(z_sa)
        eta_pi = T.eta(mdp, pi)
        v_s = T.policy_evaluation(mdp, pi).v_s
        # Naive reference: iterative policy evaluation (error ≤ γ/(1−γ)·1e-13·scale ≤ 2e-11·scale).
        assert np.max(np.abs(v_s - _iterative_policy_evaluation(mdp, pi))) <= SOLVE_RTOL * scale
        assert abs(v_s[-1]) <= SOLVE_RTOL * scale  # the absorbing state is worth 0
        assert abs(T.surrogate_L(mdp, pi, pi) - eta_pi) <= SOLVE_RTOL * scale  # same solve
        for z_new in _candidate_new_logits(mdp, z_sa, rng):
            _assert_bound(T.bound_terms(mdp, pi, T.softmax_policy(z_new), logits=z_sa, logits_new=z_new))


def test_gym__penalized_step_never_decreases_eta(gym_mdp):
    mdp = gym_mdp
    rng = np.random.default_rng(3)
    z_sa = rng.normal(size=(mdp.n_states, mdp.n_actions))
    eta_old = T.eta(mdp, T.softmax_policy(z_sa))
    res = T.penalized_step(mdp, z_sa)
    assert res.accepted and res.gain > 0
    scale = float(np.max(np.abs(mdp.R))) / (1 - mdp.gamma)
    assert T.eta(mdp, T.softmax_policy(res.logits)) >= eta_old + res.gain - SOLVE_RTOL * scale


# ======================================================== naive references
@pytest.mark.parametrize("seed", range(6))
def test_penalized_step__dual_matches_slsqp_and_kkt(seed):
    # Two solvers of the same convex problem: the KKT/dual route (closed form per state,
    # root of Σμ_s = C) and SLSQP on the epigraph form in logits.  The dual optimum is
    # the maximum, so SLSQP may not beat it beyond rounding of the recomputed gain
    # (measured ≤ 5e-11 relative; 1e-9 allowed); SLSQP stops on ftol = 1e-14 of an O(1)
    # scaled objective, slow where the softmax saturates: measured within 4e-9, 1e-6 allowed.
    rng = np.random.default_rng(seed)
    mdp = T.random_mdp(int(rng.integers(2, 21)), int(rng.integers(2, 6)), float(rng.uniform(0.5, 0.99)), rng)
    z_sa = _random_logits(rng, (mdp.n_states, mdp.n_actions))
    dual = T.penalized_step(mdp, z_sa)
    sqp = T.penalized_step(mdp, z_sa, method="slsqp", ftol=1e-14)
    assert dual.accepted and dual.converged and sqp.accepted
    assert sqp.gain <= dual.gain * (1 + 1e-9)
    assert sqp.gain >= dual.gain * (1 - 1e-6)
    # KKT: every state whose advantages are not all equal has μ_s > 0, so its KL
    # constraint is active: KL_s = t = D_KL^max for all s (bisection to float resolution).
    np.testing.assert_allclose(T.kl_states_logits(z_sa, dual.logits), dual.kl_max, rtol=1e-8)
    # Local optimality: small random perturbations of the optimum do not raise the objective.
    pi = T.softmax_policy(z_sa)

    def objective(z_new):
        terms = T.bound_terms(mdp, pi, T.softmax_policy(z_new), logits=z_sa, logits_new=z_new)
        return terms.lower_bound - terms.eta_old

    best = objective(dual.logits)
    assert best == pytest.approx(dual.gain, rel=1e-9)
    for _ in range(5):
        assert objective(dual.logits + 1e-3 * rng.normal(size=z_sa.shape)) <= best + 1e-12 * abs(best)


def test_penalized_step__input_checks():
    mdp = _two_state_mdp()
    with pytest.raises(ValueError, match="method"):
        T.penalized_step(mdp, np.zeros((2, 2)), method="newton")
    with pytest.raises(ValueError, match="C must be"):
        T.penalized_step(mdp, np.zeros((2, 2)), C=0.0)
    with pytest.raises(ValueError, match="shape"):
        T.penalized_step(mdp, np.zeros((3, 2)))


def test_bound_sweep__no_violation():
    stats = bound_sweep(n_mdps=10, seed=1)
    assert stats["max_penalty_fraction"] <= 1.0
    assert stats["min_slack_over_scale"] >= -SOLVE_RTOL
    assert stats["max_abs_identity_slack_over_scale"] <= SOLVE_RTOL


if __name__ == "__main__":
    import time

    t0 = time.perf_counter()
    out = bound_sweep(n_mdps=200, seed=0)
    print(f"bound sweep: {out['n_pairs']} pairs in {time.perf_counter() - t0:.1f} s")
    print(f"  smallest slack eta(pi_new) - (L - C KLmax): {out['min_slack']:.3e}")
    print(f"  smallest slack / (max|R|/(1-gamma)):        {out['min_slack_over_scale']:.3e}")
    print(f"  largest (L - eta(pi_new)) / (C KLmax):       {out['max_penalty_fraction']:.4f}  (theorem: <= 1)")
    print(f"  |slack| / scale at pi_new = pi (exactly 0):  {out['max_abs_identity_slack_over_scale']:.1e}")
