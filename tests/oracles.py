"""Deliberately naive references the fast code is checked against.

Everything here works on NumPy float64 host arrays and favours obviousness
over speed: central differences, dense Jacobians, direct sums.
"""

from __future__ import annotations

import numpy as np

#: float64 machine epsilon.
EPS64 = float(np.finfo(np.float64).eps)


def fd_step(x) -> float:
    r"""Central-difference step ``eps^(1/3) * max(1, |x|_inf)``.

    Error model: for f with bounded third derivative, the central difference
    ``(f(x+hv) − f(x−hv)) / 2h`` has truncation error ``h² |f'''| / 6`` and
    rounding error about ``eps |f| / h``; the two balance at ``h ~ eps^(1/3)``
    (≈ 6e-6), where both are ≈ ``eps^(2/3)`` ≈ 4e-11 relative to the scale of f
    and its derivatives.  Tests therefore accept relative errors of 1e-6 against
    the scale of the compared quantity: five orders of magnitude above the
    model and far below any real derivative bug (which errs at O(1)).
    """
    return EPS64 ** (1.0 / 3.0) * max(1.0, float(np.max(np.abs(x))) if np.size(x) else 1.0)


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
    differences of the forward pass; ``M_n`` is the distribution's Fisher
    written out densely (diag(1/σ², 2) or diag(p) − p pᵀ).
    """
    theta = np.asarray(theta, dtype=np.float64)
    obs = np.asarray(obs, dtype=np.float64)
    p_mlp = policy.mlp.num_params
    n = obs.shape[0]
    F = np.zeros((theta.size, theta.size))
    for i in range(n):
        x = obs[i : i + 1]

        def phi(t, x=x):
            out, _ = policy.mlp.forward(t[:p_mlp], x)
            out = np.ravel(out)
            return np.concatenate([out, t[p_mlp:]]) if policy.kind == "gaussian" else out

        J = jacobian_fd(phi, theta)
        if policy.kind == "gaussian":
            sigma2 = np.exp(2 * theta[p_mlp:])
            M = np.diag(np.concatenate([1 / sigma2, 2 * np.ones(policy.act_dim)]))
        else:
            M = dense_output_metric(policy, phi(theta))
        F += J.T @ M @ J
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

    Every action (every joint action of a MultiDiscrete or MultiBinary head) of every state is enumerated; the score is taken by central
    differences of ``policy.log_prob``.
    """
    theta = np.asarray(theta, dtype=np.float64)
    n = obs.shape[0]
    F = np.zeros((theta.size, theta.size))
    for i in range(n):
        x = obs[i : i + 1]
        for act in all_actions(policy):
            score = np.ravel(jacobian_fd(lambda t: policy.log_prob(t, x, act), theta))
            prob = float(np.exp(policy.log_prob(theta, x, act))[0])
            F += prob * np.outer(score, score)
    return F / n


# ------------------------------------------------------ finite-difference ledger
#: worst relative error seen per named finite-difference check, and the number
#: of examples run; printed at the end of the pytest run (see conftest.py).
FD_LEDGER: dict[str, list] = {}


def record_fd(name: str, actual, expected) -> float:
    """Relative error of ``actual`` against ``expected`` (see :func:`rel_err`), recorded."""
    err = rel_err(actual, expected)
    entry = FD_LEDGER.setdefault(name, [0, 0.0])
    entry[0] += 1
    entry[1] = max(entry[1], err)
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
