"""Hypothesis strategies shared by the test suite: networks, policies of every head, critics, batches, θ.

The policies are :mod:`trpo_ref.testing`'s public strategy
(:func:`~trpo_ref.testing.policies`, re-exported here with
:func:`~trpo_ref.testing.batches` and :func:`~trpo_ref.testing.torch_actors`),
drawn at the sizes the derivative tests use; this module adds what a user's
suite does not need: bare MLPs, critics, distribution parameters, batches of
unit-scale observations for the finite-difference checks (see
:func:`policy_cases`), and the test-side draws (directions, the relu-kink filter).

=====================================  ==========================================================
strategy                               draws
=====================================  ==========================================================
:func:`hidden_sizes`                   0–``max_layers`` hidden widths
:func:`nets`                           ``(MLP, θ, x, rng)``: a bare network, its θ and inputs
:func:`policy_thetas`                  ``(policy, θ)`` of the given heads, at the tests' sizes
:func:`policy_cases`                   ``(policy, θ, obs, act, logp_old, rng)``: a policy and an on-policy batch
:func:`critics`                        ``(ValueFunction, w, obs, ret, rng)``
:func:`gaussian_params`, ...           parameters of the distributions of :mod:`trpo_ref.distributions`
=====================================  ==========================================================

θ is always the model's initialisation plus 0.3·N(0, 1) (:func:`perturbed_init`),
so output layers and log σ are not ≈0 and every derivative is exercised.
"""

from __future__ import annotations

import numpy as np
from hypothesis import assume
from hypothesis import strategies as st

from oracles import relu_kink_margin
from trpo_ref import backend
from trpo_ref.mlp import MLP
from trpo_ref.testing import batches, policies, torch_actors
from trpo_ref.value import ValueFunction

__all__ = ["ALL_KINDS", "DISCRETE_KINDS", "ACTIVATIONS", "MAX_OUT_DIM", "policies", "batches", "torch_actors",
           "perturbed_init", "hidden_sizes", "nets", "policy_thetas", "policy_cases", "critics",
           "gaussian_params", "logit_pairs", "multicategorical_params", "seeds", "RELU_KINK_MARGIN"]

#: Every policy head, and the discrete ones.
ALL_KINDS = ("gaussian", "categorical", "multicategorical", "bernoulli")
DISCRETE_KINDS = ALL_KINDS[1:]
ACTIVATIONS = ("tanh", "relu")
#: Largest output size drawn per head: action dimensions (Gaussian), actions (categorical, from 2),
#: choices per sub-action (MultiDiscrete: 1–3 sub-actions of 2 to this many), bits (MultiBinary).
MAX_OUT_DIM = {"gaussian": 4, "categorical": 6, "multicategorical": 4, "bernoulli": 4}
#: Central differences straddle no relu kink when every hidden pre-activation is at least this far from 0
#: (see oracles.relu_kink_margin); draws closer to a kink are rejected with ``assume``.
RELU_KINK_MARGIN = 1e-2

#: Sizes of the policies, networks and batches the derivative tests draw.
MAX_LAYERS, MAX_WIDTH, MAX_OBS_DIM, MAX_N = 3, 16, 8, 12


def seeds():
    """A seed for ``numpy.random.default_rng``."""
    return st.integers(0, 2**32 - 1)


def perturbed_init(init, num_params: int, rng) -> np.ndarray:
    """θ = the model's initialisation ``init`` (host array) + 0.3·N(0, 1) drawn from ``rng``."""
    return backend.to_numpy(init) + 0.3 * rng.standard_normal(num_params)


def hidden_sizes(min_layers: int = 0, max_layers: int = MAX_LAYERS, max_width: int = MAX_WIDTH):
    """A tuple of ``min_layers``–``max_layers`` hidden widths in 1–``max_width``."""
    return st.lists(st.integers(1, max_width), min_size=min_layers, max_size=max_layers).map(tuple)


@st.composite
def nets(draw, max_in: int = MAX_OBS_DIM, max_out: int = 6, max_n: int = MAX_N):
    """``(net, θ, x, rng)``: an MLP with 1–3 hidden layers of widths 1–16, inputs 1–``max_in``, outputs
    1–``max_out``, tanh or relu; θ = init (output gain 1) + 0.3·N(0, 1); x ~ N(0, I), 1–``max_n`` rows;
    no hidden pre-activation within :data:`RELU_KINK_MARGIN` of a kink."""
    sizes = (draw(st.integers(1, max_in)), *draw(hidden_sizes(min_layers=1)), draw(st.integers(1, max_out)))
    net = MLP(sizes, draw(st.sampled_from(ACTIVATIONS)))
    rng = np.random.default_rng(draw(seeds()))
    theta = perturbed_init(net.init(rng, output_gain=1.0), net.num_params, rng)
    x = rng.standard_normal((draw(st.integers(1, max_n)), sizes[0]))
    assume(relu_kink_margin(net, theta, x) > RELU_KINK_MARGIN)
    return net, theta, x, rng


