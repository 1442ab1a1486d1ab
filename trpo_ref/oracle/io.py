"""Trace files: the :class:`Trace` object, atomic writing, and reading with validation against the schema."""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..fileio import atomic_savez
from ..policy import policy_from_spec
from ..trpo import Batch, TRPOConfig
from .schema import FIELDS, FORMAT_NAME, FORMAT_VERSION, INPUT_KEYS, OUTPUT_KEYS, READ_VERSIONS

__all__ = ["Trace", "load_trace", "trace_from_arrays", "check_shapes", "version"]


def version() -> str:
    """The trpo_ref version writing a trace."""
    from .. import __version__

    return __version__


@dataclass
class Trace:
    """One update: metadata (a JSON-able dict) and named NumPy arrays.

    ``meta`` holds ``format``, ``format_version``, ``trpo_ref_version``,
    ``producer``, ``preset`` (or None), ``policy`` (the policy spec), ``config``
    (:meth:`TRPOConfig.to_dict`), ``status`` and optionally ``dtype`` (the
    precision the candidate computed in: "float64" or "float32").  ``arrays``
    holds the input and output keys of docs/trace-format.md (without ``meta_json``).
    """

    meta: dict
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def policy(self):
        """The policy object rebuilt from the spec."""
        return policy_from_spec(self.meta["policy"])

    @property
    def config(self) -> TRPOConfig:
        r"""The :class:`~trpo_ref.trpo.TRPOConfig` of the traced update."""
        return TRPOConfig.from_dict(self.meta["config"])

    @property
    def preset(self) -> str | None:
        r"""Name of the preset the config came from, or None."""
        return self.meta.get("preset")

    @property
    def status(self) -> str | None:
        r"""Outcome of the traced update (its ``status`` string), or None."""
        return self.meta.get("status")

    @property
    def dtype(self) -> str:
        """The precision the update was computed in: meta ``dtype``, else that of ``g`` (else ``theta_old``)."""
        d = self.meta.get("dtype")
        if d:
            return str(d)
        for k in ("g", "theta_new", "theta_old"):
            if k in self.arrays:
                return "float32" if self.arrays[k].dtype == np.float32 else "float64"
        return "float64"

    @property
    def theta_old(self) -> np.ndarray:
        r"""θ_old, the parameters before the update, shape (P,)."""
        return self.arrays["theta_old"]

    @property
    def theta_new(self) -> np.ndarray:
        r"""θ_new, the parameters after the update, shape (P,)."""
        return self.arrays["theta_new"]

    @property
    def x0(self) -> np.ndarray | None:
        r"""Warm start of conjugate gradient, shape (P,), or None (start from 0)."""
        return self.arrays.get("cg_x0")

    def batch(self) -> Batch:
        """The input batch as float64 NumPy arrays (integer actions kept integer)."""
        a = self.arrays
        act = a["act"]
        act = act.astype(np.int64) if np.issubdtype(act.dtype, np.integer) else act.astype(np.float64)
        return Batch(a["obs"].astype(np.float64), act, a["adv"].astype(np.float64),
                     a["logp_old"].astype(np.float64))

    def get(self, key: str, default=None):
        """The array ``key`` or ``default`` when the trace does not hold it."""
        return self.arrays.get(key, default)

    def __getitem__(self, key: str) -> np.ndarray:
        return self.arrays[key]

    def __contains__(self, key: str) -> bool:
        return key in self.arrays

    def save(self, path) -> Path:
        """Write a compressed ``.npz`` atomically (temporary file, then rename).

        Through :func:`trpo_ref.fileio.atomic_savez`: a reader never sees a
        half-written trace, the temporary file is removed on failure, and an
        ``OSError`` names the file.  Returns the path.
        """
        path = Path(path)
        payload = {"meta_json": _encode_meta(self.meta)}
        payload.update({k: np.asarray(v) for k, v in self.arrays.items()})
        for k, v in payload.items():
            if v.dtype == object:
                raise ValueError(f"trace array {k!r} has dtype object; only numeric and bool arrays are allowed")
        atomic_savez(path, payload, compressed=True)
        return path

    def with_arrays(self, **arrays) -> "Trace":
        """A copy with some arrays replaced (for deriving candidate traces)."""
        new = dict(self.arrays)
        new.update({k: np.asarray(v) for k, v in arrays.items()})
        return Trace(dict(self.meta), new)

    def without(self, *keys: str) -> "Trace":
        """A copy without the given keys (a candidate that did not record them)."""
        return Trace(dict(self.meta), {k: v for k, v in self.arrays.items() if k not in keys})


