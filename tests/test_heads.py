"""The heads (trpo_ref.heads): each is a thin layer over its distribution, and the policy is MLP ∘ head.

The distributions' functions are proven against finite differences and torch in test_distributions.py and
test_torch_crosscheck.py; these tests pin that each head applies exactly those functions (so the proofs carry
over), that the metric the Fisher operator uses is the distribution's tested ``fisher_product``, and the head's
own jobs: layout, validation, spec round trip, the space → head table.
"""

import gymnasium as gym
import numpy as np
import pytest

from trpo_ref.distributions import Bernoulli, Categorical, DiagGaussian, MultiCategorical
from trpo_ref.heads import (HEADS, BernoulliHead, CategoricalHead, GaussianHead, MultiCategoricalHead, head_for_space,
                            head_from_spec)
from trpo_ref.policy import (BernoulliMLPPolicy, CategoricalMLPPolicy, GaussianMLPPolicy, MLPPolicy,
                             MultiCategoricalMLPPolicy, policy_for_head, policy_from_spec)

N = 7


def _cases():
    rng = np.random.default_rng(0)
    mean, ls = rng.normal(size=(N, 3)), rng.normal(size=3) * 0.5
    mean2, ls2 = rng.normal(size=(N, 3)), rng.normal(size=3) * 0.5
    z, z2 = rng.normal(size=(N, 4)) * 2, rng.normal(size=(N, 4)) * 2
    zm, zm2 = rng.normal(size=(N, 5)) * 2, rng.normal(size=(N, 5)) * 2
    mc = MultiCategorical([2, 3])
    return {
        # head, φ_p, φ_q, actions, the distribution's functions in φ as (log_prob, kl, fisher_product(φ, u))
        "gaussian": (GaussianHead(3), (mean, ls), (mean2, ls2), rng.normal(size=(N, 3)),
                     (lambda p, a: DiagGaussian.log_prob(p[0], p[1], a),
                      lambda p, q: DiagGaussian.kl(p[0], p[1], q[0], q[1]),
                      lambda p, u: DiagGaussian.fisher_product(p[1], u, np.zeros_like(u))[0])),
        "categorical": (CategoricalHead(4), z, z2, rng.integers(0, 4, N),
                        (Categorical.log_prob, Categorical.kl, Categorical.fisher_product)),
        "multicategorical": (MultiCategoricalHead([2, 3]), zm, zm2, np.stack([rng.integers(0, 2, N),
                                                                              rng.integers(0, 3, N)], 1),
                             (mc.log_prob, mc.kl, mc.fisher_product)),
        "bernoulli": (BernoulliHead(4), z, z2, rng.integers(0, 2, (N, 4)),
                      (Bernoulli.log_prob, Bernoulli.kl, Bernoulli.fisher_product)),
    }


@pytest.mark.parametrize("kind", sorted(HEADS))
def test_head__applies_its_distributions_tested_functions(kind):
    head, p, q, act, (log_prob, kl, fisher_product) = _cases()[kind]
    np.testing.assert_array_equal(head.log_prob(p, act), log_prob(p, act))
    np.testing.assert_array_equal(head.kl(p, q), kl(p, q))
    # The metric the Fisher operator applies (by row blocks, divided by N) is the distribution's fisher_product,
    # the function test_distributions.py proves to be the Hessian of the KL: equal to rounding (the Gaussian
    # multiplies by a precomputed 1/(N σ²) in place, the others divide by N after the product: ≤ 1 ulp apart).
    u = np.random.default_rng(1).normal(size=np.shape(p[0] if kind == "gaussian" else p))
    rows = head.metric(p, N)
    got = np.concatenate([rows(u[:3].copy(), 0, 3), rows(u[3:].copy(), 3, N)])
    np.testing.assert_allclose(got, fisher_product(p, u) / N, rtol=4e-16, atol=0)


def test_gaussian_head__log_std_block_of_f_is_the_distributions_2v():
    v = np.random.default_rng(2).normal(size=3)
    np.testing.assert_array_equal(GaussianHead(3).extra_fisher(v),
                                  DiagGaussian.fisher_product(np.zeros(3), np.zeros((1, 3)), v)[1])


@pytest.mark.parametrize("kind", sorted(HEADS))
def test_head__sample_and_mode_have_the_heads_shape_and_dtype(kind):
    head, p, _, act, _ = _cases()[kind]
    a = head.sample(p, np.random.default_rng(0))
    assert a.shape == head.act_shape(N) == act.shape
    assert (a.dtype.kind == "f") == head.continuous_actions
    head.check_act(a, N, np.zeros(1))  # a draw passes the head's own validation
    m = head.mode(p)
    assert m.shape == a.shape
    head.check_act(m, N, np.zeros(1))


