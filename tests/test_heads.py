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
    out, _ = policy.mlp.forward(theta[: policy.mlp.num_params], obs)
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


@pytest.mark.parametrize("space", [gym.spaces.Box(-1, 1, (2, 2)), gym.spaces.Box(-1, 1, ()),
                                   gym.spaces.Dict({"a": gym.spaces.Discrete(2)}), gym.spaces.MultiBinary([2, 2]),
                                   gym.spaces.Discrete(3, start=1), gym.spaces.MultiDiscrete([2, 3], start=[1, 0])],
                         ids=["box-2d", "box-0d", "dict", "multibinary-2d", "discrete-start-1", "multidiscrete-start"])
def test_head_for_space__unsupported_space_is_a_clear_error(space):
    # Refused with one line naming the space, never an IndexError or a silently dropped start.
    with pytest.raises(ValueError, match="no policy head for the action space"):
        head_for_space(space)


def test_head_for_space__a_subclass_of_a_space_gets_that_spaces_head():
    class MyBox(gym.spaces.Box):
        pass

    class MyDiscrete(gym.spaces.Discrete):
        pass

    assert head_for_space(MyBox(-1, 1, (2,))).kind == "gaussian"
    assert head_for_space(MyDiscrete(3)).kind == "categorical"


def test_public_classes__kind_and_continuous_actions_are_class_attributes():
    assert GaussianMLPPolicy.kind == "gaussian" and GaussianMLPPolicy.continuous_actions is True
    assert CategoricalMLPPolicy.continuous_actions is False
    assert [c.kind for c in (CategoricalMLPPolicy, MultiCategoricalMLPPolicy, BernoulliMLPPolicy)] == [
        "categorical", "multicategorical", "bernoulli"]


def test_mlp_policy__refuses_something_that_is_not_a_head():
    with pytest.raises(ValueError, match="head must be a trpo_ref.heads.Head"):
        MLPPolicy(3, "gaussian")
    with pytest.raises(ValueError, match="unknown policy kind 'beta'"):
        head_from_spec({"kind": "beta", "out_dim": 2})


def test_gaussian_head__sampler_with_sigma_once_is_sample_bit_for_bit():
    # The rollout's per-step draw computes σ = exp(log σ) once (DiagGaussian.sample_std); the draws are the
    # bits of the head's sample, which computes σ at every call.  (The logits heads' sampler is their sample.)
    head, (mean, log_std), _, _, _ = _cases()["gaussian"]
    log_std = log_std + 0.3  # σ ≠ 1 in every dimension
    a = head.sampler(log_std)(mean, np.random.default_rng(5))
    b = head.sample(head.phi(mean, log_std), np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)
    assert np.all(a != mean)


def _all_actions(head):
    """Every action of a discrete head, as rows."""
    import itertools
    if head.kind == "categorical":
        return [np.array(k) for k in range(head.n_actions)]
    return [np.array(a) for a in itertools.product(*[range(b) for b in head.bounds])]


@pytest.mark.parametrize("kind", ["categorical", "multicategorical", "bernoulli"])
def test_discrete_head__mode_is_the_most_probable_action(kind):
    head, p, _, _, _ = _cases()[kind]
    acts = _all_actions(head)
    logp = np.stack([head.log_prob(p, np.broadcast_to(a, (N, *a.shape)).copy()) for a in acts], axis=1)
    best = np.array([acts[i] for i in np.argmax(logp, axis=1)])
    np.testing.assert_array_equal(head.mode(p), best.reshape(head.act_shape(N)))
    assert len({tuple(np.atleast_1d(r)) for r in best}) > 1  # the batch does not have one mode throughout


def test_gaussian_head__mode_is_the_mean_and_maximises_the_density():
    head, p, _, _, _ = _cases()["gaussian"]
    m = head.mode(p)
    np.testing.assert_array_equal(m, p[0])
    for d in np.random.default_rng(3).normal(size=(5, 1, 3)) * 1e-3:
        assert np.all(head.log_prob(p, m) > head.log_prob(p, m + d))


def test_heads__term_sizes_worked_examples_by_hand():
    # Gaussian, one dimension: μ_p = 1, log σ_p = log 2, μ_q = 0, log σ_q = 0:
    # |log 2| + 0 + (4 + 1)/2 + 1/2 = 3 + log 2; entropy terms |log 2| + ½ log 2πe.
    g = GaussianHead(1)
    p, q = (np.array([[1.0]]), np.array([np.log(2.0)])), (np.array([[0.0]]), np.array([0.0]))
    np.testing.assert_allclose(g.kl_terms(p, q), [3 + np.log(2.0)], rtol=1e-15)
    np.testing.assert_allclose(g.entropy_terms(p, 1), np.log(2.0) + 0.5 * np.log(2 * np.pi * np.e), rtol=1e-15)
    # Categorical, p = (½, ½), q = (¼, ¾): Σ p(|log p| + |log q|) = ½(log 2 + log 4) + ½(log 2 + log 4/3).
    c = CategoricalHead(2)
    zp, zq = np.log([[0.5, 0.5]]), np.log([[0.25, 0.75]])
    want = 0.5 * (np.log(2) + np.log(4)) + 0.5 * (np.log(2) + np.log(4 / 3))
    np.testing.assert_allclose(c.kl_terms(zp, zq), [want], rtol=1e-15)
    np.testing.assert_allclose(c.entropy_terms(zp, 1), np.log(2), rtol=1e-15)
    # Bernoulli, one bit, σ(z_p) = ½, σ(z_q) = ¼: the same outcome probabilities as the categorical above.
    b = BernoulliHead(1)
    np.testing.assert_allclose(b.kl_terms(np.array([[0.0]]), np.array([[np.log(1 / 3)]])), [want], rtol=1e-14)


def test_gaussian_head__check_act_casts_float_actions_to_thetas_dtype():
    head = GaussianHead(3)
    got = head.check_act(np.zeros((N, 3), dtype=np.float32), N, np.zeros(1))
    assert got.dtype == np.float64
    got = head.check_act(np.zeros((N, 3)), N, np.zeros(1, dtype=np.float32))
    assert got.dtype == np.float32
