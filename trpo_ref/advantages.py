r"""Generalized advantage estimation and discounted returns over (T, E) rollouts.

Arrays are time-major, shape (T, E): T steps of E parallel environments.
Episode ends are given by two flags kept apart, as gymnasium reports them:
``terminated`` (a true end: the value of what follows is 0) and ``truncated``
(a cut, e.g. a time limit: the episode would have gone on, so the value of
the real final observation still counts).

============================================================================  ===========================
equation                                                                      function
============================================================================  ===========================
:math:`\delta_t = r_t + \gamma(1-\mathrm{terminated}_t)V(s_{t+1}) - V(s_t)`    :func:`td_residuals`
:math:`\hat A_t = \delta_t + \gamma\lambda(1-\mathrm{done}_t)\hat A_{t+1}`,
:math:`\hat R_t = \hat A_t + V(s_t)`                                          :func:`gae`
:math:`R_t = r_t + \gamma(1-\mathrm{done}_t)R_{t+1}`                          :func:`discounted_returns`
============================================================================  ===========================

with :math:`\mathrm{done}_t = \mathrm{terminated}_t \lor \mathrm{truncated}_t`.
In code the TD residual :math:`\delta_t` is ``td`` (δ is the trust radius).

References
----------
Schulman, Moritz, Levine, Jordan & Abbeel, "High-Dimensional Continuous
Control Using Generalized Advantage Estimation", ICLR 2016, eqs. (11)–(16).
Pardo et al., "Time Limits in Reinforcement Learning", ICML 2018 (bootstrap
on truncation).
"""

from __future__ import annotations

import numbers
from typing import Any

from . import backend

__all__ = ["td_residuals", "gae", "discounted_returns"]


# ------------------------------------------------------------------ checks
def _check_unit_interval(value: float, name: str) -> float:
    """``value`` as a Python float (a NumPy scalar would promote float32 arrays to float64)."""
    if not (isinstance(value, numbers.Real) and 0.0 <= value <= 1.0):
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)


def _check_shapes(arrays: dict[str, Any]) -> tuple[int, int]:
    """All arrays (T, E) with the same T >= 1 and E; returns (T, E)."""
    shape = first = None
    for name, a in arrays.items():
        if len(a.shape) != 2:
            raise ValueError(f"{name} must have shape (T, E), got {tuple(a.shape)}")
        if shape is None:
            shape, first = tuple(a.shape), name
        elif tuple(a.shape) != shape:
            raise ValueError(f"{name} has shape {tuple(a.shape)} but {first} has {shape}; all must be (T, E)")
    if shape[0] < 1:
        raise ValueError(f"need at least one time step, got shape {shape}")
    return shape


def _check_values(xp, floats: dict[str, Any], flags: dict[str, Any]) -> None:
    """Float arrays real floating and finite; flags bool, or numbers that are all 0 or 1.

    One device -> host transfer for all the value checks.
    """
    for name, a in floats.items():
        if not xp.isdtype(a.dtype, "real floating"):
            raise ValueError(f"{name} must be a real floating array, got dtype {a.dtype}")
    for name, a in flags.items():
        if not xp.isdtype(a.dtype, ("bool", "integral", "real floating")):
            raise ValueError(f"{name} must be a bool or 0/1 array, got dtype {a.dtype}")
    named = [(name, "contains NaN or inf", xp.all(xp.isfinite(a))) for name, a in floats.items()]
    named += [(name, "must contain only 0 and 1 (or be bool)", xp.all(xp.logical_or(a == 0, a == 1)))
              for name, a in flags.items() if not xp.isdtype(a.dtype, "bool")]
    ok = backend.to_numpy(xp.stack([check for _, _, check in named]))
    for (name, message, _), good in zip(named, ok):
        if not good:
            raise ValueError(f"{name} {message}")


def _as_float(xp, flag, dtype):
    """A bool / 0-1 flag array as 0.0 / 1.0 of ``dtype``."""
    return xp.astype(xp.astype(flag, xp.bool), dtype)


def _not_done(xp, terminated_te, truncated_te, dtype):
    r""":math:`1 - \mathrm{done}_t` with done = terminated or truncated, as 0.0 / 1.0."""
    return xp.astype(xp.logical_not(xp.logical_or(xp.astype(terminated_te, xp.bool),
                                                  xp.astype(truncated_te, xp.bool))), dtype)


# --------------------------------------------------------------- functions
def _td(rew_te, val_te, next_val_te, not_term_te, gamma):
    return rew_te + gamma * not_term_te * next_val_te - val_te  # δ_t = r_t + γ(1 − term_t)V(s_{t+1}) − V(s_t)


