r"""Step-size rules compared: vanilla PG, natural PG, the theory's KL penalty and TRPO.

Reproduces the numbers and plots of docs/experiments.md::

    OMP_NUM_THREADS=1 python scripts/experiments.py            # everything, a few minutes on 2 cores
    OMP_NUM_THREADS=1 python scripts/experiments.py --quick    # a smoke run (seconds), plots not written

Two settings, the same four update rules:

1. **Tabular MDPs** (random 20-state MDPs and FrozenLake-v1 4x4, slippery),
   through :mod:`trpo_ref.tabular`.  The policy is a linear softmax on one-hot
   states (``CategoricalMLPPolicy(S, A, hidden_sizes=())``, logits
   z(s, a) = W[s, a] + b[a]).  Each iteration draws N states i.i.d. from the
   exact normalised discounted visitation d_π and actions from π, and uses the
   exact advantages A_π(s, a) as Â: the only noise is which states and actions
   were sampled, so the differences between rules are the rules' own.  The
   performance η(π) and the step's KL are computed exactly after every update.

   * ``vpg``: ``trpo_step`` with ``TRPOConfig(method="vpg", step_size=κ)``: θ += κ g.
   * ``npg``: ``method="npg"``: θ += κ x, x ≈ (F + λ_d I)⁻¹ g.
   * ``penalty``: :func:`trpo_ref.tabular.penalized_step` with the theorem's
     C = 4εγ/(1−γ)²: the exact maximiser of L_π(π̃) − C·D_KL^max over the logits
     table (no sampling at all: the most favourable case for the penalty).
   * ``trpo``: ``trpo_step`` with the ``paper`` preset (δ = 0.01) except
     ``cg_damping=1e-3`` (with one-hot states the Fisher's entries are about
     π(1 − π)/S ≈ 0.01, and the preset's 0.1 damping, a project choice, would dominate them).

2. **CartPole-v1** with the trainer's own loop, :func:`trpo_ref.train.iterate`
   (8 gymnasium envs, 2048 steps per iteration, GAE γ = 0.99, λ = 0.97, a
   (32, 32) tanh policy and critic, the critic fitted by L-BFGS, advantages
   normalised for every rule; no files written).  The ``penalty`` rule here is the quadratic
   model of max L − C·D̄_KL: the natural step x/C, i.e. ``method="npg"`` with
   ``step_size = 1/C`` and C = 4 max|Â| γ/(1−γ)² from the batch (the mean KL
   and the batch max|Â| both make C smaller than the theorem's, so this is
   again the penalty's best case).

Metrics: the normalised score (η − η_uniform)/(η* − η_uniform) on the tabular
MDPs (η* by value iteration), the episode return on CartPole; a run
**collapses** when its score (CartPole: its 3-iteration moving average
return, divided by 500) falls more than 0.25 below its best so far; the
typical step size is the median per-update KL (tabular: the exact
d_π-weighted mean KL, and D_KL^max for the penalty; CartPole: the batch mean
KL from ``StepInfo.kl``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

from trpo_ref import Batch, CategoricalMLPPolicy, TRPOConfig, trpo_step  # noqa: E402
from trpo_ref import tabular as T  # noqa: E402
from trpo_ref.train import TrainConfig, Trainer, iterate  # noqa: E402

#: A drop of the (normalised) score this far below its running best counts as a collapse.
COLLAPSE_DROP = 0.25


# ===================================================================== tabular
def optimal_eta(mdp: T.TabularMDP, iters: int = 5000, tol: float = 1e-12) -> float:
    """η* by value iteration: V ← max_a R + γ P V until the change is below ``tol``."""
    v_s = np.zeros(mdp.n_states)
    for _ in range(iters):
        v_new = np.max(mdp.R + mdp.gamma * (mdp.P @ v_s), axis=1)
        done = np.max(np.abs(v_new - v_s)) < tol
        v_s = v_new
        if done:
            break
    return float(mdp.mu0 @ v_s)


def tabular_logits(policy: CategoricalMLPPolicy, theta) -> np.ndarray:
    """Logits table z(s, a) = W0[s, a] + b0[a] of a linear policy on one-hot states."""
    named = policy.unflatten(theta)
    return np.asarray(named["W0"]) + np.asarray(named["b0"])


def make_mdp(kind: str, seed: int) -> T.TabularMDP:
    """``"random"``: a dense random MDP (20 states, 4 actions, γ = 0.9, one per seed);
    ``"frozenlake"``: FrozenLake-v1 4x4, slippery, γ = 0.95 (the same for every seed)."""
    if kind == "random":
        return T.random_mdp(20, 4, 0.9, rng=1000 + seed)
    if kind == "frozenlake":
        return T.from_gymnasium("FrozenLake-v1", gamma=0.95)
    raise ValueError(kind)


def run_tabular_sampled(mdp: T.TabularMDP, config: TRPOConfig, seed: int, iters: int, n_samples: int = 256):
    """Sampled-state updates through ``trpo_step``; returns (normalised scores, exact mean KL per step)."""
    n_s, n_a = mdp.n_states, mdp.n_actions
    eta_u = T.eta(mdp, np.full((n_s, n_a), 1.0 / n_a))
    eta_star = optimal_eta(mdp)
    policy = CategoricalMLPPolicy(n_s, n_a, hidden_sizes=())
    theta = np.zeros(policy.num_params)  # uniform policy
    eye = np.eye(n_s)
    rng = np.random.default_rng(seed)
    scores, kls = [0.0], []
    for _ in range(iters):
        z_sa = tabular_logits(policy, theta)
        pi_sa = T.softmax_policy(z_sa)
        d_s = T.visitation(mdp, pi_sa, normalize=True)
        adv_sa = T.policy_evaluation(mdp, pi_sa).adv_sa
        s_n = rng.choice(n_s, size=n_samples, p=d_s)
        a_n = np.minimum((rng.random(n_samples)[:, None] > np.cumsum(pi_sa[s_n], axis=1)).sum(axis=1), n_a - 1)
        batch = Batch(obs=eye[s_n], act=a_n, adv=adv_sa[s_n, a_n], logp_old=np.log(pi_sa[s_n, a_n]))
        theta, _ = trpo_step(policy, theta, batch, config)
        z_new = tabular_logits(policy, theta)
        scores.append((T.eta(mdp, T.softmax_policy(z_new)) - eta_u) / (eta_star - eta_u))
        kls.append(T.average_kl(z_sa, z_new, d_s))
    return np.array(scores), np.array(kls)


def run_tabular_penalty(mdp: T.TabularMDP, iters: int):
    """Exact MM steps: maximise L_π(π̃) − C·D_KL^max with the theorem's C; returns (scores, KL_max, C)."""
    n_s, n_a = mdp.n_states, mdp.n_actions
    eta_u = T.eta(mdp, np.full((n_s, n_a), 1.0 / n_a))
    eta_star = optimal_eta(mdp)
    z_sa = np.zeros((n_s, n_a))
    scores, kls, cs = [0.0], [], []
    for _ in range(iters):
        res = T.penalized_step(mdp, z_sa)
        z_sa = res.logits
        scores.append((T.eta(mdp, T.softmax_policy(z_sa)) - eta_u) / (eta_star - eta_u))
        kls.append(res.kl_max)
        cs.append(res.C)
    return np.array(scores), np.array(kls), np.array(cs)


