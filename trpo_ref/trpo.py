r"""One TRPO policy update, with every intermediate exposed.

==========================================================================  ===============================
equation                                                                    where
==========================================================================  ===============================
:math:`\hat A \leftarrow (\hat A - \mathrm{mean})/(\mathrm{std} + \mathtt{eps})` (optional)
                                                                            :func:`normalize_advantages`
:math:`L(\theta) = \frac1N\sum_n r_n(\theta)\hat A_n + c_H \bar H(\theta)`  :func:`trpo_step` (objective)
:math:`g = \nabla_\theta L(\theta_{old})`                                   :func:`trpo_step`
:math:`(F + \lambda_d I)x = g` by conjugate gradient from :math:`x_0 = 0`   :func:`trpo_step`, :func:`trpo_ref.cg.conjugate_gradient`
:math:`\beta = \sqrt{2\delta / x^\top(F + \lambda_d I)x}`                   :func:`beta`
expected improvement of fraction f: :math:`f\beta g^\top x`                 :func:`trpo_step`
:math:`\theta_j = \theta_{old} + \alpha^j\beta x`, first admissible try     :func:`trpo_ref.linesearch.backtracking_line_search`
NPG: :math:`\theta = \theta_{old} + \kappa x`; VPG: :math:`\theta = \theta_{old} + \kappa g`
                                                                            :func:`trpo_step` (``method``)
==========================================================================  ===============================

The update knows policies only through the methods of
:mod:`trpo_ref.policy`; it never imports gymnasium, files or printing.

References
----------
Schulman, Levine, Moritz, Jordan, Abbeel, "Trust Region Policy Optimization",
ICML 2015: eq. (14) (the problem), Appendix C (CG, β and the line search).
Kakade, "A Natural Policy Gradient", NIPS 2001.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, NamedTuple

import numpy as np

from . import backend
from .cg import CGResult, conjugate_gradient
from .config import PRESETS, TRPOConfig
from .linesearch import LineSearchResult, LineSearchTry, backtracking_line_search

__all__ = ["Batch", "TRPOConfig", "StepInfo", "Prepared", "prepare_update", "trpo_step", "normalize_advantages",
           "beta", "PRESETS"]


@dataclass(frozen=True)
class Batch:
    """The data of one policy update (arrays of one backend).

    Attributes
    ----------
    obs : array (N, obs_dim)
    act : array (N, act_dim) float for Gaussian, (N,) int for categorical
    adv : array (N,)
        Advantage estimates Â (before any normalisation: the config decides).
    logp_old : array (N,)
        :math:`\\log\\pi_{\\theta_{old}}(a_n|s_n)` as recorded at sampling time.
    """

    obs: Any
    act: Any
    adv: Any
    logp_old: Any

    def __post_init__(self):
        for name in ("obs", "act", "adv", "logp_old"):
            arr = getattr(self, name)
            if not (hasattr(arr, "shape") and hasattr(arr, "dtype")):
                raise TypeError(f"batch.{name} must be an array (NumPy, CuPy, ...), got {type(arr).__name__}: "
                                "convert it with numpy.asarray")
        n = self.obs.shape[0] if len(self.obs.shape) else 0
        if len(self.obs.shape) != 2 or n == 0:
            raise ValueError(f"batch is empty or obs is not 2-D (shape {tuple(self.obs.shape)}): need (N, obs_dim) with N >= 1")
        for name in ("act", "adv", "logp_old"):
            arr = getattr(self, name)
            if len(arr.shape) == 0 or arr.shape[0] != n:
                raise ValueError(f"batch.{name} has shape {tuple(arr.shape)} but obs has {n} rows")

    def __len__(self) -> int:
        return int(self.obs.shape[0])

    def take(self, idx):
        r"""Sub-batch at integer indices ``idx`` (an array of the same backend).

        Parameters
        ----------
        idx : integer array (M,)
            Row indices, same backend as the batch.

        Returns
        -------
        Batch
            Every field indexed along axis 0 (M rows).
        """
        xp = backend.namespace(self.obs)
        return Batch(*(xp.take(getattr(self, f.name), idx, axis=0) for f in fields(self)))


class StepInfo(NamedTuple):
    """Every intermediate of one update (floats on the host, vectors on the backend).

    Attributes
    ----------
    status : str
        ``"accepted"``, ``"line_search_failed"``, ``"zero_gradient"``,
        ``"nonpositive_curvature"`` (xᵀ(F+λ_d I)x ≤ 0 or not finite), ``"skipped"``
        (``skip_if_zero_grad``) or ``"fixed_step"`` (NPG / VPG).
    adv : array (N,)
        The advantages the surrogate used (normalised when the config says so).
    adv_std_zero : bool
        Normalisation met an advantage std of 0 (advantages centred, not divided).
    g : array (P,)
        Gradient of the objective at θ_old.
    cg : CGResult or None
    step_dir : array (P,)
        x ≈ (F + λ_d I)⁻¹ g.
    fisher_products : tuple of (p_k, (F+λ_d I)p_k)
        The Fisher products of CG's directions p_0, p_1, ..., in order (not the
        product of x₀ nor the one of x: those are ``Fx0`` and ``Fx``).
    x0 : array (P,) or None
        CG's start when it is not 0 (a given or random x₀).
    Fx0 : array (P,) or None
        (F + λ_d I)x₀, CG's first product when x₀ is given (r₀ = g − (F+λ_d I)x₀).
    Fx : array (P,) or None
        (F + λ_d I)x, the product β uses (None when CG did not run).
    xFx : float
        xᵀ(F + λ_d I)x (with the SB3 ``"mean"`` reduction: of the scaled F).
    beta : float
        Step length along x (nan when not computed).
    full_step : array (P,)
        βx (TRPO), κx (NPG) or κg (VPG).
    expected_improvement : float
        β gᵀx: the first-order change of L for the full step.
    line_search : LineSearchResult or None
    accepted_index : int or None
    kl : float
        KL of the final θ (in the configured direction).
    surrogate_before, surrogate_after, surrogate_change : float
        Objective at θ_old and at the final θ, and their difference.
    entropy : float
        Mean entropy at θ_old.
    """

    status: str
    adv: Any
    adv_std_zero: bool
    g: Any
    cg: CGResult | None
    step_dir: Any
    fisher_products: tuple
    x0: Any
    Fx0: Any
    Fx: Any
    xFx: float
    beta: float
    full_step: Any
    expected_improvement: float
    line_search: LineSearchResult | None
    accepted_index: int | None
    kl: float
    surrogate_before: float
    surrogate_after: float
    surrogate_change: float
    entropy: float

    @property
    def tries(self) -> tuple[LineSearchTry, ...]:
        """The line-search tries (empty when there was no line search)."""
        return () if self.line_search is None else self.line_search.tries

    @property
    def n_fisher_products(self) -> int:
        """Fisher products the update made: CG's, plus (F+λ_d I)x₀ and (F+λ_d I)x when computed."""
        return len(self.fisher_products) + (self.Fx0 is not None) + (self.Fx is not None)

    @property
    def n_backtracks(self) -> int:
        """Tries rejected before the accepted one (all of them on failure)."""
        if self.line_search is None:
            return 0
        return len(self.tries) if self.accepted_index is None else self.accepted_index