@pytest.mark.parametrize("kind, bad, match", [
    ("gaussian", np.zeros((N, 2)), r"act must have shape \(7, 3\)"),
    ("gaussian", np.full((N, 3), np.nan), "act contains NaN"),
    ("categorical", np.zeros(N), "integer"),
    ("categorical", np.full(N, 4), r"\[0, 4\)"),
    ("multicategorical", np.zeros((N, 2), dtype=np.int64) + np.array([0, 3]), r"column i must lie in \[0, \[2, 3\]"),
    ("bernoulli", np.zeros((N, 3), dtype=np.int64), r"shape \(7, 4\)"),
    ("bernoulli", np.full((N, 4), 2), r"\[0, \[2, 2, 2, 2\]"),
])
def test_head__check_act_rejects_bad_actions_in_one_line(kind, bad, match):
    head = _cases()[kind][0]
    with pytest.raises(ValueError, match=match):
        head.check_act(bad, N, np.zeros(1))


@pytest.mark.parametrize("policy", [GaussianMLPPolicy(3, 2, (5,), log_std_init=-0.5), CategoricalMLPPolicy(3, 4, (5,)),
                                    MultiCategoricalMLPPolicy(3, [2, 3], (5,)), BernoulliMLPPolicy(3, 4, (5,))],
                         ids=lambda p: p.kind)
def test_policy__is_mlp_composed_with_its_head(policy):
    assert isinstance(policy, MLPPolicy)
    assert policy.mlp.sizes[-1] == policy.head.out_dim
    assert policy.num_params == policy.mlp.num_params + policy.head.n_extra
    assert head_from_spec(policy.spec()).spec() == policy.head.spec()
    again = policy_from_spec(policy.spec())
    assert type(again) is type(policy) and again.spec() == policy.spec()
    built = policy_for_head(3, policy.head, (5,))
    assert type(built) is type(policy) and built.spec() == policy.spec()
    theta = policy.init_params(0)
    obs = np.random.default_rng(0).normal(size=(4, 3))
    # The policy's φ is the head applied to the network's output and θ's tail.
    phi, _ = policy._dist(theta, obs)
    out, _ = policy.mlp.forward(theta[: policy.mlp.num_params], obs)
    want = policy.head.phi(out, theta[policy.mlp.num_params:])
    for a, b in zip(phi if isinstance(phi, tuple) else (phi,), want if isinstance(want, tuple) else (want,)):
        np.testing.assert_array_equal(a, b)
    # MLP.predictor (the rollout's forward) is forward's arithmetic without the cache: the same bits.
    np.testing.assert_array_equal(policy.mlp.predictor(theta[: policy.mlp.num_params])(obs), out)


@pytest.mark.parametrize("space, kind, width", [
    (gym.spaces.Box(-1, 1, (3,)), "gaussian", 3), (gym.spaces.Discrete(5), "categorical", 5),
    (gym.spaces.MultiDiscrete([2, 4]), "multicategorical", 6), (gym.spaces.MultiBinary(3), "bernoulli", 3),
])
def test_head_for_space__one_head_per_supported_space(space, kind, width):
    head = head_for_space(space, log_std_init=-1.0)
    assert head.kind == kind and head.out_dim == width
    if kind == "gaussian":
        np.testing.assert_array_equal(head.init_extra(), [-1.0] * 3)


@pytest.mark.parametrize("space", [gym.spaces.Box(-1, 1, (2, 2)), gym.spaces.Dict({"a": gym.spaces.Discrete(2)}),
                                   gym.spaces.MultiBinary([2, 2])])
def test_head_for_space__unsupported_space_is_a_clear_error(space):
    with pytest.raises(ValueError, match="no policy head for the action space"):
        head_for_space(space)


def test_mlp_policy__refuses_something_that_is_not_a_head():
    with pytest.raises(ValueError, match="head must be a trpo_ref.heads.Head"):
        MLPPolicy(3, "gaussian")
    with pytest.raises(ValueError, match="unknown policy kind 'beta'"):
        head_from_spec({"kind": "beta", "out_dim": 2})


@pytest.mark.parametrize("kind", sorted(HEADS))
def test_head__sampler_at_fixed_extra_is_sample_bit_for_bit(kind):
    # The rollout's per-step draw (σ computed once for the Gaussian) is the head's sample, bit for bit.
    head, p, _, _, _ = _cases()[kind]
    out, extra = (p[0], p[1]) if kind == "gaussian" else (p, np.zeros(0))
    a = head.sampler(extra)(out, np.random.default_rng(5))
    b = head.sample(head.phi(out, extra), np.random.default_rng(5))
    assert a.dtype == b.dtype
    np.testing.assert_array_equal(a, b)
