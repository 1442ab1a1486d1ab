r"""One TRPO policy update, with every intermediate exposed.

==========================================================================  ===============================
equation                                                                    where
==========================================================================  ===============================
:math:`\hat A \leftarrow (\hat A - \mathrm{mean})/(\mathrm{std} + \epsilon)` (optional)
                                                                            :func:`normalize_advantages`
:math:`L(\theta) = \frac1N\sum_n r_n(\theta)\hat A_n + c_H \bar H(\theta)`  :func:`trpo_step` (objective)
:math:`g = \nabla_\theta L(\theta_{old})`                                   :func:`trpo_step`
:math:`(F + \lambda_d I)x = g` by conjugate gradient from :math:`x_0 = 0`   :func:`trpo_step`, :func:`trpo_ref.cg.conjugate_gradient`
:math:`\beta = \sqrt{2\delta / x^\top(F + \lambda_d I)x}`                   :func:`step_size`
expected improvement of fraction f: :math:`f\beta g^\top x`                 :func:`trpo_step`
:math:`\theta_j = \theta_{old} + \alpha^j\beta x`, first admissible try     :func:`trpo_ref.linesearch.backtracking_line_search`
NPG: :math:`\theta = \theta_{old} + \epsilon x`; VPG: :math:`\theta = \theta_{old} + \epsilon g`
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
import numbers
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, NamedTuple

import numpy as np

from . import backend
from .cg import CGResult, conjugate_gradient
from .linesearch import LineSearchResult, LineSearchTry, backtracking_line_search

__all__ = ["Batch", "TRPOConfig", "StepInfo", "Prepared", "prepare_update", "trpo_step", "normalize_advantages",
           "step_size", "PRESETS"]


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


@dataclass(frozen=True)
class TRPOConfig:
    """Every choice that changes the numbers of one update.

    Defaults are the seed's algorithm (preset ``"paper"``); ``TRPOConfig.preset(name)``
    gives another library's update.  See docs/presets.md for the sources.
    """

    method: str = "trpo"
    """``"trpo"`` (β fills the trust region, then line search), ``"npg"`` (fixed
    step ``step_size`` along x, no line search) or ``"vpg"`` (fixed step along g)."""

    max_kl: float = 0.01
    """Trust-region radius δ.  SB3-contrib: ``target_kl``; Spinning Up: ``delta``."""

    cg_iters: int = 10
    """Conjugate-gradient iterations.  SB3-contrib: ``cg_max_steps``; Spinning Up: ``cg_iters``."""

    cg_damping: float = 0.1
    """λ_d: CG solves (F + λ_d I)x = g, and β uses the damped product.  SB3-contrib and Spinning Up: ``cg_damping`` / ``damping_coeff``."""

    cg_residual_tol: float | None = 1e-10
    """Stop CG early when rᵀr < this (squared residual, strict), as OpenAI baselines,
    modular_rl, SB3-contrib and garage do; ``None``: always run ``cg_iters`` (Spinning Up)."""

    cg_check_initial: bool = False
    """Apply the CG stopping rule to r₀ = g − (F+λI)x₀ before iterating (SB3-contrib), so a
    random start that already meets it is returned as is."""

    cg_rtol: float = 0.0
    """Relative CG tolerance on ‖r‖ (SciPy style); 0 disables it."""

    cg_atol: float = 0.0
    """Absolute CG tolerance on ‖r‖; 0 disables it."""

    cg_alpha_eps: float = 0.0
    """ε in CG's step α = rᵀr / (pᵀAp + ε): 0 in the paper; Spinning Up's CG adds 1e-8."""

    cg_x0: str = "zero"
    """CG start: ``"zero"`` or ``"random"`` (``cg_x0_scale`` · N(0, I) drawn on the host, as SB3-contrib)."""

    cg_x0_scale: float = 1e-4
    """Scale of the random CG start (SB3-contrib: 1e-4)."""

    backtrack_coeff: float = 0.5
    """α: the line search tries fractions α^j.  0.5 in the paper, 0.8 in SB3-contrib
    (``line_search_shrinking_factor``) and Spinning Up (``backtrack_coeff``)."""

    backtrack_iters: int = 10
    """Number of tries J.  SB3-contrib: ``line_search_max_iter``; Spinning Up: ``backtrack_iters``."""

    kl_bound_factor: float | None = 1.0
    """Accept only tries with KL ≤ factor·δ (baselines: 1.5); ``None``: no KL check (modular_rl)."""

    kl_strict: bool = False
    """Use KL < bound instead of KL ≤ bound (SB3-contrib, garage)."""

    require_improvement: str = "strict"
    """``"strict"`` (ΔL > 0), ``"nonstrict"`` (ΔL ≥ 0: baselines, Spinning Up) or ``"none"``."""

    improve_ratio: float | None = None
    """Require ΔL / (f β gᵀx) > this (modular_rl: 0.1); ``None`` disables the test."""

    check_finite: bool = True
    """Reject tries whose surrogate change or KL is not finite."""

    kl_direction: str = "old_new"
    """KL checked in the line search: ``"old_new"`` = KL(π_old‖π_θ) (paper), ``"new_old"`` = KL(π_θ‖π_old) (SB3-contrib)."""

    kl_direction_categorical: str | None = None
    """Override of ``kl_direction`` for categorical policies (Spinning Up: old_new); ``None``: same."""

    kl_action_reduction: str = "sum"
    """Gaussian KL over action dimensions: ``"sum"`` (the KL of the joint) or ``"mean"``
    (SB3-contrib averages over batch and dimensions, which divides both the KL and F by act_dim)."""

    fisher_stride: int = 1
    """Fisher products on every k-th sample only (OpenAI baselines: 5); g and the line search use all."""

    fisher_fraction: float = 1.0
    """Fisher products on a random fraction of the samples (drawn on the host with ``seed``)."""

    sub_sampling_factor: int = 1
    """Stride the whole batch (gradient, Fisher and line search) by k (SB3-contrib's ``sub_sampling_factor``)."""

    normalize_adv: bool = False
    """Standardise advantages before the update (all libraries but the paper's equations)."""

    adv_std_ddof: int = 0
    """Degrees of freedom of the std: 0 population (NumPy: baselines, Spinning Up), 1 sample (torch: SB3-contrib, garage)."""

    adv_eps: float = 0.0
    """ε of the normalisation (SB3-contrib 1e-8)."""

    adv_eps_mode: str = "std_plus_eps"
    """Denominator: ``"std_plus_eps"`` (std + ε), ``"sqrt_var_plus_eps"`` (√(var + ε)) or ``"var_plus_eps"`` (var + ε, garage)."""

    entropy_coef: float = 0.0
    """c_H: the objective is L + c_H·H̄ (every preset: 0)."""

    skip_if_zero_grad: bool = False
    """Skip the update when g is all close to 0 (``np.allclose(g, 0)``: baselines, modular_rl)."""

    step_size_eps: float = 0.0
    """ε added under the root of β: √(2δ / (xᵀ(F+λI)x + ε)) (Spinning Up, garage: 1e-8)."""

    step_size: float = 0.01
    """Fixed step ε for ``method="npg"`` / ``"vpg"``."""

    seed: int | None = 0
    """Host seed for the random CG start and the random Fisher fraction."""

    def __post_init__(self):
        def bad(name, why):
            raise ValueError(f"TRPOConfig.{name} {why}, got {getattr(self, name)!r}")

        def real(name, lo=None, lo_open=False, hi=None, optional=False):
            """Check a real field (finite, bounds) and store it as a Python float, so that
            a NumPy scalar cannot promote a float32 update to float64."""
            v = getattr(self, name)
            if v is None and optional:
                return
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
                bad(name, "must be a finite number" + (" or None" if optional else ""))
            if lo is not None and (v <= lo if lo_open else v < lo):
                bad(name, f"must be {'>' if lo_open else '>='} {lo}")
            if hi is not None and v > hi:
                bad(name, f"must be <= {hi}")
            object.__setattr__(self, name, float(v))

        def integer(name, lo, optional=False):
            v = getattr(self, name)
            if v is None and optional:
                return
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < lo:
                bad(name, f"must be an integer >= {lo}" + (" or None" if optional else ""))
            object.__setattr__(self, name, int(v))

        def choice(name, options):
            if getattr(self, name) not in options:
                bad(name, "must be one of " + ", ".join(repr(o) for o in options))

        choice("method", ("trpo", "npg", "vpg"))
        real("max_kl", 0, lo_open=True)
        integer("cg_iters", 1)
        real("cg_damping", 0)
        real("cg_residual_tol", 0, optional=True)
        real("cg_rtol", 0)
        real("cg_atol", 0)
        real("cg_alpha_eps", 0)
        choice("cg_x0", ("zero", "random"))
        real("cg_x0_scale", 0)
        real("backtrack_coeff", 0, lo_open=True)
        if not self.backtrack_coeff < 1:
            bad("backtrack_coeff", "must lie in (0, 1)")
        integer("backtrack_iters", 1)
        real("kl_bound_factor", 0, lo_open=True, optional=True)
        choice("require_improvement", ("strict", "nonstrict", "none"))
        real("improve_ratio", optional=True)
        choice("kl_direction", ("old_new", "new_old"))
        choice("kl_direction_categorical", ("old_new", "new_old", None))
        choice("kl_action_reduction", ("sum", "mean"))
        integer("fisher_stride", 1)
        real("fisher_fraction", 0, lo_open=True, hi=1)
        integer("sub_sampling_factor", 1)
        choice("adv_std_ddof", (0, 1))
        real("adv_eps", 0)
        choice("adv_eps_mode", ("std_plus_eps", "sqrt_var_plus_eps", "var_plus_eps"))
        real("entropy_coef")
        real("step_size_eps", 0)
        real("step_size", 0, lo_open=True)
        integer("seed", 0, optional=True)

    @classmethod
    def preset(cls, name: str, **overrides) -> "TRPOConfig":
        r"""The update of a named library (see :data:`PRESETS` and docs/presets.md).

        Parameters
        ----------
        name : str
            A key of :data:`PRESETS`.
        **overrides
            Fields to replace.

        Returns
        -------
        TRPOConfig
        """
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
        return replace(cls(**PRESETS[name]), **overrides)

    def to_dict(self) -> dict:
        """Plain dict (JSON-serialisable)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TRPOConfig":
        r"""Inverse of :meth:`to_dict`; unknown keys are an error naming them.

        Parameters
        ----------
        d : dict
            Field name to value.

        Returns
        -------
        TRPOConfig
        """
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown TRPOConfig fields {sorted(unknown)}")
        return cls(**d)


#: Each library's update; verified against its source (docs/presets.md cites file and line).
PRESETS: dict[str, dict] = {
    "paper": dict(),
    "sb3-contrib": dict(
        cg_iters=15, cg_x0="random", cg_x0_scale=1e-4, cg_check_initial=True, backtrack_coeff=0.8, kl_strict=True,
        check_finite=False, kl_direction="new_old", kl_action_reduction="mean",
        normalize_adv=True, adv_std_ddof=1, adv_eps=1e-8,
    ),
    "baselines": dict(
        kl_bound_factor=1.5, require_improvement="nonstrict", fisher_stride=5,
        normalize_adv=True, skip_if_zero_grad=True,
    ),
    "spinningup": dict(
        cg_residual_tol=None, backtrack_coeff=0.8, require_improvement="nonstrict", check_finite=False,
        kl_direction="new_old", kl_direction_categorical="old_new", normalize_adv=True, step_size_eps=1e-8,
        cg_alpha_eps=1e-8,
    ),
    "modular_rl": dict(
        cg_damping=1e-3, kl_bound_factor=None, improve_ratio=0.1, check_finite=False,
        normalize_adv=True, skip_if_zero_grad=True,
    ),
    "garage": dict(
        cg_damping=1e-5, backtrack_coeff=0.8, backtrack_iters=15, kl_strict=True, check_finite=False,
        normalize_adv=True, adv_std_ddof=1, adv_eps=1e-8, adv_eps_mode="var_plus_eps", step_size_eps=1e-8,
    ),
    "tianshou": dict(  # 2.0.1; CG on -g, float32 ratio and tanh-squashed mean are quirks, not conventions
        backtrack_coeff=0.8, kl_strict=True, check_finite=False, normalize_adv=True, adv_std_ddof=1,
    ),
    "skrl": dict(  # 2.1.1, Gaussian only; its compounded expected improvement is a bug the check reports
        kl_strict=True, require_improvement="none", improve_ratio=0.5, check_finite=False,
        normalize_adv=True, adv_std_ddof=1, adv_eps=1e-8,
    ),
}


class StepInfo(NamedTuple):
    """Every intermediate of one update (floats on the host, vectors on the backend).

    Attributes
    ----------
    status : str
        ``"accepted"``, ``"line_search_failed"``, ``"zero_gradient"``,
        ``"nonpositive_curvature"`` (xᵀ(F+λI)x ≤ 0 or not finite), ``"skipped"``
        (``skip_if_zero_grad``) or ``"fixed_step"`` (NPG / VPG).
    adv : array (N,)
        The advantages the surrogate used (normalised when the config says so).
    adv_std_zero : bool
        Normalisation met an advantage std of 0 (advantages centred, not divided).
    g : array (P,)
        Gradient of the objective at θ_old.
    cg : CGResult or None
    step_dir : array (P,)
        x ≈ (F + λI)⁻¹ g.
    fisher_products : tuple of (p_k, (F+λI)p_k)
        The Fisher products of CG's directions p_0, p_1, ..., in order (not the
        product of x₀ nor the one of x: those are ``Fx0`` and ``Fx``).
    x0 : array (P,) or None
        CG's start when it is not 0 (a given or random x₀).
    Fx0 : array (P,) or None
        (F + λI)x₀, CG's first product when x₀ is given (r₀ = g − (F+λI)x₀).
    Fx : array (P,) or None
        (F + λI)x, the product β uses (None when CG did not run).
    xFx : float
        xᵀ(F + λI)x (with the SB3 ``"mean"`` reduction: of the scaled F).
    beta : float
        Step length along x (nan when not computed).
    full_step : array (P,)
        βx (TRPO), εx (NPG) or εg (VPG).
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
        """Fisher products the update made: CG's, plus (F+λI)x₀ and (F+λI)x when computed."""
        return len(self.fisher_products) + (self.Fx0 is not None) + (self.Fx is not None)

    @property
    def n_backtracks(self) -> int:
        """Tries rejected before the accepted one (all of them on failure)."""
        if self.line_search is None:
            return 0
        return len(self.tries) if self.accepted_index is None else self.accepted_index