def max_drawdown(curve) -> float:
    """Largest fall of ``curve`` below its running maximum."""
    curve = np.asarray(curve, dtype=float)
    return float(np.max(np.maximum.accumulate(curve) - curve)) if curve.size else 0.0


TABULAR_RULES = {
    # label: config (None = the exact penalty step)
    "vpg κ=10": TRPOConfig(method="vpg", step_size=10.0),
    "vpg κ=100": TRPOConfig(method="vpg", step_size=100.0),
    "vpg κ=1000": TRPOConfig(method="vpg", step_size=1000.0),
    "npg κ=1": TRPOConfig(method="npg", step_size=1.0, cg_damping=1e-3),
    "npg κ=10": TRPOConfig(method="npg", step_size=10.0, cg_damping=1e-3),
    "npg κ=100": TRPOConfig(method="npg", step_size=100.0, cg_damping=1e-3),
    "penalty (theory C)": None,
    "trpo δ=0.01": TRPOConfig(cg_damping=1e-3),
}


def tabular_experiment(kind: str, seeds: int, iters: int, penalty_iters: int) -> dict:
    out = {}
    for label, config in TABULAR_RULES.items():
        runs = []
        for seed in range(seeds if config is not None or kind == "random" else 1):
            mdp = make_mdp(kind, seed)
            if config is None:
                if seed >= 2:  # the penalty step is deterministic and slow-moving: two MDPs suffice
                    break
                scores, kls, cs = run_tabular_penalty(mdp, penalty_iters)
                runs.append({"scores": scores.tolist(), "kls": kls.tolist(), "C": float(np.median(cs))})
            else:
                scores, kls = run_tabular_sampled(mdp, config, seed, iters)
                runs.append({"scores": scores.tolist(), "kls": kls.tolist()})
        out[label] = runs
    return out


