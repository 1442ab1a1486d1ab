r"""The PyTorch bridge: a user's torch actor as a trpo_ref policy, and a recorder of the user's update.

==========================================================  =========================================
what                                                        where
==========================================================  =========================================
an ``nn.Linear``/activation actor (+ log σ) as a policy     :func:`from_module` → :class:`TorchBridge`
flat vector in ``parameters()`` order ↔ θ's layout          :meth:`TorchBridge.to_theta`, :meth:`TorchBridge.from_theta`
a trpo_ref policy as a torch actor (tests, strategies)      :func:`to_module`
record the user's update stage by stage as a trace          :class:`Recorder`
==========================================================  =========================================

This module imports torch (the ``torch`` extra); ``import trpo_ref`` does not
import it.  trpo_ref's own math stays NumPy: torch is used here only to read
the user's module and tensors and to call the user's callables.

θ's layout (docs/architecture.md): for each layer ``W_l`` with shape (in, out)
row-major — the transpose of ``nn.Linear.weight`` — then ``b_l``; then
``log_std`` (Gaussian).  A flat vector in *module order* is the concatenation
of ``actor.parameters()`` (what ``torch.nn.utils.parameters_to_vector`` gives),
followed by ``log_std`` when it is not one of the actor's parameters.
"""

from __future__ import annotations

from typing import Any

import numpy as np

try:
    import torch
    from torch import nn
except ImportError as exc:  # pragma: no cover - the extra is missing
    raise ImportError("trpo_ref.torch needs PyTorch: pip install 'trpo-ref[torch]'") from exc

from .config import PRESETS, TRPOConfig
from .oracle.compare import param_locator
from .heads import HEADS as _HEAD_CLASSES
from .heads import head_from_spec
from .policy import policy_for_head

__all__ = ["TorchBridge", "from_module", "to_module", "to_numpy", "actions", "Recorder", "HEADS"]

#: Policy heads :func:`from_module` builds: a Gaussian (with ``log_std``), or logits of a categorical, a
#: MultiDiscrete (``nvec``) or a MultiBinary (Bernoulli) action.
HEADS = tuple(_HEAD_CLASSES)

_ACTIVATIONS = {nn.Tanh: "tanh", nn.ReLU: "relu"}
_NO_OPS = (nn.Identity, nn.Flatten, nn.Dropout)  # Dropout only in eval mode (checked)
_CONTAINERS = (nn.Sequential, nn.ModuleList)


