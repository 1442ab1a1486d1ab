#!/usr/bin/env python
"""Export a PyTorch policy's weights and a batch for ``trpo-ref trace --weights W --batch B``.

Needs torch (``pip install 'trpo-ref[torch]'``; ``.safetensors`` output also
needs the ``interop`` extra).  Three sources of a policy:

* ``--model sb3``: an MLP built like SB3's MlpPolicy (``mlp_extractor.policy_net``,
  ``action_net``, ``log_std``, plus the value head that trpo_ref ignores);
* ``--model cleanrl``: an agent built like CleanRL's PPO (``actor_mean`` /
  ``actor``, ``actor_logstd``, ``critic``);
* ``--sb3-zip FILE``: a saved SB3 / SB3-contrib model (needs stable_baselines3;
  the batch is then sampled from that model's policy).

The batch holds observations (N(0, I), or from ``--obs FILE.npy``), actions
sampled from the policy, their log-probabilities ``logp_old`` as the policy
computes them, and advantages (N(0, 1)·1.5 + 0.5, or ``--adv FILE.npy``).
In your own code, replace the advantages with yours; everything else should
come from the policy, exactly as at sampling time.

    python scripts/export_torch_policy.py --model sb3 --kind gaussian -o weights.safetensors --batch batch.npz
    trpo-ref trace --weights weights.safetensors --batch batch.npz --preset sb3-contrib -o ref.npz
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

try:
    import torch
    from torch import nn
except ImportError:  # pragma: no cover - the script is only useful with torch
    sys.exit("export_torch_policy.py needs torch: pip install 'trpo-ref[torch]'")


def _mlp(sizes, activation=nn.Tanh):
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)


class SB3LikePolicy(nn.Module):
    """Parameter names and shapes of SB3's ``ActorCriticPolicy`` with an MLP extractor."""

    def __init__(self, obs_dim, out_dim, hidden=(64, 64), kind="gaussian"):
        super().__init__()
        self.kind = kind
        self.mlp_extractor = nn.Module()
        self.mlp_extractor.policy_net = _mlp((obs_dim, *hidden)) if hidden else nn.Sequential()
        if hidden:  # SB3 ends the extractor with an activation
            self.mlp_extractor.policy_net.append(nn.Tanh())
        self.mlp_extractor.value_net = nn.Sequential(*_mlp((obs_dim, *hidden)), nn.Tanh()) if hidden else nn.Sequential()
        last = hidden[-1] if hidden else obs_dim
        self.action_net = nn.Linear(last, out_dim)
        self.value_net = nn.Linear(last, 1)
        if kind == "gaussian":
            self.log_std = nn.Parameter(torch.zeros(out_dim))

    def distribution(self, obs):
        out = self.action_net(self.mlp_extractor.policy_net(obs))
        if self.kind == "gaussian":
            return torch.distributions.Independent(torch.distributions.Normal(out, self.log_std.exp()), 1)
        return torch.distributions.Categorical(logits=out)


class CleanRLLikeAgent(nn.Module):
    """Parameter names and shapes of CleanRL's ``ppo_continuous_action`` / ``ppo`` agents."""

    def __init__(self, obs_dim, out_dim, hidden=(64, 64), kind="gaussian"):
        super().__init__()
        self.kind = kind
        self.critic = _mlp((obs_dim, *hidden, 1))
        if kind == "gaussian":
            self.actor_mean = _mlp((obs_dim, *hidden, out_dim))
            self.actor_logstd = nn.Parameter(torch.zeros(1, out_dim))
        else:
            self.actor = _mlp((obs_dim, *hidden, out_dim))

    def distribution(self, obs):
        if self.kind == "gaussian":
            mean = self.actor_mean(obs)
            std = self.actor_logstd.expand_as(mean).exp()
            return torch.distributions.Independent(torch.distributions.Normal(mean, std), 1)
        return torch.distributions.Categorical(logits=self.actor(obs))


def build(model: str, kind: str, obs_dim: int, out_dim: int, hidden, seed: int = 0, dtype=torch.float64):
    """A randomly initialised SB3-like or CleanRL-like policy (log σ moved off 0 so it matters)."""
    torch.manual_seed(seed)
    cls = {"sb3": SB3LikePolicy, "cleanrl": CleanRLLikeAgent}[model]
    module = cls(obs_dim, out_dim, tuple(hidden), kind).to(dtype)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "logstd" in name or "log_std" in name:
                p.copy_(0.3 * torch.randn_like(p))
    return module


