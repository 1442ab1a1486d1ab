r"""MLP policies as plain functions of a flat parameter vector θ.

A policy object holds only the architecture; every quantity TRPO needs is a
method taking θ explicitly, which is what finite-difference tests and foreign
implementations need.

=======================================================================================  ======================================
equation                                                                                 method
=======================================================================================  ======================================
:math:`\log\pi_\theta(a_n|s_n)`                                                          :meth:`~MLPPolicy.log_prob`
:math:`\bar H(\theta) = \frac1N\sum_n H(\pi_\theta(\cdot|s_n))`                          :meth:`~MLPPolicy.entropy`
:math:`\bar D_{KL}(\theta_{old}\|\theta) = \frac1N\sum_n KL(\pi_{old}(\cdot|s_n)\|\pi_\theta(\cdot|s_n))`
                                                                                         :meth:`~MLPPolicy.kl`, :meth:`~MLPPolicy.kl_grad`
:math:`L(\theta) = \frac1N\sum_n r_n(\theta)\hat A_n,\ r_n = e^{\log\pi_\theta - \log\pi_{old}}`
                                                                                         :meth:`~MLPPolicy.surrogate`
:math:`\nabla L(\theta) = \frac1N\sum_n r_n\hat A_n\nabla\log\pi_\theta(a_n|s_n)`        :meth:`~MLPPolicy.surrogate_grad`
:math:`(F + \lambda_d I)v = \frac1N\sum_n J_n^\top M_n J_n v + \lambda_d v`                  :meth:`~MLPPolicy.fisher_vector_product`, :class:`FisherOperator`
=======================================================================================  ======================================

Parameter layout: the MLP's ``W0, b0, W1, b1, ...`` (see :mod:`trpo_ref.mlp`),
then, for the Gaussian policy, ``log_std`` (length act_dim).

References
----------
Schulman et al., "Trust Region Policy Optimization", ICML 2015, eqs. (14) and
Appendix C (Fisher-vector products).  Martens, "New insights and perspectives
on the natural gradient method", JMLR 2020, §9 (the Gauss-Newton form JᵀMJ).
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Sequence

import numpy as np

from . import backend
from .heads import BernoulliHead, CategoricalHead, GaussianHead, Head, MultiCategoricalHead, head_from_spec
from .mlp import MLP

__all__ = ["MLPPolicy", "GaussianMLPPolicy", "CategoricalMLPPolicy", "MultiCategoricalMLPPolicy", "BernoulliMLPPolicy",
           "PolicyAt", "FisherOperator", "policy_from_spec", "policy_for_head"]


def _require_finite(xp, x, name: str) -> None:
    if not bool(xp.all(xp.isfinite(x))):
        raise ValueError(f"{name} contains NaN or inf")


class MLPPolicy:
    r"""A policy = an MLP composed with a head: φ = head(MLP(s; θ_net), θ_extra).

    The network maps observations to the head's ``out_dim`` outputs; the head
    (:mod:`trpo_ref.heads`) turns them, with its own parameters (log σ), into
    the action distribution's parameters φ and owns everything that depends on
    the distribution.  Every derivative in θ is the network's vjp or jvp of the
    head's derivative in φ, so this class has no branch on the kind of head.

    Parameters
    ----------
    obs_dim : int
    head : trpo_ref.heads.Head
    hidden_sizes : sequence of int
    activation : {"tanh", "relu"}
    hidden_gain, output_gain : float
        Orthogonal-init gains (√2 and 0.01 as in SB3 / OpenAI baselines).
    """

    def __init__(self, obs_dim: int, head: Head, hidden_sizes: Sequence[int] = (64, 64),
                 activation: str = "tanh", hidden_gain: float = math.sqrt(2.0),
                 output_gain: float = 0.01):
        if int(obs_dim) < 1:
            raise ValueError(f"obs_dim must be >= 1, got {obs_dim}")
        self.obs_dim = int(obs_dim)
        if isinstance(hidden_sizes, (str, bytes)) or not all(
                isinstance(h, numbers.Integral) and not isinstance(h, bool) and h >= 1 for h in hidden_sizes):
            raise ValueError(f"hidden_sizes must be a sequence of integers >= 1, got {hidden_sizes!r}")
        self.hidden_sizes = tuple(int(h) for h in hidden_sizes)
        self.activation = activation
        self.hidden_gain = float(hidden_gain)
        self.output_gain = float(output_gain)
        if not isinstance(head, Head):
            raise ValueError(f"head must be a trpo_ref.heads.Head, got {type(head).__name__}")
        self.head = head
        self.mlp = MLP((self.obs_dim, *self.hidden_sizes, head.out_dim), activation)

    @property
    def kind(self) -> str:
        """The head's kind ("gaussian", "categorical", "multicategorical", "bernoulli")."""
        return self.head.kind

    @property
    def act_dim(self) -> int:
        """Columns of an action (the head's; 1 for a categorical index)."""
        return self.head.act_dim

    @property
    def continuous_actions(self) -> bool:
        """Whether actions are float rows (Gaussian) rather than integers."""
        return self.head.continuous_actions

    # ------------------------------------------------------------------ layout
    @property
    def num_params(self) -> int:
        """Length P of θ."""
        return self.mlp.num_params + self.head.n_extra

    #: Per-sample KL terms that SB3-contrib's ``.mean()`` averages over (its ``"mean"`` reduction
    #: divides the KL and F by this): the action dimensions of a Gaussian or Bernoulli head whose
    #: torch distribution is not ``Independent``; 1 for categoricals (MultiDiscrete KL is summed).
    @property
    def mean_reduction_size(self) -> int:
        """How many per-sample KL terms a ``"mean"`` KL reduction averages over (1: none)."""
        return self.head.mean_reduction_size

    def act_shape(self, n: int) -> tuple[int, ...]:
        """Shape of a batch of ``n`` actions.

        Parameters
        ----------
        n : int
            Number of samples.

        Returns
        -------
        tuple of int
        """
        return self.head.act_shape(n)

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """Names and shapes of the parameters in θ order: the MLP's ``W0, b0, ...``, then the head's
        (``log_std`` (act_dim,) for a Gaussian)."""
        return {**self.mlp.param_shapes(), **self.head.extra_shapes()}

    def unflatten(self, theta_p) -> dict[str, Any]:
        r"""``{"W0": (in, out), "b0", ..., ["log_std"]}`` views of θ.

        Parameters
        ----------
        theta_p : array (P,)
            Flat policy parameters θ.

        Returns
        -------
        named : dict of str to array
            Views of θ, shapes as :meth:`param_shapes`.
        """
        theta_p = self._check_theta(theta_p)
        named = self.mlp.unflatten(theta_p[: self.mlp.num_params])
        pos = self.mlp.num_params
        for name, shape in self.head.extra_shapes().items():
            size = math.prod(shape)
            named[name] = theta_p[pos:pos + size]
            pos += size
        return named

    def flatten(self, named: dict[str, Any]):
        r"""Exact inverse of :meth:`unflatten`; unknown keys are an error.

        Parameters
        ----------
        named : dict of str to array
            One array per name of :meth:`param_shapes`, in that shape.

        Returns
        -------
        theta_p : array (P,)
        """
        extra = set(named) - set(self.param_shapes())
        if extra:
            raise ValueError(f"unknown parameter names {sorted(extra)}; expected {list(self.param_shapes())}")
        theta = self.mlp.flatten({k: v for k, v in named.items() if k in self.mlp.param_shapes()})
        head_shapes = self.head.extra_shapes()
        if not head_shapes:
            return theta
        xp = backend.namespace(*named.values())
        parts = [theta]
        for name, shape in head_shapes.items():
            if name not in named:
                raise ValueError(f"missing parameter {name!r}")
            if tuple(named[name].shape) != shape:
                raise ValueError(f"{name} must have shape {shape}, got {tuple(named[name].shape)}")
            parts.append(named[name])
        return xp.concat(parts)

    def init_params(self, seed=0, *, dtype=None, device=None):
        r"""Orthogonal initialisation (gains √2 hidden, ``output_gain`` last layer), flat θ.

        Drawn on the host with ``seed``, then moved to ``device`` ("cpu" or "cuda").

        Parameters
        ----------
        seed : int, numpy.random.Generator or None
        dtype : dtype or None
            float64 by default.
        device : str or None
            "cpu" or "cuda".

        Returns
        -------
        theta_p : array (P,)
        """
        theta = self.mlp.init(seed, self.hidden_gain, self.output_gain)
        theta = np.concatenate([theta, self.head.init_extra()])
        xp, dev = backend.get_namespace(device)
        return backend.from_numpy(theta, xp, dev, backend.resolve_dtype(xp, dtype))

    def spec(self) -> dict:
        """JSON-serialisable description of the architecture (see :func:`policy_from_spec`)."""
        return {
            "kind": self.kind,
            "obs_dim": self.obs_dim,
            "out_dim": self.mlp.sizes[-1],
            "hidden_sizes": list(self.hidden_sizes),
            "activation": self.activation,
            "hidden_gain": self.hidden_gain,
            "output_gain": self.output_gain,
            **self.head.spec(),
        }

    # ------------------------------------------------------------ input checks
    def _check_theta(self, theta_p, name: str = "theta"):
        xp = backend.namespace(theta_p)
        if tuple(theta_p.shape) != (self.num_params,):
            raise ValueError(f"{name} must have shape ({self.num_params},) for this policy, got {tuple(theta_p.shape)}")
        if theta_p.dtype not in (xp.float32, xp.float64):
            raise ValueError(f"{name} must be a float32 or float64 array, got {theta_p.dtype}")
        _require_finite(xp, theta_p, name)
        return theta_p

    def _check_obs(self, obs_no, theta_p):
        xp = backend.namespace(theta_p, obs_no)
        if len(obs_no.shape) != 2 or obs_no.shape[1] != self.obs_dim:
            raise ValueError(f"obs must have shape (N, {self.obs_dim}), got {tuple(obs_no.shape)}")
        if obs_no.shape[0] < 1:
            raise ValueError("obs is empty: need at least one sample")
        if obs_no.dtype != theta_p.dtype:
            obs_no = xp.astype(obs_no, theta_p.dtype)
        _require_finite(xp, obs_no, "obs")
        return obs_no

    def _check_vec(self, x_n, n: int, theta_p, name: str):
        xp = backend.namespace(theta_p, x_n)
        if tuple(x_n.shape) != (n,):
            raise ValueError(f"{name} must have shape ({n},) to match obs, got {tuple(x_n.shape)}")
        if x_n.dtype != theta_p.dtype:
            x_n = xp.astype(x_n, theta_p.dtype)
        _require_finite(xp, x_n, name)
        return x_n

    def _check_inputs(self, theta_p, obs_no, act=None, adv_n=None, logp_old_n=None):
        theta_p = self._check_theta(theta_p)
        obs_no = self._check_obs(obs_no, theta_p)
        n = obs_no.shape[0]
        out = [theta_p, obs_no]
        if act is not None:
            out.append(self.head.check_act(act, n, theta_p))
        if adv_n is not None:
            out.append(self._check_vec(adv_n, n, theta_p, "adv"))
        if logp_old_n is not None:
            out.append(self._check_vec(logp_old_n, n, theta_p, "logp_old"))
        return out

    # ---------------------------------------------------- distribution plumbing
    def _dist(self, theta_p, obs_no):
        """(φ, the network's cache) at θ on a batch: the forward pass, then the head."""
        m = self.mlp.num_params
        out, cache = self.mlp.forward(theta_p[:m], obs_no)
        return self.head.phi(out, theta_p[m:]), cache

    def _pullback(self, theta_p, cache, phi_bar):
        """A cotangent in φ to one in θ: the head's pull-back, then the network's vjp."""
        out_bar, extra_bar = self.head.pullback(phi_bar)
        theta_bar, _ = self.mlp.vjp(cache, out_bar, input_grad=False)
        if extra_bar is None:
            return theta_bar
        return backend.namespace(theta_p).concat([theta_bar, extra_bar])

    def at(self, theta_p, obs_no, act=None) -> "PolicyAt":
        r"""The policy at θ on a batch, the forward pass done once (see :class:`PolicyAt`).

        Parameters
        ----------
        theta_p : array (P,)
            Flat policy parameters θ.
        obs_no : array (N, obs_dim)
            Observations; cast to θ's dtype.
        act : array, optional
            Actions (needed for log-probabilities and the surrogate).

        Returns
        -------
        PolicyAt
        """
        return PolicyAt(self, theta_p, obs_no, act)

    def log_prob(self, theta_p, obs_no, act):
        r"""Log-probabilities :math:`\log\pi_\theta(a_n|s_n)`, shape (N,).

        .. math:: \log\pi_\theta(a_n|s_n) = \log p\big(a_n;\ \phi_\theta(s_n)\big)

        Parameters
        ----------
        theta_p : array (P,)
            Flat policy parameters θ.
        obs_no : array (N, obs_dim)
            Observations; cast to θ's dtype.
        act : array (N, act_dim) float or integer array (N,)
            Actions: continuous rows (Gaussian) or indices (categorical).

        Returns
        -------
        logp_n : array (N,)
        """
        return self.at(theta_p, obs_no, act).log_prob()

    def log_prob_grad(self, theta_p, obs_no, act, weights_n):
        r""":math:`\sum_n w_n \nabla_\theta\log\pi_\theta(a_n|s_n)`, shape (P,).

        .. math:: g(\theta) = \sum_n w_n\,\nabla_\theta\log\pi_\theta(a_n|s_n)

        Parameters
        ----------
        theta_p : array (P,)
            Flat policy parameters θ.
        obs_no : array (N, obs_dim)
            Observations; cast to θ's dtype.
        act : array (N, act_dim) float or integer array (N,)
            Actions: continuous rows (Gaussian) or indices (categorical).
        weights_n : array (N,)
            Per-sample weights w_n (not divided by N here).

        Returns
        -------
        grad_p : array (P,)
        """
        theta_p, obs_no, act, weights_n = self._check_inputs(theta_p, obs_no, act, weights_n)
        phi, cache = self._dist(theta_p, obs_no)
        return self._pullback(theta_p, cache, self.head.scale(self.head.log_prob_grad(phi, act), weights_n))

    def entropy(self, theta_p, obs_no):
        r"""Mean entropy :math:`\frac1N\sum_n H(\pi_\theta(\cdot|s_n))` (0-d array).

        .. math:: \bar H(\theta) = \frac1N\sum_n H\big(\pi_\theta(\cdot|s_n)\big)

        Parameters
        ----------
        theta_p : array (P,)
            Flat policy parameters θ.
        obs_no : array (N, obs_dim)
            Observations; cast to θ's dtype.

        Returns
        -------
        h : 0-d array
        """
        return self.at(theta_p, obs_no).entropy()

    def entropy_grad(self, theta_p, obs_no):
        r""":math:`\nabla_\theta \bar H(\theta)`, shape (P,).

        .. math:: \nabla_\theta\bar H = \frac1N\sum_n J_n^\top\,\frac{\partial H}{\partial\phi}\Big|_{\phi_\theta(s_n)}

        Parameters
        ----------
        theta_p : array (P,)
            Flat policy parameters θ.
        obs_no : array (N, obs_dim)
            Observations; cast to θ's dtype.

        Returns
        -------
        grad_p : array (P,)
        """
        return self.at(theta_p, obs_no).entropy_grad()

    def kl(self, theta_old_p, theta_p, obs_no, reverse: bool = False):
        r"""Mean KL :math:`\frac1N\sum_n KL(\pi_{old}(\cdot|s_n)\,\|\,\pi_\theta(\cdot|s_n))` (0-d array).

        ``reverse=True`` gives :math:`KL(\pi_\theta\|\pi_{old})` instead (the direction
        SB3-contrib checks in its line search).

        Parameters
        ----------
        theta_old_p : array (P,)
            θ_old, held fixed.
        theta_p : array (P,)
            Flat policy parameters θ.
        obs_no : array (N, obs_dim)
            Observations; cast to θ's dtype.
        reverse : bool
            Use :math:`KL(\pi_\theta\|\pi_{old})` instead.

        Returns
        -------
        kl : 0-d array
        """
        xp = backend.namespace(theta_p)
        theta_old_p = self._check_theta(theta_old_p, "theta_old")
        theta_p, obs_no = self._check_inputs(theta_p, obs_no)
        phi_old, _ = self._dist(theta_old_p, obs_no)
        phi, _ = self._dist(theta_p, obs_no)
        kl_n = self.head.kl(phi, phi_old) if reverse else self.head.kl(phi_old, phi)
        return xp.mean(kl_n)

    def kl_grad(self, theta_old_p, theta_p, obs_no, reverse: bool = False):
        r""":math:`\nabla_\theta` of :meth:`kl` with θ_old held fixed, shape (P,).

        Zero at θ = θ_old in both directions.

        Parameters
        ----------
        theta_old_p : array (P,)
            θ_old, held fixed.
        theta_p : array (P,)
            Flat policy parameters θ.
        obs_no : array (N, obs_dim)
            Observations; cast to θ's dtype.
        reverse : bool
            Use :math:`KL(\pi_\theta\|\pi_{old})` instead.

        Returns
        -------
        grad_p : array (P,)
        """
        theta_old_p = self._check_theta(theta_old_p, "theta_old")
        theta_p, obs_no = self._check_inputs(theta_p, obs_no)
        n = obs_no.shape[0]
        phi_old, _ = self._dist(theta_old_p, obs_no)
        phi, cache = self._dist(theta_p, obs_no)
        phi_bar = self.head.kl_grad_p(phi, phi_old) if reverse else self.head.kl_grad_q(phi_old, phi)
        return self._pullback(theta_p, cache, self.head.scale(phi_bar, 1.0 / n))

    def surrogate(self, theta_p, obs_no, act, adv_n, logp_old_n):
        r"""Importance-weighted surrogate (0-d array).

        .. math:: L(\theta) = \frac1N\sum_n e^{\log\pi_\theta(a_n|s_n) - \log\pi_{old}(a_n|s_n)}\hat A_n

        Parameters
        ----------
        theta_p : array (P,)
            Flat policy parameters θ.
        obs_no : array (N, obs_dim)
            Observations; cast to θ's dtype.
        act : array (N, act_dim) float or integer array (N,)
            Actions: continuous rows (Gaussian) or indices (categorical).
        adv_n : array (N,)
            Advantage estimates Â_n.
        logp_old_n : array (N,)
            :math:`\log\pi_{old}(a_n|s_n)` recorded at sampling time.

        Returns
        -------
        surr : 0-d array
        """
        return self.at(theta_p, obs_no, act).surrogate(adv_n, logp_old_n)

    def surrogate_grad(self, theta_p, obs_no, act, adv_n, logp_old_n):
        r"""Gradient of :meth:`surrogate`, shape (P,).

        .. math:: \nabla L(\theta) = \frac1N\sum_n r_n(\theta)\hat A_n\nabla_\theta\log\pi_\theta(a_n|s_n)

        At θ = θ_old the ratio is 1 and this is the policy gradient g.

        Parameters
        ----------
        theta_p : array (P,)
            Flat policy parameters θ.
        obs_no : array (N, obs_dim)
            Observations; cast to θ's dtype.
        act : array (N, act_dim) float or integer array (N,)
            Actions: continuous rows (Gaussian) or indices (categorical).
        adv_n : array (N,)
            Advantage estimates Â_n.
        logp_old_n : array (N,)
            :math:`\log\pi_{old}(a_n|s_n)` recorded at sampling time.

        Returns
        -------
        grad_p : array (P,)
        """
        return self.at(theta_p, obs_no, act).surrogate_grad(adv_n, logp_old_n)

    def fisher_operator(self, theta_p, obs_no, damping: float = 0.0, *, forward=None) -> "FisherOperator":
        r"""A :class:`FisherOperator` at θ with the forward pass done once.

        .. math:: v \mapsto (F + \lambda_d I)v,\qquad F = \frac1N\sum_n J_n^\top M_n J_n

        Parameters
        ----------
        theta_p : array (P,)
            Flat policy parameters θ.
        obs_no : array (N, obs_dim)
            Observations; cast to θ's dtype.
        damping : float
            λ >= 0 added on the diagonal.
        forward : (out, cache), optional
            ``self.mlp.forward`` at θ on ``obs_no`` when already done (:meth:`PolicyAt.fisher_operator`).

        Returns
        -------
        FisherOperator
            Callable ``v_p (P,) -> (P,)``.
        """
        return FisherOperator(self, theta_p, obs_no, damping, forward=forward)

    def fisher_vector_product(self, theta_p, obs_no, v_p, damping: float = 0.0):
        r"""Analytic Fisher-vector product :math:`(F + \lambda_d I)v`, shape (P,).

        .. math:: F v = \frac1N\sum_n J_n^\top\big(M_n (J_n v)\big)

        One forward pass, one jvp and one vjp; no dense F, no finite
        differences, no second derivative of the network.

        Parameters
        ----------
        theta_p : array (P,)
            Flat policy parameters θ.
        obs_no : array (N, obs_dim)
            Observations; cast to θ's dtype.
        v_p : array (P,)
            Vector v.
        damping : float
            λ >= 0.

        Returns
        -------
        fv_p : array (P,)
        """
        return FisherOperator(self, theta_p, obs_no, damping)(v_p)

    def sample(self, theta_p, obs_no, rng=None, deterministic: bool = False, validate: bool = True):
        r"""Actions for a batch of observations and their log-probabilities.

        Noise is drawn on the host from ``rng`` (a seed or numpy Generator).
        ``deterministic=True`` returns the mode.  Returns ``(act, logp_n)``.

        ``validate=False`` skips the input checks: for a caller that checked θ
        once and calls this every environment step with observations it built
        itself (the rollout), where the checks cost more than the network.

        Parameters
        ----------
        theta_p : array (P,)
            Flat policy parameters θ.
        obs_no : array (N, obs_dim)
            Observations; cast to θ's dtype.
        rng : int, numpy.random.Generator or None
        deterministic : bool
            Return the mode (μ, or the arg-max logit).
        validate : bool
            Run the input checks.

        Returns
        -------
        act : array (N, act_dim) float or integer array (N,)
        logp_n : array (N,)
        """
        if validate:
            theta_p, obs_no = self._check_inputs(theta_p, obs_no)
        phi, _ = self._dist(theta_p, obs_no)
        act = self.head.mode(phi) if deterministic else self.head.sample(phi, rng)
        return act, self.head.log_prob(phi, act)


