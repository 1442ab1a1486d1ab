r"""Policy weights and batches from PyTorch libraries, as trpo_ref's flat θ.

PyTorch stores a linear layer as ``weight`` of shape (out, in) and computes
``x @ weight.T + bias``; trpo_ref's θ holds ``W_l`` of shape (in, out) with
``x @ W_l + b_l`` (see :mod:`trpo_ref.policy`), so ``W_l = weight.T``.

==============  ===============================================================================  ==============================
layout          keys of the actor (Gaussian / categorical)                                       ignored keys
==============  ===============================================================================  ==============================
``sb3``         ``mlp_extractor.policy_net.{0,2,..}.weight|bias``, ``action_net.weight|bias``,   ``mlp_extractor.value_net.*``,
                ``log_std`` (Gaussian only)                                                      ``value_net.*``
``cleanrl``     Gaussian: ``actor_mean.{0,2,..}.weight|bias``, ``actor_logstd`` (1, A);          ``critic.*``
                categorical: ``actor.{0,2,..}.weight|bias``
``trpo_ref``    ``W0, b0, W1, b1, ..., [log_std]`` with W of shape (in, out)                     none
==============  ===============================================================================  ==============================

The architecture (obs_dim, hidden sizes, act_dim / n_actions) is inferred from
the shapes; the activation cannot be seen in a state_dict and is an argument
(SB3's on-policy MlpPolicy and CleanRL's PPO agents use tanh).  Files are read
with ``numpy.load(allow_pickle=False)`` (``.npz``) or
``safetensors.numpy.load_file`` (``.safetensors``, the ``interop`` extra).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from .heads import HEADS, head_from_spec
from .policy import policy_from_spec
from .trpo import Batch

__all__ = ["LAYOUTS", "read_arrays", "write_arrays", "policy_from_state_dict", "state_dict_from_policy",
           "load_weights", "save_weights", "load_batch", "save_batch", "detect_layout"]

LAYOUTS = ("sb3", "cleanrl", "trpo_ref")

#: key prefixes that belong to the critic (or to SB3's shared parts) and are skipped.
_IGNORED = {
    "sb3": ("mlp_extractor.value_net.", "value_net.", "mlp_extractor.shared_net."),
    "cleanrl": ("critic.",),
    "trpo_ref": (),
}


def read_arrays(path) -> dict[str, np.ndarray]:
    """Arrays of a ``.npz`` or ``.safetensors`` file (never unpickles).

    Raises ``ValueError`` naming the file when it cannot be read.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    if path.suffix == ".safetensors":
        try:
            from safetensors.numpy import load_file
        except ImportError:
            raise ValueError(f"{path}: reading .safetensors needs the 'safetensors' package "
                             "(pip install 'trpo-ref[interop]')") from None
        try:
            return {k: np.asarray(v) for k, v in load_file(str(path)).items()}
        except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
            raise ValueError(f"{path}: not a readable .safetensors file: {exc}") from None
    try:
        with np.load(path, allow_pickle=False) as npz:
            if not hasattr(npz, "files"):
                raise ValueError("a single array, not an .npz archive")
            return {k: npz[k] for k in npz.files}
    except Exception as exc:  # noqa: BLE001 - zip, zlib and pickle refusals all mean "unusable"
        raise ValueError(f"{path}: not a readable .npz file: {type(exc).__name__}: {exc}") from None


def write_arrays(path, arrays: dict[str, np.ndarray]) -> Path:
    """Write ``.safetensors`` (by suffix) or ``.npz``."""
    path = Path(path)
    arrays = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
    if path.suffix == ".safetensors":
        from safetensors.numpy import save_file

        save_file(arrays, str(path))
    else:
        with open(path, "wb") as fh:
            np.savez(fh, **arrays)
    return path


def detect_layout(keys) -> str:
    """Guess the layout from the key names."""
    keys = set(keys)
    if any(k.startswith("mlp_extractor.") or k.startswith("action_net.") for k in keys):
        return "sb3"
    if any(k.startswith("actor_mean.") or k.startswith("actor.") or k == "actor_logstd" for k in keys):
        return "cleanrl"
    if "W0" in keys:
        return "trpo_ref"
    raise ValueError(f"cannot tell the layout from the keys {sorted(keys)[:8]}...; pass layout= "
                     f"one of {LAYOUTS}")


