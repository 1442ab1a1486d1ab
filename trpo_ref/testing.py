r"""Conformance assertions and hypothesis strategies for another library's TRPO test suite.

==========================================================  ==========================================
what the user's code computes                               checked by
==========================================================  ==========================================
(F + λI)v (its FVP, a torch vector in module order)         :func:`assert_fvp_matches`
mean KL(π_old ‖ π_θ) (or KL(π_θ ‖ π_old)), value and ∇      :func:`assert_kl_matches`
g = ∇_θ mean_n r_n(θ) Â_n at θ_old                          :func:`assert_policy_gradient_matches`
a whole update recorded as a trace / :class:`Recorder`      :func:`assert_update_matches`
random MLP policies (every head), torch actors, batches     :func:`policies`, :func:`torch_actors`, :func:`batches`
==========================================================  ==========================================

Each assertion passes silently or raises ``AssertionError`` whose message, as
``numpy.testing``'s do, gives the numbers: the worst entry named by its
parameter block (``W1[3,7]``, ``log_std[0]``), the candidate's and trpo_ref's
values there, the largest absolute and relative errors, the tolerance, and the
largest error of every block.

The reference values are trpo_ref's hand-written NumPy derivatives in float64
at the actor's current parameters.  Tolerances depend on the precision the
candidate computed in (the actor's dtype): the stage-wise tolerances of the
oracle (:data:`trpo_ref.oracle.TOLERANCES`, rtol 1e-10 for float64, 1e-4 for
float32), relative to the largest entry of trpo_ref's vector.  Measured on 150
random policies and batches of :func:`policies` / :func:`batches`: a correct
torch double-backprop FVP agrees to 1.2e-15 relative in float64 and 7.8e-7 in
float32 (margins of ~10⁵ and ~10²).

The torch part (:func:`assert_fvp_matches` and friends take torch modules)
imports torch lazily through :mod:`trpo_ref.torch`; the strategies import
hypothesis lazily, so importing this module needs neither.
"""

from __future__ import annotations

import math

import numpy as np

from .oracle.schema import tolerance
from .oracle.stagewise import kl_terms

__all__ = ["assert_fvp_matches", "assert_kl_matches", "assert_policy_gradient_matches", "assert_update_matches",
           "policies", "torch_actors", "batches"]


def _bridge(actor, log_std):
    from .torch import TorchBridge, from_module

    return actor if isinstance(actor, TorchBridge) else from_module(actor, log_std)


def _rtol(bridge, rtol):
    return tolerance(bridge.dtype)[0] if rtol is None else float(rtol)


def _compare_vectors(what: str, cand: np.ndarray, ref: np.ndarray, bridge, rtol: float, context: str = "") -> None:
    """Raise AssertionError naming the worst parameter block unless max|c − r| ≤ rtol·max|r|."""
    cand = np.asarray(cand, np.float64)
    ref = np.asarray(ref, np.float64)
    scale = float(np.abs(ref).max()) if ref.size else 0.0
    diff = np.abs(cand - ref)
    bad_nonfinite = not np.all(np.isfinite(cand))
    worst = int(np.nanargmax(np.where(np.isnan(diff), np.inf, diff))) if diff.size else 0
    max_abs = float(np.max(np.where(np.isnan(diff), np.inf, diff))) if diff.size else 0.0
    if not bad_nonfinite and max_abs <= rtol * scale:
        return
    lines = [f"{what} differ from trpo_ref's{(' (' + context + ')') if context else ''}",
             f" worst at {bridge.where(worst)}: yours {cand[worst]:.10e}, trpo_ref {ref[worst]:.10e}, "
             f"abs err {max_abs:.3e}",
             f" max abs err {max_abs:.3e} > {rtol * scale:.3e} = rtol {rtol:g} x max|trpo_ref| {scale:.3e} "
             f"(max rel err {max_abs / scale if scale else math.inf:.3e}, {bridge.dtype})"]
    blocks = []
    pos = 0
    for name, shape in bridge.policy.param_shapes().items():
        n = int(np.prod(shape))
        d = diff[pos:pos + n]
        blocks.append(f"{name} {float(np.max(d)) if n else 0.0:.1e}")
        pos += n
    lines.append(" max abs err per block: " + ", ".join(blocks))
    raise AssertionError("\n".join(lines))


