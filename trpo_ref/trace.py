r"""Oracle trace files: one TRPO update, inputs and every intermediate, in one ``.npz``.

A trace holds the inputs of one policy update (policy architecture, θ_old, the
batch, the configuration, an optional CG start x₀) and everything the update
computed (the advantages it used, log-probabilities at θ_old, the surrogate, g,
every Fisher product, every CG iterate, xᵀ(F+λI)x, β, every line-search try,
θ_new).  :func:`check_trace` recomputes the update from the inputs with
:func:`trpo_ref.trpo.trpo_step` and reports, quantity by quantity and in the
order the algorithm computes them, where a trace departs from the reference.

==========================================  ===========================================
what                                        function
==========================================  ===========================================
run one update and record it                :func:`compute_trace`
write (atomically) / read                   :meth:`Trace.save` / :func:`load_trace`
compare two traces                          :func:`compare_traces` -> :class:`Report`
recompute a trace from its inputs           :func:`check_trace` -> :class:`Report`
a seeded synthetic case                     :func:`synthetic_case`
==========================================  ===========================================

The file format (every key, shape, dtype and the version policy) is specified
in ``docs/trace-format.md``; ``docs/oracle.md`` shows the workflow.  Loading
never unpickles (``allow_pickle=False``).

Comparison rule (per quantity): with r the reference and c the candidate,

.. math:: \max_i |c_i - r_i| \le \mathrm{atol} + \mathrm{rtol}\,\max_i |r_i|

a norm-wise (∞-norm) test: rounding in a sum or a matrix product is bounded
relative to the size of its terms, not of its (possibly cancelled) result, so
an element-wise relative test would flag entries that cancel to near zero.
Decisions (line-search flags, accepted index, CG iteration count, status) are
compared exactly.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import backend
from .policy import policy_from_spec
from .trpo import PRESETS, Batch, TRPOConfig, trpo_step

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "DEFAULT_RTOL",
    "DEFAULT_ATOL",
    "Trace",
    "Row",
    "Report",
    "compute_trace",
    "load_trace",
    "compare_traces",
    "check_trace",
    "synthetic_case",
    "INPUT_KEYS",
    "OUTPUT_KEYS",
]

FORMAT_NAME = "trpo_ref.trace"
#: Bumped whenever a key is added, removed, or changes shape, dtype or meaning
#: (see docs/trace-format.md, "Version policy").  Readers accept only this version.
FORMAT_VERSION = 1

#: Default tolerances of :func:`check_trace`, for traces computed in float64.
#: They are set by measurement (``python scripts/make_golden.py --spread``):
#: recomputing an update from inputs moved by one ulp, the quantities before
#: CG (log-probs, advantages, surrogate, g, pᵀAp, gᵀx) move by < 1e-13
#: relative, but CG's late iterates and what follows from them (x, (F+λI)x,
#: xᵀ(F+λI)x, β, the tries' KL and improvement, θ_new) move by up to ~1e-6
#: (measured max 9.4e-7, for (F+λI)x of the sb3-contrib preset with 15 CG
#: iterations): Krylov iterates are sensitive to perturbations when F + λI
#: has tight eigenvalue clusters, which the rank-deficient Fisher of a small
#: batch always has.  Another BLAS or summation order is such a perturbation.
#: rtol = 1e-5 is ten times the largest measured spread and a hundred times
#: below the smallest effect of any planted bug (tests/test_trace.py).
#: atol = 1e-12 covers quantities whose true value is 0 (the surrogate at
#: θ_old with normalised advantages is ~1e-17, the KL of an unchanged θ is 0).
DEFAULT_RTOL = 1e-5
DEFAULT_ATOL = 1e-12

#: key -> (meaning, required).  Shapes and dtypes: docs/trace-format.md.
INPUT_KEYS: dict[str, tuple[str, bool]] = {
    "meta_json": ("UTF-8 JSON metadata as uint8 bytes", True),
    "theta_old": ("θ_old, flat parameters", True),
    "obs": ("observations", True),
    "act": ("actions", True),
    "adv": ("advantages as given (before any normalisation)", True),
    "logp_old": ("log π_old(a|s) recorded at sampling time", True),
    "cg_x0": ("CG starting point x₀ (when not zero)", False),
}

OUTPUT_KEYS: dict[str, str] = {
    "logp": "log π_θold(a|s) recomputed at θ_old",
    "adv_used": "advantages the surrogate used (normalised when configured)",
    "adv_std_zero": "advantage normalisation met a zero spread",
    "surrogate_before": "L(θ_old)",
    "entropy": "mean entropy at θ_old",
    "g": "g = ∇L(θ_old)",
    "fisher_v": "vectors v of CG's Fisher products",
    "fisher_Fv": "(F + λI)v of CG's Fisher products",
    "cg_iterates": "CG iterates x_1..x_n",
    "cg_residual_norms": "CG residual norms ‖r_0‖..‖r_n‖",
    "cg_pAp": "CG curvatures pᵀ(F+λI)p",
    "cg_n_iter": "CG iterations (-1: CG did not run)",
    "cg_converged": "CG stopping rule met",
    "cg_breakdown": "CG broke down",
    "step_dir": "x ≈ (F + λI)⁻¹g",
    "Fx": "(F + λI)x, the product β uses",
    "xFx": "xᵀ(F + λI)x",
    "beta": "β = √(2δ / xᵀ(F+λI)x)",
    "full_step": "βx",
    "expected_improvement": "βgᵀx",
    "ls_fraction": "line-search fraction α^j of each try",
    "ls_kl": "KL of each try (NaN: not computed)",
    "ls_improvement": "L(θ_j) − L(θ_old) of each try",
    "ls_expected_improvement": "α^j βgᵀx of each try",
    "ls_ratio": "improvement / expected improvement of each try",
    "ls_finite": "finiteness test of each try",
    "ls_kl_ok": "KL test of each try",
    "ls_improvement_ok": "improvement test of each try",
    "ls_accepted": "each try accepted",
    "accepted_index": "index of the accepted try (-1: none)",
    "theta_new": "θ_new",
    "kl": "KL at θ_new",
    "surrogate_after": "L(θ_new)",
    "surrogate_change": "L(θ_new) − L(θ_old)",
}

_REQUIRED_OUTPUTS = ("theta_new",)
#: CG's sequences, compared on the scale of the whole sequence (see compare_traces).
_CG_SEQUENCES = ("fisher_v", "fisher_Fv", "cg_iterates", "cg_residual_norms", "cg_pAp")
_BOOL_SCALARS = ("adv_std_zero", "cg_converged", "cg_breakdown")
_INT_SCALARS = ("cg_n_iter", "accepted_index")
_FLOAT_SCALARS = ("surrogate_before", "entropy", "xFx", "beta", "expected_improvement", "kl",
                  "surrogate_after", "surrogate_change")
_P_VECTORS = ("g", "step_dir", "Fx", "full_step", "theta_new")
_LS_FLOAT = ("ls_fraction", "ls_kl", "ls_improvement", "ls_expected_improvement", "ls_ratio")
_LS_BOOL = ("ls_finite", "ls_kl_ok", "ls_improvement_ok", "ls_accepted")


def _version() -> str:
    from . import __version__

    return __version__


# --------------------------------------------------------------------------- Trace
@dataclass
class Trace:
    """One update: metadata (a JSON-able dict) and named NumPy arrays.

    ``meta`` holds ``format``, ``format_version``, ``trpo_ref_version``,
    ``producer``, ``preset`` (or None), ``policy`` (the policy spec), ``config``
    (:meth:`TRPOConfig.to_dict`) and ``status``.  ``arrays`` holds the input
    and output keys of docs/trace-format.md (without ``meta_json``).
    """

    meta: dict
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    # ------------------------------------------------------------ accessors
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

    def __getitem__(self, key: str) -> np.ndarray:
        return self.arrays[key]

    # ------------------------------------------------------------------- I/O
    def save(self, path) -> Path:
        """Write a compressed ``.npz`` atomically (temporary file, then rename).

        A reader never sees a half-written trace: the file appears complete or
        not at all.  Returns the path.
        """
        path = Path(path)
        payload = {"meta_json": _encode_meta(self.meta)}
        payload.update({k: np.asarray(v) for k, v in self.arrays.items()})
        for k, v in payload.items():
            if v.dtype == object:
                raise ValueError(f"trace array {k!r} has dtype object; only numeric and bool arrays are allowed")
        directory = path.parent if str(path.parent) else Path(".")
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez_compressed(fh, **payload)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
        return path

    def with_arrays(self, **arrays) -> "Trace":
        """A copy with some arrays replaced (for deriving candidate traces)."""
        new = dict(self.arrays)
        new.update({k: np.asarray(v) for k, v in arrays.items()})
        return Trace(dict(self.meta), new)


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
    """Read and validate a trace file (never unpickles).

    Raises
    ------
    FileNotFoundError
        No such file.
    ValueError
        The file is not a readable ``.npz``, lacks a required key, has an
        unknown key, has another format version, or an array has the wrong
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
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError, zipfile.LargeZipFile) as exc:
        raise ValueError(f"{where}: not a readable trace (.npz) file: {type(exc).__name__}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - zlib/CRC errors surface under various types
        raise ValueError(f"{where}: not a readable trace (.npz) file: {type(exc).__name__}: {exc}") from None
    return _validate(raw, where)


def trace_from_arrays(arrays: dict[str, Any], where: str = "<trace>") -> Trace:
    """Build and validate a :class:`Trace` from a dict holding ``meta_json`` and arrays."""
    return _validate({k: np.asarray(v) for k, v in arrays.items()}, where)


def _validate(raw: dict[str, np.ndarray], where: str) -> Trace:
    if "meta_json" not in raw:
        raise ValueError(f"{where}: missing key 'meta_json' (is this a trpo_ref trace?)")
    meta = _decode_meta(raw.pop("meta_json"), where)
    if meta.get("format") != FORMAT_NAME:
        raise ValueError(f"{where}: meta 'format' is {meta.get('format')!r}, expected {FORMAT_NAME!r}")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(f"{where}: trace format version {version!r} is not supported "
                         f"(this trpo_ref {_version()} reads version {FORMAT_VERSION})")
    for k in ("policy", "config"):
        if not isinstance(meta.get(k), dict):
            raise ValueError(f"{where}: meta has no {k!r} object")
    missing = [k for k, (_, req) in INPUT_KEYS.items() if req and k != "meta_json" and k not in raw]
    missing += [k for k in _REQUIRED_OUTPUTS if k not in raw]
    if missing:
        raise ValueError(f"{where}: missing required keys {missing}")
    unknown = sorted(set(raw) - set(INPUT_KEYS) - set(OUTPUT_KEYS))
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown} (format version {FORMAT_VERSION} "
                         f"knows {sorted(set(INPUT_KEYS) | set(OUTPUT_KEYS))})")
    try:
        policy = policy_from_spec(meta["policy"])
        TRPOConfig.from_dict(meta["config"])
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{where}: {exc}") from None

    def bad(key, want):
        arr = raw[key]
        raise ValueError(f"{where}: {key!r} has shape {arr.shape} and dtype {arr.dtype}; expected {want}")

    for k, arr in raw.items():
        if arr.dtype.kind not in "fiub":
            bad(k, "a numeric or bool array")
    P = policy.num_params
    obs = raw["obs"]
    if obs.ndim != 2 or obs.shape[1] != policy.obs_dim or obs.shape[0] < 1 or obs.dtype.kind != "f":
        bad("obs", f"float (N, {policy.obs_dim}) with N >= 1")
    N = obs.shape[0]
    if policy.kind == "gaussian":
        if raw["act"].shape != (N, policy.act_dim) or raw["act"].dtype.kind != "f":
            bad("act", f"float ({N}, {policy.act_dim})")
    elif raw["act"].shape != (N,) or raw["act"].dtype.kind not in "iu":
        bad("act", f"integer ({N},)")
    for k in ("adv", "logp_old", "logp"):
        if k in raw and (raw[k].shape != (N,) or raw[k].dtype.kind != "f"):
            bad(k, f"float ({N},)")
    for k in ("theta_old", "cg_x0", *_P_VECTORS):
        if k in raw and (raw[k].shape != (P,) or raw[k].dtype.kind != "f"):
            bad(k, f"float ({P},) for this policy")
    if "adv_used" in raw and (raw["adv_used"].ndim != 1 or raw["adv_used"].shape[0] > N):
        bad("adv_used", f"float (N',) with N' <= {N}")
    for k in ("fisher_v", "fisher_Fv", "cg_iterates"):
        if k in raw and (raw[k].ndim != 2 or raw[k].shape[1] != P):
            bad(k, f"float (K, {P})")
    if "fisher_v" in raw and "fisher_Fv" in raw and raw["fisher_v"].shape != raw["fisher_Fv"].shape:
        bad("fisher_Fv", f"the shape of fisher_v {raw['fisher_v'].shape}")
    for k in ("cg_residual_norms", "cg_pAp", *_LS_FLOAT, *_LS_BOOL):
        if k in raw and raw[k].ndim != 1:
            bad(k, "a 1-D array")
    ls_lengths = {k: raw[k].shape[0] for k in (*_LS_FLOAT, *_LS_BOOL) if k in raw}
    if len(set(ls_lengths.values())) > 1:
        raise ValueError(f"{where}: line-search arrays differ in length: {ls_lengths}")
    for k in (*_BOOL_SCALARS, *_INT_SCALARS, *_FLOAT_SCALARS):
        if k in raw and raw[k].shape != ():
            bad(k, "a 0-d array (scalar)")
    for k in _INT_SCALARS:
        if k in raw and raw[k].dtype.kind not in "iu":
            bad(k, "an integer scalar")
    return Trace(meta, raw)


