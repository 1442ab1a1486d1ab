"""Deliberately naive references the fast code is checked against.

Everything here works on NumPy float64 host arrays and favours obviousness
over speed: central differences, dense Jacobians, direct sums.  The
finite-difference step (:func:`fd_step`) and tolerance (:data:`FD_TOL`) are
defined here once, and every finite-difference check goes through
:func:`check_fd`.
"""

from __future__ import annotations

import numpy as np

#: float64 machine epsilon.
EPS64 = float(np.finfo(np.float64).eps)
#: The central-difference step before scaling: eps^(1/3) ≈ 6.1e-6 (see :func:`fd_step`).
FD_H = EPS64 ** (1.0 / 3.0)


def fd_step(x) -> float:
    r"""Central-difference step ``eps^(1/3) * max(1, |x|_inf)``.

    Error model: for f with bounded third derivative, the central difference
    ``(f(x+hv) − f(x−hv)) / 2h`` has truncation error ``h² |f'''| / 6`` and
    rounding error about ``eps |f| / h``; the two balance at ``h ~ eps^(1/3)``
    (≈ 6e-6), where both are ≈ ``eps^(2/3)`` ≈ 4e-11 relative to the scale of f
    and its derivatives.  The error accepted is :data:`FD_TOL`.
    """
    return FD_H * max(1.0, float(np.max(np.abs(x))) if np.size(x) else 1.0)


#: Tolerance of every finite-difference check, by the dtype of the analytic value: a check passes when
#: ``max|analytic − fd| ≤ tol · max(1, max|fd|)`` (:func:`rel_err`: relative to the scale of the
#: difference quotient, absolute below 1), or ``≤ tol · scale`` where the check states its own scale.
#:
#: float64: the model of :func:`fd_step` predicts ≈4e-11 of the scale.  Measured (the ledger pytest prints
#: at the end of a run gives every check's examples and worst error): CI profile, every check of the
#: suite on NumPy and array_api_strict (60 examples a head), worst 9.6e-8; thorough profile, the policy
#: checks on NumPy (1000 examples a head), worst 3.8e-7 — both ``policy.log_prob_grad (multicategorical)``.
#: 1e-6 keeps a margin of 10 over the first and 2.6 over the second, and is five orders below the O(1)
#: error of a wrong derivative.  (Observations scaled by 5 raise the thorough worst to 2.6e-6: see
#: :func:`strategies.policy_cases`.)
#: The difference quotients are always float64 host computations, and no check compares a float32
#: derivative with them (its own rounding, ~1e-7 of its terms, would need a tolerance of its own, measured
#: first): float32 has no entry, and :func:`check_fd` refuses a dtype without one.
FD_TOL = {"float64": 1e-6}


def central_diff(f, x, v, h=None):
    """Directional derivative of ``f`` at ``x`` along ``v`` by central differences."""
    x = np.asarray(x, dtype=np.float64)
    h = fd_step(x) if h is None else h
    return (np.asarray(f(x + h * v)) - np.asarray(f(x - h * v))) / (2 * h)


def jacobian_fd(f, x):
    """Dense Jacobian of ``f`` at ``x`` by central differences, column by column."""
    x = np.asarray(x, dtype=np.float64)
    cols = []
    for i in range(x.size):
        e = np.zeros_like(x)
        e[i] = 1.0
        cols.append(np.ravel(central_diff(f, x, e)))
    return np.stack(cols, axis=1)


