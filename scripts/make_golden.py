#!/usr/bin/env python
"""Regenerate the golden oracle traces in tests/golden/: one per preset x {gaussian, categorical}.

    python scripts/make_golden.py            # rewrite tests/golden/*.npz
    python scripts/make_golden.py --check    # recompute and compare, write nothing
    python scripts/make_golden.py --spread   # measure the rounding-level spread behind DEFAULT_RTOL

Each case is a seeded synthetic update (trpo_ref.trace.synthetic_case) on a
small network (obs 3 -> 4 -> 3 -> out, tanh) and N = 20 samples, so the twelve
files stay well under 300 KB together.  tests/test_trace.py recomputes every
file and requires agreement to float64 rounding.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from trpo_ref.oracle import DEFAULT_ATOL, check_trace, compare_traces, compute_trace, synthetic_case  # noqa: E402
from trpo_ref.trpo import PRESETS, TRPOConfig  # noqa: E402

GOLDEN_DIR = ROOT / "tests" / "golden"

#: Shared sizes of every golden case.
SIZES = dict(n=20, obs_dim=3, hidden_sizes=(4, 3), activation="tanh")
#: Output size: action dimension (Gaussian) or number of actions (categorical).
OUT_DIM = {"gaussian": 2, "categorical": 3}


def cases():
    """``(file name, preset, kind, seed)`` of every golden case."""
    out = []
    for i, preset in enumerate(sorted(PRESETS)):
        for j, kind in enumerate(("gaussian", "categorical")):
            out.append((f"{preset}-{kind}.npz", preset, kind, 100 + 10 * i + j))
    return out


def make(preset: str, kind: str, seed: int):
    """The trace of one golden case."""
    policy, theta, batch = synthetic_case(kind, seed, act_dim=OUT_DIM[kind], **SIZES)
    return compute_trace(policy, theta, batch, TRPOConfig.preset(preset), preset)


def spread(seeds=range(3), sizes=((20, 3, (4, 3)), (64, 5, (16, 16)), (256, 8, (64, 64)))):
    """Largest relative change of each quantity when θ_old moves by ~1 ulp.

    That is the size of a rounding-level difference between two correct float64
    implementations (another BLAS, another summation order).  Returns
    ``{row group: (max relative error, case)}``; decisions that flip are counted
    under ``"DECISION ..."``.
    """
    worst: dict[str, tuple[float, str]] = {}
    for kind in ("gaussian", "categorical"):
        for preset in sorted(PRESETS):
            for seed in seeds:
                for n, obs_dim, hidden in sizes:
                    policy, theta, batch = synthetic_case(kind, seed, n=n, obs_dim=obs_dim, act_dim=OUT_DIM[kind],
                                                          hidden_sizes=hidden)
                    cfg = TRPOConfig.preset(preset)
                    a = compute_trace(policy, theta, batch, cfg)
                    rng = np.random.default_rng(seed)
                    nudged = theta * (1 + 2.2e-16 * rng.standard_normal(theta.shape))
                    b = compute_trace(policy, nudged, batch, cfg, x0=a.arrays.get("cg_x0")).with_arrays(theta_old=theta)
                    for row in compare_traces(a, b, rtol=0.0, atol=0.0).rows:
                        group = row.name.split("[")[0] + ("[]" + row.name.split("]")[-1] if "[" in row.name else "")
                        case = f"{preset}-{kind} seed {seed} N {n}"
                        if row.exact:
                            if row.max_abs:
                                worst["DECISION " + group] = (worst.get("DECISION " + group, (0, ""))[0] + 1, case)
                            continue
                        # below atol the relative error of a ~0 quantity means nothing
                        err = 0.0 if row.status == "skipped" or row.max_abs <= DEFAULT_ATOL else row.max_rel
                        if err > worst.get(group, (0.0, ""))[0]:
                            worst[group] = (err, case)
    return worst


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="recompute and compare instead of writing")
    ap.add_argument("--spread", action="store_true", help="measure the rounding-level spread (about a minute)")
    args = ap.parse_args(argv)
    if args.spread:
        for group, (err, case) in sorted(spread().items(), key=lambda kv: -kv[1][0]):
            print(f"{group:28s} {err:9.2e}  {case}")
        return 0
    GOLDEN_DIR.mkdir(parents=True, exist_ok=True)
    bad = 0
    total = 0
    for name, preset, kind, seed in cases():
        path = GOLDEN_DIR / name
        if args.check:
            report = check_trace(path)
            max_abs, max_rel = report.max_errors()
            print(f"{name:32s} {'ok' if report.ok else 'FAIL':4s} max abs {max_abs:.2e} max rel {max_rel:.2e}")
            bad += not report.ok
        else:
            trace = make(preset, kind, seed)
            trace.save(path)
            size = path.stat().st_size
            total += size
            print(f"{name:32s} {trace.status:20s} try {int(trace['accepted_index']):2d}  "
                  f"CG {int(trace['cg_n_iter']):2d} it  {size / 1024:.1f} KB")
    if not args.check:
        print(f"total {total / 1024:.1f} KB in {GOLDEN_DIR}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
