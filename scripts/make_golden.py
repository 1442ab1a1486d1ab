#!/usr/bin/env python
"""Regenerate the golden oracle traces in tests/golden/: one per preset x {gaussian, categorical}.

    python scripts/make_golden.py            # rewrite tests/golden/*.npz
    python scripts/make_golden.py --check    # recompute and compare, write nothing

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

from trpo_ref.trace import check_trace, compute_trace, synthetic_case  # noqa: E402
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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="recompute and compare instead of writing")
    args = ap.parse_args(argv)
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
