r"""Backtracking line search along a proposed step, with every try recorded.

TRPO scales its natural-gradient step :math:`\beta x` back until the new
parameters satisfy the trust-region constraint and improve the surrogate.
This module knows nothing of policies: the caller's ``evaluate(x_try)``
returns the improvement of the objective and the KL.

===================================================================  ==================================
equation                                                             function
===================================================================  ==================================
:math:`x_j = x_0 + \alpha^j s`, accept the first admissible j        :func:`backtracking_line_search`
:math:`\bar D_{KL} \le c\,\delta` (or :math:`<`)                     :func:`kl_ok`
:math:`\Delta L > 0` / :math:`\ge 0` / no test                       :func:`improvement_ok`
:math:`\Delta L / (\alpha^j\,\Delta L_{exp}) > \rho`                 :func:`improvement_ratio`
===================================================================  ==================================

The acceptance rules of the libraries (see ``docs`` and the presets of
:mod:`trpo_ref.trpo`) are combinations of the arguments:

=============  ===========================================================================
paper          ``max_kl=δ``, ``kl_strict=False``, ``require_improvement="strict"``
sb3-contrib    ``max_kl=δ``, ``kl_strict=True``, ``require_improvement="strict"``
baselines      ``max_kl=δ``, ``kl_bound_factor=1.5``, ``require_improvement="nonstrict"``
modular_rl     ``max_kl=None``, ``require_improvement="strict"``, ``improve_ratio=0.1``
=============  ===========================================================================

References
----------
Schulman et al., "Trust Region Policy Optimization", ICML 2015, §6 and
Appendix C (backtracking on the KL constraint and the surrogate).
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Callable, NamedTuple

from . import backend

__all__ = [
    "LineSearchTry",
    "LineSearchResult",
    "backtracking_line_search",
    "kl_ok",
    "improvement_ok",
    "improvement_ratio",
    "REQUIRE_IMPROVEMENT",
]

#: Accepted values of ``require_improvement``.
REQUIRE_IMPROVEMENT = ("strict", "nonstrict", "none")


class LineSearchTry(NamedTuple):
    r"""One evaluated point :math:`x_0 + f\,s` of the line search.

    Attributes
    ----------
    index : int
        j, the number of backtracks before this try.
    fraction : float
        :math:`f = \alpha^j`.
    kl : float or None
        KL returned by ``evaluate`` (None when it returned none).
    improvement : float
        Actual change of the objective, :math:`\Delta L = L(x_j) - L(x_0)`.
    expected_improvement : float
        :math:`f\,\Delta L_{exp}`, the first-order prediction for this fraction.
    ratio : float
        ``improvement / expected_improvement``; NaN when the expectation is 0.
    finite : bool
        improvement and kl finite (True when ``check_finite=False``).
    kl_ok : bool
        The KL test passed (True when ``max_kl`` is None).
    improvement_ok : bool
        The improvement test (and the ratio test, when asked for) passed.
    accepted : bool
        All tests passed; only the last try of a successful search has it.
    """

    index: int
    fraction: float
    kl: float | None
    improvement: float
    expected_improvement: float
    ratio: float
    finite: bool
    kl_ok: bool
    improvement_ok: bool
    accepted: bool


class LineSearchResult(NamedTuple):
    """What :func:`backtracking_line_search` returns.

    Attributes
    ----------
    x : array
        The accepted point, or ``x0`` itself (the same object) when no try
        was accepted.
    accepted_index : int or None
        Index of the accepted try in ``tries``.
    tries : tuple of LineSearchTry
        Every evaluated try, in order; evaluation stops after the accepted one.
    success : bool
        A try was accepted.
    """

    x: Any
    accepted_index: int | None
    tries: tuple
    success: bool


def kl_ok(kl: float | None, max_kl: float | None, kl_bound_factor: float = 1.0, kl_strict: bool = False) -> bool:
    r"""The trust-region test :math:`\bar D_{KL} \le c\,\delta` (``kl_strict``: :math:`<`).

    .. math:: \bar D_{KL}(\theta_{old}, \theta) \le c\,\delta

    ``c = kl_bound_factor`` (1.5 in OpenAI baselines), :math:`\delta` = ``max_kl``;
    always True when ``max_kl`` is None.  A NaN KL fails.

    Parameters
    ----------
    kl : float or None
        Measured mean KL of the try.
    max_kl : float or None
        δ; None disables the test.
    kl_bound_factor : float
        c.
    kl_strict : bool
        Use ``<`` instead of ``<=``.

    Returns
    -------
    bool

    References
    ----------
    Schulman et al. (2015), eq. (12) (the trust-region constraint).
    """
    if max_kl is None:
        return True
    bound = kl_bound_factor * max_kl
    return bool(kl < bound) if kl_strict else bool(kl <= bound)


def improvement_ok(improvement: float, require_improvement: str = "strict") -> bool:
    r""":math:`\Delta L > 0` ("strict"), :math:`\Delta L \ge 0` ("nonstrict") or no test ("none").

    .. math:: \Delta L = L(\theta) - L(\theta_{old}) > 0

    Parameters
    ----------
    improvement : float
        ΔL of the try.
    require_improvement : {"strict", "nonstrict", "none"}

    Returns
    -------
    bool
    """
    if require_improvement == "strict":
        return improvement > 0.0
    if require_improvement == "nonstrict":
        return improvement >= 0.0
    return True


def improvement_ratio(improvement: float, expected_improvement: float) -> float:
    r""":math:`\Delta L / \Delta L_{exp}`, NaN when :math:`\Delta L_{exp} = 0`.

    .. math:: r = \frac{\Delta L}{\Delta L_{exp}}

    Parameters
    ----------
    improvement : float
        Actual ΔL.
    expected_improvement : float
        :math:`\Delta L_{exp}`, the linear prediction :math:`g^\top\Delta\theta` of the try.

    Returns
    -------
    float
    """
    if expected_improvement == 0.0:
        return math.nan
    return improvement / expected_improvement


def _check_args(backtrack_coeff, backtrack_iters, max_kl, kl_bound_factor, require_improvement, improve_ratio):
    if not (0.0 < backtrack_coeff < 1.0):
        raise ValueError(f"backtrack_coeff must be in (0, 1), got {backtrack_coeff!r}")
    if isinstance(backtrack_iters, bool) or not isinstance(backtrack_iters, numbers.Integral) or backtrack_iters < 1:
        raise ValueError(f"backtrack_iters must be an int >= 1, got {backtrack_iters!r}")
    if max_kl is not None and not (math.isfinite(max_kl) and max_kl >= 0.0):
        raise ValueError(f"max_kl must be None or finite and >= 0, got {max_kl!r}")
    if not (math.isfinite(kl_bound_factor) and kl_bound_factor > 0.0):
        raise ValueError(f"kl_bound_factor must be finite and > 0, got {kl_bound_factor!r}")
    if require_improvement not in REQUIRE_IMPROVEMENT:
        raise ValueError(f"require_improvement must be one of {REQUIRE_IMPROVEMENT}, got {require_improvement!r}")
    if improve_ratio is not None and not math.isfinite(improve_ratio):
        raise ValueError(f"improve_ratio must be None or finite, got {improve_ratio!r}")


def backtracking_line_search(
    evaluate: Callable[[Any], tuple],
    x0,
    full_step,
    expected_improvement: float,
    *,
    backtrack_coeff: float = 0.5,
    backtrack_iters: int = 10,
    max_kl: float | None = None,
    kl_bound_factor: float = 1.0,
    kl_strict: bool = False,
    require_improvement: str = "strict",
    improve_ratio: float | None = None,
    check_finite: bool = True,
) -> LineSearchResult:
    r"""Try :math:`x_j = x_0 + \alpha^j s` for j = 0, 1, ... and accept the first admissible one.

    .. math::

        x_j = x_0 + \alpha^j s,\qquad j = 0, \dots, J-1,

    accept the first :math:`x_j` with

    .. math::

        \bar D_{KL}(x_j) \le c\,\delta\ (\text{or} <),\qquad
        \Delta L_j > 0\ (\text{or} \ge 0,\ \text{or no test}),\qquad
        \frac{\Delta L_j}{\alpha^j\,\Delta L_{exp}} > \rho\ (\text{optional}),

    and all of :math:`\Delta L_j, \bar D_{KL}(x_j)` finite; if none is
    accepted, return :math:`x_0`.

    Parameters
    ----------
    evaluate : callable
        ``evaluate(x_try) -> (improvement, kl)``: :math:`\Delta L = L(x_{try}) - L(x_0)`
        and the KL at ``x_try`` as Python floats (or 0-d arrays); ``kl`` may
        be None when ``max_kl`` is None.
    x0 : array
        Starting point (:math:`\theta_{old}`); returned unchanged, as the same
        object, when no try is accepted.
    full_step : array
        :math:`s` (:math:`\beta x` in TRPO), same shape as ``x0``.
    expected_improvement : float
        :math:`\Delta L_{exp}`, the first-order improvement of the full step
        (:math:`\beta\, g^\top x` in TRPO); only the ratio test and the record
        use it.
    backtrack_coeff : float in (0, 1), default 0.5
        :math:`\alpha`.
    backtrack_iters : int >= 1, default 10
        :math:`J`, the most tries.
    max_kl : float or None
        :math:`\delta`; None skips the KL test (modular_rl).
    kl_bound_factor : float, default 1.0
        :math:`c` (1.5 in OpenAI baselines).
    kl_strict : bool, default False
        Use :math:`<` instead of :math:`\le` (SB3-contrib).
    require_improvement : {"strict", "nonstrict", "none"}
        :math:`\Delta L > 0`, :math:`\ge 0`, or no test.
    improve_ratio : float or None
        :math:`\rho` (0.1 in modular_rl); a try with
        :math:`\alpha^j\Delta L_{exp} \le 0` fails this test.
    check_finite : bool, default True
        Reject tries whose improvement or KL is NaN or infinite.

    Returns
    -------
    LineSearchResult

    Raises
    ------
    ValueError
        An argument out of range (named in the message), or ``evaluate``
        returned ``kl=None`` while ``max_kl`` is set.

    Notes
    -----
    ``evaluate`` is called once per try and never after the accepted one.
    Fractions are :math:`\alpha^j` computed in Python floats.
    """
    _check_args(backtrack_coeff, backtrack_iters, max_kl, kl_bound_factor, require_improvement, improve_ratio)
    full_expected = backend.to_float(expected_improvement)
    tries = []
    for j in range(backtrack_iters):
        fraction = backtrack_coeff**j
        x_try = x0 + fraction * full_step                     # x_j = x_0 + α^j s
        improvement, kl = evaluate(x_try)
        improvement = backend.to_float(improvement)
        if kl is not None:
            kl = backend.to_float(kl)
        elif max_kl is not None:
            raise ValueError("evaluate returned kl=None but max_kl is set")
        expected = fraction * full_expected                   # α^j ΔL_exp
        ratio = improvement_ratio(improvement, expected)
        finite = (not check_finite) or (math.isfinite(improvement) and (kl is None or math.isfinite(kl)))
        ok_kl = kl_ok(kl, max_kl, kl_bound_factor, kl_strict)
        ok_improvement = improvement_ok(improvement, require_improvement)
        if improve_ratio is not None:
            ok_improvement = ok_improvement and expected > 0.0 and ratio > improve_ratio
        accepted = finite and ok_kl and ok_improvement
        tries.append(LineSearchTry(j, fraction, kl, improvement, expected, ratio,
                                   finite, ok_kl, ok_improvement, accepted))
        if accepted:
            return LineSearchResult(x_try, j, tuple(tries), True)
    return LineSearchResult(x0, None, tuple(tries), False)
