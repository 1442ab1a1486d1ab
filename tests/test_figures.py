"""The figures of docs/derivations.md are current: their numbers, recomputed from the library, match the committed ones.

``scripts/make_figures.py`` computes every figure's numbers with ``trpo_ref``
and stores them in ``docs/img/figures.json`` next to the PNGs it draws.  This
test runs ``python scripts/make_figures.py --check --numbers FILE`` as a user
would (a few seconds, no matplotlib needed): the script recomputes the numbers
and compares them with the stored ones, one verdict line per figure; a change in the library that would move a
figure fails here until ``python scripts/make_figures.py`` is run again.  It
also checks that each figure file exists and that the page shows it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
IMG = ROOT / "docs" / "img"
#: The committed figures, by the names docs/img/figures.json keeps their numbers under.
FIGURES = sorted(json.loads((IMG / "figures.json").read_text()))


@pytest.fixture(scope="module")
def check_run(tmp_path_factory):
    """``python scripts/make_figures.py --check --numbers FILE``, as a user runs it: (process, fresh numbers)."""
    numbers = tmp_path_factory.mktemp("figures") / "figures.json"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "make_figures.py"), "--check", "--numbers", str(numbers)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert numbers.is_file(), proc.stdout + proc.stderr
    return proc, json.loads(numbers.read_text())


@pytest.fixture(scope="module")
def fresh(check_run):
    return check_run[1]


def test_figures__check_passes_and_computes_every_committed_figure(check_run):
    proc, fresh = check_run
    assert sorted(fresh) == FIGURES, "figures added or removed: run python scripts/make_figures.py"
    assert proc.returncode == 0 and "figures are current" in proc.stdout, proc.stdout + proc.stderr[-2000:]


@pytest.mark.parametrize("name", FIGURES)
def test_figure__numbers_match_the_committed_figure(name, check_run):
    proc, fresh = check_run
    stored = json.loads((IMG / "figures.json").read_text())
    a, b = stored[name], fresh[name]
    assert sorted(a) == sorted(b), f"{name}: keys changed: run python scripts/make_figures.py"
    for key in a:
        x, y = np.asarray(a[key], float), np.asarray(b[key], float)
        assert x.shape == y.shape, f"{name}.{key}: shape changed: run python scripts/make_figures.py"
        # rtol 1e-7: the numbers are seeded float64 computations; only BLAS summation order may differ
        # (~1e-14 relative); atol 1e-10 for entries that are 0 in exact arithmetic (CG residuals, KL at 0)
        assert np.allclose(y, x, rtol=1e-7, atol=1e-10), (
            f"{name}.{key} no longer matches the committed figure: run python scripts/make_figures.py")
    # and the script's own verdict line for it says so
    assert f"{name}: current" in proc.stdout.splitlines(), proc.stdout


@pytest.mark.parametrize("name", FIGURES)
def test_figure__file_exists_and_page_shows_it(name):
    png = IMG / f"fig_{name}.png"
    assert png.is_file() and png.stat().st_size > 5_000
    page = (ROOT / "docs" / "derivations.md").read_text(encoding="utf-8")
    assert f"(img/fig_{name}.png)" in page


def test_figures__say_what_the_text_claims(fresh):
    """The claims docs/derivations.md makes about the figures hold for their numbers."""
    tr_ = fresh["trust_region"]
    F, v, n = np.array(tr_["F"]), np.array(tr_["vanilla"]), np.array(tr_["natural"])
    assert np.isclose(0.5 * v @ F @ v, tr_["delta"]) and np.isclose(0.5 * n @ F @ n, tr_["delta"])  # both on the ellipse
    assert tr_["gain_natural"] > tr_["gain_vanilla"]                      # natural gains more for the same model KL
    res = fresh["cg_residual"]["residual_norms"]
    assert res[10] < 1e-3 * res[0]                                         # 10 iterations capture most of it
    km = fresh["kl_model"]
    assert km["kl"][-1] > km["max_kl"] > km["model"][-1] - 1e-12           # the full step overshoots; the model does not
    mm = fresh["mm"]
    i0 = mm["t"].index(0.0) if 0.0 in mm["t"] else int(np.argmin(np.abs(mm["t"])))
    assert np.isclose(mm["bound"][i0], mm["eta"][i0])                     # the bound touches η at t = 0
    assert all(b <= e + 1e-12 for b, e in zip(mm["bound"], mm["eta"]))    # and stays below it