def normalize_advantages(adv_n, *, ddof: int = 0, eps: float = 0.0, mode: str = "std_plus_eps"):
    r"""Standardised advantages and whether the spread was zero.

    .. math:: \hat A' = \frac{\hat A - \bar A}{\mathrm{std} + \mathtt{eps}},\quad
              \mathrm{std} = \sqrt{\tfrac{1}{N - \mathrm{ddof}}\sum_n(\hat A_n - \bar A)^2}

    (``mode="sqrt_var_plus_eps"``: divide by :math:`\sqrt{\mathrm{std}^2 + \mathtt{eps}}`;
    ``"var_plus_eps"``: by :math:`\mathrm{std}^2 + \mathtt{eps}`, as garage does.)

    A zero spread — all advantages equal, tested exactly, or N − ddof ≤ 0 — is
    returned as zeros with the flag True.  (Computing the std of equal values in
    floating point leaves the rounding residue of the mean, so a library that
    only tests ``std == 0`` turns constant advantages into ±1 everywhere; here
    they carry no signal and give g = 0.)

    Parameters
    ----------
    adv_n : array (N,)
    ddof : int
        Degrees of freedom of std (0 or 1).
    eps : float
        eps >= 0.
    mode : {"std_plus_eps", "sqrt_var_plus_eps", "var_plus_eps"}

    Returns
    -------
    adv_n : array (N,)
    std_zero : bool
    """
    xp = backend.namespace(adv_n)
    n = adv_n.shape[0]
    if n - ddof <= 0 or bool(xp.all(adv_n == adv_n[0])):
        return xp.zeros_like(adv_n), True
    centred = adv_n - xp.mean(adv_n)
    var = xp.sum(centred * centred) / (n - ddof)
    if mode == "std_plus_eps":
        denom = xp.sqrt(var) + eps
    elif mode == "sqrt_var_plus_eps":
        denom = xp.sqrt(var + eps)
    elif mode == "var_plus_eps":
        denom = var + eps
    else:
        raise ValueError(f"mode must be 'std_plus_eps', 'sqrt_var_plus_eps' or 'var_plus_eps', got {mode!r}")
    if backend.to_float(denom) == 0.0:  # spread underflowed to 0 (e.g. subnormal differences)
        return xp.zeros_like(adv_n), True
    return centred / denom, False


