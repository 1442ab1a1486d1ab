"""trpo_ref.value: critic loss and gradient, L-BFGS and Adam fitters, explained variance.

Sections: worked examples with hand-computed numbers; hypothesis properties
(central differences on random architectures, every backend; Adam against the
textbook algorithm); agreement with naive references (normal equations,
PyTorch's Adam); fitters; input validation.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from oracles import EPS64, adam_textbook, central_diff, check_fd, rel_err, ridge_normal_equations
from strategies import critics
from trpo_ref import backend
from trpo_ref.value import Adam, FitInfo, ValueFunction, explained_variance, fit_adam, fit_lbfgs


def _np(x):
    return backend.to_numpy(x)


def _regression_problem(n=256, seed=0):
    """A smooth target a small tanh network can learn: R̂ = sin(s₀) + ½ s₁."""
    rng = np.random.default_rng(seed)
    obs = rng.standard_normal((n, 2))
    return obs, np.sin(obs[:, 0]) + 0.5 * obs[:, 1]


# ------------------------------------------------------------ worked examples
def test_loss_and_grad__linear_worked_example_by_hand(xb):
    # hidden_sizes=(): V(s) = s·W + b with W = [1, 2], b = 0.5.
    # s = [1,0], [0,1], [1,1] -> V = [1.5, 2.5, 3.5]; R̂ = [1, 3, 3.5] -> V − R̂ = [0.5, −0.5, 0]
    # loss = (0.25 + 0.25 + 0) / 3 = 1/6
    # V̄ = 2 (V − R̂)/N = [1/3, −1/3, 0];  ∂/∂W = sᵀ V̄ = [1/3, −1/3];  ∂/∂b = Σ V̄ = 0
    vf = ValueFunction(2, hidden_sizes=())
    w = xb.asarray([1.0, 2.0, 0.5])
    obs = xb.asarray([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    ret = xb.asarray([1.0, 3.0, 3.5])
    np.testing.assert_array_equal(_np(vf.predict(w, obs)), [1.5, 2.5, 3.5])
    loss, grad = vf.loss_and_grad(w, obs, ret)
    np.testing.assert_allclose(_np(loss), 1.0 / 6.0, rtol=1e-15)
    np.testing.assert_allclose(_np(vf.loss(w, obs, ret)), 1.0 / 6.0, rtol=1e-15)
    np.testing.assert_allclose(_np(grad), [1.0 / 3.0, -1.0 / 3.0, 0.0], rtol=1e-15, atol=0)


def test_loss_and_grad__hidden_relu_worked_example_by_hand(xb):
    # obs_dim 1, one relu unit: W0 = 2, b0 = −1, W1 = 3, b1 = 1.
    # s = [1, 0] -> z = [1, −1] -> h = [1, 0] -> V = 3h + 1 = [4, 1]; R̂ = [2, 1]
    # loss = ((4−2)² + 0²) / 2 = 2
    # V̄ = 2 (V − R̂)/2 = [2, 0];  ∂/∂W1 = hᵀV̄ = 2;  ∂/∂b1 = ΣV̄ = 2
    # h̄ = V̄ W1 = [6, 0];  z̄ = h̄ ⊙ [z > 0] = [6, 0];  ∂/∂W0 = sᵀz̄ = 6;  ∂/∂b0 = Σz̄ = 6
    vf = ValueFunction(1, hidden_sizes=(1,), activation="relu")
    w = xb.asarray([2.0, -1.0, 3.0, 1.0])  # [W0, b0, W1, b1]
    loss, grad = vf.loss_and_grad(w, xb.asarray([[1.0], [0.0]]), xb.asarray([2.0, 1.0]))
    assert backend.to_float(loss) == 2.0
    np.testing.assert_array_equal(_np(grad), [6.0, 6.0, 2.0, 2.0])


def test_explained_variance__known_inputs(xb):
    target = xb.asarray([1.0, 2.0, 3.0, 4.0])
    # perfect prediction: Var[0] = 0 exactly -> EV = 1 exactly
    assert explained_variance(target, target) == 1.0
    # predicting the mean: Var[R̂ − mean] = Var[R̂] -> 0 (up to the rounding of two variances)
    assert explained_variance(xb.asarray([2.5] * 4), target) == pytest.approx(0.0, abs=1e-15)
    # residual [0,0,0,1]: mean ¼, Var = (3·(¼)² + (¾)²)/4 = 0.1875; Var[R̂] = 1.25 -> 1 − 0.15 = 0.85
    assert explained_variance(xb.asarray([1.0, 2.0, 3.0, 3.0]), target) == pytest.approx(0.85, rel=1e-15)
    # V = −R̂: residual 2R̂, Var = 4 Var[R̂] -> 1 − 4 = −3 (worse than the mean is negative)
    assert explained_variance(xb.asarray([-1.0, -2.0, -3.0, -4.0]), target) == pytest.approx(-3.0, rel=1e-15)
    # constant targets (one sample included): Var[R̂] = 0 -> nan, as SB3 / baselines
    assert math.isnan(explained_variance(xb.asarray([0.0, 1.0]), xb.asarray([7.0, 7.0])))
    assert math.isnan(explained_variance(xb.asarray([0.0]), xb.asarray([7.0])))


def test_adam__first_step_is_lr_times_sign_of_gradient(xb):
    # At t = 1 the bias corrections undo the (1 − β) factors: m̂ = g, v̂ = g², so
    # the step is −lr·g/(|g| + ε) = −lr·sign(g)·(1 − ε/(|g| + ε)): lr per coordinate,
    # independent of the gradient's scale, short of lr by lr·ε/(|g|+ε) < lr·ε/|g|.
    lr, eps = 1e-3, 1e-8
    g_host = np.array([3.0, -2e-3, 0.0, 1e3, -7.5])
    state = Adam.init(xb.asarray(np.zeros(5)), lr=lr, eps=eps)
    w1, state1 = state.step(xb.asarray(np.zeros(5)), xb.asarray(g_host))  # from w = 0, w1 is the step
    w1 = _np(w1)
    assert state1.t == 1 and state.t == 0  # a new state; the old one is untouched
    assert w1[2] == 0.0  # g = 0: m = v = 0, step 0/(0 + ε) = 0 exactly
    # The closed form to a few ulps (four roundings: m, v, the two corrections, the quotient).
    np.testing.assert_allclose(w1, -lr * g_host / (np.abs(g_host) + eps), rtol=8 * EPS64, atol=0)
    # lr·sign(g), with the documented ε gap as the only slack (plus those ulps).
    gap = lr * eps / np.where(g_host == 0, 1.0, np.abs(g_host)) + 8 * EPS64 * lr
    assert np.all(np.abs(w1 + lr * np.sign(g_host)) <= np.where(g_host == 0, 0.0, gap))


# -------------------------------------------------------------- properties
@given(case=critics())
def test_loss_and_grad__matches_central_differences(xb, case):
    # tanh only: the loss is smooth in w, so fd_step's error model holds
    # (relu's kinks are covered by the worked example above).
    vf, w, obs, ret, rng = case
    v = rng.standard_normal(w.size)
    loss, grad = vf.loss_and_grad(xb.asarray(w), xb.asarray(obs), xb.asarray(ret))
    fd = central_diff(lambda t: vf.loss(t, obs, ret), w, v)  # host float64 reference
    check_fd("value.loss_and_grad", _np(grad) @ v, fd)
    # the loss it returns is the loss
    np.testing.assert_allclose(_np(loss), vf.loss(w, obs, ret), rtol=1e-13)


@given(case=critics())
def test_loss_and_grad__zero_at_perfect_fit(xb, case):
    # R̂ = V_w(s): every residual is exactly 0, so loss and gradient are exactly 0.
    vf, w, obs, _, _ = case
    w_x, obs_x = xb.asarray(w), xb.asarray(obs)
    loss, grad = vf.loss_and_grad(w_x, obs_x, vf.predict(w_x, obs_x))
    assert backend.to_float(loss) == 0.0
    assert not np.any(_np(grad))


@given(p=st.integers(1, 10), steps=st.integers(1, 8), seed=st.integers(0, 2**32 - 1),
       lr=st.floats(1e-4, 1e-1), eps=st.sampled_from([1e-8, 1e-5]))
def test_adam__matches_textbook_algorithm(xb, p, steps, seed, lr, eps):
    # Adam.step orders its operations as PyTorch does (lerp for m, √v/√(1−β₂ᵗ));
    # the oracle follows the paper line by line.  Same arithmetic, reassociated:
    # they agree to a few ulps per step, of |w| ~ 1 (rtol) or of the step lr (atol).
    rng = np.random.default_rng(seed)
    w0 = rng.standard_normal(p)
    grads = [rng.standard_normal(p) * 10.0 ** rng.uniform(-3, 3, p) for _ in range(steps)]
    w, state = xb.asarray(w0), Adam.init(xb.asarray(w0), lr=lr, eps=eps)
    for g in grads:
        w, state = state.step(w, xb.asarray(g))
    assert state.t == steps
    np.testing.assert_allclose(_np(w), adam_textbook(w0, grads, lr, eps=eps), rtol=1e-13, atol=1e-15)


# ------------------------------------------------- agreement with references
def test_adam__agrees_with_torch_optim_adam():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    w0 = rng.standard_normal(7)
    grads = [rng.standard_normal(7) * 10.0 ** rng.uniform(-3, 3, 7) for _ in range(6)]
    param = torch.nn.Parameter(torch.tensor(w0, dtype=torch.float64))
    opt = torch.optim.Adam([param], lr=3e-3, eps=1e-5, foreach=False)
    w, state = w0, Adam.init(w0, lr=3e-3, eps=1e-5)
    for g in grads:
        param.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
        w, state = state.step(w, g)
    torch_state = opt.state[param]
    # Same operations in the same order; PyTorch's CPU kernels may fuse a
    # multiply-add, so allow a few ulps rather than bit equality.
    np.testing.assert_allclose(w, param.detach().numpy(), rtol=4 * EPS64, atol=0)
    np.testing.assert_allclose(state.m, torch_state["exp_avg"].numpy(), rtol=4 * EPS64, atol=1e-300)
    np.testing.assert_allclose(state.v, torch_state["exp_avg_sq"].numpy(), rtol=4 * EPS64, atol=1e-300)
    assert state.t == int(torch_state["step"])


@pytest.mark.parametrize("l2", [0.0, 1e-3, 0.5])
def test_fit_lbfgs__linear_critic_reaches_least_squares_optimum(xb, l2):
    # hidden_sizes=() makes V linear in w: the problem is a (ridge) least-squares
    # quadratic with a unique minimiser, given by the normal equations (oracle).
    rng = np.random.default_rng(1)
    obs = rng.standard_normal((200, 3))
    ret = obs @ np.array([1.0, -2.0, 0.5]) + 3.0 + 0.1 * rng.standard_normal(200)
    vf = ValueFunction(3, hidden_sizes=())
    w_new, info = fit_lbfgs(vf, xb.asarray(np.zeros(4)), xb.asarray(obs), xb.asarray(ret), max_iter=100, l2=l2)
    w_star = ridge_normal_equations(obs, ret, l2)
    # SciPy stops once the gradient's max-norm is ≤ gtol = 1e-5, not at w* itself.
    # On a quadratic the distance left is exactly what that gradient implies,
    # w − w* = H⁻¹ ∇(ℓ + λ₂‖w‖²)(w), H = 2(AᵀA/N + λ₂I): check the stopping rule,
    # then that identity (rounding-level), hence ‖w − w*‖ ≤ 1e-5·‖H⁻¹‖ (measured ≈ 3e-6).
    w_host = _np(w_new)
    _, g = vf.loss_and_grad(w_host, obs, ret)
    g = g + 2 * l2 * w_host
    assert np.max(np.abs(g)) <= 1e-5
    a = np.concatenate([obs, np.ones((200, 1))], axis=1)
    hess = 2 * (a.T @ a / 200 + l2 * np.eye(4))
    np.testing.assert_allclose(w_host - w_star, np.linalg.solve(hess, g), rtol=0, atol=1e-12)
    assert info.state is None and info.n_steps >= 1
    assert info.loss_after < info.loss_before


def test_fit_adam__full_batch_single_epoch_is_one_adam_step(xb):
    # batch_size ≥ N and one epoch: one step on the full-batch gradient; the
    # permutation only reorders the gradient's sum (rounding-level difference).
    obs, ret = _regression_problem(n=50)
    vf = ValueFunction(2, hidden_sizes=(8,))
    w0 = vf.init_params(0)
    _, g = vf.loss_and_grad(w0, obs, ret)
    w_ref, _ = Adam.init(w0, lr=0.01).step(w0, g)
    w_new, info = fit_adam(vf, xb.asarray(w0), xb.asarray(obs), xb.asarray(ret), epochs=1, batch_size=64,
                           lr=0.01, rng=0)
    assert info.n_steps == 1 and info.state.t == 1
    np.testing.assert_allclose(_np(w_new), w_ref, rtol=1e-12, atol=1e-15)


# ------------------------------------------------------------------ fitters
def test_fitters__lower_the_loss_on_a_learnable_problem(xb):
    obs, ret = _regression_problem()
    vf = ValueFunction(2, hidden_sizes=(16,))
    w0, obs_x, ret_x = xb.asarray(vf.init_params(0)), xb.asarray(obs), xb.asarray(ret)
    w_l, info_l = fit_lbfgs(vf, w0, obs_x, ret_x, max_iter=50)
    w_a, info_a = fit_adam(vf, w0, obs_x, ret_x, epochs=20, batch_size=64, lr=1e-2, rng=0)
    assert isinstance(info_l, FitInfo) and isinstance(info_a, FitInfo)
    assert info_l.loss_before == info_a.loss_before == pytest.approx(backend.to_float(vf.loss(w0, obs_x, ret_x)))
    # Targets have variance ≈ 0.70 and the initial loss is ≈ 0.92; measured
    # after: L-BFGS ≈ 0.0012, Adam ≈ 0.039 (EV 0.998 and 0.94).  The bounds
    # leave a factor of ~5 or more: they catch a fitter that does not fit.
    assert info_l.loss_after < 0.02 * info_l.loss_before
    assert info_a.loss_after < 0.2 * info_a.loss_before
    assert info_l.loss_after == pytest.approx(backend.to_float(vf.loss(w_l, obs_x, ret_x)), rel=1e-12)
    assert explained_variance(vf.predict(w_l, obs_x), ret_x) > 0.9
    assert explained_variance(vf.predict(w_a, obs_x), ret_x) > 0.5


@pytest.mark.parametrize("fit", ["lbfgs", "adam"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fitters__return_weights_on_the_input_backend_and_dtype(xb, fit, dtype):
    obs, ret = _regression_problem(n=40)
    vf = ValueFunction(2, hidden_sizes=(4,))
    dt = getattr(xb.xp, dtype)
    w0 = xb.asarray(vf.init_params(0), dtype=dt)
    if fit == "lbfgs":
        w_new, info = fit_lbfgs(vf, w0, xb.asarray(obs, dtype=dt), xb.asarray(ret, dtype=dt), max_iter=5)
    else:
        w_new, info = fit_adam(vf, w0, xb.asarray(obs, dtype=dt), xb.asarray(ret, dtype=dt), epochs=2, rng=0)
        assert info.state.m.dtype == dt
    assert w_new.dtype == dt and tuple(w_new.shape) == (vf.num_params,)
    assert backend.namespace(w_new) is backend.namespace(w0)
    assert backend.device_of(w_new) == backend.device_of(w0)
    assert info.loss_after < info.loss_before


def test_fit_adam__minibatch_count_and_reproducibility(xb):
    # N = 10, batch_size = 4: slices of 4, 4, 2 per epoch (the last one shorter, as SB3).
    obs, ret = _regression_problem(n=10)
    vf = ValueFunction(2, hidden_sizes=(3,))
    w0 = vf.init_params(0)
    args = (vf, xb.asarray(w0), xb.asarray(obs), xb.asarray(ret))
    w1, info1 = fit_adam(*args, epochs=3, batch_size=4, rng=np.random.default_rng(5))
    w2, info2 = fit_adam(*args, epochs=3, batch_size=4, rng=np.random.default_rng(5))
    assert info1.n_steps == info1.state.t == 9
    np.testing.assert_array_equal(_np(w1), _np(w2))  # same host draws, same arithmetic
    # Every backend sees the host's permutations: it agrees with NumPy to rounding.
    w_np, _ = fit_adam(vf, w0, obs, ret, epochs=3, batch_size=4, rng=np.random.default_rng(5))
    np.testing.assert_allclose(_np(w1), w_np, rtol=1e-12, atol=1e-15)
    # A different draw gives different minibatches, hence different weights.
    w3, _ = fit_adam(*args, epochs=3, batch_size=4, rng=np.random.default_rng(6))
    assert not np.array_equal(_np(w1), _np(w3))


def test_adam_state__round_trip_through_npz_resumes_exactly(xb, tmp_path):
    obs, ret = _regression_problem(n=30)
    vf = ValueFunction(2, hidden_sizes=(5,))
    obs_x, ret_x = xb.asarray(obs), xb.asarray(ret)
    w1, info = fit_adam(vf, xb.asarray(vf.init_params(0)), obs_x, ret_x, epochs=2, batch_size=8, rng=1)
    state = info.state
    np.savez(tmp_path / "adam.npz", **state.to_dict())
    with np.load(tmp_path / "adam.npz") as f:
        restored = Adam.from_dict(dict(f), xp=xb.xp, device=xb.device)
    assert (restored.t, restored.lr, restored.beta1, restored.beta2, restored.eps) == \
        (state.t, state.lr, state.beta1, state.beta2, state.eps)
    w_a, info_a = fit_adam(vf, w1, obs_x, ret_x, epochs=2, batch_size=8, rng=2, state=state)
    w_b, info_b = fit_adam(vf, w1, obs_x, ret_x, epochs=2, batch_size=8, rng=2, state=restored)
    # bit for bit: the restored moments are the same numbers on the same backend
    np.testing.assert_array_equal(_np(w_a), _np(w_b))
    np.testing.assert_array_equal(_np(info_a.state.m), _np(info_b.state.m))
    np.testing.assert_array_equal(_np(info_a.state.v), _np(info_b.state.v))
    assert info_a.state.t == info_b.state.t == state.t + 8
    # and resuming differs from restarting (the moments matter)
    w_c, _ = fit_adam(vf, w1, obs_x, ret_x, epochs=2, batch_size=8, rng=2)
    assert not np.array_equal(_np(w_a), _np(w_c))


def _fit_adam_composed(vf, w, obs, ret, *, epochs, batch_size, lr, rng, state):
    """fit_adam written out from its parts: per minibatch, the rows taken by index, the generic
    ValueFunction._loss_and_grad (MLP.forward and MLP.vjp) and Adam.step (one new state per step)."""
    n = obs.shape[0]
    perms = [rng.permutation(n) for _ in range(epochs)]
    for perm in perms:
        for start in range(0, n, batch_size):
            idx = perm[start:start + batch_size]
            _, g = vf._loss_and_grad(w, np.take(obs, idx, axis=0), np.take(ret, idx, axis=0))
            w, state = state.step(w, g)
    return w, state


@pytest.mark.parametrize("obs_dim, hidden, n, batch_size, dtype", [
    (4, (64, 64), 2048, 128, np.float64),  # CartPole-v1's critic and schedule
    (11, (64, 64), 300, 128, np.float64),  # Hopper's obs; a last minibatch of 44 rows
    (3, (16, 8, 5), 257, 128, np.float64),  # three hidden layers; a last minibatch of one row
    (2, (), 50, 16, np.float64),  # linear critic (no hidden layer)
    (5, (32,), 200, 64, np.float32),  # float32
    (4, (64, 64), 100, 256, np.float64),  # batch larger than N
])
def test_fit_adam__numpy_path_is_bit_for_bit_the_generic_pass_and_adam_step(obs_dim, hidden, n, batch_size, dtype):
    # fit_adam's NumPy loop (value._MinibatchAdamNumpy: buffers, out=, rows gathered per epoch, Adam in
    # place) must give the same bits as the generic operations it replaces; issue 14 keeps every number of
    # a seeded run.  Two fits in a row, the second resuming the first's Adam state (t > 0), as training does.
    from trpo_ref.value import _MinibatchAdamNumpy

    data = np.random.default_rng(obs_dim + n)
    obs = data.standard_normal((n, obs_dim)).astype(dtype)
    ret = (3.0 * np.tanh(obs @ data.standard_normal(obs_dim)) + data.standard_normal(n)).astype(dtype)
    vf = ValueFunction(obs_dim, hidden_sizes=hidden)
    w0 = vf.init_params(1, dtype=dtype)
    w0_copy = w0.copy()
    state0 = Adam.init(w0, lr=3e-3, eps=1e-5)
    assert _MinibatchAdamNumpy.applies(vf, w0, obs, ret, state0)  # the path under test is the one taken
    w, state, w_ref, state_ref = w0, state0, w0, state0
    for fit in range(2):
        w, info = fit_adam(vf, w, obs, ret, epochs=3, batch_size=batch_size, lr=3e-3,
                           rng=np.random.default_rng(fit), state=state)
        state = info.state
        w_ref, state_ref = _fit_adam_composed(vf, w_ref, obs, ret, epochs=3, batch_size=batch_size, lr=3e-3,
                                              rng=np.random.default_rng(fit), state=state_ref)
        assert w.dtype == dtype and state.m.dtype == dtype
        assert w.tobytes() == w_ref.tobytes()
        assert state.m.tobytes() == state_ref.m.tobytes() and state.v.tobytes() == state_ref.v.tobytes()
        assert state.t == state_ref.t == (fit + 1) * 3 * math.ceil(n / batch_size) == info.n_steps * (fit + 1)
        assert info.loss_after == backend.to_float(vf.loss(w_ref, obs, ret))
    assert not np.array_equal(w, w0)  # it did move
    np.testing.assert_array_equal(w0, w0_copy)  # the caller's weights are left as they were
    np.testing.assert_array_equal(state0.m, np.zeros_like(w0))


def test_adam__numpy_scalar_state_keeps_float32_weights_float32_on_both_paths():
    # A state whose t and hyperparameters are NumPy scalars (np.int64 is what a checkpoint's array
    # holds) is stored as Python numbers: otherwise NumPy 2 promotes the generic loop's float32
    # weights to float64 while the in-place NumPy loop stays float32 (the two then differ ~7e-8).
    from trpo_ref.value import _MinibatchAdamNumpy

    obs, ret = _regression_problem(n=70)
    obs, ret = obs.astype(np.float32), ret.astype(np.float32)
    vf = ValueFunction(2, hidden_sizes=(8, 8))
    w0 = vf.init_params(0, dtype=np.float32)
    base = Adam.init(w0)
    state = Adam(base.m, base.v, t=np.int64(3), lr=np.float64(1e-3), beta1=np.float64(0.9),
                 beta2=np.float64(0.999), eps=np.float64(1e-8))
    assert [type(x) for x in (state.t, state.lr, state.beta1, state.beta2, state.eps)] == [int] + [float] * 4
    assert _MinibatchAdamNumpy.applies(vf, w0, obs, ret, state)
    w, info = fit_adam(vf, w0, obs, ret, epochs=2, batch_size=32, lr=1e-3, rng=np.random.default_rng(3),
                       state=state)
    w_ref, state_ref = _fit_adam_composed(vf, w0, obs, ret, epochs=2, batch_size=32, lr=1e-3,
                                          rng=np.random.default_rng(3), state=state)
    assert w.dtype == w_ref.dtype == np.float32
    assert w.tobytes() == w_ref.tobytes() and info.state.v.tobytes() == state_ref.v.tobytes()


def test_fit_adam__relu_critic_takes_the_generic_loop_with_the_same_numbers():
    from trpo_ref.value import _MinibatchAdamNumpy

    obs, ret = _regression_problem(n=70)
    vf = ValueFunction(2, hidden_sizes=(8, 8), activation="relu")
    w0 = vf.init_params(0)
    state = Adam.init(w0)
    assert not _MinibatchAdamNumpy.applies(vf, w0, obs, ret, state)
    w, info = fit_adam(vf, w0, obs, ret, epochs=2, batch_size=32, lr=1e-3, rng=np.random.default_rng(3))
    w_ref, state_ref = _fit_adam_composed(vf, w0, obs, ret, epochs=2, batch_size=32, lr=1e-3,
                                          rng=np.random.default_rng(3), state=state)
    assert w.tobytes() == w_ref.tobytes() and info.state.v.tobytes() == state_ref.v.tobytes()


def test_fit_adam__lr_argument_replaces_the_states_lr():
    # as SB3 resets the optimizer's lr from its schedule on every update
    obs, ret = _regression_problem(n=8)
    vf = ValueFunction(2, hidden_sizes=(2,))
    w0 = vf.init_params(0)
    state = Adam.init(w0, lr=0.5, eps=1e-5)
    _, info = fit_adam(vf, w0, obs, ret, epochs=1, lr=1e-4, rng=0, state=state)
    assert info.state.lr == 1e-4 and info.state.eps == 1e-5 and state.lr == 0.5


# ----------------------------------------------------------- architecture/init
def test_init_params__orthogonal_with_sb3_value_gains_and_spec_round_trip():
    vf = ValueFunction(3, hidden_sizes=(8, 8))
    named = vf.mlp.unflatten(vf.init_params(0))
    np.testing.assert_allclose(named["W0"] @ named["W0"].T, 2.0 * np.eye(3), atol=1e-12)  # gain √2
    np.testing.assert_allclose(named["W1"].T @ named["W1"], 2.0 * np.eye(8), atol=1e-12)  # gain √2
    np.testing.assert_allclose(named["W2"].T @ named["W2"], [[1.0]], atol=1e-12)  # value head: gain 1
    assert not any(np.any(named[b]) for b in ("b0", "b1", "b2"))
    assert vf.init_params(0, dtype="float32").dtype == np.float32
    np.testing.assert_array_equal(vf.init_params(7), vf.init_params(7))
    spec = json.loads(json.dumps(vf.spec()))
    assert spec == {"kind": "value", "obs_dim": 3, "hidden_sizes": [8, 8], "activation": "tanh"}
    again = ValueFunction.from_spec(spec)
    assert again.spec() == vf.spec() and again.num_params == vf.num_params == 3 * 8 + 8 + 8 * 8 + 8 + 8 + 1


# ---------------------------------------------------------------- validation
VF = ValueFunction(3, hidden_sizes=(4,))
W = VF.init_params(0)
P = VF.num_params  # 3·4 + 4 + 4 + 1 = 21
OBS = np.zeros((5, 3))
RET = np.zeros(5)

# every entry point that takes (w, obs, ret)
_WITH_RET = {
    "loss": lambda w, o, r: VF.loss(w, o, r),
    "loss_and_grad": lambda w, o, r: VF.loss_and_grad(w, o, r),
    "fit_lbfgs": lambda w, o, r: fit_lbfgs(VF, w, o, r),
    "fit_adam": lambda w, o, r: fit_adam(VF, w, o, r, rng=0),
}
_BAD_INPUTS = [
    ("w_shape", lambda: (W[:-1], OBS, RET), rf"w must have shape \({P},\)"),
    ("w_int", lambda: (np.zeros(P, dtype=np.int64), OBS, RET), r"w must be a float32 or float64"),
    ("w_nan", lambda: (np.where(np.arange(P) == 3, np.nan, W), OBS, RET), r"w contains NaN or inf"),
    ("obs_width", lambda: (W, np.zeros((5, 2)), RET), r"obs must have shape \(N, 3\)"),
    ("obs_1d", lambda: (W, np.zeros(3), RET), r"obs must have shape \(N, 3\)"),
    ("obs_empty", lambda: (W, np.zeros((0, 3)), np.zeros(0)), r"obs is empty"),
    ("obs_inf", lambda: (W, np.full((5, 3), np.inf), RET), r"obs contains NaN or inf"),
    ("ret_len", lambda: (W, OBS, np.zeros(4)), r"ret must have shape \(5,\)"),
    # (N, 1) targets would broadcast against (N,) values into an (N, N) residual
    ("ret_column", lambda: (W, OBS, np.zeros((5, 1))), r"ret must have shape \(5,\)"),
    ("ret_nan", lambda: (W, OBS, np.array([0, 0, np.nan, 0, 0])), r"ret contains NaN or inf"),
]


@pytest.mark.parametrize("entry", list(_WITH_RET))
@pytest.mark.parametrize("name,make,match", _BAD_INPUTS, ids=[b[0] for b in _BAD_INPUTS])
def test_validation__bad_inputs_name_the_argument_and_shape(entry, name, make, match):
    with pytest.raises(ValueError, match=match):
        _WITH_RET[entry](*make())


def test_validation__predict_checks_w_and_obs(xb):
    with pytest.raises(ValueError, match=r"obs must have shape \(N, 3\)"):
        VF.predict(xb.asarray(W), xb.asarray(np.zeros((2, 4))))
    with pytest.raises(ValueError, match=r"obs contains NaN or inf"):
        VF.predict(xb.asarray(W), xb.asarray(np.full((2, 3), np.nan)))


@pytest.mark.parametrize("call,match", [
    (lambda: fit_lbfgs(VF, W, OBS, RET, max_iter=0), r"max_iter must be a positive integer"),
    (lambda: fit_lbfgs(VF, W, OBS, RET, l2=-1e-3), r"l2 must be a finite number >= 0"),
    (lambda: fit_lbfgs(VF, W, OBS, RET, l2=float("nan")), r"l2 must be a finite number >= 0"),
    (lambda: fit_adam(VF, W, OBS, RET, epochs=0), r"epochs must be a positive integer"),
    (lambda: fit_adam(VF, W, OBS, RET, batch_size=0), r"batch_size must be a positive integer"),
    (lambda: fit_adam(VF, W, OBS, RET, batch_size=2.5), r"batch_size must be a positive integer"),
    (lambda: fit_adam(VF, W, OBS, RET, state=Adam.init(np.zeros(3))), rf"state must hold moments of shape \({P},\)"),
    (lambda: fit_adam(VF, W, OBS, RET, state=Adam.init(np.zeros(P, np.float32))), r"dtype float64"),
    (lambda: fit_adam(VF, W, OBS, RET, state={"m": W}), r"state must be an Adam state"),
    (lambda: Adam.init(W, beta1=1.0), r"beta1 must be in \[0, 1\)"),
    (lambda: Adam.init(W, lr=0.0), r"lr must be a finite number > 0"),
    (lambda: Adam.init(W, eps=-1.0), r"eps must be a finite number >= 0"),
    (lambda: Adam.init(W).step(W[:3], W[:3]), rf"w and grad must have shape \({P},\)"),
    (lambda: Adam.from_dict({"m": W, "t": 0}), r"missing \['v', 'lr', 'beta1', 'beta2', 'eps'\]"),
    (lambda: explained_variance(np.zeros(3), np.zeros(4)), r"pred must have shape \(4,\)"),
    (lambda: explained_variance(np.zeros((2, 2)), np.zeros((2, 2))), r"target must have shape \(N,\)"),
    (lambda: explained_variance(np.zeros(0), np.zeros(0)), r"target must have shape \(N,\) with N >= 1"),
    (lambda: ValueFunction(0), r"obs_dim must be >= 1"),
    (lambda: ValueFunction.from_spec({"kind": "gaussian"}), r"spec kind must be 'value'"),
    (lambda: ValueFunction.from_spec({"kind": "value", "obs_dim": 3}), r"missing the field 'hidden_sizes'"),
])
def test_validation__bad_arguments_raise_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_validation__checks_do_not_reject_good_edge_cases():
    # one sample is a valid batch; integer observations are cast to w's dtype
    assert VF.loss(W, np.zeros((1, 3)), np.zeros(1)).shape == ()
    v = VF.predict(W, np.ones((2, 3), dtype=np.int64))
    assert v.dtype == np.float64 and v.shape == (2,)
    assert rel_err(VF.predict(W, np.ones((2, 3))), v) == 0.0