# ==================================================================== CartPole
def run_cartpole(rule: str, config: TRPOConfig, seed: int, iters: int, n_envs: int = 8, n_steps: int = 256,
                 gamma: float = 0.99, gae_lambda: float = 0.97) -> dict:
    """The trainer's own loop (:func:`trpo_ref.train.iterate`, no files): rollout → GAE → one policy
    update → critic fit (L-BFGS, 25 iterations), with a (32, 32) tanh policy and critic."""
    cfg = TrainConfig(env_id="CartPole-v1", seed=seed, total_steps=iters * n_envs * n_steps, n_envs=n_envs,
                      n_steps=n_steps, gamma=gamma, gae_lambda=gae_lambda, hidden_sizes=(32, 32),
                      vf_hidden_sizes=(32, 32), critic="lbfgs", critic_lbfgs_iters=25)
    cs: list[float] = []

    def step_config(base: TRPOConfig, batch: Batch) -> TRPOConfig:
        if rule != "penalty":
            return base
        # quadratic model of max L − C·KL: the natural step x / C
        adv_n = np.asarray(batch.adv)
        adv_norm = (adv_n - adv_n.mean()) / adv_n.std()
        c_pen = 4.0 * float(np.max(np.abs(adv_norm))) * gamma / (1.0 - gamma) ** 2
        cs.append(c_pen)
        return replace(base, step_size=1.0 / c_pen)

    returns, kls, statuses = [], [], []
    for it in iterate(cfg, config, Trainer(cfg, config, step_config=step_config)):  # closes the envs at the end
        finished = [r for r, _ in it.episodes]
        returns.append(float(np.mean(finished)) if finished else (returns[-1] if returns else 0.0))
        kls.append(float(it.info.kl))
        statuses.append(it.info.status)
    return {"returns": returns, "kls": kls, "statuses": statuses, "C": cs}


CARTPOLE_RULES = {
    "vpg κ=0.3": ("vpg", TRPOConfig(method="vpg", step_size=0.3, normalize_adv=True)),
    "vpg κ=10": ("vpg", TRPOConfig(method="vpg", step_size=10.0, normalize_adv=True)),
    "npg κ=0.5": ("npg", TRPOConfig(method="npg", step_size=0.5, normalize_adv=True)),
    "npg κ=3": ("npg", TRPOConfig(method="npg", step_size=3.0, normalize_adv=True)),
    "penalty (theory C)": ("penalty", TRPOConfig(method="npg", normalize_adv=True)),
    "trpo δ=0.01": ("trpo", TRPOConfig(normalize_adv=True)),
}


