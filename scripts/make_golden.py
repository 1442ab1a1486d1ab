#!/usr/bin/env python
"""Regenerate the golden oracle traces in tests/golden/: one per preset x {gaussian, categorical}.

    python scripts/make_golden.py            # rewrite tests/golden/*.npz
    python scripts/make_golden.py --check    # recompute and check, write nothing
    python scripts/make_golden.py --spread   # measure the stage-wise errors and the end-to-end spread

The cases are trpo_ref.oracle.cases.golden_cases(): seeded synthetic updates on
a small network (obs 3 -> 4 -> 3 -> out, tanh) and N = 20 samples, so the twelve
files stay well under 300 KB together.  tests/test_trace.py recomputes every file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from trpo_ref.oracle import check_trace, compare_traces, recompute  # noqa: E402
from trpo_ref.oracle.cases import candidate_update, golden_cases, golden_trace, realistic_case  # noqa: E402
from trpo_ref.oracle.check import DRIFT_KEYS, _rel  # noqa: E402
from trpo_ref.oracle.stagewise import check_stagewise  # noqa: E402

GOLDEN_DIR = ROOT / "tests" / "golden"


def spread():
    """Per realistic case and dtype: the worst stage-wise error of correct updates (batch permuted,
    θ_old ± 1 ulp) and trpo_ref's end-to-end spread on itself, per drift quantity."""
    out = []
    for kind in ("gaussian", "categorical"):
        policy, theta, batch, cfg = realistic_case(kind)
        own = candidate_update(policy, theta, batch, cfg)
        for dtype in ("float64", "float32"):
            worst_sw, worst_e2e = (0.0, ""), {k: 0.0 for k in DRIFT_KEYS}
            for v in (dict(), dict(permute_seed=1), dict(ulp_seed=1), dict(permute_seed=2, ulp_seed=2)):
                if dtype == "float64" and not v:
                    continue
                c = candidate_update(policy, theta, batch, cfg, dtype=dtype, **v)
                rep = check_stagewise(c, own=own)
                assert rep.ok, rep.to_text("failures")
                for r in rep.rows:
                    if not r.exact and r.status != "skipped" and r.max_rel > worst_sw[0]:
                        worst_sw = (r.max_rel, r.name)
                for k in DRIFT_KEYS:
                    worst_e2e[k] = max(worst_e2e[k], _rel(own[k], c[k], theta if k == "theta_new" else None))
            out.append((kind, dtype, worst_sw, worst_e2e))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="recompute and check instead of writing")
    ap.add_argument("--missing", action="store_true",
                    help="write only the files that do not exist yet (a new preset), leaving the others untouched")
    ap.add_argument("--spread", action="store_true", help="measure stage-wise errors and the end-to-end spread")
    args = ap.parse_args(argv)
    if args.spread:
        for kind, dtype, (err, name), e2e in spread():
            print(f"{kind:12s} {dtype}: worst stage-wise error {err:.2e} ({name}); end-to-end spread: "
                  + ", ".join(f"{k} {v:.1e}" for k, v in e2e.items()))
        return 0
    GOLDEN_DIR.mkdir(parents=True, exist_ok=True)
    bad = total = 0
    for name, preset, kind, seed in golden_cases():
        path = GOLDEN_DIR / name
        if args.check:
            report = check_trace(path, drift=False)
            fresh = compare_traces(recompute(golden_trace(preset, kind, seed)), golden_trace(preset, kind, seed))
            print(f"{name:32s} {'ok' if report.ok and fresh.ok else 'FAIL'}")
            bad += not (report.ok and fresh.ok)
        elif args.missing and path.exists():
            continue
        else:
            trace = golden_trace(preset, kind, seed)
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
