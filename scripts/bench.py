#!/usr/bin/env python
r"""CPU benchmark of trpo_ref against the matmul floor, JAX and SB3-contrib (issues 8 and 14).

Every figure is the median of ``--reps`` timed repetitions after a warm-up,
and every comparison is *interleaved*: the contenders of one group (for
example our FVP, the bare matrix products it needs, and SB3-contrib's double
back-prop) run one after another inside each repetition, so load from other
processes on a shared machine hits all of them alike and their ratio is
meaningful even when the absolute times drift.

BLAS runs on one thread unless ``--threads`` says otherwise: the variables
below are set before NumPy (or torch) is imported, and torch gets
``torch.set_num_threads``.  With one thread the process also pins itself to
one CPU (``--cpu``, default the last one it may use), because XLA's CPU client
ignores thread flags and would use every core.

OpenBLAS kernel: a machine may set ``OPENBLAS_CORETYPE`` (this one sets
``Haswell``, which slows NumPy on its AVX-512 processor) or
``OPENBLAS_L2_SIZE``.  The benchmark removes both from its own environment
before NumPy loads OpenBLAS, so OpenBLAS picks the processor's own kernel, and
records what it removed (``--keep-coretype`` keeps them).  Every table states
the kernel threadpoolctl reports.  Tests and CI leave these variables alone.

Usage::

    python scripts/bench.py                     # full run: batch 2048 and 16384, float32 and float64
    python scripts/bench.py --quick             # tiny sizes, a few reps (smoke test); writes to a temp dir
    python scripts/bench.py --only-jax          # the FVP-vs-JAX table alone; a temp dir unless --md/--out say
    python scripts/bench.py --out docs/perf.json --md docs/performance.md

The Markdown report is written between the markers ``<!-- bench:begin -->``
and ``<!-- bench:end -->`` of ``--md``; hand-written text outside them is kept.
``--quick`` never writes into docs/.
"""

from __future__ import annotations

import os
import sys


def _arg_from_argv(argv, name, default):
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return default


def _threads_from_argv(argv) -> str:
    return _arg_from_argv(argv, "--threads", "1")


BLAS_THREADS = _threads_from_argv(sys.argv) if __name__ == "__main__" else os.environ.get("OPENBLAS_NUM_THREADS", "1")
_THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
                "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")
_KERNEL_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
#: Variables this process removed before NumPy loaded OpenBLAS (name -> old value).
LIFTED: dict = {}
#: CPUs the process pinned itself to (None: not pinned).
PINNED = None
if __name__ == "__main__":
    for _var in _THREAD_VARS:  # before numpy / torch are imported: this is what takes effect
        os.environ[_var] = BLAS_THREADS
    if "--keep-coretype" not in sys.argv:
        for _var in _KERNEL_VARS:
            if _var in os.environ:
                LIFTED[_var] = os.environ.pop(_var)
    _cpu = _arg_from_argv(sys.argv, "--cpu", None)
    if hasattr(os, "sched_setaffinity") and (_cpu is not None or BLAS_THREADS == "1") and _cpu != "none":
        PINNED = {int(_cpu)} if _cpu is not None else {max(os.sched_getaffinity(0))}
        os.sched_setaffinity(0, PINNED)

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import textwrap  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Callable  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import trpo_ref as tr  # noqa: E402
from trpo_ref.cg import conjugate_gradient  # noqa: E402
from trpo_ref.trpo import Batch, TRPOConfig, trpo_step  # noqa: E402
from trpo_ref.value import ValueFunction, fit_adam  # noqa: E402
from mdblock import write_marked_block  # noqa: E402  (scripts/ is sys.path[0])

# SB3-contrib's Hopper setup (rl-zoo defaults for TRPO): policy 64x64 tanh, damping 0.1.
OBS_DIM, ACT_DIM, HIDDEN, DAMPING = 17, 6, (64, 64), 0.1


# ------------------------------------------------------------------- timing
def interleaved(fns: dict, reps: int = 20, warmup: int = 2, keep_times: bool = False) -> dict:
    """Median wall time of each callable, the callables interleaved rep by rep.

    Parameters
    ----------
    fns : dict name -> callable or (setup, callable)
        ``setup()`` (untimed) runs before each timed call, e.g. to restore
        weights that the timed call mutates.
    reps, warmup : int
        Timed repetitions (the median is taken over them) and untimed ones first.
    keep_times : bool
        Also return every repetition's time (``"times_s"``), for ratios taken rep by rep.

    Returns
    -------
    dict name -> {"median_s", "p25_s", "p75_s", "reps"} (+ "times_s")
    """
    pairs = {k: (f if isinstance(f, tuple) else (None, f)) for k, f in fns.items()}
    for _ in range(warmup):
        for setup, fn in pairs.values():
            if setup is not None:
                setup()
            fn()
    times = {k: [] for k in pairs}
    for _ in range(reps):
        for k, (setup, fn) in pairs.items():
            if setup is not None:
                setup()
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: {"median_s": float(np.median(t)), "p25_s": float(np.percentile(t, 25)),
                "p75_s": float(np.percentile(t, 75)), "reps": len(t), **({"times_s": t} if keep_times else {})}
            for k, t in times.items()}


def ratio_stats(num, den) -> dict:
    """Median, quartiles and range of the rep-by-rep ratios ``num[i] / den[i]``."""
    r = np.asarray(num, float) / np.asarray(den, float)
    return {"median": float(np.median(r)), "p25": float(np.percentile(r, 25)), "p75": float(np.percentile(r, 75)),
            "min": float(r.min()), "max": float(r.max()), "reps": int(r.size)}


# ------------------------------------------------------------------ problem
def make_problem(batch: int, dtype: str, seed: int = 0, kind: str = "gaussian"):
    """Gaussian 64x64 tanh policy (obs 17, act 6) at its initial θ, and one batch.

    ``kind="categorical"``: the same network with 6 logits (a categorical policy).

    Observations are standard normal; actions are sampled from the policy
    (so ``logp_old`` is the true log-probability and the ratio is 1 at θ_old);
    advantages are standard normal.  Returns ``(policy, theta, Batch, returns)``.
    """
    rng = np.random.default_rng(seed)
    if kind == "gaussian":
        pi = tr.GaussianMLPPolicy(OBS_DIM, ACT_DIM, hidden_sizes=HIDDEN)
    else:
        pi = tr.CategoricalMLPPolicy(OBS_DIM, ACT_DIM, hidden_sizes=HIDDEN)
    theta = pi.init_params(seed, dtype=dtype)
    obs = rng.standard_normal((batch, OBS_DIM)).astype(dtype)
    act, logp = pi.sample(theta, obs, rng)
    adv = rng.standard_normal(batch).astype(dtype)
    ret = rng.standard_normal(batch).astype(dtype)
    return pi, theta, Batch(obs=obs, act=act, adv=adv, logp_old=logp), ret