def to_numpy(x, dtype=np.float64) -> np.ndarray:
    """A torch tensor, a sequence of tensors (concatenated flat) or an array as a NumPy array of ``dtype``."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().to(torch.float64 if dtype == np.float64 else x.dtype).numpy().astype(dtype, copy=True)
    if isinstance(x, (list, tuple)) and x and all(isinstance(t, torch.Tensor) for t in x):
        return np.concatenate([to_numpy(t, dtype).reshape(-1) for t in x])
    return np.array(x, dtype=dtype, copy=True)


def actions(policy, act, n: int | None = None) -> np.ndarray:
    """Actions (tensor or array) in the dtype and shape ``policy`` takes: float (N, A) Gaussian, int (N,)
    categorical, int (N, k) MultiDiscrete / MultiBinary (``n`` = N when a flat vector must be reshaped)."""
    a = to_numpy(act)
    if not policy.continuous_actions:
        a = np.rint(a).astype(np.int64)
    return a.reshape(policy.act_shape(n if n is not None else -1))


def _leaves(module: nn.Module, prefix: str = ""):
    """``(name, module)`` of the modules a forward pass would run, in registration order.

    Containers (``nn.Sequential``, ``nn.ModuleList``) and plain ``nn.Module``
    wrappers are opened; their children are assumed to run in the order they
    were registered, which is what ``nn.Sequential`` does and what the MLP
    wrappers of SB3, CleanRL, skrl and tianshou do.
    """
    children = list(module.named_children())
    if not children or isinstance(module, (nn.Linear, *_ACTIVATIONS, *_NO_OPS)):
        yield prefix or type(module).__name__, module
        return
    for name, child in children:
        yield from _leaves(child, f"{prefix}.{name}" if prefix else name)


class TorchBridge:
    """A torch actor seen as a trpo_ref policy (built by :func:`from_module`).

    Attributes
    ----------
    policy : MLPPolicy
        The same function as the actor (mean and log σ, or logits).
    theta : ndarray (P,)
        The actor's current parameters in θ's layout, float64.
    actor : nn.Module
    log_std : torch.Tensor or None
    names : list of str
        The torch names of the vector's pieces in module order (``log_std`` last when it is not the actor's).
    """

    def __init__(self, actor, log_std, policy, pieces):
        self.actor = actor
        self.log_std = log_std
        self.policy = policy
        self._pieces = pieces  # (torch name, tensor, θ offset, θ shape (in, out) or (n,), transposed)
        self.names = [p[0] for p in pieces]
        P = policy.num_params
        # perm[i] = position in the module-order vector of θ[i]
        perm = np.empty(P, np.int64)
        pos = 0
        for _, t, off, shape, transposed in pieces:
            n = int(np.prod(shape))
            idx = np.arange(pos, pos + n)
            if transposed:  # torch (out, in) row-major; θ wants (in, out) row-major
                idx = idx.reshape(shape[1], shape[0]).T.reshape(-1)
            perm[off:off + n] = idx
            pos += n
        if pos != P or sorted(perm.tolist()) != list(range(P)):
            raise AssertionError("internal error: the module-order map is not a permutation of θ")
        self._perm = perm
        self._inv = np.argsort(perm)
        self.locate = param_locator(policy)

    # ------------------------------------------------------------------ vectors
    @property
    def num_params(self) -> int:
        """P, the length of θ and of a module-order vector."""
        return self.policy.num_params

    @property
    def dtype(self) -> str:
        """``"float32"`` or ``"float64"``: the precision of the actor's parameters."""
        return "float32" if self._pieces[0][1].dtype == torch.float32 else "float64"

    def module_vector(self) -> torch.Tensor:
        """The actor's parameters (then log_std) as one flat tensor in module order."""
        return torch.cat([t.detach().reshape(-1) for _, t, *_ in self._pieces])

    @property
    def theta(self) -> np.ndarray:
        """The actor's current parameters in θ's layout (float64, a fresh copy)."""
        return self.to_theta(self.module_vector())

    def to_theta(self, vec, sign: float = 1.0) -> np.ndarray:
        """A flat vector in module order (torch or NumPy, or a list of per-parameter tensors) in θ's layout.

        Parameters
        ----------
        vec : torch.Tensor, ndarray or sequence of tensors, length P
        sign : float
            Multiplies the vector (e.g. −1 for a library whose CG solves for −g).

        Returns
        -------
        ndarray (P,) float64
        """
        v = to_numpy(vec).reshape(-1)
        if v.shape[0] != self.num_params:
            raise ValueError(f"vector has {v.shape[0]} entries; this actor has {self.num_params} parameters "
                             f"({', '.join(self.names)})")
        out = v[self._perm]
        return -out if sign == -1 else (out if sign == 1 else sign * out)

    def from_theta(self, theta, *, dtype=None) -> torch.Tensor:
        """θ (NumPy) as a flat tensor in module order, in the actor's dtype and device (or ``dtype``)."""
        th = to_numpy(theta).reshape(-1)
        if th.shape[0] != self.num_params:
            raise ValueError(f"theta has {th.shape[0]} entries; expected {self.num_params}")
        ref = self._pieces[0][1]
        return torch.as_tensor(th[self._inv], dtype=dtype or ref.dtype, device=ref.device)

    def load_theta(self, theta) -> None:
        """Write θ into the actor's parameters (and log_std) in place."""
        vec = self.from_theta(theta)
        pos = 0
        with torch.no_grad():
            for _, t, *_ in self._pieces:
                n = t.numel()
                t.copy_(vec[pos:pos + n].reshape(t.shape))
                pos += n

    def where(self, i: int) -> str:
        """The θ index ``i`` as a parameter block: ``W1[3,7]``, ``log_std[0]``."""
        return self.locate(int(i))


def _fail(msg: str):
    raise ValueError("from_module: " + msg)


def _first_output(out, shape):
    """The first tensor of ``shape`` in a forward's output (a tensor, or nested tuples/lists/dicts of them)."""
    if isinstance(out, torch.Tensor):
        return out if tuple(out.shape) == shape else None
    items = out.values() if isinstance(out, dict) else out if isinstance(out, (tuple, list)) else ()
    for item in items:
        found = _first_output(item, shape)
        if found is not None:
            return found
    return None