class GaussianMLPPolicy(MLPPolicy):
    r"""Diagonal Gaussian policy: mean = MLP(s), state-independent log σ (an MLP with a :class:`GaussianHead`).

    Parameters
    ----------
    obs_dim, act_dim : int
    hidden_sizes : sequence of int
    activation : {"tanh", "relu"}
    log_std_init : float
        Initial value of every log σ_i (0 as in SB3 and Spinning Up).
    hidden_gain, output_gain : float
        Orthogonal-init gains (√2 and 0.01 as in SB3 / OpenAI baselines).
    """

    kind = "gaussian"
    continuous_actions = True

    def __init__(self, obs_dim: int, act_dim: int, hidden_sizes: Sequence[int] = (64, 64),
                 activation: str = "tanh", log_std_init: float = 0.0,
                 hidden_gain: float = math.sqrt(2.0), output_gain: float = 0.01):
        super().__init__(obs_dim, GaussianHead(act_dim, log_std_init), hidden_sizes, activation, hidden_gain,
                         output_gain)

    @property
    def log_std_init(self) -> float:
        """Initial value of every log σ_i (the head's)."""
        return self.head.log_std_init


class CategoricalMLPPolicy(MLPPolicy):
    r"""Categorical policy over ``n_actions`` actions: logits = MLP(s) (an MLP with a :class:`CategoricalHead`).

    Parameters
    ----------
    obs_dim, n_actions : int
    hidden_sizes : sequence of int
    activation : {"tanh", "relu"}
    hidden_gain, output_gain : float
    """

    kind = "categorical"
    continuous_actions = False

    def __init__(self, obs_dim: int, n_actions: int, hidden_sizes: Sequence[int] = (64, 64),
                 activation: str = "tanh", hidden_gain: float = math.sqrt(2.0),
                 output_gain: float = 0.01):
        super().__init__(obs_dim, CategoricalHead(n_actions), hidden_sizes, activation, hidden_gain, output_gain)

    @property
    def n_actions(self) -> int:
        """Number of actions (the head's)."""
        return self.head.n_actions


