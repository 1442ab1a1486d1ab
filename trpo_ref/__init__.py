"""trpo_ref: a reference implementation of Trust Region Policy Optimization.

NumPy (CuPy on a GPU) with every derivative written by hand; see docs/.
"""

from .advantages import discounted_returns, gae, td_residuals
from .cg import CGResult, conjugate_gradient
from .linesearch import LineSearchResult, LineSearchTry, backtracking_line_search
from .policy import (BernoulliMLPPolicy, CategoricalMLPPolicy, FisherOperator, GaussianMLPPolicy, MLPPolicy,
                     MultiCategoricalMLPPolicy, policy_for_head, policy_from_spec)
from .trpo import PRESETS, Batch, StepInfo, TRPOConfig, beta, normalize_advantages, trpo_step
from .value import ValueFunction, explained_variance, fit_adam, fit_lbfgs

__version__ = "0.1.0"

__all__ = [
    "MLPPolicy",
    "GaussianMLPPolicy",
    "CategoricalMLPPolicy",
    "MultiCategoricalMLPPolicy",
    "BernoulliMLPPolicy",
    "FisherOperator",
    "policy_from_spec",
    "policy_for_head",
    "conjugate_gradient",
    "CGResult",
    "backtracking_line_search",
    "LineSearchResult",
    "LineSearchTry",
    "gae",
    "td_residuals",
    "discounted_returns",
    "Batch",
    "TRPOConfig",
    "StepInfo",
    "PRESETS",
    "trpo_step",
    "normalize_advantages",
    "beta",
    "ValueFunction",
    "fit_adam",
    "fit_lbfgs",
    "explained_variance",
]