def cartpole_experiment(seeds: int, iters: int) -> dict:
    out = {}
    for label, (rule, config) in CARTPOLE_RULES.items():
        out[label] = [run_cartpole(rule, config, seed, iters) for seed in range(seeds)]
        finals = [np.mean(r["returns"][-5:]) for r in out[label]]
        print(f"  cartpole {label:20s} final {np.mean(finals):6.1f} ± {np.std(finals):5.1f}", flush=True)
    return out


# ===================================================================== summary
def moving_average(x, k: int = 3) -> np.ndarray:
    x = np.asarray(x, dtype=float)
    return np.array([x[max(0, i - k + 1):i + 1].mean() for i in range(x.size)])


def summarize_tabular(res: dict) -> list[dict]:
    rows = []
    for label, runs in res.items():
        finals = [r["scores"][-1] for r in runs]
        kls = np.concatenate([r["kls"] for r in runs])
        rows.append({
            "rule": label, "runs": len(runs),
            "final_mean": float(np.mean(finals)), "final_std": float(np.std(finals)),
            "best_mean": float(np.mean([max(r["scores"]) for r in runs])),
            "collapses": int(sum(max_drawdown(r["scores"]) > COLLAPSE_DROP for r in runs)),
            "worst_drop": float(max(max_drawdown(r["scores"]) for r in runs)),
            "median_kl": float(np.median(kls)), "max_kl": float(np.max(kls)),
            "C": float(np.median([r["C"] for r in runs])) if "C" in runs[0] else None,
            "iters_to_0.9": _median_first_reach([r["scores"] for r in runs], 0.9),
            "decreasing_updates": float(np.mean(np.concatenate([np.diff(r["scores"]) < -1e-3 for r in runs]))),
        })
    return rows


def _median_first_reach(curves, level: float):
    """Median over runs of the first iteration at which a curve reaches ``level`` (None: most never do)."""
    firsts = [next((i for i, v in enumerate(c) if v >= level), math.inf) for c in curves]
    med = float(np.median(firsts))
    return None if math.isinf(med) else med


def summarize_cartpole(res: dict) -> list[dict]:
    rows = []
    for label, runs in res.items():
        finals = [float(np.mean(r["returns"][-5:])) for r in runs]
        kls = np.concatenate([r["kls"] for r in runs])
        drops = [max_drawdown(moving_average(r["returns"]) / 500.0) for r in runs]
        rows.append({
            "rule": label, "runs": len(runs),
            "final_mean": float(np.mean(finals)), "final_std": float(np.std(finals)),
            "best_mean": float(np.mean([max(r["returns"]) for r in runs])),
            "collapses": int(sum(d > COLLAPSE_DROP for d in drops)),
            "worst_drop": float(max(drops)),
            "median_kl": float(np.median(kls)), "max_kl": float(np.max(kls)),
            "C": float(np.median(np.concatenate([r["C"] for r in runs]))) if runs[0]["C"] else None,
            "iters_to_0.9": _median_first_reach([moving_average(r["returns"]) / 500.0 for r in runs], 0.9),
            "decreasing_updates": float(np.mean(np.concatenate(
                [np.diff(moving_average(r["returns"])) < -0.05 * 500 for r in runs]))),
            "iters_to_195": [next((i + 1 for i, v in enumerate(moving_average(r["returns"])) if v >= 195), None)
                             for r in runs],
        })
    return rows


def markdown_table(rows: list[dict], score: str) -> str:
    head = (f"| rule | runs | final {score} (mean ± std) | best {score} (mean) | collapses | worst drop "
            "| median step KL | max step KL | median iterations to 0.9 | updates that lower the score |")
    lines = [head, "| --- " * 10 + "|"]
    for r in rows:
        reach = r.get("iters_to_0.9", "n/a")
        reach = "never" if reach is None else (f"{reach:.0f}" if isinstance(reach, float) else reach)
        dec = f"{100 * r['decreasing_updates']:.0f} %" if "decreasing_updates" in r else "n/a"
        lines.append(f"| {r['rule']} | {r['runs']} | {r['final_mean']:.3g} ± {r['final_std']:.2g} | {r['best_mean']:.3g} | "
                     f"{r['collapses']}/{r['runs']} | {r['worst_drop']:.2f} | {r['median_kl']:.2g} | {r['max_kl']:.2g} | "
                     f"{reach} | {dec} |")
    return "\n".join(lines)