def _indexed_linears(sd: dict, prefix: str, where: str):
    """Torch linear layers ``prefix.{i}.weight|bias`` sorted by i, as (in, out) W and b."""
    pat = re.compile(re.escape(prefix) + r"\.(\d+)\.(weight|bias)$")
    found: dict[int, dict[str, str]] = {}
    for k in sd:
        m = pat.match(k)
        if m:
            found.setdefault(int(m.group(1)), {})[m.group(2)] = k
    layers = []
    for i in sorted(found):
        for part in ("weight", "bias"):
            if part not in found[i]:
                raise ValueError(f"{where}: missing key '{prefix}.{i}.{part}'")
        layers.append((found[i]["weight"], found[i]["bias"]))
    return layers


def _check_chain(sd, layers, where):
    """Shapes of consecutive torch layers (weight (out, in), bias (out,)) fit together."""
    prev_out = None
    for wk, bk in layers:
        w, b = sd[wk], sd[bk]
        if w.ndim != 2:
            raise ValueError(f"{where}: '{wk}' must be 2-D (out, in), got shape {w.shape}")
        if b.shape != (w.shape[0],):
            raise ValueError(f"{where}: '{bk}' has shape {b.shape}, expected ({w.shape[0]},) to match '{wk}' {w.shape}")
        if prev_out is not None and w.shape[1] != prev_out[1]:
            raise ValueError(f"{where}: '{wk}' takes {w.shape[1]} inputs but '{prev_out[0]}' gives {prev_out[1]} outputs")
        prev_out = (wk, w.shape[0])


