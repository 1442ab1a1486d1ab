r"""The configuration of one update: :class:`TRPOConfig` and the library presets.

Every choice that changes the numbers of one TRPO update is a field of
:class:`TRPOConfig`; :data:`PRESETS` fixes them as other libraries do
(docs/presets.md cites each library's source for every field).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, fields, replace

__all__ = ["TRPOConfig", "PRESETS"]


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
    """Apply the CG stopping rule to r₀ = g − (F+λ_d I)x₀ before iterating (SB3-contrib), so a
    random start that already meets it is returned as is."""

    cg_rtol: float = 0.0
    """Relative CG tolerance on ‖r‖ (SciPy style); 0 disables it."""

    cg_atol: float = 0.0
    """Absolute CG tolerance on ‖r‖; 0 disables it."""

    cg_alpha_eps: float = 0.0
    """``eps`` in CG's step τ = rᵀr / (pᵀAp + eps): 0 in the paper; Spinning Up's CG adds 1e-8."""

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
    """``eps`` of the normalisation (SB3-contrib 1e-8)."""

    adv_eps_mode: str = "std_plus_eps"
    """Denominator: ``"std_plus_eps"`` (std + eps), ``"sqrt_var_plus_eps"`` (√(var + eps)) or ``"var_plus_eps"`` (var + eps, garage)."""

    entropy_coef: float = 0.0
    """c_H: the objective is L + c_H·H̄ (every preset: 0)."""

    skip_if_zero_grad: bool = False
    """Skip the update when g is all close to 0 (``np.allclose(g, 0)``: baselines, modular_rl)."""

    step_size_eps: float = 0.0
    """``eps`` added under the root of β: √(2δ / (xᵀ(F+λ_d I)x + eps)) (Spinning Up, garage: 1e-8)."""

    step_size: float = 0.01
    """Fixed step κ for ``method="npg"`` / ``"vpg"``."""

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

    def kl_reverse(self, kind: str) -> bool:
        """Whether the line search's KL is KL(π_θ‖π_old) for a policy head of this ``kind``.

        ``kl_direction``, unless ``kl_direction_categorical`` overrides it for a categorical head
        (Spinning Up's TRPO computes its categorical KL in the other order than its Gaussian one).

        Parameters
        ----------
        kind : str
            The policy head's kind (:attr:`trpo_ref.heads.Head.kind`).

        Returns
        -------
        bool
        """
        overrides = {"categorical": self.kl_direction_categorical}
        return (overrides.get(kind) or self.kl_direction) == "new_old"

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
        return cls(**checked_fields(cls, d))


def checked_fields(cls, d) -> dict:
    """A copy of ``d`` once it is known to be a dict of field names of the dataclass ``cls``.

    The check both configs' ``from_dict`` make (one-line errors: not a dict, or
    the unknown keys by name).

    Parameters
    ----------
    cls : dataclass type
    d : dict
        Field name to value.

    Returns
    -------
    dict
    """
    if not isinstance(d, dict):
        raise ValueError(f"{cls.__name__}.from_dict needs a dict, got {type(d).__name__}")
    unknown = set(d) - {f.name for f in fields(cls)}
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields {sorted(unknown, key=repr)}")
    return dict(d)


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
