"""Check one real TRPO update of each installed library (tianshou 2.0.1, skrl 2.1.1) against trpo_ref.

Runs the library's *own* update code on a short rollout of its own tanh-MLP
policy (Pendulum-v1 for Gaussian, CartPole-v1 for categorical), reads each
intermediate the library computes — by wrapping the module-level functions and
methods it calls, and reading the locals of its update frame where a value is
never passed to a function — records them with ``trpo_ref.torch.Recorder`` in
the library's own sign and order, and prints the stage-wise verdict
(``check_trace``) against the library's preset.

Not part of the test suite (it needs the libraries and a few seconds per case):

    python scripts/check_real_libraries.py                 # every installed library, float64 and float32
    python scripts/check_real_libraries.py --lib skrl --dtype float64 --failures-only

The script prints, per case, the verdict and the first failing rows.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from trpo_ref.torch import Recorder, from_module  # noqa: E402

DTYPES = {"float64": torch.float64, "float32": torch.float32}


@contextlib.contextmanager
def patched(obj, name, make):
    """Replace ``obj.name`` by ``make(original)`` for the duration of the block."""
    orig = getattr(obj, name)
    setattr(obj, name, make(orig))
    try:
        yield orig
    finally:
        setattr(obj, name, orig)


def caller_locals(depth: int = 2) -> dict:
    """The local variables of the frame ``depth`` levels up (the library's update)."""
    return sys._getframe(depth).f_locals


def call_keeping_return_locals(fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` and the locals of its frame when it returns (CG's final residual)."""
    code = getattr(fn, "__func__", fn).__code__
    captured: dict = {}

    def profile(frame, event, arg):
        if event == "return" and frame.f_code is code:
            captured.update({k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in frame.f_locals.items()})

    old = sys.getprofile()
    sys.setprofile(profile)
    try:
        out = fn(*args, **kwargs)
    finally:
        sys.setprofile(old)
    return out, captured


def record_cg_step(rec, loc: dict, rr_name: str, calls: list, sign: float) -> None:
    """At CG's k-th Fisher product: ‖r_k‖ from its squared residual, and the iterate x_k (k ≥ 1)."""
    k = len(calls)
    calls.append(k)
    rec.cg(residual_norm=loc[rr_name].sqrt(), x=loc["x"].clone() if k >= 1 else None, sign=sign)


# ------------------------------------------------------------------ tianshou
def tianshou_case(kind: str, dtype: str, n: int = 256, hidden=(64, 64), seed: int = 0, max_kl: float = 0.01):
    import gymnasium as gym
    from tianshou.algorithm import TRPO
    from tianshou.algorithm.modelfree import trpo as ts_trpo
    from tianshou.algorithm.modelfree.reinforce import ProbabilisticActorPolicy
    from tianshou.algorithm.optim import AdamOptimizerFactory
    from tianshou.data import Collector, VectorReplayBuffer
    from tianshou.env import DummyVectorEnv
    from tianshou.utils.net.common import Net
    from tianshou.utils.net.continuous import ContinuousActorProbabilistic, ContinuousCritic
    from tianshou.utils.net.discrete import DiscreteActor, DiscreteCritic

    torch.manual_seed(seed)
    torch.set_default_dtype(DTYPES[dtype])
    env_id = "Pendulum-v1" if kind == "gaussian" else "CartPole-v1"
    make_env = lambda: gym.wrappers.DtypeObservation(gym.make(env_id), np.dtype(dtype))  # noqa: E731
    env = make_env()
    obs_shape, space = env.observation_space.shape, env.action_space
    envs = DummyVectorEnv([make_env])
    envs.seed(seed)
    if kind == "gaussian":
        # unbounded=True: the default max_action·tanh(mean) is not a trpo_ref policy (from_module would say so)
        actor = ContinuousActorProbabilistic(
            preprocess_net=Net(state_shape=obs_shape, hidden_sizes=hidden, activation=torch.nn.Tanh),
            action_shape=space.shape, unbounded=True)
        critic = ContinuousCritic(preprocess_net=Net(state_shape=obs_shape, hidden_sizes=hidden,
                                                     activation=torch.nn.Tanh))

        def dist_fn(loc_scale):
            return torch.distributions.Independent(torch.distributions.Normal(*loc_scale), 1)
        log_std = "sigma_param"
    else:
        actor = DiscreteActor(preprocess_net=Net(state_shape=obs_shape, hidden_sizes=hidden,
                                                 activation=torch.nn.Tanh),
                              action_shape=space.n, softmax_output=False)
        critic = DiscreteCritic(preprocess_net=Net(state_shape=obs_shape, hidden_sizes=hidden,
                                                   activation=torch.nn.Tanh))

        def dist_fn(logits):
            return torch.distributions.Categorical(logits=logits)
        log_std = None
    policy = ProbabilisticActorPolicy(actor=actor, dist_fn=dist_fn, action_space=space,
                                      observation_space=env.observation_space, action_scaling=False,
                                      action_bound_method=None)
    algo = TRPO(policy=policy, critic=critic, optim=AdamOptimizerFactory(lr=1e-3), max_kl=max_kl)
    buf = VectorReplayBuffer(n, 1)
    Collector(policy, envs, buf).collect(n_step=n, reset_before_collect=True)

    bridge = from_module(actor, log_std)
    got: dict = {"rec": None}

    def wrap_returns(orig):  # the advantages before tianshou normalises them
        def f(batch, buffer, indices):
            out = orig(batch, buffer, indices)
            out.adv_raw = out.adv.clone()  # a key of the batch, so it follows the minibatch's shuffle
            return out
        return f

    def wrap_flat_grad(orig):
        def f(y, model, **kw):
            out = orig(y, model, **kw)
            rec = got["rec"]
            loc = caller_locals()
            if rec is None and "minibatch" in loc and "actor_loss" in loc:  # the first call: ∇(−L) = −g
                mb = loc["minibatch"]
                rec = got["rec"] = Recorder(bridge, mb.obs, mb.act, mb.adv_raw, mb.logp_old, preset="tianshou",
                                            config={"max_kl": max_kl}, producer=f"tianshou 2.0.1 TRPO ({kind}, {dtype})")
                rec.g(out, sign=-1)
                rec.scalars(surrogate_before=-loc["actor_loss"])
            return out
        return f

    def wrap_mvp(orig):
        def f(v, flat_kl_grad):
            loc = caller_locals()
            if "rdotr" in loc:  # called by CG (npg.py:215): ‖r_k‖² and x_k are its locals
                record_cg_step(got["rec"], loc, "rdotr", got.setdefault("calls", []), sign=-1)
            out = orig(v, flat_kl_grad)
            got["rec"].fisher(v, out, sign=-1)  # CG runs on −g: its directions are −p
            return out
        return f

    def wrap_cg(orig):
        def f(b, flat_kl_grad, nsteps=10, residual_tol=1e-10):
            x, loc = call_keeping_return_locals(orig, b, flat_kl_grad, nsteps=nsteps, residual_tol=residual_tol)
            rec = got["rec"]
            rec.cg(x=x, residual_norm=loc["new_rdotr"].sqrt(), sign=-1)
            rec.step(x=x, sign=-1, cg_converged=bool(loc["new_rdotr"] < residual_tol))  # −x is trpo_ref's x
            return x
        return f

    def wrap_kl(orig):
        def f(p, q):
            out = orig(p, q)
            loc = caller_locals()
            rec = got["rec"]
            if "new_actor_loss" in loc and rec is not None:  # a line-search try
                if not rec.tries:
                    rec.step(beta=loc["step_size"], full_step=loc["step_size"] * loc["search_direction"])
                rec.line_search_try(algo.backtrack_coeff ** len(rec.tries), kl=out.mean(),  # as trpo.py:177
                                    improvement=loc["actor_loss"] - loc["new_actor_loss"])
            return out
        return f

    with warnings.catch_warnings(), \
            patched(algo, "_add_returns_and_advantages", wrap_returns), \
            patched(algo, "_get_flat_grad", wrap_flat_grad), patched(algo, "_MVP", wrap_mvp), \
            patched(algo, "_conjugate_gradients", wrap_cg), patched(ts_trpo, "kl_divergence", wrap_kl):
        warnings.simplefilter("ignore")
        from tianshou.utils.torch_utils import policy_within_training_step

        with policy_within_training_step(policy):
            algo.update(buffer=buf, batch_size=None, repeat=1)
    rec = got["rec"]
    rec.theta_new()
    torch.set_default_dtype(torch.float32)
    return rec


# ---------------------------------------------------------------------- skrl
def skrl_case(kind: str, dtype: str, n: int = 256, hidden=(64, 64), seed: int = 0, max_kl: float = 0.01):
    if kind != "gaussian":
        raise NotImplementedError("skrl 2.1.1's TRPO supports Gaussian policies only")
    import gymnasium as gym
    from skrl.agents.torch.trpo import TRPO, TRPO_CFG
    from skrl.agents.torch.trpo import trpo as sk_trpo
    from skrl.envs.wrappers.torch import wrap_env
    from skrl.memories.torch import RandomMemory
    from skrl.models.torch import DeterministicMixin, GaussianMixin, Model

    torch.manual_seed(seed)
    dt = DTYPES[dtype]
    torch.set_default_dtype(dt)
    base = gym.wrappers.DtypeObservation(gym.make("Pendulum-v1"), np.dtype(dtype))
    base.reset(seed=seed)  # seeds the environment's generator; skrl's reset() takes no seed
    env = wrap_env(base, verbose=False)

    class Policy(GaussianMixin, Model):
        def __init__(self, observation_space, action_space, device):
            Model.__init__(self, observation_space=observation_space, action_space=action_space, device=device)
            GaussianMixin.__init__(self, clip_actions=False, clip_log_std=False)
            self.net = torch.nn.Sequential(torch.nn.Linear(self.num_observations, hidden[0]), torch.nn.Tanh(),
                                           torch.nn.Linear(hidden[0], hidden[1]), torch.nn.Tanh(),
                                           torch.nn.Linear(hidden[1], self.num_actions))
            self.log_std_parameter = torch.nn.Parameter(torch.zeros(self.num_actions))

        def compute(self, inputs, role):
            return self.net(inputs["observations"]), {"log_std": self.log_std_parameter}

    class Value(DeterministicMixin, Model):
        def __init__(self, observation_space, action_space, device):
            Model.__init__(self, observation_space=observation_space, action_space=action_space, device=device)
            DeterministicMixin.__init__(self)
            self.net = torch.nn.Sequential(torch.nn.Linear(self.num_observations, hidden[0]), torch.nn.Tanh(),
                                           torch.nn.Linear(hidden[0], 1))

        def compute(self, inputs, role):
            return self.net(inputs["observations"]), {}

    models = {"policy": Policy(env.observation_space, env.action_space, env.device),
              "value": Value(env.observation_space, env.action_space, env.device)}
    for m in models.values():
        m.to(dt)
    memory = RandomMemory(memory_size=n, num_envs=env.num_envs, device=env.device)
    if dt == torch.float64:  # skrl creates its memory in float32 (trpo.py:285-294); keep the rollout in float64
        create = memory.create_tensor
        memory.create_tensor = lambda **kw: create(**{**kw, "dtype": dt if kw.get("dtype") == torch.float32
                                                      else kw.get("dtype")})
    cfg = TRPO_CFG(rollouts=n, max_kl_divergence=max_kl)
    agent = TRPO(models=models, memory=memory, cfg=cfg, observation_space=env.observation_space,
                 action_space=env.action_space, device=env.device)
    agent.init()
    agent.enable_training_mode(True)
    obs, _ = env.reset()
    for t in range(n):
        with torch.no_grad():
            act = agent.act(obs.to(dt), None, timestep=t, timesteps=n)[0]
            nxt, rew, term, trunc, info = env.step(act)
            agent.record_transition(observations=obs.to(dt), states=None, actions=act, rewards=rew.to(dt),
                                    next_observations=nxt.to(dt), next_states=None, terminated=term,
                                    truncated=trunc, infos=info, timestep=t, timesteps=n)
        obs = nxt
        if (term | trunc).any():
            obs, _ = env.reset()

    pol_model = models["policy"]
    bridge = from_module(pol_model, "log_std_parameter")
    got: dict = {"rec": None}

    def wrap_gae(orig):
        def f(**kw):
            returns, adv = orig(**kw)
            got["adv_raw"] = (returns - kw["values"]).reshape(-1)  # skrl: returns = Â + V, then Â is normalised
            return returns, adv
        return f

    def wrap_surrogate(orig):
        def f(**kw):
            out = orig(**kw)
            loc = caller_locals()
            rec = got["rec"]
            if rec is None:  # L(θ_old)
                adv_raw = got["adv_raw"][memory.sampling_indexes]  # the memory is sampled in a random order
                rec = got["rec"] = Recorder(bridge, kw["observations"], kw["actions"], adv_raw, kw["log_prob"],
                                            preset="skrl", config={"max_kl": max_kl}, producer=f"skrl 2.1.1 TRPO (gaussian, {dtype})")
                rec.scalars(surrogate_before=out)
            elif "alpha" in loc:  # a try: skrl has already multiplied its expected improvement by alpha
                if not rec.tries:
                    rec.step(beta=loc["step_size"], full_step=loc["full_step"])
                rec.line_search_try(loc["alpha"], kl=loc["kl"], improvement=out - loc["policy_loss"],
                                    expected_improvement=loc["expected_improvement"])
            return out
        return f

    def wrap_cg(orig):
        def f(**kw):
            got["rec"].g(kw["b"])
            x, loc = call_keeping_return_locals(orig, **kw)
            got["rec"].cg(x=x, residual_norm=loc["rr_new"].sqrt())
            got["rec"].step(x=x, cg_converged=bool(loc["rr_new"] < 1e-10))
            return x
        return f

    def wrap_fvp(orig):
        def f(**kw):
            loc = caller_locals()
            if "rr_old" in loc:  # called by CG (trpo.py:120): ‖r_k‖² and x_k are its locals
                record_cg_step(got["rec"], loc, "rr_old", got.setdefault("calls", []), sign=1)
            out = orig(**kw)
            if got["rec"] is not None:
                got["rec"].fisher(kw["vector"], out)
            return out
        return f

    with patched(sk_trpo, "compute_gae", wrap_gae), patched(sk_trpo, "surrogate_loss", wrap_surrogate), \
            patched(sk_trpo, "conjugate_gradient", wrap_cg), patched(sk_trpo, "fisher_vector_product", wrap_fvp):
        agent.update(timestep=n, timesteps=n)
    rec = got["rec"]
    rec.theta_new()
    torch.set_default_dtype(torch.float32)
    return rec


#: library -> (case builder, policy kinds it supports, dtypes it can run in as shipped).  tianshou's MLP casts
#: observations to float32 (tianshou/utils/net/common.py:175), so its update runs in float32 only.
CASES = {"tianshou": (tianshou_case, ("gaussian", "categorical"), ("float32",)),
         "skrl": (skrl_case, ("gaussian",), ("float64", "float32"))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lib", choices=sorted(CASES), action="append", help="library (default: every installed one)")
    ap.add_argument("--dtype", choices=sorted(DTYPES), action="append", help="precision (default: both)")
    ap.add_argument("--kind", choices=("gaussian", "categorical"), action="append")
    ap.add_argument("--n", type=int, default=256, help="rollout length (default 256)")
    ap.add_argument("--max-kl", type=float, default=0.01,
                    help="δ of both the library and the preset (default 0.01; a large δ makes the line search backtrack)")
    ap.add_argument("--failures-only", action="store_true", help="print only the failing rows of each report")
    ap.add_argument("--save", help="directory to save each candidate trace in")
    args = ap.parse_args(argv)
    if args.save:
        Path(args.save).mkdir(parents=True, exist_ok=True)
    for lib in args.lib or sorted(CASES):
        try:
            __import__(lib)
        except ImportError:
            print(f"{lib}: not installed, skipped")
            continue
        make, kinds, dtypes = CASES[lib]
        for kind in [k for k in (args.kind or kinds) if k in kinds]:
            for dtype in [d for d in (args.dtype or dtypes) if d in dtypes]:
                rec = make(kind, dtype, n=args.n, max_kl=args.max_kl)
                trace = rec.trace()
                report = rec.check(drift=False)
                print(f"=== {lib} {kind} {dtype}, δ = {args.max_kl:g}: status {trace.status}, "
                      f"accepted try {int(trace['accepted_index'])}")
                print(report.to_text("failures" if args.failures_only else "all"))
                if args.save:
                    trace.save(Path(args.save) / f"{lib}-{kind}-{dtype}.npz")
    return 0


if __name__ == "__main__":
    sys.exit(main())