def fvp_matmul_count(mlp) -> int:
    """Matrix products of one FVP as mlp.py does them: jvp + vjp without x̄.

    jvp: per layer ``h_l @ Ẇ_l``, plus ``ḣ_l @ W_l`` for l ≥ 1 (ḣ_0 = 0);
    vjp: per layer ``h_lᵀ @ z̄_l``, plus ``z̄_l @ W_lᵀ`` for l ≥ 1 (no x̄).
    """
    return 2 * mlp.n_layers + 2 * (mlp.n_layers - 1)


def fvp_flops(mlp, n: int) -> int:
    """Multiply-add FLOPs (2 per MAC) of those matrix products for a batch of n."""
    macs = 0
    for l, (a, b) in enumerate(zip(mlp.sizes[:-1], mlp.sizes[1:])):
        per_layer = 2 if l == 0 else 4  # jvp hẆ (+ ḣW), vjp hᵀz̄ (+ z̄Wᵀ)
        macs += per_layer * n * a * b
    return 2 * macs


def matmul_floor(mlp, theta, obs, rng=None) -> Callable[[], None]:
    """A callable doing exactly the FVP's matrix products, bare, same shapes and dtype.

    Inputs of each product are precomputed (hidden activations at θ and random
    tangents / cotangents), so only the products are timed.
    """
    rng = np.random.default_rng(1) if rng is None else rng
    dtype = theta.dtype
    _, cache = mlp.forward(theta[: mlp.num_params], obs)
    hs, Ws = cache.inputs, cache.weights
    W_dots = [rng.standard_normal(W.shape).astype(dtype) for W in Ws]
    n = obs.shape[0]
    h_dots = [None] + [rng.standard_normal((n, W.shape[0])).astype(dtype) for W in Ws[1:]]
    z_bars = [rng.standard_normal((n, W.shape[1])).astype(dtype) for W in Ws]

    def floor():
        for l in range(len(Ws)):  # jvp: ż_l = h_l Ẇ_l + ḣ_l W_l
            hs[l] @ W_dots[l]
            if l > 0:
                h_dots[l] @ Ws[l]
        for l in range(len(Ws)):  # vjp: W̄_l = h_lᵀ z̄_l, h̄_l = z̄_l W_lᵀ
            hs[l].T @ z_bars[l]
            if l > 0:
                z_bars[l] @ Ws[l].T

    return floor


# ------------------------------------------------------------ SB3-contrib
def sb3_available() -> bool:
    try:
        import sb3_contrib  # noqa: F401
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


class _BoxEnv:
    """Factory of a dummy gymnasium env with Box obs (17,) and Box actions (6,)."""

    @staticmethod
    def make(obs_dim=OBS_DIM, act_dim=ACT_DIM):
        import gymnasium as gym

        class Dummy(gym.Env):
            observation_space = gym.spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32)
            action_space = gym.spaces.Box(-1.0, 1.0, (act_dim,), np.float32)

            def reset(self, *, seed=None, options=None):
                super().reset(seed=seed)
                return np.zeros(obs_dim, np.float32), {}

            def step(self, action):
                return np.zeros(obs_dim, np.float32), 0.0, False, False, {}

        return Dummy()


def _sb3_keep_float64(on: bool) -> None:
    """SB3's preprocess_obs casts Box observations with .float(); for a float64
    comparison it is replaced by the identity (Box spaces only), and put back after."""
    import stable_baselines3.common.policies as sb3_policies
    from stable_baselines3.common.preprocessing import preprocess_obs

    sb3_policies.preprocess_obs = (lambda obs, space, normalize_images=True: obs) if on else preprocess_obs


def sb3_model(pi, theta, batch: Batch, ret, dtype: str, threads: int = 1, n_critic_updates: int = 10):
    """SB3-contrib TRPO on a dummy Box env, with our θ loaded and its buffer filled with our batch.

    Its policy is 64x64 tanh with separate value net (SB3's MlpPolicy default);
    the actor's Linear weights are our ``W_l.T`` and its ``log_std`` ours, so
    both sides do identical work.  Returns ``(model, load_theta)``.
    """
    import torch
    from sb3_contrib import TRPO
    from stable_baselines3.common.logger import configure

    torch.set_num_threads(threads)
    n = len(batch)
    model = TRPO("MlpPolicy", _BoxEnv.make(), n_steps=n, batch_size=128, device="cpu", seed=0,
                 n_critic_updates=n_critic_updates,
                 policy_kwargs=dict(net_arch=dict(pi=list(HIDDEN), vf=list(HIDDEN)), activation_fn=torch.nn.Tanh))
    model.set_logger(configure(None, []))
    tdtype = torch.float64 if dtype == "float64" else torch.float32
    model.policy.to(tdtype)
    _sb3_keep_float64(dtype == "float64")
    linears = [m for m in model.policy.mlp_extractor.policy_net if isinstance(m, torch.nn.Linear)]
    linears.append(model.policy.action_net)

    def load_theta(th=theta):
        named = pi.unflatten(th)
        with torch.no_grad():
            for l, lin in enumerate(linears):
                lin.weight.copy_(torch.from_numpy(np.ascontiguousarray(named[f"W{l}"].T)))
                lin.bias.copy_(torch.from_numpy(np.asarray(named[f"b{l}"])))
            model.policy.log_std.copy_(torch.from_numpy(np.asarray(named["log_std"])))

    load_theta()
    # θ-shaped vectors in SB3's flat order (named_parameters without "value":
    # log_std first, then each Linear's (out, in) weight and bias).
    sb3_names = {id(lin.weight): f"W{l}" for l, lin in enumerate(linears)}
    sb3_names.update({id(lin.bias): f"b{l}" for l, lin in enumerate(linears)})
    sb3_names[id(model.policy.log_std)] = "log_std"
    order = [sb3_names[id(p)] for name, p in model.policy.named_parameters() if "value" not in name]

    def to_sb3(vec):
        named = pi.unflatten(np.asarray(vec))
        return torch.from_numpy(np.concatenate([np.ascontiguousarray(named[k].T).reshape(-1) for k in order]))

    def from_sb3(vec_t):
        vec, parts, pos = vec_t.detach().numpy(), {}, 0
        for k in order:
            shape = pi.param_shapes()[k]
            size = int(np.prod(shape))
            parts[k] = vec[pos:pos + size].reshape(shape[::-1]).T
            pos += size
        return pi.flatten(parts)

    model.to_sb3, model.from_sb3 = to_sb3, from_sb3
    buf = model.rollout_buffer
    col = lambda a: np.asarray(a, dtype=dtype).reshape(n, 1, *np.shape(a)[1:])  # noqa: E731
    buf.observations = col(batch.obs)
    buf.actions = col(batch.act)
    buf.log_probs = col(batch.logp_old)
    buf.advantages = col(batch.adv)
    buf.returns = col(ret)
    buf.values = col(np.zeros(n))
    buf.generator_ready = False
    buf.full = True
    return model, load_theta


