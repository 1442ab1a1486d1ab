r"""Conjugate gradient for :math:`A x = b` with a symmetric positive definite operator.

TRPO solves :math:`(F + \lambda_d I)\,x = g` with a handful of CG iterations,
touching the Fisher matrix only through products :math:`v \mapsto (F + \lambda_d I) v`.
This module knows nothing of policies: it takes a ``matvec`` callable.

======================================================================  ============================
equation                                                                function
======================================================================  ============================
:math:`\tau_k = r_k^\top r_k / p_k^\top A p_k`,
:math:`x_{k+1} = x_k + \tau_k p_k`,
:math:`r_{k+1} = r_k - \tau_k A p_k`,
:math:`p_{k+1} = r_{k+1} + (r_{k+1}^\top r_{k+1} / r_k^\top r_k)\,p_k`   :func:`conjugate_gradient`
======================================================================  ============================

References
----------
Hestenes & Stiefel, "Methods of conjugate gradients for solving linear
systems", J. Res. NBS 49 (1952).  Golub & Van Loan, "Matrix Computations",
4th ed., Algorithm 11.3.2.  Schulman et al., "Trust Region Policy
Optimization", ICML 2015, Appendix C.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Callable, NamedTuple

from . import backend

__all__ = ["CGResult", "conjugate_gradient"]


class CGResult(NamedTuple):
    r"""What :func:`conjugate_gradient` returns.

    Attributes
    ----------
    x : array, shape (P,)
        The last good iterate :math:`x_{n\_iter}` (finite whenever ``b`` and
        ``x0`` are).
    n_iter : int
        Completed iterations (updates of ``x``).
    residual_norms : tuple of float, length ``n_iter + 1``
        :math:`\|r_k\|` for k = 0..n_iter, with :math:`r_0 = b - A x_0` and
        :math:`r_k` the recursively updated residual (which drifts from
        :math:`b - A x_k` by rounding, as in every CG implementation).
    converged : bool
        The stopping rule (see :func:`conjugate_gradient`) was met.
    breakdown : bool
        Stopped because :math:`p^\top A p \le 0` (A not positive definite
        along p) or a non-finite number appeared.
    iterates : tuple of arrays or None
        :math:`x_1, \dots, x_{n\_iter}` when ``keep_iterates=True``.
    pAp : tuple of float
        :math:`p_k^\top A p_k` of every iteration begun: ``n_iter`` entries,
        plus one when the iteration that broke down got as far as computing
        it (its value, non-positive or non-finite, is then the last entry).
    """

    x: Any
    n_iter: int
    residual_norms: tuple
    converged: bool
    breakdown: bool
    iterates: tuple | None
    pAp: tuple


def _check_args(b, x0, max_iter, rtol, atol, squared_residual_tol) -> None:
    if len(b.shape) != 1:
        raise ValueError(f"b must be a 1-D vector, got shape {tuple(b.shape)}")
    if x0 is not None and tuple(x0.shape) != tuple(b.shape):
        raise ValueError(f"x0 must have the shape of b {tuple(b.shape)}, got {tuple(x0.shape)}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, numbers.Integral) or max_iter < 0:
        raise ValueError(f"max_iter must be an int >= 0, got {max_iter!r}")
    for name, value in (("rtol", rtol), ("atol", atol)):
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be finite and >= 0, got {value!r}")
    if squared_residual_tol is not None and not (squared_residual_tol >= 0):
        raise ValueError(f"squared_residual_tol must be None or >= 0, got {squared_residual_tol!r}")


def _meets_tolerance(rr: float, threshold: float, squared_residual_tol: float | None) -> bool:
    """The stopping rule: ‖r‖ ≤ threshold, or rᵀr < squared_residual_tol (strict)."""
    return math.sqrt(rr) <= threshold or (squared_residual_tol is not None and rr < squared_residual_tol)


def _dot(xp, u, v) -> float:
    r""":math:`u^\top v` as a host float (one device -> host sync)."""
    return backend.to_float(xp.vecdot(u, v))


def conjugate_gradient(
    matvec: Callable[[Any], Any],
    b,
    *,
    max_iter: int = 10,
    rtol: float = 0.0,
    atol: float = 0.0,
    squared_residual_tol: float | None = None,
    x0=None,
    callback: Callable[[Any], None] | None = None,
    keep_iterates: bool = False,
    alpha_eps: float = 0.0,
    check_initial: bool = False,
) -> CGResult:
    r"""Solve :math:`A x = b` by conjugate gradient (Hestenes–Stiefel).

    Starting from :math:`x_0` (zero unless given), :math:`r_0 = p_0 = b - A x_0`,
    each iteration k = 0, 1, ... computes

    .. math::

        \tau_k = \frac{r_k^\top r_k}{p_k^\top A p_k},\quad
        x_{k+1} = x_k + \tau_k p_k,\quad
        r_{k+1} = r_k - \tau_k A p_k,\quad
        p_{k+1} = r_{k+1} + \omega_k p_k,\quad
        \omega_k = \frac{r_{k+1}^\top r_{k+1}}{r_k^\top r_k} .

    (Textbooks call :math:`\tau_k, \omega_k` α and β; here those letters are
    the line search's shrink factor and TRPO's step length, so CG's
    coefficients get their own.  The parameter ``alpha_eps`` keeps the
    textbook name.)

    Parameters
    ----------
    matvec : callable
        ``matvec(v) -> A v`` for a vector of the shape of ``b``; A must be
        symmetric positive definite for CG's guarantees.
    b : array, shape (P,)
        Right-hand side (any array-API namespace; not modified).
    max_iter : int, default 10
        Most iterations (= most ``matvec`` calls, one more when ``x0`` is given).
    rtol, atol : float, default 0
        Residual tolerances of the stopping rule below.
    squared_residual_tol : float or None
        The strict squared-residual test of OpenAI baselines, Spinning Up
        and SB3-contrib (``residual_tol``, 1e-10 there).
    x0 : array, shape (P,), optional
        Starting point (not modified).
    callback : callable, optional
        ``callback(x_k)`` after each completed iteration.
    keep_iterates : bool, default False
        Keep :math:`x_1, \dots` in :attr:`CGResult.iterates`.
    alpha_eps : float, default 0
        Added to the denominator of the step: :math:`\tau_k = r^\top r / (p^\top A p + \mathtt{eps})`.
        Zero (no hidden epsilon) unless asked for; Spinning Up's CG uses 1e-8,
        and its preset sets it so the replay is exact.
    check_initial : bool, default False
        Also apply the stopping rule to :math:`r_0` before the first iteration
        (SB3-contrib's solver does; baselines and Spinning Up do not).

    Returns
    -------
    CGResult

    Notes
    -----
    **Stopping rule.**  After each completed iteration (never before the first,
    as in baselines / Spinning Up / SB3-contrib), stop as converged when

    .. math:: \|r_k\| \le \max(\mathrm{rtol}\,\|b\|,\ \mathrm{atol})
              \quad\text{or}\quad r_k^\top r_k < \mathrm{squared\_residual\_tol}.

    With ``rtol = atol = 0`` the first test holds only for an exactly zero
    residual (the solution is exact; a further step would divide 0 by 0).
    The only exceptions to "after each iteration": ``b = 0`` exactly returns
    ``x = 0`` at once, and an exactly zero :math:`r_0` (``x0`` solves the
    system) returns a copy of ``x0`` at once, as does any :math:`r_0` that meets
    the rule when ``check_initial`` is set; all with ``n_iter = 0`` and
    ``converged = True``.  Otherwise the loop ends after ``max_iter``
    iterations with ``converged = False``.  There are no other tolerances.

    **Breakdown.**  When :math:`p_k^\top A p_k \le 0` (A indefinite or
    singular along :math:`p_k`), or any scalar or :math:`x_{k+1}` is not
    finite, CG stops with ``breakdown = True`` and returns the last good
    iterate :math:`x_k` (:math:`x_0` if it breaks down in the first
    iteration): never NaN.

    Each iteration brings two scalars to the host (:math:`p^\top A p` and
    :math:`r^\top r`, with the finiteness of x folded into the latter).
    """
    xp = backend.namespace(b, x0)
    _check_args(b, x0, max_iter, rtol, atol, squared_residual_tol)
    if not (math.isfinite(alpha_eps) and alpha_eps >= 0):
        raise ValueError(f"alpha_eps must be finite and >= 0, got {alpha_eps!r}")
    bb = _dot(xp, b, b)
    b_norm = math.sqrt(bb)
    if b_norm == 0.0:
        return CGResult(xp.zeros_like(b), 0, (0.0,), True, False, () if keep_iterates else None, ())

    if x0 is None:
        x = xp.zeros_like(b)
        r, rr = b, bb  # r is never updated in place, so b is safe
    else:
        x = xp.asarray(x0, copy=True)
        r = b - matvec(x)
        rr = _dot(xp, r, r)
    p = r
    residual_norms = [math.sqrt(rr)]
    iterates = [] if keep_iterates else None
    pAp_list: list[float] = []

    def result(converged: bool, breakdown: bool) -> CGResult:
        return CGResult(x, len(residual_norms) - 1, tuple(residual_norms), converged, breakdown,
                        None if iterates is None else tuple(iterates), tuple(pAp_list))

    if not math.isfinite(rr):
        return result(False, True)
    threshold = max(rtol * b_norm, atol)
    if rr == 0.0 or (check_initial and _meets_tolerance(rr, threshold, squared_residual_tol)):
        return result(True, False)

    for _ in range(max_iter):
        Ap = matvec(p)
        pAp = _dot(xp, p, Ap)
        pAp_list.append(pAp)
        if not (math.isfinite(pAp) and pAp > 0.0):
            return result(False, True)
        alpha = rr / (pAp + alpha_eps)        # τ_k = rᵀr / pᵀAp
        x_new = x + alpha * p                 # x_{k+1} = x_k + τ_k p_k
        r_new = r - alpha * Ap                # r_{k+1} = r_k − τ_k A p_k
        # r_{k+1}ᵀr_{k+1}, reported as NaN when x_{k+1} has a non-finite entry (one sync).
        rr_arr = xp.vecdot(r_new, r_new)
        rr_new = backend.to_float(xp.where(xp.all(xp.isfinite(x_new)), rr_arr, xp.full_like(rr_arr, math.nan)))
        if not math.isfinite(rr_new):
            return result(False, True)
        p = r_new + (rr_new / rr) * p         # p_{k+1} = r_{k+1} + ω_k p_k
        x, r, rr = x_new, r_new, rr_new
        residual_norms.append(math.sqrt(rr))
        if iterates is not None:
            iterates.append(x)
        if callback is not None:
            callback(x)
        if _meets_tolerance(rr, threshold, squared_residual_tol):
            return result(True, False)
    return result(False, False)