def _obs(bridge, obs):
    from .torch import to_numpy

    return to_numpy(obs).reshape(-1, bridge.policy.obs_dim)


def _kl_scale(policy, kl_action_reduction: str) -> float:
    if kl_action_reduction not in ("sum", "mean"):
        raise ValueError(f"kl_action_reduction must be 'sum' or 'mean', got {kl_action_reduction!r}")
    # as trpo_ref.trpo.prepare_update: SB3's "mean" divides by the dimensions its KL averages over
    return 1.0 / policy.mean_reduction_size if kl_action_reduction == "mean" else 1.0


def assert_fvp_matches(fvp, actor, obs, *, log_std=None, damping: float = 0.0, kl_action_reduction: str = "sum",
                       rtol: float | None = None, n_vectors: int = 3, seed: int = 0, sign: float = 1.0) -> None:
    r"""Assert that ``fvp(v)`` is :math:`(F + \lambda I)v` at the actor's parameters.

    .. math:: F = \frac1N\sum_n J_n^\top M(\phi_n) J_n = \nabla^2_\theta \bar D_{KL}(\pi_{old}\,\|\,\pi_\theta)\big|_{\theta_{old}}

    Parameters
    ----------
    fvp : callable
        Maps a flat torch vector in module order (``parameters_to_vector(actor.parameters())``,
        then ``log_std``) to one in the same order.
    actor : nn.Module or TorchBridge
        As for :func:`trpo_ref.torch.from_module`.
    obs : tensor or array (N, obs_dim)
        The samples the Fisher matrix averages over.
    log_std : tensor, parameter or name, optional
        The Gaussian's log σ (None: categorical).
    damping : float
        λ.
    kl_action_reduction : {"sum", "mean"}
        "mean" when the KL is averaged over action dimensions (SB3): F/A.
    rtol : float, optional
        Default by the actor's dtype (1e-10 float64, 1e-4 float32).
    n_vectors : int
        Random directions v ~ N(0, I) tried (drawn on the host with ``seed``).
    sign : float
        Multiplies ``fvp``'s output (−1 if it returns −(F + λI)v).

    Raises
    ------
    AssertionError
        Naming the worst parameter block, with the numbers.
    """
    bridge = _bridge(actor, log_std)
    pol, theta, obs_no = bridge.policy, bridge.theta, _obs(bridge, obs)
    scale = _kl_scale(pol, kl_action_reduction)
    tol = _rtol(bridge, rtol)
    fisher = pol.fisher_operator(theta, obs_no)
    rng = np.random.default_rng(seed)
    for k in range(int(n_vectors)):
        v = rng.standard_normal(pol.num_params)
        v_mod = bridge.from_theta(v)
        ref = scale * fisher(bridge.to_theta(v_mod)) + damping * bridge.to_theta(v_mod)
        cand = bridge.to_theta(fvp(v_mod), sign)
        _compare_vectors("Fisher-vector products (F + λI)v", cand, ref, bridge, tol,
                         f"vector {k} of {n_vectors}, λ = {damping:g}")


