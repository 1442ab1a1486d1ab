"""trpo_ref.torch: the bridge from a torch actor to a trpo_ref policy, and the Recorder of a torch update.

Sections: worked examples (layouts, errors); hypothesis properties (round trips,
forward agreement); a whole torch TRPO update recorded and checked stage-wise,
correct and with planted bugs.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from hypothesis import given, settings  # noqa: E402
from torch import nn  # noqa: E402
from torch.distributions import Bernoulli, Categorical, Independent, Normal, kl_divergence  # noqa: E402
from torch.nn.utils import parameters_to_vector, vector_to_parameters  # noqa: E402

import trpo_ref as tr  # noqa: E402
from trpo_ref.oracle import check_trace  # noqa: E402
from trpo_ref.testing import policies  # noqa: E402
from trpo_ref.torch import Recorder, from_module, to_module  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------ worked examples
def test_import_trpo_ref__does_not_import_torch():
    code = ("import sys, trpo_ref, trpo_ref.oracle, trpo_ref.testing, trpo_ref.trace_cli; "
            "assert 'torch' not in sys.modules, 'torch imported'; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_from_module__layout_of_a_small_actor_by_hand():
    actor = nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 1)).double()
    log_std = nn.Parameter(torch.tensor([-0.5], dtype=torch.float64))
    vec = torch.arange(2 * 3 + 3 + 3 + 1 + 1, dtype=torch.float64)  # module order: W0ᵀ (3,2), b0, W1ᵀ (1,3), b1, log_std
    bridge = from_module(actor, log_std)
    theta = bridge.to_theta(vec)
    named = bridge.policy.unflatten(theta)
    # torch weight[o, i] is W[i, o]: module entries 0..5 are weight rows (o = 0: 0, 1; o = 1: 2, 3; o = 2: 4, 5)
    np.testing.assert_array_equal(named["W0"], [[0, 2, 4], [1, 3, 5]])
    np.testing.assert_array_equal(named["b0"], [6, 7, 8])
    np.testing.assert_array_equal(named["W1"], [[9], [10], [11]])
    np.testing.assert_array_equal(named["b1"], [12])
    np.testing.assert_array_equal(named["log_std"], [13])
    assert torch.equal(bridge.from_theta(theta), vec)
    assert bridge.where(1) == "W0[0,1]" and bridge.where(13) == "log_std[0]"


class _SigmaFirst(nn.Module):
    """tianshou/skrl style: the log σ parameter is registered on the wrapper, so parameters() yields it first."""

    def __init__(self, obs_dim, act_dim, shape):
        super().__init__()
        self.sigma_param = nn.Parameter(torch.linspace(-1.0, 0.0, act_dim).reshape(shape).double())
        self.body = nn.Module()
        self.body.net = nn.Sequential(nn.Linear(obs_dim, 5), nn.ReLU(), nn.Linear(5, 5), nn.ReLU()).double()
        self.mu = nn.Linear(5, act_dim).double()

    def forward(self, obs):
        return self.mu(self.body.net(obs))


@pytest.mark.parametrize("shape", [(2,), (1, 2), (2, 1)])
def test_from_module__log_std_registered_first_and_any_singleton_shape(shape):
    actor = _SigmaFirst(3, 2, shape)
    bridge = from_module(actor, "sigma_param")
    assert bridge.names[0] == "sigma_param" and bridge.policy.activation == "relu"
    vec = parameters_to_vector(actor.parameters())  # σ first, as the library's own flat vectors are
    theta = bridge.to_theta(vec)
    np.testing.assert_array_equal(theta[-2:], [-1.0, 0.0])
    obs = np.random.default_rng(0).standard_normal((6, 3))
    (mean, log_std), _ = bridge.policy._dist(theta, obs)
    np.testing.assert_allclose(mean, actor(torch.as_tensor(obs)).detach().numpy(), rtol=1e-13, atol=1e-15)
    assert torch.equal(bridge.from_theta(theta), vec)


@pytest.mark.parametrize("build, log_std, message", [
    (lambda: nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2), nn.Tanh()), True,
     r"module '3' \(Tanh\) follows the last Linear: a squashed output"),
    (lambda: nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Tanh(), nn.Linear(4, 2)), True,
     r"cannot express module '1' \(LayerNorm\)"),
    (lambda: nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)), True,
     r"module '3' \(ReLU\) mixes activations"),
    (lambda: nn.Sequential(nn.Linear(3, 4, bias=False), nn.Tanh(), nn.Linear(4, 2)), True,
     r"module '0' \(Linear\) has no bias"),
    (lambda: nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.1), nn.Tanh(), nn.Linear(4, 2)), True,
     r"module '1' \(Dropout\) is in training mode"),
    (lambda: nn.ModuleDict({"mu": nn.Linear(3, 2), "sigma": nn.Linear(3, 2)}), True,
     r"module 'sigma' \(Linear\) follows 'mu' with no activation between them: a second output head"),
    (lambda: nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)), False, None),
])
def test_from_module__one_line_error_naming_the_first_module(build, log_std, message):
    actor = build().double()
    ls = nn.Parameter(torch.zeros(2, dtype=torch.float64)) if log_std else None
    if message is None:
        assert from_module(actor, ls).policy.kind == "categorical"
        return
    with pytest.raises(ValueError, match=message) as err:
        from_module(actor, ls)
    assert "\n" not in str(err.value)


class _SquashedInForward(nn.Module):
    """tianshou's default continuous actor in miniature: the squashing is code in forward(), not a module."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 2)).double()

    def forward(self, obs, state=None):
        return (2.0 * torch.tanh(self.net(obs)), torch.ones(obs.shape[0], 2)), state