def rel_err(actual, expected) -> float:
    """max |a − e| / max(1, max |e|): an error relative to the scale of ``expected``."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    return float(np.max(np.abs(actual - expected), initial=0.0) / max(1.0, float(np.max(np.abs(expected), initial=0.0))))


# --------------------------------------------------------------- policy oracles
def dense_fisher(policy, theta, obs):
    r"""Dense :math:`F = \frac1N\sum_n J_n^\top M_n J_n` from per-sample Jacobians.

    ``J_n`` is the Jacobian of the distribution parameters φ_n (the network
    output; for the Gaussian also log σ) with respect to θ, by central
    differences of the forward pass over the whole batch (row n of the output
    depends on sample n alone, so the rows' Jacobians are the per-sample ones);
    ``M_n`` is the distribution's Fisher written out densely (diag(1/σ², 2) or
    diag(p) − p pᵀ, see :func:`dense_output_metric`).
    """
    theta = np.asarray(theta, dtype=np.float64)
    obs = np.asarray(obs, dtype=np.float64)
    p_mlp = policy.mlp.num_params
    n = obs.shape[0]
    gaussian = policy.kind == "gaussian"

    def phi(t):  # (N, width): the network's outputs, and log σ beside them for the Gaussian
        out = np.asarray(policy.mlp.forward(t[:p_mlp], obs)[0])
        return np.concatenate([out, np.broadcast_to(t[p_mlp:], (n, t.size - p_mlp))], axis=1) if gaussian else out

    phi0 = phi(theta)
    J = jacobian_fd(phi, theta).reshape(n, phi0.shape[1], theta.size)
    F = np.zeros((theta.size, theta.size))
    for i in range(n):
        if gaussian:
            sigma2 = np.exp(2 * theta[p_mlp:])
            M = np.diag(np.concatenate([1 / sigma2, 2 * np.ones(policy.act_dim)]))
        else:
            M = dense_output_metric(policy, phi0[i])
        F += J[i].T @ M @ J[i]
    return F / n


def _softmax(z):
    p = np.exp(z - z.max())
    return p / p.sum()


def dense_output_metric(policy, z):
    """The Fisher metric of one sample's logits z, written out densely and naively per head."""
    if policy.kind == "categorical":
        p = _softmax(z)
        return np.diag(p) - np.outer(p, p)
    if policy.kind == "multicategorical":
        M = np.zeros((z.size, z.size))
        o = 0
        for k in policy.nvec:
            p = _softmax(z[o:o + k])
            M[o:o + k, o:o + k] = np.diag(p) - np.outer(p, p)
            o += k
        return M
    if policy.kind == "bernoulli":
        s = 1 / (1 + np.exp(-z))
        return np.diag(s * (1 - s))
    raise ValueError(policy.kind)


def all_actions(policy):
    """Every action of a discrete head, as rows of the shape its log_prob takes (one sample)."""
    import itertools

    if policy.kind == "categorical":
        return [np.array([a]) for a in range(policy.n_actions)]
    sizes = policy.nvec if policy.kind == "multicategorical" else (2,) * policy.n
    return [np.array([combo]) for combo in itertools.product(*(range(k) for k in sizes))]


def score_function_fisher_categorical(policy, theta, obs):
    r"""Exact score-function Fisher :math:`\frac1N\sum_n\sum_a \pi(a|s_n)\nabla\log\pi\,\nabla\log\pi^\top`.

    Every action (every joint action of a MultiDiscrete or MultiBinary head) of every state is
    enumerated; the score is taken by central differences of ``policy.log_prob``, with every (state,
    action) pair a row of one batch (row by row the same numbers: a row's log-probability depends on its
    own state and action alone).
    """
    theta = np.asarray(theta, dtype=np.float64)
    obs = np.asarray(obs, dtype=np.float64)
    acts = np.concatenate(all_actions(policy), axis=0)      # (A, ...): every action once
    n, n_act = obs.shape[0], acts.shape[0]
    obs_rep = np.repeat(obs, n_act, axis=0)                  # row i·A + k: state i ...
    act_rep = np.concatenate([acts] * n, axis=0)             # ... and action k
    scores = jacobian_fd(lambda t: policy.log_prob(t, obs_rep, act_rep), theta)  # (N·A, P)
    prob = np.exp(np.asarray(policy.log_prob(theta, obs_rep, act_rep), dtype=np.float64))
    return scores.T @ (prob[:, None] * scores) / n


# ------------------------------------------------------ finite-difference ledger
#: worst relative error seen per named finite-difference check, and the number
#: of examples run; printed at the end of the pytest run (see conftest.py).
FD_LEDGER: dict[str, list] = {}


def record_fd(name: str, actual, expected, scale: float | None = None) -> float:
    """Error of ``actual`` against ``expected``, recorded in :data:`FD_LEDGER` under ``name``.

    Relative as in :func:`rel_err` (to max(1, max|expected|)), or ``max|a − e| / scale`` when ``scale``
    is given.
    """
    if scale is None:
        err = rel_err(actual, expected)
    else:
        diff = np.abs(np.asarray(actual, dtype=np.float64) - np.asarray(expected, dtype=np.float64))
        err = float(np.max(diff, initial=0.0) / scale)
    entry = FD_LEDGER.setdefault(name, [0, 0.0])
    entry[0] += 1
    entry[1] = max(entry[1], err)
    return err


def fd_tolerance(dtype) -> float:
    """:data:`FD_TOL` for ``dtype``; ValueError for a dtype no tolerance was measured for."""
    key = np.dtype(dtype).name
    if key not in FD_TOL:
        raise ValueError(f"no finite-difference tolerance for {key}: measure one first (see oracles.FD_TOL)")
    return FD_TOL[key]