def beta(xFx: float, max_kl: float, eps: float = 0.0) -> float:
    r"""Largest step along x whose quadratic KL model equals δ.

    .. math:: \beta = \sqrt{\frac{2\delta}{x^\top(F + \lambda_d I)x + \mathtt{eps}}},\qquad
              \tfrac12(\beta x)^\top(F + \lambda_d I)(\beta x) = \delta \ (\mathtt{eps} = 0)

    Parameters
    ----------
    xFx : float
        :math:`x^\top(F + \lambda_d I)x`.
    max_kl : float
        δ.
    eps : float
        Added to the denominator (Spinning Up and garage: 1e-8; 0 otherwise).

    Returns
    -------
    float
        β, or nan when the denominator is not a finite positive number.

    References
    ----------
    Schulman et al. 2015, Appendix C.
    """
    denom = xFx + eps
    if not (math.isfinite(denom) and denom > 0):
        return math.nan
    return math.sqrt(2.0 * max_kl / denom)


class Prepared(NamedTuple):
    """The update's data and conventions after the library-replay preparation.

    Everything :func:`trpo_step` (and the oracle's stage-wise check) needs
    besides θ: the (sub-sampled) batch with the advantages the surrogate uses,
    the observations of the Fisher products, the KL's direction and scale, and
    the CG start.  Built by :func:`prepare_update`.

    Attributes
    ----------
    obs, act, logp_old : arrays
        The batch the gradient and the line search use (after ``sub_sampling_factor``).
    adv : array (N',)
        The advantages the surrogate uses (normalised when configured).
    adv_std_zero : bool
        Normalisation met a zero spread.
    fisher_obs : array (N_F, obs_dim)
        Observations of the Fisher products (after ``fisher_stride`` / ``fisher_fraction``).
    kl_scale : float
        1/act_dim under SB3-contrib's ``"mean"`` reduction for a Gaussian, else 1:
        multiplies the KL and F.
    reverse : bool
        The line search checks KL(π_θ‖π_old) instead of KL(π_old‖π_θ).
    x0 : array (P,) or None
        CG's start (given, or drawn for ``cg_x0="random"``), on θ's backend.
    """

    obs: Any
    act: Any
    logp_old: Any
    adv: Any
    adv_std_zero: bool
    fisher_obs: Any
    kl_scale: float
    reverse: bool
    x0: Any


def prepare_update(policy, theta, batch: Batch, config: TRPOConfig, x0=None) -> Prepared:
    r"""Apply the configured library conventions to the batch before the update.

    In order: sub-sampling of the whole batch, advantage normalisation, the
    Fisher products' sample subset (stride, then a random fraction drawn on
    the host with ``config.seed``), the KL's direction and scale, and the CG
    start x₀ (given, or ``cg_x0_scale``·N(0, I) drawn after the Fisher subset
    from the same generator).

    Parameters
    ----------
    policy : MLPPolicy
    theta : array (P,)
        θ_old (decides the backend, device and dtype).
    batch : Batch
    config : TRPOConfig
    x0 : array (P,), optional
        Explicit CG start (any backend; overrides ``config.cg_x0``).

    Returns
    -------
    Prepared
    """
    xp = backend.namespace(theta)
    rng = backend.host_rng(config.seed)
    dev = backend.device_of(theta)
    if config.sub_sampling_factor > 1:
        idx = backend.from_numpy(np.arange(0, len(batch), config.sub_sampling_factor), xp, dev)
        batch = batch.take(idx)
    adv, adv_std_zero = batch.adv, False
    if config.normalize_adv:
        adv, adv_std_zero = normalize_advantages(adv, ddof=config.adv_std_ddof, eps=config.adv_eps,
                                                 mode=config.adv_eps_mode)
    fisher_obs = batch.obs
    if config.fisher_stride > 1:
        fisher_obs = xp.take(fisher_obs, backend.from_numpy(np.arange(0, len(batch), config.fisher_stride), xp, dev),
                             axis=0)
    if config.fisher_fraction < 1:
        m = max(1, int(round(config.fisher_fraction * fisher_obs.shape[0])))
        pick = np.sort(rng.choice(fisher_obs.shape[0], size=m, replace=False))
        fisher_obs = xp.take(fisher_obs, backend.from_numpy(pick, xp, dev), axis=0)
    kl_scale = 1.0 / policy.mean_reduction_size if config.kl_action_reduction == "mean" else 1.0
    if x0 is None and config.cg_x0 == "random":
        x0 = config.cg_x0_scale * rng.standard_normal(policy.num_params)
    if x0 is not None:
        x0 = backend.from_numpy(backend.to_numpy(x0), xp, dev, theta.dtype)
    return Prepared(batch.obs, batch.act, batch.logp_old, adv, adv_std_zero, fisher_obs, kl_scale,
                    config.kl_reverse(policy.kind), x0)


