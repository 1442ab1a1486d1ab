"""trpo_ref.mlp: layout, initialisation, forward, vjp and jvp.

Sections: worked examples; hypothesis properties (central differences on
random architectures, every backend); layout and init.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from oracles import central_diff, check_fd
from strategies import nets
from trpo_ref import backend
from trpo_ref.mlp import MLP, MLPCache


# ------------------------------------------------------------ worked examples
def test_forward__worked_example_by_hand(xb):
    # One hidden tanh unit: x=[1, 2], W0=[[0.5],[0.25]], b0=[0] -> z=1, h=tanh(1)
    # output: y = 2*h + 1 = 2*tanh(1) + 1 = 2.5231883119115293
    net = MLP((2, 1, 1), "tanh")
    theta = xb.asarray([0.5, 0.25, 0.0, 2.0, 1.0])
    out, _ = net.forward(theta, xb.asarray([[1.0, 2.0]]))
    np.testing.assert_allclose(backend.to_numpy(out), [[2.5231883119115293]], rtol=1e-15)


def test_vjp_jvp__worked_example_by_hand(xb):
    # Same net. dy/dW1 = h = tanh(1) = 0.7615941559557649; dy/db1 = 1;
    # dy/dz = W1 (1 - h²) = 2 * 0.41997434161402614 = 0.8399486832280523
    # dy/dW0 = x * dy/dz = [0.8399486832280523, 1.6798973664561046]; dy/db0 = 0.8399...
    # dy/dx = W0 * dy/dz = [0.41997434161402614, 0.20998717080701307]
    net = MLP((2, 1, 1), "tanh")
    theta = xb.asarray([0.5, 0.25, 0.0, 2.0, 1.0])
    _, cache = net.forward(theta, xb.asarray([[1.0, 2.0]]))
    theta_bar, x_bar = net.vjp(cache, xb.asarray([[1.0]]))
    expected = [0.8399486832280523, 1.6798973664561046, 0.8399486832280523, 0.7615941559557649, 1.0]
    np.testing.assert_allclose(backend.to_numpy(theta_bar), expected, rtol=1e-14)
    np.testing.assert_allclose(backend.to_numpy(x_bar), [[0.41997434161402614, 0.20998717080701307]], rtol=1e-14)
    # jvp along e_{W1}: dy = h
    y_dot = net.jvp(cache, xb.asarray([0.0, 0.0, 0.0, 1.0, 0.0]))
    np.testing.assert_allclose(backend.to_numpy(y_dot), [[0.7615941559557649]], rtol=1e-15)


def test_relu__worked_example_by_hand(xb):
    # relu net: x=[1,-1], W0=[[1,-1],[1,1]] -> z=[0.0+.., ...]; use z=[2,-2]:
    # W0=[[1,-1],[-1,1]] gives z=[2,-2], h=[2,0]; W1=[[3],[5]], b1=[0] -> y=6.
    net = MLP((2, 2, 1), "relu")
    theta = xb.asarray([1.0, -1.0, -1.0, 1.0, 0.0, 0.0, 3.0, 5.0, 0.0])
    out, cache = net.forward(theta, xb.asarray([[1.0, -1.0]]))
    np.testing.assert_allclose(backend.to_numpy(out), [[6.0]], rtol=0, atol=0)
    theta_bar, _ = net.vjp(cache, xb.asarray([[1.0]]))
    # dy/dW0[:,0] = x * W1[0] = [3,-3]; the dead unit gets 0; dy/dW1 = h = [2, 0]
    np.testing.assert_array_equal(backend.to_numpy(theta_bar), [3.0, 0.0, -3.0, 0.0, 3.0, 0.0, 2.0, 0.0, 1.0])


# -------------------------------------------------------------- properties
@given(case=nets())
def test_vjp__matches_central_differences_in_theta_and_x(xb, case):
    net, theta, x, rng = case
    y_bar = rng.standard_normal((x.shape[0], net.sizes[-1]))
    v_theta = rng.standard_normal(theta.size)
    v_x = rng.standard_normal(x.shape)
    _, cache = net.forward(xb.asarray(theta), xb.asarray(x))
    theta_bar, x_bar = net.vjp(cache, xb.asarray(y_bar))
    # <ȳ, (f(θ+hv) − f(θ−hv))/2h>  vs  <vjp(ȳ), v>
    fd_theta = np.sum(y_bar * central_diff(lambda t: net.forward(t, x)[0], theta, v_theta))
    fd_x = np.sum(y_bar * central_diff(lambda z: net.forward(theta, z)[0], x, v_x))
    check_fd("mlp.vjp (theta)", backend.to_numpy(theta_bar) @ v_theta, fd_theta)
    check_fd("mlp.vjp (x)", np.sum(backend.to_numpy(x_bar) * v_x), fd_x)


@given(case=nets())
def test_jvp__matches_central_differences_in_theta_and_x(xb, case):
    net, theta, x, rng = case
    v_theta = rng.standard_normal(theta.size)
    v_x = rng.standard_normal(x.shape)
    _, cache = net.forward(xb.asarray(theta), xb.asarray(x))
    y_dot = net.jvp(cache, xb.asarray(v_theta))
    y_dot_x = net.jvp(cache, None, xb.asarray(v_x))
    y_dot_both = net.jvp(cache, xb.asarray(v_theta), xb.asarray(v_x))
    fd_theta = central_diff(lambda t: net.forward(t, x)[0], theta, v_theta)
    fd_x = central_diff(lambda z: net.forward(theta, z)[0], x, v_x)
    check_fd("mlp.jvp (theta)", backend.to_numpy(y_dot), fd_theta)
    check_fd("mlp.jvp (x)", backend.to_numpy(y_dot_x), fd_x)
    # linearity: the joint tangent is the sum (same products, reassociated: rounding only)
    np.testing.assert_allclose(backend.to_numpy(y_dot_both), backend.to_numpy(y_dot) + backend.to_numpy(y_dot_x),
                               rtol=1e-12, atol=1e-12)


@given(case=nets())
def test_vjp_and_jvp__are_adjoint(xb, case):
    # <ȳ, J v> = <Jᵀ ȳ, v>: the two modes agree with each other, not just with FD.
    net, theta, x, rng = case
    y_bar = rng.standard_normal((x.shape[0], net.sizes[-1]))
    v = rng.standard_normal(theta.size)
    _, cache = net.forward(xb.asarray(theta), xb.asarray(x))
    lhs = np.sum(y_bar * backend.to_numpy(net.jvp(cache, xb.asarray(v))))
    rhs = backend.to_numpy(net.vjp(cache, xb.asarray(y_bar))[0]) @ v
    # Both are sums of the same O(P·N) products in different orders: rounding
    # error ≤ ~1e-13 of the sum of absolute terms (bounded here by 1e3).
    np.testing.assert_allclose(lhs, rhs, rtol=1e-10, atol=1e-10)


# ---------------------------------------------------------------- layout/init
def _abs_gauss_newton(net, cache, theta_dot, metric_abs):
    """Σ_n |J_n|ᵀ |M_n| |J_n| |θ̇|: the same chain of sums with every factor replaced
    by its absolute value (the generic jvp/vjp on an absolute-valued cache)."""
    abs_cache = MLPCache([np.abs(h) for h in cache.inputs], [np.abs(W) for W in cache.weights],
                         [np.abs(b) for b in cache.biases],
                         [np.abs(net._act_deriv(cache, l)) for l in range(net.n_layers - 1)])
    return net.vjp(abs_cache, net.jvp(abs_cache, np.abs(theta_dot)) * metric_abs, input_grad=False)[0]


@given(case=nets(), dtype=st.sampled_from([np.float64, np.float32]), data=st.data())
def test_gauss_newton_product__blocked_numpy_path_equals_jvp_then_vjp_to_rounding(case, dtype, data):
    # The NumPy path (blocks, packed [h|1|ḣ] rows, in-place products) against the
    # plain jvp -> metric -> vjp that the central-difference tests above prove.
    net, theta, x, rng = case
    n = x.shape[0]
    block_rows = data.draw(st.integers(1, n + 2), label="block_rows")
    theta, x = theta.astype(dtype), x.astype(dtype)
    theta_dot = rng.standard_normal(theta.size).astype(dtype)
    m_no = rng.uniform(0.1, 2.0, (n, net.sizes[-1])).astype(dtype)  # a positive diagonal metric per row
    _, cache = net.forward(theta, x)

    def metric(out_dot, start, stop):
        out_dot *= m_no[start:stop]
        return out_dot

    got = net.gauss_newton_product(cache, theta_dot, metric, block_rows=block_rows)
    ref = net.vjp(cache, net.jvp(cache, theta_dot) * m_no, input_grad=False)[0]
    assert got.dtype == dtype and got.shape == theta.shape
    # Both sides evaluate the same sums of products in a different order (blocks,
    # the packed GEMM, BLAS kernels).  Each entry is a chain of at most
    # K = n + 2·Σ widths + 4 multiply-adds, so |got − ref| ≤ 2 γ_K Σ|terms| with
    # γ_K = K u / (1 − K u) and Σ|terms| the same product on absolute values (Higham,
    # Accuracy and Stability of Numerical Algorithms, §3.1); a factor 2 for the
    # rounding of φ'(z) shared by both sides.
    u = np.finfo(dtype).eps / 2
    K = n + 2 * sum(net.sizes) + 4
    bound = 4 * K * u / (1 - K * u) * _abs_gauss_newton(net, cache, theta_dot, m_no).astype(np.float64)
    err = np.abs(got.astype(np.float64) - ref.astype(np.float64))
    assert np.all(err <= bound), float(np.max(err - bound))


def test_gauss_newton_product__temporaries_bounded_by_the_block_not_the_batch():
    # 20000 rows of width 64: one (N, 64) float64 temporary alone is 10 MiB; with
    # 256-row blocks the product's own allocations are its (rows, 2·64+1) packed
    # buffers per layer and θ-sized vectors, well under 1 MiB.
    import tracemalloc

    net = MLP((17, 64, 64, 6), "tanh")
    rng = np.random.default_rng(0)
    theta = net.init(rng)
    x = rng.standard_normal((20000, 17))
    _, cache = net.forward(theta, x)
    theta_dot = rng.standard_normal(net.num_params)
    metric = lambda out_dot, start, stop: out_dot  # noqa: E731  (identity metric)
    net.gauss_newton_product(cache, theta_dot, metric, block_rows=256)  # fills φ' in the cache once
    tracemalloc.start()
    try:
        net.gauss_newton_product(cache, theta_dot, metric, block_rows=256)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    rows_bytes = 256 * (18 + 129 + 129 + 3 * 64) * 8  # packed buffers + a few (rows, 64) products
    assert peak < rows_bytes + 8 * 8 * net.num_params, peak


def test_layout__W_row_major_in_out_then_bias():
    net = MLP((3, 2, 1))
    theta = np.arange(net.num_params, dtype=np.float64)
    named = net.unflatten(theta)
    assert list(named) == ["W0", "b0", "W1", "b1"]
    np.testing.assert_array_equal(named["W0"], [[0, 1], [2, 3], [4, 5]])
    np.testing.assert_array_equal(named["b0"], [6, 7])
    np.testing.assert_array_equal(named["W1"], [[8], [9]])
    np.testing.assert_array_equal(named["b1"], [10])
    np.testing.assert_array_equal(net.flatten(named), theta)


def test_init__orthogonal_with_gains_and_zero_bias():
    net = MLP((5, 8, 8, 3))
    theta = net.init(0, hidden_gain=np.sqrt(2), output_gain=0.01)
    named = net.unflatten(theta)
    W0, W1, W2 = named["W0"], named["W1"], named["W2"]
    # (in < out): rows orthonormal * gain; square: orthogonal; (in > out): columns.
    np.testing.assert_allclose(W0 @ W0.T, 2 * np.eye(5), atol=1e-13)
    np.testing.assert_allclose(W1.T @ W1, 2 * np.eye(8), atol=1e-13)
    np.testing.assert_allclose(W2.T @ W2, 1e-4 * np.eye(3), atol=1e-16)
    assert not np.any(named["b0"]) and not np.any(named["b2"])
    np.testing.assert_array_equal(net.init(0), net.init(0))  # seeded: reproducible
    assert not np.array_equal(net.init(0), net.init(1))


def test_bad_sizes_or_activation__raise():
    with pytest.raises(ValueError, match="sizes"):
        MLP((3,))
    with pytest.raises(ValueError, match="activation"):
        MLP((3, 2), "sigmoid")
    with pytest.raises(ValueError, match="W0"):
        MLP((3, 2)).flatten({"W0": np.zeros((2, 3)), "b0": np.zeros(2)})
