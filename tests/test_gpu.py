r"""NumPy vs CuPy agreement of one whole trpo_step (issue 6); skipped without a GPU.

Tolerance
---------
Both backends run the same algorithm on the same host-drawn data; they differ
only in the order of floating-point sums (BLAS kernels, reductions).  The step
direction x solves (F + λI)x = g by CG, whose sensitivity to a relative
perturbation ε in the products and in g is the condition number

.. math:: \kappa = \frac{\lambda_{max}(F) + \lambda}{\lambda_{min}(F) + \lambda}
          \le \frac{\lambda_{max}(F) + \lambda}{\lambda},

(F is positive semi-definite, so λ_min(F) + λ ≥ λ).  A backward-stable
product of N-term sums perturbs each product by about ε·√N relatively (random
rounding; ε the unit roundoff of the dtype), and CG compounds at most one such
perturbation per iteration.  So

.. math:: \frac{\|x_{cupy} - x_{numpy}\|}{\|x_{numpy}\|} \lesssim
          k_{cg}\,\kappa\,\sqrt N\,\varepsilon,

and θ_new = θ_old + α^j β x inherits the same relative error on the step
(β = √(2δ / xᵀ(F+λI)x) is a smooth function of x).  The test measures
λ_max(F) by power iteration on NumPy, so the tolerance is computed, not
guessed; a factor 10 covers the constants of the bound.  The line search's
accept/reject decision is discrete: the problem is chosen so that the KL of
the accepted try is well inside the trust region (checked below), so rounding
cannot flip it.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import trpo_ref as tr
from trpo_ref import backend
from trpo_ref.trpo import Batch, TRPOConfig, trpo_step


def _cuda():
    try:
        return backend.get_namespace("cuda")
    except ValueError as exc:
        pytest.skip(f"no CuPy GPU: {exc}")


def _lambda_max(op, p: int, iters: int = 100) -> float:
    """Largest eigenvalue of the symmetric PSD operator ``op`` by power iteration (NumPy)."""
    v = np.random.default_rng(7).standard_normal(p)
    lam = 0.0
    for _ in range(iters):
        w = op(v)
        lam = float(np.linalg.norm(w))
        v = w / lam
    return lam


def _problem(n=4096, seed=0):
    rng = np.random.default_rng(seed)
    pi = tr.GaussianMLPPolicy(17, 6, hidden_sizes=(64, 64))
    theta = pi.init_params(seed)
    obs = rng.standard_normal((n, 17))
    act, logp = pi.sample(theta, obs, rng)
    adv = rng.standard_normal(n)
    return pi, theta, Batch(obs=obs, act=act, adv=adv, logp_old=logp)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("preset", ["paper", "sb3-contrib"])
def test_trpo_step__cupy_agrees_with_numpy_within_conditioning_bound(dtype, preset):
    xp, dev = _cuda()
    pi, theta, batch = _problem()
    config = TRPOConfig.preset(preset)
    eps = float(np.finfo(dtype).eps) / 2  # unit roundoff

    theta_np = theta.astype(dtype)
    batch_np = Batch(*(np.asarray(a, dtype=dtype) for a in (batch.obs, batch.act, batch.adv, batch.logp_old)))
    new_np, info_np = trpo_step(pi, theta_np, batch_np, config)

    move = lambda a: backend.from_numpy(a, xp, dev)  # noqa: E731
    new_cp, info_cp = trpo_step(pi, move(theta_np), Batch(*(move(a) for a in (batch_np.obs, batch_np.act, batch_np.adv, batch_np.logp_old))), config)

    # Conditioning of the damped Fisher at θ_old, measured (float64, NumPy)
    fisher = pi.fisher_operator(theta, batch.obs)
    lam_max = _lambda_max(fisher, pi.num_params)
    kappa = (lam_max + config.cg_damping) / config.cg_damping
    tol = 10 * config.cg_iters * kappa * math.sqrt(len(batch)) * eps
    assert tol < 0.1, f"problem too ill-conditioned for a meaningful test (κ = {kappa:.3g}, tol = {tol:.3g})"

    # the decision must be the same and not at the boundary of the trust region
    assert info_cp.status == info_np.status and info_cp.accepted_index == info_np.accepted_index
    if info_np.status == "accepted":
        assert abs(info_np.kl - config.max_kl) > 10 * tol * config.max_kl

    step_np = new_np - theta_np
    step_cp = backend.to_numpy(new_cp) - theta_np
    x_np, x_cp = info_np.step_dir, backend.to_numpy(info_cp.step_dir)
    g_np, g_cp = info_np.g, backend.to_numpy(info_cp.g)
    # g: one vjp, no CG: √N ε relative (times 10 for constants)
    np.testing.assert_allclose(g_cp, g_np, rtol=0, atol=10 * math.sqrt(len(batch)) * eps * np.linalg.norm(g_np))
    # x and the step: the κ-bound above, in norm (entries near 0 make elementwise rtol meaningless)
    assert np.linalg.norm(x_cp - x_np) <= tol * np.linalg.norm(x_np)
    assert np.linalg.norm(step_cp - step_np) <= tol * max(np.linalg.norm(step_np), np.finfo(dtype).tiny)
    assert math.isclose(info_cp.beta, info_np.beta, rel_tol=tol) or info_np.status != "accepted"