# ======================================================================= plots
def _colors(labels):
    import matplotlib.pyplot as plt

    cmap = plt.get_cmap("tab10")
    return {lab: cmap(i % 10) for i, lab in enumerate(labels)}


def plot_tabular(results: dict, path: Path) -> None:
    """Top: normalised η per iteration (thin: seeds, thick: mean); bottom: per-update KL by rule."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = list(results)
    labels = list(next(iter(results.values())))
    colors = _colors(labels)
    fig, axes = plt.subplots(2, len(kinds), figsize=(6.4 * len(kinds), 9.0), squeeze=False,
                             gridspec_kw={"height_ratios": [3, 2]})
    for j, kind in enumerate(kinds):
        ax, axk = axes[0, j], axes[1, j]
        for label, runs in results[kind].items():
            curves = np.array([r["scores"] for r in runs])
            for c in curves:
                ax.plot(c, color=colors[label], lw=0.6, alpha=0.35)
            ax.plot(curves.mean(axis=0), color=colors[label], lw=2.2, label=label)
        ax.set_title(f"{kind}: normalised η (0 = uniform policy, 1 = optimal)")
        ax.set_xlabel("iteration")
        ax.set_ylim(-0.05, 1.05)
        ax.grid(alpha=0.3)
        data = [np.log10(np.maximum(np.concatenate([r["kls"] for r in results[kind][lab]]), 1e-16)) for lab in labels]
        bp = axk.boxplot(data, orientation="horizontal", whis=(5, 95), showfliers=False, patch_artist=True)
        for patch, lab in zip(bp["boxes"], labels):
            patch.set_facecolor(colors[lab])
            patch.set_alpha(0.6)
        axk.set_yticks(range(1, len(labels) + 1), labels, fontsize=8)
        axk.axvline(-2, color="k", ls=":", lw=1)
        axk.set_xlabel("log10 KL of one update (box: quartiles, whiskers: 5-95 %; dotted: δ = 0.01)")
        axk.set_title(f"{kind}: step sizes (penalty: D_KL^max, others: mean KL under d_π)", fontsize=10)
        axk.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_cartpole(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, axk) = plt.subplots(1, 2, figsize=(13, 4.8))
    colors = _colors(results.keys())
    for label, runs in results.items():
        for i, r in enumerate(runs):
            ax.plot(r["returns"], color=colors[label], lw=0.8, alpha=0.6, label=label if i == 0 else None)
            axk.plot(np.maximum(r["kls"], 1e-12), color=colors[label], lw=0.6, alpha=0.5, label=label if i == 0 else None)
    ax.set_title("CartPole-v1: mean episode return per iteration (one line per seed)")
    ax.set_xlabel("iteration (2048 env steps each)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    axk.set_yscale("log")
    axk.axhline(0.01, color="k", ls=":", lw=1)
    axk.set_title("KL(π_old ‖ π_new) of each update (dotted: δ = 0.01)")
    axk.set_xlabel("iteration")
    axk.grid(alpha=0.3)
    axk.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


# ======================================================================== demo
def demo() -> int:
    """The small version (docs/experiments.md): twenty iterations on one random MDP show the three claims
    in about a second; exit status 1 when one of them does not hold."""
    mdp = make_mdp("random", seed=0)
    trpo_scores, trpo_kls = run_tabular_sampled(mdp, TABULAR_RULES["trpo δ=0.01"], seed=0, iters=20)
    pen_scores, pen_kls, pen_C = run_tabular_penalty(mdp, iters=5)
    vpg_scores, vpg_kls = run_tabular_sampled(mdp, TABULAR_RULES["vpg κ=1000"], seed=0, iters=20)
    print(f"TRPO: score {trpo_scores[-1]:.2f} after 20 updates, median step KL {np.median(trpo_kls):.4f}")
    print(f"penalty (C = {pen_C[0]:.0f}): score {pen_scores[-1]:.3f} after 5 updates, "
          f"step KL_max {np.median(pen_kls):.1e}")
    print(f"VPG κ=1000: largest step KL {vpg_kls.max():.1f}, worst drop {max_drawdown(vpg_scores):.2f}")
    claims = {
        "TRPO: steady, KL-sized steps": trpo_scores[-1] > 0.8 and np.median(trpo_kls) < 0.015,
        "penalty: safe but tiny steps": bool(np.all(np.diff(pen_scores) >= 0)) and np.max(pen_kls) < 1e-3
        and np.max(pen_kls) < 0.1 * np.median(trpo_kls),
        "VPG: the fixed step leaves any trust region": vpg_kls.max() > 1.0,
    }
    for claim, holds in claims.items():
        print(f"{'holds' if holds else 'FAILS'}: {claim}")
    return 0 if all(claims.values()) else 1


# ======================================================================== main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny run, no plots (smoke test)")
    ap.add_argument("--demo", action="store_true", help="the small version of docs/experiments.md (about a second)")
    ap.add_argument("--seeds", type=int, default=None)
    ap.add_argument("--skip-cartpole", action="store_true")
    ap.add_argument("--img", type=Path, default=ROOT / "docs" / "img")
    ap.add_argument("--json", type=Path, default=None, help="write every curve and summary here")
    ap.add_argument("--plot-from", type=Path, default=None, help="only redraw the plots from a --json file")
    args = ap.parse_args(argv)
    if args.demo:
        return demo()
    if args.plot_from:
        saved = json.loads(args.plot_from.read_text())
        plot_tabular(saved["tabular"], args.img / "exp_tabular.png")
        if saved["cartpole"] is not None:
            plot_cartpole(saved["cartpole"], args.img / "exp_cartpole.png")
        return 0
    t0 = time.time()
    seeds = args.seeds or (2 if args.quick else 8)
    tab_iters, pen_iters = (10, 3) if args.quick else (100, 100)
    tabular = {kind: tabular_experiment(kind, seeds, tab_iters, pen_iters) for kind in ("random", "frozenlake")}
    summary = {"tabular": {k: summarize_tabular(v) for k, v in tabular.items()}}
    for kind, rows in summary["tabular"].items():
        print(f"\n### tabular: {kind} ({time.time() - t0:.0f} s)\n")
        print(markdown_table(rows, "score"))
    cartpole = None
    if not args.skip_cartpole:
        cp_seeds = args.seeds or (1 if args.quick else 5)
        cartpole = cartpole_experiment(cp_seeds, 3 if args.quick else 50)
        summary["cartpole"] = summarize_cartpole(cartpole)
        print(f"\n### CartPole-v1 ({time.time() - t0:.0f} s)\n")
        print(markdown_table(summary["cartpole"], "return"))
        print("\niterations until the 3-iteration average return reaches 195:")
        for r in summary["cartpole"]:
            print(f"  {r['rule']:20s} {r['iters_to_195']}")
    for name, rows in [*summary["tabular"].items(), ("cartpole", summary.get("cartpole", []))]:
        for r in rows:
            if r["C"] is not None:
                print(f"median penalty coefficient C on {name}: {r['C']:.4g}")
    if not args.quick:
        args.img.mkdir(parents=True, exist_ok=True)
        plot_tabular(tabular, args.img / "exp_tabular.png")
        if cartpole is not None:
            plot_cartpole(cartpole, args.img / "exp_cartpole.png")
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "tabular": tabular, "cartpole": cartpole}))
    print(f"\ntotal {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
