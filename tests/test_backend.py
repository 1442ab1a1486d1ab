"""trpo_ref.backend: namespaces, the host <-> device paths, dtype policy, devices."""

from __future__ import annotations

import numpy as np
import pytest

from trpo_ref import backend


def test_from_numpy_to_numpy__round_trip_exact_on_every_backend(xb):
    host = np.random.default_rng(0).standard_normal((3, 4))
    dev = backend.from_numpy(host, xb.xp, xb.device, xb.xp.float64)
    assert backend.namespace(dev) is not None
    assert backend.device_of(dev) == xb.device
    back = backend.to_numpy(dev)
    assert isinstance(back, np.ndarray)
    np.testing.assert_array_equal(back, host)  # a transfer, no arithmetic: bit for bit
    assert backend.to_float(xb.xp.sum(dev)) == pytest.approx(host.sum(), rel=1e-15)


def test_namespace__numpy_fast_path_is_the_compat_namespace():
    import array_api_compat

    a = np.zeros(3)
    assert backend.namespace(a, None, 1.0) is array_api_compat.array_namespace(a)
    xs = pytest.importorskip("array_api_strict")
    assert backend.namespace(xs.asarray([1.0])) is xs
    with pytest.raises(TypeError):
        backend.namespace(np.zeros(2), xs.asarray([1.0]))  # mixed backends are refused


def test_resolve_dtype__float64_default_float32_allowed_others_refused(xb):
    assert backend.resolve_dtype(xb.xp) == xb.xp.float64
    assert backend.resolve_dtype(xb.xp, "float32") == xb.xp.float32
    assert backend.resolve_dtype(xb.xp, xb.xp.float32) == xb.xp.float32
    with pytest.raises(ValueError, match="dtype must be"):
        backend.resolve_dtype(xb.xp, "float16")
    with pytest.raises(ValueError, match="dtype must be"):
        backend.resolve_dtype(xb.xp, xb.xp.int32)


def test_get_namespace__cpu_and_clear_errors():
    xp, dev = backend.get_namespace("cpu")
    assert dev == "cpu" and xp is backend.get_namespace(None)[0]
    with pytest.raises(ValueError, match="device must be"):
        backend.get_namespace("tpu")
    try:
        import cupy  # noqa: F401
    except ImportError:
        with pytest.raises(ValueError, match="CuPy"):
            backend.get_namespace("cuda")


def test_host_rng__seed_or_generator():
    g = np.random.default_rng(5)
    assert backend.host_rng(g) is g
    assert backend.host_rng(3).standard_normal() == np.random.default_rng(3).standard_normal()
