"""Smoke tests of the benchmark scripts (scripts/bench.py, scripts/bench_gpu.py) on tiny sizes.

They check that the harness runs and that it compares like with like (the
matmul floor does the FVP's products, SB3-contrib's product on our weights is
ours); they time nothing that matters.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def _load(name):
    if str(SCRIPTS) not in sys.path:
        sys.path.insert(0, str(SCRIPTS))
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench():
    return _load("bench")


def test_interleaved__returns_median_of_each_callable(bench):
    calls = {"a": 0, "b": 0, "setup": 0}

    def setup():
        calls["setup"] += 1

    res = bench.interleaved({"a": lambda: calls.__setitem__("a", calls["a"] + 1),
                             "b": (setup, lambda: calls.__setitem__("b", calls["b"] + 1))}, reps=5, warmup=2)
    assert calls == {"a": 7, "b": 7, "setup": 7}
    assert set(res) == {"a", "b"} and res["a"]["reps"] == 5
    assert 0 <= res["a"]["p25_s"] <= res["a"]["median_s"] <= res["a"]["p75_s"]


def test_fvp_matmul_count__matches_mlp_py(bench):
    import trpo_ref as tr

    # 3 layers: jvp h0Ẇ0, h1Ẇ1, ḣ1W1, h2Ẇ2, ḣ2W2; vjp h2ᵀz̄2, z̄2W2ᵀ, h1ᵀz̄1, z̄1W1ᵀ, h0ᵀz̄0
    assert bench.fvp_matmul_count(tr.GaussianMLPPolicy(17, 6).mlp) == 10
    # FLOPs: 2 per MAC; obs 17, 64x64, act 6 -> about 40 kFLOP per sample
    assert bench.fvp_flops(tr.GaussianMLPPolicy(17, 6).mlp, 1) == 2 * (2 * 17 * 64 + 4 * 64 * 64 + 4 * 64 * 6)


def test_bench_policy__tiny_without_sb3(bench):
    row = bench.bench_policy(32, "float32", reps=2, warmup=0, with_sb3=False)
    for key in ("fvp", "matmul_floor", "fisher_setup", "cg10", "cg15", "trpo_step", "critic_fit"):
        assert row[key]["median_s"] > 0
    assert row["trpo_step_status"] in ("accepted", "line_search_failed")
    row["ratios"] = bench.ratios(row)
    md = bench.render_markdown({"date": "now", "reps": 2, "warmup": 0, "machine": bench.machine_info("1"),
                                "policy": [row], "rollout": []})
    assert "| 32 | float32 |" in md


def test_sb3_fvp__is_ours_on_the_same_weights(bench):
    pytest.importorskip("sb3_contrib", reason="sb3-contrib (the 'bench' extra) is not installed")
    pytest.importorskip("torch")
    pi, theta, batch, ret = bench.make_problem(16, "float64")
    model, _ = bench.sb3_model(pi, theta, batch, ret, "float64", n_critic_updates=0)
    hvp, _ = bench.sb3_fisher(model, batch)()
    v = np.random.default_rng(3).standard_normal(pi.num_params)
    ours = pi.fisher_vector_product(theta, batch.obs, v)
    # SB3 averages its KL over the act_dim action dimensions too: its F is ours / act_dim
    theirs = (model.from_sb3(hvp(model.to_sb3(v))) - model.cg_damping * v) * bench.ACT_DIM
    # float64, a few hundred FLOPs per entry summed in different orders: rounding level
    np.testing.assert_allclose(theirs, ours, rtol=1e-10, atol=1e-12)


def test_bench_rollout__cartpole_tiny(bench):
    pytest.importorskip("gymnasium")
    r = bench.bench_rollout("CartPole-v1", steps=20, reps=1, with_sb3=False)
    assert r["ours_steps_per_s"] > 0 and r["env_only_steps_per_s"] > 0


def test_bench_gpu__runs_on_cpu_tiny():
    bench_gpu = _load("bench_gpu")
    res = bench_gpu.run("cpu", batches=(64,), widths=(8,), dtypes=("float64",), reps=2, critic_batch=32,
                        matmul_size=32)
    row = res["rows"][0]
    assert "error" not in row, row
    assert row["fvp_flop_per_s"] > 0 and res["matmul_flop_per_s"]["float64"] > 0
    assert "| 64 | 8 | float64 |" in bench_gpu.render(res)


def _docs_state():
    docs = Path(__file__).resolve().parents[1] / "docs"
    return {p: p.stat().st_mtime_ns for p in docs.rglob("*") if p.is_file()}


def test_bench_quick__writes_to_a_temp_dir_never_docs(bench, capsys):
    # issue 14: a --quick run must not overwrite the committed tables
    before = _docs_state()
    assert bench.main(["--quick", "--no-sb3", "--no-jax", "--only-jax"]) == 0
    out = capsys.readouterr().out
    assert "wrote " in out and "/docs/" not in out.split("wrote ", 1)[1]
    assert _docs_state() == before
    with pytest.raises(SystemExit):  # asking --quick to write into docs/ is refused
        bench.main(["--quick", "--no-sb3", "--no-jax", "--only-jax", "--md", str(SCRIPTS.parent / "docs" / "x.md")])
    assert _docs_state() == before


def test_machine_line__names_cpu_and_blas_kernel(bench):
    m = bench.machine_info("1")
    line = bench.machine_line(m)
    assert m["cpu"] in line and "BLAS" in line and "thread" in line
    pools = m["threadpool"] if isinstance(m["threadpool"], list) else []
    for p in pools:
        assert str(p["architecture"]) in line  # the kernel OpenBLAS chose, e.g. SkylakeX or Haswell


def test_jax_fvp__equals_ours_on_the_same_weights(bench):
    pytest.importorskip("jax", reason="JAX (the 'jax' extra) is not installed")
    jax_fvp = _load("jax_fvp")
    for kind in ("gaussian", "categorical"):
        pi, theta, batch, _ = bench.make_problem(32, "float64", kind=kind)
        v = np.random.default_rng(3).standard_normal(pi.num_params)
        jx = jax_fvp.make_jax_fvp(pi, theta, batch.obs, 0.1, loop_k=2)
        ours = pi.fisher_vector_product(theta, batch.obs, v, damping=0.1)
        # float64, the same sums in other orders (XLA vs BLAS): rounding level
        np.testing.assert_allclose(jx["call"](jx["to_device"](v)), ours, rtol=1e-10, atol=1e-12)
        jx["loop"](2)


def test_bench_scale__quick_point_and_slope():
    scale = _load("bench_scale")
    r = scale.measure_point(300, "float64", "fvp", budget_s=0.05, max_reps=3)
    assert r["median_s"] > 0 and r["rss_peak_mib"] >= r["rss_before_mib"] > 0
    assert 0 < r["temporaries_blocked_mib"] <= r["temporaries_unblocked_mib"] + 0.05
    pts = [{"n": n, "median_s": 1e-6 * n} for n in (10_000, 100_000, 1_000_000)]
    assert scale.slope(pts) == pytest.approx(1.0)