def _check_forward(actor, bridge) -> None:
    """Call ``actor`` on a probe batch; if its output holds a (n, out_dim) tensor, it must be the Linear chain's.

    Catches what the modules do not show: a transformation inside ``forward``
    (tianshou's default ``max_action·tanh(mean)``, a softmax, an input scaling).
    An actor whose forward cannot be called on a plain tensor is not checked.
    """
    pol = bridge.policy
    ref = bridge._pieces[0][1]
    n = 7
    probe = torch.as_tensor(np.random.default_rng(0).standard_normal((n, pol.obs_dim)), dtype=ref.dtype,
                            device=ref.device)
    try:
        with torch.no_grad():
            out = actor(probe)
    except Exception:  # noqa: BLE001 - a forward with another signature (skrl's act(), ...): nothing to compare
        return
    got = _first_output(out, (n, pol.mlp.sizes[-1]))
    if got is None:
        return
    want, _ = pol.mlp.forward(bridge.theta[: pol.mlp.num_params], to_numpy(probe))  # the Linear chain's output
    diff = float(np.max(np.abs(to_numpy(got) - want)))
    scale = max(float(np.max(np.abs(want))), 1e-30)
    tol = 1e-4 if bridge.dtype == "float32" else 1e-10  # matmul rounding: ~1e-7 / ~1e-16 relative (measured)
    if not diff <= tol * scale:
        _fail(f"{type(actor).__name__}.forward returns something other than its Linear chain (max difference "
              f"{diff:.3g} on a probe batch, {diff / scale:.2g} relative): a transformation inside forward() — e.g. "
              "a tanh-squashed mean (tianshou's default unless unbounded=True), a softmax, an input scaling — is "
              "not expressible; pass check_forward=False if the output compared is not the mean or the logits")