# ----------------------------------------------------------------- computing
def _meta(policy, config: TRPOConfig, preset: str | None, status: str, producer: str | None = None) -> dict:
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "trpo_ref_version": _version(),
        "producer": producer or f"trpo_ref {_version()}",
        "preset": preset,
        "policy": policy.spec(),
        "config": config.to_dict(),
        "status": status,
    }


def compute_trace(policy, theta, batch: Batch, config: TRPOConfig | None = None, preset: str | None = None,
                  *, x0=None) -> Trace:
    """Run :func:`trpo_ref.trpo.trpo_step` once and record inputs and every intermediate.

    Parameters
    ----------
    policy : GaussianMLPPolicy or CategoricalMLPPolicy
    theta : array (P,)
        θ_old (any backend; stored on the host).
    batch : Batch
    config : TRPOConfig, optional
        Defaults to ``TRPOConfig.preset(preset)``.
    preset : str, optional
        Name recorded in the metadata (informational; the config decides).
    x0 : array (P,), optional
        Explicit CG start.  With ``config.cg_x0 == "random"`` the random start
        trpo_step draws is recorded as ``cg_x0`` so a replay is exact.

    Returns
    -------
    Trace
    """
    if config is None:
        if preset is None:
            raise ValueError("compute_trace needs a config or a preset name")
        config = TRPOConfig.preset(preset)
    if preset is not None and preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    theta_new, info = trpo_step(policy, theta, batch, config, x0=x0)
    H = backend.to_numpy
    arrays: dict[str, np.ndarray] = {
        "theta_old": H(theta).copy(),
        "obs": H(batch.obs).copy(),
        "act": H(batch.act).copy(),
        "adv": H(batch.adv).copy(),
        "logp_old": H(batch.logp_old).copy(),
    }
    products = list(info.fisher_products)
    cg = info.cg
    uses_x0 = cg is not None and (x0 is not None or config.cg_x0 == "random") and len(products) > 0
    if uses_x0:
        # CG's first product is A x₀ (r₀ = g − A x₀): its v is the exact x₀ used.
        arrays["cg_x0"] = H(products[0][0]).copy()
    P = policy.num_params
    fx = products.pop() if cg is not None else None  # the last product is (F+λI)x for β
    tries = info.tries

    def vec(x):
        return np.zeros(P) if x is None else H(x).astype(np.float64).copy()

    def stack(rows):
        return np.stack([H(r) for r in rows]).astype(np.float64) if rows else np.zeros((0, P))

    arrays.update({
        "logp": H(policy.log_prob(theta, batch.obs, batch.act)).copy(),
        "adv_used": H(info.adv).astype(np.float64).copy(),
        "adv_std_zero": np.array(bool(info.adv_std_zero)),
        "surrogate_before": np.array(float(info.surrogate_before)),
        "entropy": np.array(float(info.entropy)),
        "g": vec(info.g),
        "fisher_v": stack([v for v, _ in products]),
        "fisher_Fv": stack([fv for _, fv in products]),
        "cg_iterates": stack(list(cg.iterates or ()) if cg is not None else []),
        "cg_residual_norms": np.array(cg.residual_norms if cg is not None else (), dtype=np.float64),
        "cg_pAp": np.array(cg.pAp if cg is not None else (), dtype=np.float64),
        "cg_n_iter": np.array(cg.n_iter if cg is not None else -1, dtype=np.int64),
        "cg_converged": np.array(bool(cg.converged) if cg is not None else False),
        "cg_breakdown": np.array(bool(cg.breakdown) if cg is not None else False),
        "step_dir": vec(info.step_dir),
        "Fx": vec(fx[1] if fx is not None else None),
        "xFx": np.array(float(info.xFx)),
        "beta": np.array(float(info.beta)),
        "full_step": vec(info.full_step),
        "expected_improvement": np.array(float(info.expected_improvement)),
        "ls_fraction": np.array([t.fraction for t in tries], dtype=np.float64),
        "ls_kl": np.array([math.nan if t.kl is None else t.kl for t in tries], dtype=np.float64),
        "ls_improvement": np.array([t.improvement for t in tries], dtype=np.float64),
        "ls_expected_improvement": np.array([t.expected_improvement for t in tries], dtype=np.float64),
        "ls_ratio": np.array([t.ratio for t in tries], dtype=np.float64),
        "ls_finite": np.array([t.finite for t in tries], dtype=bool),
        "ls_kl_ok": np.array([t.kl_ok for t in tries], dtype=bool),
        "ls_improvement_ok": np.array([t.improvement_ok for t in tries], dtype=bool),
        "ls_accepted": np.array([t.accepted for t in tries], dtype=bool),
        "accepted_index": np.array(-1 if info.accepted_index is None else info.accepted_index, dtype=np.int64),
        "theta_new": vec(theta_new),
        "kl": np.array(float(info.kl)),
        "surrogate_after": np.array(float(info.surrogate_after)),
        "surrogate_change": np.array(float(info.surrogate_change)),
    })
    return Trace(_meta(policy, config, preset, info.status), arrays)