def test_from_module__a_transformation_inside_forward_is_caught_by_the_probe():
    ls = nn.Parameter(torch.zeros(2, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"_SquashedInForward.forward returns something other than its Linear chain"):
        from_module(_SquashedInForward(), ls)
    assert from_module(_SquashedInForward(), ls, check_forward=False).policy.kind == "gaussian"
    softmax = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3), nn.Softmax(dim=-1)).double()
    with pytest.raises(ValueError, match=r"cannot express module '3' \(Softmax\)"):
        from_module(softmax)


def test_from_module__multidiscrete_and_multibinary_heads():
    actor = nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 5)).double()
    assert from_module(actor).policy.kind == "categorical"                       # the default without log_std
    assert from_module(actor, head="bernoulli").policy.n == 5
    multi = from_module(actor, head="multicategorical", nvec=[2, 3]).policy
    assert multi.kind == "multicategorical" and list(multi.nvec) == [2, 3]
    with pytest.raises(ValueError, match=r"needs nvec with sum 5"):
        from_module(actor, head="multicategorical", nvec=[2, 2])
    with pytest.raises(ValueError, match="log_std was given but head is 'bernoulli'"):
        from_module(actor, torch.zeros(5, dtype=torch.float64), head="bernoulli")
    with pytest.raises(ValueError, match="a Gaussian head needs log_std"):
        from_module(actor, head="gaussian")


def test_from_module__stray_parameter_is_named_with_a_hint():
    actor = _SigmaFirst(3, 2, (2,))
    with pytest.raises(ValueError, match=r"cannot express parameter 'sigma_param' \(2,\).*pass it as log_std"):
        from_module(actor)
    with pytest.raises(ValueError, match="log_std='nope' is not a parameter"):
        from_module(actor, "nope")
    with pytest.raises(ValueError, match=r"log_std has shape \(3,\)"):
        from_module(nn.Sequential(nn.Linear(3, 2)).double(), torch.zeros(3, dtype=torch.float64))


# ------------------------------------------------------------------ properties
@settings(max_examples=25, deadline=None)
@given(policies())
def test_bridge__round_trips_and_forward_agree(pt):
    pol, theta = pt
    actor, log_std = to_module(pol, theta)
    bridge = from_module(actor, log_std, head=pol.kind, nvec=getattr(pol, "nvec", None))
    same = ("kind", "obs_dim", "out_dim", "hidden_sizes") + (("activation",) if pol.hidden_sizes else ()) \
        + (("nvec",) if pol.kind == "multicategorical" else ())
    assert {k: bridge.policy.spec()[k] for k in same} == {k: pol.spec()[k] for k in same}
    np.testing.assert_array_equal(bridge.theta, theta)                 # exact: only a permutation
    params = list(actor.parameters()) + ([log_std] if log_std is not None else [])
    vec = parameters_to_vector(params)
    np.testing.assert_array_equal(bridge.to_theta(vec), theta)
    np.testing.assert_array_equal(bridge.to_theta(vec.detach().numpy()), theta)  # NumPy input too
    assert torch.equal(bridge.from_theta(theta), vec)
    np.testing.assert_array_equal(bridge.to_theta(-vec, sign=-1), theta)
    obs = np.random.default_rng(1).standard_normal((5, pol.obs_dim))
    phi, _ = pol._dist(theta, obs)
    out = phi[0] if pol.kind == "gaussian" else phi
    # same float64 arithmetic up to summation order in the matmul: ~1e-15 relative to the terms
    np.testing.assert_allclose(actor(torch.as_tensor(obs)).detach().numpy(), out, rtol=1e-12, atol=1e-13)
    bridge.load_theta(2 * theta)
    np.testing.assert_array_equal(bridge.theta, 2 * theta)


