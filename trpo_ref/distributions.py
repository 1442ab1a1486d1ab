r"""Action distributions in their own parameters φ, with hand-written derivatives.

Diagonal Gaussian, φ = (μ, log σ), state-independent log σ:

==========================================================================  ===============================
equation                                                                    function
==========================================================================  ===============================
:math:`\log p(a) = \sum_i -\tfrac12((a_i-\mu_i)/\sigma_i)^2 - \log\sigma_i - \tfrac12\log 2\pi`
                                                                            :meth:`DiagGaussian.log_prob`
:math:`\partial \log p/\partial\mu_i = (a_i-\mu_i)/\sigma_i^2`,
:math:`\partial \log p/\partial\log\sigma_i = ((a_i-\mu_i)/\sigma_i)^2 - 1`   :meth:`DiagGaussian.log_prob_grad`
:math:`H = \sum_i \log\sigma_i + \tfrac12(1+\log 2\pi)`                     :meth:`DiagGaussian.entropy`
:math:`KL(p\|q) = \sum_i \log(\sigma_{1i}/\sigma_{0i}) + (\sigma_{0i}^2 + (\mu_{0i}-\mu_{1i})^2)/(2\sigma_{1i}^2) - \tfrac12`
                                                                            :meth:`DiagGaussian.kl`
:math:`\partial KL/\partial(\mu_1, \log\sigma_1)`, :math:`\partial KL/\partial(\mu_0, \log\sigma_0)`
                                                                            :meth:`DiagGaussian.kl_grad_q`, :meth:`DiagGaussian.kl_grad_p`
:math:`M = \mathrm{diag}(1/\sigma^2, 2)`                                    :meth:`DiagGaussian.fisher_product`
==========================================================================  ===============================

Categorical, φ = logits z, p = softmax(z):

==========================================================================  ===============================
:math:`\log p_k = z_k - \max z - \log\sum_j e^{z_j - \max z}`                :meth:`Categorical.log_softmax`
:math:`\log p(a)`, :math:`\partial\log p(a)/\partial z = e_a - p`            :meth:`Categorical.log_prob`, :meth:`Categorical.log_prob_grad`
:math:`H = -\sum_k p_k\log p_k`, :math:`\partial H/\partial z = -p\odot(\log p + H)`
                                                                            :meth:`Categorical.entropy`, :meth:`Categorical.entropy_grad`
:math:`KL(p\|q) = \sum_k p_k(\log p_k - \log q_k)`                          :meth:`Categorical.kl`
:math:`\partial KL/\partial y = q - p`,
:math:`\partial KL/\partial z = p\odot(d - p^\top d)`, :math:`d = \log p - \log q`
                                                                            :meth:`Categorical.kl_grad_q`, :meth:`Categorical.kl_grad_p`
:math:`M u = p\odot u - p\,(p^\top u)`  (M = diag(p) − p pᵀ)                :meth:`Categorical.fisher_product`
==========================================================================  ===============================

:class:`MultiCategorical` (MultiDiscrete actions) applies :class:`Categorical`
to consecutive slices of the logits, one per sub-action: log-probability,
entropy and KL are summed over the slices and the metric is block-diagonal.
:class:`Bernoulli` (MultiBinary actions) has
:math:`\log p(a) = \sum_k a_k\log\sigma(z_k) + (1 - a_k)\log\sigma(-z_k)`,
:math:`\partial\log p(a)/\partial z = a - \sigma(z)` and
:math:`M = \mathrm{diag}(\sigma(z)(1 - \sigma(z)))`.

All reductions over action dimensions are sums (the joint density of a
diagonal Gaussian).  Every function takes and returns arrays of one
namespace; sampling draws its noise on the host.
"""

from __future__ import annotations

import math

from . import backend

__all__ = ["DiagGaussian", "Categorical", "MultiCategorical", "Bernoulli"]

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