def recompute(trace: Trace) -> Trace:
    """The reference trace: trpo_ref's update on ``trace``'s inputs (float64, NumPy)."""
    policy = trace.policy
    config = trace.config
    theta = trace.theta_old.astype(np.float64)
    x0 = trace.x0
    ref = compute_trace(policy, theta, trace.batch(), config, x0=None if x0 is None else x0.astype(np.float64))
    ref.meta["preset"] = trace.preset
    return ref


def synthetic_case(kind: str = "gaussian", seed: int = 0, n: int = 32, obs_dim: int = 3, act_dim: int = 2,
                   hidden_sizes=(8, 8), activation: str = "tanh"):
    """A seeded synthetic update: ``(policy, theta_old, batch)``.

    θ_old is the orthogonal initialisation perturbed by 0.3·N(0, 1) (so the
    output layer is not ~0 and log σ is not all 0); observations are N(0, I);
    actions are sampled from π_θold on the host and ``logp_old`` are their exact
    log-probabilities; advantages are 1.5·N(0, 1) + 0.5 (non-zero mean and
    non-unit spread, so normalisation matters).  ``act_dim`` is the number of
    actions for ``kind="categorical"``.
    """
    from .policy import CategoricalMLPPolicy, GaussianMLPPolicy

    if kind == "gaussian":
        policy = GaussianMLPPolicy(obs_dim, act_dim, tuple(hidden_sizes), activation)
    elif kind == "categorical":
        policy = CategoricalMLPPolicy(obs_dim, act_dim, tuple(hidden_sizes), activation)
    else:
        raise ValueError(f"policy kind must be 'gaussian' or 'categorical', got {kind!r}")
    if int(n) < 2:
        raise ValueError(f"n must be >= 2, got {n}")
    rng = np.random.default_rng(seed)
    theta = backend.to_numpy(policy.init_params(seed)) + 0.3 * rng.standard_normal(policy.num_params)
    obs = rng.standard_normal((int(n), obs_dim))
    act, logp = policy.sample(theta, obs, rng)
    adv = 1.5 * rng.standard_normal(int(n)) + 0.5
    return policy, theta, Batch(obs, backend.to_numpy(act), adv, backend.to_numpy(logp))


