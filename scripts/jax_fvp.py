r"""JAX's Fisher-vector product for trpo_ref's policies: the yardstick of scripts/bench.py.

The benchmark's JAX side (the ``jax`` extra; trpo_ref itself never imports
JAX).  The product is the Gauss–Newton form a JAX TRPO would write:
linearise the network at θ with ``jax.linearize``, transpose the linear map
with ``jax.linear_transpose``, and put the distribution's Fisher metric M in
between,

.. math:: (F + \lambda I)v = \frac1N \sum_n J_n^\top M_n J_n v + \lambda v,

everything under ``jax.jit``.  Two variants are timed:

``call``
    ``jit(fvp)(θ, obs, v)``: one jitted call per product; the linearisation
    (the forward pass at θ) is inside the call, as when a CG loop in Python
    calls a jitted product.
``loop``
    ``jit`` of a ``lax.fori_loop`` of k products after one linearisation: the
    forward pass runs once and the residuals are reused, as in a CG loop
    written inside ``jit`` (the best a JAX TRPO can do).  The per-product time
    is the marginal one, ``(t(k) − t(1)) / (k − 1)``, taken rep by rep.

Parameters use trpo_ref's flat θ layout (W_l (in, out) row-major, then b_l,
then the Gaussian's log σ), so both sides compute the same product on the same
numbers; :func:`make_jax_fvp` checks this against trpo_ref's operator.
"""

from __future__ import annotations

import numpy as np


def jax_available() -> bool:
    """True when JAX can be imported."""
    try:
        import jax  # noqa: F401
    except ImportError:
        return False
    return True


def make_jax_fvp(policy, theta, obs, damping: float, loop_k: int = 11):
    """Jitted JAX products for ``policy`` at (θ, obs) and their inputs on the device.

    Parameters
    ----------
    policy : trpo_ref.GaussianMLPPolicy or trpo_ref.CategoricalMLPPolicy
    theta : numpy.ndarray (P,)
    obs : numpy.ndarray (N, obs_dim)
    damping : float
    loop_k : int
        Products in the long ``loop`` call.

    Returns
    -------
    dict with
        ``call(v)`` -> (P,) numpy array: one product, jitted call (linearisation inside);
        ``loop(k)``: ``k`` products in one jitted loop after one linearisation, blocks until done;
        ``loop_k``: the long loop's k.
    """
    import jax
    import jax.numpy as jnp

    if theta.dtype == np.float64:
        jax.config.update("jax_enable_x64", True)
    mlp = policy.mlp
    sizes, offsets, p_mlp = mlp.sizes, mlp._offsets, mlp.num_params
    gaussian = policy.kind == "gaussian"
    tanh = mlp.activation == "tanh"

    def net(th, x):
        h = x
        for l, (s, w, e) in enumerate(offsets):
            h = h @ th[s:w].reshape(sizes[l], sizes[l + 1]) + th[w:e]
            if l < len(offsets) - 1:
                h = jnp.tanh(h) if tanh else jnp.maximum(h, 0)
        return h

    def linearised(th, x):
        """(J·, Jᵀ·, M·) at θ: the forward pass runs here, once."""
        out, f_jvp = jax.linearize(lambda t: net(t, x), th[:p_mlp])
        f_vjp = jax.linear_transpose(f_jvp, th[:p_mlp])
        n = x.shape[0]
        if gaussian:
            inv_var = jnp.exp(-2 * th[p_mlp:]) / n  # M = diag(1/σ²), over N

            def metric(u):
                return u * inv_var
        else:
            p = jax.nn.softmax(out, axis=1)

            def metric(u):  # M = diag(p) − p pᵀ, over N
                return (p * u - p * jnp.sum(p * u, axis=1, keepdims=True)) / n
        return f_jvp, f_vjp, metric

    def product(f_jvp, f_vjp, metric, v):
        (fv,) = f_vjp(metric(f_jvp(v[:p_mlp])))
        if gaussian:
            fv = jnp.concatenate([fv, 2 * v[p_mlp:]])  # log σ block: 2 v
        return fv + damping * v

    def fvp(th, x, v):
        return product(*linearised(th, x), v)

    def loop(th, x, v, k):
        lin = linearised(th, x)

        def body(i, w):  # power iteration keeps each product dependent on the last, as CG does
            y = product(*lin, w)
            return y / jnp.linalg.norm(y)

        return jax.lax.fori_loop(0, k, body, v)

    fvp_jit = jax.jit(fvp)
    loop_jit = jax.jit(loop, static_argnums=3)
    th_j, x_j = jnp.asarray(theta), jnp.asarray(obs)
    v0 = jnp.asarray(np.random.default_rng(7).standard_normal(theta.size).astype(theta.dtype))

    def call(v):
        return np.asarray(fvp_jit(th_j, x_j, v))

    def loop_k_products(k):
        return loop_jit(th_j, x_j, v0, k).block_until_ready()

    return {"call": call, "loop": loop_k_products, "loop_k": loop_k, "to_device": jnp.asarray,
            "jax_version": jax.__version__}
