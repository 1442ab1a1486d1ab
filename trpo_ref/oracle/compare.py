"""Comparing traces: :class:`Row`, :class:`Report`, and the end-to-end comparison :func:`compare_traces`.

Comparison rule (per quantity): with r the reference and c the candidate,
``max|c − r| ≤ atol + rtol·scale`` with scale = max|r| (a norm-wise test:
rounding in a sum is relative to the size of its terms, not of a cancelled
result).  Decisions are compared exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .io import Trace, load_trace
from .schema import DEFAULT_ATOL, DEFAULT_RTOL, FIELDS, INPUT_KEYS, OUTPUT_KEYS

__all__ = ["Row", "Report", "compare_traces", "compare_files", "param_locator", "compare_float", "scale_of"]

#: CG's sequences, compared on the scale of the whole sequence (the schema says which).
_CG_SEQUENCES = tuple(f.key for f in FIELDS if "whole sequence" in f.end_to_end)
_LS_FLOAT = ("ls_fraction", "ls_kl", "ls_improvement", "ls_expected_improvement", "ls_ratio")
_LS_BOOL = ("ls_finite", "ls_kl_ok", "ls_improvement_ok", "ls_accepted")


@dataclass(frozen=True)
class Row:
    """One compared quantity.

    ``status`` is ``"ok"``, ``"FAIL"`` or ``"skipped"`` (not recorded in the
    candidate).  ``max_abs`` is max|c − r|; ``max_rel`` is max|c − r| / max|r|
    (norm-wise); ``where`` names the worst entry (a parameter block for θ-sized
    vectors, a sample index for batch-sized ones).
    """

    name: str
    description: str
    shape: tuple
    max_abs: float
    max_rel: float
    status: str
    where: str = ""
    exact: bool = False

    @property
    def ok(self) -> bool:
        r"""True unless the row's status is ``"FAIL"``."""
        return self.status != "FAIL"

    def to_dict(self) -> dict:
        r"""JSON-serialisable form of the row.

        Returns
        -------
        dict
        """
        return {"name": self.name, "description": self.description, "shape": list(self.shape),
                "max_abs": self.max_abs, "max_rel": self.max_rel, "status": self.status, "where": self.where,
                "exact": self.exact}


