"""Autodiff cross-check: trpo_ref's hand-written derivatives against PyTorch (float64).

The network is rebuilt in torch from ``policy.unflatten(theta)`` (``x @ W + b``
with W of shape (in, out), i.e. ``nn.Linear.weight = W.T``), and torch's own
distributions and autograd give log-probs, KL, the KL and surrogate gradients
and the Fisher-vector product by double back-propagation (the Hessian of
KL(π_old ‖ π_θ) at θ = θ_old, π_old detached).  Agreement is required to
1e-10 relative (norm-wise): both sides compute the same sums in float64 in a
different order, so they differ by a few ulps times the depth of the
computation (observed ≤ 1e-14); 1e-10 leaves a wide margin while any
derivative bug (a missing factor, a transposed weight, a dropped term) is
O(1).  Skipped without torch (the ``torch`` extra; CI installs it).
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (pip install 'trpo-ref[torch]')")

from trpo_ref.trace import synthetic_case  # noqa: E402

RTOL = 1e-10  # see module docstring


def close(ours, theirs, rtol=RTOL, atol=1e-14):
    """Norm-wise: max|ours - theirs| <= atol + rtol * max|theirs| (theirs = torch = the reference)."""
    ours = np.asarray(ours, dtype=np.float64)
    theirs = theirs.detach().numpy() if isinstance(theirs, torch.Tensor) else np.asarray(theirs)
    assert ours.shape == theirs.shape
    err = np.abs(ours - theirs).max() if ours.size else 0.0
    assert err <= atol + rtol * np.abs(theirs).max(), f"max abs err {err:.3e}, scale {np.abs(theirs).max():.3e}"


def torch_dist(policy, theta_t, obs_t):
    """torch distribution of π_θ(·|s) built from the flat θ in trpo_ref's layout."""
    h = obs_t
    shapes = policy.param_shapes()
    pos = 0
    params = {}
    for name, shape in shapes.items():
        size = int(np.prod(shape))
        params[name] = theta_t[pos:pos + size].reshape(shape)
        pos += size
    n_layers = policy.mlp.n_layers
    act = torch.tanh if policy.activation == "tanh" else torch.relu
    for l in range(n_layers):
        h = h @ params[f"W{l}"] + params[f"b{l}"]
        if l < n_layers - 1:
            h = act(h)
    if policy.kind == "gaussian":
        return torch.distributions.Independent(torch.distributions.Normal(h, params["log_std"].exp()), 1)
    if policy.kind == "multicategorical":
        parts, o = [], 0
        for k in policy.nvec:
            parts.append(torch.distributions.Categorical(logits=h[:, o:o + k]))
            o += k
        return Product(parts)
    if policy.kind == "bernoulli":
        return Product([torch.distributions.Bernoulli(logits=h[:, i]) for i in range(policy.n)])
    return torch.distributions.Categorical(logits=h)


class Product:
    """Independent torch distributions, one per action column (MultiDiscrete / MultiBinary)."""

    def __init__(self, parts):
        self.parts = parts

    def log_prob(self, act):
        return sum(d.log_prob(act[:, i].to(d.logits.dtype) if isinstance(d, torch.distributions.Bernoulli)
                              else act[:, i]) for i, d in enumerate(self.parts))

    def entropy(self):
        return sum(d.entropy() for d in self.parts)


def kl_divergence(p, q):
    """torch's KL, summed over the columns of a :class:`Product`."""
    if isinstance(p, Product):
        return sum(torch.distributions.kl_divergence(a, b) for a, b in zip(p.parts, q.parts))
    return torch.distributions.kl_divergence(p, q)


def torch_linear_stack(policy, theta):
    """The same network as torch.nn.Linear layers (weight = W.T) -> outputs, to pin the layout."""
    named = policy.unflatten(theta)
    layers = []
    for l in range(policy.mlp.n_layers):
        W = np.asarray(named[f"W{l}"])
        lin = torch.nn.Linear(W.shape[0], W.shape[1], dtype=torch.float64)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(W.T.copy()))
            lin.bias.copy_(torch.from_numpy(np.asarray(named[f"b{l}"]).copy()))
        layers.append(lin)
        if l < policy.mlp.n_layers - 1:
            layers.append(torch.nn.Tanh() if policy.activation == "tanh" else torch.nn.ReLU())
    return torch.nn.Sequential(*layers)


CASES = [
    ("gaussian", (8,), "tanh"),
    ("gaussian", (16, 12), "relu"),
    ("gaussian", (), "tanh"),
    ("categorical", (8, 8), "tanh"),
    ("categorical", (10,), "relu"),
    ("multicategorical", (8, 8), "tanh"),
    ("multicategorical", (6,), "relu"),
    ("bernoulli", (8, 8), "tanh"),
    ("bernoulli", (6,), "relu"),
]