def check_fd(name: str, analytic, fd, scale: float | None = None) -> float:
    """Assert that ``analytic`` agrees with the central difference ``fd`` to :data:`FD_TOL` of its dtype.

    The error (see :func:`record_fd`; relative to ``scale`` when given) is recorded in the ledger under
    ``name`` and returned.
    """
    analytic = np.asarray(analytic)
    tol = fd_tolerance(analytic.dtype)
    err = record_fd(name, analytic, fd, scale)
    if not err <= tol:
        what = f"of the scale {scale:.3e}" if scale is not None else "relative"
        raise AssertionError(f"{name}: analytic and central-difference values differ by {err:.3e} {what} "
                             f"> {tol:g} ({analytic.dtype})")
    return err


# ---------------------------------------------------------------- critic oracles
def ridge_normal_equations(obs_no, ret_n, l2=0.0):
    r"""Minimiser of :math:`\frac1N\|Xw + b - y\|^2 + \lambda_2(\|w\|^2 + b^2)` by ``numpy.linalg.solve``.

    The linear critic (``hidden_sizes=()``), in its layout ``[w (obs_dim), b]``:
    with :math:`A = [X, 1]` the normal equations are
    :math:`(A^\top A/N + \lambda_2 I)\,[w; b] = A^\top y/N`.
    """
    obs_no = np.asarray(obs_no, dtype=np.float64)
    a = np.concatenate([obs_no, np.ones((obs_no.shape[0], 1))], axis=1)
    n = obs_no.shape[0]
    return np.linalg.solve(a.T @ a / n + l2 * np.eye(a.shape[1]), a.T @ np.asarray(ret_n, dtype=np.float64) / n)


def adam_textbook(w, grads, lr, beta1=0.9, beta2=0.999, eps=1e-8):
    r"""Kingma & Ba (2015), Algorithm 1, line by line, ε added to :math:`\sqrt{\hat v}`.

    Returns the weights after one step per gradient in ``grads``.
    """
    w = np.array(w, dtype=np.float64)
    m = np.zeros_like(w)
    v = np.zeros_like(w)
    for t, g in enumerate(grads, start=1):
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g**2
        m_hat = m / (1 - beta1**t)
        v_hat = v / (1 - beta2**t)
        w = w - lr * m_hat / (np.sqrt(v_hat) + eps)
    return w


# ------------------------------------------------------------ advantage oracles
def gae_direct_sum(rew, val, next_val, terminated, truncated, gamma, gae_lambda):
    r"""O(T²) GAE by the direct sum :math:`\hat A_t = \sum_{k\ge0}(\gamma\lambda)^k\,\mathrm{td}_{t+k}`.

    Element by element, no recursion: each td is written out from its
    definition, and the sum for (t, e) runs forward from t and stops after
    the first step whose terminated or truncated flag is set (or at the end
    of the batch).
    """
    T, E = np.shape(rew)
    adv = np.zeros((T, E))
    for e in range(E):
        for t in range(T):
            total, weight = 0.0, 1.0
            for k in range(t, T):
                bootstrap = 0.0 if terminated[k][e] else gamma * next_val[k][e]
                td = rew[k][e] + bootstrap - val[k][e]
                total += weight * td
                weight *= gamma * gae_lambda
                if terminated[k][e] or truncated[k][e]:
                    break
            adv[t, e] = total
    return adv


def discounted_returns_direct_sum(rew, terminated, truncated, gamma, bootstrap=None):
    r"""O(T²) :math:`R_t = \sum_{k\ge0}\gamma^k r_{t+k}` up to and including the first episode end,
    plus :math:`\gamma^{T-t}` ``bootstrap`` when no episode end is met before the batch ends."""
    T, E = np.shape(rew)
    ret = np.zeros((T, E))
    for e in range(E):
        for t in range(T):
            total, weight, ended = 0.0, 1.0, False
            for k in range(t, T):
                total += weight * rew[k][e]
                weight *= gamma
                if terminated[k][e] or truncated[k][e]:
                    ended = True
                    break
            if not ended and bootstrap is not None:
                total += weight * bootstrap[e]
            ret[t, e] = total
    return ret


def relu_kink_margin(mlp, theta, x) -> float:
    """Smallest |z| over the hidden pre-activations of ``mlp`` at (θ, x) (inf for tanh).

    Central differences of a relu network are only valid when no pre-activation
    crosses 0 within the step: with h ≈ 1e-5 and |dz/dt| ≲ 1e2 for the cases
    drawn here, the tests require a margin of 1e-2 (hypothesis ``assume``).
    """
    if mlp.activation != "relu":
        return float("inf")
    named = mlp.unflatten(np.asarray(theta, dtype=np.float64)[: mlp.num_params])
    h, margin = np.asarray(x, dtype=np.float64), float("inf")
    for layer in range(mlp.n_layers - 1):
        z = h @ named[f"W{layer}"] + named[f"b{layer}"]
        margin = min(margin, float(np.min(np.abs(z))))
        h = np.maximum(z, 0.0)
    return margin
