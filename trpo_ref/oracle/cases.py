r"""Reference cases of the oracle: seeded synthetic updates, the golden and realistic cases, planted bugs.

* :func:`synthetic_case` — a seeded ``(policy, θ_old, batch)``;
* :data:`GOLDEN_SIZES`, :func:`golden_cases`, :func:`golden_trace` — the small
  traces kept in ``tests/golden/`` (one per preset and policy kind);
* :func:`realistic_case` — 64×64 tanh policies, N ≥ 256, CG at its cap, a δ
  large enough that the line search backtracks: the sizes on which CG's
  rounding amplification shows;
* :func:`candidate_update` — an update written stage by stage (trpo_ref's
  primitives, its own CG driver and line-search loop) that can run in float32,
  on a permuted batch or at θ_old ± 1 ulp — a correct "other implementation" —
  or with one of :data:`BUGS` planted.  Run correct, it reproduces
  :func:`~trpo_ref.trpo.trpo_step` bit for bit (tested).
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from .. import backend
from ..cg import conjugate_gradient
from ..heads import BernoulliHead, CategoricalHead, GaussianHead, MultiCategoricalHead
from ..linesearch import improvement_ok, improvement_ratio, kl_ok
from ..trpo import PRESETS, Batch, TRPOConfig, prepare_update
from ..trpo import beta as step_beta
from .io import Trace
from .record import compute_trace, make_meta

__all__ = ["synthetic_case", "GOLDEN_SIZES", "GOLDEN_SEED_ORDER", "GOLDEN_KINDS", "PRESET_KINDS", "GOLDEN_OUT_DIM", "golden_cases", "golden_trace", "realistic_case",
           "REALISTIC_CASES", "BUGS", "candidate_update"]


#: kind -> the head of a synthetic case with ``act_dim`` action dimensions, actions, sub-actions
#: (with 2, 3, … choices) or bits.
_SYNTHETIC_HEADS = {
    "gaussian": GaussianHead,
    "categorical": CategoricalHead,
    "multicategorical": lambda k: MultiCategoricalHead(range(2, 2 + k)),
    "bernoulli": BernoulliHead,
}


def synthetic_case(kind: str = "gaussian", seed: int = 0, n: int = 32, obs_dim: int = 3, act_dim: int = 2,
                   hidden_sizes=(8, 8), activation: str = "tanh"):
    """A seeded synthetic update: ``(policy, theta_old, batch)``.

    θ_old is the orthogonal initialisation perturbed by 0.3·N(0, 1) (so the
    output layer is not ~0 and log σ is not all 0); observations are N(0, I);
    actions are sampled from π_θold on the host and ``logp_old`` are their exact
    log-probabilities; advantages are 1.5·N(0, 1) + 0.5 (non-zero mean and
    non-unit spread, so normalisation matters).  ``act_dim`` is the number of
    actions for ``kind="categorical"``, of sub-actions (with 2, 3, … choices)
    for ``"multicategorical"`` and of bits for ``"bernoulli"``.
    """
    from ..policy import policy_for_head

    if kind not in _SYNTHETIC_HEADS:
        raise ValueError(f"policy kind must be 'gaussian', 'categorical', 'multicategorical' or 'bernoulli', "
                         f"got {kind!r}")
    policy = policy_for_head(obs_dim, _SYNTHETIC_HEADS[kind](act_dim), tuple(hidden_sizes), activation)
    if int(n) < 2:
        raise ValueError(f"n must be >= 2, got {n}")
    rng = np.random.default_rng(seed)
    theta = backend.to_numpy(policy.init_params(seed)) + 0.3 * rng.standard_normal(policy.num_params)
    obs = rng.standard_normal((int(n), obs_dim))
    act, logp = policy.sample(theta, obs, rng)
    adv = 1.5 * rng.standard_normal(int(n)) + 0.5
    return policy, theta, Batch(obs, backend.to_numpy(act), adv, backend.to_numpy(logp))


# ----------------------------------------------------------------- golden
#: Shared sizes of every golden case: small, so each file stays near 20 KB.
GOLDEN_SIZES = dict(n=20, obs_dim=3, hidden_sizes=(4, 3), activation="tanh")
#: Action dimension (Gaussian), number of actions (categorical), sub-actions (2 and 3 choices) or bits.
GOLDEN_OUT_DIM = {"gaussian": 2, "categorical": 3, "multicategorical": 2, "bernoulli": 2}


#: Presets in the order their golden seeds were assigned (100 + 10·i + j); a new preset is appended, so
#: adding one never changes the seed, and hence the file, of an existing golden trace.
GOLDEN_SEED_ORDER = ("baselines", "garage", "modular_rl", "paper", "sb3-contrib", "spinningup", "tianshou", "skrl")
#: Policy heads of the golden traces, in the order of their seeds' last digit.
GOLDEN_KINDS = ("gaussian", "categorical", "multicategorical", "bernoulli")
#: Heads a library's TRPO supports, where not all: skrl 2.1.1's is Gaussian only, tianshou 2.0.1's actors are
#: Gaussian or categorical (its discrete actor takes a Discrete space).
PRESET_KINDS = {"skrl": ("gaussian",), "tianshou": ("gaussian", "categorical")}


def golden_cases() -> list[tuple[str, str, str, int]]:
    """``(file name, preset, kind, seed)`` of every golden trace in tests/golden/."""
    order = [p for p in GOLDEN_SEED_ORDER if p in PRESETS] + sorted(set(PRESETS) - set(GOLDEN_SEED_ORDER))
    out = []
    for i, preset in enumerate(order):
        for j, kind in enumerate(GOLDEN_KINDS):
            if kind in PRESET_KINDS.get(preset, GOLDEN_KINDS):
                out.append((f"{preset}-{kind}.npz", preset, kind, 100 + 10 * i + j))
    return out


def golden_trace(preset: str, kind: str, seed: int) -> Trace:
    """The trace of one golden case (trpo_ref's own update)."""
    policy, theta, batch = synthetic_case(kind, seed, act_dim=GOLDEN_OUT_DIM[kind], **GOLDEN_SIZES)
    return compute_trace(policy, theta, batch, TRPOConfig.preset(preset), preset)


# -------------------------------------------------------------- realistic
#: kind -> (seed, observation scales, outputs, δ) of the realistic cases: Pendulum-like (3 observations,
#: the last a velocity in [−8, 8]; one action dimension) and CartPole-like (4 observations; 2 actions).
REALISTIC_CASES = {
    "gaussian": (1, (1.0, 1.0, 8.0), 1, 1.0),
    "categorical": (1, (2.4, 2.0, 0.2, 8.0), 2, 0.1),
}


def realistic_case(kind: str = "gaussian", seed: int | None = None, n: int = 256, hidden_sizes=(64, 64),
                   preset: str = "baselines", max_kl: float | None = None, cg_damping: float = 1e-3):
    """A realistic update: ``(policy, theta_old, batch, config)``.

    A 64×64 tanh network near its initialisation (orthogonal init + 0.05·N(0, 1)),
    observations on the scales of Pendulum (Gaussian, one action dimension) or
    CartPole (categorical, two actions) with one feature spread over [−8, 8],
    N = 256 samples.  The advantages carry a signal — samples far from the mean
    are bad (Gaussian: Â = −((a−μ)/σ)² + noise), action 0 is good (categorical)
    — and ``logp_old`` is rounded to float32, as a float32 sampler records it.
    The config is ``preset`` (baselines: it normalises the advantages, and its
    Fisher on every 5th sample lets the full step overshoot the trust region)
    with little damping (λ = 1e-3) and δ = 1 (Gaussian) or 0.1 (categorical).

    On these cases CG runs to its 10-iteration cap without converging and its
    late iterates are chaotic: trpo_ref recomputed with the batch summed in
    another order moves the step direction by ~1e-5 (Gaussian) and ~1e-3
    (categorical) relative, as on the real library updates of the review; and
    the line search backtracks twice.
    """
    from ..policy import policy_for_head

    s, scales, out_dim, delta = REALISTIC_CASES[kind]
    seed = s if seed is None else seed
    rng = np.random.default_rng(seed)
    scales = np.asarray(scales)
    policy = policy_for_head(scales.shape[0], _SYNTHETIC_HEADS[kind](out_dim), tuple(hidden_sizes))
    theta = backend.to_numpy(policy.init_params(seed)) + 0.05 * rng.standard_normal(policy.num_params)
    obs = rng.uniform(-1.0, 1.0, (n, scales.shape[0])) * scales
    act, logp = policy.sample(theta, obs, rng)
    act, logp = backend.to_numpy(act), backend.to_numpy(logp)
    noise = 0.3 * rng.standard_normal(n)
    if kind == "gaussian":  # the cases' advantage signals (test data, one per kind)
        (mean, log_std), _ = policy._dist(theta, obs)
        adv = -np.sum(((act - mean) / np.exp(log_std)) ** 2, axis=1) + noise
    else:
        adv = np.where(act == 0, 2.0, -1.0) + noise
    config = TRPOConfig.preset(preset, max_kl=delta if max_kl is None else max_kl, cg_damping=cg_damping)
    logp_old = logp.astype(np.float32).astype(np.float64)
    return policy, theta, Batch(obs, act, adv, logp_old), config


# ---------------------------------------------------------- planted bugs
#: Planted bugs -> the stage where each is made (the quantity the stage-wise check must name first).
BUGS = {
    "kl_direction_swapped": "the line search's KL (ls[0].kl)",
    "damping_missing_from_beta": "(F+λ_d I)x for β (Fx)",
    "advantages_not_normalized": "the advantages used (adv_used)",
    "zero_fvp": "the first Fisher product (fisher[0].Fv): the old policy was not detached",
    "beta_without_factor_2": "β (beta)",
    "cg_one_iteration_short": "CG's iteration count (cg.n_iter)",
    "log_std_not_in_tries": "the tries' KL (ls[0].kl): log σ is not moved in the line search",
    "expected_improvement_compounded": "the expected improvement of try 2 (α^3 instead of α^2)",
    "ratio_in_float32": "the surrogate at θ_old: the probability ratio is rounded to float32",
}


def _invariant_permutation(policy, batch: Batch, config: TRPOConfig, seed: int) -> np.ndarray:
    """A permutation of the batch that keeps every sample subset the config selects (sub-sampling,
    Fisher stride and fraction): the same samples, summed in another order."""
    n = len(batch)
    probe = Batch(np.arange(n, dtype=np.float64)[:, None], np.zeros(n, np.int64), np.arange(n, dtype=np.float64),
                  np.zeros(n))
    prep = prepare_update(policy, np.zeros(policy.num_params), probe, replace(config, normalize_adv=False))
    label = np.zeros(n, np.int64)
    label[prep.obs[:, 0].astype(np.int64)] = 1
    label[prep.fisher_obs[:, 0].astype(np.int64)] += 2
    rng = np.random.default_rng(seed)
    perm = np.arange(n)
    for c in np.unique(label):
        where = np.flatnonzero(label == c)
        perm[where] = rng.permutation(where)
    return perm


def candidate_update(policy, theta, batch: Batch, config: TRPOConfig, *, bug: str | None = None,
                     dtype: str = "float64", permute_seed: int | None = None, ulp_seed: int | None = None,
                     x0=None, producer: str | None = None) -> Trace:
    """One update written stage by stage, recorded as a candidate trace.

    Parameters
    ----------
    policy, theta, batch, config
        The update (NumPy arrays).
    bug : str, optional
        A key of :data:`BUGS` to plant; the trace still claims ``config``.
    dtype : {"float64", "float32"}
        Precision of the whole computation (the trace's arrays and meta ``dtype``).
    permute_seed : int, optional
        Sum over the samples in another order (the same sample subsets).
    ulp_seed : int, optional
        Compute at θ_old moved by ±1 ulp per entry (random signs); θ_old is recorded unmoved.
    x0 : array (P,), optional
        CG start (else ``config.cg_x0`` decides, as in trpo_step).

    Returns
    -------
    Trace
    """
    if bug is not None and bug not in BUGS:
        raise ValueError(f"unknown bug {bug!r}; choose one of {sorted(BUGS)}")
    ft = {"float64": np.float64, "float32": np.float32}[dtype]
    theta_rec = np.asarray(theta, np.float64)
    th = theta_rec.astype(ft)
    if ulp_seed is not None:
        up = np.random.default_rng(ulp_seed).random(th.shape) < 0.5
        th = np.where(up, np.nextafter(th, ft(np.inf)), np.nextafter(th, ft(-np.inf))).astype(ft)
    act = batch.act if np.issubdtype(np.asarray(batch.act).dtype, np.integer) else np.asarray(batch.act, ft)
    b = Batch(np.asarray(batch.obs, ft), act, np.asarray(batch.adv, ft), np.asarray(batch.logp_old, ft))
    if permute_seed is not None:
        b = b.take(_invariant_permutation(policy, batch, config, permute_seed))
    cfg = config
    if bug == "advantages_not_normalized":
        cfg = replace(cfg, normalize_adv=False)
    if bug == "kl_direction_swapped":
        swap = {"old_new": "new_old", "new_old": "old_new", None: None}
        cfg = replace(cfg, kl_direction=swap[cfg.kl_direction],
                      kl_direction_categorical=swap[cfg.kl_direction_categorical])
    prep = prepare_update(policy, th, b, cfg, x0)
    obs, act_u, adv, lpo = prep.obs, prep.act, prep.adv, prep.logp_old
    N = obs.shape[0]
    c_ent = cfg.entropy_coef

    def ratio_n(t):
        r = np.exp(policy.log_prob(t, obs, act_u) - lpo)
        return r.astype(np.float32).astype(ft) if bug == "ratio_in_float32" else r

    def objective(t):
        if bug == "ratio_in_float32":
            val = float(np.mean(ratio_n(t) * adv))
        else:
            val = float(policy.surrogate(t, obs, act_u, adv, lpo))
        return val + (c_ent * float(policy.entropy(t, obs)) if c_ent else 0.0)

    def kl_at(t):
        return prep.kl_scale * float(policy.kl(th, t, obs, reverse=prep.reverse))

    if bug == "ratio_in_float32":
        g = policy.log_prob_grad(th, obs, act_u, ratio_n(th) * adv / N)
    else:
        g = policy.surrogate_grad(th, obs, act_u, adv, lpo)
    if c_ent:
        g = g + c_ent * policy.entropy_grad(th, obs)
    L_old = objective(th)
    P = policy.num_params
    rec: dict = {"Fx0": None, "products": [], "cg": None, "x": np.zeros(P, ft), "Fx": np.zeros(P, ft),
                 "xFx": math.nan, "beta": math.nan, "full": np.zeros(P, ft), "expected": math.nan, "tries": []}
    theta_new, status = th, None
    if cfg.skip_if_zero_grad and np.allclose(g, 0):
        status = "skipped"
    elif cfg.method == "vpg":
        rec["full"], rec["expected"] = cfg.step_size * g, cfg.step_size * float(g @ g)
        theta_new, status = th + rec["full"], "fixed_step"
    elif not np.any(g):
        status = "zero_gradient"
    if status is None:
        fisher = policy.fisher_operator(th, prep.fisher_obs)
        calls = []

        def A(v):
            fv = np.zeros_like(v) if bug == "zero_fvp" else fisher(v)
            fv = (prep.kl_scale * fv if prep.kl_scale != 1.0 else fv) + cfg.cg_damping * v
            calls.append((v, fv))
            return fv

        cap = cfg.cg_iters - 1 if bug == "cg_one_iteration_short" else cfg.cg_iters
        cg = conjugate_gradient(A, g, max_iter=cap, rtol=cfg.cg_rtol, atol=cfg.cg_atol,
                                squared_residual_tol=cfg.cg_residual_tol, x0=prep.x0, keep_iterates=True,
                                alpha_eps=cfg.cg_alpha_eps, check_initial=cfg.cg_check_initial)
        if prep.x0 is not None and calls:
            rec["Fx0"] = calls.pop(0)[1]
        rec["products"], rec["cg"] = list(calls), cg
        x = cg.x
        fx = A(x)
        if bug == "damping_missing_from_beta":
            fx = fx - cfg.cg_damping * x
        xFx = float(np.sum(x * fx))
        rec.update(x=x, Fx=fx, xFx=xFx)
        if not (math.isfinite(xFx) and xFx > 0):
            status = "nonpositive_curvature"
        elif cfg.method == "npg":
            rec["full"], rec["expected"] = cfg.step_size * x, cfg.step_size * float(np.sum(g * x))
            theta_new, status = th + rec["full"], "fixed_step"
        else:
            beta = step_beta(xFx / 2 if bug == "beta_without_factor_2" else xFx, cfg.max_kl, cfg.step_size_eps)
            full, expected = beta * x, beta * float(np.sum(g * x))
            rec.update(beta=beta, full=full, expected=expected)
            status = "line_search_failed"
            n_mlp = policy.mlp.num_params
            for j in range(cfg.backtrack_iters):
                frac = cfg.backtrack_coeff ** j
                th_j = th + frac * full                                  # θ_j = θ_old + α^j βx
                th_eval = th_j
                if bug == "log_std_not_in_tries":  # the head's own parameters (log σ) kept at θ_old
                    th_eval = np.concatenate([th_j[:n_mlp], th[n_mlp:]])
                imp = objective(th_eval) - L_old
                kl = kl_at(th_eval) if cfg.kl_bound_factor is not None else None
                exp_j = (cfg.backtrack_coeff ** (j * (j + 1) // 2) if bug == "expected_improvement_compounded"
                         else frac) * expected
                ratio = improvement_ratio(imp, exp_j)
                finite = (not cfg.check_finite) or (math.isfinite(imp) and (kl is None or math.isfinite(kl)))
                ok_kl = kl_ok(kl, None if cfg.kl_bound_factor is None else cfg.max_kl, cfg.kl_bound_factor or 1.0,
                              cfg.kl_strict)
                ok_imp = improvement_ok(imp, cfg.require_improvement)
                if cfg.improve_ratio is not None:
                    ok_imp = ok_imp and exp_j > 0.0 and ratio > cfg.improve_ratio
                acc = finite and ok_kl and ok_imp
                rec["tries"].append((frac, math.nan if kl is None else kl, imp, exp_j, ratio, finite, ok_kl, ok_imp,
                                     acc))
                if acc:
                    theta_new, status = th_j, "accepted"
                    rec["after"] = (L_old + imp, math.nan if kl is None else kl)
                    break
    if theta_new is th:
        after, kl_new = L_old, 0.0
    elif "after" in rec and not math.isnan(rec["after"][1]):
        after, kl_new = rec["after"]
    else:
        after, kl_new = objective(theta_new), kl_at(theta_new)
    if theta_new is th:
        theta_new = theta_rec.astype(ft)   # no step: θ_old bit for bit, as recorded

    cg = rec["cg"]
    tries = rec["tries"]
    f = lambda v: np.asarray(v, dtype=ft)  # noqa: E731
    stack = lambda rows: np.stack(rows).astype(ft) if rows else np.zeros((0, P), ft)  # noqa: E731
    col = lambda i, dt=ft: np.array([t[i] for t in tries], dtype=dt)  # noqa: E731
    logp = policy.log_prob(th, np.asarray(batch.obs, ft), batch.act if act is batch.act else np.asarray(batch.act, ft))
    arrays = {
        "theta_old": theta_rec.astype(ft), "obs": np.asarray(batch.obs, ft), "act": np.asarray(act),
        "adv": np.asarray(batch.adv, ft), "logp_old": np.asarray(batch.logp_old, ft),
        "logp": f(logp), "adv_used": f(prepare_update(policy, th, Batch(np.asarray(batch.obs, ft), np.asarray(act),
                                                                        np.asarray(batch.adv, ft),
                                                                        np.asarray(batch.logp_old, ft)), cfg).adv),
        "adv_std_zero": np.array(bool(prep.adv_std_zero)),
        "surrogate_before": f(L_old), "entropy": f(float(policy.entropy(th, obs))), "g": f(g),
        "fisher_v": stack([v for v, _ in rec["products"]]), "fisher_Fv": stack([fv for _, fv in rec["products"]]),
        "cg_iterates": stack(list(cg.iterates) if cg is not None else []),
        "cg_residual_norms": np.array(cg.residual_norms if cg is not None else (), ft),
        "cg_pAp": np.array(cg.pAp if cg is not None else (), ft),
        "cg_n_iter": np.array(cg.n_iter if cg is not None else -1, np.int64),
        "cg_converged": np.array(bool(cg.converged) if cg is not None else False),
        "cg_breakdown": np.array(bool(cg.breakdown) if cg is not None else False),
        "step_dir": f(rec["x"]), "Fx": f(rec["Fx"]), "xFx": f(rec["xFx"]), "beta": f(rec["beta"]),
        "full_step": f(rec["full"]), "expected_improvement": f(rec["expected"]),
        "ls_fraction": col(0), "ls_kl": col(1), "ls_improvement": col(2), "ls_expected_improvement": col(3),
        "ls_ratio": col(4), "ls_finite": col(5, bool), "ls_kl_ok": col(6, bool), "ls_improvement_ok": col(7, bool),
        "ls_accepted": col(8, bool),
        "accepted_index": np.array(next((i for i, t in enumerate(tries) if t[8]), -1), np.int64),
        "theta_new": f(theta_new), "kl": f(kl_new), "surrogate_after": f(after),
        "surrogate_change": f(after - L_old),
    }
    if prep.x0 is not None and cg is not None:
        arrays["cg_x0"], arrays["Fx0"] = f(prep.x0), f(rec["Fx0"])
    name = producer or ("candidate_update" + (f" with bug {bug}" if bug else "") + f" ({dtype})")
    return Trace(make_meta(policy, config, None, status, name, dtype), arrays)