# ---------------------------------------------------------------- comparing
@dataclass(frozen=True)
class Row:
    """One compared quantity.

    ``status`` is ``"ok"``, ``"FAIL"`` or ``"skipped"`` (not recorded in the
    candidate).  ``max_abs`` is max|c − r|; ``max_rel`` is max|c − r| / max|r|
    (norm-wise); ``where`` names the worst entry (a parameter block for θ-sized
    vectors, a sample index for batch-sized ones).
    """

    name: str
    description: str
    shape: tuple
    max_abs: float
    max_rel: float
    status: str
    where: str = ""
    exact: bool = False

    @property
    def ok(self) -> bool:
        r"""True unless the row's status is ``"FAIL"``."""
        return self.status != "FAIL"

    def to_dict(self) -> dict:
        r"""JSON-serialisable form of the row.

        Returns
        -------
        dict
        """
        return {"name": self.name, "description": self.description, "shape": list(self.shape),
                "max_abs": self.max_abs, "max_rel": self.max_rel, "status": self.status, "where": self.where,
                "exact": self.exact}


@dataclass
class Report:
    """Quantity-by-quantity comparison, rows in the order the algorithm computes them."""

    rows: list[Row]
    rtol: float
    atol: float
    header: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        r"""True when no row failed."""
        return all(r.ok for r in self.rows)

    @property
    def failures(self) -> list[Row]:
        r"""The failing rows, in order."""
        return [r for r in self.rows if not r.ok]

    @property
    def first_failure(self) -> Row | None:
        r"""The first failing row in the algorithm's order, or None."""
        return next((r for r in self.rows if not r.ok), None)

    def row(self, name: str) -> Row:
        r"""The row called ``name``.

        Parameters
        ----------
        name : str

        Returns
        -------
        Row

        Raises
        ------
        KeyError
            When no row has that name.
        """
        for r in self.rows:
            if r.name == name:
                return r
        raise KeyError(f"no row named {name!r}")

    def max_errors(self) -> tuple[float, float]:
        """Largest max_abs and max_rel over the compared (non-exact, non-skipped) rows."""
        rows = [r for r in self.rows if r.status != "skipped" and not r.exact]
        if not rows:
            return 0.0, 0.0
        return max(r.max_abs for r in rows), max(r.max_rel for r in rows)

    def to_dict(self) -> dict:
        r"""JSON-serialisable form of the report (``ok``, tolerances, header, notes, rows).

        Returns
        -------
        dict
        """
        ff = self.first_failure
        return {"ok": self.ok, "rtol": self.rtol, "atol": self.atol, "header": list(self.header),
                "notes": list(self.notes), "first_failure": None if ff is None else ff.name,
                "rows": [r.to_dict() for r in self.rows]}

    def to_text(self, show: str = "all") -> str:
        r"""The table.  ``show="failures"`` keeps only failing rows (and the summary).

        Parameters
        ----------
        show : {"all", "failures"}

        Returns
        -------
        str
        """
        out = list(self.header)
        out.append(f"tolerance: max|cand - ref| <= atol + rtol * max|ref|  (rtol {self.rtol:g}, atol {self.atol:g}); "
                   "decisions exact")
        out.append("")
        name_w = max([len(r.name) for r in self.rows] + [8])
        out.append(f"{'#':>3}  {'quantity':<{name_w}}  {'shape':<10} {'max abs err':>11} {'max rel err':>11}  "
                   f"{'':<7} worst at / note")
        for i, r in enumerate(self.rows, 1):
            if show == "failures" and r.ok:
                continue
            if r.status == "skipped":
                abs_s = rel_s = "--"
            elif r.exact:
                abs_s = f"{r.max_abs:11.0f}" if math.isfinite(r.max_abs) else "inf"
                rel_s = "exact"
            else:
                abs_s, rel_s = f"{r.max_abs:11.3e}", f"{r.max_rel:11.3e}"
            shape = "x".join(str(s) for s in r.shape) if r.shape else "()"
            out.append(f"{i:>3}  {r.name:<{name_w}}  {shape:<10} {abs_s:>11} {rel_s:>11}  {r.status:<7} {r.where}")
        out.append("")
        out.extend(self.notes)
        n_skip = sum(r.status == "skipped" for r in self.rows)
        n_cmp = len(self.rows) - n_skip
        ff = self.first_failure
        if ff is None:
            out.append(f"OK: all {n_cmp} compared quantities agree" + (f" ({n_skip} not recorded)" if n_skip else ""))
        else:
            detail = "" if ff.exact else f" (max abs err {ff.max_abs:.3e}, max rel err {ff.max_rel:.3e})"
            where = f", worst at {ff.where}" if ff.where else ""
            out.append(f"FAIL: {len(self.failures)} of {n_cmp} quantities out of tolerance; "
                       f"first: {ff.name} -- {ff.description}{detail}{where}")
        return "\n".join(out)

    def __str__(self) -> str:
        return self.to_text()


