r"""The figures of docs/derivations.md, computed with the library.

    python scripts/make_figures.py            # writes docs/img/fig_*.png and docs/img/figures.json
    python scripts/make_figures.py --check    # exit 1 when docs/img/figures.json is out of date
    python scripts/make_figures.py --check --numbers new.json   # and keep the recomputed numbers

Each figure is two steps: :func:`compute` returns the numbers (plain lists,
JSON-ready) using only ``trpo_ref``; :func:`plot` draws them with matplotlib
(the ``plot`` extra).  ``docs/img/figures.json`` keeps the numbers of the
committed pictures, and ``tests/test_figures.py`` runs ``--check``, so a change
of the library that would change a figure fails the tests until this script
is run again.  Everything is seeded and takes about a second.

Figures:

* ``fig_trust_region.png``: a two-parameter policy (the weight and bias of
  action 0's logit in a linear softmax); contours of the true mean KL around
  θ_old, the quadratic model's ellipse ½ΔθᵀFΔθ = δ, the vanilla direction g and
  the natural direction F⁻¹g, each scaled to the ellipse, with their gains gᵀΔθ.
* ``fig_cg_residual.png``: ‖r_k‖ of conjugate gradient on (F + λ_d I)x = g
  for a small Gaussian MLP policy, against k.
* ``fig_kl_model.png``: the true mean KL and its quadratic model f²δ along the
  fraction f of TRPO's full step βx (the overshooting example of theory.md §5).
* ``fig_mm.png``: η, L_π and the lower bound L_π − C·D_KL^max along a line in
  the logits of a tabular softmax policy on a random MDP (exact).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import trpo_ref as tr  # noqa: E402
from trpo_ref import tabular as T  # noqa: E402

IMG = ROOT / "docs" / "img"
DATA = IMG / "figures.json"


def trust_region(delta: float = 0.05, n_grid: int = 61) -> dict:
    """Two-parameter trust region: true KL on a grid, F, g and the two scaled directions."""
    pi = tr.CategoricalMLPPolicy(obs_dim=1, n_actions=2, hidden_sizes=())
    rng = np.random.default_rng(0)
    obs = 1.0 + rng.standard_normal((64, 1))
    theta_old = np.array([0.3, 0.0, -0.2, 0.0])               # W0 = [[0.3, 0]], b0 = [-0.2, 0]
    act, logp_old = pi.sample(theta_old, obs, rng)
    adv = rng.standard_normal(64)
    E = np.eye(4)[:, [0, 2]]                                   # the two free parameters: W0[0, 0] and b0[0]
    g = E.T @ pi.surrogate_grad(theta_old, obs, act, adv, logp_old)
    F = np.stack([E.T @ pi.fisher_vector_product(theta_old, obs, E[:, i]) for i in range(2)], axis=1)
    vanilla = g * math.sqrt(2 * delta / float(g @ F @ g))
    x = np.linalg.solve(F, g)
    natural = x * math.sqrt(2 * delta / float(x @ F @ x))
    w, V = np.linalg.eigh(F)
    half = 1.25 * float(np.max(np.abs(V * np.sqrt(2 * delta / w))))   # the ellipse's extent along each axis, with a margin
    axis = np.linspace(-half, half, n_grid)
    kl = [[float(pi.kl(theta_old, theta_old + E @ np.array([a, b]), obs)) for a in axis] for b in axis]
    return {"delta": delta, "F": F.tolist(), "g": g.tolist(), "axis": axis.tolist(), "kl": kl,
            "vanilla": vanilla.tolist(), "natural": natural.tolist(),
            "gain_vanilla": float(g @ vanilla), "gain_natural": float(g @ natural)}


def cg_residual(damping: float = 0.1, iters: int = 15) -> dict:
    """‖r_k‖ of CG on the damped Fisher of a small Gaussian policy."""
    pi = tr.GaussianMLPPolicy(obs_dim=4, act_dim=2, hidden_sizes=(16,))
    theta = pi.init_params(seed=0)
    rng = np.random.default_rng(1)
    obs = rng.standard_normal((256, 4))
    act, logp_old = pi.sample(theta, obs, rng)
    adv = rng.standard_normal(256)
    g = pi.surrogate_grad(theta, obs, act, adv, logp_old)
    res = tr.conjugate_gradient(pi.fisher_operator(theta, obs, damping), g, max_iter=iters, rtol=0.0, atol=0.0)
    return {"damping": damping, "num_params": pi.num_params, "residual_norms": [float(r) for r in res.residual_norms]}


def kl_model(max_kl: float = 0.5, n: int = 41) -> dict:
    """True mean KL and the quadratic model f²δ along the fraction f of βx (theory.md §5's example)."""
    pi = tr.GaussianMLPPolicy(obs_dim=2, act_dim=1, hidden_sizes=(8,))
    theta = pi.init_params(seed=0)
    obs = np.random.default_rng(0).standard_normal((300, 2))
    act, logp_old = pi.sample(theta, obs, np.random.default_rng(1))
    adv = 1.0 - act[:, 0] ** 2
    _, info = tr.trpo_step(pi, theta, tr.Batch(obs, act, adv, logp_old), tr.TRPOConfig(max_kl=max_kl))
    fractions = np.linspace(0.0, 1.0, n)
    kl = [float(pi.kl(theta, theta + f * info.full_step, obs)) for f in fractions]
    return {"max_kl": max_kl, "fractions": fractions.tolist(), "kl": kl,
            "model": (fractions**2 * max_kl).tolist(),
            "tries": [[float(t.fraction), float(t.kl), bool(t.accepted)] for t in info.tries]}


def mm(n_points: int = 61) -> dict:
    """η, L_π and L_π − C·D_KL^max along z + t·v on a random tabular MDP (exact)."""
    mdp = T.random_mdp(5, 3, gamma=0.8, rng=4)
    rng = np.random.default_rng(2)
    z = rng.standard_normal((5, 3))
    pi_old = T.softmax_policy(z)
    v = T.policy_gradient(mdp, z)
    v = v / np.linalg.norm(v)
    ts = np.linspace(-2.0, 4.0, n_points)
    eta, surr, bound = [], [], []
    for t in ts:
        zt = z + t * v
        terms = T.bound_terms(mdp, pi_old, T.softmax_policy(zt), logits=z, logits_new=zt)
        eta.append(float(terms.eta_new))
        surr.append(float(terms.surrogate))
        bound.append(float(terms.lower_bound))
    return {"t": ts.tolist(), "eta": eta, "L": surr, "bound": bound, "C": float(T.penalty_C(mdp, pi_old))}


FIGURES = {"trust_region": trust_region, "cg_residual": cg_residual, "kl_model": kl_model, "mm": mm}


def compute() -> dict:
    """The numbers of every figure, keyed by figure name."""
    return {name: fn() for name, fn in FIGURES.items()}


def plot(data: dict, out: Path = IMG) -> list[Path]:
    """Draw every figure from ``data`` into ``out``; return the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []

    def save(fig, name):
        path = out / f"fig_{name}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=110, metadata={"Software": None})
        plt.close(fig)
        written.append(path)

    d = data["trust_region"]
    axis, kl, F = np.array(d["axis"]), np.array(d["kl"]), np.array(d["F"])
    fig, ax = plt.subplots(figsize=(5.6, 5))
    cs = ax.contour(axis, axis, kl, levels=[d["delta"] / 4, d["delta"], 2 * d["delta"]], colors="0.5", linewidths=0.8)
    ax.clabel(cs, fmt={lv: f"KL={lv:g}" for lv in cs.levels}, fontsize=7)
    ang = np.linspace(0, 2 * np.pi, 200)
    w, V = np.linalg.eigh(F)
    ellipse = V @ (np.sqrt(2 * d["delta"] / w)[:, None] * np.stack([np.cos(ang), np.sin(ang)]))
    ax.plot(ellipse[0], ellipse[1], "k-", lw=1.6, label=r"model $\frac{1}{2}\Delta\theta^\top F\Delta\theta=\delta$")
    for key, color, label in (("vanilla", "tab:blue", "vanilla $g$"), ("natural", "tab:red", r"natural $F^{-1}g$")):
        s = d[key]
        ax.annotate("", xy=s, xytext=(0, 0), arrowprops=dict(arrowstyle="->", color=color, lw=2))
        ax.plot([], [], color=color, lw=2, label=f"{label}: gain $g^\\top\\Delta\\theta$ = {d['gain_' + key]:.3f}")
    ax.set_xlabel(r"$\Delta W_{00}$ (weight of action 0's logit)")
    ax.set_ylabel(r"$\Delta b_0$ (bias of action 0's logit)")
    ax.set_title(f"Trust region of a two-parameter policy (δ = {d['delta']:g})\ngrey: contours of the true mean KL", fontsize=10)
    ax.set_aspect("equal")
    ax.legend(fontsize=7, loc="lower right")
    save(fig, "trust_region")

    d = data["cg_residual"]
    fig, ax = plt.subplots(figsize=(5.6, 3.6))
    ax.semilogy(range(len(d["residual_norms"])), d["residual_norms"], "o-", ms=3, label=r"$\|r_k\|$")
    ax.axvline(10, color="0.6", ls="--", lw=1, label="10 iterations (the usual budget)")
    ax.set_xlabel("CG iteration k")
    ax.set_ylabel(r"residual $\|g - (F+\lambda_d I)x_k\|$")
    ax.set_title(f"CG on the damped Fisher (P = {d['num_params']}, λ_d = {d['damping']:g})")
    ax.legend(fontsize=8)
    save(fig, "cg_residual")

    d = data["kl_model"]
    fig, ax = plt.subplots(figsize=(5.6, 3.6))
    ax.plot(d["fractions"], d["kl"], "-", color="tab:red", label=r"true $\bar D_{KL}(\theta_{old}\,\|\,\theta_{old}+f\beta x)$")
    ax.plot(d["fractions"], d["model"], "--", color="k", label=r"quadratic model $f^2\delta$")
    ax.axhline(d["max_kl"], color="0.6", lw=1, label=r"$\delta$")
    for f, k, acc in d["tries"]:
        ax.plot([f], [k], "o", color="tab:green" if acc else "tab:gray", ms=6)
    ax.plot([], [], "o", color="tab:gray", label="line-search try (rejected)")
    ax.plot([], [], "o", color="tab:green", label="accepted try")
    ax.set_xlabel("fraction f of the full step βx")
    ax.set_ylabel("mean KL")
    ax.set_title("True KL and its quadratic model along the step", fontsize=10)
    ax.legend(fontsize=7)
    save(fig, "kl_model")

    d = data["mm"]
    fig, ax = plt.subplots(figsize=(5.6, 3.8))
    t = np.array(d["t"])
    ax.plot(t, d["eta"], "-", color="k", lw=2, label=r"$\eta(\pi_t)$ (true return)")
    ax.plot(t, d["L"], "--", color="tab:blue", label=r"$L_\pi(\pi_t)$")
    ax.plot(t, d["bound"], "-", color="tab:red", label=r"$L_\pi(\pi_t) - C\,D_{KL}^{max}(\pi,\pi_t)$")
    lo = min(d["eta"]) - 0.5 * (max(d["eta"]) - min(d["eta"]))
    ax.set_ylim(lo, max(max(d["eta"]), max(d["L"])) + 0.1 * (max(d["eta"]) - lo))
    ax.axvline(0, color="0.6", lw=1)
    ax.set_xlabel(r"$t$ along $z + t\,v$ ($v$: the normalised policy gradient)")
    ax.set_ylabel("value")
    ax.set_title(f"Minorize–maximize on a tabular MDP (C = {d['C']:.1f})")
    ax.legend(fontsize=7, loc="lower center")
    save(fig, "mm")
    return written


def stale_keys(stored: dict, fresh: dict, name: str) -> list[str]:
    """Keys of figure ``name`` whose recomputed numbers differ from the stored ones (all of them if it is new).

    rtol 1e-7: the numbers are seeded float64 computations; only BLAS summation order may differ (~1e-14
    relative); atol 1e-10 for entries that are 0 in exact arithmetic (CG residuals, KL at 0).
    """
    a, b = stored.get(name), fresh[name]
    if a is None or sorted(a) != sorted(b):
        return sorted(set(b) | set(a or ()))
    stale = []
    for key in sorted(a):
        x, y = np.asarray(_flat(a[key]), float), np.asarray(_flat(b[key]), float)
        if x.shape != y.shape or not np.allclose(y, x, rtol=1e-7, atol=1e-10):
            stale.append(key)
    return stale


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true",
                    help="only compare with docs/img/figures.json: one line per figure, exit 1 when any is out of date")
    ap.add_argument("--numbers", type=Path, default=None,
                    help="write the recomputed numbers (JSON) to this file and draw nothing")
    args = ap.parse_args(argv)
    data = compute()
    if args.numbers is not None:
        args.numbers.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
        print("wrote", args.numbers)
    if args.check:
        stored = json.loads(DATA.read_text())
        ok = stored.keys() == data.keys()
        for name in data:
            stale = stale_keys(stored, data, name)
            ok = ok and not stale
            print(f"{name}: current" if not stale else f"{name}: out of date ({', '.join(stale)})")
        for name in sorted(set(stored) - set(data)):
            print(f"{name}: no longer computed")
        print("figures are current" if ok else "figures are out of date: run python scripts/make_figures.py")
        return 0 if ok else 1
    if args.numbers is not None:
        return 0
    IMG.mkdir(parents=True, exist_ok=True)
    DATA.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    for path in plot(data):
        print("wrote", path.relative_to(ROOT))
    print("wrote", DATA.relative_to(ROOT))
    return 0


def _flat(obj) -> list:
    """Every number of a nested JSON value, in order (booleans as 0/1)."""
    if isinstance(obj, dict):
        return [v for k in sorted(obj) for v in _flat(obj[k])]
    if isinstance(obj, (list, tuple)):
        return [v for item in obj for v in _flat(item)]
    return [float(obj)]


if __name__ == "__main__":
    raise SystemExit(main())
