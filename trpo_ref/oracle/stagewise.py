r"""The stage-wise verdict: every recorded quantity recomputed from the candidate's *own* upstream values.

An end-to-end comparison recomputes the whole update and compares; on a
realistic network conjugate gradient amplifies rounding (its late iterates
move by ~1e-3 relative when only the batch order changes), so rounding
travels down the chain and a late row fails, or hides a real bug.  Here each
stage is recomputed in float64 from what the candidate itself recorded
upstream ("teacher forcing"):

==================================  =================================================================
candidate's quantity                recomputed from
==================================  =================================================================
logp, adv_used, surrogate_before,   the inputs
entropy, g
Fx0                                 (F+λ_d I)·(the candidate's x₀)
fisher[k].v                         p₀ = r₀ = g − (F+λ_d I)x₀; p_{k+1} = r_{k+1} + (‖r_{k+1}‖²/‖r_k‖²) p_k
fisher[k].Fv                        (F+λ_d I)·(the candidate's p_k)
cg.pAp[k], cg.x[k+1], cg.r[k+1]     the candidate's p_k, (F+λ_d I)p_k, x_k and ‖r_k‖ (τ_k = ‖r_k‖²/p_kᵀAp_k)
cg.n_iter, converged, breakdown     the configured cap and stopping rule on the candidate's residuals
step_dir, Fx, xFx, beta,            the candidate's last iterate, its x, (F+λ_d I)x, β and g
full_step, expected_improvement
ls[j].*                             θ_j = θ_old + (its fraction)·(its full step); the rule on its values
accepted_index, theta_new, kl, …    the rule; the candidate's accepted θ
==================================  =================================================================

The residual vectors r_k are not in a trace; they are rebuilt by CG's own
recurrence r_{k+1} = r_k − τ_k (F+λ_d I)p_k from the candidate's r₀, τ_k and
products, so their rounding adds up but is never amplified.

Each row passes when ``max|c − r| ≤ max(rtol·max|r|, terms_rtol·terms)``:
relative to the value, with a rounding floor relative to the size of the
terms it is computed from, which matters for a quantity that cancels (the
surrogate at θ_old is ≈0 with normalised advantages; its terms are mean|Â|).
Both depend on the dtype the candidate computed in
(:data:`~trpo_ref.oracle.schema.TOLERANCES`).
"""

from __future__ import annotations

import math

import numpy as np

from ..linesearch import improvement_ok, improvement_ratio, kl_ok
from ..trpo import beta as step_beta, prepare_update
from .compare import Report, Row, compare_float, param_locator
from .io import Trace
from .schema import OUTPUT_KEYS, tolerance

__all__ = ["check_stagewise", "surrogate_terms", "kl_terms", "entropy_terms"]


def surrogate_terms(policy, theta, prep, entropy_coef: float = 0.0) -> float:
    r"""Size of the terms of :math:`L(\theta)`: :math:`\frac1N\sum_n |r_n(\theta)\hat A_n|`, plus :math:`|c_H \bar H|` with an entropy bonus."""
    logp = policy.log_prob(theta, prep.obs, prep.act)
    terms = float(np.mean(np.abs(np.exp(logp - prep.logp_old) * prep.adv)))
    if entropy_coef:
        terms += abs(entropy_coef) * entropy_terms(policy, theta, prep.obs)
    return terms


def kl_terms(policy, theta_old, theta, obs, reverse: bool) -> float:
    r"""Size of the terms of the mean KL between π_old and π_θ (the scale of its rounding), from the policy's head."""
    phi_old, _ = policy._dist(theta_old, obs)
    phi, _ = policy._dist(theta, obs)
    p, q = (phi, phi_old) if reverse else (phi_old, phi)
    return float(np.mean(policy.head.kl_terms(p, q)))


def entropy_terms(policy, theta, obs) -> float:
    r"""Size of the terms of the mean entropy, from the policy's head (Gaussian: :math:`\sum_a |\log\sigma_a| + \tfrac12\log 2\pi e`)."""
    phi, _ = policy._dist(theta, obs)
    return float(policy.head.entropy_terms(phi, obs.shape[0]))