def _param_locator(policy):
    """index in θ -> 'W1[2,3]' style name."""
    shapes = policy.param_shapes()
    bounds = []
    pos = 0
    for name, shape in shapes.items():
        size = int(np.prod(shape)) if shape else 1
        bounds.append((pos, pos + size, name, shape))
        pos += size

    def locate(i: int) -> str:
        for s, e, name, shape in bounds:
            if s <= i < e:
                idx = np.unravel_index(i - s, shape)
                return f"{name}[{','.join(str(int(j)) for j in idx)}]"
        return f"[{i}]"

    return locate


def _compare_float(ref: np.ndarray, cand: np.ndarray, rtol: float, atol: float, locate=None,
                   scale: float | None = None):
    """(max_abs, max_rel, ok, where) under the norm-wise rule; NaN/inf must match in place.

    ``scale`` overrides max|ref| (CG's sequences are judged on the scale of the whole sequence).
    """
    ref = np.asarray(ref, dtype=np.float64)
    cand = np.asarray(cand, dtype=np.float64)
    if ref.shape != cand.shape:
        return math.inf, math.inf, False, f"shape {cand.shape} vs reference {ref.shape}"
    if ref.size == 0:
        return 0.0, 0.0, True, ""
    same_nonfinite = (~np.isfinite(ref)) & (~np.isfinite(cand)) & ((ref == cand) | (np.isnan(ref) & np.isnan(cand)))
    diff = np.where(same_nonfinite, 0.0, np.abs(cand - ref))
    diff = np.where(np.isnan(diff), np.inf, diff)
    if scale is None:
        scale = _scale(ref)
    flat = diff.reshape(-1)
    k = int(np.argmax(flat))
    max_abs = float(flat[k])
    max_rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else math.inf)
    ok = max_abs <= atol + rtol * scale
    where = ""
    if max_abs > 0:
        if locate is not None:
            where = locate(k)
        elif ref.ndim >= 1 and ref.size > 1:
            where = f"[{','.join(str(int(j)) for j in np.unravel_index(k, ref.shape))}]"
        if not math.isfinite(max_abs):
            where = (where + " " if where else "") + "(non-finite mismatch)"
    return max_abs, max_rel, bool(ok), where