class DiagGaussian:
    r"""Diagonal Gaussian N(μ, diag σ²) with a state-independent log σ.

    Shapes: ``mean_na`` (N, A), ``log_std_a`` (A,), ``act_na`` (N, A).
    """

    @staticmethod
    def log_prob(mean_na, log_std_a, act_na):
        r"""Log-density of ``act_na``, summed over action dimensions, shape (N,).

        .. math:: \log p(a) = \sum_i -\tfrac12\big((a_i-\mu_i)/\sigma_i\big)^2
                  - \log\sigma_i - \tfrac12\log 2\pi

        Parameters
        ----------
        mean_na : array (N, A)
            Means μ.
        log_std_a : array (A,)
            log σ, shared by every row.
        act_na : array (N, A)
            Actions a.

        Returns
        -------
        logp_n : array (N,)
        """
        xp = backend.namespace(mean_na, log_std_a, act_na)
        z = (act_na - mean_na) * xp.exp(-log_std_a)
        return xp.sum(-0.5 * z * z - log_std_a, axis=1) - mean_na.shape[1] * _HALF_LOG_2PI

    @staticmethod
    def log_prob_grad(mean_na, log_std_a, act_na):
        r"""Per-sample derivatives of :meth:`log_prob` in φ.

        .. math:: \frac{\partial\log p}{\partial\mu_i} = \frac{a_i-\mu_i}{\sigma_i^2},\qquad
                  \frac{\partial\log p}{\partial\log\sigma_i} = \Big(\frac{a_i-\mu_i}{\sigma_i}\Big)^2 - 1

        Parameters
        ----------
        mean_na : array (N, A)
            Means μ.
        log_std_a : array (A,)
            log σ, shared by every row.
        act_na : array (N, A)
            Actions a.

        Returns
        -------
        d_mean_na, d_log_std_na : arrays (N, A)
        """
        xp = backend.namespace(mean_na, log_std_a, act_na)
        inv_std = xp.exp(-log_std_a)
        z = (act_na - mean_na) * inv_std
        return z * inv_std, z * z - 1

    @staticmethod
    def entropy(log_std_a):
        r"""Entropy, summed over dimensions (the same for every state).

        .. math:: H = \sum_i \log\sigma_i + \tfrac12(1 + \log 2\pi)

        Parameters
        ----------
        log_std_a : array (A,)

        Returns
        -------
        h : 0-d array
            Entropy of every row.
        """
        xp = backend.namespace(log_std_a)
        return xp.sum(log_std_a) + log_std_a.shape[0] * (0.5 + _HALF_LOG_2PI)

    @staticmethod
    def entropy_grad(log_std_a):
        r""":math:`\partial H/\partial\log\sigma_i = 1` (and 0 in μ).

        .. math:: \frac{\partial H}{\partial\log\sigma_i} = 1,\qquad \frac{\partial H}{\partial\mu_i} = 0

        Parameters
        ----------
        log_std_a : array (A,)

        Returns
        -------
        d_log_std_a : array (A,)
            All ones, in ``log_std_a``'s namespace and dtype.
        """
        xp = backend.namespace(log_std_a)
        return xp.ones_like(log_std_a)

    @staticmethod
    def kl(mean0_na, log_std0_a, mean1_na, log_std1_a):
        r"""KL(p ‖ q) for p = N(μ₀, σ₀²), q = N(μ₁, σ₁²), summed over dimensions, shape (N,).

        .. math:: KL(p\|q) = \sum_i \log\frac{\sigma_{1i}}{\sigma_{0i}}
                  + \frac{\sigma_{0i}^2 + (\mu_{0i}-\mu_{1i})^2}{2\sigma_{1i}^2} - \frac12

        Parameters
        ----------
        mean0_na : array (N, A)
            μ₀ of p.
        log_std0_a : array (A,)
            log σ₀ of p.
        mean1_na : array (N, A)
            μ₁ of q.
        log_std1_a : array (A,)
            log σ₁ of q.

        Returns
        -------
        kl_n : array (N,)
        """
        xp = backend.namespace(mean0_na, log_std0_a, mean1_na, log_std1_a)
        var_ratio = xp.exp(2 * (log_std0_a - log_std1_a))
        d = (mean0_na - mean1_na) * xp.exp(-log_std1_a)
        per_dim = (log_std1_a - log_std0_a) + 0.5 * (var_ratio + d * d) - 0.5
        return xp.sum(per_dim, axis=1)

    @staticmethod
    def kl_grad_q(mean0_na, log_std0_a, mean1_na, log_std1_a):
        r"""Derivatives of KL(p ‖ q) in q's parameters (μ₁, log σ₁), per sample.

        .. math:: \frac{\partial KL}{\partial\mu_1} = \frac{\mu_1-\mu_0}{\sigma_1^2},\qquad
                  \frac{\partial KL}{\partial\log\sigma_1} = 1 - \frac{\sigma_0^2 + (\mu_0-\mu_1)^2}{\sigma_1^2}

        Parameters
        ----------
        mean0_na : array (N, A)
            μ₀ of p.
        log_std0_a : array (A,)
            log σ₀ of p.
        mean1_na : array (N, A)
            μ₁ of q.
        log_std1_a : array (A,)
            log σ₁ of q.

        Returns
        -------
        d_mean1_na, d_log_std1_na : arrays (N, A)
        """
        xp = backend.namespace(mean0_na, log_std0_a, mean1_na, log_std1_a)
        inv_var1 = xp.exp(-2 * log_std1_a)
        diff = mean1_na - mean0_na
        d_mean = diff * inv_var1
        d_log_std = 1 - (xp.exp(2 * log_std0_a) + diff * diff) * inv_var1
        return d_mean, d_log_std

    @staticmethod
    def kl_grad_p(mean0_na, log_std0_a, mean1_na, log_std1_a):
        r"""Derivatives of KL(p ‖ q) in p's parameters (μ₀, log σ₀), per sample.

        .. math:: \frac{\partial KL}{\partial\mu_0} = \frac{\mu_0-\mu_1}{\sigma_1^2},\qquad
                  \frac{\partial KL}{\partial\log\sigma_0} = \frac{\sigma_0^2}{\sigma_1^2} - 1

        Parameters
        ----------
        mean0_na : array (N, A)
            μ₀ of p.
        log_std0_a : array (A,)
            log σ₀ of p.
        mean1_na : array (N, A)
            μ₁ of q.
        log_std1_a : array (A,)
            log σ₁ of q.

        Returns
        -------
        d_mean0_na, d_log_std0_na : arrays (N, A)
        """
        xp = backend.namespace(mean0_na, log_std0_a, mean1_na, log_std1_a)
        inv_var1 = xp.exp(-2 * log_std1_a)
        d_mean = (mean0_na - mean1_na) * inv_var1
        d_log_std = xp.exp(2 * log_std0_a) * inv_var1 - 1 + xp.zeros_like(mean0_na)
        return d_mean, d_log_std

    @staticmethod
    def fisher_product(log_std_a, u_mean_na, u_log_std_na):
        r"""Fisher metric of the Gaussian in φ = (μ, log σ) times a tangent u.

        .. math:: M = \mathrm{diag}(1/\sigma_1^2, \dots, 1/\sigma_A^2, 2, \dots, 2)

        Parameters
        ----------
        log_std_a : array (A,)
        u_mean_na : array (N, A)
            Tangent in μ.
        u_log_std_na : array (N, A)
            Tangent in log σ.

        Returns
        -------
        mu_mean_na, mu_log_std_na : arrays (N, A)
            ``(u_mean / σ², 2 u_log_std)``.
        """
        xp = backend.namespace(log_std_a, u_mean_na)
        return u_mean_na * xp.exp(-2 * log_std_a), 2 * u_log_std_na

    @staticmethod
    def sample(mean_na, log_std_a, rng=None):
        r"""Draw one action per row: μ + σ ξ with ξ ~ N(0, I) drawn on the host.

        Parameters
        ----------
        mean_na : array (N, A)
        log_std_a : array (A,)
        rng : int, numpy.random.Generator or None
            Seed or generator for the host noise: ``standard_normal((N, A))``.

        Returns
        -------
        act_na : array (N, A)
        """
        xp = backend.namespace(mean_na, log_std_a)
        return DiagGaussian.sample_std(mean_na, xp.exp(log_std_a), rng)

    @staticmethod
    def sample_std(mean_na, std_a, rng=None):
        r""":meth:`sample` with σ given (e.g. computed once for many draws): μ + σ ξ, ξ ~ N(0, I) on the host.

        Parameters
        ----------
        mean_na : array (N, A)
        std_a : array (A,)
            σ = exp(log σ).
        rng : int, numpy.random.Generator or None
            Seed or generator for the host noise: ``standard_normal((N, A))``.

        Returns
        -------
        act_na : array (N, A)
        """
        eps = backend.host_rng(rng).standard_normal(tuple(mean_na.shape))
        return mean_na + std_a * backend.host_like(eps, mean_na)

    @staticmethod
    def sample_with_log_prob(mean_na, log_std_a, rng=None):
        r"""Actions a = μ + σ ξ (:meth:`sample`) and :meth:`log_prob` of them: ``(act_na, logp_n)``.

        The log-density is computed by :meth:`log_prob` itself (not from ξ), so a
        recomputation at θ_old gives the same bits and the ratio is exactly 1.

        Parameters
        ----------
        mean_na : array (N, A)
        log_std_a : array (A,)
        rng : int, numpy.random.Generator or None
            Seed or generator for the host noise.

        Returns
        -------
        act_na : array (N, A)
        logp_n : array (N,)
        """
        act = DiagGaussian.sample(mean_na, log_std_a, rng)
        return act, DiagGaussian.log_prob(mean_na, log_std_a, act)