class MultiCategoricalMLPPolicy(MLPPolicy):
    r"""Independent categoricals for MultiDiscrete actions: logits = MLP(s), one slice per sub-action
    (an MLP with a :class:`MultiCategoricalHead`).

    .. math:: \log\pi(a|s) = \sum_i \log\mathrm{softmax}(z_i(s))_{a_i}

    Parameters
    ----------
    obs_dim : int
    nvec : sequence of int
        Choices per sub-action (gymnasium's ``MultiDiscrete.nvec``), each >= 2.
    hidden_sizes : sequence of int
    activation : {"tanh", "relu"}
    hidden_gain, output_gain : float
    """

    kind = "multicategorical"
    continuous_actions = False

    def __init__(self, obs_dim: int, nvec, hidden_sizes: Sequence[int] = (64, 64), activation: str = "tanh",
                 hidden_gain: float = math.sqrt(2.0), output_gain: float = 0.01):
        super().__init__(obs_dim, MultiCategoricalHead(nvec), hidden_sizes, activation, hidden_gain, output_gain)

    @property
    def nvec(self) -> tuple[int, ...]:
        """Choices per sub-action (the head's)."""
        return self.head.nvec


class BernoulliMLPPolicy(MLPPolicy):
    r"""Independent Bernoulli bits for MultiBinary actions: logits = MLP(s) (an MLP with a :class:`BernoulliHead`).

    .. math:: \log\pi(a|s) = \sum_k a_k\log\sigma(z_k) + (1 - a_k)\log\sigma(-z_k)

    Parameters
    ----------
    obs_dim : int
    n : int
        Number of bits (gymnasium's ``MultiBinary.n``), >= 1.
    hidden_sizes : sequence of int
    activation : {"tanh", "relu"}
    hidden_gain, output_gain : float
    """

    kind = "bernoulli"
    continuous_actions = False

    def __init__(self, obs_dim: int, n: int, hidden_sizes: Sequence[int] = (64, 64), activation: str = "tanh",
                 hidden_gain: float = math.sqrt(2.0), output_gain: float = 0.01):
        super().__init__(obs_dim, BernoulliHead(n), hidden_sizes, activation, hidden_gain, output_gain)

    @property
    def n(self) -> int:
        """Number of bits (the head's)."""
        return self.head.n