def assert_kl_matches(kl_fn, actor, obs, *, log_std=None, direction: str = "old_new",
                      kl_action_reduction: str = "sum", rtol: float | None = None, n_points: int = 3,
                      step: float = 0.05, seed: int = 0) -> None:
    r"""Assert that ``kl_fn(vec)`` is the mean KL between the actor's policy and the one at ``vec``.

    .. math:: \bar D_{KL}(\pi_{old}\,\|\,\pi_\theta) = \frac1N\sum_n D_{KL}(\pi_{old}(\cdot|s_n)\,\|\,\pi_\theta(\cdot|s_n))

    Checked at θ_old (where it must be 0) and at ``n_points`` points θ_old + step·u
    (u ~ N(0, I)); when ``kl_fn`` returns a tensor that depends on ``vec``, its
    gradient (``torch.autograd.grad``) is checked against ∇_θ D̄_KL too.

    Parameters
    ----------
    kl_fn : callable
        Maps a flat torch vector θ in module order (``requires_grad=True``) to the
        scalar KL between π_old (the actor as it is now) and π_θ.
    actor, obs, log_std
        As for :func:`assert_fvp_matches`.
    direction : {"old_new", "new_old"}
        "old_new": KL(π_old ‖ π_θ); "new_old": KL(π_θ ‖ π_old).
    kl_action_reduction : {"sum", "mean"}
    rtol : float, optional
        Default by the actor's dtype; the KL value is judged on the size of its
        terms (mean over samples of the per-sample KL's largest term), since it is ≈0 near θ_old.
    n_points : int
    step : float
    seed : int
    """
    import torch

    if direction not in ("old_new", "new_old"):
        raise ValueError(f"direction must be 'old_new' or 'new_old', got {direction!r}")
    bridge = _bridge(actor, log_std)
    pol, theta_old, obs_no = bridge.policy, bridge.theta, _obs(bridge, obs)
    scale = _kl_scale(pol, kl_action_reduction)
    tol = _rtol(bridge, rtol)
    rev = direction == "new_old"
    terms_rtol = tolerance(bridge.dtype)[1] * (tol / tolerance(bridge.dtype)[0])
    rng = np.random.default_rng(seed)
    points = [np.zeros(pol.num_params)] + [step * rng.standard_normal(pol.num_params) for _ in range(int(n_points))]
    for k, u in enumerate(points):
        vec = bridge.from_theta(theta_old + u).detach().requires_grad_(True)
        theta = bridge.to_theta(vec)
        out = kl_fn(vec)
        val = float(out.detach().double().item()) if isinstance(out, torch.Tensor) else float(out)
        ref = scale * float(pol.kl(theta_old, theta, obs_no, reverse=rev))
        # the KL cancels (it is 0 at θ_old): judged, as by the oracle, on the size of its terms too
        terms = scale * kl_terms(pol, theta_old, theta, obs_no, rev)
        allowed = max(tol * abs(ref), terms_rtol * terms)
        where = "θ_old" if k == 0 else f"θ_old + {step:g}·u_{k}"
        if not (math.isfinite(val) and abs(val - ref) <= allowed):
            raise AssertionError(
                f"KL values differ from trpo_ref's ({direction}, at {where})\n"
                f" yours {val:.10e}, trpo_ref {ref:.10e}, abs err {abs(val - ref):.3e} > {allowed:.3e} "
                f"= max(rtol {tol:g} x |trpo_ref|, {terms_rtol:g} x its terms {terms:.3e}) ({bridge.dtype})")
        if isinstance(out, torch.Tensor) and out.requires_grad:
            (grad,) = torch.autograd.grad(out, vec)
            ref_g = scale * pol.kl_grad(theta_old, theta, obs_no, reverse=rev)
            if k == 0:  # ∇KL = 0 at θ_old: judge on the gradient's scale at the other points
                continue
            _compare_vectors("KL gradients", bridge.to_theta(grad), ref_g, bridge, tol, f"{direction}, at {where}")


def assert_policy_gradient_matches(grad, actor, obs, act, adv, logp_old, *, log_std=None, sign: float = 1.0,
                                   rtol: float | None = None) -> None:
    r"""Assert that ``grad`` is g = ∇_θ L(θ_old), L(θ) = mean_n exp(log π_θ(a_n|s_n) − logp_old_n) Â_n.

    Parameters
    ----------
    grad : tensor, array, list of per-parameter tensors, or a callable returning one
        In module order.  ``sign=-1`` for the gradient of the loss −L.
    actor, obs, log_std
        As for :func:`assert_fvp_matches`.
    act, adv, logp_old : tensors or arrays (N, ...)
        The actions, the advantages **as the surrogate used them** (after any
        normalisation) and the log-probabilities recorded at sampling.
    """
    from .torch import actions, to_numpy

    bridge = _bridge(actor, log_std)
    pol, theta, obs_no = bridge.policy, bridge.theta, _obs(bridge, obs)
    a = actions(pol, act, obs_no.shape[0])
    ref = pol.surrogate_grad(theta, obs_no, a, to_numpy(adv).reshape(-1), to_numpy(logp_old).reshape(-1))
    cand = bridge.to_theta(grad() if callable(grad) else grad, sign)
    _compare_vectors("Policy gradients g", cand, ref, bridge, _rtol(bridge, rtol))