class Categorical:
    r"""Categorical distribution over K actions parametrised by logits z (N, K)."""

    @staticmethod
    def log_softmax(logits_nk):
        r"""Log-probabilities by max subtraction (never the log of a softmax output).

        .. math:: \log p_k = z_k - m - \log\sum_j e^{z_j - m},\quad m = \max_j z_j

        Parameters
        ----------
        logits_nk : array (N, K)
            Logits z, one row per sample.

        Returns
        -------
        logp_nk : array (N, K)
        """
        xp = backend.namespace(logits_nk)
        shifted = logits_nk - xp.max(logits_nk, axis=1, keepdims=True)
        return shifted - xp.log(xp.sum(xp.exp(shifted), axis=1, keepdims=True))

    @staticmethod
    def one_hot(act_n, n_categories, dtype):
        r"""One-hot rows of integer actions, built with a comparison (array API).

        Parameters
        ----------
        act_n : integer array (N,)
        n_categories : int
            K.
        dtype : dtype
            dtype of the result.

        Returns
        -------
        onehot_nk : array (N, K)
            1 at ``(n, act_n[n])``, 0 elsewhere.
        """
        xp = backend.namespace(act_n)
        # int64 for the comparison: a narrow action dtype (uint8) would wrap arange(K)
        ks = xp.arange(n_categories, dtype=xp.int64, device=backend.device_of(act_n))
        return xp.astype(xp.astype(act_n, xp.int64)[:, None] == ks[None, :], dtype)

    @classmethod
    def log_prob(cls, logits_nk, act_n):
        r""":math:`\log p(a_n)`, shape (N,).

        .. math:: \log p(a) = z_a - m - \log\sum_j e^{z_j - m},\quad m = \max_j z_j

        Parameters
        ----------
        logits_nk : array (N, K)
            Logits z, one row per sample.
        act_n : integer array (N,)

        Returns
        -------
        logp_n : array (N,)
        """
        xp = backend.namespace(logits_nk)
        logp_nk = cls.log_softmax(logits_nk)
        return xp.sum(logp_nk * cls.one_hot(act_n, logits_nk.shape[1], logits_nk.dtype), axis=1)

    @classmethod
    def log_prob_grad(cls, logits_nk, act_n):
        r""":math:`\partial\log p(a)/\partial z = e_a - p`, shape (N, K).

        .. math:: \frac{\partial\log p(a)}{\partial z} = e_a - p

        Parameters
        ----------
        logits_nk : array (N, K)
            Logits z, one row per sample.
        act_n : integer array (N,)

        Returns
        -------
        d_logits_nk : array (N, K)
        """
        xp = backend.namespace(logits_nk)
        p_nk = xp.exp(cls.log_softmax(logits_nk))
        return cls.one_hot(act_n, logits_nk.shape[1], logits_nk.dtype) - p_nk

    @classmethod
    def entropy(cls, logits_nk):
        r""":math:`H = -\sum_k p_k\log p_k`, shape (N,).

        .. math:: H = -\sum_k p_k\log p_k

        Parameters
        ----------
        logits_nk : array (N, K)
            Logits z, one row per sample.

        Returns
        -------
        h_n : array (N,)
        """
        xp = backend.namespace(logits_nk)
        logp_nk = cls.log_softmax(logits_nk)
        return -xp.sum(xp.exp(logp_nk) * logp_nk, axis=1)

    @classmethod
    def entropy_grad(cls, logits_nk):
        r""":math:`\partial H/\partial z_j = -p_j(\log p_j + H)`, shape (N, K).

        .. math:: \frac{\partial H}{\partial z_j} = -p_j(\log p_j + H)

        Parameters
        ----------
        logits_nk : array (N, K)
            Logits z, one row per sample.

        Returns
        -------
        d_logits_nk : array (N, K)
        """
        xp = backend.namespace(logits_nk)
        logp_nk = cls.log_softmax(logits_nk)
        p_nk = xp.exp(logp_nk)
        h_n1 = -xp.sum(p_nk * logp_nk, axis=1, keepdims=True)
        return -p_nk * (logp_nk + h_n1)

    @classmethod
    def kl(cls, logits_p_nk, logits_q_nk):
        r"""KL(p ‖ q) = Σ_k p_k (log p_k − log q_k), shape (N,).

        .. math:: KL(p\|q) = \sum_k p_k(\log p_k - \log q_k)

        Parameters
        ----------
        logits_p_nk : array (N, K)
            Logits z of p.
        logits_q_nk : array (N, K)
            Logits y of q.

        Returns
        -------
        kl_n : array (N,)
        """
        xp = backend.namespace(logits_p_nk, logits_q_nk)
        logp = cls.log_softmax(logits_p_nk)
        logq = cls.log_softmax(logits_q_nk)
        return xp.sum(xp.exp(logp) * (logp - logq), axis=1)

    @classmethod
    def kl_grad_q(cls, logits_p_nk, logits_q_nk):
        r""":math:`\partial KL(p\|q)/\partial y = q - p` (y: q's logits), shape (N, K).

        .. math:: \frac{\partial KL(p\|q)}{\partial y} = q - p

        Parameters
        ----------
        logits_p_nk : array (N, K)
            Logits z of p.
        logits_q_nk : array (N, K)
            Logits y of q.

        Returns
        -------
        d_logits_q_nk : array (N, K)
        """
        xp = backend.namespace(logits_p_nk, logits_q_nk)
        return xp.exp(cls.log_softmax(logits_q_nk)) - xp.exp(cls.log_softmax(logits_p_nk))

    @classmethod
    def kl_grad_p(cls, logits_p_nk, logits_q_nk):
        r""":math:`\partial KL(p\|q)/\partial z = p\odot(d - p^\top d)`, d = log p − log q, shape (N, K).

        .. math:: \frac{\partial KL(p\|q)}{\partial z} = p\odot(d - p^\top d),\quad d = \log p - \log q

        Parameters
        ----------
        logits_p_nk : array (N, K)
            Logits z of p.
        logits_q_nk : array (N, K)
            Logits y of q.

        Returns
        -------
        d_logits_p_nk : array (N, K)
        """
        xp = backend.namespace(logits_p_nk, logits_q_nk)
        logp = cls.log_softmax(logits_p_nk)
        p = xp.exp(logp)
        d = logp - cls.log_softmax(logits_q_nk)
        return p * (d - xp.sum(p * d, axis=1, keepdims=True))

    @classmethod
    def fisher_product(cls, logits_nk, u_nk):
        r""":math:`M u = p\odot u - p\,(p^\top u)` with M = diag(p) − p pᵀ, shape (N, K).

        .. math:: M u = p\odot u - p\,(p^\top u),\qquad M = \mathrm{diag}(p) - p p^\top

        Parameters
        ----------
        logits_nk : array (N, K)
            Logits z, one row per sample.
        u_nk : array (N, K)
            Tangent in the logits.

        Returns
        -------
        mu_nk : array (N, K)
        """
        xp = backend.namespace(logits_nk, u_nk)
        return cls.fisher_product_probs(xp.exp(cls.log_softmax(logits_nk)), u_nk)

    @staticmethod
    def fisher_product_probs(p_nk, u_nk):
        r""":meth:`fisher_product` from precomputed probabilities ``p_nk``.

        .. math:: M u = p\odot\big(u - (p^\top u)\,\mathbf 1\big) = p\odot u - p\,(p^\top u)

        Parameters
        ----------
        p_nk : array (N, K)
            Probabilities p (rows sum to 1).
        u_nk : array (N, K)
            Tangent in the logits.

        Returns
        -------
        mu_nk : array (N, K)

        Notes
        -----
        Also the softmax Jacobian diag(p) − p pᵀ applied to u (used that way by
        :mod:`trpo_ref.tabular`).  Rows are not renormalised.
        """
        xp = backend.namespace(p_nk, u_nk)
        return p_nk * (u_nk - xp.sum(p_nk * u_nk, axis=1, keepdims=True))

    @staticmethod
    def sample(logits_nk, rng=None):
        r"""One action per row by the Gumbel-max rule, noise drawn on the host. Integer (N,).

        .. math:: a_n = \arg\max_k(z_{nk} + G_{nk}),\quad G_{nk} \sim \mathrm{Gumbel}(0, 1)

        On the logits z rather than :math:`\log p = z - \operatorname{logsumexp} z`: the shift is
        the same for every k, so the draw has the same law, and it differs from the draw on
        :math:`\log p` only where two entries of z + G tie to within rounding (a probability of
        order 1e-16 per draw in float64, larger in float32; 0 in 1e6 draws of either, measured).

        Parameters
        ----------
        logits_nk : array (N, K)
            Logits z, one row per sample.
        rng : int, numpy.random.Generator or None
            Seed or generator for the host noise: ``gumbel(size=(N, K))``.

        Returns
        -------
        act_n : integer array (N,)
        """
        xp = backend.namespace(logits_nk)
        g = backend.host_rng(rng).gumbel(size=tuple(logits_nk.shape))
        g = backend.host_like(g, logits_nk)
        return xp.argmax(logits_nk + g, axis=1)

    @classmethod
    def sample_with_log_prob(cls, logits_nk, rng=None):
        r"""A :meth:`sample` draw and its :meth:`log_prob`: ``(act_n, logp_n)``.

        Parameters
        ----------
        logits_nk : array (N, K)
            Logits z, one row per sample.
        rng : int, numpy.random.Generator or None
            Seed or generator for the host noise.

        Returns
        -------
        act_n : integer array (N,)
        logp_n : array (N,)
        """
        act_n = cls.sample(logits_nk, rng)
        return act_n, cls.log_prob(logits_nk, act_n)


