"""Recording trpo_ref's own update: :func:`compute_trace` turns one ``trpo_step`` into a :class:`Trace`."""

from __future__ import annotations

import math

import numpy as np

from .. import backend
from ..trpo import PRESETS, Batch, TRPOConfig, trpo_step
from .io import Trace, check_shapes, version
from .schema import FORMAT_NAME, FORMAT_VERSION, INPUT_KEYS, OUTPUT_KEYS

__all__ = ["compute_trace", "recompute", "make_meta"]


def make_meta(policy, config: TRPOConfig, preset: str | None, status: str, producer: str | None = None,
              dtype: str | None = None) -> dict:
    """The metadata of a trace (see docs/trace-format.md, "Metadata")."""
    meta = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "trpo_ref_version": version(),
        "producer": producer or f"trpo_ref {version()}",
        "preset": preset,
        "policy": policy.spec(),
        "config": config.to_dict(),
        "status": status,
    }
    if dtype is not None:
        meta["dtype"] = dtype
    return meta


def compute_trace(policy, theta, batch: Batch, config: TRPOConfig | None = None, preset: str | None = None,
                  *, x0=None, producer: str | None = None) -> Trace:
    """Run :func:`trpo_ref.trpo.trpo_step` once and record inputs and every intermediate.

    Parameters
    ----------
    policy : MLPPolicy
    theta : array (P,)
        θ_old (any backend and dtype; stored on the host in its dtype).
    batch : Batch
    config : TRPOConfig, optional
        Defaults to ``TRPOConfig.preset(preset)``.
    preset : str, optional
        Name recorded in the metadata (informational; the config decides).
    x0 : array (P,), optional
        Explicit CG start.  With ``config.cg_x0 == "random"`` the random start
        trpo_step draws is recorded as ``cg_x0`` so a replay is exact.
    producer : str, optional
        Free text naming the implementation (default: this trpo_ref).

    Returns
    -------
    Trace
        Arrays in θ's dtype (float32 for a float32 update; meta ``dtype`` says which).
    """
    if config is None:
        if preset is None:
            raise ValueError("compute_trace needs a config or a preset name")
        config = TRPOConfig.preset(preset)
    if preset is not None and preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    theta_new, info = trpo_step(policy, theta, batch, config, x0=x0)
    H = backend.to_numpy
    th = H(theta)
    ft = np.float32 if th.dtype == np.float32 else np.float64
    P = policy.num_params
    cg = info.cg
    tries = info.tries

    def vec(x):
        return np.zeros(P, ft) if x is None else H(x).astype(ft).copy()

    def stack(rows):
        return np.stack([H(r) for r in rows]).astype(ft) if rows else np.zeros((0, P), ft)

    def scalar(v):
        return np.array(v, dtype=ft)

    arrays: dict[str, np.ndarray] = {
        "theta_old": th.copy(),
        "obs": H(batch.obs).copy(),
        "act": H(batch.act).copy(),
        "adv": H(batch.adv).copy(),
        "logp_old": H(batch.logp_old).copy(),
    }
    if info.x0 is not None:
        arrays["cg_x0"] = vec(info.x0)
        arrays["Fx0"] = vec(info.Fx0)
    arrays.update({
        "logp": H(policy.log_prob(theta, batch.obs, batch.act)).astype(ft).copy(),
        "adv_used": H(info.adv).astype(ft).copy(),
        "adv_std_zero": np.array(bool(info.adv_std_zero)),
        "surrogate_before": scalar(info.surrogate_before),
        "entropy": scalar(info.entropy),
        "g": vec(info.g),
        "fisher_v": stack([v for v, _ in info.fisher_products]),
        "fisher_Fv": stack([fv for _, fv in info.fisher_products]),
        "cg_iterates": stack(list(cg.iterates or ()) if cg is not None else []),
        "cg_residual_norms": np.array(cg.residual_norms if cg is not None else (), dtype=ft),
        "cg_pAp": np.array(cg.pAp if cg is not None else (), dtype=ft),
        "cg_n_iter": np.array(cg.n_iter if cg is not None else -1, dtype=np.int64),
        "cg_converged": np.array(bool(cg.converged) if cg is not None else False),
        "cg_breakdown": np.array(bool(cg.breakdown) if cg is not None else False),
        "step_dir": vec(info.step_dir),
        "Fx": vec(info.Fx),
        "xFx": scalar(info.xFx),
        "beta": scalar(info.beta),
        "full_step": vec(info.full_step),
        "expected_improvement": scalar(info.expected_improvement),
        "ls_fraction": np.array([t.fraction for t in tries], dtype=ft),
        "ls_kl": np.array([math.nan if t.kl is None else t.kl for t in tries], dtype=ft),
        "ls_improvement": np.array([t.improvement for t in tries], dtype=ft),
        "ls_expected_improvement": np.array([t.expected_improvement for t in tries], dtype=ft),
        "ls_ratio": np.array([t.ratio for t in tries], dtype=ft),
        "ls_finite": np.array([t.finite for t in tries], dtype=bool),
        "ls_kl_ok": np.array([t.kl_ok for t in tries], dtype=bool),
        "ls_improvement_ok": np.array([t.improvement_ok for t in tries], dtype=bool),
        "ls_accepted": np.array([t.accepted for t in tries], dtype=bool),
        "accepted_index": np.array(-1 if info.accepted_index is None else info.accepted_index, dtype=np.int64),
        "theta_new": vec(theta_new),
        "kl": scalar(info.kl),
        "surrogate_after": scalar(info.surrogate_after),
        "surrogate_change": scalar(info.surrogate_change),
    })
    dtype = "float32" if ft == np.float32 else "float64"
    unknown = set(arrays) - set(INPUT_KEYS) - set(OUTPUT_KEYS)
    if unknown:  # the schema names every key a trace may hold
        raise AssertionError(f"compute_trace recorded keys the schema does not know: {sorted(unknown)}")
    check_shapes(arrays, policy, "compute_trace")  # and their shapes and dtypes
    return Trace(make_meta(policy, config, preset, info.status, producer, dtype), arrays)


def recompute(trace: Trace) -> Trace:
    """trpo_ref's own chain: its update on ``trace``'s inputs, in float64 NumPy."""
    x0 = trace.x0
    ref = compute_trace(trace.policy, trace.theta_old.astype(np.float64), trace.batch(), trace.config,
                        x0=None if x0 is None else x0.astype(np.float64))
    ref.meta["preset"] = trace.preset
    return ref
