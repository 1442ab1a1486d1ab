r"""The critic: an MLP value function fitted by regression, with a hand-written gradient.

=========================================================================================================  ===================================
equation                                                                                                   function
=========================================================================================================  ===================================
:math:`V_w(s_n)`, an MLP ``obs_dim -> ... -> 1``                                                           :meth:`ValueFunction.predict`
:math:`\ell(w) = \frac1N\sum_n (V_w(s_n) - \hat R_n)^2`                                                    :meth:`ValueFunction.loss`
:math:`\nabla_w \ell = \sum_n \frac{2}{N}(V_w(s_n) - \hat R_n)\,\nabla_w V_w(s_n)`                         :meth:`ValueFunction.loss_and_grad`
:math:`\min_w\ \ell(w) + c_{2}\|w\|^2` by L-BFGS (host, float64)                                       :func:`fit_lbfgs`
:math:`w \leftarrow w - \mathrm{lr}\,\hat m/(\sqrt{\hat v} + \mathtt{eps})`, bias-corrected :math:`\hat m, \hat v`  :class:`Adam`, :meth:`Adam.step`
minibatch Adam over shuffled epochs (SB3-contrib's critic schedule)                                        :func:`fit_adam`
:math:`EV = 1 - \mathrm{Var}[\hat R - V]/\mathrm{Var}[\hat R]`                                             :func:`explained_variance`
=========================================================================================================  ===================================

The regression targets are :math:`\hat R_n = \hat A_n + V_{w_{old}}(s_n)` (see
the project's math page); this module only regresses, it does not build them.

Parameter layout: the MLP's ``W0, b0, W1, b1, ...`` (see :mod:`trpo_ref.mlp`),
the last layer having one output.

Two fitters, after the libraries the presets replay:

* :func:`fit_lbfgs`: full-batch L-BFGS-B through :func:`scipy.optimize.minimize`
  with an optional L2 penalty, as modular_rl's ``NnRegression`` (25 iterations,
  penalty ``1e-3 * sum(w**2)`` over every weight and bias) and rllab's
  L-BFGS regressors do.  SciPy works on NumPy float64, so the weights, the
  observations and the targets make one host round trip per fit (through
  :func:`trpo_ref.backend.to_numpy` / :func:`~trpo_ref.backend.from_numpy`);
  this is the one place in the math core that leaves the device, and it does
  so deliberately.
* :func:`fit_adam`: minibatch Adam on the device, as SB3-contrib's TRPO
  (``n_critic_updates`` epochs, each a fresh shuffle cut into minibatches of
  ``batch_size``, the last one possibly shorter).

References
----------
Schulman et al., "Trust Region Policy Optimization", ICML 2015, §8 and
Appendix D (the value function fitted by regression).  Kingma and Ba, "Adam:
A Method for Stochastic Optimization", ICLR 2015, Algorithm 1.  Byrd, Lu,
Nocedal and Zhu, "A limited memory algorithm for bound constrained
optimization", SIAM J. Sci. Comput. 16(5), 1995 (L-BFGS-B).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, NamedTuple, Sequence

import numpy as np

from . import backend
from .mlp import MLP

__all__ = ["ValueFunction", "FitInfo", "Adam", "fit_lbfgs", "fit_adam", "explained_variance"]


class FitInfo(NamedTuple):
    """Diagnostics of one critic fit.

    Attributes
    ----------
    loss_before, loss_after : float
        :meth:`ValueFunction.loss` (the plain mean squared error, no L2 term)
        over the whole batch before and after the fit, on the input's backend
        and dtype.
    n_steps : int
        L-BFGS: objective-and-gradient evaluations; Adam: minibatch steps.
    state : Adam or None
        The optimizer state after the fit (Adam), to pass back as ``state=``
        on the next iteration; ``None`` for L-BFGS, which keeps none.
    """

    loss_before: float
    loss_after: float
    n_steps: int
    state: "Adam | None"


def _require_finite(xp, x, name: str) -> None:
    if not bool(xp.all(xp.isfinite(x))):
        raise ValueError(f"{name} contains NaN or inf")


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


class ValueFunction:
    r"""State-value critic :math:`V_w(s)`: an MLP ``obs_dim -> hidden_sizes -> 1``.

    Holds only the architecture; the weights ``w_p`` are a flat vector passed
    to every method.

    Parameters
    ----------
    obs_dim : int
        Observation size.
    hidden_sizes : sequence of int
        Hidden widths; ``()`` gives the linear model :math:`V(s) = s^\top W_0 + b_0`.
    activation : {"tanh", "relu"}
        Hidden-layer nonlinearity.
    """

    kind = "value"
    #: Orthogonal-init gains, as SB3's ``ActorCriticPolicy`` for its value head.
    hidden_gain = math.sqrt(2.0)
    output_gain = 1.0

    def __init__(self, obs_dim: int, hidden_sizes: Sequence[int] = (64, 64), activation: str = "tanh"):
        if int(obs_dim) < 1:
            raise ValueError(f"obs_dim must be >= 1, got {obs_dim}")
        self.obs_dim = int(obs_dim)
        self.hidden_sizes = tuple(int(h) for h in hidden_sizes)
        self.activation = activation
        self.mlp = MLP((self.obs_dim, *self.hidden_sizes, 1), activation)

    # ------------------------------------------------------------------ layout
    @property
    def num_params(self) -> int:
        """Length P of ``w``."""
        return self.mlp.num_params

    def init_params(self, seed=0, *, dtype=None, device=None):
        r"""Orthogonal initialisation (gain :math:`\sqrt2` hidden, 1 output), zero biases.

        Drawn on the host with ``seed``, then moved to ``device`` ("cpu" or
        "cuda") in ``dtype`` (float64 by default).

        Parameters
        ----------
        seed : int, numpy.random.Generator or None
        dtype : dtype or None
        device : str or None

        Returns
        -------
        w_p : array (P,)
        """
        w = self.mlp.init(seed, self.hidden_gain, self.output_gain)
        xp, dev = backend.get_namespace(device)
        return backend.from_numpy(w, xp, dev, backend.resolve_dtype(xp, dtype))

    def spec(self) -> dict:
        """JSON-serialisable description of the architecture (see :meth:`from_spec`)."""
        return {
            "kind": self.kind,
            "obs_dim": self.obs_dim,
            "hidden_sizes": list(self.hidden_sizes),
            "activation": self.activation,
        }

    @classmethod
    def from_spec(cls, spec: dict) -> "ValueFunction":
        r"""Rebuild a value function from :meth:`spec` output.

        Parameters
        ----------
        spec : dict
            Output of :meth:`spec`.

        Returns
        -------
        ValueFunction
        """
        try:
            if spec["kind"] != cls.kind:
                raise ValueError(f"spec kind must be {cls.kind!r}, got {spec['kind']!r}")
            return cls(spec["obs_dim"], tuple(spec["hidden_sizes"]), spec["activation"])
        except KeyError as exc:
            raise ValueError(f"value-function spec is missing the field {exc.args[0]!r}") from exc

    # ------------------------------------------------------------ input checks
    def _check_w(self, w_p):
        xp = backend.namespace(w_p)
        if tuple(w_p.shape) != (self.num_params,):
            raise ValueError(f"w must have shape ({self.num_params},) for this value function, got {tuple(w_p.shape)}")
        if not xp.isdtype(w_p.dtype, "real floating"):
            raise ValueError(f"w must be a float32 or float64 array, got {w_p.dtype}")
        _require_finite(xp, w_p, "w")
        return w_p

    def _check_data(self, w_p, obs_no, ret_n=None):
        """Shapes, dtype (cast to ``w``'s) and finiteness of ``obs`` and ``ret``."""
        xp = backend.namespace(w_p, obs_no)
        if len(obs_no.shape) != 2 or obs_no.shape[1] != self.obs_dim:
            raise ValueError(f"obs must have shape (N, {self.obs_dim}), got {tuple(obs_no.shape)}")
        n = obs_no.shape[0]
        if n < 1:
            raise ValueError(f"obs is empty: need shape (N, {self.obs_dim}) with N >= 1")
        if obs_no.dtype != w_p.dtype:
            obs_no = xp.astype(obs_no, w_p.dtype)
        _require_finite(xp, obs_no, "obs")
        if ret_n is None:
            return obs_no, None
        if tuple(ret_n.shape) != (n,):
            raise ValueError(f"ret must have shape ({n},) to match obs, got {tuple(ret_n.shape)}")
        if ret_n.dtype != w_p.dtype:
            ret_n = xp.astype(ret_n, w_p.dtype)
        _require_finite(xp, ret_n, "ret")
        return obs_no, ret_n

    def _check_inputs(self, w_p, obs_no, ret_n=None):
        w_p = self._check_w(w_p)
        obs_no, ret_n = self._check_data(w_p, obs_no, ret_n)
        return w_p, obs_no, ret_n

    # ------------------------------------------------------------------- math
    def _values(self, w_p, obs_no):
        """``V_w(s_n)`` as (N,) and the MLP cache (no input checks)."""
        xp = backend.namespace(w_p, obs_no)
        out_n1, cache = self.mlp.forward(w_p, obs_no)
        return xp.reshape(out_n1, (-1,)), cache

    def _loss(self, w_p, obs_no, ret_n):
        """:meth:`loss` without input checks: the same arithmetic as :meth:`_loss_and_grad`'s loss."""
        xp = backend.namespace(w_p, obs_no)
        v_n, _ = self._values(w_p, obs_no)
        err_n = v_n - ret_n
        return xp.sum(err_n * err_n) / obs_no.shape[0]  # ℓ = (1/N) Σ (V − R̂)²

    def _loss_and_grad(self, w_p, obs_no, ret_n):
        """:meth:`loss_and_grad` without input checks (the fitters' inner loop)."""
        xp = backend.namespace(w_p, obs_no)
        n = obs_no.shape[0]
        v_n, cache = self._values(w_p, obs_no)
        err_n = v_n - ret_n
        loss = xp.sum(err_n * err_n) / n  # ℓ = (1/N) Σ (V − R̂)²
        out_bar = xp.reshape((2.0 / n) * err_n, (n, 1))  # ∂ℓ/∂V_n = 2 (V_n − R̂_n) / N
        grad_p, _ = self.mlp.vjp(cache, out_bar, input_grad=False)
        return loss, grad_p

    def predict(self, w_p, obs_no):
        r"""State values :math:`V_w(s_n)`, shape (N,).

        Parameters
        ----------
        w_p : array (P,)
        obs_no : array (N, obs_dim)
            Cast to ``w``'s dtype.

        Returns
        -------
        v_n : array (N,)
        """
        w_p, obs_no, _ = self._check_inputs(w_p, obs_no)
        v_n, _ = self._values(w_p, obs_no)
        return v_n

    def loss(self, w_p, obs_no, ret_n):
        r"""Mean squared regression error (0-d array).

        .. math:: \ell(w) = \frac1N\sum_{n=1}^N \big(V_w(s_n) - \hat R_n\big)^2

        Parameters
        ----------
        w_p : array (P,)
        obs_no : array (N, obs_dim)
        ret_n : array (N,)
            Regression targets :math:`\hat R_n`.

        Returns
        -------
        loss : 0-d array
        """
        w_p, obs_no, ret_n = self._check_inputs(w_p, obs_no, ret_n)
        return self._loss(w_p, obs_no, ret_n)

    def loss_and_grad(self, w_p, obs_no, ret_n):
        r""":meth:`loss` and its gradient, by one forward and one reverse pass.

        .. math:: \nabla_w\ell = \sum_n \bar V_n\,\nabla_w V_w(s_n),\qquad
                  \bar V_n = \frac{2}{N}\big(V_w(s_n) - \hat R_n\big)

        The sum is :meth:`trpo_ref.mlp.MLP.vjp` with the cotangent
        :math:`\bar V` as ``out_bar``.

        Parameters
        ----------
        w_p : array (P,)
        obs_no : array (N, obs_dim)
        ret_n : array (N,)
            Regression targets.

        Returns
        -------
        loss : 0-d array
        grad_p : array (P,)
        """
        w_p, obs_no, ret_n = self._check_inputs(w_p, obs_no, ret_n)
        return self._loss_and_grad(w_p, obs_no, ret_n)


# ---------------------------------------------------------------------- L-BFGS
def fit_lbfgs(vf: ValueFunction, w_p, obs_no, ret_n, *, max_iter: int = 25, l2: float = 0.0):
    r"""Fit the critic by full-batch L-BFGS-B (SciPy) on the host in float64.

    .. math:: \min_w\ \frac1N\sum_n \big(V_w(s_n) - \hat R_n\big)^2 + c_{2}\|w\|^2

    The penalty covers every weight and bias (modular_rl uses
    :math:`c_{2} = 10^{-3}` and 25 iterations; rllab's regressors are
    alike).  SciPy's defaults for L-BFGS-B are kept (10 correction pairs,
    ``ftol = 2.2e-9``, ``gtol = 1e-5``), the same as the
    ``fmin_l_bfgs_b`` call of modular_rl.

    Parameters
    ----------
    vf : ValueFunction
    w_p : array (P,)
        Starting weights.
    obs_no : array (N, obs_dim)
    ret_n : array (N,)
    max_iter : int
        L-BFGS iterations at most (each may take several evaluations).
    l2 : float
        :math:`c_{2} \ge 0`.

    Returns
    -------
    w_new : array (P,)
        On ``w``'s backend, device and dtype.
    info : FitInfo
        ``n_steps`` counts objective-and-gradient evaluations; ``state`` is None.

    Notes
    -----
    Host round trip: ``w``, ``obs`` and ``ret`` are copied to NumPy float64
    once with :func:`trpo_ref.backend.to_numpy`, SciPy runs there (the
    objective is the same :class:`ValueFunction` code on NumPy arrays), and
    the result comes back once with :func:`trpo_ref.backend.from_numpy`.  For
    float32 input the optimisation itself still runs in float64.
    """
    w_p, obs_no, ret_n = vf._check_inputs(w_p, obs_no, ret_n)
    max_iter = _positive_int(max_iter, "max_iter")
    if not (math.isfinite(l2) and l2 >= 0.0):
        raise ValueError(f"l2 must be a finite number >= 0, got {l2!r}")
    import scipy.optimize

    xp = backend.namespace(w_p)
    w0_p = np.array(backend.to_numpy(w_p), dtype=np.float64)  # device -> host, a copy
    obs_host = np.asarray(backend.to_numpy(obs_no), dtype=np.float64)
    ret_host = np.asarray(backend.to_numpy(ret_n), dtype=np.float64)

    def objective(w):
        loss, grad = vf._loss_and_grad(w, obs_host, ret_host)
        if l2:
            loss = loss + l2 * (w @ w)  # + c₂ ‖w‖²
            grad = grad + (2.0 * l2) * w  # ∇ λ₂ ‖w‖² = 2 λ₂ w
        return float(loss), np.asarray(grad, dtype=np.float64)

    res = scipy.optimize.minimize(objective, w0_p, jac=True, method="L-BFGS-B",
                                  options={"maxiter": max_iter})
    w_new = backend.from_numpy(res.x, xp, backend.device_of(w_p), w_p.dtype)  # host -> device
    info = FitInfo(
        loss_before=backend.to_float(vf._loss(w_p, obs_no, ret_n)),
        loss_after=backend.to_float(vf.loss(w_new, obs_no, ret_n)),
        n_steps=int(res.nfev),
        state=None,
    )
    return w_new, info


# ------------------------------------------------------------------------ Adam
@dataclass(frozen=True, eq=False)
class Adam:
    r"""Adam's state and hyperparameters (Kingma & Ba 2015, Algorithm 1).

    Immutable: :meth:`step` returns a new state.  Defaults are PyTorch's
    (``torch.optim.Adam``); SB3's ``ActorCriticPolicy`` passes ``eps=1e-5``.

    Attributes
    ----------
    m : array (P,)
        First-moment estimate (PyTorch's ``exp_avg``).
    v : array (P,)
        Second-moment estimate (``exp_avg_sq``).
    t : int
        Steps taken so far.
    lr : float
        Step size lr.
    beta1, beta2 : float
        Moment decay rates :math:`\beta_1, \beta_2`.
    eps : float
        Added to :math:`\sqrt{\hat v}` (PyTorch's placement).
    """

    m: Any
    v: Any
    t: int = 0
    lr: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8

    def __post_init__(self):
        if tuple(self.m.shape) != tuple(self.v.shape) or len(self.m.shape) != 1:
            raise ValueError(f"Adam m and v must be 1-D of one shape, got {tuple(self.m.shape)} and {tuple(self.v.shape)}")
        if isinstance(self.t, bool) or not isinstance(self.t, (int, np.integer)) or self.t < 0:
            raise ValueError(f"Adam t must be an integer >= 0, got {self.t!r}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"Adam lr must be a finite number > 0, got {self.lr!r}")
        for name in ("beta1", "beta2"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"Adam {name} must be in [0, 1), got {getattr(self, name)!r}")
        if not (math.isfinite(self.eps) and self.eps >= 0):
            raise ValueError(f"Adam eps must be a finite number >= 0, got {self.eps!r}")
        # Python numbers from here on: a NumPy scalar (np.int64 t, np.float64 lr) is a "strong" type
        # under NumPy 2 and would turn float32 weights into float64 in the update.
        for name, kind in (("t", int), ("lr", float), ("beta1", float), ("beta2", float), ("eps", float)):
            object.__setattr__(self, name, kind(getattr(self, name)))

    @classmethod
    def init(cls, w_p, *, lr: float = 1e-3, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8) -> "Adam":
        r"""Fresh state: zero moments shaped, typed and placed like ``w``, t = 0.

        Parameters
        ----------
        w_p : array (P,)
            Parameters the moments are shaped like.
        lr, beta1, beta2, eps : float
            Adam hyper-parameters.

        Returns
        -------
        Adam
        """
        xp = backend.namespace(w_p)
        return cls(xp.zeros_like(w_p), xp.zeros_like(w_p), 0, float(lr), float(beta1), float(beta2), float(eps))

    def step(self, w_p, grad_p):
        r"""One Adam update of ``w`` with gradient ``g``.

        .. math::
            t &\leftarrow t + 1,\qquad
            m \leftarrow \beta_1 m + (1-\beta_1) g,\qquad
            v \leftarrow \beta_2 v + (1-\beta_2) g^2 \\
            \hat m &= m/(1-\beta_1^t),\qquad \hat v = v/(1-\beta_2^t),\qquad
            w \leftarrow w - \mathrm{lr}\,\hat m/(\sqrt{\hat v} + \mathtt{eps})

        Parameters
        ----------
        w_p, grad_p : array (P,)
            Same shape, dtype and backend as the moments.

        Returns
        -------
        w_new : array (P,)
        state : Adam
            With the new ``m``, ``v`` and ``t``.

        Notes
        -----
        The operations are ordered as in PyTorch's single-tensor Adam, so the
        two agree to rounding: :math:`m + (1-\beta_1)(g - m)` (``lerp``),
        :math:`\sqrt{\hat v} = \sqrt v/\sqrt{1-\beta_2^t}`, step size
        :math:`\mathrm{lr}/(1-\beta_1^t)`.  Since :math:`\hat m = g` and
        :math:`\hat v = g^2` at t = 1, the first step is
        :math:`-\mathrm{lr}\, g/(|g| + \mathtt{eps})`: lr per coordinate in
        the direction of :math:`-\mathrm{sign}(g)`, whatever the gradient's scale.
        """
        if tuple(w_p.shape) != tuple(self.m.shape) or tuple(grad_p.shape) != tuple(self.m.shape):
            raise ValueError(f"w and grad must have shape {tuple(self.m.shape)} like the Adam state, "
                             f"got {tuple(w_p.shape)} and {tuple(grad_p.shape)}")
        if w_p.dtype != self.m.dtype:
            raise ValueError(f"w has dtype {w_p.dtype} but the Adam state {self.m.dtype}")
        xp = backend.namespace(w_p, grad_p, self.m)
        t = self.t + 1
        m = self.m + (1.0 - self.beta1) * (grad_p - self.m)  # β₁ m + (1 − β₁) g
        v = self.beta2 * self.v + (1.0 - self.beta2) * (grad_p * grad_p)  # β₂ v + (1 − β₂) g²
        bias1 = 1.0 - self.beta1 ** t
        bias2 = 1.0 - self.beta2 ** t
        denom = xp.sqrt(v) / math.sqrt(bias2) + self.eps  # √v̂ + eps
        w_new = w_p - (self.lr / bias1) * (m / denom)  # w − lr m̂ / (√v̂ + eps)
        return w_new, dataclasses.replace(self, m=m, v=v, t=t)

    def to_dict(self) -> dict[str, np.ndarray]:
        """Host copy of the state as NumPy arrays (0-d for scalars), e.g. for ``numpy.savez``."""
        return {
            "m": np.array(backend.to_numpy(self.m), copy=True),
            "v": np.array(backend.to_numpy(self.v), copy=True),
            "t": np.asarray(self.t, dtype=np.int64),
            "lr": np.asarray(self.lr, dtype=np.float64),
            "beta1": np.asarray(self.beta1, dtype=np.float64),
            "beta2": np.asarray(self.beta2, dtype=np.float64),
            "eps": np.asarray(self.eps, dtype=np.float64),
        }

    @classmethod
    def from_dict(cls, d: dict, *, xp=None, device=None) -> "Adam":
        r"""Exact inverse of :meth:`to_dict`; moments go to ``xp`` / ``device`` in their saved dtype.

        Parameters
        ----------
        d : dict
            Output of :meth:`to_dict`.
        xp : array namespace or None
        device : str or None

        Returns
        -------
        Adam
        """
        missing = [k for k in ("m", "v", "t", "lr", "beta1", "beta2", "eps") if k not in d]
        if missing:
            raise ValueError(f"Adam state dict is missing {missing}")
        return cls(
            backend.from_numpy(np.asarray(d["m"]), xp, device),
            backend.from_numpy(np.asarray(d["v"]), xp, device),
            int(d["t"]), float(d["lr"]), float(d["beta1"]), float(d["beta2"]), float(d["eps"]),
        )


def fit_adam(vf: ValueFunction, w_p, obs_no, ret_n, *, epochs: int = 10, batch_size: int = 128,
             lr: float = 1e-3, rng=None, state: Adam | None = None):
    r"""Fit the critic by minibatch Adam, SB3-contrib's critic schedule.

    For each of ``epochs`` passes (SB3-contrib's ``n_critic_updates``), draw
    a permutation of the N samples and take one :meth:`Adam.step` per
    consecutive slice of ``batch_size`` indices (the last slice may be
    shorter), each on the minibatch loss

    .. math:: \ell_B(w) = \frac1{|B|}\sum_{n\in B}\big(V_w(s_n) - \hat R_n\big)^2

    Parameters
    ----------
    vf : ValueFunction
    w_p : array (P,)
    obs_no : array (N, obs_dim)
    ret_n : array (N,)
    epochs : int
        Passes over the batch.
    batch_size : int
        Minibatch size (SB3-contrib's ``batch_size``, 128 by default).
    lr : float
        Step size; replaces ``state.lr`` when a state is given, as SB3 resets
        the optimizer's learning rate from its schedule on every update.
    rng : numpy.random.Generator, int or None
        Host generator for the permutations (see
        :func:`trpo_ref.backend.host_rng`); pass one for reproducible fits.
    state : Adam, optional
        State from the previous fit (``FitInfo.state``); a fresh
        ``Adam.init(w, lr=lr)`` with PyTorch's defaults when omitted.  Pass
        ``Adam.init(w, eps=1e-5)`` to replay SB3.

    Returns
    -------
    w_new : array (P,)
    info : FitInfo
        ``n_steps`` = epochs · ⌈N / batch_size⌉; ``state`` is the Adam state to keep.

    Notes
    -----
    All permutations are drawn on the host, one ``rng.permutation(N)`` per
    epoch in order, and moved to the device in one transfer; minibatches are
    gathered with ``xp.take``.  For NumPy arrays and a tanh critic the loop is
    :class:`_MinibatchAdamNumpy`: the same operations on buffers allocated once
    per fit, the same numbers bit for bit, ~1.3-1.4x faster at SB3-contrib's
    schedule (docs/performance.md).  ``loss_before`` and ``loss_after`` are
    forward passes only.
    """
    w_p, obs_no, ret_n = vf._check_inputs(w_p, obs_no, ret_n)
    epochs = _positive_int(epochs, "epochs")
    batch_size = _positive_int(batch_size, "batch_size")
    xp = backend.namespace(w_p)
    if state is None:
        state = Adam.init(w_p, lr=lr)
    else:
        if not isinstance(state, Adam):
            raise ValueError(f"state must be an Adam state or None, got {type(state).__name__}")
        state = dataclasses.replace(state, lr=float(lr))
    if tuple(state.m.shape) != (vf.num_params,) or state.m.dtype != w_p.dtype:
        raise ValueError(f"state must hold moments of shape ({vf.num_params},) and dtype {w_p.dtype}, "
                         f"got {tuple(state.m.shape)} and {state.m.dtype}")

    n = obs_no.shape[0]
    rng = backend.host_rng(rng)
    perm_host = np.stack([rng.permutation(n) for _ in range(epochs)])  # (epochs, N), host draws

    loss_before = backend.to_float(vf._loss(w_p, obs_no, ret_n))
    if _MinibatchAdamNumpy.applies(vf, w_p, obs_no, ret_n, state):
        loop = _MinibatchAdamNumpy(vf, w_p, min(batch_size, n))  # a batch over N is one minibatch of N
        w_p, state, n_steps = loop.fit(obs_no, ret_n, perm_host, state)
        return w_p, FitInfo(loss_before, backend.to_float(vf._loss(w_p, obs_no, ret_n)), n_steps, state)

    perm_en = backend.from_numpy(perm_host, xp, backend.device_of(w_p), xp.int64)  # host -> device, once
    n_steps = 0
    # Adam's update (Adam.step's operations, in its order, so the numbers are the same) on moments
    # owned by this fit, updated in place: Adam.step's checks and its new state per minibatch cost as
    # much as the update's arithmetic at P ~ 4.5k (measured, docs/performance.md).
    m_p, v_p, t = xp.asarray(state.m, copy=True), xp.asarray(state.v, copy=True), state.t
    beta1, beta2, eps, lr = state.beta1, state.beta2, state.eps, state.lr
    for e in range(epochs):
        for start in range(0, n, batch_size):
            idx_b = perm_en[e, start:min(start + batch_size, n)]  # in-bounds slice (array API)
            obs_bo = xp.take(obs_no, idx_b, axis=0)
            ret_b = xp.take(ret_n, idx_b, axis=0)
            _, grad_p = vf._loss_and_grad(w_p, obs_bo, ret_b)
            t += 1
            m_p += (1.0 - beta1) * (grad_p - m_p)  # β₁ m + (1 − β₁) g
            v_p *= beta2
            v_p += (1.0 - beta2) * (grad_p * grad_p)  # β₂ v + (1 − β₂) g²
            denom = xp.sqrt(v_p) / math.sqrt(1.0 - beta2 ** t) + eps  # √v̂ + ε
            w_p = w_p - (lr / (1.0 - beta1 ** t)) * (m_p / denom)  # w − α m̂ / (√v̂ + ε)
            n_steps += 1
    state = dataclasses.replace(state, m=m_p, v=v_p, t=t)
    loss_after = backend.to_float(vf._loss(w_p, obs_no, ret_n))
    return w_p, FitInfo(loss_before, loss_after, n_steps, state)


class _MinibatchAdamNumpy:
    r""":func:`fit_adam`'s loop for NumPy arrays and a tanh critic, on buffers allocated once per fit.

    Each minibatch step does the operations of :meth:`ValueFunction._loss_and_grad` (forward,
    :math:`\bar V = \frac{2}{|B|}(V - \hat R)`, :meth:`trpo_ref.mlp.MLP.vjp` without :math:`\bar x`)
    and of :func:`fit_adam`'s Adam update, with the same operands (the same shapes and memory
    layouts, so the same BLAS calls) in the same order, each writing into a preallocated buffer
    (``out=`` or in place) instead of a new array: the numbers are the same bit for bit
    (tests/test_value.py checks it against the generic loop).  The weights are updated in place
    on a copy (so W and b are views of it taken once, and the gradient's W̄, b̄ are views of one
    gradient vector the products write into); the minibatch rows are gathered once per epoch (one
    ``take`` of the epoch's permutation, then a slice per minibatch: the same rows in the same
    order).  The loss of each minibatch is not computed (:func:`fit_adam` never used it).
    At 128 × 64 the three large products and the two ``tanh`` dominate a step; what this saves
    is the allocation and the dispatch around them (docs/performance.md).
    """

    @staticmethod
    def applies(vf, w_p, obs_no, ret_n, state) -> bool:
        """NumPy arrays of one float dtype (after :meth:`ValueFunction._check_data`'s cast) and tanh."""
        arrays = (w_p, obs_no, ret_n, state.m, state.v)
        return (vf.activation == "tanh" and all(type(a) is np.ndarray for a in arrays)
                and w_p.dtype in (np.float32, np.float64) and all(a.dtype == w_p.dtype for a in arrays))

    def __init__(self, vf: ValueFunction, w_p, rows: int):
        mlp, dtype = vf.mlp, w_p.dtype
        self.rows = rows  # minibatch size (the last minibatch of an epoch may be shorter)
        self.w_p = np.array(w_p, copy=True)  # updated in place; the caller's array is left as it was
        self.grad_p = np.empty_like(w_p)
        self.tmp_p = np.empty_like(w_p)
        # per layer: W, b (views of w), W̄, b̄ (views of the gradient), its output buffer (rows, out)
        self.layers = []
        for (n_in, n_out), (s, w, e) in zip(zip(mlp.sizes[:-1], mlp.sizes[1:]), mlp._offsets):
            self.layers.append((self.w_p[s:w].reshape(n_in, n_out), self.w_p[w:e],
                                self.grad_p[s:w].reshape(n_in, n_out), self.grad_p[w:e],
                                np.empty((rows, n_out), dtype)))
        # per hidden layer: φ'(z) = 1 − h² and the cotangent h̄ = z̄ Wᵀ (rows, width)
        self.derivs = [np.empty((rows, k), dtype) for k in mlp.sizes[1:-1]]
        self.h_bars = [np.empty((rows, k), dtype) for k in mlp.sizes[1:-1]]
        self.ones = np.ones((rows,), dtype)

    def grad(self, obs_bo, ret_b):
        """Gradient of the minibatch loss at the current weights, into ``self.grad_p``."""
        m = obs_bo.shape[0]
        layers = self.layers
        # forward: h_{l+1} = tanh(h_l W_l + b_l), y = h W + b (MLP._run)
        inputs = [obs_bo]
        h = obs_bo
        for W, b, _, _, out in layers[:-1]:
            z = out[:m]
            np.matmul(h, W, out=z)
            z += b
            h = np.tanh(z, out=z)
            inputs.append(h)
        W, b, _, _, out = layers[-1]
        y = out[:m]
        np.matmul(h, W, out=y)
        y += b
        # V̄ = (2/|B|)(V − R̂), in y's buffer ((m, 1): V as a column)
        v = y.reshape(-1)
        v -= ret_b
        v *= 2.0 / m
        z_bar = y
        # reverse (MLP.vjp): W̄ = hᵀ z̄, b̄ = 1ᵀ z̄, z̄_{l-1} = (z̄ Wᵀ) * (1 − h²)
        ones = self.ones[:m]
        for l in range(len(layers) - 1, -1, -1):
            W, _, W_bar, b_bar, _ = layers[l]
            h_in = inputs[l]
            np.matmul(h_in.T, z_bar, out=W_bar)
            np.matmul(ones, z_bar, out=b_bar)
            if l > 0:
                h_bar = self.h_bars[l - 1][:m]
                np.matmul(z_bar, W.T, out=h_bar)
                d = self.derivs[l - 1][:m]
                np.multiply(h_in, h_in, out=d)
                np.subtract(1, d, out=d)
                h_bar *= d
                z_bar = h_bar
        return self.grad_p

    def fit(self, obs_no, ret_n, perm_host, state: Adam):
        """The epochs of :func:`fit_adam`: ``(w_new, state, n_steps)``."""
        n, rows = obs_no.shape[0], self.rows
        w_p, g_p, tmp_p = self.w_p, self.grad_p, self.tmp_p
        m_p, v_p, t = np.array(state.m, copy=True), np.array(state.v, copy=True), state.t
        beta1, beta2, eps, lr = state.beta1, state.beta2, state.eps, state.lr
        obs_perm_no = np.empty(obs_no.shape, obs_no.dtype)  # C order, as np.take gives the generic loop
        ret_perm_n = np.empty(ret_n.shape, ret_n.dtype)
        for perm in perm_host:
            np.take(obs_no, perm, axis=0, out=obs_perm_no)  # this epoch's rows in its order, once
            np.take(ret_n, perm, axis=0, out=ret_perm_n)
            for start in range(0, n, rows):
                stop = min(start + rows, n)
                self.grad(obs_perm_no[start:stop], ret_perm_n[start:stop])
                t += 1
                # fit_adam's update, operation by operation
                np.subtract(g_p, m_p, out=tmp_p)
                tmp_p *= 1.0 - beta1
                m_p += tmp_p  # β₁ m + (1 − β₁) g
                v_p *= beta2
                np.multiply(g_p, g_p, out=tmp_p)
                tmp_p *= 1.0 - beta2
                v_p += tmp_p  # β₂ v + (1 − β₂) g²
                np.sqrt(v_p, out=tmp_p)
                tmp_p /= math.sqrt(1.0 - beta2 ** t)
                tmp_p += eps  # √v̂ + ε
                np.divide(m_p, tmp_p, out=tmp_p)
                tmp_p *= lr / (1.0 - beta1 ** t)
                w_p -= tmp_p  # w − α m̂ / (√v̂ + ε)
        return w_p, dataclasses.replace(state, m=m_p, v=v_p, t=t), t - state.t


# ----------------------------------------------------------- explained variance
def explained_variance(pred_n, target_n) -> float:
    r"""Fraction of the targets' variance the predictions explain.

    .. math:: EV = 1 - \frac{\mathrm{Var}[\hat R - V]}{\mathrm{Var}[\hat R]}

    1 for perfect predictions, 0 for predicting the targets' mean (or any
    constant, or anything whose error is as spread as the targets), negative
    when worse than that.  Population variances (no Bessel correction), as
    SB3's and OpenAI baselines' ``explained_variance``.

    Parameters
    ----------
    pred_n : array (N,)
        Predictions :math:`V(s_n)`.
    target_n : array (N,)
        Targets :math:`\hat R_n`.

    Returns
    -------
    float
        ``nan`` when :math:`\mathrm{Var}[\hat R] = 0` (constant targets, one
        sample included), as SB3 and baselines do.  NaN or inf in the inputs
        propagate to the result (this is a logging quantity).
    """
    xp = backend.namespace(pred_n, target_n)
    if len(target_n.shape) != 1 or target_n.shape[0] < 1:
        raise ValueError(f"target must have shape (N,) with N >= 1, got {tuple(target_n.shape)}")
    if tuple(pred_n.shape) != tuple(target_n.shape):
        raise ValueError(f"pred must have shape {tuple(target_n.shape)} like target, got {tuple(pred_n.shape)}")
    var_target = backend.to_float(xp.var(target_n))
    if var_target == 0.0:
        return math.nan
    return 1.0 - backend.to_float(xp.var(target_n - pred_n)) / var_target