def policy_from_state_dict(sd: dict[str, np.ndarray], layout: str = "auto", *, kind: str | None = None,
                           activation: str = "tanh", where: str = "weights", nvec=None):
    """``(policy, theta)`` from a state_dict-like mapping of NumPy arrays.

    Parameters
    ----------
    sd : dict of str -> array
    layout : {"auto", "sb3", "cleanrl", "trpo_ref"}
    kind : {"gaussian", "categorical", "multicategorical", "bernoulli"}, optional
        Inferred: a ``log_std`` / ``actor_logstd`` / ``actor_mean.*`` key means Gaussian,
        ``nvec`` means multicategorical, else categorical.  An SB3 ``MlpPolicy`` for a
        MultiDiscrete space has an ``action_net`` with sum(nvec) outputs, for MultiBinary
        with n outputs (give ``kind="bernoulli"``: the shapes cannot tell it from Discrete).
    activation : {"tanh", "relu"}
        Hidden activation (not recorded in a state_dict).
    nvec : sequence of int, optional
        Choices per sub-action of a MultiDiscrete space (their sum must be the output width).

    Raises
    ------
    ValueError
        Missing keys, extra keys, or shapes that do not chain; the message
        names them.
    """
    sd = {k: np.asarray(v) for k, v in sd.items()}
    if layout == "auto":
        layout = detect_layout(sd)
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose one of {LAYOUTS} or 'auto'")
    ignored = _IGNORED[layout]
    actor = {k: v for k, v in sd.items() if not k.startswith(ignored)}
    log_std = None
    if layout == "trpo_ref":
        n_layers = len([k for k in actor if re.fullmatch(r"W\d+", k)])
        if n_layers == 0:
            raise ValueError(f"{where}: missing key 'W0'")
        layers = []
        for i in range(n_layers):
            for k in (f"W{i}", f"b{i}"):
                if k not in actor:
                    raise ValueError(f"{where}: missing key {k!r}")
            layers.append((f"W{i}", f"b{i}"))
        used = {k for pair in layers for k in pair}
        if "log_std" in actor:
            log_std_key = "log_std"
            used.add("log_std")
        else:
            log_std_key = None
        torch_sd = {f"W{i}": actor[f"W{i}"].T for i in range(n_layers)}
        torch_sd.update({f"b{i}": actor[f"b{i}"] for i in range(n_layers)})
        for wk, _ in layers:
            if actor[wk].ndim != 2:
                raise ValueError(f"{where}: {wk!r} must be 2-D (in, out), got shape {actor[wk].shape}")
        _check_chain(torch_sd, layers, where)
        weights = [(actor[wk].T, actor[bk]) for wk, bk in layers]  # back to torch (out, in) below
        if log_std_key:
            log_std = actor[log_std_key]
    else:
        if layout == "sb3":
            hidden = _indexed_linears(actor, "mlp_extractor.policy_net", where)
            for part in ("weight", "bias"):
                if f"action_net.{part}" not in actor:
                    raise ValueError(f"{where}: missing key 'action_net.{part}'")
            layers = hidden + [("action_net.weight", "action_net.bias")]
            log_std_key = "log_std" if "log_std" in actor else None
        else:  # cleanrl
            gaussian = any(k.startswith("actor_mean.") for k in actor) or "actor_logstd" in actor
            prefix = "actor_mean" if gaussian else "actor"
            layers = _indexed_linears(actor, prefix, where)
            if not layers:
                raise ValueError(f"{where}: missing keys '{prefix}.0.weight', '{prefix}.0.bias' (no actor layers)")
            log_std_key = "actor_logstd" if gaussian else None
            if gaussian and "actor_logstd" not in actor:
                raise ValueError(f"{where}: missing key 'actor_logstd'")
        _check_chain(actor, layers, where)
        used = {k for pair in layers for k in pair} | ({log_std_key} if log_std_key else set())
        weights = [(actor[wk], actor[bk]) for wk, bk in layers]
        if log_std_key:
            log_std = actor[log_std_key]
    extra = sorted(set(actor) - used)
    if extra:
        raise ValueError(f"{where}: unexpected keys {extra} for layout {layout!r}")
    if kind is None:
        kind = "gaussian" if log_std is not None else ("multicategorical" if nvec is not None else "categorical")
    out_dim = int(weights[-1][0].shape[0])
    obs_dim = int(weights[0][0].shape[1])
    hidden_sizes = tuple(int(w.shape[0]) for w, _ in weights[:-1])
    if kind not in HEADS:
        raise ValueError(f"kind must be one of {sorted(HEADS)}, got {kind!r}")
    if kind == "multicategorical" and (nvec is None or sum(int(k) for k in nvec) != out_dim):
        raise ValueError(f"{where}: a multicategorical policy needs nvec summing to the {out_dim} outputs, "
                         f"got {nvec!r}")
    head = head_from_spec({"kind": kind, "out_dim": out_dim, "nvec": nvec})
    wants_log_std = "log_std" in head.extra_shapes()
    if wants_log_std and log_std is None:
        raise ValueError(f"{where}: missing the log-std key for a {kind} policy "
                         f"({'log_std' if layout != 'cleanrl' else 'actor_logstd'})")
    if not wants_log_std and log_std is not None:
        raise ValueError(f"{where}: a {kind} policy has no log-std, but the weights hold one")
    if log_std is not None and (log_std.size != out_dim or log_std.shape not in ((out_dim,), (1, out_dim))):
        raise ValueError(f"{where}: log-std has shape {log_std.shape}, expected ({out_dim},) or (1, {out_dim})")
    policy = policy_from_spec({"kind": kind, "obs_dim": obs_dim, "out_dim": out_dim, "nvec": nvec,
                               "hidden_sizes": hidden_sizes, "activation": activation})
    named = {}
    for l, (w, b) in enumerate(weights):
        named[f"W{l}"] = np.asarray(w, dtype=np.float64).T  # torch (out, in) -> (in, out)
        named[f"b{l}"] = np.asarray(b, dtype=np.float64)
    if log_std is not None:
        named["log_std"] = np.asarray(log_std, dtype=np.float64).reshape(-1)
    theta = np.ascontiguousarray(policy.flatten(named))
    return policy, theta


def state_dict_from_policy(policy, theta, layout: str = "sb3") -> dict[str, np.ndarray]:
    """Inverse of :func:`policy_from_state_dict`: the actor's arrays in a library's layout."""
    named = policy.unflatten(np.asarray(theta, dtype=np.float64))
    n_layers = policy.mlp.n_layers
    sd: dict[str, np.ndarray] = {}
    if layout == "trpo_ref":
        return {k: np.array(v) for k, v in named.items()}
    if layout == "sb3":
        names = [f"mlp_extractor.policy_net.{2 * l}" for l in range(n_layers - 1)] + ["action_net"]
    elif layout == "cleanrl":
        prefix = "actor_mean" if policy.continuous_actions else "actor"  # CleanRL's names
        names = [f"{prefix}.{2 * l}" for l in range(n_layers)]
    else:
        raise ValueError(f"unknown layout {layout!r}; choose one of {LAYOUTS}")
    for l, name in enumerate(names):
        sd[f"{name}.weight"] = np.ascontiguousarray(np.asarray(named[f"W{l}"]).T)
        sd[f"{name}.bias"] = np.array(named[f"b{l}"])
    if "log_std" in named:
        ls = np.array(named["log_std"])
        if layout == "sb3":
            sd["log_std"] = ls
        else:
            sd["actor_logstd"] = ls.reshape(1, -1)
    return sd


