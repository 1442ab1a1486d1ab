"""What the A/B scripts (ab_train_exact.py, ab_critic_fit.py, ab_rollout_sampler.py) share: each runs
one child process per tree of trpo_ref, alternating which tree goes first, on one BLAS thread with
``OPENBLAS_CORETYPE`` / ``OPENBLAS_L2_SIZE`` lifted (the benchmarks' rule, see docs/performance.md)."""

from __future__ import annotations

import os

TREES = ("base", "head")


def child_env(pythonpath: str | None = None) -> dict:
    """The environment of a child: one BLAS thread, the processor's own OpenBLAS kernel, and
    ``PYTHONPATH`` set to ``pythonpath`` (removed when None: the child finds its tree itself)."""
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "PYTHONPATH")}
    env.update(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    if pythonpath is not None:
        env["PYTHONPATH"] = pythonpath
    return env


def order(rep: int) -> tuple[str, str]:
    """The trees of repetition ``rep`` in the order they run: base first on even repetitions."""
    return TREES if rep % 2 == 0 else TREES[::-1]