def trpo_step(policy, theta, batch: Batch, config: TRPOConfig = TRPOConfig(), *, x0=None):
    r"""One policy update: g → CG → β → line search (or a fixed NPG / VPG step).

    .. math::

        g = \nabla_\theta L(\theta_{old}),\quad (F + \lambda_d I)x = g,\quad
        \beta = \sqrt{2\delta / x^\top(F+\lambda_d I)x},\quad
        \theta = \theta_{old} + \alpha^j\beta x

    with j the first try that the configured rule accepts (θ_old itself if
    none is).  NPG: :math:`\theta = \theta_{old} + \kappa x`; VPG:
    :math:`\theta = \theta_{old} + \kappa g` (κ = ``config.step_size``).

    The network runs forward once at θ_old (shared by g, the surrogate, the
    entropy and the Fisher operator, unless the config takes the Fisher
    products on a subset of the samples) and once per line-search try.

    Parameters
    ----------
    policy : MLPPolicy
    theta : array (P,)
        θ_old.
    batch : Batch
    config : TRPOConfig
    x0 : array (P,), optional
        Explicit CG start (overrides ``config.cg_x0``), e.g. to replay SB3-contrib's
        random start from a trace.

    Returns
    -------
    theta_new : array (P,)
        θ_old itself (the same object, bit for bit) when no step is taken.
    info : StepInfo
    """
    theta = policy._check_theta(theta)
    if len(batch) == 0:
        raise ValueError("batch is empty")
    prep = prepare_update(policy, theta, batch, config, x0)
    u = _Update(policy, theta, prep, config)
    g = u.gradient()                                                   # g = ∇L(θ_old)
    if config.skip_if_zero_grad and np.allclose(u.g_host, 0):
        return u.finish("skipped", theta)
    if config.method == "vpg":                                         # θ = θ_old + κ g
        return u.finish("fixed_step", theta + config.step_size * g, full_step=config.step_size * g,
                        expected=config.step_size * float(u.g_host @ u.g_host))
    if not np.any(u.g_host):
        return u.finish("zero_gradient", theta)
    cg, x, xFx, gx = u.solve()                                         # (F + λ_d I)x = g
    if not (math.isfinite(xFx) and xFx > 0):
        return u.finish("nonpositive_curvature", theta, cg=cg, step_dir=x, xFx=xFx)
    if config.method == "npg":                                         # θ = θ_old + κ x
        return u.finish("fixed_step", theta + config.step_size * x, cg=cg, step_dir=x, xFx=xFx,
                        full_step=config.step_size * x, expected=config.step_size * gx)
    b = beta(xFx, config.max_kl, config.step_size_eps)                 # β = √(2δ / xᵀ(F+λ_d I)x)
    ls = u.line_search(b * x, b * gx)                                  # θ_old + α^j βx
    return u.finish("accepted" if ls.success else "line_search_failed", ls.x, cg=cg, step_dir=x, xFx=xFx,
                    beta=b, full_step=b * x, expected=b * gx, ls=ls)


