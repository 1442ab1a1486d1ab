r"""The one module that knows array backends exist.

Everything else in :mod:`trpo_ref` is written against the Python array API
standard: a function takes arrays, asks :func:`namespace` for their namespace
``xp`` and uses only standard calls.  This module provides

============================  ===============================================
:func:`namespace`             the array namespace of some arrays (array_api_compat)
:func:`get_namespace`         namespace and device for a device name (``"cpu"``, ``"cuda"``)
:func:`from_numpy`            the one host -> device path
:func:`to_numpy`              the one device -> host path
:func:`to_float`              a 0-d device array as a Python float (device -> host)
:func:`host_rng`              the host random generator (``numpy.random.Generator``)
:func:`resolve_dtype`         dtype policy: float64 by default, float32 allowed
============================  ===============================================

Random numbers are always drawn on the host with NumPy and moved with
:func:`from_numpy`, so every backend sees identical draws.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import array_api_compat.numpy as _xp_numpy
from array_api_compat import array_namespace
from array_api_compat import device as _device_of

__all__ = [
    "DEFAULT_DTYPE",
    "namespace",
    "get_namespace",
    "device_of",
    "from_numpy",
    "to_numpy",
    "to_float",
    "host_rng",
    "resolve_dtype",
    "is_numpy",
    "host_like",
]

#: The dtype used when none is asked for.  float64 keeps finite-difference and
#: oracle comparisons at rounding level; float32 is allowed for speed.
DEFAULT_DTYPE = "float64"

_ALLOWED_DTYPES = ("float32", "float64")


def namespace(*arrays: Any):
    """Array namespace shared by ``arrays`` (NumPy, CuPy, array_api_strict, ...).

    Python scalars and ``None`` are ignored.  Plain NumPy arrays take a fast
    path (the rollout asks once per env step, where the general look-up costs
    more than the policy's matrix products).
    """
    for a in arrays:  # the common case first, without building a list
        if type(a) is not np.ndarray and a is not None and not isinstance(a, (int, float, bool)):
            break
    else:
        return _xp_numpy
    return array_namespace(*[a for a in arrays if a is not None and not isinstance(a, (int, float, bool))])


def host_like(x_host: np.ndarray, like: Any):
    """Host data ``x_host`` on ``like``'s backend, device and dtype (:func:`from_numpy`).

    A plain NumPy ``like`` takes a fast path (the rollout's per-step draw calls this
    once per env step): no namespace or device look-up, no copy when the dtype matches.
    """
    if type(like) is np.ndarray:
        return x_host if x_host.dtype == like.dtype else x_host.astype(like.dtype)
    return from_numpy(x_host, namespace(like), device_of(like), like.dtype)


def device_of(x: Any):
    """Device an array lives on."""
    return _device_of(x)


def is_numpy(xp) -> bool:
    """True when ``xp`` is (the compat wrapper of) NumPy."""
    return "numpy" in getattr(xp, "__name__", "")


def get_namespace(device: str | None = None):
    """Namespace and device object for a device name.

    Parameters
    ----------
    device : {"cpu", "cuda", None}
        ``None`` and ``"cpu"`` give NumPy; ``"cuda"`` (or ``"cuda:K"``) gives
        CuPy on that GPU.

    Returns
    -------
    xp, dev
        The array namespace and the device to pass to ``xp.asarray``.

    Raises
    ------
    ValueError
        Unknown device name, or ``"cuda"`` without CuPy or without a GPU.
    """
    if device is None or device == "cpu":
        import array_api_compat.numpy as xp_np

        return xp_np, "cpu"
    if isinstance(device, str) and (device == "cuda" or device.startswith("cuda:")):
        try:
            import cupy  # noqa: F401
            import array_api_compat.cupy as xp_cp
        except ImportError as exc:  # pragma: no cover - depends on the machine
            raise ValueError(
                "device='cuda' needs CuPy: install the 'gpu' extra (pip install 'trpo-ref[gpu]')"
            ) from exc
        try:
            n_gpu = cupy.cuda.runtime.getDeviceCount()
        except Exception as exc:  # pragma: no cover - depends on the machine
            raise ValueError(f"device='cuda' but CuPy finds no usable GPU ({exc})") from exc
        index = int(device.split(":")[1]) if ":" in device else 0
        if not 0 <= index < n_gpu:  # pragma: no cover - depends on the machine
            raise ValueError(f"device={device!r} but only {n_gpu} GPU(s) are visible")
        return xp_cp, cupy.cuda.Device(index)
    raise ValueError(f"device must be 'cpu' or 'cuda[:K]', got {device!r}")


def resolve_dtype(xp, dtype: Any = None):
    """The floating dtype object of ``xp`` named by ``dtype`` (default float64).

    Raises ``ValueError`` for anything but float32 / float64.
    """
    if dtype is None:
        dtype = DEFAULT_DTYPE
    if isinstance(dtype, str):
        name = dtype
    elif dtype == xp.float64:
        name = "float64"
    elif dtype == xp.float32:
        name = "float32"
    else:
        name = repr(dtype)
    if name not in _ALLOWED_DTYPES:
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    return getattr(xp, name)


def from_numpy(x: Any, xp=None, device: Any = None, dtype: Any = None):
    """Host -> device: the one path by which host data enters a backend.

    Parameters
    ----------
    x : array_like
        Host data (NumPy array, list or scalar).
    xp : namespace, optional
        Target namespace; NumPy when omitted.
    device : optional
        Target device of ``xp``.
    dtype : optional
        Target dtype of ``xp``; the host dtype is kept when omitted.
    """
    if xp is None:
        import array_api_compat.numpy as xp
    x = np.asarray(x)
    if is_numpy(xp):
        out = x if dtype is None else x.astype(dtype, copy=False)
        return out
    if getattr(xp, "__name__", "").startswith("array_api_strict"):
        # array_api_strict refuses to convert across devices implicitly: build on
        # its default device, then move explicitly.
        arr = xp.asarray(x, dtype=dtype)
        return arr if device is None else arr.to_device(device)
    return xp.asarray(x, dtype=dtype, device=device)


def to_numpy(x: Any) -> np.ndarray:
    """Device -> host: the one path by which device data leaves a backend."""
    if isinstance(x, np.ndarray):
        return x
    mod = type(x).__module__
    if mod.startswith("cupy"):
        return x.get()
    if mod.startswith("array_api_strict"):
        import array_api_strict

        return np.asarray(x.to_device(array_api_strict.Device("CPU_DEVICE")))
    return np.asarray(x)


def to_float(x: Any) -> float:
    """A 0-d (or size-1) array as a Python float, through :func:`to_numpy`."""
    if isinstance(x, (float, int)):
        return float(x)
    return float(to_numpy(x).reshape(()))


def host_rng(seed: int | np.random.Generator | None = None) -> np.random.Generator:
    """The host random generator; a Generator passed in is returned as is."""
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(seed)
