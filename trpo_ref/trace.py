"""Compatibility names: the oracle lives in :mod:`trpo_ref.oracle`; ``trpo_ref.trace`` keeps the names
docs/oracle.md and older code use (``compute_trace``, ``check_trace``, ``compare_traces``, ``Trace``,
``load_trace``, ``synthetic_case`` and the rest of the oracle's public API)."""

from .oracle import *  # noqa: F401,F403
from .oracle import __all__  # noqa: F401
