r"""Exact quantities of a finite MDP, by linear solves: the theory behind TRPO as a test.

On a finite MDP with known ``P`` and ``R`` every term of the monotonic
improvement bound of Kakade & Langford (2002) and Schulman et al. (2015,
Theorem 1) can be computed exactly, up to the rounding of one dense linear
solve, so the theorem becomes an assertion rather than a plot.

This module is **host-only NumPy float64** on purpose: it is an oracle, the
systems are small (Taxi, the largest, has 501 states with the absorbing one),
and ``numpy.linalg.solve`` / ``scipy.optimize`` are the plainest tools.  It
does not take ``xp`` and never touches a GPU.

============================================================================================  ============================================
equation                                                                                      function
============================================================================================  ============================================
:math:`P_\pi(s'|s) = \sum_a \pi(a|s)P(s'|s,a)`, :math:`r_\pi(s) = \sum_a\pi(a|s)R(s,a)`       :func:`induced_chain`
:math:`\pi(a|s) = \operatorname{softmax}_a z_{sa}`                                            :func:`softmax_policy`
:math:`(I-\gamma P_\pi)V_\pi = r_\pi`, :math:`A_\pi = Q_\pi - V_\pi`                          :func:`policy_evaluation`
:math:`\eta(\pi) = \mu_0^\top V_\pi`                                                          :func:`eta`
:math:`\rho_\pi^\top = \mu_0^\top(I-\gamma P_\pi)^{-1}`, :math:`d_\pi = (1-\gamma)\rho_\pi`   :func:`visitation`
:math:`L_\pi(\tilde\pi) = \eta(\pi) + \sum_s\rho_\pi(s)\sum_a\tilde\pi(a|s)A_\pi(s,a)`        :func:`surrogate_L`
:math:`\partial\eta/\partial z_{sa} = \rho_\pi(s)\pi(a|s)A_\pi(s,a)`                          :func:`policy_gradient`
:math:`\partial L_\pi(\tilde\pi)/\partial\tilde z_{sa}`                                       :func:`surrogate_grad_logits`
:math:`KL(\pi(\cdot|s)\|\tilde\pi(\cdot|s))` per state, from probabilities / logits           :func:`kl_states` / :func:`kl_states_logits`
:math:`D_{KL}^{max}(\pi,\tilde\pi) = \max_s KL(\pi(\cdot|s)\|\tilde\pi(\cdot|s))`             :func:`kl_max` / :func:`kl_max_logits`
:math:`\bar D_{KL}^{d}(\pi,\tilde\pi) = \sum_s d(s)\,KL(\pi(\cdot|s)\|\tilde\pi(\cdot|s))`    :func:`average_kl`
:math:`\epsilon = \max_{s,a}|A_\pi(s,a)|`                                                     :func:`epsilon`
:math:`C = 4\epsilon\gamma/(1-\gamma)^2`                                                      :func:`penalty_C`
:math:`\eta(\tilde\pi) \ge L_\pi(\tilde\pi) - C\,D_{KL}^{max}(\pi,\tilde\pi)`                 :func:`lower_bound`
all terms of the bound and its slack at once                                                  :func:`bound_terms`
:math:`F = \bigoplus_s d(s)\,[\operatorname{diag}(\pi_s) - \pi_s\pi_s^\top]`                  :func:`tabular_fisher`
:math:`(Fv)_s = d(s)\,(\pi_s\odot v_s - \pi_s\,\pi_s^\top v_s)`                               :func:`tabular_fisher_vector_product`
:math:`z_{sa} = W_{sa} + b_a` on one-hot states, :math:`J = [I_{SA} \mid 1_S\otimes I_A]`     :func:`onehot_linear_jacobian`
:math:`\max_{\tilde\pi}\ L_\pi(\tilde\pi) - C\,D_{KL}^{max}(\pi,\tilde\pi)` (exact, via KKT)  :func:`penalized_step`
============================================================================================  ============================================

Conventions: arrays carry shape suffixes, ``s`` a state and ``a`` an action
(``pi_sa[s, a]`` is π(a | s), ``p_sas[s, a, s']`` is P(s' | s, a)); ``kl(p, q)`` is D_KL(p ‖ q).
Rewards may depend on the action, R(s, a); the bound's proof only uses the
advantage identity :math:`\eta(\tilde\pi) = \eta(\pi) + E_{\tilde\pi}\sum_t\gamma^t A_\pi(s_t,a_t)`,
which holds for R(s, a) as for the papers' r(s).

References
----------
S. Kakade and J. Langford, "Approximately optimal approximate reinforcement
learning", ICML 2002 (Lemma 6.1: the advantage identity; Theorem 4.1: the
conservative-policy-iteration bound).
J. Schulman, S. Levine, P. Moritz, M. Jordan and P. Abbeel, "Trust Region
Policy Optimization", ICML 2015: eq. (1) η, eq. (2) the advantage identity,
eq. (3) L_π, Theorem 1 and eq. (9) the KL form of the bound, eq. (12) the
average-KL constraint, Appendix C the Fisher.
S. Kakade, "A natural policy gradient", NIPS 2001 (the tabular softmax Fisher).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from .distributions import Categorical

__all__ = [
    "PROB_ATOL",
    "TabularMDP",
    "random_mdp",
    "from_gymnasium",
    "softmax_policy",
    "induced_chain",
    "PolicyValues",
    "policy_evaluation",
    "eta",
    "visitation",
    "surrogate_L",
    "policy_gradient",
    "surrogate_grad_logits",
    "kl_states",
    "kl_states_logits",
    "kl_max",
    "kl_max_logits",
    "average_kl",
    "epsilon",
    "penalty_C",
    "BoundTerms",
    "bound_terms",
    "lower_bound",
    "tabular_fisher",
    "tabular_fisher_vector_product",
    "onehot_linear_jacobian",
    "PenalizedStepResult",
    "penalized_step",
]

#: Absolute tolerance on "sums to 1" for rows of P, rows of π and μ₀.  A float64
#: sum of n probabilities is off by at most about n·eps (≈ 1e-13 for n = 500);
#: 1e-10 is far above that and far below any real modelling error.
PROB_ATOL = 1e-10


# ------------------------------------------------------------------ the MDP
def _as_f64(x: Any, name: str) -> np.ndarray:
    arr = np.array(x, dtype=np.float64, copy=True)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or inf")
    arr.setflags(write=False)
    return arr


def _check_distribution_rows(x: np.ndarray, name: str) -> None:
    """Entries >= 0 and last-axis sums equal to 1 within :data:`PROB_ATOL`."""
    if np.any(x < 0):
        raise ValueError(f"{name} has negative entries (min {float(x.min())!r})")
    err = float(np.max(np.abs(np.sum(x, axis=-1) - 1.0), initial=0.0))
    if err > PROB_ATOL:
        raise ValueError(f"{name} must sum to 1 along its last axis; largest error {err:.3g} > {PROB_ATOL}")


@dataclass(frozen=True, eq=False)
class TabularMDP:
    r"""A finite discounted MDP :math:`(S, A, P, R, \mu_0, \gamma)`.

    Arrays are copied to read-only float64 on construction and validated
    (shapes, finiteness, P ≥ 0 with rows summing to 1 within :data:`PROB_ATOL`,
    the same for μ₀, 0 ≤ γ < 1); a violation raises ``ValueError``.  Equality
    is identity (``eq=False``): arrays have no single truth value.
    """

    P: np.ndarray
    r"""Transition probabilities :math:`P(s'|s, a)`, shape (S, A, S); each P[s, a] sums to 1."""
    R: np.ndarray
    r"""Expected one-step rewards :math:`R(s,a) = E[r_t | s_t=s, a_t=a]`, shape (S, A)."""
    mu0: np.ndarray
    """Initial state distribution μ₀, shape (S,)."""
    gamma: float
    """Discount γ in [0, 1) (γ = 1 would make I − γP_π singular)."""

    def __post_init__(self):
        p_sas = _as_f64(self.P, "P")
        if p_sas.ndim != 3 or p_sas.shape[0] != p_sas.shape[2] or min(p_sas.shape) < 1:
            raise ValueError(f"P must have shape (S, A, S) with S, A >= 1, got {p_sas.shape}")
        n_s, n_a = p_sas.shape[:2]
        _check_distribution_rows(p_sas, "P")
        r_sa = _as_f64(self.R, "R")
        if r_sa.shape != (n_s, n_a):
            raise ValueError(f"R must have shape ({n_s}, {n_a}) to match P, got {r_sa.shape}")
        mu0_s = _as_f64(self.mu0, "mu0")
        if mu0_s.shape != (n_s,):
            raise ValueError(f"mu0 must have shape ({n_s},) to match P, got {mu0_s.shape}")
        _check_distribution_rows(mu0_s, "mu0")
        gamma = float(self.gamma)
        if not 0.0 <= gamma < 1.0:
            raise ValueError(f"gamma must lie in [0, 1), got {self.gamma!r}")
        object.__setattr__(self, "P", p_sas)
        object.__setattr__(self, "R", r_sa)
        object.__setattr__(self, "mu0", mu0_s)
        object.__setattr__(self, "gamma", gamma)

    @property
    def n_states(self) -> int:
        """S."""
        return self.P.shape[0]

    @property
    def n_actions(self) -> int:
        """A."""
        return self.P.shape[1]


def random_mdp(n_states: int, n_actions: int, gamma: float, rng=None, *,
               concentration: float = 1.0) -> TabularMDP:
    r"""A random dense MDP drawn on the host.

    .. math::
        P(\cdot|s,a) \sim \mathrm{Dirichlet}(c\,\mathbf 1_S),\quad
        R(s,a) \sim U[-1, 1],\quad \mu_0 \sim \mathrm{Dirichlet}(\mathbf 1_S)

    Parameters
    ----------
    n_states, n_actions : int
        S >= 1, A >= 1.
    gamma : float
        Discount in [0, 1).
    rng : int, numpy.random.Generator or None
        Seed or generator; the same seed gives the same MDP.
    concentration : float
        Dirichlet parameter c > 0 of the transition rows: c < 1 gives nearly
        deterministic transitions, c > 1 nearly uniform ones.

    Returns
    -------
    TabularMDP
        P (S, A, S), R (S, A), μ₀ (S,).
    """
    if int(n_states) < 1 or int(n_actions) < 1:
        raise ValueError(f"need n_states >= 1 and n_actions >= 1, got {n_states}, {n_actions}")
    if not concentration > 0:
        raise ValueError(f"concentration must be > 0, got {concentration!r}")
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    n_s, n_a = int(n_states), int(n_actions)
    p_sas = gen.dirichlet(np.full(n_s, float(concentration)), size=(n_s, n_a))
    r_sa = gen.uniform(-1.0, 1.0, size=(n_s, n_a))
    mu0_s = gen.dirichlet(np.ones(n_s))
    return TabularMDP(p_sas, r_sa, mu0_s, gamma)


def from_gymnasium(env, gamma: float, mu0="auto", **make_kwargs) -> TabularMDP:
    r"""The exact MDP of a Gymnasium toy-text environment, from ``env.unwrapped.P``.

    ``P`` is the toy-text dict ``{s: {a: [(prob, next_s, reward, terminated), ...]}}``
    (FrozenLake-v1, CliffWalking-v1, Taxi-v4 in Gymnasium 1.4, where
    CliffWalking-v0 and Taxi-v3 are deprecated and refuse to build).  The result
    has ``S = observation_space.n + 1`` states:

    * every transition listed with ``terminated=True`` goes to one extra
      **absorbing state**, index ``S − 1``, which loops to itself under every
      action with reward 0 — so the discounted return of the MDP equals the
      episode's discounted return, and the absorbing state's value is 0;
    * :math:`R(s,a) = \sum_k \text{prob}_k\,\text{reward}_k` over the listed
      transitions (duplicates of the same next state add up);
    * time limits (``TimeLimit`` truncation) are not part of ``P`` and are
      ignored: this is the infinite-horizon discounted MDP.

    Parameters
    ----------
    env : str or gymnasium.Env
        An id for ``gymnasium.make`` (the env is made and closed here) or an env.
    gamma : float
        Discount in [0, 1).
    mu0 : "auto" or array (observation_space.n,)
        Initial distribution over the env's states.  ``"auto"`` uses
        ``env.unwrapped.initial_state_distrib`` (all three envs above have it;
        FrozenLake and CliffWalking put mass 1 on the start cell, Taxi is
        uniform over its 300 legal start states), else the older attribute
        ``isd``, else — with a ``UserWarning``, since reset may sample a subset
        — the uniform distribution over all the env's states.  The absorbing
        state gets mass 0.
    **make_kwargs
        Passed to ``gymnasium.make`` when ``env`` is an id (``map_name``,
        ``is_slippery``, ``is_rainy``, ...).

    Returns
    -------
    TabularMDP
        With ``S = observation_space.n + 1`` states.

    Raises
    ------
    ValueError
        If the env has no ``P`` table, or its step does things ``P`` does not
        describe (Taxi's ``fickle_passenger=True``).
    """
    import gymnasium as gym

    owned = isinstance(env, str)
    if owned:
        env = gym.make(env, **make_kwargs)
    elif make_kwargs:
        raise ValueError("make_kwargs are only used when env is an id string")
    try:
        uenv = env.unwrapped
        table = getattr(uenv, "P", None)
        if not isinstance(table, dict):
            raise ValueError(f"{uenv!r} has no toy-text transition table env.unwrapped.P")
        if getattr(uenv, "fickle_passenger", False):
            raise ValueError("Taxi with fickle_passenger=True changes the destination inside step(); "
                             "its P table does not describe the dynamics")
        n_env = int(uenv.observation_space.n)
        n_a = int(uenv.action_space.n)
        if isinstance(mu0, str):
            if mu0 != "auto":
                raise ValueError(f"mu0 must be 'auto' or an array, got {mu0!r}")
            isd = getattr(uenv, "initial_state_distrib", None)
            if isd is None:
                isd = getattr(uenv, "isd", None)
            if isd is None:
                warnings.warn(f"{type(uenv).__name__} exposes no initial_state_distrib/isd; "
                              "using the uniform distribution over all its states as mu0", stacklevel=2)
                isd = np.full(n_env, 1.0 / n_env)
        else:
            isd = mu0
        isd = np.asarray(isd, dtype=np.float64)
        if isd.shape != (n_env,):
            raise ValueError(f"mu0 must have shape ({n_env},), got {isd.shape}")
    finally:
        if owned:
            env.close()

    n_s = n_env + 1
    absorbing = n_env
    p_sas = np.zeros((n_s, n_a, n_s))
    r_sa = np.zeros((n_s, n_a))
    for s in range(n_env):
        for a in range(n_a):
            for prob, s_next, reward, terminated in table[s][a]:
                p_sas[s, a, absorbing if terminated else int(s_next)] += prob
                r_sa[s, a] += prob * reward  # R(s,a) = Σ prob · reward
    p_sas[absorbing, :, absorbing] = 1.0  # absorbing, reward 0
    mu0_s = np.concatenate([isd, [0.0]])
    return TabularMDP(p_sas, r_sa, mu0_s, gamma)


# ------------------------------------------------------- policies and values
def softmax_policy(logits_sa) -> np.ndarray:
    r"""Tabular softmax policy, shape (S, A).

    .. math:: \pi(a|s) = \frac{e^{z_{sa}}}{\sum_b e^{z_{sb}}}

    Computed as ``exp(log_softmax(z))`` with the max subtracted per state, so
    any finite logits give finite probabilities summing to 1.

    Parameters
    ----------
    logits_sa : array (S, A)
        Finite logits z.

    Returns
    -------
    pi_sa : numpy.ndarray (S, A)
    """
    z_sa = _check_logits(logits_sa)
    return np.exp(Categorical.log_softmax(z_sa))


def _check_logits(logits_sa, shape=None) -> np.ndarray:
    z_sa = np.asarray(logits_sa, dtype=np.float64)
    if z_sa.ndim != 2 or min(z_sa.shape) < 1:
        raise ValueError(f"logits must have shape (S, A), got {z_sa.shape}")
    if shape is not None and z_sa.shape != shape:
        raise ValueError(f"logits must have shape {shape}, got {z_sa.shape}")
    if not np.all(np.isfinite(z_sa)):
        raise ValueError("logits contain NaN or inf")
    return z_sa


def _check_policy(mdp: TabularMDP | None, pi_sa, name: str = "pi", shape=None) -> np.ndarray:
    pi_sa = np.asarray(pi_sa, dtype=np.float64)
    if mdp is not None:
        shape = (mdp.n_states, mdp.n_actions)
    if pi_sa.ndim != 2 or (shape is not None and pi_sa.shape != shape):
        raise ValueError(f"{name} must have shape {shape or '(S, A)'}, got {pi_sa.shape}")
    if not np.all(np.isfinite(pi_sa)):
        raise ValueError(f"{name} contains NaN or inf")
    _check_distribution_rows(pi_sa, name)
    return pi_sa


def induced_chain(mdp: TabularMDP, pi_sa) -> tuple[np.ndarray, np.ndarray]:
    r"""The Markov chain and reward a policy induces: ``(P_pi_ss, r_pi_s)``.

    .. math:: P_\pi(s'|s) = \sum_a \pi(a|s)P(s'|s,a),\qquad r_\pi(s) = \sum_a \pi(a|s)R(s,a)

    Parameters
    ----------
    mdp : TabularMDP
    pi_sa : array (S, A)
        π as probabilities (rows sum to 1).

    Returns
    -------
    p_pi_ss : numpy.ndarray (S, S)
    r_pi_s : numpy.ndarray (S,)
    """
    pi_sa = _check_policy(mdp, pi_sa)
    p_pi_ss = np.einsum("sa,sat->st", pi_sa, mdp.P)
    r_pi_s = np.sum(pi_sa * mdp.R, axis=1)
    return p_pi_ss, r_pi_s


class PolicyValues(NamedTuple):
    """State values, action values and advantages of one policy."""

    v_s: np.ndarray
    """V_π, shape (S,)."""
    q_sa: np.ndarray
    """Q_π, shape (S, A)."""
    adv_sa: np.ndarray
    """A_π = Q_π − V_π, shape (S, A); Σ_a π(a|s) A_π(s, a) = 0 in exact arithmetic."""


def policy_evaluation(mdp: TabularMDP, pi_sa) -> PolicyValues:
    r"""Exact :math:`V_\pi, Q_\pi, A_\pi` by one dense linear solve.

    .. math::
        (I - \gamma P_\pi)\,V_\pi = r_\pi,\qquad
        Q_\pi(s,a) = R(s,a) + \gamma\sum_{s'}P(s'|s,a)V_\pi(s'),\qquad
        A_\pi = Q_\pi - V_\pi

    Parameters
    ----------
    mdp : TabularMDP
    pi_sa : array (S, A)
        π as probabilities (rows sum to 1).

    Returns
    -------
    PolicyValues
        ``v_s`` (S,), ``q_sa`` (S, A), ``adv_sa`` (S, A).

    Notes
    -----
    :math:`I - \gamma P_\pi` is strictly diagonally dominant by rows (margin
    1 − γ) and its ∞-norm condition number is at most (1 + γ)/(1 − γ), so the
    LU solve is backward stable and V is accurate to about
    (1 + γ)/(1 − γ) · eps relative to ‖r‖_∞/(1 − γ).

    References
    ----------
    Schulman et al. (2015), §2: definitions of V_π, Q_π, A_π.
    """
    p_pi_ss, r_pi_s = induced_chain(mdp, pi_sa)
    n_s = mdp.n_states
    v_s = np.linalg.solve(np.eye(n_s) - mdp.gamma * p_pi_ss, r_pi_s)  # (I − γ P_π) V = r_π
    q_sa = mdp.R + mdp.gamma * (mdp.P @ v_s)  # Q = R + γ P V
    return PolicyValues(v_s, q_sa, q_sa - v_s[:, None])


def eta(mdp: TabularMDP, pi_sa) -> float:
    r"""Expected discounted return :math:`\eta(\pi) = E_{s_0\sim\mu_0}[V_\pi(s_0)] = \mu_0^\top V_\pi`.

    .. math:: \eta(\pi) = E_{s_0\sim\mu_0}\big[V_\pi(s_0)\big] = \mu_0^\top V_\pi

    Parameters
    ----------
    mdp : TabularMDP
    pi_sa : array (S, A)
        π as probabilities (rows sum to 1).

    Returns
    -------
    float

    References
    ----------
    Schulman et al. (2015), eq. (1).
    """
    return float(mdp.mu0 @ policy_evaluation(mdp, pi_sa).v_s)


def visitation(mdp: TabularMDP, pi_sa, normalize: bool = False) -> np.ndarray:
    r"""Discounted state visitation, shape (S,).

    .. math::
        \rho_\pi(s) = \sum_{t\ge 0}\gamma^t\Pr(s_t = s),\qquad
        \rho_\pi^\top = \mu_0^\top (I - \gamma P_\pi)^{-1}
        \ \Longleftrightarrow\ (I - \gamma P_\pi)^\top\rho_\pi = \mu_0

    ``normalize=False`` (default) gives the paper's unnormalised ρ_π, which
    sums to 1/(1 − γ); ``normalize=True`` gives the state distribution
    :math:`d_\pi = (1-\gamma)\rho_\pi` (sums to 1).

    Parameters
    ----------
    mdp : TabularMDP
    pi_sa : array (S, A)
        π as probabilities (rows sum to 1).
    normalize : bool
        Return d_π = (1 − γ)ρ_π instead of ρ_π.

    Returns
    -------
    rho_s : numpy.ndarray (S,)

    References
    ----------
    Schulman et al. (2015), §2, the definition of ρ_π below eq. (2).
    """
    p_pi_ss, _ = induced_chain(mdp, pi_sa)
    rho_s = np.linalg.solve((np.eye(mdp.n_states) - mdp.gamma * p_pi_ss).T, mdp.mu0)
    return (1.0 - mdp.gamma) * rho_s if normalize else rho_s


def surrogate_L(mdp: TabularMDP, pi_sa, pi_new_sa) -> float:
    r"""The local approximation to η around π, evaluated at π̃.

    .. math:: L_\pi(\tilde\pi) = \eta(\pi) + \sum_s \rho_\pi(s)\sum_a\tilde\pi(a|s)A_\pi(s,a)

    :math:`L_\pi(\pi) = \eta(\pi)` since :math:`\sum_a\pi(a|s)A_\pi(s,a) = 0`,
    and :math:`\nabla L_\pi = \nabla\eta` at π (see :func:`policy_gradient`).

    Parameters
    ----------
    mdp : TabularMDP
    pi_sa : array (S, A)
        π as probabilities (rows sum to 1).
    pi_new_sa : array (S, A)
        π̃ as probabilities.

    Returns
    -------
    float

    References
    ----------
    Schulman et al. (2015), eq. (3); Kakade & Langford (2002), §4.
    """
    pi_new_sa = _check_policy(mdp, pi_new_sa, "pi_new")
    vals = policy_evaluation(mdp, pi_sa)
    rho_s = visitation(mdp, pi_sa)
    return float(mdp.mu0 @ vals.v_s) + float(rho_s @ np.sum(pi_new_sa * vals.adv_sa, axis=1))


def policy_gradient(mdp: TabularMDP, logits_sa) -> np.ndarray:
    r"""Exact gradient of η with respect to tabular softmax logits, shape (S, A).

    .. math:: \frac{\partial\eta(\pi_z)}{\partial z_{sa}} = \rho_\pi(s)\,\pi(a|s)\,A_\pi(s,a)

    (policy gradient theorem, with :math:`\partial\log\pi(b|s)/\partial z_{sa} = [a=b] - \pi(a|s)`
    and :math:`\sum_b\pi(b|s)A_\pi(s,b) = 0`).

    Parameters
    ----------
    mdp : TabularMDP
    logits_sa : array (S, A)
        Logits z of π.

    Returns
    -------
    grad_sa : numpy.ndarray (S, A)

    References
    ----------
    Sutton et al., "Policy gradient methods for reinforcement learning with
    function approximation", NIPS 2000, Theorem 1; Agarwal et al., "On the
    theory of policy gradient methods", JMLR 2021, Lemma C.1 (softmax form).
    """
    z_sa = _check_logits(logits_sa, (mdp.n_states, mdp.n_actions))
    pi_sa = softmax_policy(z_sa)
    rho_s = visitation(mdp, pi_sa)
    return rho_s[:, None] * pi_sa * policy_evaluation(mdp, pi_sa).adv_sa


def surrogate_grad_logits(mdp: TabularMDP, pi_sa, logits_new_sa) -> np.ndarray:
    r"""Gradient of :math:`L_\pi(\pi_{\tilde z})` in the new logits z̃, shape (S, A).

    .. math::
        \frac{\partial L_\pi}{\partial\tilde z_{sa}}
        = \rho_\pi(s)\,\tilde\pi(a|s)\Big(A_\pi(s,a) - \sum_b\tilde\pi(b|s)A_\pi(s,b)\Big)

    (softmax Jacobian :math:`\operatorname{diag}(\tilde\pi_s) - \tilde\pi_s\tilde\pi_s^\top`
    applied to :math:`\rho_\pi(s)A_\pi(s,\cdot)`).  At z̃ = z it equals
    :func:`policy_gradient`.

    Parameters
    ----------
    mdp : TabularMDP
    pi_sa : array (S, A)
        π as probabilities (rows sum to 1).
    logits_new_sa : array (S, A)
        Logits z̃ of π̃.

    Returns
    -------
    grad_sa : numpy.ndarray (S, A)
    """
    z_new_sa = _check_logits(logits_new_sa, (mdp.n_states, mdp.n_actions))
    rho_s = visitation(mdp, pi_sa)
    adv_sa = policy_evaluation(mdp, pi_sa).adv_sa
    return _surrogate_grad(rho_s, adv_sa, softmax_policy(z_new_sa))


def _surrogate_grad(rho_s, adv_sa, pi_new_sa):
    # (diag π̃_s − π̃_s π̃_sᵀ)(ρ_s A_s): the softmax Jacobian times ∂L/∂π̃.
    return Categorical.fisher_product_probs(pi_new_sa, rho_s[:, None] * adv_sa)


# ------------------------------------------------------------------------ KL
def kl_states(pi_sa, pi_new_sa) -> np.ndarray:
    r"""Per-state :math:`KL(\pi(\cdot|s)\,\|\,\tilde\pi(\cdot|s))` from probabilities, shape (S,).

    .. math:: KL_s = \sum_{a:\ \pi(a|s)>0}\pi(a|s)\,\big(\log\pi(a|s) - \log\tilde\pi(a|s)\big)

    Parameters
    ----------
    pi_sa : array (S, A)
        π as probabilities (rows sum to 1).
    pi_new_sa : array (S, A)
        π̃ as probabilities.

    Returns
    -------
    kl_s : numpy.ndarray (S,)

    Notes
    -----
    Terms with π(a|s) = 0 are 0 (the limit p log p → 0), whatever π̃ is; a
    term with π(a|s) > 0 and π̃(a|s) = 0 makes KL_s = +inf.  Prefer
    :func:`kl_states_logits` when logits are at hand: log-softmax keeps
    log π̃ exact where π̃ underflows.
    """
    pi_sa = _check_policy(None, pi_sa)
    pi_new_sa = _check_policy(None, pi_new_sa, "pi_new", shape=pi_sa.shape)
    support = pi_sa > 0
    with np.errstate(divide="ignore"):
        log_ratio = np.log(np.where(support, pi_sa, 1.0)) - np.log(pi_new_sa)
    terms = np.where(support, pi_sa * np.where(support, log_ratio, 0.0), 0.0)
    return np.sum(terms, axis=1)


def kl_states_logits(logits_sa, logits_new_sa) -> np.ndarray:
    r"""Per-state :math:`KL(\pi_z(\cdot|s)\,\|\,\pi_{\tilde z}(\cdot|s))` from logits by log-softmax, shape (S,).

    .. math:: KL_s = \sum_a \pi(a|s)\,\big(\log\operatorname{softmax}(z_s)_a - \log\operatorname{softmax}(\tilde z_s)_a\big)

    Parameters
    ----------
    logits_sa : array (S, A)
        Logits z of π.
    logits_new_sa : array (S, A)
        Logits z̃ of π̃.

    Returns
    -------
    kl_s : numpy.ndarray (S,)
    """
    z_sa = _check_logits(logits_sa)
    z_new_sa = _check_logits(logits_new_sa, z_sa.shape)
    return Categorical.kl(z_sa, z_new_sa)


def kl_max(pi_sa, pi_new_sa) -> float:
    r""":math:`D_{KL}^{max}(\pi,\tilde\pi) = \max_s KL(\pi(\cdot|s)\,\|\,\tilde\pi(\cdot|s))` from probabilities.

    .. math:: D_{KL}^{max}(\pi,\tilde\pi) = \max_s KL\big(\pi(\cdot|s)\,\|\,\tilde\pi(\cdot|s)\big)

    Parameters
    ----------
    pi_sa : array (S, A)
        π as probabilities (rows sum to 1).
    pi_new_sa : array (S, A)
        π̃ as probabilities.

    Returns
    -------
    float
        +inf when π̃ puts zero mass where π does not (see :func:`kl_states`).

    References
    ----------
    Schulman et al. (2015), the definition above eq. (9).
    """
    return float(np.max(kl_states(pi_sa, pi_new_sa)))


def kl_max_logits(logits_sa, logits_new_sa) -> float:
    r""":math:`D_{KL}^{max}` from logits (log-softmax stable); see :func:`kl_max`.

    .. math:: D_{KL}^{max}(\pi_z,\pi_{\tilde z}) = \max_s KL\big(\pi_z(\cdot|s)\,\|\,\pi_{\tilde z}(\cdot|s)\big)

    Parameters
    ----------
    logits_sa : array (S, A)
        Logits z of π.
    logits_new_sa : array (S, A)
        Logits z̃ of π̃.

    Returns
    -------
    float

    References
    ----------
    Schulman et al. (2015), the definition above eq. (9).
    """
    return float(np.max(kl_states_logits(logits_sa, logits_new_sa)))


def average_kl(logits_sa, logits_new_sa, d_s) -> float:
    r"""State-weighted mean KL, the quantity TRPO constrains.

    .. math:: \bar D_{KL}^{d}(\pi,\tilde\pi) = \sum_s d(s)\,KL(\pi_z(\cdot|s)\,\|\,\pi_{\tilde z}(\cdot|s))

    ``d_s`` is a distribution over states (e.g. ``visitation(..., normalize=True)``).

    Parameters
    ----------
    logits_sa : array (S, A)
        Logits z of π.
    logits_new_sa : array (S, A)
        Logits z̃ of π̃.
    d_s : array (S,)
        State distribution d (sums to 1).

    Returns
    -------
    float

    References
    ----------
    Schulman et al. (2015), eq. (12) (with d = ρ_π normalised).
    """
    d_s = _check_state_dist(d_s, np.shape(logits_sa)[0])
    return float(d_s @ kl_states_logits(logits_sa, logits_new_sa))


def _check_state_dist(d_s, n_s: int) -> np.ndarray:
    d_s = np.asarray(d_s, dtype=np.float64)
    if d_s.shape != (n_s,):
        raise ValueError(f"d must have shape ({n_s},), got {d_s.shape}")
    if not np.all(np.isfinite(d_s)):
        raise ValueError("d contains NaN or inf")
    _check_distribution_rows(d_s, "d")
    return d_s


# --------------------------------------------------------------------- bound
def epsilon(mdp: TabularMDP, pi_sa) -> float:
    r""":math:`\epsilon = \max_{s,a}|A_\pi(s,a)|`.

    .. math:: \epsilon = \max_{s,a}|A_\pi(s,a)|

    Parameters
    ----------
    mdp : TabularMDP
    pi_sa : array (S, A)
        π as probabilities (rows sum to 1).

    Returns
    -------
    float

    References
    ----------
    Schulman et al. (2015), Theorem 1.
    """
    return float(np.max(np.abs(policy_evaluation(mdp, pi_sa).adv_sa)))


def penalty_C(mdp: TabularMDP, pi_sa) -> float:
    r"""The penalty coefficient of Theorem 1.

    .. math:: C = \frac{4\epsilon\gamma}{(1-\gamma)^2}

    Parameters
    ----------
    mdp : TabularMDP
    pi_sa : array (S, A)
        π as probabilities (rows sum to 1).

    Returns
    -------
    float

    References
    ----------
    Schulman et al. (2015), Theorem 1 and eq. (9).
    """
    return 4.0 * epsilon(mdp, pi_sa) * mdp.gamma / (1.0 - mdp.gamma) ** 2


class BoundTerms(NamedTuple):
    r"""Every term of :math:`\eta(\tilde\pi) \ge L_\pi(\tilde\pi) - C D_{KL}^{max}(\pi,\tilde\pi)`."""

    eta_old: float
    """η(π)."""
    eta_new: float
    """η(π̃), exact."""
    surrogate: float
    """L_π(π̃)."""
    C: float
    """4εγ/(1 − γ)²."""
    kl_max: float
    r""":math:`\max_s KL(\pi(\cdot|s) \,\|\, \tilde\pi(\cdot|s))`."""
    lower_bound: float
    """L_π(π̃) − C · kl_max."""
    slack: float
    """η(π̃) − lower_bound; Theorem 1 says ≥ 0."""
    scale: float
    r""":math:`\max_{s,a}|R(s,a)| / (1 - \gamma)`, a bound on every :math:`|V|`: the size rounding errors are relative to."""


def bound_terms(mdp: TabularMDP, pi_sa, pi_new_sa, *, logits=None, logits_new=None) -> BoundTerms:
    r"""All terms of the monotonic improvement bound for one pair (π, π̃).

    .. math::
        \eta(\tilde\pi) \ge L_\pi(\tilde\pi) - C\,D_{KL}^{max}(\pi,\tilde\pi),\qquad
        C = \frac{4\epsilon\gamma}{(1-\gamma)^2},\quad \epsilon = \max_{s,a}|A_\pi(s,a)|

    Parameters
    ----------
    mdp : TabularMDP
    pi_sa, pi_new_sa : array (S, A)
        π and π̃ as probabilities.
    logits, logits_new : array (S, A), optional
        When both are given, D_KL^max is computed from them by log-softmax
        (they must be the logits of ``pi_sa`` and ``pi_new_sa``).

    Returns
    -------
    BoundTerms

    Notes
    -----
    One evaluation of π (V, Q, A, ρ) serves η(π), L, ε and C; one more gives
    η(π̃).  The slack is formed as η(π̃) − L + C·KL, with error about
    (1 + γ)/(1 − γ) · eps · ``scale`` from the solves.

    References
    ----------
    Schulman et al. (2015), Theorem 1, eq. (9); Kakade & Langford (2002),
    Theorem 4.1 (the mixture-policy version it generalises).
    """
    if (logits is None) != (logits_new is None):
        raise ValueError("pass both logits and logits_new, or neither")
    pi_new_sa = _check_policy(mdp, pi_new_sa, "pi_new")
    vals = policy_evaluation(mdp, pi_sa)
    rho_s = visitation(mdp, pi_sa)
    eta_old = float(mdp.mu0 @ vals.v_s)
    surr = eta_old + float(rho_s @ np.sum(pi_new_sa * vals.adv_sa, axis=1))  # eq. (3)
    c_pen = 4.0 * float(np.max(np.abs(vals.adv_sa))) * mdp.gamma / (1.0 - mdp.gamma) ** 2
    if logits is not None:
        kmax = kl_max_logits(logits, logits_new)
    else:
        kmax = kl_max(pi_sa, pi_new_sa)
    eta_new = eta(mdp, pi_new_sa)
    lb = surr - (c_pen * kmax if c_pen > 0 else 0.0)  # C = 0 (no advantage) with KL = inf: no penalty
    scale = float(np.max(np.abs(mdp.R))) / (1.0 - mdp.gamma)
    return BoundTerms(eta_old, eta_new, surr, c_pen, kmax, lb, eta_new - lb, scale)


def lower_bound(mdp: TabularMDP, pi_sa, pi_new_sa) -> float:
    r"""The minorant :math:`B_\pi(\tilde\pi) = L_\pi(\tilde\pi) - C\,D_{KL}^{max}(\pi,\tilde\pi)`.

    .. math:: B_\pi(\tilde\pi) = L_\pi(\tilde\pi) - C\,D_{KL}^{max}(\pi,\tilde\pi)

    Theorem 1: :math:`\eta(\tilde\pi) \ge B_\pi(\tilde\pi)`, with equality at π̃ = π.
    See :func:`bound_terms` for every term at once.

    Parameters
    ----------
    mdp : TabularMDP
    pi_sa : array (S, A)
        π as probabilities (rows sum to 1).
    pi_new_sa : array (S, A)
        π̃ as probabilities.

    Returns
    -------
    float

    References
    ----------
    Schulman et al. (2015), Theorem 1, eq. (9).
    """
    return bound_terms(mdp, pi_sa, pi_new_sa).lower_bound


# -------------------------------------------------------------------- Fisher
def tabular_fisher(pi_sa, d_s) -> np.ndarray:
    r"""Dense Fisher of a tabular softmax policy in its logits, shape (S·A, S·A).

    .. math::
        F = \bigoplus_s d(s)\big[\operatorname{diag}(\pi_s) - \pi_s\pi_s^\top\big]
          = \nabla^2_{\tilde z}\,\bar D_{KL}^{d}(\pi_z,\pi_{\tilde z})\Big|_{\tilde z = z}

    Block diagonal; the flat index of (s, a) is ``s * A + a`` (row-major z).
    It is the Hessian of :func:`average_kl` at z̃ = z because
    :math:`\partial KL(p\|\operatorname{softmax}\tilde z)/\partial\tilde z = \tilde p - p`,
    whose Jacobian in z̃ is the softmax Jacobian diag(p̃) − p̃p̃ᵀ; it is also the
    score-function Fisher :math:`\sum_s d(s)\sum_a\pi(a|s)\nabla\log\pi\nabla\log\pi^\top`.
    Each block has the null vector 1_A (adding a constant to a state's logits
    does not change π), so F is singular.

    Parameters
    ----------
    pi_sa : array (S, A)
        π at which F is taken.
    d_s : array (S,)
        State distribution of the average KL (sums to 1).

    Returns
    -------
    fisher : numpy.ndarray (S·A, S·A)

    References
    ----------
    Kakade (2001), §3; Schulman et al. (2015), Appendix C.
    """
    pi_sa = _check_policy(None, pi_sa)
    n_s, n_a = pi_sa.shape
    d_s = _check_state_dist(d_s, n_s)
    blocks_saa = d_s[:, None, None] * (np.einsum("sa,ab->sab", pi_sa, np.eye(n_a))
                                       - pi_sa[:, :, None] * pi_sa[:, None, :])
    fisher = np.zeros((n_s * n_a, n_s * n_a))
    for s in range(n_s):
        fisher[s * n_a:(s + 1) * n_a, s * n_a:(s + 1) * n_a] = blocks_saa[s]
    return fisher


def tabular_fisher_vector_product(pi_sa, d_s, v_sa) -> np.ndarray:
    r""":math:`F v` for :func:`tabular_fisher` without forming F, shape (S, A).

    .. math:: (Fv)_s = d(s)\,\big(\pi_s\odot v_s - \pi_s(\pi_s^\top v_s)\big)

    Parameters
    ----------
    pi_sa : array (S, A)
        π as probabilities (rows sum to 1).
    d_s : array (S,)
        State distribution (sums to 1).
    v_sa : array (S, A)
        v in the logits' layout.

    Returns
    -------
    fv_sa : numpy.ndarray (S, A)
    """
    pi_sa = _check_policy(None, pi_sa)
    d_s = _check_state_dist(d_s, pi_sa.shape[0])
    v_sa = np.asarray(v_sa, dtype=np.float64)
    if v_sa.shape != pi_sa.shape:
        raise ValueError(f"v must have shape {pi_sa.shape}, got {v_sa.shape}")
    return d_s[:, None] * Categorical.fisher_product_probs(pi_sa, v_sa)


def onehot_linear_jacobian(n_states: int, n_actions: int) -> np.ndarray:
    r"""Jacobian from a linear policy's θ = (W, b) to the logits table, shape (S·A, S·A + A).

    A :class:`~trpo_ref.policy.CategoricalMLPPolicy` with ``hidden_sizes=()``
    computes logits ``s @ W0 + b0``; on the one-hot observation of state s
    that is :math:`z_{sa} = W_{sa} + b_a`.  With θ laid out as
    ``[W0 (S, A) row-major, b0 (A,)]`` and z flattened row-major,

    .. math:: J = \frac{\partial z}{\partial\theta} = \big[\,I_{SA}\ \big|\ \mathbf 1_S\otimes I_A\,\big]

    so the policy's Fisher over (W, b) is :math:`J^\top F J` with F from
    :func:`tabular_fisher` (the chain rule for the Gauss–Newton form
    :math:`\sum_n J_n^\top M_n J_n`): the W block is F itself, the b block is
    :math:`\sum_s F_{ss}`, and the W–b block stacks the F_ss.

    Parameters
    ----------
    n_states, n_actions : int
        S and A.

    Returns
    -------
    jac : numpy.ndarray (S·A, S·A + A)
    """
    n_s, n_a = int(n_states), int(n_actions)
    return np.hstack([np.eye(n_s * n_a), np.tile(np.eye(n_a), (n_s, 1))])


# ------------------------------------------------------------ penalised step
class PenalizedStepResult(NamedTuple):
    """Outcome of :func:`penalized_step`."""

    logits: np.ndarray
    """New logits z̃ (S, A); exactly the input logits when ``accepted`` is False."""
    accepted: bool
    """False when the solver's point did not raise the exact penalised objective above its value at z."""
    gain: float
    r"""Exact :math:`B_\pi(\tilde\pi) - \eta(\pi) = \sum_s\rho_\pi(s)\sum_a\tilde\pi A_\pi - C D_{KL}^{max}`
    at the returned logits (0 if not accepted)."""
    kl_max: float
    """D_KL^max(π, π̃) at the returned logits."""
    C: float
    """The penalty coefficient used."""
    n_iter: int
    """Outer iterations: root-finder function calls ("dual") or SLSQP iterations ("slsqp")."""
    converged: bool
    """The solver's own success flag."""
    message: str
    """The solver's message."""


def _kl_ball_argmax(logp_sa, g_sa, t: float, n_bisect: int = 80):
    r"""Per state, :math:`\arg\max_q \langle g_s, q\rangle` s.t. :math:`KL(\pi_s\|q) \le t`.

    Stationarity of :math:`\langle g,q\rangle - \mu(KL(\pi\|q) - t) - \nu(\mathbf 1^\top q - 1)`
    gives :math:`q_a = \mu\pi_a/(\nu - g_a)` with :math:`\nu > \max_a g_a` and
    :math:`\mu = 1/\sum_a \pi_a/(\nu - g_a)`.  KL(π‖q) falls monotonically from +inf
    to 0 as ν grows, so ν is found by bisection on x = log((ν − max g)/spread),
    x ∈ [−200, 200], ``n_bisect`` halvings (80 reach float64 resolution), keeping
    the feasible side.  log q is formed as log-softmax(log π − log(ν − g)).

    Returns ``(logq_sa, mu_s)``.  States with constant g_s (nothing to gain) keep
    q = π and μ = 0.
    """
    g_max_s1 = np.max(g_sa, axis=1, keepdims=True)
    spread_s1 = g_max_s1 - np.min(g_sa, axis=1, keepdims=True)
    active_s1 = spread_s1 > 0
    spread_s1 = np.where(active_s1, spread_s1, 1.0)
    base_sa = (g_max_s1 - g_sa) / spread_s1  # (ν − g)/spread = base + e^x

    def logq_at(x_s1):
        return Categorical.log_softmax(logp_sa - np.log(base_sa + np.exp(x_s1)))

    p_sa = np.exp(logp_sa)
    lo_s1 = np.full_like(g_max_s1, -200.0)
    hi_s1 = np.full_like(g_max_s1, 200.0)
    for _ in range(n_bisect):
        mid_s1 = 0.5 * (lo_s1 + hi_s1)
        too_far_s1 = np.sum(p_sa * (logp_sa - logq_at(mid_s1)), axis=1, keepdims=True) > t
        lo_s1 = np.where(too_far_s1, mid_s1, lo_s1)
        hi_s1 = np.where(too_far_s1, hi_s1, mid_s1)
    logq_sa = np.where(active_s1, logq_at(hi_s1), logp_sa)
    mu_s1 = spread_s1 / np.sum(p_sa / (base_sa + np.exp(hi_s1)), axis=1, keepdims=True)  # μ = 1/Σ π/(ν−g)
    return logq_sa, np.where(active_s1, mu_s1, 0.0)[:, 0]


def penalized_step(mdp: TabularMDP, logits_sa, C: float | None = None, *, method: str = "dual",
                   max_iter: int = 500, ftol: float = 1e-12) -> PenalizedStepResult:
    r"""Maximise the minorant of Theorem 1 over tabular softmax policies.

    .. math::
        \tilde\pi^\star = \arg\max_{\tilde\pi}\ \sum_s\rho_\pi(s)\sum_a\tilde\pi(a|s)A_\pi(s,a)
                         - C\max_s KL(\pi(\cdot|s)\,\|\,\tilde\pi(\cdot|s))

    (that is, :math:`L_\pi(\tilde\pi) - C D_{KL}^{max}` minus the constant
    η(π)), in epigraph form

    .. math::
        \max_{\tilde\pi, t}\ \sum_s\langle g_s, \tilde\pi_s\rangle - C\,t
        \quad\text{s.t.}\quad KL(\pi_s\|\tilde\pi_s) \le t\ \ \forall s,
        \qquad g_s = \rho_\pi(s)A_\pi(s,\cdot)

    a convex problem in (π̃, t) (linear objective, KL(π‖π̃) convex in π̃).

    ``method="dual"`` (default) solves it exactly through its KKT conditions:
    for a radius t each state's problem has the closed form
    :math:`\tilde\pi_s(a) = \mu_s\pi_s(a)/(\nu_s - g_s(a))` with
    :math:`KL_s = t` (:func:`_kl_ball_argmax`, bisection on ν_s), and
    stationarity in t requires :math:`\sum_s\mu_s(t) = C`; the left side falls
    monotonically in t, and its root in log t ∈ [log 1e-30, log 1e3] is found by
    Brent's method to ``xtol`` 1e-14.  Cost O(S·A) per bisection step, so Taxi
    (501 × 6) is fine.  The returned logits are log-probabilities.

    ``method="slsqp"`` maximises over logits Δ = z̃ − z and the epigraph variable
    with SciPy's SLSQP and analytic gradients, from Δ = 0, t = 0, stopping on
    ``ftol`` (relative to the objective's size ε/(1 − γ)) or ``max_iter``; a
    general-purpose cross-check, dense in S·A + 1 variables (small MDPs only)
    and slow to converge where π is nearly deterministic (flat softmax).

    Guarantee (both methods): the new logits are accepted only if the exact
    objective :math:`g = \sum_s\rho\sum_a\tilde\pi A - C D_{KL}^{max}`,
    recomputed with the true max, is > 0; otherwise the input logits are
    returned unchanged.  With C ≥ 4εγ/(1 − γ)², Theorem 1 then gives
    :math:`\eta(\tilde\pi) \ge \eta(\pi) + g \ge \eta(\pi)`: the step never
    decreases η (minorize–maximize).

    Parameters
    ----------
    mdp : TabularMDP
    logits_sa : array (S, A)
        Current logits z.
    C : float, optional
        Penalty coefficient > 0; default :func:`penalty_C` (the theorem's).  A
        smaller C gives longer steps without the guarantee.
    method : {"dual", "slsqp"}
    max_iter, ftol : int, float
        SLSQP's iteration limit and objective tolerance (``method="slsqp"`` only).

    Returns
    -------
    PenalizedStepResult
        ``logits`` first, then diagnostics.

    References
    ----------
    Schulman et al. (2015), Algorithm 1 and eqs. (9)–(10); Boyd & Vandenberghe,
    "Convex Optimization" (2004), §5.5.3 (KKT conditions); Hunter & Lange,
    "A tutorial on MM algorithms", Am. Stat. 2004.
    """
    z_sa = _check_logits(logits_sa, (mdp.n_states, mdp.n_actions))
    if method not in ("dual", "slsqp"):
        raise ValueError(f"method must be 'dual' or 'slsqp', got {method!r}")
    pi_sa = softmax_policy(z_sa)
    adv_sa = policy_evaluation(mdp, pi_sa).adv_sa
    rho_s = visitation(mdp, pi_sa)
    eps_adv = float(np.max(np.abs(adv_sa)))
    c_pen = 4.0 * eps_adv * mdp.gamma / (1.0 - mdp.gamma) ** 2 if C is None else float(C)
    if not (c_pen > 0 and math.isfinite(c_pen)):
        raise ValueError(f"C must be finite and > 0, got {C!r}")
    if eps_adv == 0.0:  # every policy has the same η: nothing to improve
        return PenalizedStepResult(z_sa.copy(), False, 0.0, 0.0, c_pen, 0, True, "zero advantage")
    g_sa = rho_s[:, None] * adv_sa
    solve = _penalized_dual if method == "dual" else _penalized_slsqp
    z_new, n_iter, converged, message = solve(z_sa, g_sa, c_pen, eps_adv / (1.0 - mdp.gamma), max_iter, ftol)
    if not np.all(np.isfinite(z_new)):
        return PenalizedStepResult(z_sa.copy(), False, 0.0, 0.0, c_pen, n_iter, False, message)
    kmax = kl_max_logits(z_sa, z_new)
    gain = float(np.sum(g_sa * softmax_policy(z_new))) - c_pen * kmax  # exact M(π̃) − η(π)
    if gain > 0.0:
        return PenalizedStepResult(z_new, True, gain, kmax, c_pen, n_iter, converged, message)
    return PenalizedStepResult(z_sa.copy(), False, 0.0, 0.0, c_pen, n_iter, converged, message)


def _penalized_dual(z_sa, g_sa, c_pen, obj_scale, max_iter, ftol):
    """KKT route of :func:`penalized_step`: root of Σ_s μ_s(t) = C in log t."""
    from scipy.optimize import brentq

    logp_sa = Categorical.log_softmax(z_sa)

    def excess(log_t):  # Σ μ_s(t) − C: decreasing in t; its root is the optimal radius
        return float(np.sum(_kl_ball_argmax(logp_sa, g_sa, math.exp(log_t))[1])) - c_pen

    lo, hi = math.log(1e-30), math.log(1e3)
    f_lo, f_hi = excess(lo), excess(hi)
    if f_lo <= 0.0:
        return z_sa.copy(), 2, True, "optimal KL radius below 1e-30: no step"
    if f_hi >= 0.0:
        return _kl_ball_argmax(logp_sa, g_sa, math.exp(hi))[0], 2, False, "C too small: optimal KL radius above 1e3"
    log_t, info = brentq(excess, lo, hi, xtol=1e-14, full_output=True)
    logq_sa, _ = _kl_ball_argmax(logp_sa, g_sa, math.exp(log_t))
    return logq_sa, int(info.function_calls) + 2, bool(info.converged), str(info.flag)


def _penalized_slsqp(z_sa, g_sa, c_pen, obj_scale, max_iter, ftol):
    """SLSQP route of :func:`penalized_step` over (Δ, u), u = C t / obj_scale."""
    from scipy.optimize import minimize

    n_s, n_a = z_sa.shape
    # Scaled variables: the objective is divided by obj_scale = ε/(1 − γ) ≥ |Σ⟨g_s, π̃_s⟩|, and the
    # epigraph variable is u = C t / obj_scale, so the objective is Σ⟨g_s, π̃_s⟩/obj_scale − u with
    # O(1) terms, and each constraint t ≥ KL_s reads u − k KL_s ≥ 0 with k = C / obj_scale.
    k_con = c_pen / obj_scale

    def unpack(x):
        return z_sa + x[:-1].reshape(n_s, n_a), x[-1]

    def neg_objective(x):
        z_new, u = unpack(x)
        return u - float(np.sum(g_sa * softmax_policy(z_new))) / obj_scale

    def neg_objective_grad(x):
        z_new, _ = unpack(x)
        grad_sa = Categorical.fisher_product_probs(softmax_policy(z_new), g_sa)  # softmax Jacobian · g
        return np.concatenate([-grad_sa.ravel() / obj_scale, [1.0]])

    def constraint(x):
        z_new, u = unpack(x)
        return u - k_con * Categorical.kl(z_sa, z_new)  # C t ≥ C KL_s, scaled

    def constraint_jac(x):
        z_new, _ = unpack(x)
        dkl_sa = Categorical.kl_grad_q(z_sa, z_new)  # ∂KL_s/∂z̃_s = π̃_s − π_s
        jac = np.zeros((n_s, n_s * n_a + 1))
        for s in range(n_s):
            jac[s, s * n_a:(s + 1) * n_a] = -k_con * dkl_sa[s]
        jac[:, -1] = 1.0
        return jac

    res = minimize(neg_objective, np.zeros(n_s * n_a + 1), jac=neg_objective_grad, method="SLSQP",
                   constraints=[{"type": "ineq", "fun": constraint, "jac": constraint_jac}],
                   options={"maxiter": int(max_iter), "ftol": float(ftol)})
    return unpack(res.x)[0], int(res.nit), bool(res.success), str(res.message)