def _scale(arr) -> float:
    """max|a| over the finite entries (0 for none)."""
    a = np.asarray(arr, dtype=np.float64)
    finite = np.abs(a[np.isfinite(a)])
    return float(finite.max()) if finite.size else 0.0


def compare_traces(reference: Trace, candidate: Trace, rtol: float = DEFAULT_RTOL,
                   atol: float = DEFAULT_ATOL) -> Report:
    """Compare ``candidate`` with ``reference``, quantity by quantity.

    Rows come in the order the update computes things: inputs, log-probs at
    θ_old, advantages used, surrogate, g, then CG (each Fisher product
    interleaved with the iterate it produces), x, (F+λI)x, xᵀ(F+λI)x, β, the
    full step, each line-search try (fraction, KL, improvement, expected
    improvement, ratio, decisions), the accepted index, θ_new, the final KL,
    surrogate and surrogate change, the status.  An
    output the candidate did not record is ``skipped``; an item present in one
    trace and not the other (e.g. an extra CG iteration) fails.

    Parameters
    ----------
    reference, candidate : Trace
    rtol, atol : float
        Norm-wise test ``max|c − r| ≤ atol + rtol·max|r|`` per quantity.
    """
    if not (rtol >= 0 and atol >= 0 and math.isfinite(rtol) and math.isfinite(atol)):
        raise ValueError(f"rtol and atol must be finite and >= 0, got {rtol!r}, {atol!r}")
    R, C = reference.arrays, candidate.arrays
    rows: list[Row] = []
    try:
        locate_p = _param_locator(reference.policy)
    except ValueError:
        locate_p = None

    def add_float(name, desc, r, c, locate=None, scale=None):
        if c is None:
            rows.append(Row(name, desc, tuple(np.shape(r)), math.nan, math.nan, "skipped", "not recorded"))
            return
        if r is None:
            rows.append(Row(name, desc, tuple(np.shape(c)), math.inf, math.inf, "FAIL", "not in the reference"))
            return
        a, rel, ok, where = _compare_float(r, c, rtol, atol, locate, scale)
        rows.append(Row(name, desc, tuple(np.shape(r)), a, rel, "ok" if ok else "FAIL", where))

    def add_exact(name, desc, r, c):
        if c is None:
            rows.append(Row(name, desc, tuple(np.shape(r)), math.nan, math.nan, "skipped", "not recorded", True))
            return
        if r is None:
            rows.append(Row(name, desc, tuple(np.shape(c)), math.inf, math.inf, "FAIL", "not in the reference", True))
            return
        r_a, c_a = np.asarray(r), np.asarray(c)
        if r_a.shape != c_a.shape:
            rows.append(Row(name, desc, r_a.shape, math.inf, math.inf, "FAIL",
                            f"shape {c_a.shape} vs reference {r_a.shape}", True))
            return
        n_diff = int(np.sum(r_a != c_a)) if r_a.dtype.kind != "U" else int(r_a != c_a)
        where = "" if n_diff == 0 else (f"candidate {c_a.tolist()!r}, reference {r_a.tolist()!r}")
        rows.append(Row(name, desc, r_a.shape, float(n_diff), float(n_diff), "ok" if n_diff == 0 else "FAIL",
                        where, True))

    def key(name, k, desc, locate=None):
        add_float(name, desc, R.get(k), C.get(k), locate)

    def item(arr_dict, k, i):
        a = arr_dict.get(k)
        if a is None or i >= a.shape[0]:
            return None
        return a[i]

    def add_item(name, desc, k, i, locate=None, exact=False):
        r, c = item(R, k, i), item(C, k, i)
        if c is None and k in C:
            c_missing = True
        else:
            c_missing = False
        if r is None and c is None:
            return
        if c_missing:
            rows.append(Row(name, desc, tuple(np.shape(r)), math.inf, math.inf, "FAIL", "missing in the candidate", exact))
        elif exact:
            add_exact(name, desc, r, c)
        else:
            # CG computes its sequences to an accuracy relative to the start of the
            # sequence, not to their (decaying) late members: judge each member on the
            # scale of the whole reference sequence.
            add_float(name, desc, r, c, locate, _scale(R[k]) if k in _CG_SEQUENCES and k in R else None)

    # inputs: a candidate computed from other inputs cannot be compared
    for k in ("theta_old", "obs", "act", "adv", "logp_old", "cg_x0"):
        if k in R or k in C:
            if np.asarray(R.get(k, C.get(k))).dtype.kind in "iu":
                add_exact(f"input.{k}", INPUT_KEYS[k][0], R.get(k), C.get(k))
            else:
                add_float(f"input.{k}", INPUT_KEYS[k][0], R.get(k), C.get(k), locate_p if k in ("theta_old", "cg_x0") else None)
    n_loc = (lambda i: f"n={i}")
    key("logp", "logp", OUTPUT_KEYS["logp"], n_loc)
    key("adv_used", "adv_used", OUTPUT_KEYS["adv_used"], n_loc)
    add_exact("adv_std_zero", OUTPUT_KEYS["adv_std_zero"], R.get("adv_std_zero"), C.get("adv_std_zero"))
    key("surrogate_before", "surrogate_before", OUTPUT_KEYS["surrogate_before"])
    key("entropy", "entropy", OUTPUT_KEYS["entropy"])
    key("g", "g", OUTPUT_KEYS["g"], locate_p)

    # CG: Fisher products interleaved with the iterates they produce.
    off = 1 if "cg_x0" in R else 0
    n_prod = max(R.get("fisher_v", np.zeros((0,))).shape[0], C.get("fisher_v", np.zeros((0,))).shape[0])
    n_it = max(R.get("cg_iterates", np.zeros((0,))).shape[0], C.get("cg_iterates", np.zeros((0,))).shape[0])
    if off:
        add_item("fisher[0].v", "x₀ (CG start)", "fisher_v", 0, locate_p)
        add_item("fisher[0].Fv", "(F+λI)x₀", "fisher_Fv", 0, locate_p)
    add_item("cg.r[0]", "‖r₀‖ = ‖g − (F+λI)x₀‖", "cg_residual_norms", 0)
    for i in range(max(n_prod - off, n_it)):
        k = i + off
        add_item(f"fisher[{k}].v", f"CG direction p_{i}", "fisher_v", k, locate_p)
        add_item(f"fisher[{k}].Fv", f"(F+λI)p_{i}", "fisher_Fv", k, locate_p)
        add_item(f"cg.pAp[{i}]", f"p_{i}ᵀ(F+λI)p_{i}", "cg_pAp", i)
        add_item(f"cg.x[{i + 1}]", f"CG iterate x_{i + 1}", "cg_iterates", i, locate_p)
        add_item(f"cg.r[{i + 1}]", f"‖r_{i + 1}‖", "cg_residual_norms", i + 1)
    add_exact("cg.n_iter", OUTPUT_KEYS["cg_n_iter"], R.get("cg_n_iter"), C.get("cg_n_iter"))
    add_exact("cg.converged", OUTPUT_KEYS["cg_converged"], R.get("cg_converged"), C.get("cg_converged"))
    add_exact("cg.breakdown", OUTPUT_KEYS["cg_breakdown"], R.get("cg_breakdown"), C.get("cg_breakdown"))
    key("step_dir", "step_dir", OUTPUT_KEYS["step_dir"], locate_p)
    key("Fx", "Fx", OUTPUT_KEYS["Fx"], locate_p)
    key("xFx", "xFx", OUTPUT_KEYS["xFx"])
    key("beta", "beta", OUTPUT_KEYS["beta"])
    key("full_step", "full_step", OUTPUT_KEYS["full_step"], locate_p)
    key("expected_improvement", "expected_improvement", OUTPUT_KEYS["expected_improvement"])

    n_try = max([a.shape[0] for d in (R, C) for k, a in d.items() if k in _LS_FLOAT + _LS_BOOL] + [0])
    for j in range(n_try):
        add_item(f"ls[{j}].fraction", f"fraction α^{j} of try {j}", "ls_fraction", j)
        add_item(f"ls[{j}].kl", f"KL of try {j}", "ls_kl", j)
        add_item(f"ls[{j}].improvement", f"L(θ_{j}) − L(θ_old) of try {j}", "ls_improvement", j)
        add_item(f"ls[{j}].expected_improvement", f"α^{j} βgᵀx of try {j}", "ls_expected_improvement", j)
        add_item(f"ls[{j}].ratio", f"improvement / expected improvement of try {j}", "ls_ratio", j)
        r_dec = [item(R, k, j) for k in _LS_BOOL]
        c_dec = [item(C, k, j) for k in _LS_BOOL]
        if all(v is None for v in c_dec) and not any(k in C for k in _LS_BOOL):
            c_arr = None
        else:
            c_arr = np.array([bool(v) if v is not None else False for v in c_dec])
        r_arr = None if all(v is None for v in r_dec) else np.array([bool(v) for v in r_dec])
        if c_arr is not None and r_arr is not None and any(v is None for v in c_dec):
            rows.append(Row(f"ls[{j}].decision", f"tests of try {j} (finite, kl_ok, improvement_ok, accepted)",
                            (4,), math.inf, math.inf, "FAIL", "missing in the candidate", True))
        else:
            add_exact(f"ls[{j}].decision", f"tests of try {j} (finite, kl_ok, improvement_ok, accepted)", r_arr, c_arr)
    add_exact("accepted_index", OUTPUT_KEYS["accepted_index"], R.get("accepted_index"), C.get("accepted_index"))
    key("theta_new", "theta_new", OUTPUT_KEYS["theta_new"], locate_p)
    key("kl", "kl", OUTPUT_KEYS["kl"])
    key("surrogate_after", "surrogate_after", OUTPUT_KEYS["surrogate_after"])
    key("surrogate_change", "surrogate_change", OUTPUT_KEYS["surrogate_change"])
    r_status, c_status = reference.status, candidate.status
    add_exact("status", "outcome of the update", None if r_status is None else np.array(r_status),
              None if c_status is None else np.array(c_status))

    header = [f"reference: {reference.meta.get('producer', '?')}; candidate: {candidate.meta.get('producer', '?')}"]
    spec = reference.meta.get("policy", {})
    if spec:
        arch = "-".join(str(s) for s in [spec.get("obs_dim"), *spec.get("hidden_sizes", []), spec.get("out_dim")])
        header.append(f"policy: {spec.get('kind')} {arch} {spec.get('activation')}; "
                      f"preset: {candidate.preset or reference.preset}; N = {R['obs'].shape[0] if 'obs' in R else '?'}")
    return Report(rows, rtol, atol, header)


