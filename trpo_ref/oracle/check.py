r"""`check_trace`: the verdict on a candidate trace (stage-wise by default), with the drift section.

The drift section sets the candidate's end-to-end distance from trpo_ref's own
chain beside the spread trpo_ref shows on *itself* for the same case — its
update recomputed with the batch summed in other orders and with θ_old moved
by ±1 ulp, in the candidate's dtype — so a user reads, e.g., "step_dir: drift
3e-05, rounding alone gives up to 5e-05 here".  The drift is an explanation,
not the verdict: on a realistic network CG amplifies rounding, and only the
stage-wise rows can charge an error to the stage that made it.
"""

from __future__ import annotations

import math
import os

import numpy as np

from ..trpo import PRESETS, TRPOConfig
from .compare import Report, compare_traces, scale_of
from .io import Trace, load_trace
from .record import recompute
from .schema import DEFAULT_ATOL, DEFAULT_RTOL
from .stagewise import check_stagewise

__all__ = ["check_trace", "rounding_spread", "DRIFT_KEYS", "MODES"]

MODES = ("stage-wise", "end-to-end")
#: A drift more than this many times trpo_ref's own rounding spread is called "beyond rounding".
DRIFT_FACTOR = 10.0
#: Quantities of the drift section, in the order of the update.
DRIFT_KEYS = ("g", "step_dir", "Fx", "xFx", "beta", "full_step", "expected_improvement", "theta_new", "kl",
              "surrogate_change")


def _rel(ref: np.ndarray, cand: np.ndarray, base: np.ndarray | None = None) -> float:
    """max|c − r| / max|r|, or / max|r − base| for θ_new (its change, not θ itself)."""
    r = np.asarray(ref, np.float64)
    c = np.asarray(cand, np.float64)
    if r.shape != c.shape:
        return math.inf
    if not (np.all(np.isfinite(r)) and np.all(np.isfinite(c))):
        return 0.0 if np.array_equal(r, c, equal_nan=True) else math.inf
    scale = scale_of(r - base) if base is not None else scale_of(r)
    d = float(np.abs(c - r).max()) if r.size else 0.0
    return d / scale if scale > 0 else (0.0 if d == 0 else math.inf)


def rounding_spread(trace: Trace, own: Trace | None = None, runs: int = 3) -> dict[str, float]:
    """How far trpo_ref's own update moves from itself on this case by rounding alone.

    Recomputes the update in the trace's dtype with the batch summed in other
    orders (the same sample subsets) and at θ_old ± 1 ulp, and returns, per
    key of :data:`DRIFT_KEYS`, the largest relative distance from trpo_ref's
    float64 chain ``own``.
    """
    from .cases import candidate_update

    own = recompute(trace) if own is None else own
    x0 = trace.x0
    policy, config, batch = trace.policy, trace.config, trace.batch()
    theta = trace.theta_old.astype(np.float64)
    variants = [dict(permute_seed=1), dict(ulp_seed=1), dict(permute_seed=2, ulp_seed=2)][:runs]
    if trace.dtype == "float32":
        variants = [dict()] + variants[:-1]  # the float32 computation itself is the first perturbation
    worst = {k: 0.0 for k in DRIFT_KEYS}
    for v in variants:
        run = candidate_update(policy, theta, batch, config, dtype=trace.dtype,
                               x0=None if x0 is None else x0.astype(np.float64), **v)
        for k in DRIFT_KEYS:
            if k in run.arrays and k in own.arrays:
                worst[k] = max(worst[k], _rel(own[k], run[k], theta if k == "theta_new" else None))
    return worst