def normalize_advantages(adv_n, *, ddof: int = 0, eps: float = 0.0, mode: str = "std_plus_eps"):
    r"""Standardised advantages and whether the spread was zero.

    .. math:: \hat A' = \frac{\hat A - \bar A}{s + \epsilon},\quad
              s = \sqrt{\tfrac{1}{N - \mathrm{ddof}}\sum_n(\hat A_n - \bar A)^2}

    (``mode="sqrt_var_plus_eps"``: divide by :math:`\sqrt{s^2 + \epsilon}`;
    ``"var_plus_eps"``: by :math:`s^2 + \epsilon`, as garage does.)

    A zero spread — all advantages equal, tested exactly, or N − ddof ≤ 0 — is
    returned as zeros with the flag True.  (Computing the std of equal values in
    floating point leaves the rounding residue of the mean, so a library that
    only tests ``std == 0`` turns constant advantages into ±1 everywhere; here
    they carry no signal and give g = 0.)

    Parameters
    ----------
    adv_n : array (N,)
    ddof : int
        Degrees of freedom of s (0 or 1).
    eps : float
        ε >= 0.
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


def step_size(xFx: float, max_kl: float, eps: float = 0.0) -> float:
    r"""Largest step along x whose quadratic KL model equals δ.

    .. math:: \beta = \sqrt{\frac{2\delta}{x^\top(F + \lambda_d I)x + \epsilon}},\qquad
              \tfrac12(\beta x)^\top(F + \lambda_d I)(\beta x) = \delta \ (\epsilon = 0)

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