# ------------------------------------------------------ a whole torch update, recorded
def _case(kind="gaussian", dtype=torch.float64, seed=0, n=96, hidden=(16, 16)):
    torch.manual_seed(seed)
    out = 2 if kind == "gaussian" else 3
    layers = [nn.Linear(3, hidden[0]), nn.Tanh(), nn.Linear(hidden[0], hidden[1]), nn.Tanh(),
              nn.Linear(hidden[1], out)]
    actor = nn.Sequential(*layers).to(dtype)
    log_std = nn.Parameter(torch.full((out,), -0.3, dtype=dtype)) if kind == "gaussian" else None
    obs = torch.randn(n, 3, dtype=dtype)
    with torch.no_grad():
        d = _dist(actor, log_std, obs, kind)
        act = d.sample()
        logp_old = d.log_prob(act)
    adv = 1.5 * torch.randn(n, dtype=dtype) + 0.5
    return actor, log_std, obs, act, adv, logp_old


def _dist(actor, log_std, obs, head=None):
    out = actor(obs)
    if log_std is not None:
        return Independent(Normal(out, log_std.exp()), 1)
    return Independent(Bernoulli(logits=out), 1) if head == "bernoulli" else Categorical(logits=out)


def torch_trpo(actor, log_std, obs, act, adv_raw, logp_old, rec, *, max_kl=0.01, bug=None, head=None):
    """A tianshou-style TRPO update in torch (CG on −g, fractions 0.8^j), recording every stage."""
    _d = _dist

    def _dist_h(a, ls, o):
        return _d(a, ls, o, head)
    params = list(actor.parameters()) + ([log_std] if log_std is not None else [])
    flat = lambda ts: torch.cat([t.reshape(-1) for t in ts])  # noqa: E731
    adv = (adv_raw - adv_raw.mean()) / adv_raw.std()
    ratio = (_dist_h(actor, log_std, obs).log_prob(act) - logp_old).exp()
    if bug == "ratio_in_float32":
        ratio = ratio.float()
    loss = -(ratio * adv).mean()
    grad = flat(torch.autograd.grad(loss, params))
    rec.g(grad, sign=-1)
    with torch.no_grad():
        old = _dist_h(actor, log_std, obs)
    kl_grad = flat(torch.autograd.grad(kl_divergence(old, _dist_h(actor, log_std, obs)).mean(), params,
                                       create_graph=True))
    damping = 0.0 if bug == "fvp_without_damping" else 0.1
    raw_fvp = lambda v: flat(torch.autograd.grad(kl_grad @ v, params, retain_graph=True))  # noqa: E731
    fvp = rec.fvp(lambda v: raw_fvp(v) + damping * v, sign=-1)
    x, r, p = torch.zeros_like(grad), grad.clone(), grad.clone()
    rr = r @ r
    rec.cg(residual_norm=rr.sqrt())
    for _ in range(10):
        z = fvp(p)
        alpha = rr / (p @ z)
        x += alpha * p
        r -= alpha * z
        rr_new = r @ r
        rec.cg(x=x, residual_norm=rr_new.sqrt(), pAp=p @ z, sign=-1)
        if rr_new < 1e-10:
            break
        p = r + rr_new / rr * p
        rr = rr_new
    direction = -x
    Fx = raw_fvp(direction) if bug == "beta_without_damping" else fvp(direction)
    xFx = direction @ Fx
    beta = torch.sqrt((1 if bug == "beta_without_factor_2" else 2) * max_kl / xFx)
    rec.step(x=direction, xFx=xFx, beta=beta, full_step=beta * direction,
             expected_improvement=-(grad @ direction) * beta)
    theta0 = parameters_to_vector(params).detach()
    with torch.no_grad():
        for j in range(10):
            vector_to_parameters(theta0 + 0.8 ** j * beta * direction, params)
            new_ratio = (_dist_h(actor, log_std, obs).log_prob(act) - logp_old).exp()
            new_loss = -(new_ratio * adv).mean()
            d_old, d_new = (_dist_h(actor, log_std, obs), old) if bug == "kl_direction_swapped" else \
                (old, _dist_h(actor, log_std, obs))
            kl = kl_divergence(d_old, d_new).mean()
            rec.line_search_try(0.8 ** j, kl=kl, improvement=loss - new_loss)
            if kl < max_kl and new_loss < loss:
                break
        else:
            vector_to_parameters(theta0, params)
    rec.theta_new()
    return rec