def _stopping_rule(config, rr: float, b_norm: float) -> bool:
    threshold = max(config.cg_rtol * b_norm, config.cg_atol)
    tol = config.cg_residual_tol
    return math.sqrt(rr) <= threshold or (tol is not None and rr < tol)


def check_stagewise(trace: Trace, rtol: float | None = None, own: Trace | None = None) -> Report:
    """The stage-wise verdict on ``trace`` (see the module docstring).

    Parameters
    ----------
    trace : Trace
        The candidate's record (any dtype; compared in float64).
    rtol : float, optional
        Defaults to :func:`~trpo_ref.oracle.schema.tolerance` of ``trace.dtype``.
    own : Trace, optional
        trpo_ref's own chain on the same inputs (:func:`~trpo_ref.oracle.record.recompute`),
        which supplies a quantity the candidate did not record.

    Returns
    -------
    Report
        ``mode="stage-wise"``; one row per recorded quantity in the order the
        update computes them.
    """
    from .record import recompute

    rtol_default, terms_default = tolerance(trace.dtype)
    if rtol is None:
        rtol = rtol_default
    if not (rtol >= 0 and math.isfinite(rtol)):
        raise ValueError(f"rtol must be finite and >= 0, got {rtol!r}")
    # a quantity's rounding floor is terms_rtol·(its terms); with another rtol, the same ratio
    terms_factor = terms_default / rtol_default
    own = recompute(trace) if own is None else own
    policy, cfg = trace.policy, trace.config
    C = {k: (v.astype(np.float64) if v.dtype.kind == "f" else v) for k, v in trace.arrays.items()}
    O = own.arrays
    theta = C["theta_old"]
    x0_in = C.get("cg_x0")
    prep = prepare_update(policy, theta, trace.batch(), cfg, x0=x0_in)
    locate_p = param_locator(policy)
    rows: list[Row] = []
    borrowed: list[str] = []
    notes_pre: list[str] = []
    c_ent = cfg.entropy_coef

    # A candidate's θ may be non-finite (a bug): its quantities are then NaN, and the row fails.
    def is_finite(th):
        return bool(np.all(np.isfinite(th)))

    at_old = policy.at(theta, prep.obs, prep.act)
    evaluated: dict[bytes, tuple] = {}

    def at_theta(th):
        """(L, KL, size of the KL's terms, size of L's terms) at θ, from one forward pass (cached: θ_new
        is usually one of the tries).  A non-finite θ gives NaN quantities and zero term sizes."""
        key = np.asarray(th).tobytes()
        if key not in evaluated:
            if not is_finite(th):
                evaluated[key] = (math.nan, math.nan, 0.0, 0.0)
            else:
                at = policy.at(th, prep.obs, prep.act)
                val = float(at.surrogate(prep.adv, prep.logp_old))
                terms = at.surrogate_terms(prep.adv, prep.logp_old)
                if c_ent:
                    val += c_ent * float(at.entropy())
                    terms += abs(c_ent) * float(policy.head.entropy_terms(at.phi, prep.obs.shape[0]))
                p_, q_ = (at.phi, at_old.phi) if prep.reverse else (at_old.phi, at.phi)
                kl = prep.kl_scale * float(at.kl(at_old, reverse=prep.reverse))
                evaluated[key] = (val, kl, prep.kl_scale * float(np.mean(policy.head.kl_terms(p_, q_))), terms)
        return evaluated[key]

    def objective(th):
        return at_theta(th)[0]

    def kl_at(th):
        return at_theta(th)[1]

    def kl_scale_of(th):
        return at_theta(th)[2]

    def terms_at(th):
        return at_theta(th)[3]

    def A(v):  # (F + λ_d I)v in float64 on the Fisher samples (NaN for a non-finite v)
        if not is_finite(v):
            return np.full_like(v, math.nan)
        fv = fisher(v)
        return (prep.kl_scale * fv if prep.kl_scale != 1.0 else fv) + cfg.cg_damping * v

    def row(name, desc, ref, c, scale=None, locate=None):
        """Compare; ``scale`` is the size of the terms (None: the value alone); c None: skipped."""
        if scale is not None:
            value = float(np.abs(np.asarray(ref, np.float64)).max()) if np.size(ref) else 0.0
            scale = max(value if math.isfinite(value) else 0.0, terms_factor * scale)
        if c is None:
            rows.append(Row(name, desc, tuple(np.shape(ref)), math.nan, math.nan, "skipped", "not recorded"))
            return
        a, rel, ok, where = compare_float(ref, c, rtol, 0.0, locate, scale)
        rows.append(Row(name, desc, tuple(np.shape(ref)), a, rel, "ok" if ok else "FAIL", where))

    def exact(name, desc, ref, c, why=""):
        if c is None:
            rows.append(Row(name, desc, tuple(np.shape(ref)), math.nan, math.nan, "skipped", "not recorded", True))
            return
        r_a, c_a = np.asarray(ref), np.asarray(c)
        same = r_a.shape == c_a.shape and bool(np.all(r_a == c_a))
        where = "" if same else f"candidate {c_a.tolist()!r}, expected {r_a.tolist()!r}" + (f" ({why})" if why else "")
        rows.append(Row(name, desc, r_a.shape, 0.0 if same else 1.0, 0.0 if same else 1.0,
                        "ok" if same else "FAIL", where, True))

    def cand(key, ours):
        """The candidate's value, or trpo_ref's own (noted) when not recorded."""
        if key in C:
            return C[key]
        if key not in borrowed:
            borrowed.append(key)
        return ours

    def item(key, i):
        a = C.get(key)
        return None if a is None or i >= a.shape[0] else a[i]

    # ------------------------------------------------------------ from the inputs
    logp = policy.log_prob(theta, trace.batch().obs, trace.batch().act)
    row("logp", OUTPUT_KEYS["logp"], logp, C.get("logp"), locate=lambda i: f"n={i}")
    row("adv_used", OUTPUT_KEYS["adv_used"], prep.adv, C.get("adv_used"), locate=lambda i: f"n={i}")
    exact("adv_std_zero", OUTPUT_KEYS["adv_std_zero"], np.array(prep.adv_std_zero), C.get("adv_std_zero"))
    L_old = objective(theta)
    terms_old = surrogate_terms(policy, theta, prep, c_ent)
    row("surrogate_before", OUTPUT_KEYS["surrogate_before"], L_old, C.get("surrogate_before"), scale=terms_old)
    row("entropy", OUTPUT_KEYS["entropy"], float(policy.entropy(theta, prep.obs)), C.get("entropy"),
        scale=entropy_terms(policy, theta, prep.obs))
    g_ref = policy.surrogate_grad(theta, prep.obs, prep.act, prep.adv, prep.logp_old)
    if c_ent:
        g_ref = g_ref + c_ent * policy.entropy_grad(theta, prep.obs)
    row("g", OUTPUT_KEYS["g"], g_ref, C.get("g"), locate=locate_p)
    g = cand("g", g_ref)

    n_iter_c = int(C.get("cg_n_iter", O["cg_n_iter"]))
    method = cfg.method
    skipped = cfg.skip_if_zero_grad and bool(np.allclose(g, 0))
    cg_expected = not skipped and method != "vpg" and bool(np.any(g))
    ran_cg = n_iter_c >= 0
    if cg_expected != ran_cg:
        exact("cg.n_iter", OUTPUT_KEYS["cg_n_iter"], np.array(-1 if not cg_expected else cfg.cg_iters),
              np.array(n_iter_c), "CG must not run: " + ("g ≈ 0 and the config skips the update" if skipped else
                                                      "method vpg" if method == "vpg" else "g = 0")
              if not cg_expected else "the config's method needs CG")
    ran_cg = ran_cg and cg_expected
    if x0_in is None and cfg.cg_x0 == "random" and ran_cg:
        x0_in = prep.x0
        notes_pre.append("note: cg_x0 not recorded; assumed the config's seeded random start (seed "
                         f"{cfg.seed}), as trpo_ref would draw it")
    x = np.zeros_like(theta) if x0_in is None else x0_in.copy()
    if ran_cg:
        fisher = policy.fisher_operator(theta, prep.fisher_obs)
        V_c, AV_c, X_c = C.get("fisher_v"), C.get("fisher_Fv"), C.get("cg_iterates")
        rn_c = C.get("cg_residual_norms")
        if rn_c is None:
            borrowed.append("cg_residual_norms")
        lengths = [a.shape[0] for a in (V_c, AV_c, X_c) if a is not None]
        n_loop = min(max(lengths + [n_iter_c]), cfg.cg_iters + 1)  # the candidate's CG, one past the cap at most
        # The largest gain max|Av|/max|v| among the products is the scale of a product's
        # rounding (relative to ‖A‖‖v‖, not to a small ‖Av‖).
        AV = {k: A(V_c[k]) for k in range(min(n_loop, V_c.shape[0]))} if V_c is not None else {}
        Ag = A(g)
        gains = [float(np.abs(av).max() / np.abs(V_c[k]).max()) for k, av in AV.items() if np.abs(V_c[k]).max() > 0]
        if np.abs(g).max() > 0:
            gains.append(float(np.abs(Ag).max() / np.abs(g).max()))
        gain = max(gains + [cfg.cg_damping])

        def A_scale(v, av):
            return max(float(np.abs(av).max()), gain * float(np.abs(v).max()))

        def entry(key, k, name, desc):
            """The candidate's entry k of ``key``: its value, None when the key is not recorded (skipped,
            noted), or a FAIL row when the key is recorded but ends before entry k."""
            a = C.get(key)
            if a is None:
                if key not in borrowed:
                    borrowed.append(key)
                return None, False
            if k >= a.shape[0]:
                rows.append(Row(name, desc, (), math.inf, math.inf, "FAIL", "missing in the candidate"))
                return None, True
            return a[k], False

        if x0_in is not None:
            Ax0 = A(x0_in)
            row("Fx0", OUTPUT_KEYS["Fx0"], Ax0, C.get("Fx0"), A_scale(x0_in, Ax0), locate_p)
            Fx0 = cand("Fx0", Ax0)
            r = g - Fx0
            r_scale = float(np.abs(g).max() + np.abs(Fx0).max())
            rn_scale = float(np.linalg.norm(g) + np.linalg.norm(Fx0))
        else:
            r, r_scale, rn_scale = g.copy(), float(np.abs(g).max()), float(np.linalg.norm(g))
        row("cg.r[0]", "‖r₀‖ = ‖g − (F+λ_d I)x₀‖", float(np.linalg.norm(r)),
            None if rn_c is None or rn_c.shape[0] == 0 else rn_c[0], scale=rn_scale)
        b_norm = float(np.linalg.norm(g))

        def rr_of(k, r_vec):  # the candidate's ‖r_k‖², or ours when not recorded
            return float(rn_c[k]) ** 2 if rn_c is not None and k < rn_c.shape[0] else float(r_vec @ r_vec)

        rr = rr_of(0, r)
        p_ref, p_scale = r, r_scale
        expected_n = cfg.cg_iters
        breakdown = converged = False
        if rr == 0.0 or (cfg.cg_check_initial and _stopping_rule(cfg, rr, b_norm)):
            expected_n, converged = 0, True
        k = 0
        cg_forced = True  # every CG step checked from the candidate's own values
        while k < n_loop and not converged:
            p_c, gone = entry("fisher_v", k, f"fisher[{k}].v", f"CG direction p_{k}")
            if gone:
                break
            pAp_rec = item("cg_pAp", k)
            if p_c is None and X_c is not None and k < X_c.shape[0] and pAp_rec is not None \
                    and rn_c is not None and k < rn_c.shape[0]:
                # no directions recorded: the candidate's step x_{k+1} − x_k = τ_k p_k gives p_k
                p_c = (X_c[k] - x) / (rr / (float(pAp_rec) + cfg.cg_alpha_eps))
            if p_c is None:
                p_c = p_ref                                                 # nothing to force: trpo_ref's CG
                cg_forced = False
            else:
                row(f"fisher[{k}].v", f"CG direction p_{k}", p_ref, p_c, scale=p_scale, locate=locate_p)
            Ap_ours = AV[k] if k in AV else A(p_c)
            Ap_c, gone = entry("fisher_Fv", k, f"fisher[{k}].Fv", f"(F+λ_d I)p_{k}")
            if gone:
                break
            if Ap_c is None:
                Ap_c = Ap_ours
            else:
                row(f"fisher[{k}].Fv", f"(F+λ_d I)p_{k}", Ap_ours, Ap_c, A_scale(p_c, Ap_ours), locate_p)
            pAp_ref = float(p_c @ Ap_c)
            pAp_cand = item("cg_pAp", k)
            if cg_forced:
                row(f"cg.pAp[{k}]", f"p_{k}ᵀ(F+λ_d I)p_{k}", pAp_ref, pAp_cand, scale=float(np.abs(p_c * Ap_c).sum()))
            pAp = float(pAp_cand) if pAp_cand is not None else pAp_ref
            if not (math.isfinite(pAp) and pAp > 0.0):
                breakdown, expected_n = True, k
                break
            alpha = rr / (pAp + cfg.cg_alpha_eps)                          # τ_k = ‖r_k‖² / pᵀAp
            x_ref = x + alpha * p_c                                         # x_{k+1} = x_k + τ_k p_k
            x_c, gone = entry("cg_iterates", k, f"cg.x[{k + 1}]", f"CG iterate x_{k + 1}")
            if gone:
                break
            if x_c is not None:
                row(f"cg.x[{k + 1}]", f"CG iterate x_{k + 1}", x_ref, x_c,
                    scale=float(np.abs(x).max() + abs(alpha) * np.abs(p_c).max()), locate=locate_p)
            x = x_ref if x_c is None else x_c                               # the candidate's x_{k+1}
            r_new = r - alpha * Ap_c                                        # r_{k+1} = r_k − τ_k A p_k
            r_scale += abs(alpha) * float(np.abs(Ap_c).max())
            rn_scale += abs(alpha) * float(np.linalg.norm(Ap_c))
            if cg_forced:
                row(f"cg.r[{k + 1}]", f"‖r_{k + 1}‖", float(np.linalg.norm(r_new)),
                    None if rn_c is None or k + 1 >= rn_c.shape[0] else rn_c[k + 1], scale=rn_scale)
            rr_new = rr_of(k + 1, r_new)
            beta_k = rr_new / rr
            p_ref = r_new + beta_k * p_c                                    # p_{k+1} = r_{k+1} + ω_k p_k
            p_scale = r_scale + abs(beta_k) * float(np.abs(p_c).max())
            r, rr = r_new, rr_new
            k += 1
            if _stopping_rule(cfg, rr, b_norm):
                expected_n, converged = k, True
                break
            if k >= cfg.cg_iters:
                break
        expected_n = min(expected_n, cfg.cg_iters)
        if not breakdown and k < expected_n:
            why = (f"CG stopped after {k} iterations; the rule (cap {cfg.cg_iters}, stopping rule "
                   f"{'rᵀr < %g' % cfg.cg_residual_tol if cfg.cg_residual_tol is not None else 'none'}) "
                   f"was not met at ‖r_{k}‖ = {math.sqrt(rr):.3e}")
        else:
            why = f"cap {cfg.cg_iters}"
        exact("cg.n_iter", OUTPUT_KEYS["cg_n_iter"], np.array(expected_n if not breakdown else k),
              C.get("cg_n_iter"), why)
        exact("cg.converged", OUTPUT_KEYS["cg_converged"], np.array(converged), C.get("cg_converged"))
        exact("cg.breakdown", OUTPUT_KEYS["cg_breakdown"], np.array(breakdown), C.get("cg_breakdown"))
        last = x
        step_c = cand("step_dir", last)
        Ax = A(step_c)

        # ---------------------------------------------------------- x, β, full step
        if cg_forced:
            row("step_dir", OUTPUT_KEYS["step_dir"], last, C.get("step_dir"), locate=locate_p)
        else:
            rows.append(Row("step_dir", OUTPUT_KEYS["step_dir"], tuple(np.shape(last)), math.nan, math.nan,
                            "skipped", "CG's directions and iterates not recorded: x cannot be recomputed "
                            "stage-wise (end-to-end it amplifies rounding)"))
        x = step_c
        row("Fx", OUTPUT_KEYS["Fx"], Ax, C.get("Fx"), A_scale(x, Ax), locate_p)
        Fx = cand("Fx", Ax)
        xFx_ref = float(x @ Fx)
        row("xFx", OUTPUT_KEYS["xFx"], xFx_ref, C.get("xFx"), scale=float(np.abs(x * Fx).sum()))
        xFx = float(cand("xFx", xFx_ref))
    gx_terms = float(np.abs(g * x).sum())
    status_ref = None
    if skipped:
        full_ref, exp_ref, exp_scale = np.zeros_like(theta), math.nan, 0.0
        status_ref = "skipped"
    elif method == "vpg":
        full_ref, exp_ref = cfg.step_size * g, cfg.step_size * float(g @ g)
        exp_scale = cfg.step_size * float((g * g).sum())
    elif not ran_cg:
        full_ref, exp_ref, exp_scale = np.zeros_like(theta), math.nan, 0.0
        status_ref = "zero_gradient"
    elif not (math.isfinite(xFx) and xFx > 0):
        full_ref, exp_ref, exp_scale = np.zeros_like(theta), math.nan, 0.0
        status_ref = "nonpositive_curvature"
    elif method == "npg":
        full_ref, exp_ref = cfg.step_size * x, cfg.step_size * float(g @ x)
        exp_scale = cfg.step_size * gx_terms
    else:
        beta_ref = step_beta(xFx, cfg.max_kl, cfg.step_size_eps)
        row("beta", OUTPUT_KEYS["beta"], beta_ref, C.get("beta"))
        beta = float(cand("beta", beta_ref))
        full_ref, exp_ref, exp_scale = beta * x, beta * float(g @ x), abs(beta) * gx_terms
    if status_ref is None:
        row("full_step", OUTPUT_KEYS["full_step"], full_ref, C.get("full_step"), locate=locate_p)
        row("expected_improvement", OUTPUT_KEYS["expected_improvement"], exp_ref, C.get("expected_improvement"),
            scale=exp_scale)
    full = cand("full_step", full_ref)
    expected = float(cand("expected_improvement", exp_ref))

    # ---------------------------------------------------------- line search
    accepted = None
    theta_new_ref = theta
    if status_ref is None and method == "trpo":
        T = C["ls_fraction"].shape[0] if "ls_fraction" in C else O["ls_fraction"].shape[0]
        use_kl = cfg.kl_bound_factor is not None
        for j in range(T):
            frac_ref = cfg.backtrack_coeff ** j
            row(f"ls[{j}].fraction", f"fraction α^{j} of try {j}", frac_ref, item("ls_fraction", j))
            frac = float(item("ls_fraction", j)) if item("ls_fraction", j) is not None else frac_ref
            th_j = theta + frac * full                                       # θ_j = θ_old + α^j βx
            kl_j = kl_at(th_j) if use_kl else math.nan
            c_kl = item("ls_kl", j)
            if use_kl or (c_kl is not None and not math.isnan(c_kl)):
                kl_j = kl_at(th_j)  # cached with the try's other quantities
                row(f"ls[{j}].kl", f"KL of try {j}", kl_j, c_kl, scale=kl_scale_of(th_j))
            imp_ref = objective(th_j) - L_old
            row(f"ls[{j}].improvement", f"L(θ_{j}) − L(θ_old) of try {j}", imp_ref, item("ls_improvement", j),
                scale=terms_at(th_j) + terms_old)
            row(f"ls[{j}].expected_improvement", f"α^{j} βgᵀx of try {j}", frac * expected,
                item("ls_expected_improvement", j), scale=abs(frac * expected))
            imp = float(cand_item("ls_improvement", j, imp_ref, C, borrowed))
            exp_j = float(cand_item("ls_expected_improvement", j, frac * expected, C, borrowed))
            ratio_ref = improvement_ratio(imp, exp_j)
            row(f"ls[{j}].ratio", f"improvement / expected improvement of try {j}", ratio_ref, item("ls_ratio", j),
                scale=abs(ratio_ref) if math.isfinite(ratio_ref) else None)
            kl_c = float(c_kl) if (c_kl is not None and use_kl) else (kl_j if use_kl else None)
            ratio = float(cand_item("ls_ratio", j, ratio_ref, C, borrowed))
            finite = (not cfg.check_finite) or (math.isfinite(imp) and (kl_c is None or math.isfinite(kl_c)))
            ok_kl = kl_ok(kl_c, cfg.max_kl if use_kl else None, cfg.kl_bound_factor or 1.0, cfg.kl_strict)
            ok_imp = improvement_ok(imp, cfg.require_improvement)
            if cfg.improve_ratio is not None:
                ok_imp = ok_imp and exp_j > 0.0 and ratio > cfg.improve_ratio
            dec = np.array([finite, ok_kl, ok_imp, finite and ok_kl and ok_imp])
            c_dec = None
            if all(k in C for k in ("ls_finite", "ls_kl_ok", "ls_improvement_ok", "ls_accepted")) \
                    and j < C["ls_accepted"].shape[0]:
                c_dec = np.array([bool(C[k][j]) for k in ("ls_finite", "ls_kl_ok", "ls_improvement_ok",
                                                           "ls_accepted")])
            exact(f"ls[{j}].decision", f"tests of try {j} (finite, kl_ok, improvement_ok, accepted) on its values",
                  dec, c_dec, "the configured rule applied to the candidate's own KL and improvement")
            if dec[3] and accepted is None:
                accepted = j
                theta_new_ref = th_j
        n_tries_ref = (accepted + 1) if accepted is not None else cfg.backtrack_iters
        exact("ls.n_tries", "number of line-search tries (stop after the first accepted)", np.array(n_tries_ref),
              np.array(T) if "ls_fraction" in C else None)
        exact("accepted_index", OUTPUT_KEYS["accepted_index"], np.array(-1 if accepted is None else accepted),
              C.get("accepted_index"))
        status_ref = "accepted" if accepted is not None else "line_search_failed"
    elif status_ref is None:
        theta_new_ref = theta + full
        status_ref = "fixed_step"

    row("theta_new", OUTPUT_KEYS["theta_new"], theta_new_ref, C.get("theta_new"), locate=locate_p,
        scale=float(np.abs(theta).max() + np.abs(theta_new_ref - theta).max()))
    th_new = C["theta_new"]
    moved = not np.array_equal(th_new, theta)
    kl_new = kl_at(th_new) if moved else 0.0
    row("kl", OUTPUT_KEYS["kl"], kl_new, C.get("kl"), scale=kl_scale_of(th_new))
    L_new = objective(th_new) if moved else L_old
    terms_new = terms_at(th_new)
    row("surrogate_after", OUTPUT_KEYS["surrogate_after"], L_new, C.get("surrogate_after"), scale=terms_new)
    row("surrogate_change", OUTPUT_KEYS["surrogate_change"], L_new - L_old, C.get("surrogate_change"),
        scale=terms_new + terms_old)
    exact("status", "outcome of the update", np.array(status_ref),
          None if trace.status is None else np.array(trace.status))

    header = [f"candidate: {trace.meta.get('producer', '?')} (computed in {trace.dtype})"]
    spec = trace.meta.get("policy", {})
    arch = "-".join(str(s) for s in [spec.get("obs_dim"), *spec.get("hidden_sizes", []), spec.get("out_dim")])
    header.append(f"policy: {spec.get('kind')} {arch} {spec.get('activation')}; preset: {trace.preset}; "
                  f"N = {C['obs'].shape[0]}")
    notes = list(notes_pre)
    if borrowed:
        notes.append("not recorded by the candidate, taken from trpo_ref's own chain (recomputed from the "
                     "candidate's upstream values where it has them): " + ", ".join(borrowed))
    report = Report(rows, rtol, 0.0, header, notes, mode="stage-wise")
    report.terms_rtol = terms_factor * rtol
    return report


def cand_item(key, j, ours, C, borrowed):
    """Entry j of the candidate's ``key``, or trpo_ref's value (noted) when not recorded."""
    a = C.get(key)
    if a is not None and j < a.shape[0]:
        return a[j]
    if key not in borrowed:
        borrowed.append(key)
    return ours
