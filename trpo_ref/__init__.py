"""trpo_ref: a reference implementation of Trust Region Policy Optimization.

NumPy (CuPy on a GPU) with every derivative written by hand; see docs/.
"""

from .policy import CategoricalMLPPolicy, FisherOperator, GaussianMLPPolicy, policy_from_spec

__version__ = "0.1.0"

__all__ = [
    "GaussianMLPPolicy",
    "CategoricalMLPPolicy",
    "FisherOperator",
    "policy_from_spec",
]