def sb3_fisher(model, batch: Batch):
    """SB3-contrib's own code path up to the FVP: (setup(), hvp(v)) on the filled buffer.

    ``setup()`` redoes what ``TRPO.train`` does before CG (forward at θ_old,
    KL, ``_compute_actor_grad`` with ``create_graph=True``) and returns
    ``(hvp, g)``; ``hvp`` is ``partial(model.hessian_vector_product, params, grad_kl)``.
    """
    import copy
    from functools import partial

    import torch
    from stable_baselines3.common.distributions import kl_divergence

    data = next(model.rollout_buffer.get(batch_size=None))

    def setup():
        with torch.no_grad():
            old = copy.copy(model.policy.get_distribution(data.observations))
        dist = model.policy.get_distribution(data.observations)
        log_prob = dist.log_prob(data.actions)
        adv = data.advantages
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        objective = (adv * torch.exp(log_prob - data.old_log_prob)).mean()
        kl = kl_divergence(dist, old).mean()
        params, g, grad_kl, _ = model._compute_actor_grad(kl, objective)
        return partial(model.hessian_vector_product, params, grad_kl), g

    return setup


# ------------------------------------------------------------ policy groups
def bench_policy(batch_size: int, dtype: str, reps: int = 20, warmup: int = 2, with_sb3: bool = True,
                 threads: int = 1) -> dict:
    """FVP, operator setup, CG 10/15, trpo_step and critic fit at one size, with their baselines."""
    pi, theta, batch, ret = make_problem(batch_size, dtype)
    obs = batch.obs
    rng = np.random.default_rng(2)
    v = rng.standard_normal(pi.num_params).astype(dtype)
    fisher = pi.fisher_operator(theta, obs, DAMPING)
    g = pi.surrogate_grad(theta, obs, batch.act, batch.adv, batch.logp_old)
    config = TRPOConfig.preset("sb3-contrib")
    sb3 = with_sb3 and sb3_available()
    out = {"batch": batch_size, "dtype": dtype, "num_params": pi.num_params,
           "fvp_matmuls": fvp_matmul_count(pi.mlp), "fvp_flops": fvp_flops(pi.mlp, batch_size)}

    # 1. FVP (+ floor, + SB3 double back-prop) and operator setup
    fvp_group = {"fvp": lambda: fisher(v), "matmul_floor": matmul_floor(pi.mlp, theta, obs)}
    setup_group = {"fisher_setup": lambda: pi.fisher_operator(theta, obs, DAMPING)}
    # CG 10 from x₀ = 0 (10 products); CG 15 from SB3-contrib's random x₀ = 1e-4·N(0, I)
    # (16 products), against SB3-contrib's solver with its early stop disabled: same work.
    x0 = 1e-4 * rng.standard_normal(pi.num_params).astype(dtype)
    cg_group = {"cg10": lambda: conjugate_gradient(fisher, g, max_iter=10),
                "cg15": lambda: conjugate_gradient(fisher, g, max_iter=15, x0=x0)}
    if sb3:
        import torch

        model, load_theta = sb3_model(pi, theta, batch, ret, dtype, threads, n_critic_updates=0)
        sb3_setup = sb3_fisher(model, batch)
        hvp, g_t = sb3_setup()
        v_t = model.to_sb3(v)
        fvp_group["sb3_fvp"] = lambda: hvp(v_t)
        setup_group["sb3_fisher_setup"] = sb3_setup
        from sb3_contrib.common.utils import conjugate_gradient_solver

        cg_group["sb3_cg15"] = lambda: conjugate_gradient_solver(hvp, g_t, max_iter=15, residual_tol=0.0)
        # check that both sides compute the same product (same weights, same batch);
        # SB3 averages the KL over action dimensions as well, hence the act_dim factor
        ours = np.asarray(fisher(v)) - DAMPING * v
        theirs = (model.from_sb3(hvp(v_t)) - DAMPING * v) * ACT_DIM
        out["sb3_fvp_rel_diff"] = float(np.linalg.norm(ours - theirs) / np.linalg.norm(ours))
    out.update(interleaved(fvp_group, reps, warmup, keep_times=True))
    out.update(interleaved(setup_group, reps, warmup, keep_times=True))
    out.update(interleaved(cg_group, reps, warmup, keep_times=True))

    # 2. one whole policy update (SB3-contrib preset: 15 CG iterations, 0.8 x 10 line search)
    step_group = {"trpo_step": lambda: trpo_step(pi, theta, batch, config)}
    _, info = trpo_step(pi, theta, batch, config)
    out["trpo_step_status"] = info.status
    out["trpo_step_accepted_index"] = info.accepted_index
    out["trpo_step_cg_iters"] = info.cg.n_iter
    if sb3:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # n_critic_updates=0: mean of no value losses
            step_group["sb3_policy_step"] = (load_theta, model.train)
            out.update(interleaved(step_group, reps, warmup, keep_times=True))
    else:
        out.update(interleaved(step_group, reps, warmup, keep_times=True))

    # 3. one critic fit: SB3 defaults (10 epochs of Adam, minibatch 128, lr 1e-3)
    vf = ValueFunction(OBS_DIM, HIDDEN)
    w = vf.init_params(0, dtype=dtype)
    critic_group = {"critic_fit": lambda: fit_adam(vf, w, obs, ret, epochs=10, batch_size=128, lr=1e-3, rng=0)}
    if sb3:
        import torch.nn.functional as F

        critic_model, _ = sb3_model(pi, theta, batch, ret, dtype, threads, n_critic_updates=10)

        def sb3_critic():  # the critic loop of TRPO.train, verbatim
            for _ in range(critic_model.n_critic_updates):
                for data in critic_model.rollout_buffer.get(critic_model.batch_size):
                    values_pred = critic_model.policy.predict_values(data.observations)
                    value_loss = F.mse_loss(data.returns, values_pred.flatten())
                    critic_model.policy.optimizer.zero_grad()
                    value_loss.backward()
                    critic_model.policy.optimizer.step()

        critic_group["sb3_critic_fit"] = sb3_critic
    out.update(interleaved(critic_group, max(5, reps // 4), 1, keep_times=True))
    if sb3:
        _sb3_keep_float64(False)
    return out



# -------------------------------------------------------------------- JAX
def bench_fvp_vs_jax(batch_size: int, dtype: str, kind: str = "gaussian", reps: int = 20, warmup: int = 2,
                     loop_k: int = 11) -> dict:
    """Our FVP against JAX's jitted linearised Gauss–Newton product (scripts/jax_fvp.py), interleaved.

    Contenders per repetition: our ``FisherOperator`` product (forward pass done
    once, outside the timing, as CG uses it), the bare matrix products, JAX's
    jitted call (linearisation inside), and JAX's jitted loop of 1 and of
    ``loop_k`` products after one linearisation, whose difference / (loop_k − 1)
    is JAX's marginal per-product time.  Ratios are taken rep by rep (>1: JAX
    is faster), then summarised.
    """
    from jax_fvp import make_jax_fvp

    pi, theta, batch, _ = make_problem(batch_size, dtype, kind=kind)
    obs = batch.obs
    v = np.random.default_rng(2).standard_normal(pi.num_params).astype(dtype)
    fisher = pi.fisher_operator(theta, obs, DAMPING)
    jx = make_jax_fvp(pi, theta, obs, DAMPING, loop_k)
    v_j = jx["to_device"](v)
    ours, theirs = np.asarray(fisher(v), float), np.asarray(jx["call"](v_j), float)
    group = {"fvp": lambda: fisher(v), "matmul_floor": matmul_floor(pi.mlp, theta, obs),
             "jax_call": lambda: jx["call"](v_j), "jax_loop_1": lambda: jx["loop"](1),
             "jax_loop_k": lambda: jx["loop"](loop_k)}
    res = interleaved(group, reps, warmup, keep_times=True)
    t = {k: np.asarray(r.pop("times_s")) for k, r in res.items()}
    marginal = (t["jax_loop_k"] - t["jax_loop_1"]) / (loop_k - 1)
    out = {"batch": batch_size, "dtype": dtype, "kind": kind, "loop_k": loop_k, "jax": jx["jax_version"],
           "rel_diff": float(np.linalg.norm(ours - theirs) / np.linalg.norm(ours)), **res,
           "jax_marginal": {"median_s": float(np.median(marginal)), "reps": len(marginal)},
           "ours_over_jax_marginal": ratio_stats(t["fvp"], marginal),
           "ours_over_jax_call": ratio_stats(t["fvp"], t["jax_call"]),
           "ours_over_floor": ratio_stats(t["fvp"], t["matmul_floor"]),
           "jax_marginal_over_floor": ratio_stats(marginal, t["matmul_floor"])}
    return out


# ------------------------------------------------------------------ rollout
def _rollout_module():
    try:
        from trpo_ref import rollout  # noqa: F401
    except ImportError:
        return None
    return rollout


def bench_rollout(env_id: str, steps: int = 2000, reps: int = 5, with_sb3: bool = True, threads: int = 1) -> dict:
    """Env steps per second with one env: env alone, our policy + env, SB3-contrib's collect_rollouts.

    Ours is a minimal loop (``policy.sample`` on one observation, then
    ``env.step``), the per-step work any rollout module must do; the policy's
    per-step overhead is (1/ours − 1/env alone) in µs.
    """
    import gymnasium as gym

    env = gym.make(env_id)
    discrete = isinstance(env.action_space, gym.spaces.Discrete)
    obs_dim = env.observation_space.shape[0]
    if discrete:
        pi = tr.CategoricalMLPPolicy(obs_dim, int(env.action_space.n), hidden_sizes=HIDDEN)
    else:
        pi = tr.GaussianMLPPolicy(obs_dim, env.action_space.shape[0], hidden_sizes=HIDDEN)
    theta = pi.init_params(0)
    rng = np.random.default_rng(0)
    fixed_action = env.action_space.sample()

    def env_only():
        env.reset(seed=0)
        for _ in range(steps):
            _, _, term, trunc, _ = env.step(fixed_action)
            if term or trunc:
                env.reset()

    def ours():
        obs, _ = env.reset(seed=0)
        for _ in range(steps):
            act, _ = pi.sample(theta, obs[None, :], rng)
            a = int(act[0]) if discrete else act[0]
            obs, _, term, trunc, _ = env.step(a)
            if term or trunc:
                obs, _ = env.reset()

    group = {"env_only": env_only, "ours_minimal": ours}
    rollout = _rollout_module()
    if rollout is not None:
        vr = rollout.VectorRollout(env_id, 1, seed=0)
        group["ours"] = lambda: vr.collect(pi, theta, steps, rng)
    else:
        group["ours"] = ours
    if with_sb3 and sb3_available():
        import torch
        from sb3_contrib import TRPO

        torch.set_num_threads(threads)
        model = TRPO("MlpPolicy", env_id, n_steps=steps, device="cpu", seed=0)
        model._setup_learn(steps, None)
        callback = model._init_callback(None)

        def sb3():
            model.collect_rollouts(model.env, callback, model.rollout_buffer, n_rollout_steps=steps)

        group["sb3"] = sb3
    res = interleaved(group, reps, 1)
    out = {"env": env_id, "steps": steps, "rollout_module": rollout is not None}
    for k, r in res.items():
        out[f"{k}_steps_per_s"] = steps / r["median_s"]
        out[f"{k}_us_per_step"] = 1e6 * r["median_s"] / steps
    out["policy_overhead_us"] = out["ours_us_per_step"] - out["env_only_us_per_step"]
    if "sb3_us_per_step" in out:
        out["sb3_overhead_us"] = out["sb3_us_per_step"] - out["env_only_us_per_step"]
    return out


# -------------------------------------------------------- training iteration
def bench_train_iteration(env_id: str = "CartPole-v1", n_steps: int = 2048, reps: int = 5, with_sb3: bool = True,
                          threads: int = 1) -> dict | None:
    """One whole training iteration (rollout, GAE, trpo_step, critic fit, logging), setup included.

    Ours: ``trpo_ref.train.train`` for one iteration of ``n_steps`` (SB3-contrib
    preset, checkpoint and plot off where the config allows); SB3-contrib:
    ``TRPO(...).learn(n_steps)``. None when ``trpo_ref.train`` is missing.
    """
    try:
        from trpo_ref.train import build_configs, train
    except ImportError:
        return None
    import tempfile

    cfg, trpo_cfg = build_configs(env_id, "sb3-contrib", {"total_steps": n_steps, "n_steps": n_steps, "n_envs": 1})
    tmp = tempfile.mkdtemp(prefix="bench_train_")
    counter = iter(range(10 ** 6))
    import inspect

    kw = {"blas_threads": None} if "blas_threads" in inspect.signature(train).parameters else {}
    group = {"ours_iteration": lambda: train(cfg, trpo_cfg, Path(tmp) / str(next(counter)), quiet=True, plot=False,
                                             **kw)}
    if with_sb3 and sb3_available():
        import torch
        from sb3_contrib import TRPO

        torch.set_num_threads(threads)
        group["sb3_iteration"] = lambda: TRPO("MlpPolicy", env_id, n_steps=n_steps, seed=0, device="cpu").learn(n_steps)
    out = {"env": env_id, "n_steps": n_steps}
    out.update(interleaved(group, reps, 1))
    return out


# ------------------------------------------------------------------- memory
_OURS_TRAIN = textwrap.dedent("""
    import numpy as np, gymnasium as gym, trpo_ref as tr
    from trpo_ref.trpo import Batch, TRPOConfig, trpo_step
    env = gym.make("CartPole-v1"); pi = tr.CategoricalMLPPolicy(4, 2); vf = tr.ValueFunction(4)
    theta, w = pi.init_params(0), vf.init_params(1); rng = np.random.default_rng(0)
    cfg = TRPOConfig.preset("sb3-contrib"); obs, _ = env.reset(seed=0)
    for it in range({iters}):
        O, A, R, D, L = [], [], [], [], []
        for t in range({n_steps}):
            a, lp = pi.sample(theta, obs[None], rng); O.append(obs); A.append(int(a[0])); L.append(lp[0])
            obs, r, term, trunc, _ = env.step(int(a[0])); R.append(r); D.append(term or trunc)
            if term or trunc: obs, _ = env.reset()
        O = np.array(O); A = np.array(A); R = np.array(R); D = np.array(D, float)
        V = vf.predict(w, O); ret = np.zeros_like(R); adv = np.zeros_like(R); last = 0.0; run = 0.0
        for t in reversed(range(len(R))):
            nv = 0.0 if (t == len(R) - 1 or D[t]) else V[t + 1]
            delta = R[t] + 0.99 * nv - V[t]; last = delta + 0.99 * 0.95 * (1 - D[t]) * last; adv[t] = last
        ret = adv + V
        theta, info = trpo_step(pi, theta, Batch(O, A, adv, np.array(L)), cfg)
        w, _ = tr.fit_adam(vf, w, O, ret, epochs=10, batch_size=128, rng=it)
""")

_SB3_TRAIN = textwrap.dedent("""
    import torch; torch.set_num_threads(1)
    from sb3_contrib import TRPO
    TRPO("MlpPolicy", "CartPole-v1", n_steps={n_steps}, seed=0, device="cpu").learn({iters} * {n_steps})
""")

_IMPORT_ONLY = {"ours_import": "import trpo_ref, gymnasium", "sb3_import": "import torch, sb3_contrib, gymnasium"}


def peak_rss_mib(code: str) -> float:
    """Peak RSS (MiB) of a fresh Python running ``code``, via RUSAGE_CHILDREN in a fresh launcher.

    The launcher has no other children, so its ``RUSAGE_CHILDREN.ru_maxrss``
    is exactly that of the one child (Linux: KiB).
    """
    launcher = ("import resource, subprocess, sys; subprocess.run([sys.executable, '-c', sys.argv[1]], check=True); "
                "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    res = subprocess.run([sys.executable, "-c", launcher, code], capture_output=True, text=True, env=env, check=True)
    return int(res.stdout.strip().splitlines()[-1]) / 1024.0


_OURS_TRAIN_MODULE = textwrap.dedent("""
    import tempfile
    from trpo_ref.train import build_configs, train
    cfg, trpo_cfg = build_configs("CartPole-v1", "sb3-contrib", {{"total_steps": {iters} * {n_steps}, "n_steps": {n_steps}, "n_envs": 1}})
    train(cfg, trpo_cfg, tempfile.mkdtemp(), quiet=True, plot=False)
""")


def bench_memory(iters: int = 5, n_steps: int = 2048, with_sb3: bool = True) -> dict:
    """Peak RSS of a CartPole training run (``iters`` updates of ``n_steps``) for both, plus import-only.

    Ours runs ``trpo_ref.train.train`` when it exists, else a minimal loop of
    the same work (rollout, GAE, trpo_step, critic fit).
    """
    try:
        import trpo_ref.train  # noqa: F401
        ours_code, ours_kind = _OURS_TRAIN_MODULE, "trpo_ref.train.train"
    except ImportError:
        ours_code, ours_kind = _OURS_TRAIN, "minimal loop"
    out = {"iters": iters, "n_steps": n_steps, "ours_kind": ours_kind,
           "ours_train_mib": peak_rss_mib(ours_code.format(iters=iters, n_steps=n_steps)),
           "ours_import_mib": peak_rss_mib(_IMPORT_ONLY["ours_import"])}
    if with_sb3 and sb3_available():
        out["sb3_train_mib"] = peak_rss_mib(_SB3_TRAIN.format(iters=iters, n_steps=n_steps))
        out["sb3_import_mib"] = peak_rss_mib(_IMPORT_ONLY["sb3_import"])
    return out


# ------------------------------------------------------------------ profile
def profile_headline(batch_size: int = 16384, dtype: str = "float64", top: int = 12) -> str | None:
    """pyinstrument text of one trpo_step (SB3-contrib preset), or None without pyinstrument."""
    try:
        from pyinstrument import Profiler
    except ImportError:
        return None
    pi, theta, batch, _ = make_problem(batch_size, dtype)
    config = TRPOConfig.preset("sb3-contrib")
    trpo_step(pi, theta, batch, config)
    profiler = Profiler(interval=0.0005)
    profiler.start()
    for _ in range(3):
        trpo_step(pi, theta, batch, config)
    profiler.stop()
    text = profiler.output_text(unicode=True, color=False, show_all=False)
    lines = [ln for ln in text.splitlines() if ln.strip()]
    start = next((i for i, ln in enumerate(lines) if "trpo_step" in ln), 0)
    return "\n".join(lines[start:start + top])


# ------------------------------------------------------------------ machine
def machine_info(threads: str) -> dict:
    info = {"python": platform.python_version(), "numpy": np.__version__, "platform": platform.platform(),
            "blas_threads_env": {v: os.environ.get(v) for v in _THREAD_VARS[:3]}, "bench_threads": threads,
            "nproc": os.cpu_count()}
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        info["cpu"] = next((ln.split(":", 1)[1].strip() for ln in lscpu.splitlines() if ln.startswith("Model name")), "?")
    except OSError:
        info["cpu"] = platform.processor() or "?"
    try:
        import threadpoolctl

        info["threadpool"] = [{k: p.get(k) for k in ("internal_api", "num_threads", "version", "architecture")}
                              for p in threadpoolctl.threadpool_info()]
    except ImportError:
        info["threadpool"] = "threadpoolctl not installed; thread count set by environment variables"
    info["kernel_env_lifted"] = dict(LIFTED)
    info["kernel_env_now"] = {v: os.environ.get(v) for v in _KERNEL_VARS}
    info["cpus"] = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    info["pinned"] = sorted(PINNED) if PINNED else None
    try:
        import jax

        info["jax"] = jax.__version__
    except ImportError:
        info["jax"] = None
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    except ImportError:
        info["torch"] = None
    try:
        import sb3_contrib

        info["sb3_contrib"] = sb3_contrib.__version__
    except ImportError:
        info["sb3_contrib"] = None
    return info


def blas_kernel(m: dict) -> str:
    """The BLAS library and the kernel it runs, as threadpoolctl reports them."""
    pools = m.get("threadpool")
    if not isinstance(pools, list):
        return "unknown (threadpoolctl missing)"
    return "; ".join(f"{p.get('internal_api')} {p.get('version')} kernel **{p.get('architecture')}**, "
                     f"{p.get('num_threads')} thread(s)" for p in pools) or "none loaded"


def machine_line(m: dict) -> str:
    """One line naming the machine, the BLAS kernel and how the run was isolated (heads every table)."""
    lifted = m.get("kernel_env_lifted") or {}
    now = {k: v for k, v in (m.get("kernel_env_now") or {}).items() if v is not None}
    if lifted:
        env = "the benchmark removed " + ", ".join(f"`{k}={v}`" for k, v in lifted.items()) + " from its own environment"
    elif now:
        env = "the benchmark kept " + ", ".join(f"`{k}={v}`" for k, v in now.items()) + " (`--keep-coretype`)"
    else:
        env = "`OPENBLAS_CORETYPE` / `OPENBLAS_L2_SIZE` were not set"
    pin = f"pinned to CPU {m['pinned'][0]}" if m.get("pinned") else f"CPUs {m.get('cpus')}"
    return (f"Machine: **{m.get('cpu')}** ({m.get('nproc')} logical CPUs, this run {pin}); "
            f"BLAS: {blas_kernel(m)}; {env}.")


def machine_short(m: dict) -> str:
    """The machine and BLAS kernel in a few words, under each table's heading."""
    pools = m.get("threadpool") if isinstance(m.get("threadpool"), list) else []
    kernel = ", ".join(f"{p.get('internal_api')} {p.get('architecture')}" for p in pools) or "BLAS unknown"
    pin = f", CPU {m['pinned'][0]}" if m.get("pinned") else ""
    return f"*{m.get('cpu')}, {kernel}, {m.get('bench_threads')} thread(s){pin}.*"


# ------------------------------------------------------------------- report
_RATIOS = {"fvp_over_floor": ("fvp", "matmul_floor"), "sb3_fvp_over_fvp": ("sb3_fvp", "fvp"),
           "sb3_setup_over_setup": ("sb3_fisher_setup", "fisher_setup"), "sb3_cg15_over_cg15": ("sb3_cg15", "cg15"),
           "sb3_step_over_step": ("sb3_policy_step", "trpo_step"),
           "sb3_critic_over_critic": ("sb3_critic_fit", "critic_fit")}


def ratios(row: dict) -> dict:
    """Speed-up ratios of one policy row (>1: trpo_ref is faster).

    Where the row kept every repetition's time (``times_s``: the two sides of a ratio ran in one
    interleaved group), the ratio is the median of the rep-by-rep ratios and its spread
    (:func:`ratio_stats`) goes into ``row["ratio_spread"]``; the per-rep times are then dropped from the
    row.  Otherwise the ratio of the medians.
    """
    r, spread = {}, {}
    for name, (num, den) in _RATIOS.items():
        if num not in row or den not in row:
            continue
        if "times_s" in row[num] and "times_s" in row[den]:
            spread[name] = ratio_stats(row[num]["times_s"], row[den]["times_s"])
            r[name] = spread[name]["median"]
        else:
            r[name] = row[num]["median_s"] / row[den]["median_s"]
    if spread:
        row["ratio_spread"] = spread
    for v in row.values():
        if isinstance(v, dict):
            v.pop("times_s", None)
    return r


def _ms(row, key):
    return f"{1e3 * row[key]['median_s']:.2f}" if key in row else "–"


def _x(v, target=None, spread=None):
    if v is None:
        return "–"
    mark = "" if target is None else (" ✅" if v >= target else " ❌")
    iqr = f" ({spread['p25']:.2f}–{spread['p75']:.2f})" if spread else ""
    return f"{v:.2f}×{iqr}{mark}"


def render_markdown(result: dict) -> str:
    m = result["machine"]
    lines = [f"Run of {result['date']} on **{m.get('cpu')}** ({m.get('nproc')} logical CPUs), "
             f"Python {m['python']}, NumPy {m['numpy']}, torch {m.get('torch')}, sb3-contrib {m.get('sb3_contrib')}; "
             f"BLAS threads {m['bench_threads']} (env {m['blas_threads_env']}), torch threads {m.get('torch_threads')}. "
             f"Median of {result['reps']} interleaved repetitions after {result['warmup']} warm-up ones "
             "(critic fits: a quarter of that, at least 5). Ratios are taken within one run.", "",
             machine_line(m), ""]
    if result.get("jax"):
        lines += render_jax(result)
    lines += ["### Policy math (ms, median)", "", machine_short(m), "",
              "| batch | dtype | FVP | matmul floor | SB3 FVP | setup | SB3 setup | CG 10 | CG 15 | SB3 CG 15 "
              "| trpo_step | SB3 policy step | critic fit | SB3 critic fit |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in result["policy"]:
        lines.append(f"| {row['batch']} | {row['dtype']} | " + " | ".join(_ms(row, k) for k in (
            "fvp", "matmul_floor", "sb3_fvp", "fisher_setup", "sb3_fisher_setup", "cg10", "cg15", "sb3_cg15",
            "trpo_step", "sb3_policy_step", "critic_fit", "sb3_critic_fit")) + " |")
    lines += ["", "### Ratios (same run; rep by rep, median (25th–75th percentile); targets marked)", "", machine_short(m), "",
              "| batch | dtype | SB3 FVP / FVP (≥ 3) | FVP / floor (≤ 1.5 at 16384) | SB3 step / trpo_step (≥ 3) "
              "| SB3 setup / setup | SB3 CG15 / CG15 | SB3 critic / critic | FVP GFLOP/s | SB3 vs ours FVP rel. diff |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for row in result["policy"]:
        r, sp = row["ratios"], row.get("ratio_spread", {})
        floor = r["fvp_over_floor"]
        floor_s = _x(floor, spread=sp.get("fvp_over_floor")) + (
            (" ✅" if floor <= 1.5 else " ❌") if row["batch"] >= 16384 else "")
        gflops = row["fvp_flops"] / row["fvp"]["median_s"] / 1e9
        lines.append(f"| {row['batch']} | {row['dtype']} | "
                     f"{_x(r.get('sb3_fvp_over_fvp'), 3, sp.get('sb3_fvp_over_fvp'))} | {floor_s} | "
                     f"{_x(r.get('sb3_step_over_step'), 3, sp.get('sb3_step_over_step'))} | "
                     f"{_x(r.get('sb3_setup_over_setup'), spread=sp.get('sb3_setup_over_setup'))} | "
                     f"{_x(r.get('sb3_cg15_over_cg15'), spread=sp.get('sb3_cg15_over_cg15'))} | "
                     f"{_x(r.get('sb3_critic_over_critic'), spread=sp.get('sb3_critic_over_critic'))} | "
                     f"{gflops:.1f} | {row.get('sb3_fvp_rel_diff', float('nan')):.1e} |")
    lines += ["", "Each ratio is taken within one repetition of an interleaved group (both sides timed one after "
              "the other), then the median and quartiles over the repetitions (the critic fits: "
              f"{result['policy'][0].get('critic_fit', {}).get('reps', '?')} repetitions); the median of the ratios is not the ratio of the "
              "medians in the table above.",
              "", f"The FVP does {result['policy'][0]['fvp_matmuls']} matrix products "
              f"({result['policy'][0]['fvp_flops'] / result['policy'][0]['batch'] / 1e3:.1f} kFLOP per sample); "
              "the floor does exactly those, bare. trpo_step uses the `sb3-contrib` preset "
              "(15 CG iterations, x₀ random, 0.8 × 10 line search, KL(new‖old) averaged over action dimensions); "
              "line-search outcome per row (batch/dtype: status at try index): " +
              ", ".join(f"{row['batch']}/{row['dtype']}: {row['trpo_step_status']} at try {row['trpo_step_accepted_index']}"
                        for row in result["policy"]) + ".", ""]
    if result.get("rollout"):
        lines += ["### Rollout, one env (steps/s, median)", "", machine_short(m), "",
                  "| env | env.step alone | trpo_ref policy + env | SB3-contrib collect_rollouts | ours / SB3 (≥ 5 on CartPole) "
                  "| our policy overhead (µs/step) | SB3 overhead (µs/step) |", "|---|---|---|---|---|---|---|"]
        for r in result["rollout"]:
            ratio = r["ours_steps_per_s"] / r["sb3_steps_per_s"] if "sb3_steps_per_s" in r else None
            lines.append(f"| {r['env']} | {r['env_only_steps_per_s']:.0f} | {r['ours_steps_per_s']:.0f} | "
                         f"{r.get('sb3_steps_per_s', float('nan')):.0f} | "
                         f"{_x(ratio, 5 if r['env'].startswith('CartPole') else None)} | "
                         f"{r['policy_overhead_us']:.1f} | {r.get('sb3_overhead_us', float('nan')):.1f} |")
        lines += ["", "Ours: " + ("`trpo_ref.rollout.VectorRollout(env, 1).collect` (minimal `policy.sample` + "
                  "`env.step` loop: " + ", ".join(f"{r['env']} {r['ours_minimal_steps_per_s']:.0f}/s" for r in result["rollout"])
                  + ")." if result["rollout"][0].get("rollout_module") else
                  "a minimal loop (`policy.sample` on one observation, then `env.step`): `trpo_ref.rollout` did not "
                  "exist when this ran."), ""]
    ti = result.get("train_iteration")
    if ti:
        ratio = ti["sb3_iteration"]["median_s"] / ti["ours_iteration"]["median_s"] if "sb3_iteration" in ti else None
        lines += ["### One whole training iteration, CartPole-v1, 2048 steps (s, median, setup included)", "", machine_short(m), "",
                  "| trpo_ref `train` | SB3-contrib `learn` | SB3 / ours |", "|---|---|---|",
                  f"| {ti['ours_iteration']['median_s']:.3f} | "
                  f"{ti['sb3_iteration']['median_s'] if 'sb3_iteration' in ti else float('nan'):.3f} | {_x(ratio)} |", ""]
    mem = result.get("memory")
    if mem:
        ratio = mem["ours_train_mib"] / mem["sb3_train_mib"] if "sb3_train_mib" in mem else None
        lines += ["### Peak memory, CartPole-v1 training run (MiB, max RSS)", "", machine_short(m), "",
                  "| | training run | imports only |", "|---|---|---|",
                  f"| trpo_ref | {mem['ours_train_mib']:.0f} | {mem['ours_import_mib']:.0f} |",
                  f"| SB3-contrib | {mem.get('sb3_train_mib', float('nan')):.0f} | {mem.get('sb3_import_mib', float('nan')):.0f} |",
                  "", f"ours / SB3 = {ratio:.2f} (target ≤ 0.5: {'✅' if ratio is not None and ratio <= 0.5 else '❌'}); "
                  f"{mem['iters']} updates of {mem['n_steps']} steps each; ours: {mem.get('ours_kind')}.", ""]
    if result.get("profile"):
        lines += ["### Profile headline (pyinstrument, 3 × trpo_step, batch 16384, float64)", "", "```",
                  result["profile"], "```", ""]
    if result.get("plot"):
        lines += [f"![FVP times]({result['plot']})", ""]
    return "\n".join(lines)


def _spread(r: dict) -> str:
    return f"{r['median']:.2f} ({r['p25']:.2f}–{r['p75']:.2f})"


def render_jax(result: dict) -> list:
    """The FVP-vs-JAX table (issue 14): times and rep-by-rep ratios with their spread."""
    m = result["machine"]
    rows = result["jax"]
    lines = ["### FVP against JAX's jitted linearised Gauss–Newton product (ms, median; ratios rep by rep)", "",
             machine_line(m) + f" JAX {m.get('jax')} (XLA CPU), same CPU.", "",
             "| kind | batch | dtype | ours | JAX marginal (in a jitted loop) | JAX jitted call | matmul floor "
             "| **ours / JAX marginal** (≤ 1) | ours / JAX call | ours / floor | JAX marginal / floor | rel. diff |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ok = " ✅" if r["ours_over_jax_marginal"]["median"] <= 1 else " ❌"
        lines.append(f"| {r['kind']} | {r['batch']} | {r['dtype']} | {_ms(r, 'fvp')} | {_ms(r, 'jax_marginal')} | "
                     f"{_ms(r, 'jax_call')} | {_ms(r, 'matmul_floor')} | {_spread(r['ours_over_jax_marginal'])}{ok} | "
                     f"{_spread(r['ours_over_jax_call'])} | {_spread(r['ours_over_floor'])} | "
                     f"{_spread(r['jax_marginal_over_floor'])} | {r['rel_diff']:.1e} |")
    k = rows[0]["loop_k"]
    lines += ["", f"Ratios: median (25th–75th percentile) over {rows[0]['fvp']['reps']} repetitions of the rep-by-rep "
              f"ratio; < 1 means ours is faster. JAX marginal = (loop of {k} products − loop of 1) / {k - 1}, "
              "the product's cost once the forward pass is done (a CG loop inside `jit`); JAX call = "
              "`jit(fvp)(θ, obs, v)` with the linearisation inside. Ours: `FisherOperator` product, forward pass "
              "at construction. rel. diff = ‖ours − JAX‖ / ‖ours‖ on the same θ, batch and v.", ""]
    return lines


def plot(result: dict, path: Path) -> bool:
    """Bar charts of the FVP: against JAX (left) and against SB3-contrib (right), each panel one
    interleaved group, so bars in a panel were timed under the same load."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    panels = []
    if result.get("jax"):
        panels.append(("vs JAX (one group per bar cluster)", result["jax"],
                       [("fvp", "trpo_ref FVP"), ("matmul_floor", "matmul floor (OpenBLAS)"),
                        ("jax_marginal", "JAX jit, marginal"), ("jax_call", "JAX jit, per call")],
                       lambda r: f"{r['kind'][:4]} {r['batch']}\n{r['dtype']}"))
    if result.get("policy"):
        panels.append(("vs SB3-contrib", result["policy"],
                       [("fvp", "trpo_ref FVP"), ("matmul_floor", "matmul floor"), ("sb3_fvp", "SB3-contrib FVP")],
                       lambda r: f"{r['batch']}\n{r['dtype']}"))
    if not panels:
        return False
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 3.8), squeeze=False,
                             gridspec_kw={"width_ratios": [len(pn[1]) + 2 for pn in panels]})
    for ax, (title, rows, keys, label) in zip(axes[0], panels):
        width = 0.8 / len(keys)
        for i, (k, name) in enumerate(keys):
            vals = [1e3 * r[k]["median_s"] if k in r else np.nan for r in rows]
            ax.bar(np.arange(len(rows)) + (i - (len(keys) - 1) / 2) * width, vals, width, label=name)
        ax.set_xticks(np.arange(len(rows)), [label(r) for r in rows], fontsize=7)
        ax.set_yscale("log")
        ax.set_ylabel("ms per product (median)")
        ax.set_title(f"FVP {title}", fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle("Fisher-vector product, policy 64x64 tanh, obs 17, 6 actions, one core", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# --------------------------------------------------------------------- main
def run(batches=(2048, 16384), dtypes=("float32", "float64"), reps=20, warmup=2, with_sb3=True,
        rollout_envs=("CartPole-v1", "Hopper-v5"), rollout_steps=2000, memory_iters=5, memory_steps=2048,
        profile=True, threads="1", train_iteration=True, with_jax=True, jax_kinds=("gaussian", "categorical"),
        only_jax=False) -> dict:
    """The whole benchmark as a dict (what ``--out`` writes)."""
    result = {"date": time.strftime("%Y-%m-%d %H:%M"), "reps": reps, "warmup": warmup,
              "machine": machine_info(threads), "policy": [], "rollout": [], "jax": []}
    from jax_fvp import jax_available

    if with_jax and jax_available():
        for kind in jax_kinds:
            for b in batches:
                for dt in dtypes:
                    row = bench_fvp_vs_jax(b, dt, kind, reps, warmup)
                    result["jax"].append(row)
                    r = row["ours_over_jax_marginal"]
                    print(f"jax {kind} {b} {dt}: ours/JAX marginal {r['median']:.2f} ({r['p25']:.2f}-{r['p75']:.2f}), "
                          f"ours/JAX call {row['ours_over_jax_call']['median']:.2f}, rel diff {row['rel_diff']:.1e}",
                          flush=True)
    elif with_jax:
        print("jax: not installed (pip install -e '.[jax]'); the JAX table is left out", flush=True)
    if only_jax:
        return result
    for b in batches:
        for dt in dtypes:
            row = bench_policy(b, dt, reps, warmup, with_sb3, int(threads))
            row["ratios"] = ratios(row)
            result["policy"].append(row)
            print(f"policy {b} {dt}: " + ", ".join(f"{k} {v:.2f}" for k, v in row["ratios"].items()), flush=True)
    for env_id in rollout_envs:
        try:
            r = bench_rollout(env_id, rollout_steps, max(3, reps // 4), with_sb3, int(threads))
        except Exception as exc:  # e.g. MuJoCo missing: report, do not abort the run
            r = {"env": env_id, "error": repr(exc)}
            print(f"rollout {env_id}: {exc!r}", flush=True)
            continue
        result["rollout"].append(r)
        print(f"rollout {env_id}: ours {r['ours_steps_per_s']:.0f}/s, sb3 {r.get('sb3_steps_per_s', 0):.0f}/s", flush=True)
    if train_iteration:
        result["train_iteration"] = bench_train_iteration("CartPole-v1", 2048, max(3, reps // 4), with_sb3, int(threads))
        print(f"train iteration: {result['train_iteration']}", flush=True)
    if memory_iters:
        result["memory"] = bench_memory(memory_iters, memory_steps, with_sb3)
        print(f"memory: {result['memory']}", flush=True)
    if profile:
        result["profile"] = profile_headline()
    return result


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="tiny sizes and few reps (smoke test); writes to a temporary directory, never into docs/")
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", default="1", help="BLAS / torch threads (default 1)")
    p.add_argument("--cpu", default=None,
                   help="CPU to pin the process to (default with one thread: the last allowed CPU; 'none': no pinning)")
    p.add_argument("--keep-coretype", action="store_true",
                   help="keep OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE from the environment (default: removed)")
    p.add_argument("--no-sb3", action="store_true")
    p.add_argument("--no-jax", action="store_true")
    p.add_argument("--only-jax", action="store_true", help="only the FVP-vs-JAX table")
    p.add_argument("--dtypes", nargs="+", choices=("float32", "float64"), default=None,
                   help="precisions of the policy and JAX rows (default float32 float64; --quick: float64)")
    p.add_argument("--jax-kinds", nargs="+", choices=("gaussian", "categorical"), default=None,
                   help="policy heads of the JAX rows (default gaussian categorical; --quick: gaussian)")
    p.add_argument("--out", type=Path, default=None, help="JSON (default docs/perf.json; --quick: a temp dir)")
    p.add_argument("--md", type=Path, default=None, help="Markdown (default docs/performance.md; --quick: a temp dir)")
    p.add_argument("--plot", type=Path, default=None, help="PNG (default docs/img/perf_fvp.png; --quick: a temp dir)")
    args = p.parse_args(argv)
    docs = ROOT / "docs"
    if args.quick or args.only_jax:  # --only-jax: its own files, not the full run's (pass --md to place them)
        import tempfile

        tmp = Path(tempfile.mkdtemp(prefix="trpo_ref_bench_quick_" if args.quick else "trpo_ref_bench_jax_"))
        defaults = {"out": tmp / "perf.json", "md": tmp / "performance.md", "plot": tmp / "img" / "perf_fvp.png"}
        for name in defaults if args.quick else ():
            if getattr(args, name) is not None and _inside(getattr(args, name), docs):
                p.error(f"--quick never writes into docs/ (got --{name} {getattr(args, name)})")
    else:
        defaults = {"out": docs / "perf.json", "md": docs / "performance.md", "plot": docs / "img" / "perf_fvp.png"}
    for name, path in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, path)
    if args.quick:
        result = run(batches=(64,), dtypes=tuple(args.dtypes or ("float64",)), reps=3, warmup=1,
                     with_sb3=not args.no_sb3, rollout_envs=("CartPole-v1",), rollout_steps=50, memory_iters=0,
                     profile=False, threads=args.threads, train_iteration=False, with_jax=not args.no_jax,
                     jax_kinds=tuple(args.jax_kinds or ("gaussian",)), only_jax=args.only_jax)
    else:
        result = run(dtypes=tuple(args.dtypes or ("float32", "float64")), reps=args.reps, warmup=args.warmup,
                     with_sb3=not args.no_sb3, threads=args.threads, with_jax=not args.no_jax,
                     jax_kinds=tuple(args.jax_kinds or ("gaussian", "categorical")), only_jax=args.only_jax)
    if args.only_jax:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1, default=str))
        write_marked_block(args.md, "bench-jax", "\n".join(render_jax(result)) if result["jax"] else "JAX not installed.",
                           "# Performance")
        print(f"wrote {args.out} and {args.md}")
        return 0
    if plot(result, args.plot):
        result["plot"] = os.path.relpath(args.plot, args.md.parent)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, default=str))
    write_marked_block(args.md, "bench", render_markdown(result), "# Performance")
    print(f"wrote {args.out} and {args.md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
