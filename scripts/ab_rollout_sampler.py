"""Per-step sampler cost of two trees of trpo_ref side by side (issue 13: the rollout's sampler before and after
the policy heads).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python scripts/ab_rollout_sampler.py BASE_TREE HEAD_TREE [--rounds 15]

BASE_TREE and HEAD_TREE are checkouts (e.g. ``git worktree add --detach /tmp/base fcb7c1b``).  Each round runs one
process per tree, alternating which goes first; each process times, for every head, the rollout's per-step draw
(``HostSampler.act``, or ``policy.sample`` where the base tree's rollout used it) on 1 and 8 observations (best of 5
blocks of 400 calls), and ``VectorRollout.collect`` on CartPole-v1 per env step (best of 3 collects of 1024 steps).
The table gives the medians over rounds and the per-round ratio head/base, median (min–max).  One BLAS thread;
``OPENBLAS_CORETYPE`` is dropped for the child processes.
"""

import argparse
import json
import subprocess
import sys

import numpy as np
from abrun import child_env, order

CHILD = r'''
import json, sys, time, numpy as np
from trpo_ref.policy import GaussianMLPPolicy, CategoricalMLPPolicy, MultiCategoricalMLPPolicy, BernoulliMLPPolicy
from trpo_ref import rollout
out = {}
cases = {"gaussian": GaussianMLPPolicy(17, 6), "categorical": CategoricalMLPPolicy(4, 2),
         "multicategorical": MultiCategoricalMLPPolicy(4, [3, 2, 4]), "bernoulli": BernoulliMLPPolicy(4, 5)}
new = hasattr(rollout, "MLPPolicy")
for name, pol in cases.items():
    th = pol.init_params(0); rng = np.random.default_rng(0)
    if new or name in ("gaussian", "categorical"):
        s = rollout.HostSampler(pol, th); f = lambda o: s.act(o, rng)
    else:  # what the old rollout did for these heads: policy.sample per step
        f = lambda o: pol.sample(th, o, rng, validate=False)[0]
    for E in (1, 8):
        obs = np.random.default_rng(1).standard_normal((E, pol.obs_dim))
        for _ in range(100): f(obs)
        ts = []
        for r in range(5):
            t = time.perf_counter()
            for _ in range(400): f(obs)
            ts.append((time.perf_counter() - t) / 400 * 1e6)
        out[f"{name} E={E}"] = float(np.min(ts))
vr = rollout.VectorRollout("CartPole-v1", 1, 0)
pol = CategoricalMLPPolicy(4, 2); th = pol.init_params(0); rng = np.random.default_rng(0)
vr.collect(pol, th, 200, rng)
ts = []
for r in range(3):
    t = time.perf_counter(); vr.collect(pol, th, 1024, rng); ts.append((time.perf_counter() - t) / 1024 * 1e6)
out["CartPole collect per step"] = float(np.min(ts))
print(json.dumps(out))
'''


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("base")
    ap.add_argument("head")
    ap.add_argument("--rounds", type=int, default=15)
    args = ap.parse_args(argv)
    res = {"base": [], "head": []}
    for r in range(args.rounds):
        for name in order(r):
            out = subprocess.run([sys.executable, "-c", CHILD], env=child_env(getattr(args, name)), capture_output=True,
                                 text=True, cwd="/", check=True)
            res[name].append(json.loads(out.stdout))
    print(f"{'case':34s} {'base µs':>9s} {'head µs':>9s}  head/base median (min-max), {args.rounds} rounds")
    for k in res["base"][0]:
        b = np.array([d[k] for d in res["base"]])
        h = np.array([d[k] for d in res["head"]])
        rat = h / b
        print(f"{k:34s} {np.median(b):9.2f} {np.median(h):9.2f}  {np.median(rat):.3f} ({rat.min():.3f}-{rat.max():.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