@dataclass
class Report:
    """Quantity-by-quantity comparison, rows in the order the algorithm computes them."""

    rows: list[Row]
    rtol: float
    atol: float
    header: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: "end-to-end" (candidate against trpo_ref's own chain) or "stage-wise".
    mode: str = "end-to-end"
    #: Text of the drift section (stage-wise reports; empty otherwise).
    drift: list[str] = field(default_factory=list)
    #: Stage-wise: the rounding floor relative to a quantity's terms.
    terms_rtol: float = 0.0

    @property
    def ok(self) -> bool:
        r"""True when no row failed."""
        return all(r.ok for r in self.rows)

    @property
    def failures(self) -> list[Row]:
        r"""The failing rows, in order."""
        return [r for r in self.rows if not r.ok]

    @property
    def first_failure(self) -> Row | None:
        r"""The first failing row in the algorithm's order, or None."""
        return next((r for r in self.rows if not r.ok), None)

    def row(self, name: str) -> Row:
        r"""The row called ``name``.

        Parameters
        ----------
        name : str

        Returns
        -------
        Row

        Raises
        ------
        KeyError
            When no row has that name.
        """
        for r in self.rows:
            if r.name == name:
                return r
        raise KeyError(f"no row named {name!r}")

    def max_errors(self) -> tuple[float, float]:
        """Largest max_abs and max_rel over the compared (non-exact, non-skipped) rows."""
        rows = [r for r in self.rows if r.status != "skipped" and not r.exact]
        if not rows:
            return 0.0, 0.0
        return max(r.max_abs for r in rows), max(r.max_rel for r in rows)

    def to_dict(self) -> dict:
        r"""JSON-serialisable form of the report (``ok``, tolerances, header, notes, rows).

        Returns
        -------
        dict
        """
        ff = self.first_failure
        return {"ok": self.ok, "mode": self.mode, "rtol": self.rtol, "atol": self.atol, "header": list(self.header),
                "drift": list(self.drift),
                "notes": list(self.notes), "first_failure": None if ff is None else ff.name,
                "rows": [r.to_dict() for r in self.rows]}

    def to_text(self, show: str = "all") -> str:
        r"""The table.  ``show="failures"`` keeps only failing rows (and the summary).

        Parameters
        ----------
        show : {"all", "failures"}

        Returns
        -------
        str
        """
        out = list(self.header)
        if self.mode == "stage-wise":
            out.append("stage-wise: each quantity recomputed from the candidate's own upstream values; "
                       f"max|cand - ref| <= max(rtol * max|ref|, terms_rtol * terms) (rtol {self.rtol:g}, "
                       f"terms_rtol {self.terms_rtol:g}); decisions exact")
        else:
            out.append(f"end-to-end: max|cand - ref| <= atol + rtol * max|ref|  (rtol {self.rtol:g}, "
                       f"atol {self.atol:g}); decisions exact")
        out.append("")
        name_w = max([len(r.name) for r in self.rows] + [8])
        out.append(f"{'#':>3}  {'quantity':<{name_w}}  {'shape':<10} {'max abs err':>11} {'max rel err':>11}  "
                   f"{'':<7} worst at / note")
        for i, r in enumerate(self.rows, 1):
            if show == "failures" and r.ok:
                continue
            if r.status == "skipped":
                abs_s = rel_s = "--"
            elif r.exact:
                abs_s = f"{r.max_abs:11.0f}" if math.isfinite(r.max_abs) else "inf"
                rel_s = "exact"
            else:
                abs_s, rel_s = f"{r.max_abs:11.3e}", f"{r.max_rel:11.3e}"
            shape = "x".join(str(s) for s in r.shape) if r.shape else "()"
            out.append(f"{i:>3}  {r.name:<{name_w}}  {shape:<10} {abs_s:>11} {rel_s:>11}  {r.status:<7} {r.where}")
        out.append("")
        if self.drift:
            out.extend(self.drift)
            out.append("")
        out.extend(self.notes)
        n_skip = sum(r.status == "skipped" for r in self.rows)
        n_cmp = len(self.rows) - n_skip
        ff = self.first_failure
        if ff is None:
            out.append(f"OK: all {n_cmp} compared quantities agree" + (f" ({n_skip} not recorded)" if n_skip else ""))
        else:
            detail = "" if ff.exact else f" (max abs err {ff.max_abs:.3e}, max rel err {ff.max_rel:.3e})"
            where = f", worst at {ff.where}" if ff.where else ""
            out.append(f"FAIL: {len(self.failures)} of {n_cmp} quantities out of tolerance; "
                       f"first: {ff.name} -- {ff.description}{detail}{where}")
        return "\n".join(out)

    def __str__(self) -> str:
        return self.to_text()


def param_locator(policy):
    """index in θ -> 'W1[2,3]' style name."""
    shapes = policy.param_shapes()
    bounds = []
    pos = 0
    for name, shape in shapes.items():
        size = int(np.prod(shape)) if shape else 1
        bounds.append((pos, pos + size, name, shape))
        pos += size

    def locate(i: int) -> str:
        for s, e, name, shape in bounds:
            if s <= i < e:
                idx = np.unravel_index(i - s, shape)
                return f"{name}[{','.join(str(int(j)) for j in idx)}]"
        return f"[{i}]"

    return locate


def compare_float(ref: np.ndarray, cand: np.ndarray, rtol: float, atol: float, locate=None,
                   scale: float | None = None):
    """(max_abs, max_rel, ok, where) under the norm-wise rule; NaN/inf must match in place.

    ``scale`` overrides max|ref| (CG's sequences are judged on the scale of the whole sequence).
    """
    ref = np.asarray(ref, dtype=np.float64)
    cand = np.asarray(cand, dtype=np.float64)
    if ref.shape != cand.shape:
        return math.inf, math.inf, False, f"shape {cand.shape} vs reference {ref.shape}"
    if ref.size == 0:
        return 0.0, 0.0, True, ""
    same_nonfinite = (~np.isfinite(ref)) & (~np.isfinite(cand)) & ((ref == cand) | (np.isnan(ref) & np.isnan(cand)))
    diff = np.where(same_nonfinite, 0.0, np.abs(cand - ref))
    diff = np.where(np.isnan(diff), np.inf, diff)
    if scale is None:
        scale = scale_of(ref)
    flat = diff.reshape(-1)
    k = int(np.argmax(flat))
    max_abs = float(flat[k])
    max_rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else math.inf)
    ok = max_abs <= atol + rtol * scale
    where = ""
    if max_abs > 0:
        if locate is not None:
            where = locate(k)
        elif ref.ndim >= 1 and ref.size > 1:
            where = f"[{','.join(str(int(j)) for j in np.unravel_index(k, ref.shape))}]"
        if not math.isfinite(max_abs):
            where = (where + " " if where else "") + "(non-finite mismatch)"
    return max_abs, max_rel, bool(ok), where