def assert_update_matches(trace_or_recorder, *, rtol: float | None = None) -> None:
    """Assert that a recorded update passes the stage-wise check (:func:`trpo_ref.oracle.check_trace`).

    Parameters
    ----------
    trace_or_recorder : Trace, path, or :class:`trpo_ref.torch.Recorder`
    rtol : float, optional
        Default by the trace's dtype.

    Raises
    ------
    AssertionError
        With the failing rows of the report (first failure named, worst parameter block per row).
    """
    from .oracle.check import check_trace

    obj = trace_or_recorder
    if hasattr(obj, "trace") and callable(obj.trace):
        obj = obj.trace()
    report = check_trace(obj, rtol, drift=False)
    if not report.ok:
        raise AssertionError(report.to_text("failures"))


# --------------------------------------------------------------- strategies
def policies(kinds=("gaussian", "categorical", "multicategorical", "bernoulli"), activations=("tanh", "relu"),
             max_layers: int = 2, max_width: int = 8, max_obs_dim: int = 5, max_out_dim: int = 4):
    """Hypothesis strategy of ``(policy, theta)``: random MLP policies of every head, θ from a drawn seed.

    Heads: Gaussian, categorical, MultiDiscrete (``multicategorical``, 1–3
    sub-actions of 2–``max_out_dim`` choices) and MultiBinary (``bernoulli``).

    θ is the orthogonal initialisation plus 0.3·N(0, 1) (so the output layer
    and log σ are not ≈0), drawn with ``numpy.random.default_rng(seed)``.
    """
    from hypothesis import strategies as st

    from .heads import BernoulliHead, CategoricalHead, GaussianHead, MultiCategoricalHead
    from .policy import policy_for_head

    heads = {  # kind -> strategy of its head
        "gaussian": st.builds(GaussianHead, st.integers(1, max_out_dim)),
        "categorical": st.builds(CategoricalHead, st.integers(2, max(2, max_out_dim))),
        "multicategorical": st.builds(MultiCategoricalHead,
                                      st.lists(st.integers(2, max(2, max_out_dim)), min_size=1, max_size=3)),
        "bernoulli": st.builds(BernoulliHead, st.integers(1, max_out_dim)),
    }

    @st.composite
    def build(draw):
        head = draw(st.sampled_from(tuple(kinds)).flatmap(heads.__getitem__))
        obs_dim = draw(st.integers(1, max_obs_dim))
        hidden = tuple(draw(st.lists(st.integers(1, max_width), min_size=0, max_size=max_layers)))
        act = draw(st.sampled_from(tuple(activations)))
        policy = policy_for_head(obs_dim, head, hidden, act)
        seed = draw(st.integers(0, 2**32 - 1))
        rng = np.random.default_rng(seed)
        theta = np.asarray(policy.init_params(seed % 2**31)) + 0.3 * rng.standard_normal(policy.num_params)
        return policy, theta

    return build()


def torch_actors(dtype: str = "float64", kinds=("gaussian", "categorical"), **policy_kwargs):
    """Hypothesis strategy of ``(actor, log_std)``: the torch modules of :func:`policies` (log_std None: categorical).

    Gaussian and categorical by default, so ``from_module(actor, log_std)`` reads them
    as they are; for the other heads draw :func:`policies` and pass ``head`` (and ``nvec``).
    """

    def make(pt):
        import torch

        from .torch import to_module

        return to_module(pt[0], pt[1], dtype={"float64": torch.float64, "float32": torch.float32}[dtype])

    return policies(kinds=kinds, **policy_kwargs).map(make)


def batches(policy, theta, min_n: int = 2, max_n: int = 64):
    """Hypothesis strategy of :class:`~trpo_ref.trpo.Batch` on-policy for ``(policy, theta)``.

    Observations N(0, I) scaled by a drawn factor, actions sampled from π_θ with
    their exact log-probabilities, advantages N(μ, σ²) with drawn μ and σ; all
    from one drawn seed.
    """
    from hypothesis import strategies as st

    from .trpo import Batch

    @st.composite
    def build(draw):
        n = draw(st.integers(min_n, max_n))
        seed = draw(st.integers(0, 2**32 - 1))
        obs_scale = draw(st.floats(0.1, 5.0))
        mu, sigma = draw(st.floats(-2.0, 2.0)), draw(st.floats(0.1, 3.0))
        rng = np.random.default_rng(seed)
        obs = obs_scale * rng.standard_normal((n, policy.obs_dim))
        act, logp = policy.sample(theta, obs, rng)
        adv = mu + sigma * rng.standard_normal(n)
        return Batch(obs, np.asarray(act), adv, np.asarray(logp))

    return build()
