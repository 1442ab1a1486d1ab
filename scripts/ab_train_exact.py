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
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