def policy_thetas(kinds=ALL_KINDS):
    """``(policy, θ)`` of :func:`trpo_ref.testing.policies` at the tests' sizes: 0–3 hidden layers of
    widths 1–16, obs_dim 1–8, tanh or relu, the output sizes of :data:`MAX_OUT_DIM` per head."""
    return st.sampled_from(tuple(kinds)).flatmap(
        lambda kind: policies(kinds=(kind,), activations=ACTIVATIONS, max_layers=MAX_LAYERS, max_width=MAX_WIDTH,
                              max_obs_dim=MAX_OBS_DIM, max_out_dim=MAX_OUT_DIM[kind]))


@st.composite
def policy_cases(draw, kinds=ALL_KINDS, max_n: int = MAX_N):
    """``(policy, θ, obs, act, logp_old, rng)``: a policy of :func:`policy_thetas`, 1–``max_n`` observations
    N(0, I), actions sampled from π_θ with their exact log-probabilities; ``rng`` for the test's own
    directions.  No hidden pre-activation within :data:`RELU_KINK_MARGIN` of a kink.

    Not :func:`trpo_ref.testing.batches`, whose observations are scaled by up to 5: the third
    derivatives grow with that scale, and so does the central differences' truncation error — measured
    with the thorough profile (1000 examples a head), up to 2.6e-6 relative (the FVP against the
    differences of the KL gradient, MultiDiscrete), over :data:`oracles.FD_TOL`.
    """
    pi, theta = draw(policy_thetas(kinds))
    rng = np.random.default_rng(draw(seeds()))
    obs = rng.standard_normal((draw(st.integers(1, max_n)), pi.obs_dim))
    assume(relu_kink_margin(pi.mlp, theta, obs) > RELU_KINK_MARGIN)
    act, logp = pi.sample(theta, obs, rng)
    return pi, theta, obs, np.asarray(act), np.asarray(logp), rng


@st.composite
def critics(draw, max_layers: int = 2, max_obs_dim: int = 5, max_n: int = 20):
    """``(vf, w, obs, ret, rng)``: a tanh critic with 1–``max_layers`` hidden layers of widths 1–16,
    obs_dim 1–``max_obs_dim``; w = init + 0.3·N(0, 1); obs ~ N(0, I), ret ~ N(0, 4), 1–``max_n`` rows."""
    vf = ValueFunction(draw(st.integers(1, max_obs_dim)), draw(hidden_sizes(1, max_layers)), "tanh")
    rng = np.random.default_rng(draw(seeds()))
    n = draw(st.integers(1, max_n))
    w = perturbed_init(vf.init_params(rng), vf.num_params, rng)
    obs = rng.standard_normal((n, vf.obs_dim))
    ret = 2.0 * rng.standard_normal(n)
    return vf, w, obs, ret, rng


# ------------------------------------------------------------ distribution parameters
@st.composite
def gaussian_params(draw):
    """``(mean0, log_std0, mean1, log_std1, rng)``: two diagonal Gaussians of 1–4 dimensions over 1–10 rows,
    means N(0, 1), log σ uniform in [−1.5, 1]."""
    rng = np.random.default_rng(draw(seeds()))
    n, a = draw(st.integers(1, 10)), draw(st.integers(1, 4))
    return (rng.standard_normal((n, a)), rng.uniform(-1.5, 1.0, a), rng.standard_normal((n, a)),
            rng.uniform(-1.5, 1.0, a), rng)


@st.composite
def logit_pairs(draw, max_width: int = 6):
    """``(z, y, rng)``: two logit arrays of 1–10 rows and 2–``max_width`` columns, N(0, s²) with s in {0.1, 1, 5}."""
    rng = np.random.default_rng(draw(seeds()))
    n, k = draw(st.integers(1, 10)), draw(st.integers(2, max_width))
    scale = draw(st.sampled_from([0.1, 1.0, 5.0]))
    return scale * rng.standard_normal((n, k)), scale * rng.standard_normal((n, k)), rng


@st.composite
def multicategorical_params(draw):
    """``(nvec, z, y, rng)``: 1–3 sub-actions of 2–4 choices, two logit arrays of 1–8 rows and sum(nvec)
    columns, N(0, s²) with s in {0.1, 1, 5}."""
    rng = np.random.default_rng(draw(seeds()))
    nvec = tuple(draw(st.lists(st.integers(2, 4), min_size=1, max_size=3)))
    n = draw(st.integers(1, 8))
    scale = draw(st.sampled_from([0.1, 1.0, 5.0]))
    width = sum(nvec)
    return nvec, scale * rng.standard_normal((n, width)), scale * rng.standard_normal((n, width)), rng
