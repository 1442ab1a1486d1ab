"""Smoke tests of the benchmark scripts (scripts/bench.py, bench_gpu.py, bench_scale.py) on tiny sizes.

Each script runs as a user runs it (``python scripts/bench.py --quick ...``) and the tests read what it
wrote.  They check that the harness runs and that it compares like with like (the matmul floor does the
FVP's products, SB3-contrib's and JAX's products on our weights are ours); they time nothing that matters.
"""

from __future__ import annotations

import importlib.util
import json
import math
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"
DOCS = ROOT / "docs"
#: The sizes ``bench.py --quick`` runs at: batch 64 of SB3-contrib's Hopper policy (obs 17, 64x64 tanh, act 6).
BATCH, OBS_DIM, HIDDEN, ACT_DIM = 64, 17, 64, 6


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _script(name: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPTS / name), *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def _docs_state():
    return {p: p.stat().st_mtime_ns for p in DOCS.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def quick():
    """``bench.py --quick`` in both precisions with both JAX heads: (result JSON, Markdown, stdout, docs untouched)."""
    before = _docs_state()
    proc = _script("bench.py", "--quick", "--dtypes", "float64", "float32", "--jax-kinds", "gaussian", "categorical")
    assert proc.returncode == 0, proc.stderr[-4000:]
    untouched = _docs_state() == before
    out, md = (Path(p) for p in re.search(r"^wrote (\S+) and (\S+)$", proc.stdout, re.M).groups())
    result, text = json.loads(out.read_text()), md.read_text()
    tmp = out.parent  # the quick run's own temporary directory
    if tmp.name.startswith("trpo_ref_bench_quick_") and tmp.parent == Path(tempfile.gettempdir()):
        shutil.rmtree(tmp)
    return result, text, proc.stdout, untouched, (out, md)


def test_bench_quick__writes_to_a_temp_dir_never_docs(quick):
    # issue 14: a --quick run must not overwrite the committed tables
    *_, untouched, written = quick
    assert untouched
    for path in written:
        assert not path.resolve().is_relative_to(DOCS.resolve()), path
    before = _docs_state()
    proc = _script("bench.py", "--quick", "--no-sb3", "--no-jax", "--only-jax", "--md", str(DOCS / "x.md"))
    assert proc.returncode == 2 and "--quick never writes into docs/" in proc.stderr, proc.stderr[-2000:]
    assert _docs_state() == before


def test_interleaved__median_and_quartiles_of_every_timed_callable(quick):
    result = quick[0]
    timed = [(row["dtype"], k, v) for row in result["policy"] + result["jax"] for k, v in row.items()
             if isinstance(v, dict) and "p25_s" in v]
    # every group of every row: 9+ per policy row (2 dtypes); 5 per JAX row (2 dtypes x 2 heads) where JAX is
    # installed (the 'jax' extra: not in the CI command, whose policy rows alone must then be complete)
    assert bool(result["jax"]) == _installed("jax")
    assert len(timed) >= 2 * 9 + (4 * 5 if result["jax"] else 0)
    for dtype, key, t in timed:
        # --quick: 3 repetitions after 1 warm-up; the critic fits a quarter of that, at least 5
        assert t["reps"] == (5 if key.endswith("critic_fit") else 3), (dtype, key, t)
        assert 0 < t["p25_s"] <= t["median_s"] <= t["p75_s"], (dtype, key, t)


def test_fvp_matmul_count__matches_mlp_py(quick):
    for row in quick[0]["policy"]:
        # 3 layers: jvp h0Ẇ0, h1Ẇ1, ḣ1W1, h2Ẇ2, ḣ2W2; vjp h2ᵀz̄2, z̄2W2ᵀ, h1ᵀz̄1, z̄1W1ᵀ, h0ᵀz̄0
        assert row["fvp_matmuls"] == 10
        # FLOPs: 2 per MAC; obs 17, 64x64, act 6 -> about 40 kFLOP per sample
        per_sample = 2 * (2 * OBS_DIM * HIDDEN + 4 * HIDDEN * HIDDEN + 4 * HIDDEN * ACT_DIM)
        assert row["fvp_flops"] == BATCH * per_sample


def test_bench_policy__every_group_of_both_precisions(quick):
    result, md = quick[0], quick[1]
    assert sorted(row["dtype"] for row in result["policy"]) == ["float32", "float64"]
    for row in result["policy"]:
        for key in ("fvp", "matmul_floor", "fisher_setup", "cg10", "cg15", "trpo_step", "critic_fit"):
            assert row[key]["median_s"] > 0
        assert row["trpo_step_status"] in ("accepted", "line_search_failed")
        assert f"| {BATCH} | {row['dtype']} |" in md


def test_sb3_fvp__is_ours_on_the_same_weights(quick):
    if not _installed("sb3_contrib"):
        pytest.skip("sb3-contrib (the 'bench' extra) is not installed")
    (row,) = [r for r in quick[0]["policy"] if r["dtype"] == "float64"]
    # SB3 averages its KL over the act_dim action dimensions too (bench.py multiplies its F by act_dim);
    # float64, a few hundred FLOPs per entry summed in different orders: rounding level
    assert row["sb3_fvp_rel_diff"] <= 1e-10
    assert row["sb3_fvp"]["median_s"] > 0 and row["sb3_policy_step"]["median_s"] > 0


def test_bench_rollout__cartpole_tiny(quick):
    if not _installed("gymnasium"):
        pytest.skip("gymnasium is not installed")
    (r,) = quick[0]["rollout"]
    assert r["env"] == "CartPole-v1" and r["steps"] == 50
    assert r["ours_steps_per_s"] > 0 and r["env_only_steps_per_s"] > 0


def test_machine_line__names_cpu_and_blas_kernel(quick):
    m, md = quick[0]["machine"], quick[1]
    line = next(ln for ln in md.splitlines() if ln.startswith("Machine: "))  # the line heading the first table
    assert m["cpu"] in line and "BLAS" in line and "thread" in line
    pools = m["threadpool"] if isinstance(m["threadpool"], list) else []
    for p in pools:
        assert str(p["architecture"]) in line  # the kernel OpenBLAS chose, e.g. SkylakeX or Haswell


def test_jax_fvp__equals_ours_on_the_same_weights(quick):
    if not _installed("jax"):
        pytest.skip("JAX (the 'jax' extra) is not installed")
    rows = {(r["kind"], r["dtype"]): r for r in quick[0]["jax"]}
    assert set(rows) == {(k, d) for k in ("gaussian", "categorical") for d in ("float64", "float32")}
    for kind in ("gaussian", "categorical"):
        # float64, the same sums in other orders (XLA vs BLAS): rounding level
        assert rows[kind, "float64"]["rel_diff"] <= 1e-10, kind
        assert rows[kind, "float64"]["jax_loop_k"]["median_s"] > 0


def test_bench_gpu__runs_on_cpu_tiny(tmp_path):
    out = tmp_path / "gpu.json"
    proc = _script("bench_gpu.py", "--device", "cpu", "--quick", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-4000:]
    res = json.loads(out.read_text())
    assert len(res["rows"]) == 2  # batch 256, width 16, float32 and float64
    for row in res["rows"]:
        assert "error" not in row, row
        assert row["fvp_flop_per_s"] > 0
    assert res["matmul_flop_per_s"]["float64"] > 0
    assert "| 256 | 16 | float64 |" in proc.stdout


def test_bench_scale__one_point():
    proc = _script("bench_scale.py", "--point", "300", "float64", "fvp", "--budget", "0.05")
    assert proc.returncode == 0, proc.stderr[-4000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    assert r["median_s"] > 0 and r["rss_peak_mib"] >= r["rss_before_mib"] > 0
    assert 0 < r["temporaries_blocked_mib"] <= r["temporaries_unblocked_mib"] + 0.05


def test_bench_scale__interleaved_timing_and_its_slope():
    proc = _script("bench_scale.py", "--timing", "float64", "fvp", "2", "10000", "40000")
    assert proc.returncode == 0, proc.stderr[-4000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    t1, t2 = r["times_s"]["10000"], r["times_s"]["40000"]
    assert len(t1) == len(t2) == 2 and min(t1 + t2) > 0
    # one slope per round: the least-squares line through two points is the line through them
    # (np.polyfit on two points: rounding ~1e-15 relative)
    expected = [math.log(b / a) / math.log(4.0) for a, b in zip(t1, t2)]
    assert r["slopes"] == pytest.approx(expected, rel=1e-12, abs=1e-12)
