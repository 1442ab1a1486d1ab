"""trpo_ref.testing: the conformance assertions pass on correct torch code, fail on wrong code, and say where."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from torch.distributions import Bernoulli, Categorical, Independent, Normal, kl_divergence  # noqa: E402

from trpo_ref.oracle import candidate_update, realistic_case, synthetic_case  # noqa: E402
from trpo_ref.testing import (assert_fvp_matches, assert_kl_matches, assert_policy_gradient_matches,  # noqa: E402
                              assert_update_matches, batches, torch_actors)
from trpo_ref.torch import from_module, to_module  # noqa: E402


def _params(actor, log_std):
    return list(actor.parameters()) + ([log_std] if log_std is not None else [])


def _dist(actor, log_std, obs):
    out = actor(obs)
    return Independent(Normal(out, log_std.exp()), 1) if log_std is not None else Categorical(logits=out)


def torch_fvp(actor, log_std, obs, damping=0.0, detach_old=True):
    """(F + λI)v by double back-propagation of the mean KL(π_old ‖ π_θ)."""
    params = _params(actor, log_std)
    if detach_old:
        with torch.no_grad():
            old = _dist(actor, log_std, obs)
    else:
        old = _dist(actor, log_std, obs)
    kl = kl_divergence(old, _dist(actor, log_std, obs)).mean()
    grad = torch.cat([g.reshape(-1) for g in torch.autograd.grad(kl, params, create_graph=True)])
    return lambda v: torch.cat([h.reshape(-1) for h in torch.autograd.grad(grad @ v, params, retain_graph=True)]) \
        + damping * v


def _case(kind="gaussian", dtype=torch.float64, seed=0, n=40):
    pol, theta, batch = synthetic_case(kind, seed, n=n, obs_dim=3, act_dim=2 if kind == "gaussian" else 3,
                                       hidden_sizes=(6, 5))
    actor, log_std = to_module(pol, theta, dtype=dtype)
    return actor, log_std, torch.as_tensor(batch.obs, dtype=dtype), batch


# ------------------------------------------------------------------ worked examples
@pytest.mark.parametrize("kind", ["gaussian", "categorical"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_assert_fvp_matches__silent_on_a_correct_torch_fvp(kind, dtype):
    actor, log_std, obs, _ = _case(kind, dtype)
    assert assert_fvp_matches(torch_fvp(actor, log_std, obs, 0.1), actor, obs, log_std=log_std, damping=0.1) is None


def test_assert_fvp_matches__names_the_worst_block_with_numbers():
    actor, log_std, obs, _ = _case("gaussian")
    bridge = from_module(actor, log_std)
    P = bridge.num_params
    good = torch_fvp(actor, log_std, obs, 0.1)
    k = bridge.from_theta(np.eye(P)[P - 1]).argmax().item()  # module position of θ's last entry, log_std[1]

    def wrong(v):
        out = good(v).clone()
        out[k] += 1e-3 * out.abs().max()
        return out

    with pytest.raises(AssertionError) as err:
        assert_fvp_matches(wrong, actor, obs, log_std=log_std, damping=0.1)
    msg = str(err.value)
    assert "worst at log_std[1]: yours" in msg and "trpo_ref" in msg and "rtol 1e-10" in msg
    assert "max abs err per block: W0 " in msg and msg.endswith("log_std 2.5e-03")  # the planted 1e-3·max|Fv|


@pytest.mark.parametrize("bug", ["no_damping", "old_not_detached", "relative_1e-8"])
def test_assert_fvp_matches__catches_wrong_fvps(bug):
    actor, log_std, obs, _ = _case("gaussian")
    if bug == "no_damping":
        fvp = torch_fvp(actor, log_std, obs, 0.0)
    elif bug == "old_not_detached":  # KL(π_θ ‖ π_θ) ≡ 0: the FVP is 0 (+ damping)
        fvp = torch_fvp(actor, log_std, obs, 0.1, detach_old=False)
    else:  # a relative error of 1e-8: far above float64 rounding (1.2e-15 measured), below any plot's resolution
        good = torch_fvp(actor, log_std, obs, 0.1)
        fvp = lambda v: good(v) * (1 + 1e-8)  # noqa: E731
    with pytest.raises(AssertionError, match="Fisher-vector products"):
        assert_fvp_matches(fvp, actor, obs, log_std=log_std, damping=0.1)


def test_assert_fvp_matches__mean_reduction_and_sign():
    actor, log_std, obs, _ = _case("gaussian")
    good = torch_fvp(actor, log_std, obs, 0.0)
    assert_fvp_matches(lambda v: good(v) / 2 + 0.05 * v, actor, obs, log_std=log_std, damping=0.05,
                       kl_action_reduction="mean")  # SB3: F/A with A = 2
    assert_fvp_matches(lambda v: -good(v), actor, obs, log_std=log_std, sign=-1)
    with pytest.raises(AssertionError):
        assert_fvp_matches(good, actor, obs, log_std=log_std, kl_action_reduction="mean")


def _functional_kl(actor, log_std, obs, reverse=False):
    """KL between the actor now and the actor at a flat vector (module order), differentiable in the vector."""
    bridge = from_module(actor, log_std)
    with torch.no_grad():
        old = _dist(actor, log_std, obs)
    names = bridge.names

    def kl_fn(vec):
        pos, params = 0, {}
        for name, p in zip(names, _params(actor, log_std)):
            params[name] = vec[pos:pos + p.numel()].reshape(p.shape)
            pos += p.numel()
        out = torch.func.functional_call(actor, {k: v for k, v in params.items() if k != "log_std"}, (obs,))
        new = Independent(Normal(out, params["log_std"].exp()), 1) if log_std is not None else Categorical(logits=out)
        return (kl_divergence(new, old) if reverse else kl_divergence(old, new)).mean()

    return kl_fn


@pytest.mark.parametrize("kind", ["gaussian", "categorical"])
def test_assert_kl_matches__values_and_gradients_and_direction(kind):
    actor, log_std, obs, _ = _case(kind)
    assert_kl_matches(_functional_kl(actor, log_std, obs), actor, obs, log_std=log_std)
    assert_kl_matches(_functional_kl(actor, log_std, obs, reverse=True), actor, obs, log_std=log_std,
                      direction="new_old")
    with pytest.raises(AssertionError, match=r"KL values differ from trpo_ref's \(old_new, at θ_old \+ 0.05·u_1\)"):
        assert_kl_matches(_functional_kl(actor, log_std, obs, reverse=True), actor, obs, log_std=log_std)


def test_assert_kl_matches__wrong_gradient_names_a_block():
    actor, log_std, obs, _ = _case("gaussian")
    kl = _functional_kl(actor, log_std, obs)
    # value right, gradient through log σ wrong (σ detached in the new policy)
    n_mlp = from_module(actor, log_std).num_params - 2

    def bad(vec):
        return kl(torch.cat([vec[:n_mlp], vec[n_mlp:].detach()]))

    with pytest.raises(AssertionError, match=r"KL gradients differ.*\n worst at log_std\[\d\]"):
        assert_kl_matches(bad, actor, obs, log_std=log_std)


def test_assert_policy_gradient_matches__normalised_advantages_and_sign():
    actor, log_std, obs, batch = _case("gaussian")
    adv = torch.as_tensor(batch.adv)
    adv_n = (adv - adv.mean()) / adv.std()
    act, logp_old = torch.as_tensor(batch.act), torch.as_tensor(batch.logp_old)
    params = _params(actor, log_std)
    loss = -((_dist(actor, log_std, obs).log_prob(act) - logp_old).exp() * adv_n).mean()
    grad = torch.autograd.grad(loss, params)  # a list of per-parameter tensors is accepted
    assert_policy_gradient_matches(grad, actor, obs, act, adv_n, logp_old, log_std=log_std, sign=-1)
    with pytest.raises(AssertionError, match="Policy gradients g differ"):
        assert_policy_gradient_matches(grad, actor, obs, act, adv, logp_old, log_std=log_std, sign=-1)  # raw Â
    with pytest.raises(AssertionError, match="Policy gradients g differ"):
        assert_policy_gradient_matches(grad, actor, obs, act, adv_n, logp_old, log_std=log_std)  # sign forgotten


def test_assert_update_matches__passes_a_correct_trace_and_reports_a_planted_bug():
    pol, theta, batch, cfg = realistic_case("categorical", n=128, hidden_sizes=(16, 16))
    assert_update_matches(candidate_update(pol, theta, batch, cfg, permute_seed=1))
    with pytest.raises(AssertionError, match="first: beta"):
        assert_update_matches(candidate_update(pol, theta, batch, cfg, bug="beta_without_factor_2"))


# ------------------------------------------------------------------ properties
@settings(max_examples=20, deadline=None)
@given(torch_actors(), st.data())
def test_assert_fvp_matches__on_random_policies_and_batches(actor_log_std, data):
    actor, log_std = actor_log_std
    bridge = from_module(actor, log_std)
    batch = data.draw(batches(bridge.policy, bridge.theta, max_n=24))
    obs = torch.as_tensor(batch.obs)
    assert_fvp_matches(torch_fvp(actor, log_std, obs, 0.1), actor, obs, log_std=log_std, damping=0.1, n_vectors=1)


@settings(max_examples=10, deadline=None)
@given(torch_actors(dtype="float32"))
def test_assert_fvp_matches__float32_actors(actor_log_std):
    actor, log_std = actor_log_std
    obs = torch.as_tensor(np.random.default_rng(0).standard_normal((16, actor[0].in_features)), dtype=torch.float32)
    assert_fvp_matches(torch_fvp(actor, log_std, obs, 0.1), actor, obs, log_std=log_std, damping=0.1, n_vectors=1)


@pytest.mark.parametrize("head", ["bernoulli", "multicategorical"])
def test_assert_fvp_and_gradient__multibinary_and_multidiscrete_heads(head):
    torch.manual_seed(0)
    nvec = (2, 3)
    actor = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 5)).double()
    params = list(actor.parameters())
    obs = torch.randn(50, 3, dtype=torch.float64)

    def parts(out):  # one torch distribution per independent piece of the action
        if head == "bernoulli":
            return [Independent(Bernoulli(logits=out), 1)]
        return [Categorical(logits=out[:, :2]), Categorical(logits=out[:, 2:])]

    with torch.no_grad():
        old_out = actor(obs)
    kl = sum(kl_divergence(p, q) for p, q in zip(parts(old_out), parts(actor(obs)))).mean()
    grad = torch.cat([g.reshape(-1) for g in torch.autograd.grad(kl, params, create_graph=True)])
    fvp = lambda v: torch.cat([h.reshape(-1) for h in torch.autograd.grad(grad @ v, params,  # noqa: E731
                                                                           retain_graph=True)])
    bridge = from_module(actor, head=head, nvec=nvec if head == "multicategorical" else None)
    assert_fvp_matches(fvp, bridge, obs)
    with pytest.raises(AssertionError, match="Fisher-vector products"):
        assert_fvp_matches(lambda v: fvp(v) * (1 + 1e-6), bridge, obs)
    with torch.no_grad():
        act = torch.stack([p.sample() for p in parts(old_out)], -1) if head != "bernoulli" \
            else parts(old_out)[0].sample()
    def logp(out):
        return parts(out)[0].log_prob(act) if head == "bernoulli" else \
            sum(p.log_prob(act[:, i]) for i, p in enumerate(parts(out)))
    logp_old, adv = logp(old_out), torch.randn(50, dtype=torch.float64)
    g = torch.autograd.grad(((logp(actor(obs)) - logp_old).exp() * adv).mean(), params)
    assert_policy_gradient_matches(g, bridge, obs, act, adv, logp_old)