class PolicyAt:
    r"""A policy evaluated at one θ on one batch: one forward pass, every quantity read from it.

    One update needs, at θ_old, the log-probabilities, the surrogate and its
    gradient g, the entropy and the Fisher operator, and at each line-search
    try the surrogate and the KL to θ_old.  Each method of the policy runs the
    network again; this object runs it once (and checks the inputs once), then
    works at the level of the distribution parameters φ.  Every method gives
    the same numbers, bit for bit, as the policy method of the same name.

    Parameters
    ----------
    policy : MLPPolicy
    theta_p : array (P,)
    obs_no : array (N, obs_dim)
    act : array, optional
    """

    def __init__(self, policy, theta_p, obs_no, act=None):
        checked = policy._check_inputs(theta_p, obs_no, act)
        self.policy = policy
        self.theta, self.obs = checked[0], checked[1]
        self.act = checked[2] if act is not None else None
        self.n = self.obs.shape[0]
        self._xp = backend.namespace(self.theta)
        m = policy.mlp.num_params
        self.out, self.cache = policy.mlp.forward(self.theta[:m], self.obs)
        self.phi = policy.head.phi(self.out, self.theta[m:])
        self._logp = None

    def _vec(self, x_n, name):
        return self.policy._check_vec(x_n, self.n, self.theta, name)

    def _ratio(self, adv_n, logp_old_n):
        r"""``(r_n, Â_n)``: the checked advantages and the ratio :math:`e^{\log\pi_\theta - \log\pi_{old}}`."""
        adv_n, logp_old_n = self._vec(adv_n, "adv"), self._vec(logp_old_n, "logp_old")
        return self._xp.exp(self.log_prob() - logp_old_n), adv_n

    def log_prob(self):
        r""":math:`\log\pi_\theta(a_n|s_n)`, shape (N,) (cached)."""
        if self.act is None:
            raise ValueError("this PolicyAt was made without actions: pass act to policy.at()")
        if self._logp is None:
            self._logp = self.policy.head.log_prob(self.phi, self.act)
        return self._logp

    def surrogate(self, adv_n, logp_old_n):
        r""":math:`\frac1N\sum_n r_n\hat A_n` (0-d array), as :meth:`GaussianMLPPolicy.surrogate`.

        Parameters
        ----------
        adv_n : array (N,)
            Advantage estimates Â_n.
        logp_old_n : array (N,)
            :math:`\log\pi_{old}(a_n|s_n)` recorded at sampling time.

        Returns
        -------
        surr : 0-d array
        """
        ratio_n, adv_n = self._ratio(adv_n, logp_old_n)
        return self._xp.mean(ratio_n * adv_n)

    def surrogate_terms(self, adv_n, logp_old_n) -> float:
        r"""Size of the surrogate's terms, :math:`\frac1N\sum_n |r_n\hat A_n|` (host float).

        Parameters
        ----------
        adv_n : array (N,)
            Advantage estimates Â_n.
        logp_old_n : array (N,)
            :math:`\log\pi_{old}(a_n|s_n)` recorded at sampling time.

        Returns
        -------
        float
        """
        ratio_n, adv_n = self._ratio(adv_n, logp_old_n)
        return backend.to_float(self._xp.mean(self._xp.abs(ratio_n * adv_n)))

    def surrogate_grad(self, adv_n, logp_old_n):
        r""":math:`\nabla L` (P,), as :meth:`GaussianMLPPolicy.surrogate_grad`.

        Parameters
        ----------
        adv_n : array (N,)
            Advantage estimates Â_n.
        logp_old_n : array (N,)
            :math:`\log\pi_{old}(a_n|s_n)` recorded at sampling time.

        Returns
        -------
        grad_p : array (P,)
        """
        ratio_n, adv_n = self._ratio(adv_n, logp_old_n)
        w_n = ratio_n * adv_n / self.n
        pol, head = self.policy, self.policy.head
        return pol._pullback(self.theta, self.cache, head.scale(head.log_prob_grad(self.phi, self.act), w_n))

    def entropy(self):
        r"""Mean entropy (0-d array)."""
        return self._xp.mean(self.policy.head.entropy(self.phi, self.n))

    def entropy_grad(self):
        r""":math:`\nabla_\theta\bar H` (P,)."""
        return self.policy._pullback(self.theta, self.cache, self.policy.head.entropy_grad(self.phi, self.n))

    def kl(self, old: "PolicyAt", reverse: bool = False):
        r"""Mean :math:`KL(\pi_{old}\|\pi_\theta)` (``reverse``: :math:`KL(\pi_\theta\|\pi_{old})`), 0-d array.

        Parameters
        ----------
        old : PolicyAt
            The policy at θ_old on the same observations.
        reverse : bool
            Use :math:`KL(\pi_\theta\|\pi_{old})` instead.

        Returns
        -------
        kl : 0-d array
        """
        head = self.policy.head
        kl_n = head.kl(self.phi, old.phi) if reverse else head.kl(old.phi, self.phi)
        return self._xp.mean(kl_n)

    def fisher_operator(self, damping: float = 0.0) -> "FisherOperator":
        r"""The policy's Fisher operator at this θ on these observations, reusing this forward pass.

        Parameters
        ----------
        damping : float
            λ_d >= 0 added on the diagonal.

        Returns
        -------
        FisherOperator
        """
        return self.policy.fisher_operator(self.theta, self.obs, damping, forward=(self.out, self.cache))


