#!/usr/bin/env python
r"""Where the FVP's time goes: trpo_ref's blocked NumPy Gauss–Newton product, step by step (issue 14).

A copy of ``MLP._gauss_newton_numpy`` with a timer around every NumPy call,
run on the benchmark's problem (Gaussian 64×64 tanh, obs 17, act 6); the copy's
result is checked against ``FisherOperator`` so it cannot drift from the real
code unnoticed.  Prints, per step kind, the share of the product's time:
matrix products (jvp, vjp W̄, vjp h̄), elementwise passes (φ′ products, the
metric), the copies of h into the packed rows, and what is left (Python, the
log σ block, damping).  One BLAS thread, one CPU, ``OPENBLAS_CORETYPE`` removed
(as scripts/bench.py).

Usage::

    python scripts/fvp_breakdown.py [--batch 2048 16384] [--dtypes float32 float64] [--reps 50]
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__":
    for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[_v] = "1"
    for _v in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        os.environ.pop(_v, None)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})

import argparse  # noqa: E402
import time  # noqa: E402
from collections import defaultdict  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import DAMPING, make_problem  # noqa: E402
from trpo_ref.mlp import default_block_rows  # noqa: E402


def timed_product(op, v, T):
    """``op(v)`` re-done with a timer per step; accumulates seconds into ``T[kind]``."""
    t_all = time.perf_counter()
    mlp, cache, metric = op.policy.mlp, op._cache, op._metric_rows
    theta_dot = v[: mlp.num_params]
    dtype, n = theta_dot.dtype, cache.inputs[0].shape[0]
    sizes, L = mlp.sizes, mlp.n_layers
    rows = min(n, op.block_rows or default_block_rows(max(sizes), dtype.itemsize))
    derivs = [mlp._act_deriv(cache, l) for l in range(L - 1)]
    packed, stacked = [], []
    for l in range(L):
        k, (s, w, e) = sizes[l], mlp._offsets[l]
        buf = np.empty((rows, 2 * k + 1 if l else k + 1), dtype=dtype)
        buf[:, k] = 1
        packed.append(buf)
        if l:
            S = np.empty((2 * k + 1, sizes[l + 1]), dtype=dtype)
            S[: k + 1] = theta_dot[s:e].reshape(k + 1, sizes[l + 1])
            S[k + 1:] = cache.weights[l]
            stacked.append(S)
        else:
            stacked.append(theta_dot[s:e].reshape(k + 1, sizes[1]))
    theta_bar = np.empty_like(theta_dot)
    clock = time.perf_counter
    for start in range(0, n, rows):
        stop = min(start + rows, n)
        m = stop - start
        for l in range(L):
            k = sizes[l]
            X = packed[l][:m]
            t = clock(); X[:, :k] = cache.inputs[l][start:stop]; T["copy h into packed rows"] += clock() - t  # noqa: E702
            t = clock(); z_dot = X @ stacked[l]; T["GEMM jvp [h|1|ḣ][Ẇ;ḃ;W]"] += clock() - t  # noqa: E702
            if l < L - 1:
                t = clock()
                np.multiply(z_dot, derivs[l][start:stop], out=packed[l + 1][:m, sizes[l + 1] + 1:])
                T["elementwise φ′·ż (jvp)"] += clock() - t
        t = clock(); z_bar = metric(z_dot, start, stop); T["elementwise metric M"] += clock() - t  # noqa: E702
        for l in range(L - 1, -1, -1):
            k, (s, _, e) = sizes[l], mlp._offsets[l]
            t = clock(); part = packed[l][:m, : k + 1].T @ z_bar; T["GEMM vjp [h|1]ᵀz̄"] += clock() - t  # noqa: E702
            t = clock()
            if start == 0:
                theta_bar[s:e] = part.reshape(-1)
            else:
                theta_bar[s:e] += part.reshape(-1)
            T["accumulate θ̄ over blocks"] += clock() - t
            if l:
                t = clock(); h_bar = z_bar @ cache.weights[l].T; T["GEMM vjp z̄Wᵀ"] += clock() - t  # noqa: E702
                t = clock(); h_bar *= derivs[l - 1][start:stop]; T["elementwise φ′·h̄ (vjp)"] += clock() - t  # noqa: E702
                z_bar = h_bar
    fv = np.concatenate([theta_bar, 2 * v[mlp.num_params:]]) + op.damping * v
    T["total"] += clock() - t_all
    return fv


def generic_product(op, v):
    """The product as ``FisherOperator`` computed it before issue 14 (and still does off NumPy):
    one unblocked ``MLP.jvp``, the metric on all rows, one ``MLP.vjp``."""
    mlp, cache = op.policy.mlp, op._cache
    out_dot = mlp.jvp(cache, v[: mlp.num_params])
    fv, _ = mlp.vjp(cache, op._metric_rows(out_dot, 0, op.n), input_grad=False)
    return np.concatenate([fv, 2 * v[mlp.num_params:]]) + op.damping * v


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, nargs="+", default=[2048, 16384])
    p.add_argument("--dtypes", nargs="+", default=["float32", "float64"])
    p.add_argument("--reps", type=int, default=50)
    p.add_argument("--step", action="store_true",
                   help="also time trpo_step (sb3-contrib preset) with this product against the unblocked path")
    args = p.parse_args(argv)
    for n in args.batch:
        for dtype in args.dtypes:
            pi, theta, batch, _ = make_problem(n, dtype)
            op = pi.fisher_operator(theta, batch.obs, DAMPING)
            v = np.random.default_rng(2).standard_normal(pi.num_params).astype(dtype)
            T = defaultdict(float)
            ref = op(v)
            got = timed_product(op, v, T)
            tol = 1e-5 if dtype == "float32" else 1e-13
            assert np.linalg.norm(got - ref) <= tol * np.linalg.norm(ref), "the copy drifted from MLP._gauss_newton_numpy"
            T.clear()
            plain, before = [], []
            for _ in range(args.reps):  # interleaved: instrumented copy, the operator, the pre-issue-14 path
                timed_product(op, v, T)
                t0 = time.perf_counter()
                op(v)
                plain.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                generic_product(op, v)
                before.append(time.perf_counter() - t0)
            speedup = np.asarray(before) / np.asarray(plain)
            total = T.pop("total")
            print(f"\nbatch {n} {dtype}: instrumented {1e3 * total / args.reps:.3f} ms/product "
                  f"(uninstrumented median {1e3 * np.median(plain):.3f} ms; unblocked jvp→vjp path "
                  f"{1e3 * np.median(before):.3f} ms, speed-up rep by rep {np.median(speedup):.2f}× "
                  f"[{np.percentile(speedup, 25):.2f}–{np.percentile(speedup, 75):.2f}])")
            other = total - sum(T.values())
            for k, x in sorted(T.items(), key=lambda kv: -kv[1]) + [("rest (Python, log σ, damping, timers)", other)]:
                print(f"  {k:40s} {100 * x / total:5.1f} %")
            if args.step:
                step_speedup(pi, theta, batch, max(5, args.reps // 5))
    return 0


def step_speedup(pi, theta, batch, reps):
    """trpo_step with the blocked product against trpo_step with the unblocked path, interleaved."""
    from trpo_ref.policy import FisherOperator
    from trpo_ref.trpo import TRPOConfig, trpo_step

    blocked = FisherOperator.__call__

    def unblocked(self, v):
        self.n_products += 1
        return generic_product(self, v)

    config = TRPOConfig.preset("sb3-contrib")
    times = {"blocked": [], "unblocked": []}
    try:
        for _ in range(reps):
            for name, call in (("blocked", blocked), ("unblocked", unblocked)):
                FisherOperator.__call__ = call
                t0 = time.perf_counter()
                trpo_step(pi, theta, batch, config)
                times[name].append(time.perf_counter() - t0)
    finally:
        FisherOperator.__call__ = blocked
    r = np.asarray(times["unblocked"]) / np.asarray(times["blocked"])
    print(f"  trpo_step: blocked {1e3 * np.median(times['blocked']):.1f} ms, unblocked "
          f"{1e3 * np.median(times['unblocked']):.1f} ms, speed-up {np.median(r):.2f}× "
          f"[{np.percentile(r, 25):.2f}–{np.percentile(r, 75):.2f}] over {reps} reps")


if __name__ == "__main__":
    sys.exit(main())