def from_module(actor: nn.Module, log_std=None, *, head: str | None = None, nvec=None,
                check_forward: bool = True) -> TorchBridge:
    """Bridge a torch actor made of ``nn.Linear`` and tanh/ReLU layers to a trpo_ref policy.

    Parameters
    ----------
    actor : nn.Module
        ``nn.Sequential`` (nested or inside plain wrapper modules) of
        ``Linear, act, Linear, act, ..., Linear`` with one hidden activation
        (``nn.Tanh`` or ``nn.ReLU``), biases on every layer, no activation after
        the last layer.  Its output is the Gaussian mean or the categorical logits.
    log_std : torch.Tensor, nn.Parameter or str, optional
        The state-independent log σ of a Gaussian, shape (A,), (1, A) or (A, 1),
        or the name of that parameter in ``actor.named_parameters()``.  None: categorical.
    head : {"gaussian", "categorical", "multicategorical", "bernoulli"}, optional
        The action distribution; default "gaussian" with ``log_std``, else
        "categorical".  "multicategorical" (a MultiDiscrete action) needs ``nvec``;
        "bernoulli" (MultiBinary) reads one logit per bit.
    nvec : sequence of int, optional
        Choices per sub-action of a MultiDiscrete action (sum = the last layer's outputs).
    check_forward : bool
        Call ``actor`` on a probe batch and, when its output holds a tensor of
        shape (n, out_dim), require it to equal the Linear chain's output (the
        mean or the logits) — this catches a transformation written inside
        ``forward`` rather than as a module.

    Returns
    -------
    TorchBridge

    Raises
    ------
    ValueError
        One line naming the first module or parameter the bridge cannot
        express: a normalisation layer, an activation after the last layer (a
        squashed mean), mixed activations, a Linear without bias, a parameter
        outside the Linear chain (a state-dependent σ, a trunk shared with a
        critic), a Dropout in training mode.
    """
    if not isinstance(actor, nn.Module):
        _fail(f"actor must be a torch.nn.Module, got {type(actor).__name__}")
    named_params = dict(actor.named_parameters())
    if isinstance(log_std, str):
        if log_std not in named_params:
            _fail(f"log_std={log_std!r} is not a parameter of the actor (it has {list(named_params)})")
        log_std = named_params[log_std]
    linears: list[tuple[str, nn.Linear]] = []
    activation = None
    pending_act = None  # (name, module) of an activation seen after the last Linear so far
    for name, m in _leaves(actor):
        if isinstance(m, nn.Linear):
            if linears and pending_act is None:
                _fail(f"module {name!r} (Linear) follows {linears[-1][0]!r} with no activation between them: a "
                      "second output head (a state-dependent σ, a critic sharing the trunk) is not expressible")
            if m.bias is None:
                _fail(f"module {name!r} (Linear) has no bias; trpo_ref's layers are x @ W + b")
            if linears and m.in_features != linears[-1][1].out_features:
                _fail(f"module {name!r} takes {m.in_features} inputs but {linears[-1][0]!r} gives "
                      f"{linears[-1][1].out_features}")
            linears.append((name, m))
            pending_act = None
        elif type(m) in _ACTIVATIONS:
            kind = _ACTIVATIONS[type(m)]
            if not linears:
                _fail(f"module {name!r} ({type(m).__name__}) comes before any Linear layer")
            if pending_act is not None:
                _fail(f"module {name!r} ({type(m).__name__}) follows another activation {pending_act[0]!r}")
            if activation is not None and kind != activation:
                _fail(f"module {name!r} ({type(m).__name__}) mixes activations ({activation} before); "
                      "trpo_ref's MLPs use one hidden activation")
            activation = kind
            pending_act = (name, m)
        elif isinstance(m, _NO_OPS):
            if isinstance(m, nn.Dropout) and m.training and m.p > 0:
                _fail(f"module {name!r} (Dropout) is in training mode: call actor.eval() first")
        else:
            _fail(f"cannot express module {name!r} ({type(m).__name__}): trpo_ref policies are chains of "
                  "Linear layers with tanh or ReLU between them")
    if not linears:
        _fail("the actor has no nn.Linear layer")
    if pending_act is not None:
        _fail(f"module {pending_act[0]!r} ({type(pending_act[1]).__name__}) follows the last Linear: a squashed "
              "output (e.g. a tanh-squashed mean) is not a trpo_ref policy; bridge the module before the squashing "
              "(tianshou: unbounded=True)")
    # every parameter must be a Linear's weight/bias or log_std
    owned = {}
    for name, m in linears:
        owned[id(m.weight)] = (name, "weight")
        owned[id(m.bias)] = (name, "bias")
    if log_std is not None:
        if not isinstance(log_std, torch.Tensor):
            _fail(f"log_std must be a torch tensor or a parameter name, got {type(log_std).__name__}")
        owned[id(log_std)] = ("log_std", "log_std")
    for pname, p in actor.named_parameters():
        if id(p) not in owned:
            hint = (" (pass it as log_std=... if it is the Gaussian's state-independent log σ)"
                    if log_std is None else " (a state-dependent σ or a shared trunk is not expressible)")
            _fail(f"cannot express parameter {pname!r} {tuple(p.shape)}: it is not a weight or bias of the "
                  f"Linear chain{hint}")
    obs_dim = linears[0][1].in_features
    hidden = tuple(m.out_features for _, m in linears[:-1])
    out_dim = linears[-1][1].out_features
    act_name = activation or "tanh"  # a single Linear has no hidden activation
    head = head or ("gaussian" if log_std is not None else "categorical")
    if head not in HEADS:
        _fail(f"head must be one of {', '.join(HEADS)}, got {head!r}")
    if (head == "gaussian") != (log_std is not None):
        _fail("a Gaussian head needs log_std (its state-independent log σ)" if head == "gaussian"
              else f"log_std was given but head is {head!r}: only a Gaussian has a log σ")
    if head == "gaussian":
        if log_std.numel() != out_dim or sum(d != 1 for d in log_std.shape) > 1:
            _fail(f"log_std has shape {tuple(log_std.shape)}; expected ({out_dim},), (1, {out_dim}) or "
                  f"({out_dim}, 1) for a {out_dim}-dimensional action")
    if head == "multicategorical" and (nvec is None or int(np.sum(nvec)) != out_dim):
        _fail(f"head 'multicategorical' needs nvec with sum {out_dim} (the last layer's outputs), got {nvec!r}")
    policy = policy_for_head(obs_dim, head_from_spec({"kind": head, "out_dim": out_dim,
                                                      "nvec": None if nvec is None else [int(k) for k in nvec]}),
                             hidden, act_name)
    dtypes = {p.dtype for p in actor.parameters()} | ({log_std.dtype} if log_std is not None else set())
    if len(dtypes) != 1 or not dtypes <= {torch.float32, torch.float64}:
        _fail(f"parameters must all be float32 or all float64, got {sorted(map(str, dtypes))}")
    # θ offsets of each block
    offsets, pos = {}, 0
    for l, (name, m) in enumerate(linears):
        offsets[id(m.weight)] = (pos, (m.in_features, m.out_features), True)
        pos += m.in_features * m.out_features
        offsets[id(m.bias)] = (pos, (m.out_features,), False)
        pos += m.out_features
    if log_std is not None:
        offsets[id(log_std)] = (pos, (out_dim,), False)
    pieces = []
    for pname, p in actor.named_parameters():
        off, shape, tr = offsets[id(p)]
        pieces.append((pname, p, off, shape, tr))
    if log_std is not None and all(p is not log_std for _, p in actor.named_parameters()):
        off, shape, tr = offsets[id(log_std)]
        pieces.append(("log_std", log_std, off, shape, tr))
    bridge = TorchBridge(actor, log_std, policy, pieces)
    if check_forward:
        _check_forward(actor, bridge)
    return bridge