@pytest.fixture(params=CASES, ids=[f"{k}-{'x'.join(map(str, h)) or 'linear'}-{a}" for k, h, a in CASES])
def case(request):
    kind, hidden, activation = request.param
    policy, theta, batch = synthetic_case(kind, 7, n=40, obs_dim=5, act_dim=3, hidden_sizes=hidden,
                                          activation=activation)
    rng = np.random.default_rng(1)
    theta_new = theta + 0.05 * rng.standard_normal(theta.shape)
    return policy, theta, theta_new, batch, rng


def test_layout__nn_linear_with_weight_WT_gives_the_same_network(case):
    policy, theta, _, batch, _ = case
    net = torch_linear_stack(policy, theta)
    out = net(torch.from_numpy(batch.obs))
    ours, _ = policy.mlp.forward(theta[: policy.mlp.num_params], batch.obs)
    close(ours, out)


def test_log_prob__matches_torch(case):
    policy, theta, theta_new, batch, _ = case
    act_t = torch.from_numpy(np.asarray(batch.act))
    for th in (theta, theta_new):
        d = torch_dist(policy, torch.from_numpy(th), torch.from_numpy(batch.obs))
        close(policy.log_prob(th, batch.obs, batch.act), d.log_prob(act_t))
        close(policy.entropy(th, batch.obs), d.entropy().mean())


@pytest.mark.parametrize("reverse", [False, True], ids=["old_new", "new_old"])
def test_kl_and_its_gradient__match_torch(case, reverse):
    policy, theta, theta_new, batch, _ = case
    obs_t = torch.from_numpy(batch.obs)
    th_t = torch.from_numpy(theta_new).requires_grad_(True)
    old = torch_dist(policy, torch.from_numpy(theta), obs_t)
    new = torch_dist(policy, th_t, obs_t)
    kl = (kl_divergence(new, old) if reverse else kl_divergence(old, new)).mean()
    (grad,) = torch.autograd.grad(kl, th_t)
    close(policy.kl(theta, theta_new, batch.obs, reverse=reverse), kl)
    close(policy.kl_grad(theta, theta_new, batch.obs, reverse=reverse), grad)


def test_surrogate_and_its_gradient__match_torch(case):
    policy, theta, theta_new, batch, _ = case
    th_t = torch.from_numpy(theta_new).requires_grad_(True)
    d = torch_dist(policy, th_t, torch.from_numpy(batch.obs))
    ratio = torch.exp(d.log_prob(torch.from_numpy(np.asarray(batch.act))) - torch.from_numpy(batch.logp_old))
    surr = (ratio * torch.from_numpy(batch.adv)).mean()
    (grad,) = torch.autograd.grad(surr, th_t)
    args = (batch.obs, batch.act, batch.adv, batch.logp_old)
    close(policy.surrogate(theta_new, *args), surr)
    close(policy.surrogate_grad(theta_new, *args), grad)


@pytest.mark.parametrize("reverse", [False, True], ids=["old_new", "new_old"])
def test_fisher_vector_product__matches_double_backprop(case, reverse):
    # F v = ∇_θ (∇_θ KL(π_old ‖ π_θ) · v) at θ = θ_old, with π_old a detached copy; the
    # Hessian of KL(π_θ ‖ π_old) is the same matrix at θ_old (both directions checked).
    policy, theta, _, batch, rng = case
    obs_t = torch.from_numpy(batch.obs)
    th_t = torch.from_numpy(theta.copy()).requires_grad_(True)
    old = torch_dist(policy, torch.from_numpy(theta), obs_t)  # detached: built from a constant
    new = torch_dist(policy, th_t, obs_t)
    kl = (kl_divergence(new, old) if reverse else kl_divergence(old, new)).mean()
    (g,) = torch.autograd.grad(kl, th_t, create_graph=True)
    for _ in range(2):
        v = rng.standard_normal(theta.shape)
        (fv,) = torch.autograd.grad(g @ torch.from_numpy(v), th_t, retain_graph=True)
        close(policy.fisher_vector_product(theta, batch.obs, v), fv)
        close(policy.fisher_vector_product(theta, batch.obs, v, damping=0.1), fv + 0.1 * torch.from_numpy(v))


def test_fisher_vector_product__not_detaching_pi_old_gives_zero():
    # The planted "FVP of zero" bug, reproduced in torch: KL(π_θ ‖ π_θ) ≡ 0, so is its Hessian.
    policy, theta, batch = synthetic_case("gaussian", 0, n=16, obs_dim=3, act_dim=2, hidden_sizes=(4,))
    th_t = torch.from_numpy(theta.copy()).requires_grad_(True)
    obs_t = torch.from_numpy(batch.obs)
    d = torch_dist(policy, th_t, obs_t)
    kl = torch.distributions.kl_divergence(d, d).mean()
    (g,) = torch.autograd.grad(kl, th_t, create_graph=True)
    v = torch.ones_like(th_t)
    (fv,) = torch.autograd.grad(g @ v, th_t, allow_unused=True)
    assert fv is None or float(fv.abs().max()) == 0.0
    assert np.abs(policy.fisher_vector_product(theta, batch.obs, np.ones_like(theta))).max() > 0.1