def td_residuals(rew_te, val_te, next_val_te, terminated_te, gamma: float):
    r"""TD residuals :math:`\delta_t = r_t + \gamma(1 - \mathrm{terminated}_t)V(s_{t+1}) - V(s_t)`.

    Parameters
    ----------
    rew_te, val_te, next_val_te : arrays, shape (T, E)
        Rewards :math:`r_t`, values :math:`V(s_t)` and values of the true next
        observation :math:`V(s_{t+1})` (on truncation the real final
        observation of the cut episode; for the last row the bootstrap state).
    terminated_te : array, shape (T, E)
        bool or 0/1: the episode ended for real at step t.
    gamma : float in [0, 1]
        Discount :math:`\gamma`.

    Returns
    -------
    td_te : array, shape (T, E)

    Raises
    ------
    ValueError
        Shapes not all (T, E), NaN/inf values, flags not 0/1, gamma outside [0, 1].
    """
    xp = backend.namespace(rew_te, val_te, next_val_te, terminated_te)
    gamma = _check_unit_interval(gamma, "gamma")
    floats = {"rew_te": rew_te, "val_te": val_te, "next_val_te": next_val_te}
    flags = {"terminated_te": terminated_te}
    _check_shapes({**floats, **flags})
    _check_values(xp, floats, flags)
    dtype = xp.result_type(rew_te, val_te, next_val_te)
    return _td(rew_te, val_te, next_val_te, 1.0 - _as_float(xp, terminated_te, dtype), gamma)


def gae(rew_te, val_te, next_val_te, terminated_te, truncated_te, gamma: float, gae_lambda: float):
    r"""Generalized advantage estimates and the critic's targets.

    .. math::

        \delta_t = r_t + \gamma(1 - \mathrm{terminated}_t)\,V(s_{t+1}) - V(s_t)

        \hat A_t = \delta_t + \gamma\lambda(1 - \mathrm{done}_t)\,\hat A_{t+1},
        \qquad \hat A_T = 0,\qquad \mathrm{done}_t = \mathrm{terminated}_t \lor \mathrm{truncated}_t

        \hat R_t = \hat A_t + V(s_t)

    Equivalently :math:`\hat A_t = \sum_{k\ge0}(\gamma\lambda)^k\delta_{t+k}`, the
    sum stopping after the first step that ends its episode (GAE paper eq. 16).

    Parameters
    ----------
    rew_te : array, shape (T, E)
        Rewards :math:`r_t`.
    val_te : array, shape (T, E)
        :math:`V(s_t)` of the observation the action was taken in.
    next_val_te : array, shape (T, E)
        :math:`V(s_{t+1})` of the true next observation of each step: on
        truncation the real final observation of the cut episode (not the
        reset observation), for the last row the bootstrap state.  Ignored
        where ``terminated``.
    terminated_te, truncated_te : arrays, shape (T, E)
        bool or 0/1 flags; a step may be neither, either or (counted as
        terminated) both.
    gamma : float in [0, 1]
        Discount :math:`\gamma`.
    gae_lambda : float in [0, 1]
        :math:`\lambda`; 0 gives :math:`\hat A_t = \delta_t`; 1 gives the
        discounted return (bootstrapped on truncation and after the last
        row) minus :math:`V(s_t)`, when ``next_val_te[t] = val_te[t+1]``
        inside episodes.

    Returns
    -------
    adv_te : array, shape (T, E)
        :math:`\hat A_t`.
    ret_te : array, shape (T, E)
        :math:`\hat R_t = \hat A_t + V(s_t)`, the critic's regression target.

    Raises
    ------
    ValueError
        Shapes not all (T, E) or T = 0, NaN/inf in the float arrays, flags not
        0/1, ``gamma`` or ``gae_lambda`` outside [0, 1]; the message names the
        argument.

    Notes
    -----
    One Python loop over T, vectorised over E; rows are collected in a list
    and stacked (no in-place writes, so every array-API backend works).
    Truncation bootstraps through :math:`\delta_t` (``next_val``) but stops the
    recursion, so no advantage leaks across an episode boundary.
    """
    xp = backend.namespace(rew_te, val_te, next_val_te, terminated_te, truncated_te)
    gamma = _check_unit_interval(gamma, "gamma")
    gae_lambda = _check_unit_interval(gae_lambda, "gae_lambda")
    floats = {"rew_te": rew_te, "val_te": val_te, "next_val_te": next_val_te}
    flags = {"terminated_te": terminated_te, "truncated_te": truncated_te}
    n_steps, _ = _check_shapes({**floats, **flags})
    _check_values(xp, floats, flags)
    dtype = xp.result_type(rew_te, val_te, next_val_te)
    td_te = _td(rew_te, val_te, next_val_te, 1.0 - _as_float(xp, terminated_te, dtype), gamma)
    not_done_te = _not_done(xp, terminated_te, truncated_te, dtype)
    if backend.is_numpy(xp) and dtype == xp.float64 and td_te.shape[1] <= _HOST_SCAN_MAX_ENVS:
        adv_te = _gae_scan_host(td_te, not_done_te, gamma, gae_lambda)
        return adv_te, adv_te + val_te                                             # R̂_t = Â_t + V(s_t)
    rows: list = [None] * n_steps
    adv_next_e = xp.zeros_like(td_te[0, ...])                                      # Â_T = 0
    for t in range(n_steps - 1, -1, -1):
        adv_next_e = td_te[t, ...] + gamma * gae_lambda * not_done_te[t, ...] * adv_next_e  # Â_t
        rows[t] = adv_next_e
    adv_te = xp.stack(rows, axis=0)
    return adv_te, adv_te + val_te                                                 # R̂_t = Â_t + V(s_t)