def to_module(policy, theta, *, dtype=torch.float64):
    """A trpo_ref policy and θ as a torch actor: ``(nn.Sequential, log_std Parameter or None)``.

    The inverse of :func:`from_module` (``from_module(*to_module(pi, θ)).theta == θ``); used by
    the hypothesis strategies of :mod:`trpo_ref.testing` and by tests.
    """
    named = policy.unflatten(np.asarray(theta, np.float64))
    sizes = tuple(policy.mlp.sizes)
    act_cls = {"tanh": nn.Tanh, "relu": nn.ReLU}[policy.activation]
    layers: list[nn.Module] = []
    for l in range(len(sizes) - 1):
        lin = nn.Linear(sizes[l], sizes[l + 1], dtype=dtype)
        with torch.no_grad():
            lin.weight.copy_(torch.as_tensor(np.ascontiguousarray(named[f"W{l}"].T)))
            lin.bias.copy_(torch.as_tensor(named[f"b{l}"]))
        layers.append(lin)
        if l < len(sizes) - 2:
            layers.append(act_cls())
    log_std = None
    if "log_std" in named:
        log_std = nn.Parameter(torch.as_tensor(np.array(named["log_std"]), dtype=dtype))
    return nn.Sequential(*layers), log_std


# ---------------------------------------------------------------------- recorder
def _same_up_to_sign(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.array_equal(a, b) or np.array_equal(a, -b))