def scale_of(arr) -> float:
    """max|a| over the finite entries (0 for none)."""
    a = np.asarray(arr, dtype=np.float64)
    finite = np.abs(a[np.isfinite(a)])
    return float(finite.max()) if finite.size else 0.0


def compare_traces(reference: Trace, candidate: Trace, rtol: float = DEFAULT_RTOL,
                   atol: float = DEFAULT_ATOL) -> Report:
    """Compare ``candidate`` with ``reference``, quantity by quantity.

    Rows come in the order the update computes things: inputs, log-probs at
    θ_old, advantages used, surrogate, g, then CG (each Fisher product
    interleaved with the iterate it produces), x, (F+λ_d I)x, xᵀ(F+λ_d I)x, β, the
    full step, each line-search try (fraction, KL, improvement, expected
    improvement, ratio, decisions), the accepted index, θ_new, the final KL,
    surrogate and surrogate change, the status.  An
    output the candidate did not record is ``skipped``; an item present in one
    trace and not the other (e.g. an extra CG iteration) fails.

    Parameters
    ----------
    reference, candidate : Trace
    rtol, atol : float
        Norm-wise test ``max|c − r| ≤ atol + rtol·max|r|`` per quantity.
    """
    if not (rtol >= 0 and atol >= 0 and math.isfinite(rtol) and math.isfinite(atol)):
        raise ValueError(f"rtol and atol must be finite and >= 0, got {rtol!r}, {atol!r}")
    R, C = reference.arrays, candidate.arrays
    rows: list[Row] = []
    try:
        locate_p = param_locator(reference.policy)
    except ValueError:
        locate_p = None

    def add_float(name, desc, r, c, locate=None, scale=None):
        if c is None:
            rows.append(Row(name, desc, tuple(np.shape(r)), math.nan, math.nan, "skipped", "not recorded"))
            return
        if r is None:
            rows.append(Row(name, desc, tuple(np.shape(c)), math.inf, math.inf, "FAIL", "not in the reference"))
            return
        a, rel, ok, where = compare_float(r, c, rtol, atol, locate, scale)
        rows.append(Row(name, desc, tuple(np.shape(r)), a, rel, "ok" if ok else "FAIL", where))

    def add_exact(name, desc, r, c):
        if c is None:
            rows.append(Row(name, desc, tuple(np.shape(r)), math.nan, math.nan, "skipped", "not recorded", True))
            return
        if r is None:
            rows.append(Row(name, desc, tuple(np.shape(c)), math.inf, math.inf, "FAIL", "not in the reference", True))
            return
        r_a, c_a = np.asarray(r), np.asarray(c)
        if r_a.shape != c_a.shape:
            rows.append(Row(name, desc, r_a.shape, math.inf, math.inf, "FAIL",
                            f"shape {c_a.shape} vs reference {r_a.shape}", True))
            return
        n_diff = int(np.sum(r_a != c_a)) if r_a.dtype.kind != "U" else int(r_a != c_a)
        where = "" if n_diff == 0 else (f"candidate {c_a.tolist()!r}, reference {r_a.tolist()!r}")
        rows.append(Row(name, desc, r_a.shape, float(n_diff), float(n_diff), "ok" if n_diff == 0 else "FAIL",
                        where, True))

    def key(name, k, desc, locate=None):
        add_float(name, desc, R.get(k), C.get(k), locate)

    def item(arr_dict, k, i):
        a = arr_dict.get(k)
        if a is None or i >= a.shape[0]:
            return None
        return a[i]

    def add_item(name, desc, k, i, locate=None, exact=False):
        r, c = item(R, k, i), item(C, k, i)
        if c is None and k in C:
            c_missing = True
        else:
            c_missing = False
        if r is None and c is None:
            return
        if c_missing:
            rows.append(Row(name, desc, tuple(np.shape(r)), math.inf, math.inf, "FAIL", "missing in the candidate", exact))
        elif exact:
            add_exact(name, desc, r, c)
        else:
            # CG computes its sequences to an accuracy relative to the start of the
            # sequence, not to their (decaying) late members: judge each member on the
            # scale of the whole reference sequence.
            add_float(name, desc, r, c, locate, scale_of(R[k]) if k in _CG_SEQUENCES and k in R else None)

    # inputs: a candidate computed from other inputs cannot be compared
    for k in ("theta_old", "obs", "act", "adv", "logp_old", "cg_x0"):
        if k in R or k in C:
            if np.asarray(R.get(k, C.get(k))).dtype.kind in "iu":
                add_exact(f"input.{k}", INPUT_KEYS[k][0], R.get(k), C.get(k))
            else:
                add_float(f"input.{k}", INPUT_KEYS[k][0], R.get(k), C.get(k), locate_p if k in ("theta_old", "cg_x0") else None)
    n_loc = (lambda i: f"n={i}")
    key("logp", "logp", OUTPUT_KEYS["logp"], n_loc)
    key("adv_used", "adv_used", OUTPUT_KEYS["adv_used"], n_loc)
    add_exact("adv_std_zero", OUTPUT_KEYS["adv_std_zero"], R.get("adv_std_zero"), C.get("adv_std_zero"))
    key("surrogate_before", "surrogate_before", OUTPUT_KEYS["surrogate_before"])
    key("entropy", "entropy", OUTPUT_KEYS["entropy"])
    key("g", "g", OUTPUT_KEYS["g"], locate_p)

    # CG: Fisher products interleaved with the iterates they produce.
    n_prod = max(R.get("fisher_v", np.zeros((0,))).shape[0], C.get("fisher_v", np.zeros((0,))).shape[0])
    n_it = max(R.get("cg_iterates", np.zeros((0,))).shape[0], C.get("cg_iterates", np.zeros((0,))).shape[0])
    if "Fx0" in R or "Fx0" in C:
        key("Fx0", "Fx0", OUTPUT_KEYS["Fx0"], locate_p)
    add_item("cg.r[0]", "‖r₀‖ = ‖g − (F+λ_d I)x₀‖", "cg_residual_norms", 0)
    for i in range(max(n_prod, n_it)):
        add_item(f"fisher[{i}].v", f"CG direction p_{i}", "fisher_v", i, locate_p)
        add_item(f"fisher[{i}].Fv", f"(F+λ_d I)p_{i}", "fisher_Fv", i, locate_p)
        add_item(f"cg.pAp[{i}]", f"p_{i}ᵀ(F+λ_d I)p_{i}", "cg_pAp", i)
        add_item(f"cg.x[{i + 1}]", f"CG iterate x_{i + 1}", "cg_iterates", i, locate_p)
        add_item(f"cg.r[{i + 1}]", f"‖r_{i + 1}‖", "cg_residual_norms", i + 1)
    add_exact("cg.n_iter", OUTPUT_KEYS["cg_n_iter"], R.get("cg_n_iter"), C.get("cg_n_iter"))
    add_exact("cg.converged", OUTPUT_KEYS["cg_converged"], R.get("cg_converged"), C.get("cg_converged"))
    add_exact("cg.breakdown", OUTPUT_KEYS["cg_breakdown"], R.get("cg_breakdown"), C.get("cg_breakdown"))
    key("step_dir", "step_dir", OUTPUT_KEYS["step_dir"], locate_p)
    key("Fx", "Fx", OUTPUT_KEYS["Fx"], locate_p)
    key("xFx", "xFx", OUTPUT_KEYS["xFx"])
    key("beta", "beta", OUTPUT_KEYS["beta"])
    key("full_step", "full_step", OUTPUT_KEYS["full_step"], locate_p)
    key("expected_improvement", "expected_improvement", OUTPUT_KEYS["expected_improvement"])

    n_try = max([a.shape[0] for d in (R, C) for k, a in d.items() if k in _LS_FLOAT + _LS_BOOL] + [0])
    for j in range(n_try):
        add_item(f"ls[{j}].fraction", f"fraction α^{j} of try {j}", "ls_fraction", j)
        add_item(f"ls[{j}].kl", f"KL of try {j}", "ls_kl", j)
        add_item(f"ls[{j}].improvement", f"L(θ_{j}) − L(θ_old) of try {j}", "ls_improvement", j)
        add_item(f"ls[{j}].expected_improvement", f"α^{j} βgᵀx of try {j}", "ls_expected_improvement", j)
        add_item(f"ls[{j}].ratio", f"improvement / expected improvement of try {j}", "ls_ratio", j)
        r_dec = [item(R, k, j) for k in _LS_BOOL]
        c_dec = [item(C, k, j) for k in _LS_BOOL]
        if all(v is None for v in c_dec) and not any(k in C for k in _LS_BOOL):
            c_arr = None
        else:
            c_arr = np.array([bool(v) if v is not None else False for v in c_dec])
        r_arr = None if all(v is None for v in r_dec) else np.array([bool(v) for v in r_dec])
        if c_arr is not None and r_arr is not None and any(v is None for v in c_dec):
            rows.append(Row(f"ls[{j}].decision", f"tests of try {j} (finite, kl_ok, improvement_ok, accepted)",
                            (4,), math.inf, math.inf, "FAIL", "missing in the candidate", True))
        else:
            add_exact(f"ls[{j}].decision", f"tests of try {j} (finite, kl_ok, improvement_ok, accepted)", r_arr, c_arr)
    add_exact("accepted_index", OUTPUT_KEYS["accepted_index"], R.get("accepted_index"), C.get("accepted_index"))
    key("theta_new", "theta_new", OUTPUT_KEYS["theta_new"], locate_p)
    key("kl", "kl", OUTPUT_KEYS["kl"])
    key("surrogate_after", "surrogate_after", OUTPUT_KEYS["surrogate_after"])
    key("surrogate_change", "surrogate_change", OUTPUT_KEYS["surrogate_change"])
    r_status, c_status = reference.status, candidate.status
    add_exact("status", "outcome of the update", None if r_status is None else np.array(r_status),
              None if c_status is None else np.array(c_status))

    header = [f"reference: {reference.meta.get('producer', '?')}; candidate: {candidate.meta.get('producer', '?')}"]
    spec = reference.meta.get("policy", {})
    if spec:
        arch = "-".join(str(s) for s in [spec.get("obs_dim"), *spec.get("hidden_sizes", []), spec.get("out_dim")])
        header.append(f"policy: {spec.get('kind')} {arch} {spec.get('activation')}; "
                      f"preset: {candidate.preset or reference.preset}; N = {R['obs'].shape[0] if 'obs' in R else '?'}")
    return Report(rows, rtol, atol, header)




def compare_files(reference_path, candidate_path, rtol: float = DEFAULT_RTOL, atol: float = DEFAULT_ATOL) -> Report:
    """:func:`compare_traces` on two trace files."""
    ref, cand = load_trace(reference_path), load_trace(candidate_path)
    report = compare_traces(ref, cand, rtol, atol)
    report.header.insert(0, f"reference: {reference_path}; candidate: {candidate_path}")
    return report