class FisherOperator:
    r"""The damped Fisher :math:`v \mapsto (F + \lambda_d I)v` at a fixed θ.

    θ_old does not change during conjugate gradient, so the forward pass (and
    σ or the softmax) is computed once here; each product then costs one jvp
    and one vjp:

    .. math:: (F + \lambda_d I)v = \frac1N\sum_n J_n^\top M_n J_n v + \lambda_d v

    :math:`M_n` is the head's metric (:meth:`trpo_ref.heads.Head.metric`).  For
    the Gaussian head the log σ block is exact in closed form: J maps v_logσ to
    every sample unchanged and M's log σ block is 2, so that block is
    ``2 v_logσ`` and there are no cross terms (:meth:`~trpo_ref.heads.GaussianHead.extra_fisher`).

    Parameters
    ----------
    policy : MLPPolicy
    theta_p : array (P,)
    obs_no : array (N, obs_dim)
    damping : float
        λ ≥ 0.
    forward : (out, cache), optional
        ``policy.mlp.forward`` at this θ on ``obs_no``, when already computed.
    block_rows : int or None
        Samples per block of the NumPy path (``None``: a block of about
        128 KiB per layer, :func:`trpo_ref.mlp.default_block_rows`); the
        operator's temporaries are O(block_rows), not O(N).
    """

    def __init__(self, policy: MLPPolicy, theta_p, obs_no, damping: float = 0.0,
                 block_rows: int | None = None, forward=None):
        damping = float(damping)
        if not (damping >= 0.0 and math.isfinite(damping)):
            raise ValueError(f"damping must be finite and >= 0, got {damping}")
        if block_rows is not None and int(block_rows) < 1:
            raise ValueError(f"block_rows must be >= 1 or None, got {block_rows}")
        theta_p, obs_no = policy._check_inputs(theta_p, obs_no)
        self.policy = policy
        self.damping = damping
        self.block_rows = block_rows
        self.num_params = policy.num_params
        self.n = obs_no.shape[0]
        self.n_products = 0
        xp = backend.namespace(theta_p)
        self._xp = xp
        self._p_mlp = policy.mlp.num_params
        if forward is None:
            out, self._cache = policy.mlp.forward(theta_p[: self._p_mlp], obs_no)
        else:  # the forward pass at this θ on these observations, already done (PolicyAt)
            out, self._cache = forward
        # M_n (J v)_n / N by rows, from the policy's head (its set-up, e.g. the softmax, done once here)
        self._metric_rows = policy.head.metric(policy.head.phi(out, theta_p[self._p_mlp:]), self.n)
        self._extra = self._p_mlp < self.num_params  # parameters beyond the MLP (log σ)

    def __call__(self, v_p):
        r"""(F + λ_d I)v for a vector v of shape (P,): one jvp, the metric M, one vjp.

        .. math:: (F + \lambda_d I)v = \frac1N\sum_n J_n^\top\big(M_n(J_n v)\big) + \lambda_d v

        The sum runs in blocks of ``block_rows`` samples on NumPy
        (:meth:`trpo_ref.mlp.MLP.gauss_newton_product`); blocking changes only the
        order of the sum over samples.
        """
        xp = self._xp
        if tuple(v_p.shape) != (self.num_params,):
            raise ValueError(f"v must have shape ({self.num_params},), got {tuple(v_p.shape)}")
        _require_finite(xp, v_p, "v")
        self.n_products += 1
        fv = self.policy.mlp.gauss_newton_product(self._cache, v_p[: self._p_mlp], self._metric_rows,
                                                  self.block_rows)  # Jᵀ M J v / N
        if self._extra:
            fv = xp.concat([fv, self.policy.head.extra_fisher(v_p[self._p_mlp:])])  # log σ block (no cross terms)
        if self.damping:
            fv = fv + self.damping * v_p
        return fv

    def matvec(self, v_p):
        r"""Same as calling the operator (scipy LinearOperator style).

        Parameters
        ----------
        v_p : array (P,)

        Returns
        -------
        fv_p : array (P,)
            :math:`(F + \lambda_d I)v`.
        """
        return self(v_p)