class Recorder:
    r"""Record a user's TRPO update stage by stage and turn it into a trace for the stage-wise check.

    The user's update calls the recorder where it computes each quantity;
    vectors are in module order (torch or NumPy) and ``sign=-1`` flips a
    vector of a library that works on −g (tianshou's CG solves for the
    descent direction of the loss −L).  Anything not recorded is skipped by
    the check (never counted as agreement).

    Parameters
    ----------
    bridge : TorchBridge
        The actor *before* the update (its θ is θ_old: build the recorder first).
    obs, act, adv, logp_old : tensors or arrays (N, ...)
        The batch as the update received it: ``adv`` **before** any normalisation,
        ``logp_old`` as recorded at sampling time.
    config : TRPOConfig or dict, optional
        The conventions of the update; a dict overrides fields of ``preset``.
    preset : str, optional
        A key of :data:`~trpo_ref.config.PRESETS` (``"tianshou"``, ``"skrl"``, ...).
    x0 : vector, optional
        CG's start in module order when it is not 0.
    dtype : {"float64", "float32"}, optional
        The precision of the update (default: the actor's).
    producer : str, optional
        Free text naming the implementation.

    Examples
    --------
    ``rec.g(grad)``, ``rec.fvp(fvp)`` (wraps the FVP so every call is recorded),
    ``rec.cg(x=..., residual_norm=...)``, ``rec.step(x=..., beta=..., ...)``,
    ``rec.line_search_try(fraction, kl, improvement)``, ``rec.theta_new()``,
    then ``rec.check()`` or ``rec.trace().save(path)``.
    """

    def __init__(self, bridge: TorchBridge, obs, act, adv, logp_old, *, config=None, preset: str | None = None,
                 x0=None, dtype: str | None = None, producer: str | None = None):
        if preset is not None and preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
        if isinstance(config, TRPOConfig):
            cfg = config
        else:
            base = TRPOConfig.preset(preset) if preset else TRPOConfig()
            cfg = TRPOConfig.from_dict({**base.to_dict(), **dict(config or {})})
        if dtype not in (None, "float64", "float32"):
            raise ValueError(f"dtype must be 'float64' or 'float32', got {dtype!r}")
        self.bridge, self.config, self.preset = bridge, cfg, preset
        self.dtype = dtype or bridge.dtype
        self.producer = producer or f"torch update ({type(bridge.actor).__name__})"
        pol = bridge.policy
        obs_no = to_numpy(obs).reshape(-1, pol.obs_dim)
        self.inputs = {
            "theta_old": bridge.theta,
            "obs": obs_no,
            "act": actions(pol, act, obs_no.shape[0]),
            "adv": to_numpy(adv).reshape(-1),
            "logp_old": to_numpy(logp_old).reshape(-1),
        }
        if x0 is not None:
            self.inputs["cg_x0"] = bridge.to_theta(x0)
        self.values: dict[str, Any] = {}
        self.products: list[tuple[np.ndarray, np.ndarray]] = []
        self.iterates: list[np.ndarray] = []
        self.residual_norms: list[float] = []
        self.pAp: list[float] = []
        self.tries: list[dict] = []
        self._theta_new = None

    # ------------------------------------------------------------- recording
    def _vec(self, v, sign):
        return self.bridge.to_theta(v, sign)

    @staticmethod
    def _num(v) -> float:
        return float(v.detach().cpu().double().item()) if isinstance(v, torch.Tensor) else float(v)

    def g(self, grad, sign: float = 1.0) -> None:
        """g = ∇L(θ_old) (``sign=-1`` for the gradient of the loss −L)."""
        self.values["g"] = self._vec(grad, sign)

    def fisher(self, v, Fv, sign: float = 1.0) -> None:
        """One Fisher product (F + λI)v of CG (``sign`` applies to both vectors)."""
        self.products.append((self._vec(v, sign), self._vec(Fv, sign)))

    def fvp(self, fn, sign: float = 1.0):
        """``fn`` wrapped so that each call ``fn(v)`` is recorded with :meth:`fisher`.

        A product of CG's start x₀ or of the final x is recognised afterwards
        by its vector (bit for bit) and filed as ``Fx0`` / ``Fx``.
        """
        def wrapped(v, *args, **kwargs):
            out = fn(v, *args, **kwargs)
            self.fisher(v, out, sign)
            return out
        return wrapped

    def cg(self, *, x=None, residual_norm=None, pAp=None, sign: float = 1.0) -> None:
        """One CG event: an iterate x_k (k ≥ 1), a residual norm ‖r_k‖ (k ≥ 0; pass ‖r₀‖ first) and/or pₖᵀAp_k."""
        if x is not None:
            self.iterates.append(self._vec(x, sign))
        if residual_norm is not None:
            self.residual_norms.append(self._num(residual_norm))
        if pAp is not None:
            self.pAp.append(self._num(pAp))

    def step(self, *, x=None, Fx=None, xFx=None, beta=None, full_step=None, expected_improvement=None,
             sign: float = 1.0, cg_converged=None, cg_breakdown=None) -> None:
        """Quantities after CG: x, (F+λI)x, xᵀ(F+λI)x, β, βx, βgᵀx (``sign`` applies to the vectors)."""
        for key, v in (("step_dir", x), ("Fx", Fx), ("full_step", full_step)):
            if v is not None:
                self.values[key] = self._vec(v, sign)
        for key, v in (("xFx", xFx), ("beta", beta), ("expected_improvement", expected_improvement)):
            if v is not None:
                self.values[key] = self._num(v)
        for key, v in (("cg_converged", cg_converged), ("cg_breakdown", cg_breakdown)):
            if v is not None:
                self.values[key] = bool(v)

    def line_search_try(self, fraction, kl=None, improvement=None, expected_improvement=None,
                        accepted: bool | None = None) -> None:
        """One try of the line search, in order: α^j, its KL, L(θ_j) − L(θ_old), its expected improvement.

        ``accepted`` may be left out: the last try is then taken as accepted
        exactly when θ_new differs from θ_old (the search stops at the first
        acceptance).
        """
        t = {"fraction": self._num(fraction)}
        for key, v in (("kl", kl), ("improvement", improvement), ("expected_improvement", expected_improvement)):
            if v is not None:
                t[key] = self._num(v)
        if accepted is not None:
            t["accepted"] = bool(accepted)
        self.tries.append(t)

    def scalars(self, **values) -> None:
        """Other scalars by their trace key: ``surrogate_before``, ``entropy``, ``kl``, ``surrogate_after``, ..."""
        for key, v in values.items():
            self.values[key] = self._num(v)

    def theta_new(self, vec=None) -> None:
        """θ_new in module order (default: read from the actor and log_std now)."""
        self._theta_new = self.bridge.theta if vec is None else self.bridge.to_theta(vec)

    # --------------------------------------------------------------- output
    def trace(self, status: str | None = None):
        """The recorded update as a validated :class:`~trpo_ref.oracle.Trace` (status derived unless given)."""
        from .oracle.io import trace_from_arrays
        from .oracle.record import make_meta

        if self._theta_new is None:
            raise ValueError("Recorder.trace: record θ_new first (rec.theta_new())")
        ft = np.float32 if self.dtype == "float32" else np.float64
        arr: dict[str, np.ndarray] = {k: v.copy() for k, v in self.inputs.items()}
        products = list(self.products)
        x = self.values.get("step_dir")
        x0 = self.inputs.get("cg_x0")
        out: dict[str, Any] = dict(self.values)
        # A product of x₀ or of x (or of −x₀, −x: F is linear) is not one of CG's directions.
        if x0 is not None and products and _same_up_to_sign(products[0][0], x0):
            v, fv = products.pop(0)
            out["Fx0"] = fv if np.array_equal(v, x0) else -fv
        if x is not None and products and _same_up_to_sign(products[-1][0], x):
            v, fv = products.pop()
            out.setdefault("Fx", fv if np.array_equal(v, x) else -fv)
        if products:
            out["fisher_v"] = np.stack([v for v, _ in products])
            out["fisher_Fv"] = np.stack([fv for _, fv in products])
        if self.iterates:
            out["cg_iterates"] = np.stack(self.iterates)
            out["cg_n_iter"] = len(self.iterates)
            if x is None:
                out["step_dir"] = self.iterates[-1]
        if self.residual_norms:
            out["cg_residual_norms"] = np.array(self.residual_norms)
        if self.pAp:
            out["cg_pAp"] = np.array(self.pAp)
        theta_old, theta_new = arr["theta_old"], self._theta_new
        moved = not np.array_equal(theta_new.astype(ft), theta_old.astype(ft))
        if self.tries:
            accepted = [t.get("accepted") for t in self.tries]
            if any(a is None for a in accepted):
                accepted = [False] * (len(self.tries) - 1) + [moved]
            out["ls_fraction"] = np.array([t["fraction"] for t in self.tries])
            for key in ("kl", "improvement", "expected_improvement"):
                if all(key in t for t in self.tries):
                    out["ls_" + key] = np.array([t[key] for t in self.tries])
            out["ls_accepted"] = np.array(accepted, dtype=bool)
            out["accepted_index"] = next((j for j, a in enumerate(accepted) if a), -1)
        if status is None:
            g = out.get("g")
            if self.tries:
                status = "accepted" if out["accepted_index"] >= 0 else "line_search_failed"
            elif g is not None and not np.any(g):
                status = "zero_gradient"
            elif not moved:
                status = "nonpositive_curvature" if "step_dir" in out else "skipped"
            else:
                status = "fixed_step" if self.config.method in ("npg", "vpg") else "accepted"
        if not moved:
            theta_new = theta_old  # no step: θ_old bit for bit
        out["theta_new"] = theta_new
        for k, v in out.items():
            a = np.asarray(v)
            if a.dtype.kind == "f":
                a = a.astype(ft)
            elif k in ("cg_n_iter", "accepted_index"):
                a = a.astype(np.int64)
            arr[k] = a
        for k in ("theta_old", "obs", "adv", "logp_old", "cg_x0"):
            if k in arr:
                arr[k] = arr[k].astype(ft)
        if arr["act"].dtype.kind == "f":
            arr["act"] = arr["act"].astype(ft)
        meta = make_meta(self.bridge.policy, self.config, self.preset, status, self.producer, self.dtype)
        from .oracle.io import _encode_meta

        arr["meta_json"] = _encode_meta(meta)
        return trace_from_arrays(arr, where=f"Recorder({self.producer})")

    def check(self, **kwargs):
        """:func:`~trpo_ref.oracle.check_trace` of :meth:`trace` (keyword arguments passed on)."""
        from .oracle.check import check_trace

        return check_trace(self.trace(), **kwargs)