def _kl_reverse(policy, config: TRPOConfig) -> bool:
    direction = config.kl_direction
    if policy.kind == "categorical" and config.kl_direction_categorical is not None:
        direction = config.kl_direction_categorical
    return direction == "new_old"


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
    policy : GaussianMLPPolicy or CategoricalMLPPolicy
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
    kl_scale = 1.0 / policy.act_dim if (policy.kind == "gaussian" and config.kl_action_reduction == "mean") else 1.0
    if x0 is None and config.cg_x0 == "random":
        x0 = config.cg_x0_scale * rng.standard_normal(policy.num_params)
    if x0 is not None:
        x0 = backend.from_numpy(backend.to_numpy(x0), xp, dev, theta.dtype)
    return Prepared(batch.obs, batch.act, batch.logp_old, adv, adv_std_zero, fisher_obs, kl_scale,
                    _kl_reverse(policy, config), x0)


def trpo_step(policy, theta, batch: Batch, config: TRPOConfig = TRPOConfig(), *, x0=None):
    r"""One policy update: g → CG → β → line search (or a fixed NPG / VPG step).

    .. math::

        g = \nabla_\theta L(\theta_{old}),\quad (F + \lambda_d I)x = g,\quad
        \beta = \sqrt{2\delta / x^\top(F+\lambda_d I)x},\quad
        \theta = \theta_{old} + \alpha^j\beta x

    with j the first try that the configured rule accepts (θ_old itself if
    none is).  NPG: :math:`\theta = \theta_{old} + \epsilon x`; VPG:
    :math:`\theta = \theta_{old} + \epsilon g`.

    Parameters
    ----------
    policy : GaussianMLPPolicy or CategoricalMLPPolicy
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
    xp = backend.namespace(theta)
    theta = policy._check_theta(theta)
    if len(batch) == 0:
        raise ValueError("batch is empty")
    prep = prepare_update(policy, theta, batch, config, x0)
    obs, act, logp_old, adv = prep.obs, prep.act, prep.logp_old, prep.adv
    kl_scale, c_ent = prep.kl_scale, config.entropy_coef

    def objective(th):
        val = backend.to_float(policy.surrogate(th, obs, act, adv, logp_old))
        if c_ent:
            val += c_ent * backend.to_float(policy.entropy(th, obs))
        return val

    def kl_at(th):
        return kl_scale * backend.to_float(policy.kl(theta, th, obs, reverse=prep.reverse))

    # g = ∇L(θ_old) (+ c_H ∇H̄)
    g = policy.surrogate_grad(theta, obs, act, adv, logp_old)
    if c_ent:
        g = g + c_ent * policy.entropy_grad(theta, obs)
    surrogate_before = objective(theta)
    entropy = backend.to_float(policy.entropy(theta, obs))
    products = []  # (v, (F+λI)v) of every product, in the order made

    def finish(status, theta_new, *, cg=None, step_dir=None, fx=None, xFx=math.nan, beta=math.nan,
               full_step=None, expected=math.nan, ls=None):
        if theta_new is theta:
            after, kl = surrogate_before, 0.0
        elif ls is not None and ls.tries[ls.accepted_index].kl is not None:
            # the accepted try already evaluated both: no extra forward pass
            accepted = ls.tries[ls.accepted_index]
            after, kl = surrogate_before + accepted.improvement, accepted.kl
        else:
            after, kl = objective(theta_new), kl_at(theta_new)
        zeros = xp.zeros_like(theta)
        # CG's own products: drop (F+λI)x₀ (first, when x₀ is given) and (F+λI)x (last).
        has_x0 = cg is not None and prep.x0 is not None and len(products) > 0
        cg_products = products[(1 if has_x0 else 0): (len(products) - (fx is not None))]
        return theta_new, StepInfo(
            status=status, adv=adv, adv_std_zero=prep.adv_std_zero, g=g, cg=cg,
            step_dir=zeros if step_dir is None else step_dir, fisher_products=tuple(cg_products),
            x0=prep.x0 if cg is not None else None, Fx0=products[0][1] if has_x0 else None, Fx=fx,
            xFx=xFx, beta=beta, full_step=zeros if full_step is None else full_step, expected_improvement=expected,
            line_search=ls, accepted_index=None if ls is None else ls.accepted_index, kl=kl,
            surrogate_before=surrogate_before, surrogate_after=after, surrogate_change=after - surrogate_before,
            entropy=entropy,
        )

    g_host = backend.to_numpy(g)
    if not (math.isfinite(surrogate_before) and np.all(np.isfinite(g_host))):
        raise ValueError("the surrogate or its gradient is not finite at theta_old: check batch.logp_old "
                         "(log-probabilities of the batch's actions under theta_old) and batch.adv")
    if config.skip_if_zero_grad and np.allclose(g_host, 0):
        return finish("skipped", theta)
    if config.method == "vpg":
        full_step = config.step_size * g
        return finish("fixed_step", theta + full_step, full_step=full_step,
                      expected=config.step_size * float(g_host @ g_host))
    if not np.any(g_host):
        return finish("zero_gradient", theta)

    # (F + λI)v on the Fisher samples, forward pass cached; ×1/A under SB3's "mean" reduction.
    fisher = policy.fisher_operator(theta, prep.fisher_obs)
    damping = config.cg_damping

    def damped_fvp(v):
        fv = fisher(v)
        fv = (kl_scale * fv if kl_scale != 1.0 else fv) + damping * v
        products.append((v, fv))
        return fv

    cg = conjugate_gradient(damped_fvp, g, max_iter=config.cg_iters, rtol=config.cg_rtol, atol=config.cg_atol,
                            squared_residual_tol=config.cg_residual_tol, x0=prep.x0, keep_iterates=True,
                            alpha_eps=config.cg_alpha_eps, check_initial=config.cg_check_initial)
    x = cg.x
    fx = damped_fvp(x)  # (F + λI)x: the curvature along x for β
    xFx = backend.to_float(xp.sum(x * fx))
    gx = backend.to_float(xp.sum(g * x))
    if not (math.isfinite(xFx) and xFx > 0):
        return finish("nonpositive_curvature", theta, cg=cg, step_dir=x, fx=fx, xFx=xFx)

    if config.method == "npg":
        full_step = config.step_size * x
        return finish("fixed_step", theta + full_step, cg=cg, step_dir=x, fx=fx, xFx=xFx,
                      full_step=full_step, expected=config.step_size * gx)

    beta = step_size(xFx, config.max_kl, config.step_size_eps)
    full_step = beta * x
    expected = beta * gx

    def evaluate(th):
        return objective(th) - surrogate_before, (kl_at(th) if config.kl_bound_factor is not None else None)

    ls = backtracking_line_search(
        evaluate, theta, full_step, expected,
        backtrack_coeff=config.backtrack_coeff, backtrack_iters=config.backtrack_iters,
        max_kl=None if config.kl_bound_factor is None else config.max_kl,
        kl_bound_factor=config.kl_bound_factor or 1.0, kl_strict=config.kl_strict,
        require_improvement=config.require_improvement, improve_ratio=config.improve_ratio,
        check_finite=config.check_finite,
    )
    status = "accepted" if ls.success else "line_search_failed"
    return finish(status, ls.x, cg=cg, step_dir=x, fx=fx, xFx=xFx, beta=beta,
                  full_step=full_step, expected=expected, ls=ls)