class MultiCategorical:
    r"""Independent categoricals over consecutive slices of one logits row (MultiDiscrete actions).

    Sub-action i has ``nvec[i]`` choices and the logits ``z[:, o_i : o_i + nvec[i]]``
    (:math:`o_i = \sum_{j<i} n_j`); log-probability, entropy and KL are sums over the
    sub-actions and the metric is block-diagonal, one :class:`Categorical` block each.

    Parameters
    ----------
    nvec : sequence of int
        Choices per sub-action, each >= 2.
    """

    def __init__(self, nvec):
        nvec = tuple(int(k) for k in nvec)
        if not nvec or any(k < 2 for k in nvec):
            raise ValueError(f"nvec must be a non-empty sequence of integers >= 2, got {nvec!r}")
        self.nvec = nvec
        offsets = [0]
        for k in nvec:
            offsets.append(offsets[-1] + k)
        self.slices = tuple(slice(offsets[i], offsets[i + 1]) for i in range(len(nvec)))
        self.width = offsets[-1]

    def _blocks(self, logits_nk):
        return [logits_nk[:, s] for s in self.slices]

    def log_prob(self, logits_nk, act_ni):
        r""":math:`\log p(a) = \sum_i \log p_i(a_i)`, shape (N,).

        Parameters
        ----------
        logits_nk : array (N, Σ nvec)
        act_ni : integer array (N, len(nvec))

        Returns
        -------
        logp_n : array (N,)
        """
        out = 0
        for i, z in enumerate(self._blocks(logits_nk)):
            out = out + Categorical.log_prob(z, act_ni[:, i])
        return out

    def log_prob_grad(self, logits_nk, act_ni):
        r""":math:`\partial\log p(a)/\partial z_i = e_{a_i} - p_i` on each slice, shape (N, Σ nvec).

        Parameters
        ----------
        logits_nk : array (N, Σ nvec)
        act_ni : integer array (N, len(nvec))

        Returns
        -------
        d_logits_nk : array (N, Σ nvec)
        """
        xp = backend.namespace(logits_nk)
        return xp.concat([Categorical.log_prob_grad(z, act_ni[:, i]) for i, z in enumerate(self._blocks(logits_nk))],
                         axis=1)

    def entropy(self, logits_nk):
        r""":math:`H = \sum_i H(p_i)`, shape (N,).

        Parameters
        ----------
        logits_nk : array (N, Σ nvec)

        Returns
        -------
        h_n : array (N,)
        """
        out = 0
        for z in self._blocks(logits_nk):
            out = out + Categorical.entropy(z)
        return out

    def entropy_grad(self, logits_nk):
        r""":math:`\partial H/\partial z_i = -p_i\odot(\log p_i + H_i)` on each slice, shape (N, Σ nvec).

        Parameters
        ----------
        logits_nk : array (N, Σ nvec)

        Returns
        -------
        d_logits_nk : array (N, Σ nvec)
        """
        xp = backend.namespace(logits_nk)
        return xp.concat([Categorical.entropy_grad(z) for z in self._blocks(logits_nk)], axis=1)

    def kl(self, logits_p_nk, logits_q_nk):
        r""":math:`KL(p\|q) = \sum_i KL(p_i\|q_i)`, shape (N,).

        Parameters
        ----------
        logits_p_nk, logits_q_nk : array (N, Σ nvec)

        Returns
        -------
        kl_n : array (N,)
        """
        out = 0
        for zp, zq in zip(self._blocks(logits_p_nk), self._blocks(logits_q_nk)):
            out = out + Categorical.kl(zp, zq)
        return out

    def kl_grad_q(self, logits_p_nk, logits_q_nk):
        r""":math:`\partial KL/\partial y_i = q_i - p_i` on each slice, shape (N, Σ nvec).

        Parameters
        ----------
        logits_p_nk, logits_q_nk : array (N, Σ nvec)

        Returns
        -------
        d_logits_q_nk : array (N, Σ nvec)
        """
        xp = backend.namespace(logits_p_nk, logits_q_nk)
        return xp.concat([Categorical.kl_grad_q(zp, zq)
                          for zp, zq in zip(self._blocks(logits_p_nk), self._blocks(logits_q_nk))], axis=1)

    def kl_grad_p(self, logits_p_nk, logits_q_nk):
        r""":math:`\partial KL/\partial z_i = p_i\odot(d_i - p_i^\top d_i)`, :math:`d_i = \log p_i - \log q_i`.

        Parameters
        ----------
        logits_p_nk, logits_q_nk : array (N, Σ nvec)

        Returns
        -------
        d_logits_p_nk : array (N, Σ nvec)
        """
        xp = backend.namespace(logits_p_nk, logits_q_nk)
        return xp.concat([Categorical.kl_grad_p(zp, zq)
                          for zp, zq in zip(self._blocks(logits_p_nk), self._blocks(logits_q_nk))], axis=1)

    def fisher_product(self, logits_nk, u_nk):
        r"""Block-diagonal metric: :math:`(M u)_i = (\mathrm{diag}(p_i) - p_i p_i^\top) u_i` on each slice.

        Parameters
        ----------
        logits_nk, u_nk : array (N, Σ nvec)

        Returns
        -------
        mu_nk : array (N, Σ nvec)
        """
        xp = backend.namespace(logits_nk, u_nk)
        return self.fisher_product_probs(xp.exp(self.log_softmax(logits_nk)), u_nk)

    def log_softmax(self, logits_nk):
        r"""Each slice's log-softmax, shape (N, Σ nvec).

        Parameters
        ----------
        logits_nk : array (N, Σ nvec)

        Returns
        -------
        logp_nk : array (N, Σ nvec)
        """
        xp = backend.namespace(logits_nk)
        return xp.concat([Categorical.log_softmax(z) for z in self._blocks(logits_nk)], axis=1)

    def fisher_product_probs(self, p_nk, u_nk):
        r""":meth:`fisher_product` from each slice's precomputed probabilities ``p_nk``.

        Parameters
        ----------
        p_nk, u_nk : array (N, Σ nvec)

        Returns
        -------
        mu_nk : array (N, Σ nvec)
        """
        xp = backend.namespace(p_nk, u_nk)
        return xp.concat([Categorical.fisher_product_probs(p_nk[:, s], u_nk[:, s]) for s in self.slices], axis=1)

    def sample(self, logits_nk, rng=None):
        r"""One Gumbel-max draw per sub-action (:meth:`Categorical.sample`, slice by slice, one
        generator). Integer (N, len(nvec)).

        Parameters
        ----------
        logits_nk : array (N, Σ nvec)
        rng : int, numpy.random.Generator or None

        Returns
        -------
        act_ni : integer array (N, len(nvec))
        """
        xp = backend.namespace(logits_nk)
        rng = backend.host_rng(rng)
        return xp.stack([Categorical.sample(z, rng) for z in self._blocks(logits_nk)], axis=1)

    def sample_with_log_prob(self, logits_nk, rng=None):
        r"""A :meth:`sample` draw and its summed log-probability: ``(act_ni, logp_n)``.

        Parameters
        ----------
        logits_nk : array (N, Σ nvec)
        rng : int, numpy.random.Generator or None

        Returns
        -------
        act_ni : integer array (N, len(nvec))
        logp_n : array (N,)
        """
        act = self.sample(logits_nk, rng)
        return act, self.log_prob(logits_nk, act)

    def mode(self, logits_nk):
        r"""The most likely choice of each sub-action, integer (N, len(nvec)).

        Parameters
        ----------
        logits_nk : array (N, Σ nvec)

        Returns
        -------
        act_ni : integer array (N, len(nvec))
        """
        xp = backend.namespace(logits_nk)
        return xp.stack([xp.argmax(z, axis=1) for z in self._blocks(logits_nk)], axis=1)