def load_weights(path, layout: str = "auto", *, kind: str | None = None, activation: str = "tanh"):
    """``(policy, theta)`` from a ``.npz`` or ``.safetensors`` weights file (see module table)."""
    return policy_from_state_dict(read_arrays(path), layout, kind=kind, activation=activation, where=str(path))


def save_weights(path, policy, theta, layout: str = "sb3") -> Path:
    """Write θ in a library's layout (``.npz`` or ``.safetensors`` by suffix)."""
    return write_arrays(path, state_dict_from_policy(policy, theta, layout))


_BATCH_KEYS = ("obs", "act", "adv", "logp_old")


def load_batch(path, policy=None) -> tuple[Batch, np.ndarray | None]:
    """``(batch, cg_x0 or None)`` from a ``.npz`` / ``.safetensors`` with obs, act, adv, logp_old [, cg_x0].

    Floats become float64; with ``policy`` given, categorical actions must be
    integers (an integer-valued float array is converted) and shapes are checked.
    """
    arrays = read_arrays(path)
    missing = [k for k in _BATCH_KEYS if k not in arrays]
    if missing:
        raise ValueError(f"{path}: missing batch keys {missing} (need {list(_BATCH_KEYS)}, optional 'cg_x0')")
    extra = sorted(set(arrays) - set(_BATCH_KEYS) - {"cg_x0"})
    if extra:
        raise ValueError(f"{path}: unexpected batch keys {extra}")
    obs = np.asarray(arrays["obs"], dtype=np.float64)
    act = np.asarray(arrays["act"])
    if policy is not None and not policy.continuous_actions:
        if act.ndim == 2 and act.shape[1] == 1 and len(policy.act_shape(1)) == 1:
            act = act[:, 0]  # a column of indices
        if act.dtype.kind == "f":
            if not np.all(act == np.round(act)):
                raise ValueError(f"{path}: 'act' must hold integer actions for a {policy.kind} policy")
        act = act.astype(np.int64)
    elif policy is None and act.dtype.kind in "iu":
        act = act.astype(np.int64)  # integer actions: categorical
    else:
        act = act.astype(np.float64)
    n = obs.shape[0] if obs.ndim == 2 else -1
    if obs.ndim != 2:
        raise ValueError(f"{path}: 'obs' must be 2-D (N, obs_dim), got shape {obs.shape}")
    if policy is not None and obs.shape[1] != policy.obs_dim:
        raise ValueError(f"{path}: 'obs' has {obs.shape[1]} features but the policy takes {policy.obs_dim}")
    if policy is not None and act.shape != policy.act_shape(n):
        raise ValueError(f"{path}: 'act' has shape {act.shape}, expected {policy.act_shape(n)}")
    for k in ("adv", "logp_old"):
        a = np.asarray(arrays[k])
        if a.shape not in ((n,), (n, 1)):
            raise ValueError(f"{path}: {k!r} has shape {a.shape}, expected ({n},)")
    batch = Batch(obs, act, np.asarray(arrays["adv"], dtype=np.float64).reshape(n),
                  np.asarray(arrays["logp_old"], dtype=np.float64).reshape(n))
    x0 = arrays.get("cg_x0")
    if x0 is not None:
        x0 = np.asarray(x0, dtype=np.float64).reshape(-1)
        if policy is not None and x0.shape != (policy.num_params,):
            raise ValueError(f"{path}: 'cg_x0' has shape {x0.shape}, expected ({policy.num_params},)")
    return batch, x0


def save_batch(path, batch: Batch, cg_x0=None) -> Path:
    """Write a batch (and an optional CG start) as ``.npz`` / ``.safetensors``."""
    arrays = {k: np.asarray(getattr(batch, k)) for k in _BATCH_KEYS}
    if cg_x0 is not None:
        arrays["cg_x0"] = np.asarray(cg_x0)
    return write_arrays(path, arrays)
