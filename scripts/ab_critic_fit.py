"""Time ``fit_adam`` of two trees of trpo_ref, interleaved (issue 14: the critic fit).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE taskset -c 0 python scripts/ab_critic_fit.py BASE_TREE HEAD_TREE \
        [--reps 7] [--fits 5]

BASE_TREE and HEAD_TREE are directories holding a ``trpo_ref`` package.  Each repetition runs one child process
per tree, alternating which goes first; a child times ``fit_adam`` at the benchmark's two settings, CartPole-v1
(obs 4, N = 2048, 10 epochs of 128: 160 steps) and Hopper-v5 (obs 11, N = 2048, 20 epochs: 320 steps), on the
64x64 tanh critic in float64, with the Adam state carried from fit to fit as training does, and reports the median
of ``--fits`` fits after one warm-up fit.  The children also return the weights of their last fit; the script
checks that both trees' are byte-identical.  Printed: per setting, each tree's ms per fit and the per-repetition
ratio base / head, median (min-max) over the repetitions.  One BLAS thread (OPENBLAS_NUM_THREADS=1 for the
children).
"""

import argparse
import json
import subprocess
import sys

import numpy as np
from abrun import child_env, order

CHILD = r'''
import hashlib, json, sys, time
tree, fits = sys.argv[1], int(sys.argv[2])
sys.path.insert(0, tree)
from pathlib import Path
import numpy as np
import trpo_ref
from trpo_ref.value import ValueFunction, fit_adam, Adam
assert Path(trpo_ref.__file__).resolve().is_relative_to(Path(tree).resolve()), trpo_ref.__file__
out = {}
for name, obs_dim, epochs in (("CartPole-v1", 4, 10), ("Hopper-v5", 11, 20)):
    data = np.random.default_rng(0)
    obs = data.standard_normal((2048, obs_dim))
    ret = obs @ data.standard_normal(obs_dim) + np.sin(obs[:, 0]) * 3.0
    vf = ValueFunction(obs_dim)
    w = vf.init_params(0)
    state = Adam.init(w, eps=1e-5)
    rng = np.random.default_rng(1)
    times = []
    for k in range(fits + 1):
        t0 = time.perf_counter()
        w, info = fit_adam(vf, w, obs, ret, epochs=epochs, batch_size=128, lr=1e-3, rng=rng, state=state)
        times.append(time.perf_counter() - t0)
        state = info.state
    out[name] = {"ms": 1e3 * float(np.median(times[1:])),
                 "digest": hashlib.sha256(w.tobytes() + state.m.tobytes() + state.v.tobytes()).hexdigest(),
                 "loss_after": info.loss_after}
print(json.dumps(out))
'''


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("base")
    ap.add_argument("head")
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--fits", type=int, default=5)
    args = ap.parse_args(argv)
    env = child_env()
    res = {"base": [], "head": []}
    for r in range(args.reps):
        for name in order(r):
            p = subprocess.run([sys.executable, "-c", CHILD, getattr(args, name), str(args.fits)], env=env,
                               check=True, capture_output=True, text=True)
            res[name].append(json.loads(p.stdout))
    same = True
    for setting in res["base"][0]:
        a = np.array([x[setting]["ms"] for x in res["base"]])
        b = np.array([x[setting]["ms"] for x in res["head"]])
        ratio = a / b
        digests = {x[setting]["digest"] for x in res["base"] + res["head"]}
        same &= len(digests) == 1
        print(f"{setting}: base {np.median(a):.1f} ({a.min():.1f}-{a.max():.1f}) ms, "
              f"head {np.median(b):.1f} ({b.min():.1f}-{b.max():.1f}) ms, base/head "
              f"{np.median(ratio):.2f}x ({ratio.min():.2f}-{ratio.max():.2f}), {args.reps} reps; "
              f"weights and moments {'identical' if len(digests) == 1 else 'DIFFERENT'}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