#: Up to this many envs, host float64 GAE runs its recursion on Python floats (see _gae_scan_host);
#: :meth:`trpo_ref.normalize.RewardScaler.scale` uses the same bound for its running returns.
_HOST_SCAN_MAX_ENVS = 16


def _gae_scan_host(td_te, not_done_te, gamma: float, gae_lambda: float):
    r"""The recursion :math:`\hat A_t = \delta_t + \gamma\lambda(1-\mathrm{done}_t)\hat A_{t+1}` on Python floats.

    Host NumPy float64 only.  With few envs, the vectorised loop over T spends
    its time on four array operations of E elements per step (~8 ms at
    T = 2048, E = 1, measured); Python floats are IEEE doubles, and the
    expression is evaluated in the same order (``(γλ · (1 − done_t)) · Â_{t+1}``,
    then ``δ_t +``), so the result is the vectorised loop's, bit for bit
    (tests/test_advantages.py).
    """
    gl = gamma * gae_lambda
    n_steps = td_te.shape[0]
    cols = []
    for td_t, nd_t in zip(td_te.T.tolist(), not_done_te.T.tolist()):
        col = [0.0] * n_steps
        adv = 0.0                                                                  # Â_T = 0
        for t in range(n_steps - 1, -1, -1):
            adv = td_t[t] + gl * nd_t[t] * adv                                     # Â_t
            col[t] = adv
        cols.append(col)
    return backend.namespace(td_te).asarray(cols, dtype=td_te.dtype).T.copy()


def discounted_returns(rew_te, terminated_te, truncated_te, gamma: float, bootstrap_e=None):
    r"""Reward-to-go cut at episode ends: :math:`R_t = r_t + \gamma(1 - \mathrm{done}_t)R_{t+1}`.

    .. math::

        R_t = r_t + \gamma(1 - \mathrm{done}_t)\,R_{t+1},\qquad
        R_T = b \ (\text{``bootstrap_e``, or } 0)

    Parameters
    ----------
    rew_te : array, shape (T, E)
        Rewards.
    terminated_te, truncated_te : arrays, shape (T, E)
        bool or 0/1 episode-end flags.
    gamma : float in [0, 1]
        Discount.
    bootstrap_e : array, shape (E,), optional
        Value added (discounted) after the last row for environments whose
        episode goes on past the batch; zero when omitted.

    Returns
    -------
    ret_te : array, shape (T, E)

    Notes
    -----
    Both kinds of episode end cut the sum, and **a truncation inside the batch
    gets no bootstrap** (nor does one on the last row: ``bootstrap_e`` is
    multiplied by :math:`1 - \mathrm{done}_{T-1}`): this is the plain
    Monte-Carlo return of the observed rewards.  For returns that bootstrap
    on truncation use :func:`gae` with ``gae_lambda=1``, whose ``ret_te`` is
    the discounted return with :math:`V(s_{t+1})` added at every cut.
    """
    xp = backend.namespace(rew_te, terminated_te, truncated_te, bootstrap_e)
    gamma = _check_unit_interval(gamma, "gamma")
    flags = {"terminated_te": terminated_te, "truncated_te": truncated_te}
    n_steps, n_envs = _check_shapes({"rew_te": rew_te, **flags})
    floats = {"rew_te": rew_te}
    if bootstrap_e is None:
        ret_next_e = xp.zeros_like(rew_te[0, ...])                               # R_T = 0
    else:
        if tuple(bootstrap_e.shape) != (n_envs,):
            raise ValueError(f"bootstrap_e must have shape ({n_envs},), got {tuple(bootstrap_e.shape)}")
        floats["bootstrap_e"] = ret_next_e = bootstrap_e                          # R_T = b
    _check_values(xp, floats, flags)
    not_done_te = _not_done(xp, terminated_te, truncated_te, rew_te.dtype)
    rows: list = [None] * n_steps
    for t in range(n_steps - 1, -1, -1):
        ret_next_e = rew_te[t, ...] + gamma * not_done_te[t, ...] * ret_next_e     # R_t
        rows[t] = ret_next_e
    return xp.stack(rows, axis=0)