def sample_batch(distribution, obs: np.ndarray, adv: np.ndarray | None = None, seed: int = 0, dtype=torch.float64):
    """obs, actions sampled from ``distribution(obs_t)``, their log-probs, advantages."""
    gen = torch.Generator().manual_seed(seed)
    obs_t = torch.as_tensor(obs, dtype=dtype)
    with torch.no_grad():
        dist = distribution(obs_t)
        torch.manual_seed(seed)
        act = dist.sample()
        logp = dist.log_prob(act)
    if adv is None:
        adv = (1.5 * torch.randn(obs.shape[0], generator=gen, dtype=dtype) + 0.5).numpy()
    return {"obs": obs, "act": act.numpy(), "adv": np.asarray(adv), "logp_old": logp.numpy()}


def state_dict_numpy(module) -> dict[str, np.ndarray]:
    """A module's state_dict as NumPy arrays (what trpo_ref.interop reads)."""
    return {k: v.detach().cpu().numpy().copy() for k, v in module.state_dict().items()}


def write(path, arrays: dict[str, np.ndarray]) -> Path:
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.numpy import save_file

        save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(path))
    else:
        with open(path, "wb") as fh:
            np.savez(fh, **arrays)
    return path


def load_sb3_zip(path):  # pragma: no cover - needs stable_baselines3
    """``(state_dict, distribution(obs_t))`` of a saved SB3 / SB3-contrib model."""
    try:
        from stable_baselines3.common.base_class import BaseAlgorithm  # noqa: F401
    except ImportError:
        sys.exit("--sb3-zip needs stable_baselines3 (pip install stable-baselines3 sb3-contrib)")
    model = None
    errors = []
    for modname, clsname in (("sb3_contrib", "TRPO"), ("stable_baselines3", "PPO"), ("stable_baselines3", "A2C")):
        try:
            mod = __import__(modname, fromlist=[clsname])
            model = getattr(mod, clsname).load(path, device="cpu")
            break
        except Exception as exc:  # noqa: BLE001 - try the next algorithm class
            errors.append(f"{clsname}: {exc}")
    if model is None:
        sys.exit(f"could not load {path}: " + "; ".join(errors))
    policy = model.policy.to(torch.float64)

    def distribution(obs_t):
        return policy.get_distribution(obs_t).distribution

    return state_dict_numpy(policy), distribution, int(np.prod(model.observation_space.shape))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--model", choices=("sb3", "cleanrl"), default="sb3", help="layout of a fresh torch policy")
    src.add_argument("--sb3-zip", help="a saved SB3 / SB3-contrib model instead of a fresh policy")
    ap.add_argument("--kind", choices=("gaussian", "categorical"), default="gaussian")
    ap.add_argument("--obs-dim", type=int, default=4)
    ap.add_argument("--act-dim", type=int, default=2, help="action dimension or number of actions")
    ap.add_argument("--hidden", default="64,64", help="hidden sizes (default 64,64)")
    ap.add_argument("--n", type=int, default=256, help="batch size")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--obs", help="observations (.npy, N x obs_dim) instead of N(0, I)")
    ap.add_argument("--adv", help="advantages (.npy, N) instead of random ones")
    ap.add_argument("-o", "--weights", required=True, help="weights file (.safetensors or .npz)")
    ap.add_argument("--batch", required=True, help="batch file (.npz)")
    args = ap.parse_args(argv)
    adv = np.load(args.adv, allow_pickle=False) if args.adv else None
    if args.sb3_zip:
        sd, distribution, obs_dim = load_sb3_zip(args.sb3_zip)
    else:
        hidden = tuple(int(h) for h in args.hidden.split(",") if h)
        module = build(args.model, args.kind, args.obs_dim, args.act_dim, hidden, args.seed)
        sd, distribution, obs_dim = state_dict_numpy(module), module.distribution, args.obs_dim
    if args.obs:
        obs = np.load(args.obs, allow_pickle=False).astype(np.float64)
    else:
        obs = np.random.default_rng(args.seed).standard_normal((args.n, obs_dim))
    batch = sample_batch(distribution, obs, adv, args.seed)
    write(args.weights, sd)
    write(args.batch, batch)
    print(f"wrote {args.weights} ({len(sd)} tensors) and {args.batch} (N = {obs.shape[0]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
