"""Do two trees of trpo_ref train bit for bit alike?  The exactness A/B of issue 14's speed-ups.

    python scripts/ab_train_exact.py BASE_TREE HEAD_TREE [--cartpole-iters 6] [--hopper-iters 2] [--seed 0]

BASE_TREE and HEAD_TREE are directories holding a ``trpo_ref`` package (e.g. ``git archive 35b5dad trpo_ref |
tar -x -C /tmp/base``).  For each tree, in a child process with that tree first on ``sys.path``, it trains
CartPole-v1 and Hopper-v5 (the sb3-contrib preset with the env's table, ``total_steps`` cut to the given number
of iterations) into a temp dir, then compares between the trees: ``progress.csv`` without the wall-clock columns
(:data:`trpo_ref.train.WALL_CLOCK_COLUMNS`), ``episodes.csv``, and every array of the last checkpoint.npz (policy θ,
critic w, Adam moments; its meta, the generators' states,
without ``wall_s``) byte for byte.  Exit status 0 when all are identical, 1 and
the first differences otherwise.

``--time-reps K`` then times the two trees: K repetitions, each training both trees once more in turn (the
first one swapped every repetition), OPENBLAS_NUM_THREADS=1; a run's time per iteration is the median of its
iterations' ``wall_s`` increments, the first iteration left out (first calls, caches).  Printed per env: each
tree's ms per iteration and the ratio base / head per repetition, median (min-max) over the repetitions.
Drop ``OPENBLAS_CORETYPE`` / ``OPENBLAS_L2_SIZE`` and pin the process (``taskset -c 0``) for timing.
"""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r'''
import sys
tree, out, env_id, iters, seed = sys.argv[1:6]
sys.path.insert(0, tree)
import trpo_ref, numpy as np
from pathlib import Path
assert Path(trpo_ref.__file__).resolve().is_relative_to(Path(tree).resolve()), trpo_ref.__file__
from trpo_ref.train import build_configs, train
cfg, tcfg = build_configs(env_id, "sb3-contrib", options={"seed": int(seed)})
import dataclasses
cfg = dataclasses.replace(cfg, total_steps=int(iters) * cfg.n_envs * cfg.n_steps)
train(cfg, tcfg, out, quiet=True, plot=False)
'''


def _table(path: Path, drop=()):
    lines = path.read_text().splitlines()
    head = lines[0].split(",")
    keep = [i for i, h in enumerate(head) if h not in drop]
    return [",".join(row.split(",")[i] for i in keep) for row in lines]


def _last_checkpoint(run: Path):
    import numpy as np

    with np.load(run / "checkpoint.npz", allow_pickle=False) as f:
        arrays = {k: f[k].tobytes() + str(f[k].dtype).encode() for k in f.files if k not in ("meta", "checksum")}
        meta = json.loads(str(f["meta"]))
    meta.pop("wall_s")  # the checksum covers it too, so it is left out as well
    arrays["meta (without wall_s)"] = json.dumps(meta, sort_keys=True).encode()
    return arrays


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("base")
    ap.add_argument("head")
    ap.add_argument("--cartpole-iters", type=int, default=6)
    ap.add_argument("--hopper-iters", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--time-reps", type=int, default=0, help="interleaved timing repetitions after the check")
    args = ap.parse_args(argv)
    sys.path.insert(0, args.head)
    from trpo_ref.train import WALL_CLOCK_COLUMNS

    bad = 0
    with tempfile.TemporaryDirectory() as tmp:
        for env_id, iters in (("CartPole-v1", args.cartpole_iters), ("Hopper-v5", args.hopper_iters)):
            if iters < 1:
                continue
            runs = {}
            for name in ("base", "head"):
                runs[name] = Path(tmp) / f"{name}-{env_id}"
                subprocess.run([sys.executable, "-c", CHILD, getattr(args, name), str(runs[name]), env_id,
                                str(iters), str(args.seed)], check=True)
            a, b = runs["base"], runs["head"]
            checks = {
                "progress.csv": (_table(next(a.rglob("progress.csv")), WALL_CLOCK_COLUMNS),
                                 _table(next(b.rglob("progress.csv")), WALL_CLOCK_COLUMNS)),
                "episodes.csv": (_table(next(a.rglob("episodes.csv"))), _table(next(b.rglob("episodes.csv")))),
                "checkpoint.npz": (_last_checkpoint(a), _last_checkpoint(b)),
            }
            for what, (x, y) in checks.items():
                same = x == y
                n = len(x)
                print(f"{env_id} {iters} iterations, {what}: {'identical' if same else 'DIFFERENT'} ({n} rows/arrays)")
                if not same:
                    bad += 1
                    if isinstance(x, dict):
                        print("   differing arrays:", sorted(k for k in set(x) | set(y) if x.get(k) != y.get(k)))
                    else:
                        for i, (r, s) in enumerate(zip(x, y)):
                            if r != s:
                                print(f"   row {i}:\n     base {r}\n     head {s}")
                                break
        if args.time_reps > 0:
            _time(args, Path(tmp))
    return 1 if bad else 0


def _time(args, tmp: Path) -> None:
    import numpy as np
    from abrun import child_env, order

    env = child_env()
    for env_id, iters in (("CartPole-v1", args.cartpole_iters), ("Hopper-v5", args.hopper_iters)):
        if iters < 2:
            continue
        ms = {"base": [], "head": []}
        for rep in range(args.time_reps):
            for name in order(rep):
                out = tmp / f"time-{name}-{env_id}-{rep}"
                subprocess.run([sys.executable, "-c", CHILD, getattr(args, name), str(out), env_id, str(iters),
                                str(args.seed)], check=True, env=env)
                rows = [row.split(",") for row in _table(out / "progress.csv")]
                col = rows[0].index("wall_s")
                wall = [float(row[col]) for row in rows[1:]]
                ms[name].append(1e3 * float(np.median(np.diff(wall))))
        a, b = np.array(ms["base"]), np.array(ms["head"])
        q = a / b
        print(f"{env_id}, ms per iteration ({iters - 1} timed of {iters}): base {np.median(a):.1f} "
              f"({a.min():.1f}-{a.max():.1f}), head {np.median(b):.1f} ({b.min():.1f}-{b.max():.1f}); base/head "
              f"{np.median(q):.3f}x ({q.min():.3f}-{q.max():.3f}), {args.time_reps} reps")


if __name__ == "__main__":
    sys.exit(main())
