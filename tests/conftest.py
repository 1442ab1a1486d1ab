"""Shared fixtures: the ``xp`` backend fixture and hypothesis profiles.

Every math test takes ``xp`` and runs on NumPy, on array_api_strict with arrays
placed on a non-default device (a hidden NumPy call or an implicit host
transfer fails there, exactly where CuPy would), and on CuPy when a GPU is
present (skipped with a reason otherwise).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

from trpo_ref import backend

settings.register_profile("dev", max_examples=40, deadline=None)
settings.register_profile(
    "ci", max_examples=60, deadline=None, derandomize=True, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("thorough", max_examples=1000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


@dataclass(frozen=True)
class Backend:
    """A namespace and the device test arrays are put on."""

    name: str
    xp: Any
    device: Any

    def asarray(self, x, dtype=None):
        """Host data onto this backend, float64 unless an integer array or ``dtype`` given."""
        x = np.asarray(x)
        if dtype is None:
            dtype = self.xp.float64 if np.issubdtype(x.dtype, np.floating) else self.xp.int64
        return backend.from_numpy(x, self.xp, self.device, dtype)

    def __str__(self) -> str:  # readable test ids
        return self.name


def _backends():
    import array_api_compat.numpy as xp_np

    out = [pytest.param(Backend("numpy", xp_np, "cpu"), id="numpy")]
    try:
        import array_api_strict as xs

        out.append(pytest.param(Backend("array_api_strict", xs, xs.Device("device1")), id="strict"))
    except ImportError:  # pragma: no cover
        out.append(pytest.param(None, id="strict", marks=pytest.mark.skip(reason="array_api_strict not installed")))
    try:
        import cupy

        cupy.cuda.runtime.getDeviceCount()
        import array_api_compat.cupy as xp_cp

        out.append(pytest.param(Backend("cupy", xp_cp, cupy.cuda.Device(0)), id="cupy"))
    except Exception as exc:  # noqa: BLE001 - any failure means no usable GPU
        out.append(pytest.param(None, id="cupy", marks=pytest.mark.skip(reason=f"no CuPy GPU available ({type(exc).__name__})")))
    return out


@pytest.fixture(params=_backends(), scope="session")
def xb(request) -> Backend:
    """The backend under test (see module docstring); stateless, so one per session."""
    return request.param


def pytest_terminal_summary(terminalreporter):
    """Print the finite-difference ledger: examples run and worst relative error per check."""
    from oracles import FD_LEDGER

    if not FD_LEDGER:
        return
    terminalreporter.section("finite-difference checks (examples, worst relative error)")
    for name, (count, worst) in sorted(FD_LEDGER.items()):
        terminalreporter.write_line(f"{name:55s} {count:6d}  {worst:.2e}")