@pytest.mark.parametrize("kind", ["gaussian", "categorical", "bernoulli"])
def test_recorder__correct_torch_update_passes_stagewise(kind):
    actor, log_std, obs, act, adv, logp_old = _case(kind)
    rec = Recorder(from_module(actor, log_std, head=kind), obs, act, adv, logp_old, preset="tianshou")
    trace = torch_trpo(actor, log_std, obs, act, adv, logp_old, rec, head=kind).trace()
    assert trace.meta["dtype"] == "float64" and trace.status == "accepted"
    assert trace.preset == "tianshou" and trace.config == tr.TRPOConfig.preset("tianshou")
    report = check_trace(trace, drift=False)
    assert report.ok, report.to_text("failures")
    compared = {r.name for r in report.rows if r.status == "ok"}
    assert {"g", "fisher[0].Fv", "cg.x[1]", "step_dir", "Fx", "xFx", "beta", "full_step", "expected_improvement",
            "ls[0].kl", "ls[0].improvement", "accepted_index", "theta_new", "status"} <= compared
    # θ_new really moved, and is what the actor holds now
    assert not np.array_equal(trace["theta_new"], trace["theta_old"])
    np.testing.assert_array_equal(trace["theta_new"], from_module(actor, log_std, head=kind).theta)


def test_recorder__float32_update_is_judged_at_float32_tolerance():
    actor, log_std, obs, act, adv, logp_old = _case("gaussian", torch.float32)
    rec = Recorder(from_module(actor, log_std), obs, act, adv, logp_old, preset="tianshou")
    trace = torch_trpo(actor, log_std, obs, act, adv, logp_old, rec).trace()
    assert trace.meta["dtype"] == "float32" and trace["g"].dtype == np.float32
    report = check_trace(trace, drift=False)
    assert report.ok, report.to_text("failures")


@pytest.mark.parametrize("bug, first", [
    ("fvp_without_damping", "fisher[0].Fv"),
    ("beta_without_damping", "xFx"),  # its Fx is not recorded: the product xᵀFx is the first wrong value
    ("beta_without_factor_2", "beta"),
    ("kl_direction_swapped", "ls[0].kl"),
    ("ratio_in_float32", "g"),
])
def test_recorder__planted_bug_is_charged_to_its_stage(bug, first):
    actor, log_std, obs, act, adv, logp_old = _case("gaussian")
    rec = Recorder(from_module(actor, log_std), obs, act, adv, logp_old, preset="tianshou")
    report = check_trace(torch_trpo(actor, log_std, obs, act, adv, logp_old, rec, bug=bug).trace(), drift=False)
    assert not report.ok
    assert report.first_failure.name == first, report.to_text("failures")


def test_recorder__sign_forgotten_is_caught_at_g():
    actor, log_std, obs, act, adv, logp_old = _case("gaussian")
    rec = Recorder(from_module(actor, log_std), obs, act, adv, logp_old, preset="tianshou")
    torch_trpo(actor, log_std, obs, act, adv, logp_old, rec)
    rec.values["g"] = -rec.values["g"]  # as if rec.g(grad) had been called without sign=-1
    report = check_trace(rec.trace(), drift=False)
    assert report.first_failure.name == "g"


def test_recorder__failed_line_search_derives_status_and_keeps_theta_old():
    actor, log_std, obs, act, adv, logp_old = _case("gaussian")
    rec = Recorder(from_module(actor, log_std), obs, act, adv, logp_old, preset="tianshou",
                   config={"max_kl": 1e5})  # δ so large that every try overshoots (measured)
    trace = torch_trpo(actor, log_std, obs, act, adv, logp_old, rec, max_kl=1e5).trace()
    assert trace.status == "line_search_failed" and int(trace["accepted_index"]) == -1
    assert trace["ls_fraction"].shape == (10,) and not trace["ls_accepted"].any()
    np.testing.assert_array_equal(trace["theta_new"], trace["theta_old"])
    assert check_trace(trace, drift=False).ok


def test_recorder__needs_theta_new_and_a_known_preset():
    actor, log_std, obs, act, adv, logp_old = _case("gaussian")
    with pytest.raises(ValueError, match="unknown preset"):
        Recorder(from_module(actor, log_std), obs, act, adv, logp_old, preset="tianshu")
    rec = Recorder(from_module(actor, log_std), obs, act, adv, logp_old, preset="skrl")
    with pytest.raises(ValueError, match="record θ_new first"):
        rec.trace()


# ------------------------------------------------------------------ CI installs what the replay needs
def test_ci_test_command__installs_torch_and_sb3_contrib_so_the_sb3_replay_runs():
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    run = (ROOT / ".ci" / "run").read_text()
    command = 'python -m pip install -e ".[test,torch,interop]" && python -m pytest'
    assert command in run and command in (ROOT / "README.md").read_text()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    installed = project["dependencies"] + extras["test"] + extras["torch"] + extras["interop"]
    assert "torch==2.13.0" in installed
    assert any(req.startswith("sb3-contrib") for req in installed)  # else tests/test_sb3_replay.py skips
    assert any(req.startswith("pyyaml") for req in installed)       # YAML configs of trpo-ref --config
