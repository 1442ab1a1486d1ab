r"""Policy heads: what turns the network's output into an action distribution.

An MLP policy is an MLP composed with a head (:class:`trpo_ref.policy.MLPPolicy`).
The head owns everything that depends on the action distribution:

- its parameters beyond the network (the Gaussian's state-independent log σ),
  their names, shapes and initial values;
- the network's output width, the actions' shape, dtype and validation;
- the distribution parameters φ built from the network's output (and log σ),
  and the pull-back of a cotangent in φ to the output and log σ;
- log-probability, entropy and KL in both argument orders, with their
  derivatives in φ (from :mod:`trpo_ref.distributions`, where they are written
  out and tested against finite differences);
- sampling (noise drawn on the host) and the mode;
- the Fisher metric product :math:`M u` of the output block, and the closed-form
  block of the parameters beyond the network;
- the size of the KL's and the entropy's terms (the oracle's rounding scale).

=================================  =====================  ============  ========================  ==========
head                               action space           output width  actions                   φ
=================================  =====================  ============  ========================  ==========
:class:`GaussianHead`              Box (1-D)              act_dim       float (N, act_dim)        (μ, log σ)
:class:`CategoricalHead`           Discrete               n_actions     integer (N,)              logits
:class:`MultiCategoricalHead`      MultiDiscrete (1-D)    Σ nvec        integer (N, len(nvec))    logits
:class:`BernoulliHead`             MultiBinary (1-D)      n             integer (N, n) in {0, 1}  logits
=================================  =====================  ============  ========================  ==========

Every derivative of the policy is the network's vjp (or jvp) of the head's
derivative in φ; the Fisher-vector product is
:math:`\frac1N\sum_n J_n^\top M_n J_n v` with :math:`M_n` from :meth:`Head.metric`.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from . import backend
from .distributions import Bernoulli, Categorical, DiagGaussian, MultiCategorical

__all__ = ["Head", "GaussianHead", "CategoricalHead", "MultiCategoricalHead", "BernoulliHead", "HEADS",
           "head_from_spec", "head_for_space"]


def _require_finite(xp, x, name: str) -> None:
    if not bool(xp.all(xp.isfinite(x))):
        raise ValueError(f"{name} contains NaN or inf")


class Head:
    """The interface every head implements (see the module docstring); not used directly.

    Attributes
    ----------
    kind : str
        The name in a policy's spec ("gaussian", "categorical", "multicategorical", "bernoulli").
    out_dim : int
        Width of the network's last layer.
    n_extra : int
        Parameters beyond the network, at the end of θ.
    act_dim : int
        Columns of an action (1 for a categorical's index).
    continuous_actions : bool
        Float actions (True) or integers.
    mean_reduction_size : int
        Per-sample KL terms SB3-contrib's ``.mean()`` averages over (1: none).
    """

    kind = ""
    out_dim = 0
    n_extra = 0
    act_dim = 1
    continuous_actions = False
    mean_reduction_size = 1

    # ------------------------------------------------------------ layout
    def extra_shapes(self) -> dict[str, tuple[int, ...]]:
        """Names and shapes of the parameters beyond the network, in θ order."""
        return {}

    def init_extra(self) -> np.ndarray:
        """Initial values of the parameters beyond the network (host float64)."""
        return np.zeros(0)

    def spec(self) -> dict:
        """The head's fields of a policy spec (besides ``kind`` and ``out_dim``)."""
        return {}

    @classmethod
    def from_spec(cls, spec: dict) -> "Head":
        """The head a policy spec describes (inverse of :meth:`spec` with ``out_dim``).

        Parameters
        ----------
        spec : dict
            A policy spec (:meth:`trpo_ref.policy.MLPPolicy.spec`).

        Returns
        -------
        Head
        """
        return cls(spec["out_dim"])

    def act_shape(self, n: int) -> tuple[int, ...]:
        """Shape of a batch of ``n`` actions.

        Parameters
        ----------
        n : int
            Number of samples N.

        Returns
        -------
        tuple of int
        """
        return (n, self.act_dim)

    def check_act(self, act, n: int, like):
        """``act`` checked for a batch of ``n``: shape, dtype and range; a one-line ValueError otherwise.

        ``like`` is θ: float actions are cast to its dtype.

        Parameters
        ----------
        act : array
            Actions, shaped as :meth:`act_shape`.
        n : int
            Number of samples N.
        like : array
            θ: its namespace and dtype.

        Returns
        -------
        array
            ``act``, cast where the head casts.
        """
        raise NotImplementedError

    # ------------------------------------------------------------ φ
    def phi(self, out, extra):
        """Distribution parameters φ from the network's output and the parameters beyond it.

        Parameters
        ----------
        out : array (N, out_dim)
            The network's output.
        extra : array (n_extra,)
            θ's entries after the network's (log σ); empty for heads without any.

        Returns
        -------
        array or tuple of arrays
        """
        return out

    def pullback(self, phi_bar):
        """A cotangent in φ as ``(cotangent of the output, cotangent of the extra parameters or None)``.

        Parameters
        ----------
        phi_bar : array or tuple of arrays
            A cotangent in φ.

        Returns
        -------
        tuple
            (output cotangent (N, out_dim), extra cotangent (n_extra,) or None).
        """
        return phi_bar, None

    @staticmethod
    def scale(phi_bar, w):
        """Multiply every per-sample cotangent by a per-sample (N,) or scalar weight.

        Parameters
        ----------
        phi_bar : array or tuple of arrays
            A cotangent in φ.
        w : float or array (N,)
            Weight.

        Returns
        -------
        array or tuple of arrays
        """
        if isinstance(w, float):
            return phi_bar * w
        return phi_bar * w[:, None]

    # ------------------------------------------------------------ the distribution
    def log_prob(self, phi, act):
        """log p(a_n; φ_n) per sample, (N,).

        Parameters
        ----------
        phi : array or tuple of arrays
            Distribution parameters φ (:meth:`phi`).
        act : array
            Actions, shaped as :meth:`act_shape`.

        Returns
        -------
        array (N,)
        """
        raise NotImplementedError

    def log_prob_grad(self, phi, act):
        """∂ log p(a_n; φ_n)/∂φ_n per sample, shaped like φ.

        Parameters
        ----------
        phi : array or tuple of arrays
            Distribution parameters φ (:meth:`phi`).
        act : array
            Actions, shaped as :meth:`act_shape`.

        Returns
        -------
        array or tuple of arrays
        """
        raise NotImplementedError

    def entropy(self, phi, n):
        """Entropy per sample, (n,).

        Parameters
        ----------
        phi : array or tuple of arrays
            Distribution parameters φ (:meth:`phi`).
        n : int
            Number of samples N.

        Returns
        -------
        array (n,)
        """
        raise NotImplementedError

    def entropy_grad(self, phi, n):
        """∂(mean entropy over the n samples)/∂φ, shaped like φ.

        Parameters
        ----------
        phi : array or tuple of arrays
            Distribution parameters φ (:meth:`phi`).
        n : int
            Number of samples N.

        Returns
        -------
        array or tuple of arrays
        """
        raise NotImplementedError

    def kl(self, phi_p, phi_q):
        """KL(p‖q) per sample, (N,).

        Parameters
        ----------
        phi_p : array or tuple of arrays
            φ of p.
        phi_q : array or tuple of arrays
            φ of q.

        Returns
        -------
        array (N,)
        """
        raise NotImplementedError

    def kl_grad_q(self, phi_p, phi_q):
        """∂KL(p‖q)/∂φ_q per sample.

        Parameters
        ----------
        phi_p : array or tuple of arrays
            φ of p.
        phi_q : array or tuple of arrays
            φ of q.

        Returns
        -------
        array or tuple of arrays
        """
        raise NotImplementedError

    def kl_grad_p(self, phi_p, phi_q):
        """∂KL(p‖q)/∂φ_p per sample.

        Parameters
        ----------
        phi_p : array or tuple of arrays
            φ of p.
        phi_q : array or tuple of arrays
            φ of q.

        Returns
        -------
        array or tuple of arrays
        """
        raise NotImplementedError

    def sample(self, phi, rng=None):
        """One action per sample, noise drawn on the host from ``rng`` (seed or Generator).

        Parameters
        ----------
        phi : array or tuple of arrays
            Distribution parameters φ (:meth:`phi`).
        rng : int, numpy.random.Generator or None
            Seed or generator for the host noise.

        Returns
        -------
        array
            Shaped as :meth:`act_shape`.
        """
        raise NotImplementedError

    def mode(self, phi):
        """The most likely action per sample.

        Parameters
        ----------
        phi : array or tuple of arrays
            Distribution parameters φ (:meth:`phi`).

        Returns
        -------
        array
            Shaped as :meth:`act_shape`.
        """
        raise NotImplementedError

    def metric(self, phi, n):
        """``rows(u, start, stop)``: :math:`M_n u_n / N` for the samples start:stop, u the output block's
        tangent; set-up that depends only on φ (σ, the softmax) done once here.

        Parameters
        ----------
        phi : array or tuple of arrays
            Distribution parameters φ (:meth:`phi`).
        n : int
            Number of samples N.

        Returns
        -------
        callable
            ``rows(u, start, stop) -> M u / N``, u of shape (stop - start, out_dim).
        """
        raise NotImplementedError

    def kl_terms(self, phi_p, phi_q):
        """Per-sample size of the terms of KL(p‖q) (the oracle's rounding scale), (N,).

        Parameters
        ----------
        phi_p : array or tuple of arrays
            φ of p.
        phi_q : array or tuple of arrays
            φ of q.

        Returns
        -------
        array (N,)
        """
        raise NotImplementedError

    def entropy_terms(self, phi, n):
        """Size of the terms of the mean entropy (the oracle's rounding scale).

        Parameters
        ----------
        phi : array or tuple of arrays
            Distribution parameters φ (:meth:`phi`).
        n : int
            Number of samples N.

        Returns
        -------
        0-d array or float
        """
        raise NotImplementedError

    def sampler(self, extra):
        """``(out, rng) -> actions``: :meth:`sample` of ``phi(out, extra)`` for many draws at fixed
        ``extra`` (the rollout's per-step draw), with what depends on ``extra`` alone computed once.

        Parameters
        ----------
        extra : array (n_extra,)
            θ's entries after the network's (log σ); empty for heads without any.

        Returns
        -------
        callable
            ``draw(out, rng) -> actions``.
        """
        return lambda out, rng: self.sample(self.phi(out, extra), rng)

    def extra_fisher(self, v_extra):
        """The block of F for the parameters beyond the network (a head with ``n_extra > 0`` defines it).

        Parameters
        ----------
        v_extra : array (n_extra,)
            The extra parameters' part of v.

        Returns
        -------
        array (n_extra,)
        """
        raise NotImplementedError


class GaussianHead(Head):
    r"""Diagonal Gaussian: φ = (μ, log σ), μ the network's output, log σ state-independent parameters.

    Parameters
    ----------
    act_dim : int
    log_std_init : float
        Initial value of every log σ_i.
    """

    kind = "gaussian"
    continuous_actions = True

    def __init__(self, act_dim: int, log_std_init: float = 0.0):
        if isinstance(act_dim, bool) or int(act_dim) < 1:
            raise ValueError(f"act_dim must be >= 1, got {act_dim}")
        self.act_dim = self.out_dim = self.n_extra = int(act_dim)
        self.log_std_init = float(log_std_init)

    @property
    def mean_reduction_size(self) -> int:
        """SB3-contrib's Normal is per dimension: its ``.mean()`` averages the act_dim KLs."""
        return self.act_dim

    def extra_shapes(self):
        """``log_std`` (act_dim,)."""
        return {"log_std": (self.act_dim,)}

    def init_extra(self):
        """Every log σ_i at ``log_std_init``."""
        return np.full(self.act_dim, self.log_std_init)

    def spec(self):
        """``log_std_init``."""
        return {"log_std_init": self.log_std_init}

    @classmethod
    def from_spec(cls, spec):
        """``out_dim`` and ``log_std_init``."""
        return cls(spec["out_dim"], spec.get("log_std_init", 0.0))

    def check_act(self, act_na, n, like):
        """Float (n, act_dim), cast to θ's dtype, finite."""
        xp = backend.namespace(like, act_na)
        if tuple(act_na.shape) != (n, self.act_dim):
            raise ValueError(f"act must have shape ({n}, {self.act_dim}), got {tuple(act_na.shape)}")
        if act_na.dtype != like.dtype:
            act_na = xp.astype(act_na, like.dtype)
        _require_finite(xp, act_na, "act")
        return act_na

    def phi(self, out, extra):
        """(mean, log σ)."""
        return out, extra

    def pullback(self, phi_bar):
        """The mean's cotangent, and log σ's summed over samples (log σ is shared by every sample)."""
        d_mean_na, d_log_std = phi_bar
        if len(d_log_std.shape) == 2:
            xp = backend.namespace(d_log_std)
            d_log_std = xp.sum(d_log_std, axis=0)
        return d_mean_na, d_log_std

    @staticmethod
    def scale(phi_bar, w):
        """Both cotangents times the weight."""
        if isinstance(w, float):
            return tuple(b * w for b in phi_bar)
        return tuple(b * w[:, None] for b in phi_bar)

    def log_prob(self, phi, act_na):
        """:meth:`DiagGaussian.log_prob <trpo_ref.distributions.DiagGaussian.log_prob>`."""
        return DiagGaussian.log_prob(phi[0], phi[1], act_na)

    def log_prob_grad(self, phi, act_na):
        """:meth:`DiagGaussian.log_prob_grad <trpo_ref.distributions.DiagGaussian.log_prob_grad>`."""
        return DiagGaussian.log_prob_grad(phi[0], phi[1], act_na)

    def entropy(self, phi, n):
        """The entropy (it depends on log σ only) for each of the n samples."""
        xp = backend.namespace(phi[1])
        return xp.broadcast_to(DiagGaussian.entropy(phi[1]), (n,))

    def entropy_grad(self, phi, n):
        """∂(mean entropy)/∂φ: zero for the mean; for log σ the (1/N) Σ_n cancels N copies."""
        xp = backend.namespace(phi[0])
        return xp.zeros_like(phi[0]), DiagGaussian.entropy_grad(phi[1])

    def kl(self, phi_p, phi_q):
        """:meth:`DiagGaussian.kl <trpo_ref.distributions.DiagGaussian.kl>`."""
        return DiagGaussian.kl(phi_p[0], phi_p[1], phi_q[0], phi_q[1])

    def kl_grad_q(self, phi_p, phi_q):
        """:meth:`DiagGaussian.kl_grad_q <trpo_ref.distributions.DiagGaussian.kl_grad_q>`."""
        return DiagGaussian.kl_grad_q(phi_p[0], phi_p[1], phi_q[0], phi_q[1])

    def kl_grad_p(self, phi_p, phi_q):
        """:meth:`DiagGaussian.kl_grad_p <trpo_ref.distributions.DiagGaussian.kl_grad_p>`."""
        return DiagGaussian.kl_grad_p(phi_p[0], phi_p[1], phi_q[0], phi_q[1])

    def sample(self, phi, rng=None):
        """μ + σ ξ (:meth:`DiagGaussian.sample <trpo_ref.distributions.DiagGaussian.sample>`)."""
        return DiagGaussian.sample(phi[0], phi[1], rng)

    def sampler(self, extra):
        """``(mean, rng) -> μ + σ ξ``, σ = exp(log σ) computed once (``DiagGaussian.sample_std``)."""
        std = backend.namespace(extra).exp(extra)
        return lambda out, rng: DiagGaussian.sample_std(out, std, rng)

    def mode(self, phi):
        """μ."""
        return phi[0]

    def metric(self, phi, n):
        """M/N of the mean block: 1/(N σ²), shared by every sample, applied in place (u is a fresh product)."""
        xp = backend.namespace(phi[1])
        m = xp.exp(-2 * phi[1]) / n

        def rows(u, start, stop):
            u *= m
            return u

        return rows

    def extra_fisher(self, v_extra):
        """The log σ block of F: J maps v_logσ to every sample unchanged and M's log σ block is 2: 2 v."""
        return 2 * v_extra

    def kl_terms(self, phi_p, phi_q):
        r""":math:`\sum_a |\log\sigma_p| + |\log\sigma_q| + \frac{\sigma_p^2 + \Delta\mu^2}{2\sigma_q^2} + \frac12`."""
        xp = backend.namespace(phi_p[0])
        (mu_p, ls_p), (mu_q, ls_q) = phi_p, phi_q
        t = xp.abs(ls_p) + xp.abs(ls_q) + (xp.exp(2 * ls_p) + (mu_p - mu_q) ** 2) / (2 * xp.exp(2 * ls_q)) + 0.5
        return xp.sum(t, axis=-1)

    def entropy_terms(self, phi, n):
        r"""Size of the terms of the mean entropy: :math:`\sum_a |\log\sigma_a| + \tfrac12\log 2\pi e`."""
        xp = backend.namespace(phi[1])
        return xp.sum(xp.abs(phi[1])) + 0.5 * math.log(2 * math.pi * math.e) * phi[1].shape[0]


class _LogitsHead(Head):
    """Heads whose φ are the network's outputs (logits) and whose actions are integers.

    The distribution's functions are those of ``dist`` (:class:`~trpo_ref.distributions.Categorical`,
    :class:`~trpo_ref.distributions.MultiCategorical` or :class:`~trpo_ref.distributions.Bernoulli`),
    which share their names and signatures.
    """

    dist = None  # set by each head

    def log_prob(self, logits, act):
        """log p(a), summed over sub-actions or bits."""
        return self.dist.log_prob(logits, act)

    def log_prob_grad(self, logits, act):
        """∂ log p(a)/∂logits."""
        return self.dist.log_prob_grad(logits, act)

    def entropy(self, logits, n):
        """Entropy per sample, summed over sub-actions or bits."""
        return self.dist.entropy(logits)

    def entropy_grad(self, logits, n):
        """∂(mean entropy over the n samples)/∂logits."""
        return self.dist.entropy_grad(logits) / n

    def kl(self, phi_p, phi_q):
        """KL(p‖q) per sample."""
        return self.dist.kl(phi_p, phi_q)

    def kl_grad_q(self, phi_p, phi_q):
        """∂KL(p‖q)/∂q."""
        return self.dist.kl_grad_q(phi_p, phi_q)

    def kl_grad_p(self, phi_p, phi_q):
        """∂KL(p‖q)/∂p."""
        return self.dist.kl_grad_p(phi_p, phi_q)

    def sample(self, logits, rng=None):
        """A draw with host noise (Gumbel-max per categorical, [U < σ(z)] per bit)."""
        return self.dist.sample(logits, rng)

    def sampler(self, extra):
        """``(logits, rng) -> actions``: :meth:`sample` itself (φ is the network's output)."""
        return self.dist.sample

    def entropy_terms(self, phi, n):
        """Size of the terms of the mean entropy: H̄ itself (a sum of non-negative terms)."""
        xp = backend.namespace(phi)
        return xp.abs(xp.mean(self.entropy(phi, n)))

    def kl_terms(self, phi_p, phi_q):
        r"""Per-sample size of the terms of KL(p‖q): :math:`\sum p\,(|\log p| + |\log q|)` over every outcome."""
        xp = backend.namespace(phi_p)
        lp, lq = self._outcome_logs(phi_p), self._outcome_logs(phi_q)
        return xp.sum(xp.exp(lp) * (xp.abs(lp) + xp.abs(lq)), axis=-1)

    def _check_int(self, act, like, shape, what):
        xp = backend.namespace(like, act)
        if tuple(act.shape) != shape:
            raise ValueError(f"act must have shape {shape} of integer {what}, got {tuple(act.shape)}")
        if not xp.isdtype(act.dtype, "integral"):
            raise ValueError(f"act must hold integer {what}, got dtype {act.dtype}")
        return xp


class CategoricalHead(_LogitsHead):
    """Categorical over ``n_actions`` actions: φ = logits; actions are indices (N,).

    Parameters
    ----------
    n_actions : int
    """

    kind = "categorical"
    dist = Categorical

    def __init__(self, n_actions: int):
        if isinstance(n_actions, bool) or int(n_actions) < 2:
            raise ValueError(f"n_actions must be >= 2, got {n_actions}")
        self.n_actions = self.out_dim = int(n_actions)

    def act_shape(self, n):
        """(n,): one index per sample."""
        return (n,)

    def check_act(self, act_n, n, like):
        """Integer (n,) in [0, n_actions)."""
        xp = self._check_int(act_n, like, (n,), "action indices")
        if n and not (bool(xp.all(act_n >= 0)) and bool(xp.all(act_n < self.n_actions))):
            raise ValueError(f"act must lie in [0, {self.n_actions}) for this policy")
        return act_n

    def mode(self, logits):
        """The arg-max logit."""
        xp = backend.namespace(logits)
        return xp.argmax(logits, axis=1)

    def metric(self, logits, n):
        """M/N of the logits as ``rows(u, start, stop)``: (diag p − p pᵀ)u / N, p computed once here."""
        xp = backend.namespace(logits)
        probs = xp.exp(Categorical.log_softmax(logits))
        return lambda u, start, stop: Categorical.fisher_product_probs(probs[start:stop, ...], u) / n

    def _outcome_logs(self, logits):
        return Categorical.log_softmax(logits)


class _IntegerRowsHead(_LogitsHead):
    """Actions are integer rows (N, A), column i in [0, bounds[i])."""

    bounds: tuple[int, ...] = ()

    def check_act(self, act_na, n, like):
        """Integer (n, A), column i in [0, bounds[i])."""
        xp = self._check_int(act_na, like, (n, len(self.bounds)), "actions")
        if n:
            hi = backend.from_numpy(np.asarray(self.bounds), xp, backend.device_of(act_na), act_na.dtype)
            if not (bool(xp.all(act_na >= 0)) and bool(xp.all(act_na < hi[None, :]))):
                raise ValueError(f"act column i must lie in [0, {list(self.bounds)}[i]) for this policy")
        return act_na


class MultiCategoricalHead(_IntegerRowsHead):
    r"""Independent categoricals for MultiDiscrete actions, one slice of the logits per sub-action.

    .. math:: \log\pi(a|s) = \sum_i \log\mathrm{softmax}(z_i(s))_{a_i}

    Parameters
    ----------
    nvec : sequence of int
        Choices per sub-action (gymnasium's ``MultiDiscrete.nvec``), each >= 2.
    """

    kind = "multicategorical"

    def __init__(self, nvec):
        self.dist = MultiCategorical(nvec)
        self.nvec = self.bounds = self.dist.nvec
        self.out_dim = self.dist.width
        self.act_dim = len(self.nvec)

    def spec(self):
        """``nvec``."""
        return {"nvec": list(self.nvec)}

    @classmethod
    def from_spec(cls, spec):
        """``nvec``."""
        return cls(spec["nvec"])

    def mode(self, logits):
        """The most likely choice of each sub-action."""
        return self.dist.mode(logits)

    def metric(self, logits, n):
        """M/N as ``rows(u, start, stop)``: block-diagonal, one softmax metric per slice, p computed once."""
        xp = backend.namespace(logits)
        probs = xp.exp(self.dist.log_softmax(logits))
        return lambda u, start, stop: self.dist.fisher_product_probs(probs[start:stop, ...], u) / n

    def _outcome_logs(self, logits):
        return self.dist.log_softmax(logits)


class BernoulliHead(_IntegerRowsHead):
    r"""Independent Bernoulli bits for MultiBinary actions, φ = logits.

    .. math:: \log\pi(a|s) = \sum_k a_k\log\sigma(z_k) + (1 - a_k)\log\sigma(-z_k)

    Parameters
    ----------
    n : int
        Number of bits (gymnasium's ``MultiBinary.n``), >= 1.
    """

    kind = "bernoulli"
    dist = Bernoulli

    def __init__(self, n: int):
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or int(n) < 1:
            raise ValueError(f"n must be an integer >= 1, got {n!r}")
        self.n = self.out_dim = self.act_dim = int(n)
        self.bounds = (2,) * self.n

    @property
    def mean_reduction_size(self) -> int:
        """SB3's Bernoulli is not ``Independent``: its ``.mean()`` averages the n bits' KLs."""
        return self.n

    def mode(self, logits):
        """1 where σ(z) > ½."""
        xp = backend.namespace(logits)
        return xp.astype(logits > 0, xp.int64)

    def metric(self, logits, n):
        """M/N as ``rows(u, start, stop)``: diag σ(z)(1 − σ(z)) / N, computed once."""
        pq = Bernoulli.probs(logits) * Bernoulli.probs(-logits)
        return lambda u, start, stop: pq[start:stop, ...] * u / n

    def _outcome_logs(self, logits):
        xp = backend.namespace(logits)
        return xp.concat([Bernoulli.log_sigmoid(logits), Bernoulli.log_sigmoid(-logits)], axis=-1)


#: spec ``kind`` -> head class.
HEADS = {h.kind: h for h in (GaussianHead, CategoricalHead, MultiCategoricalHead, BernoulliHead)}


def head_from_spec(spec: dict) -> Head:
    """The head a policy spec describes (``kind``, ``out_dim`` and the head's own fields).

    Parameters
    ----------
    spec : dict

    Returns
    -------
    Head
    """
    kind = spec["kind"]
    if kind not in HEADS:
        raise ValueError(f"unknown policy kind {kind!r}; expected one of {sorted(HEADS)}")
    return HEADS[kind].from_spec(spec)


def head_for_space(action_space, log_std_init: float = 0.0) -> Head:
    """The head for a gymnasium action space: Box (1-D) → Gaussian, Discrete → categorical,
    MultiDiscrete (1-D) → multi-categorical, MultiBinary (1-D) → Bernoulli.

    Parameters
    ----------
    action_space : gymnasium.spaces.Space
    log_std_init : float
        Initial log σ of a Gaussian head.

    Returns
    -------
    Head

    Raises
    ------
    ValueError
        Any other space (see :func:`trpo_ref.rollout.check_spaces` for the checks the trainer applies first).
    """
    from gymnasium import spaces

    def refuse(why):
        return ValueError(f"no policy head for the action space {action_space}: {why}; supported: Box (1-D), "
                          "Discrete, MultiDiscrete (1-D) and MultiBinary (1-D), starting at 0")

    sp = action_space
    if isinstance(sp, spaces.Box):
        if len(sp.shape) != 1:
            raise refuse(f"a Box of shape {sp.shape} is not 1-D")
        return GaussianHead(int(sp.shape[0]), log_std_init)
    if isinstance(sp, spaces.Discrete):
        if int(sp.start) != 0:
            raise refuse(f"Discrete starts at {int(sp.start)}")
        return CategoricalHead(int(sp.n))
    if isinstance(sp, spaces.MultiDiscrete):
        if len(sp.nvec.shape) != 1 or np.any(sp.start != 0):
            raise refuse("MultiDiscrete must be 1-D and start at 0")
        return MultiCategoricalHead([int(k) for k in sp.nvec])
    if isinstance(sp, spaces.MultiBinary):
        if len(sp.shape) != 1:
            raise refuse(f"a MultiBinary of shape {sp.shape} is not 1-D")
        return BernoulliHead(int(sp.shape[0]))
    raise refuse(f"{type(sp).__name__} has no head")
