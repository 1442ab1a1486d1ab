"""API inputs that used to be accepted silently or failed with a cryptic error (review of the trainer, item 7)."""

import numpy as np
import pytest

import trpo_ref as tr
from trpo_ref.cli import main


@pytest.fixture
def pi_theta_obs():
    pi = tr.GaussianMLPPolicy(3, 2, hidden_sizes=(4,))
    return pi, pi.init_params(seed=0), np.random.default_rng(0).standard_normal((5, 3))


@pytest.mark.parametrize("fields, name", [
    ((1, 0.5, 0.0), "act"),            # Python scalars: was AttributeError ('int' object has no attribute 'shape')
    (([1, 0], [0.5, 0.1], [0.0, 0.0]), "act"),  # lists
    ((np.zeros(2), [0.5, 0.1], np.zeros(2)), "adv"),
])
def test_batch__python_scalars_or_lists_are_a_clear_typeerror(fields, name):
    with pytest.raises(TypeError, match=rf"batch\.{name} must be an array .*numpy\.asarray"):
        tr.Batch(np.zeros((2, 3)), *fields)


@pytest.mark.parametrize("dtype", [np.int64, np.float16])
def test_fvp__integer_or_float16_theta_is_refused(pi_theta_obs, dtype):
    pi, theta, obs = pi_theta_obs
    with pytest.raises(ValueError, match=f"float32 or float64.*{np.dtype(dtype).name}"):
        pi.fisher_vector_product(theta.astype(dtype), obs, np.ones(pi.num_params))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_fvp__non_finite_vector_is_refused(pi_theta_obs, bad):
    pi, theta, obs = pi_theta_obs
    v = np.ones(pi.num_params)
    v[3] = bad
    with pytest.raises(ValueError, match="v contains NaN or inf"):
        pi.fisher_vector_product(theta, obs, v)


@pytest.mark.parametrize("hidden", [(64.5,), (64, 0), (True,), ("64",), "64"])
def test_policy__hidden_sizes_must_be_integers(hidden):
    with pytest.raises(ValueError, match="hidden_sizes must be a sequence of integers >= 1"):
        tr.CategoricalMLPPolicy(3, 2, hidden_sizes=hidden)


def test_policy__numpy_integer_hidden_sizes_are_fine():
    assert tr.CategoricalMLPPolicy(3, 2, hidden_sizes=(np.int64(4),)).hidden_sizes == (4,)


def test_train__settings_under_which_no_update_can_happen_are_refused(capsys, tmp_path):
    # --n-steps 1 with one env: one sample per batch, whose normalised advantage is 0 (every step skipped)
    rc = main(["train", "CartPole-v1", "--n-steps", "1", "--total-steps", "8", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "n_envs * n_steps = 1" in err[0]
    assert not (tmp_path / "r").exists()
    # two envs give two samples: allowed
    from trpo_ref.train import build_configs

    cfg, _ = build_configs("CartPole-v1", "sb3-contrib", options={"n_steps": 1, "n_envs": 2})
    assert cfg.steps_per_iteration == 2