class _Update:
    """The stages of :func:`trpo_step` on a prepared batch; θ_old's forward pass is done once."""

    def __init__(self, policy, theta, prep: Prepared, config: TRPOConfig):
        self.policy, self.theta, self.prep, self.config = policy, theta, prep, config
        self.xp = backend.namespace(theta)
        self.old = policy.at(theta, prep.obs, prep.act)               # the one forward pass at θ_old
        self.products: list = []                                      # (v, (F+λ_d I)v), in the order made
        self.fx = None
        self.surrogate_before = self.objective(self.old)
        self.entropy = backend.to_float(self.old.entropy())

    def objective(self, at) -> float:
        """L(θ) (+ c_H H̄(θ)) at a :class:`~trpo_ref.policy.PolicyAt`."""
        val = backend.to_float(at.surrogate(self.prep.adv, self.prep.logp_old))
        if self.config.entropy_coef:
            val += self.config.entropy_coef * backend.to_float(at.entropy())
        return val

    def kl(self, at) -> float:
        """KL between θ_old and θ in the configured direction (×1/A under SB3's "mean" reduction)."""
        return self.prep.kl_scale * backend.to_float(at.kl(self.old, reverse=self.prep.reverse))

    def gradient(self):
        g = self.old.surrogate_grad(self.prep.adv, self.prep.logp_old)
        if self.config.entropy_coef:
            g = g + self.config.entropy_coef * self.old.entropy_grad()
        self.g, self.g_host = g, backend.to_numpy(g)
        if not (math.isfinite(self.surrogate_before) and np.all(np.isfinite(self.g_host))):
            raise ValueError("the surrogate or its gradient is not finite at theta_old: check batch.logp_old "
                             "(log-probabilities of the batch's actions under theta_old) and batch.adv")
        return g

    def solve(self):
        """CG on (F + λ_d I)x = g from x₀, then (F + λ_d I)x: returns (cg, x, xᵀ(F+λ_d I)x, gᵀx)."""
        prep, config, xp = self.prep, self.config, self.xp
        same_samples = prep.fisher_obs is prep.obs
        fisher = (self.old.fisher_operator() if same_samples
                  else self.policy.fisher_operator(self.theta, prep.fisher_obs))

        def damped_fvp(v):
            fv = fisher(v)
            fv = (prep.kl_scale * fv if prep.kl_scale != 1.0 else fv) + config.cg_damping * v
            self.products.append((v, fv))
            return fv

        cg = conjugate_gradient(damped_fvp, self.g, max_iter=config.cg_iters, rtol=config.cg_rtol,
                                atol=config.cg_atol, squared_residual_tol=config.cg_residual_tol, x0=prep.x0,
                                keep_iterates=True, alpha_eps=config.cg_alpha_eps,
                                check_initial=config.cg_check_initial)
        self.cg = cg
        self.fx = damped_fvp(cg.x)                                   # (F + λ_d I)x: the curvature along x for β
        return cg, cg.x, backend.to_float(xp.sum(cg.x * self.fx)), backend.to_float(xp.sum(self.g * cg.x))

    def line_search(self, full_step, expected):
        config = self.config

        def evaluate(th):                                              # one forward pass per try
            at = self.policy.at(th, self.prep.obs, self.prep.act)
            return (self.objective(at) - self.surrogate_before,
                    self.kl(at) if config.kl_bound_factor is not None else None)

        return backtracking_line_search(
            evaluate, self.theta, full_step, expected,
            backtrack_coeff=config.backtrack_coeff, backtrack_iters=config.backtrack_iters,
            max_kl=None if config.kl_bound_factor is None else config.max_kl,
            kl_bound_factor=config.kl_bound_factor or 1.0, kl_strict=config.kl_strict,
            require_improvement=config.require_improvement, improve_ratio=config.improve_ratio,
            check_finite=config.check_finite,
        )

    def finish(self, status, theta_new, *, cg=None, step_dir=None, xFx=math.nan, beta=math.nan,
               full_step=None, expected=math.nan, ls=None):
        theta, prep = self.theta, self.prep
        if theta_new is theta:
            after, kl = self.surrogate_before, 0.0
        elif ls is not None and ls.tries[ls.accepted_index].kl is not None:
            accepted = ls.tries[ls.accepted_index]                     # already evaluated: no extra forward pass
            after, kl = self.surrogate_before + accepted.improvement, accepted.kl
        else:
            at = self.policy.at(theta_new, prep.obs, prep.act)
            after, kl = self.objective(at), self.kl(at)
        zeros = self.xp.zeros_like(theta)
        products = self.products
        has_x0 = cg is not None and prep.x0 is not None and len(products) > 0
        cg_products = products[(1 if has_x0 else 0): (len(products) - (self.fx is not None))]
        return theta_new, StepInfo(
            status=status, adv=prep.adv, adv_std_zero=prep.adv_std_zero, g=self.g, cg=cg,
            step_dir=zeros if step_dir is None else step_dir, fisher_products=tuple(cg_products),
            x0=prep.x0 if cg is not None else None, Fx0=products[0][1] if has_x0 else None, Fx=self.fx,
            xFx=xFx, beta=beta, full_step=zeros if full_step is None else full_step, expected_improvement=expected,
            line_search=ls, accepted_index=None if ls is None else ls.accepted_index, kl=kl,
            surrogate_before=self.surrogate_before, surrogate_after=after,
            surrogate_change=after - self.surrogate_before, entropy=self.entropy,
        )