class Bernoulli:
    r"""Independent Bernoulli bits with logits z (N, n) (MultiBinary actions), summed over the bits.

    With :math:`\sigma = 1/(1 + e^{-z})`: :math:`\log p(a) = a z - \mathrm{softplus}(z)`,
    computed as :math:`-\mathrm{softplus}(\mp z)`, with the stable
    :math:`\mathrm{softplus}(z) = \max(z, 0) + \log(1 + e^{-|z|})`.
    """

    @staticmethod
    def softplus(z):
        r""":math:`\log(1 + e^{z}) = \max(z, 0) + \log(1 + e^{-|z|})`, elementwise (finite for any finite z).

        Parameters
        ----------
        z : array

        Returns
        -------
        array
        """
        xp = backend.namespace(z)
        return xp.maximum(z, xp.zeros_like(z)) + xp.log1p(xp.exp(-xp.abs(z)))

    @classmethod
    def log_sigmoid(cls, z):
        r""":math:`\log\sigma(z) = -\mathrm{softplus}(-z)`.

        Parameters
        ----------
        z : array

        Returns
        -------
        array
        """
        return -cls.softplus(-z)

    @classmethod
    def probs(cls, z):
        r""":math:`\sigma(z)`, as :math:`e^{\log\sigma(z)}` (no overflow).

        Parameters
        ----------
        z : array

        Returns
        -------
        array
        """
        xp = backend.namespace(z)
        return xp.exp(cls.log_sigmoid(z))

    @classmethod
    def log_prob(cls, logits_nk, act_nk):
        r""":math:`\log p(a) = \sum_k a_k\log\sigma(z_k) + (1 - a_k)\log\sigma(-z_k)`, shape (N,).

        Parameters
        ----------
        logits_nk : array (N, n)
        act_nk : integer array (N, n) in {0, 1}

        Returns
        -------
        logp_n : array (N,)
        """
        xp = backend.namespace(logits_nk)
        a = xp.astype(act_nk, logits_nk.dtype)
        return xp.sum(a * cls.log_sigmoid(logits_nk) + (1 - a) * cls.log_sigmoid(-logits_nk), axis=1)

    @classmethod
    def log_prob_grad(cls, logits_nk, act_nk):
        r""":math:`\partial\log p(a)/\partial z = a - \sigma(z)`, shape (N, n).

        Parameters
        ----------
        logits_nk : array (N, n)
        act_nk : integer array (N, n)

        Returns
        -------
        d_logits_nk : array (N, n)
        """
        xp = backend.namespace(logits_nk)
        return xp.astype(act_nk, logits_nk.dtype) - cls.probs(logits_nk)

    @classmethod
    def entropy(cls, logits_nk):
        r""":math:`H = -\sum_k \sigma_k\log\sigma_k + (1-\sigma_k)\log(1-\sigma_k)`, shape (N,).

        Parameters
        ----------
        logits_nk : array (N, n)

        Returns
        -------
        h_n : array (N,)
        """
        xp = backend.namespace(logits_nk)
        p = cls.probs(logits_nk)
        return -xp.sum(p * cls.log_sigmoid(logits_nk) + (1 - p) * cls.log_sigmoid(-logits_nk), axis=1)

    @classmethod
    def entropy_grad(cls, logits_nk):
        r""":math:`\partial H/\partial z = -z\,\sigma(z)(1 - \sigma(z))`, shape (N, n).

        Parameters
        ----------
        logits_nk : array (N, n)

        Returns
        -------
        d_logits_nk : array (N, n)
        """
        p = cls.probs(logits_nk)
        q = cls.probs(-logits_nk)
        return -logits_nk * p * q

    @classmethod
    def kl(cls, logits_p_nk, logits_q_nk):
        r""":math:`KL(p\|q) = \sum_k \sigma(z)(\log\sigma(z) - \log\sigma(y)) + \sigma(-z)(\log\sigma(-z) - \log\sigma(-y))`.

        Parameters
        ----------
        logits_p_nk : array (N, n)
            Logits z of p.
        logits_q_nk : array (N, n)
            Logits y of q.

        Returns
        -------
        kl_n : array (N,)
        """
        xp = backend.namespace(logits_p_nk, logits_q_nk)
        z, y = logits_p_nk, logits_q_nk
        p1, p0 = cls.probs(z), cls.probs(-z)
        return xp.sum(p1 * (cls.log_sigmoid(z) - cls.log_sigmoid(y)) + p0 * (cls.log_sigmoid(-z) - cls.log_sigmoid(-y)),
                      axis=1)

    @classmethod
    def kl_grad_q(cls, logits_p_nk, logits_q_nk):
        r""":math:`\partial KL(p\|q)/\partial y = \sigma(y) - \sigma(z)`, shape (N, n).

        Parameters
        ----------
        logits_p_nk, logits_q_nk : array (N, n)

        Returns
        -------
        d_logits_q_nk : array (N, n)
        """
        return cls.probs(logits_q_nk) - cls.probs(logits_p_nk)

    @classmethod
    def kl_grad_p(cls, logits_p_nk, logits_q_nk):
        r""":math:`\partial KL(p\|q)/\partial z = \sigma(z)(1-\sigma(z))(z - y)`, shape (N, n).

        Parameters
        ----------
        logits_p_nk, logits_q_nk : array (N, n)

        Returns
        -------
        d_logits_p_nk : array (N, n)
        """
        z, y = logits_p_nk, logits_q_nk
        return cls.probs(z) * cls.probs(-z) * (z - y)

    @classmethod
    def fisher_product(cls, logits_nk, u_nk):
        r"""Metric :math:`M u = \sigma(z)(1 - \sigma(z))\,u` (diagonal), shape (N, n).

        Parameters
        ----------
        logits_nk, u_nk : array (N, n)

        Returns
        -------
        mu_nk : array (N, n)
        """
        return cls.probs(logits_nk) * cls.probs(-logits_nk) * u_nk

    @classmethod
    def sample(cls, logits_nk, rng=None):
        r"""Bits :math:`a = [U < \sigma(z)]` with U uniform drawn on the host. Integer (N, n) in {0, 1}.

        Parameters
        ----------
        logits_nk : array (N, n)
        rng : int, numpy.random.Generator or None
            Seed or generator for the host noise: ``random(size=(N, n))``.

        Returns
        -------
        act_nk : integer array (N, n)
        """
        xp = backend.namespace(logits_nk)
        u = backend.host_rng(rng).random(size=tuple(logits_nk.shape))
        u = backend.host_like(u, logits_nk)
        return xp.astype(u < cls.probs(logits_nk), xp.int64)

    @classmethod
    def sample_with_log_prob(cls, logits_nk, rng=None):
        r"""A :meth:`sample` draw and :math:`\log p(a)`: ``(act_nk, logp_n)``.

        Parameters
        ----------
        logits_nk : array (N, n)
        rng : int, numpy.random.Generator or None

        Returns
        -------
        act_nk : integer array (N, n) in {0, 1}
        logp_n : array (N,)
        """
        act = cls.sample(logits_nk, rng)
        return act, cls.log_prob(logits_nk, act)
