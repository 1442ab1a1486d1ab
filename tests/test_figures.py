"""The figures of docs/derivations.md are current: their numbers, recomputed from the library, match the committed ones.

``scripts/make_figures.py`` computes every figure's numbers with ``trpo_ref``
and stores them in ``docs/img/figures.json`` next to the PNGs it draws.  This
test recomputes the numbers (about a second, no matplotlib needed) and
compares them with the stored ones; a change in the library that would move a
figure fails here until ``python scripts/make_figures.py`` is run again.  It
also checks that each figure file exists and that the page shows it.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load_script():
    spec = importlib.util.spec_from_file_location("make_figures", ROOT / "scripts" / "make_figures.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


mf = _load_script()


@pytest.fixture(scope="module")
def fresh():
    return mf.compute()


@pytest.mark.parametrize("name", list(mf.FIGURES))
def test_figure__numbers_match_the_committed_figure(name, fresh):
    stored = json.loads(mf.DATA.read_text())
    assert name in stored, f"docs/img/figures.json has no {name!r}: run python scripts/make_figures.py"
    a, b = stored[name], fresh[name]
    assert sorted(a) == sorted(b), f"{name}: keys changed: run python scripts/make_figures.py"
    for key in a:
        x, y = np.asarray(mf._flat(a[key]), float), np.asarray(mf._flat(b[key]), float)
        assert x.shape == y.shape, f"{name}.{key}: shape changed: run python scripts/make_figures.py"
        # rtol 1e-7: the numbers are seeded float64 computations; only BLAS summation order may differ
        # (~1e-14 relative); atol 1e-10 for entries that are 0 in exact arithmetic (CG residuals, KL at 0)
        assert np.allclose(y, x, rtol=1e-7, atol=1e-10), (
            f"{name}.{key} no longer matches the committed figure: run python scripts/make_figures.py")


@pytest.mark.parametrize("name", list(mf.FIGURES))
def test_figure__file_exists_and_page_shows_it(name):
    png = mf.IMG / f"fig_{name}.png"
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