def _encode_meta(meta: dict) -> np.ndarray:
    text = json.dumps(meta, sort_keys=True, allow_nan=True)
    return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).copy()


def _decode_meta(arr: np.ndarray, where: str) -> dict:
    if arr.dtype.kind == "U":  # a str array is accepted as well
        text = str(arr.reshape(()) if arr.shape == () else "".join(arr.reshape(-1)))
    elif arr.dtype == np.uint8 and arr.ndim == 1:
        try:
            text = arr.tobytes().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"{where}: meta_json is not UTF-8 ({exc})") from None
    else:
        raise ValueError(f"{where}: meta_json must be a 1-D uint8 array of UTF-8 JSON, got {arr.dtype} {arr.shape}")
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{where}: meta_json is not valid JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{where}: meta_json must hold a JSON object")
    return meta


def load_trace(path) -> Trace:
    """Read and validate a trace file (never unpickles); version-1 files are upgraded.

    Raises
    ------
    FileNotFoundError
        No such file.
    ValueError
        The file is not a readable ``.npz``, lacks a required key, has an
        unknown key, has an unknown format version, or an array has the wrong
        shape or dtype; the message names the file and the problem.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such trace file: {path}")
    where = str(path)
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{where}: not a trace file: not an .npz (zip) archive")
    try:
        with np.load(path, allow_pickle=False) as npz:
            raw = {k: npz[k] for k in npz.files}
    except Exception as exc:  # noqa: BLE001 - zip, zlib, CRC and npy errors surface under many types
        raise ValueError(f"{where}: not a readable trace (.npz) file: {type(exc).__name__}: {exc}") from None
    return _validate(raw, where)


def trace_from_arrays(arrays: dict[str, Any], where: str = "<trace>") -> Trace:
    """Build and validate a :class:`Trace` from a dict holding ``meta_json`` and arrays."""
    return _validate({k: np.asarray(v) for k, v in arrays.items()}, where)


def _upgrade_v1(meta: dict, raw: dict) -> None:
    """Version 1 kept (F+λ_d I)x₀ as the first row of fisher_v / fisher_Fv; version 2 names it ``Fx0``."""
    if "cg_x0" in raw:
        if "fisher_Fv" in raw and raw["fisher_Fv"].ndim == 2 and raw["fisher_Fv"].shape[0] > 0:
            raw["Fx0"] = raw["fisher_Fv"][0]
            raw["fisher_Fv"] = raw["fisher_Fv"][1:]
        if "fisher_v" in raw and raw["fisher_v"].ndim == 2 and raw["fisher_v"].shape[0] > 0:
            raw["fisher_v"] = raw["fisher_v"][1:]
    # version 1 accepted any numeric dtype for the flags: 0/1 integers become bools
    for f in FIELDS:
        a = raw.get(f.key)
        if f.dtype == "bool" and a is not None and a.dtype.kind in "iu" and np.isin(a, (0, 1)).all():
            raw[f.key] = a.astype(bool)
    meta["format_version"] = FORMAT_VERSION
    meta["upgraded_from"] = 1


def _validate(raw: dict[str, np.ndarray], where: str) -> Trace:
    if "meta_json" not in raw:
        raise ValueError(f"{where}: missing key 'meta_json' (is this a trpo_ref trace?)")
    raw = dict(raw)
    meta = _decode_meta(raw.pop("meta_json"), where)
    if meta.get("format") != FORMAT_NAME:
        raise ValueError(f"{where}: meta 'format' is {meta.get('format')!r}, expected {FORMAT_NAME!r}")
    fv = meta.get("format_version")
    if fv not in READ_VERSIONS or isinstance(fv, bool):
        raise ValueError(f"{where}: trace format version {fv!r} is not supported "
                         f"(this trpo_ref {version()} reads versions {', '.join(map(str, READ_VERSIONS))})")
    for k in ("policy", "config"):
        if not isinstance(meta.get(k), dict):
            raise ValueError(f"{where}: meta has no {k!r} object")
    if meta.get("dtype") not in (None, "float64", "float32"):
        raise ValueError(f"{where}: meta 'dtype' must be 'float64' or 'float32', got {meta.get('dtype')!r}")
    if "Fx0" in raw and fv == 1:
        raise ValueError(f"{where}: unknown keys ['Fx0'] (format version 1)")
    if fv == 1:
        _upgrade_v1(meta, raw)
    if "Fx0" in raw and "cg_x0" not in raw:
        raise ValueError(f"{where}: 'Fx0' ((F+λ_d I)x₀) is recorded but 'cg_x0' (x₀) is not")
    missing = [f.key for f in FIELDS if f.required and f.key not in raw]
    if missing:
        raise ValueError(f"{where}: missing required keys {missing}")
    unknown = sorted(set(raw) - set(INPUT_KEYS) - set(OUTPUT_KEYS))
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown} (format version {FORMAT_VERSION} "
                         f"knows {sorted((set(INPUT_KEYS) | set(OUTPUT_KEYS)) - {'meta_json'})})")
    try:
        policy = policy_from_spec(meta["policy"])
        TRPOConfig.from_dict(meta["config"])
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{where}: {exc}") from None
    check_shapes(raw, policy, where)
    return Trace(meta, raw)


_KINDS = {"float": "f", "int": "iu", "bool": "b", "float|int": "fiu"}


def check_shapes(raw: dict, policy, where: str) -> None:
    """Every array against its schema shape and dtype; free symbols bound consistently."""
    obs = raw["obs"]
    if obs.ndim != 2 or obs.shape[0] < 1:
        raise ValueError(f"{where}: 'obs' has shape {obs.shape}; expected (N, {policy.obs_dim}) with N >= 1")
    known = {"P": policy.num_params, "N": obs.shape[0], "O": policy.obs_dim}
    bound: dict[str, tuple[int, str]] = {}

    def bad(key, want):
        arr = raw[key]
        raise ValueError(f"{where}: {key!r} has shape {arr.shape} and dtype {arr.dtype}; expected {want}")

    for f in FIELDS:
        if f.key not in raw:
            continue
        arr = raw[f.key]
        want_shape = _shape_text(f.shape, known)
        if arr.dtype.kind not in _KINDS[f.dtype]:
            bad(f.key, f"{f.dtype} {want_shape}")
        shape = f.shape
        if shape == ("act",):
            shape = ("N",) + tuple(str(d) for d in policy.act_shape(1)[1:])
            known.update({str(d): d for d in policy.act_shape(1)[1:]})
            if policy.continuous_actions != (arr.dtype.kind == "f"):
                bad("act", ("float " if policy.continuous_actions else "integer ") + _shape_text(shape, known))
            want_shape = _shape_text(shape, known)
        if arr.ndim != len(shape):
            bad(f.key, want_shape + ("" if shape else " (a 0-d array, a scalar)"))
        for sym, size in zip(shape, arr.shape):
            if sym in known:
                if size != known[sym]:
                    bad(f.key, want_shape + (" for this policy" if sym in ("P", "O", "A") else ""))
                continue
            base, plus = _free(sym)
            value = size - plus
            if sym == "n|n+1":  # pAp: n entries, or n+1 when CG broke down
                if "n" in bound and size not in (bound["n"][0], bound["n"][0] + 1):
                    bad(f.key, f"({bound['n'][0]},) or ({bound['n'][0] + 1},) as {bound['n'][1]} says")
                continue
            if plus and size == 0 and bound.get(base, (0,))[0] == 0:
                continue  # CG did not run (n_iter −1): no iterates, no residual norms
            if base in bound and bound[base][0] != value:
                other = bound[base][1]
                if base == "T":
                    raise ValueError(f"{where}: line-search arrays differ in length: {f.key!r} has {size}, "
                                     f"{other!r} has {bound[base][0]}")
                bad(f.key, f"length {bound[base][0] + plus} along {sym} (as {other!r})")
            bound.setdefault(base, (value, f.key))
            if base == "N'" and value > known["N"]:
                bad(f.key, f"(N',) with N' <= {known['N']}")


def _free(sym: str) -> tuple[str, int]:
    if sym.endswith("+1") and "|" not in sym:
        return sym[:-2], 1
    return sym, 0


def _shape_text(shape: tuple, known: dict) -> str:
    dims = [str(known.get(s, s)) if known.get(s) is not None else s for s in shape]
    return "(" + ", ".join(dims) + ("," if len(dims) == 1 else "") + ")"