#: Policy class per head kind: :func:`policy_for_head` builds these public classes.
_CLASSES = {"gaussian": GaussianMLPPolicy, "categorical": CategoricalMLPPolicy,
            "multicategorical": MultiCategoricalMLPPolicy, "bernoulli": BernoulliMLPPolicy}


def policy_for_head(obs_dim: int, head: Head, hidden_sizes: Sequence[int] = (64, 64), activation: str = "tanh",
                    hidden_gain: float = math.sqrt(2.0), output_gain: float = 0.01) -> MLPPolicy:
    r"""An MLP policy with this head, as the public class of the head's kind (e.g. :class:`GaussianMLPPolicy`).

    Parameters
    ----------
    obs_dim : int
    head : trpo_ref.heads.Head
    hidden_sizes : sequence of int
    activation : {"tanh", "relu"}
    hidden_gain, output_gain : float

    Returns
    -------
    MLPPolicy
    """
    cls = _CLASSES.get(head.kind, MLPPolicy)
    policy = cls.__new__(cls)
    MLPPolicy.__init__(policy, obs_dim, head, hidden_sizes, activation, hidden_gain, output_gain)
    return policy


def policy_from_spec(spec: dict) -> MLPPolicy:
    r"""Rebuild a policy from :meth:`~MLPPolicy.spec` output.

    Parameters
    ----------
    spec : dict
        Output of :meth:`~MLPPolicy.spec`: ``kind`` ("gaussian", "categorical", "multicategorical" or
        "bernoulli"), the network's fields and the head's (:meth:`trpo_ref.heads.Head.spec`).

    Returns
    -------
    MLPPolicy
        The public class of that kind (e.g. :class:`GaussianMLPPolicy`), with the head the spec describes.
    """
    try:
        head = head_from_spec(spec)
        return policy_for_head(spec["obs_dim"], head, tuple(spec["hidden_sizes"]), spec["activation"],
                               spec.get("hidden_gain", math.sqrt(2.0)), spec.get("output_gain", 0.01))
    except KeyError as exc:
        raise ValueError(f"policy spec is missing the field {exc.args[0]!r}") from exc
