"""One real update of tianshou 2.0.1 / skrl 2.1.1 checked through the bridge (skipped when not installed).

The libraries are not test dependencies; scripts/check_real_libraries.py is the tool, this runs it on the
smallest settings that still show what docs/oracle.md and docs/presets.md report.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("check_real_libraries", ROOT / "scripts" / "check_real_libraries.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
def test_skrl__agrees_until_it_compounds_its_expected_improvement():
    pytest.importorskip("skrl")
    pytest.importorskip("torch")
    mod = _script()
    report = mod.skrl_case("gaussian", "float64", n=256, max_kl=0.01).check(drift=False)
    assert report.ok, report.to_text("failures")
    # δ = 10: skrl backtracks twice; its try-2 expected improvement is 0.5^3 βgᵀx instead of 0.5^2 βgᵀx
    rec = mod.skrl_case("gaussian", "float64", n=256, max_kl=10.0)
    report = rec.check(drift=False)
    assert int(rec.trace()["accepted_index"]) == 2
    assert report.first_failure.name == "ls[2].expected_improvement"
    assert report.first_failure.max_rel == pytest.approx(0.5, rel=1e-12)
    assert [r.name for r in report.failures] == ["ls[2].expected_improvement"]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["gaussian", "categorical"])
def test_tianshou__float32_update_agrees_stagewise(kind):
    pytest.importorskip("tianshou")
    pytest.importorskip("torch")
    report = _script().tianshou_case(kind, "float32", n=256).check(drift=False)
    assert report.ok, report.to_text("failures")
    assert sys.modules.get("torch") is not None
