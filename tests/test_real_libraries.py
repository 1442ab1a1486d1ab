"""One real update of tianshou 2.0.1 / skrl 2.1.1 checked through the bridge (skipped when not installed).

The libraries are not test dependencies; scripts/check_real_libraries.py is the tool, and this runs it as a
user does (``python scripts/check_real_libraries.py --lib ... --save DIR``) on the smallest settings that
still show what docs/oracle.md and docs/presets.md report, then checks the traces it saved.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from trpo_ref.oracle import check_trace
from trpo_ref.trace import load_trace

ROOT = Path(__file__).resolve().parents[1]


def _needs(*modules):
    for m in modules:
        if importlib.util.find_spec(m) is None:
            pytest.skip(f"{m} is not installed")


def _check_real_libraries(save_dir: Path, *args: str) -> str:
    """Run the script, saving every candidate trace in ``save_dir``; its stdout (the reports)."""
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "check_real_libraries.py"), *args,
                           "--save", str(save_dir)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc.stdout


@pytest.mark.slow
def test_skrl__agrees_until_it_compounds_its_expected_improvement(tmp_path):
    _needs("skrl", "torch")
    common = ("--lib", "skrl", "--kind", "gaussian", "--dtype", "float64", "--n", "256")
    out = _check_real_libraries(tmp_path / "small", *common, "--max-kl", "0.01")
    assert "=== skrl gaussian float64, δ = 0.01: status accepted" in out, out
    report = check_trace(tmp_path / "small" / "skrl-gaussian-float64.npz", drift=False)
    assert report.ok, report.to_text("failures")
    # δ = 10: skrl backtracks twice; its try-2 expected improvement is 0.5^3 βgᵀx instead of 0.5^2 βgᵀx
    out = _check_real_libraries(tmp_path / "large", *common, "--max-kl", "10")
    path = tmp_path / "large" / "skrl-gaussian-float64.npz"
    assert int(load_trace(path)["accepted_index"]) == 2
    report = check_trace(path, drift=False)
    assert report.first_failure.name == "ls[2].expected_improvement"
    assert report.first_failure.max_rel == pytest.approx(0.5, rel=1e-12)
    assert [r.name for r in report.failures] == ["ls[2].expected_improvement"]
    assert "ls[2].expected_improvement" in out  # the script's own report names it


@pytest.fixture(scope="module")
def tianshou_traces(tmp_path_factory):
    _needs("tianshou", "torch")
    save = tmp_path_factory.mktemp("tianshou")
    out = _check_real_libraries(save, "--lib", "tianshou", "--kind", "gaussian", "--kind", "categorical",
                                "--dtype", "float32", "--n", "256")
    return save, out


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["gaussian", "categorical"])
def test_tianshou__float32_update_agrees_stagewise(kind, tianshou_traces):
    save, out = tianshou_traces
    assert f"=== tianshou {kind} float32" in out, out
    trace = load_trace(save / f"tianshou-{kind}-float32.npz")
    assert trace.dtype == "float32" and trace.policy.kind == kind
    report = check_trace(trace, drift=False)
    assert report.ok, report.to_text("failures")
