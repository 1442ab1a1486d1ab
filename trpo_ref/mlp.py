r"""A multilayer perceptron on a flat parameter vector, with hand-written derivatives.

=====================================================  ==========================
equation                                               function
=====================================================  ==========================
:math:`h_{l+1} = \operatorname{act}(h_l W_l + b_l)`, last layer linear  :meth:`MLP.forward`
:math:`\bar\theta = (\partial y/\partial\theta)^\top \bar y`,
:math:`\bar x = (\partial y/\partial x)^\top \bar y`   :meth:`MLP.vjp`
:math:`\dot y = (\partial y/\partial\theta)\,\dot\theta + (\partial y/\partial x)\,\dot x`
                                                       :meth:`MLP.jvp`
:math:`\bar\theta = \sum_n J_n^\top M_n J_n\,\dot\theta`   :meth:`MLP.gauss_newton_product`
orthogonal initialisation with gains                   :meth:`MLP.init`
=====================================================  ==========================

Parameter layout (part of the oracle's contract): for each layer ``l`` in
order, ``W_l`` flattened row-major with shape ``(in, out)`` so that a layer is
``x @ W + b``, then ``b_l``.  A torch ``nn.Linear.weight`` is ``W_l.T``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from . import backend

__all__ = ["MLP", "MLPCache", "ACTIVATIONS", "default_block_rows"]

ACTIVATIONS = ("tanh", "relu")

#: Bytes of one (rows x widest layer) block in :meth:`MLP.gauss_newton_product`'s
#: NumPy path: a block's tangents, cotangents and φ' rows then stay in a core's
#: L2 cache between the passes over them (measured on a 2 MiB-L2 Xeon: 256-512
#: rows of width 64 are 1.3-1.9x faster than one pass over 16384 rows).
BLOCK_BYTES = 1 << 17


def default_block_rows(width: int, itemsize: int) -> int:
    """Rows per block for :meth:`MLP.gauss_newton_product`: :data:`BLOCK_BYTES`
    of the widest layer, at least 128 rows.

    Parameters
    ----------
    width : int
        Widest layer of the network.
    itemsize : int
        Bytes per element (4 for float32, 8 for float64).

    Returns
    -------
    rows : int
    """
    return max(128, BLOCK_BYTES // max(1, width * itemsize))


@dataclass
class MLPCache:
    """What :meth:`MLP.forward` keeps for :meth:`MLP.vjp` and :meth:`MLP.jvp`.

    Attributes
    ----------
    inputs : list of arrays
        ``inputs[l]`` is the input of layer ``l``, shape (N, sizes[l]);
        ``inputs[0]`` is ``x`` and ``inputs[l]`` for l >= 1 is the activation
        output of layer ``l - 1``.
    weights : list of arrays
        ``W_l`` as (in, out) views of θ.
    biases : list of arrays
        ``b_l`` as views of θ.
    """

    inputs: list
    weights: list
    biases: list
    act_derivs: list | None = None
    """``act_derivs[l]`` is act'(z_l) of hidden layer ``l`` (a mask for relu),
    filled on first use by :meth:`MLP.vjp` / :meth:`MLP.jvp`: every product at
    the same forward pass (each CG iteration at θ_old) reuses it."""


class MLP:
    r"""Fully connected network ``sizes[0] -> ... -> sizes[-1]``; hidden layers use
    ``activation``, the output layer is linear.

    Parameters
    ----------
    sizes : sequence of int
        Layer widths, input first, output last (at least two entries).
    activation : {"tanh", "relu"}
        Hidden-layer nonlinearity.
    """

    def __init__(self, sizes: Sequence[int], activation: str = "tanh"):
        sizes = tuple(int(s) for s in sizes)
        if len(sizes) < 2 or any(s < 1 for s in sizes):
            raise ValueError(f"sizes must have >= 2 positive entries, got {sizes}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
        self.sizes = sizes
        self.activation = activation
        self.n_layers = len(sizes) - 1
        # (W start, W end, b end) offsets of each layer in θ.
        self._offsets = []
        pos = 0
        for n_in, n_out in zip(sizes[:-1], sizes[1:]):
            w_end = pos + n_in * n_out
            self._offsets.append((pos, w_end, w_end + n_out))
            pos = w_end + n_out
        self.num_params = pos

    # ------------------------------------------------------------------ layout
    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """Names and shapes of the parameters, in θ order."""
        shapes = {}
        for l, (n_in, n_out) in enumerate(zip(self.sizes[:-1], self.sizes[1:])):
            shapes[f"W{l}"] = (n_in, n_out)
            shapes[f"b{l}"] = (n_out,)
        return shapes

    def _views(self, theta_p):
        xp = backend.namespace(theta_p)
        weights, biases = [], []
        for (n_in, n_out), (s, w, e) in zip(zip(self.sizes[:-1], self.sizes[1:]), self._offsets):
            weights.append(xp.reshape(theta_p[s:w], (n_in, n_out)))
            biases.append(theta_p[w:e])
        return weights, biases

    def unflatten(self, theta_p) -> dict[str, Any]:
        r"""``{"W0": (in, out), "b0": (out,), ...}`` from a flat θ (views, no copy).

        Parameters
        ----------
        theta_p : array (P,)
            Flat parameters θ.

        Returns
        -------
        named : dict of str to array
            ``W{l}`` (in, out) and ``b{l}`` (out,) views of θ.
        """
        weights, biases = self._views(theta_p)
        named = {}
        for l, (W, b) in enumerate(zip(weights, biases)):
            named[f"W{l}"] = W
            named[f"b{l}"] = b
        return named

    def flatten(self, named: dict[str, Any]):
        r"""Exact inverse of :meth:`unflatten`.

        Parameters
        ----------
        named : dict of str to array
            One array per name of :meth:`param_shapes`.

        Returns
        -------
        theta_p : array (P,)
        """
        xp = backend.namespace(*named.values())
        parts = []
        for name, shape in self.param_shapes().items():
            if name not in named:
                raise ValueError(f"missing parameter {name!r}")
            if tuple(named[name].shape) != shape:
                raise ValueError(f"{name} must have shape {shape}, got {tuple(named[name].shape)}")
            parts.append(xp.reshape(named[name], (-1,)))
        return xp.concat(parts)

    # -------------------------------------------------------------------- init
    def init(self, seed=None, hidden_gain: float = float(np.sqrt(2.0)), output_gain: float = 1.0,
             dtype=None) -> np.ndarray:
        r"""Orthogonal weights (Saxe et al., 2014) scaled by a gain, zero biases.

        Gains follow SB3 and OpenAI baselines: :math:`\sqrt 2` for hidden layers,
        0.01 for a policy's output layer, 1 for a value head.  Draws happen on
        the host; the result is a NumPy vector (move it with
        :func:`trpo_ref.backend.from_numpy`).

        Parameters
        ----------
        seed : int, numpy.random.Generator or None
        hidden_gain, output_gain : float
            Gains of the hidden layers and of the last layer.
        dtype : numpy dtype or None
            float64 by default.

        Returns
        -------
        theta_p : numpy.ndarray (P,)
        """
        rng = backend.host_rng(seed)
        parts = []
        for l, (n_in, n_out) in enumerate(zip(self.sizes[:-1], self.sizes[1:])):
            gain = output_gain if l == self.n_layers - 1 else hidden_gain
            a = rng.standard_normal((max(n_in, n_out), min(n_in, n_out)))
            q, r = np.linalg.qr(a)
            q = q * np.sign(np.diag(r))  # makes the draw uniform over orthogonal matrices
            W = q if n_in >= n_out else q.T
            parts.append((gain * W).reshape(-1))
            parts.append(np.zeros(n_out))
        return np.concatenate(parts).astype(dtype or backend.DEFAULT_DTYPE)

    # ----------------------------------------------------------------- forward
    def forward(self, theta_p, x_no):
        r"""Network output and the cache its derivatives need.

        .. math:: h_0 = x,\quad h_{l+1} = \operatorname{act}(h_l W_l + b_l)\ (l < L-1),\quad
                  y = h_{L-1} W_{L-1} + b_{L-1}

        Parameters
        ----------
        theta_p : array (P,)
        x_no : array (N, sizes[0])

        Returns
        -------
        out : array (N, sizes[-1])
        cache : MLPCache
        """
        weights, biases = self._views(theta_p)
        out, inputs = self._run(list(zip(weights[:-1], biases[:-1])), weights[-1], biases[-1], x_no, True,
                                backend.namespace(theta_p, x_no))
        return out, MLPCache(inputs, weights, biases)

    def predictor(self, theta_p):
        r"""``x -> out``: :meth:`forward` at a fixed θ without the cache, θ split into layers once.

        For a loop that runs the network on small batches many times at one θ
        (the rollout's per-step action): the same arithmetic as :meth:`forward`,
        bit for bit, without re-slicing θ or keeping the activations.

        Parameters
        ----------
        theta_p : array (P,)

        Returns
        -------
        callable
            ``out = f(x_no)``, out of shape (N, sizes[-1]).
        """
        weights, biases = self._views(theta_p)
        hidden, W_out, b_out = list(zip(weights[:-1], biases[:-1])), weights[-1], biases[-1]
        xp, run = backend.namespace(theta_p), self._run
        return lambda x_no: run(hidden, W_out, b_out, x_no, False, xp)[0]

    def _run(self, hidden, W_out, b_out, x_no, keep: bool, xp):
        """The layers' arithmetic, shared by :meth:`forward` and :meth:`predictor`: ``(out, inputs)``,
        the inputs of every layer kept when ``keep``."""
        tanh = self.activation == "tanh"
        inputs = [x_no] if keep else None
        h = x_no
        for W, b in hidden:
            z = h @ W + b
            h = xp.tanh(z) if tanh else xp.maximum(z, 0)
            if keep:
                inputs.append(h)
        return h @ W_out + b_out, inputs

    def _act_deriv(self, cache: MLPCache, l: int):
        """act'(z_l) of hidden layer ``l``, written in terms of the layer's output
        ``h = act(z_l)`` and kept in the cache on first use (a mask for relu)."""
        if cache.act_derivs is None:
            cache.act_derivs = [None] * (self.n_layers - 1)
        d = cache.act_derivs[l]
        if d is None:
            h = cache.inputs[l + 1]
            if self.activation == "tanh":
                d = 1 - h * h  # d tanh(z)/dz = 1 - tanh(z)^2
            else:
                d = h > 0  # d relu(z)/dz = [z > 0]
            cache.act_derivs[l] = d
        return d

    def _act_scale(self, cache: MLPCache, l: int, u, xp):
        """``φ'(z_l) * u`` for hidden layer ``l`` (see :meth:`_act_deriv`).

        The activation's Jacobian is diagonal, so the same product serves the
        reverse (cotangent) and forward (tangent) passes.
        """
        d = self._act_deriv(cache, l)
        if self.activation == "tanh":
            return u * d
        return xp.where(d, u, xp.zeros_like(u))

    # --------------------------------------------------------------------- vjp
    def vjp(self, cache: MLPCache, out_bar, input_grad: bool = True):
        r"""Reverse mode: pull a cotangent of the output back to θ and to x.

        .. math:: \bar\theta = \sum_n (\partial y_n/\partial\theta)^\top \bar y_n,
                  \qquad \bar x_n = (\partial y_n/\partial x_n)^\top \bar y_n

        Parameters
        ----------
        cache : MLPCache
            From :meth:`forward`.
        out_bar : array (N, sizes[-1])
        input_grad : bool
            Compute ``x_bar`` (one more matrix product); ``None`` is returned otherwise.

        Returns
        -------
        theta_bar : array (P,)
        x_bar : array (N, sizes[0]) or None
        """
        xp = backend.namespace(out_bar)
        ones_n = xp.ones((out_bar.shape[0],), dtype=out_bar.dtype, device=backend.device_of(out_bar))
        parts = []
        z_bar = out_bar
        x_bar = None
        for l in range(self.n_layers - 1, -1, -1):
            h_in = cache.inputs[l]
            W = cache.weights[l]
            W_bar = h_in.T @ z_bar  # z = h W + b  =>  dL/dW = hᵀ z̄
            b_bar = ones_n @ z_bar  # b broadcasts over the batch: b̄ = Σ_n z̄_n = 1ᵀz̄ (a BLAS gemv, 3-6x faster than sum(axis=0))
            parts.append(b_bar)
            parts.append(xp.reshape(W_bar, (-1,)))
            if l > 0:
                h_bar = z_bar @ W.T  # dL/dh = z̄ Wᵀ
                z_bar = self._act_scale(cache, l - 1, h_bar, xp)
            elif input_grad:
                x_bar = z_bar @ W.T
        parts.reverse()
        return xp.concat(parts), x_bar

    # --------------------------------------------------------------------- jvp
    def jvp(self, cache: MLPCache, theta_dot, x_dot=None):
        r"""Forward mode: push a tangent of θ (and optionally of x) to the output.

        .. math:: \dot z_l = \dot h_l W_l + h_l \dot W_l + \dot b_l,\qquad
                  \dot h_{l+1} = \operatorname{act}'(z_l)\,\dot z_l

        Parameters
        ----------
        cache : MLPCache
        theta_dot : array (P,) or None
            ``None`` means a zero tangent in θ.
        x_dot : array (N, sizes[0]), optional

        Returns
        -------
        out_dot : array (N, sizes[-1])
        """
        if theta_dot is not None:
            xp = backend.namespace(theta_dot)
            W_dots, b_dots = self._views(theta_dot)
        else:
            if x_dot is None:
                raise ValueError("jvp needs theta_dot or x_dot")
            xp = backend.namespace(x_dot)
            W_dots = b_dots = None
        h_dot = x_dot
        for l in range(self.n_layers):
            if W_dots is None:
                z_dot = h_dot @ cache.weights[l]
            else:
                # ż = h Ẇ + ḃ + ḣ W, accumulated in place into the fresh product
                z_dot = cache.inputs[l] @ W_dots[l]
                z_dot += b_dots[l]
                if h_dot is not None:
                    z_dot += h_dot @ cache.weights[l]
            if l < self.n_layers - 1:
                h_dot = self._act_scale(cache, l, z_dot, xp)
            else:
                h_dot = z_dot
        return h_dot

    # ------------------------------------------------------- Gauss-Newton product
    def gauss_newton_product(self, cache: MLPCache, theta_dot, metric, block_rows: int | None = None):
        r"""Gauss–Newton product :math:`J^\top M J\,\dot\theta` over the batch of ``cache``.

        .. math:: \bar\theta = \sum_n J_n^\top\, M_n\!\left(J_n \dot\theta\right),
                  \qquad J_n = \partial y_n / \partial\theta

        One :meth:`jvp` (x held fixed), the metric, one :meth:`vjp` without x̄.

        Parameters
        ----------
        cache : MLPCache
            From :meth:`forward` at θ.
        theta_dot : array (P,)
            Tangent θ̇ (same dtype as θ for the NumPy fast path).
        metric : callable ``(out_dot, start, stop) -> u``
            Applies :math:`M_n` to the rows ``start:stop`` of the output tangent
            ``out_dot`` (shape (stop − start, sizes[-1])) and returns the output
            cotangent of those rows.  It may work in place.
        block_rows : int or None
            Rows per block of the NumPy path (``None``: :func:`default_block_rows`).

        Returns
        -------
        theta_bar : array (P,)

        Notes
        -----
        For NumPy arrays of one floating dtype the product runs block by block
        over the batch, so its temporaries take O(block_rows) memory and stay in
        cache, and each layer's ``ż = hẆ + ḃ + ḣW`` is one matrix product on the
        packed rows ``[h | 1 | ḣ]`` against ``[Ẇ; ḃ; W]`` (likewise
        ``[W̄; b̄] = [h | 1]ᵀ z̄``, which is θ's own layout of the layer).  The
        result equals the unblocked one up to the order of the sums over the
        batch (rounding).  Other namespaces (CuPy, array_api_strict) run
        :meth:`jvp`, ``metric`` on all rows, and :meth:`vjp`.
        """
        x = cache.inputs[0]
        n = x.shape[0]
        fast = (type(theta_dot) is np.ndarray and all(type(h) is np.ndarray for h in cache.inputs)
                and all(h.dtype == theta_dot.dtype for h in cache.inputs)
                and all(type(W) is np.ndarray and W.dtype == theta_dot.dtype for W in cache.weights)
                and theta_dot.dtype in (np.float32, np.float64))
        if not fast or n == 0:
            out_dot = self.jvp(cache, theta_dot)
            theta_bar, _ = self.vjp(cache, metric(out_dot, 0, n), input_grad=False)
            return theta_bar
        return self._gauss_newton_numpy(cache, theta_dot, metric, block_rows)

    def _gauss_newton_numpy(self, cache: MLPCache, theta_dot, metric, block_rows):
        """NumPy path of :meth:`gauss_newton_product`: blocked, packed, in place."""
        dtype = theta_dot.dtype
        n = cache.inputs[0].shape[0]
        sizes, L = self.sizes, self.n_layers
        if block_rows is not None and int(block_rows) < 1:
            raise ValueError(f"block_rows must be >= 1 or None, got {block_rows}")
        rows = min(n, int(block_rows) if block_rows is not None else default_block_rows(max(sizes), dtype.itemsize))
        derivs = [self._act_deriv(cache, l) for l in range(L - 1)]
        # Per layer l: packed rows [h_l | 1 | ḣ_l] (ḣ_0 = 0: [x | 1]) and, for l >= 1,
        # the stacked [Ẇ_l; ḃ_l; W_l], so that ż_l = [h | 1 | ḣ] @ [Ẇ; ḃ; W].
        packed, stacked = [], []
        for l in range(L):
            k, (s, _, e) = sizes[l], self._offsets[l]
            buf = np.empty((rows, 2 * k + 1 if l else k + 1), dtype=dtype)
            buf[:, k] = 1
            packed.append(buf)
            if l:
                S = np.empty((2 * k + 1, sizes[l + 1]), dtype=dtype)
                S[: k + 1] = theta_dot[s:e].reshape(k + 1, sizes[l + 1])  # [Ẇ_l; ḃ_l]: θ's layout
                S[k + 1:] = cache.weights[l]
                stacked.append(S)
            else:
                stacked.append(theta_dot[s:e].reshape(k + 1, sizes[1]))
        theta_bar = np.empty_like(theta_dot)
        for start in range(0, n, rows):
            stop = min(start + rows, n)
            m = stop - start
            # ---- jvp: ż_l = [h_l | 1 | ḣ_l] [Ẇ_l; ḃ_l; W_l],  ḣ_{l+1} = φ'(z_l) ż_l
            for l in range(L):
                k = sizes[l]
                X = packed[l][:m]
                X[:, :k] = cache.inputs[l][start:stop]
                z_dot = X @ stacked[l]
                if l < L - 1:
                    np.multiply(z_dot, derivs[l][start:stop], out=packed[l + 1][:m, sizes[l + 1] + 1:])
            z_bar = metric(z_dot, start, stop)  # M_n ẏ_n
            # ---- vjp: [W̄_l; b̄_l] = [h_l | 1]ᵀ z̄_l,  z̄_{l-1} = φ'(z_{l-1}) (z̄_l W_lᵀ)
            for l in range(L - 1, -1, -1):
                k, (s, _, e) = sizes[l], self._offsets[l]
                part = packed[l][:m, : k + 1].T @ z_bar
                if start == 0:
                    theta_bar[s:e] = part.reshape(-1)
                else:
                    theta_bar[s:e] += part.reshape(-1)  # Σ over blocks
                if l:
                    h_bar = z_bar @ cache.weights[l].T
                    h_bar *= derivs[l - 1][start:stop]
                    z_bar = h_bar
        return theta_bar
