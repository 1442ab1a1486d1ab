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