def _preset_note(trace: Trace) -> str | None:
    name = trace.preset
    if not name or name not in PRESETS:
        return None
    want = TRPOConfig.preset(name).to_dict()
    have = trace.meta["config"]
    diff = sorted(k for k in want if k in have and want[k] != have[k])
    if not diff:
        return None
    return (f"note: the config differs from preset {name!r} in " +
            ", ".join(f"{k}={have[k]!r} (preset {want[k]!r})" for k in diff))


def check_trace(path_or_trace, rtol: float = DEFAULT_RTOL, atol: float = DEFAULT_ATOL) -> Report:
    """Recompute the update from a trace's inputs and compare its outputs with trpo_ref's.

    Parameters
    ----------
    path_or_trace : str, Path or Trace
    rtol, atol : float
        See :func:`compare_traces` and :data:`DEFAULT_RTOL`.

    Returns
    -------
    Report
        ``report.ok``, ``report.first_failure`` and one row per quantity.
    """
    trace = path_or_trace if isinstance(path_or_trace, Trace) else load_trace(path_or_trace)
    reference = recompute(trace)
    report = compare_traces(reference, trace, rtol, atol)
    if isinstance(path_or_trace, (str, os.PathLike)):
        report.header.insert(0, f"trace: {path_or_trace} (format v{trace.meta['format_version']}, "
                                f"status {trace.status})")
    note = _preset_note(trace)
    if note:
        report.notes.append(note)
    # Consistency of the batch with the weights: on-policy data has logp_old = log π_θold(a|s).
    dev = np.abs(reference.arrays["logp"] - trace.arrays["logp_old"].astype(np.float64))
    worst = float(dev.max())
    if worst > 1e-6 * max(1.0, float(np.abs(reference.arrays["logp"]).max())):
        report.notes.append(
            f"note: the batch's logp_old differs from trpo_ref's log π_θold(a|s) by up to {worst:.3e} "
            f"(sample {int(dev.argmax())}); if the batch was sampled from these weights, the weights, the "
            "layout or the activation do not match the policy that sampled it (float32 sampling alone gives ~1e-6)")
    return report


# convenience for file-based comparison
def compare_files(reference_path, candidate_path, rtol: float = DEFAULT_RTOL, atol: float = DEFAULT_ATOL) -> Report:
    """:func:`compare_traces` on two trace files."""
    ref, cand = load_trace(reference_path), load_trace(candidate_path)
    report = compare_traces(ref, cand, rtol, atol)
    report.header.insert(0, f"reference: {reference_path}; candidate: {candidate_path}")
    return report