def _drift_section(trace: Trace, own: Trace) -> list[str]:
    spread = rounding_spread(trace, own)
    theta = trace.theta_old.astype(np.float64)
    lines = [f"drift from trpo_ref's own chain (end-to-end, relative), beside the spread rounding alone gives "
             f"trpo_ref here ({trace.dtype}; batch summed in other orders, θ_old ± 1 ulp):",
             f"  {'quantity':<22} {'drift':>10} {'rounding alone':>15}"]
    worst_ratio, worst_key = 0.0, None
    for k in DRIFT_KEYS:
        if k not in trace.arrays or k not in own.arrays:
            continue
        d = _rel(own[k], trace[k], theta if k == "theta_new" else None)
        s = spread[k]
        lines.append(f"  {k:<22} {d:>10.1e} {s:>15.1e}")
        floor = 10 * float(np.finfo(np.float32 if trace.dtype == "float32" else np.float64).eps)
        ratio = d / max(s, floor)
        if ratio > worst_ratio:
            worst_ratio, worst_key = ratio, k
    # Three recomputations estimate the rounding spread only roughly: a correct update's
    # drift reaches up to ~5x it (measured); beyond 10x it is more than rounding.
    if worst_key is None or worst_ratio <= DRIFT_FACTOR:
        lines.append(f"  the drift is within {DRIFT_FACTOR:g}x what rounding alone gives here "
                     f"(largest: {worst_key or '-'}, {worst_ratio:.1f}x)")
    else:
        lines.append(f"  largest drift beyond rounding: {worst_key}, {worst_ratio:.1f}x the spread "
                     "(explanation only: the stage-wise rows are the verdict)")
    return lines


def _preset_note(trace: Trace) -> str | None:
    name = trace.preset
    if not name or name not in PRESETS:
        return None
    want = TRPOConfig.preset(name).to_dict()
    have = trace.meta["config"]
    diff = sorted(k for k in want if k in have and want[k] != have[k])
    if not diff:
        return None
    return (f"note: the config differs from preset {name!r} in " +
            ", ".join(f"{k}={have[k]!r} (preset {want[k]!r})" for k in diff))


def check_trace(path_or_trace, rtol: float | None = None, atol: float | None = None, *, mode: str = "stage-wise",
                drift: bool = True) -> Report:
    """Check a candidate trace against trpo_ref.

    Parameters
    ----------
    path_or_trace : str, Path or Trace
    rtol, atol : float, optional
        Stage-wise: ``rtol`` defaults to the tolerance of the trace's dtype
        (:data:`~trpo_ref.oracle.schema.TOLERANCES`); ``atol`` is not used.
        End-to-end: defaults :data:`DEFAULT_RTOL`, :data:`DEFAULT_ATOL`.
    mode : {"stage-wise", "end-to-end"}
        Stage-wise (default): each quantity recomputed from the candidate's own
        upstream values.  End-to-end: the candidate against trpo_ref's whole update.
    drift : bool
        Stage-wise only: add the drift section (costs three more updates).

    Returns
    -------
    Report
        ``report.ok``, ``report.first_failure`` and one row per quantity.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    trace = path_or_trace if isinstance(path_or_trace, Trace) else load_trace(path_or_trace)
    own = recompute(trace)
    if mode == "end-to-end":
        report = compare_traces(own, trace, DEFAULT_RTOL if rtol is None else rtol,
                                DEFAULT_ATOL if atol is None else atol)
    else:
        if atol is not None and atol != 0:
            raise ValueError("atol is not used by the stage-wise check (quantities that cancel are scaled by "
                             "their terms); give rtol, or use mode='end-to-end'")
        report = check_stagewise(trace, rtol, own)
        if drift:
            report.drift = _drift_section(trace, own)
    if isinstance(path_or_trace, (str, os.PathLike)):
        report.header.insert(0, f"trace: {path_or_trace} (format v{trace.meta['format_version']}, "
                                f"status {trace.status})")
    note = _preset_note(trace)
    if note:
        report.notes.append(note)
    # Consistency of the batch with the weights: on-policy data has logp_old = log π_θold(a|s).
    dev = np.abs(own.arrays["logp"] - trace.arrays["logp_old"].astype(np.float64))
    worst = float(dev.max())
    if worst > 1e-6 * max(1.0, float(np.abs(own.arrays["logp"]).max())):
        report.notes.append(
            f"note: the batch's logp_old differs from trpo_ref's log π_θold(a|s) by up to {worst:.3e} "
            f"(sample {int(dev.argmax())}); if the batch was sampled from these weights, the weights, the "
            "layout or the activation do not match the policy that sampled it (float32 sampling alone gives ~1e-6)")
    return report
