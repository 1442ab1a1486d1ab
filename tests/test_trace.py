"""trpo_ref.trace and the trace/check CLI: the oracle's file format, its comparison, golden cases, planted bugs.

Sections: round trips and the file format; unusable files (ValueError, exit 2);
the comparison rule; golden traces (one per preset x policy kind, recomputed
to float64 rounding) and the library conventions they show; planted bugs of
foreign implementations, each named first by ``check``; the CLI end to end.
"""

from __future__ import annotations

import json
import math
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import trpo_ref.trpo as trpo_mod
from trpo_ref import cli
from trpo_ref.trace import (
    DEFAULT_ATOL,
    DEFAULT_RTOL,
    FORMAT_VERSION,
    OUTPUT_KEYS,
    Trace,
    check_trace,
    compare_traces,
    compute_trace,
    load_trace,
    synthetic_case,
)
from trpo_ref.oracle.cases import GOLDEN_KINDS, PRESET_KINDS, golden_cases, golden_trace
from trpo_ref.trpo import PRESETS, TRPOConfig

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden"




def small_case(kind="gaussian", seed=0, n=20):
    return synthetic_case(kind, seed, n=n, obs_dim=3, act_dim=2 if kind == "gaussian" else 3, hidden_sizes=(5, 4))


def trace_of(preset="paper", kind="gaussian", seed=0, **overrides):
    policy, theta, batch = small_case(kind, seed)
    return compute_trace(policy, theta, batch, TRPOConfig.preset(preset, **overrides), preset)


def run_cli(argv, capsys):
    rc = cli.main([str(a) for a in argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


def rewrite_npz(src: Path, dst: Path, edit):
    """Copy a trace with its raw arrays edited by ``edit(dict)`` (to build broken files)."""
    with np.load(src, allow_pickle=False) as npz:
        raw = {k: npz[k] for k in npz.files}
    edit(raw)
    with open(dst, "wb") as fh:
        np.savez(fh, **raw)
    return dst


# ------------------------------------------------------------ format, round trip
def test_save_load__round_trip_is_bit_exact(tmp_path):
    tr = trace_of("sb3-contrib")
    path = tr.save(tmp_path / "t.npz")
    back = load_trace(path)
    assert back.meta == json.loads(json.dumps(tr.meta))
    assert set(back.arrays) == set(tr.arrays)
    for k, v in tr.arrays.items():
        np.testing.assert_array_equal(back.arrays[k], v, err_msg=k)
        assert back.arrays[k].dtype == v.dtype, k
    assert back.meta["format_version"] == FORMAT_VERSION
    assert back.config == TRPOConfig.preset("sb3-contrib")
    assert back.policy.spec() == tr.policy.spec()


def test_compute_trace__records_every_stepinfo_field():
    policy, theta, batch = small_case()
    cfg = TRPOConfig.preset("paper")
    tr = compute_trace(policy, theta, batch, cfg)
    theta_new, info = trpo_mod.trpo_step(policy, theta, batch, cfg)
    a = tr.arrays
    np.testing.assert_array_equal(a["theta_new"], theta_new)
    np.testing.assert_array_equal(a["g"], info.g)
    np.testing.assert_array_equal(a["adv_used"], info.adv)
    assert a["xFx"] == info.xFx and a["beta"] == info.beta and a["kl"] == info.kl
    assert int(a["accepted_index"]) == info.accepted_index
    assert a["cg_iterates"].shape == (info.cg.n_iter, policy.num_params)
    np.testing.assert_array_equal(a["cg_residual_norms"], info.cg.residual_norms)
    # CG's products of its directions; (F+λI)x for β by name
    assert a["fisher_v"].shape[0] == len(info.fisher_products) == info.cg.n_iter
    np.testing.assert_array_equal(a["Fx"], info.Fx)
    assert info.x0 is None and info.Fx0 is None and "cg_x0" not in a and "Fx0" not in a
    np.testing.assert_array_equal(a["ls_fraction"], [t.fraction for t in info.tries])
    np.testing.assert_array_equal(a["logp"], policy.log_prob(theta, batch.obs, batch.act))
    assert tr.status == info.status
    assert set(a) - {"theta_old", "obs", "act", "adv", "logp_old"} == set(OUTPUT_KEYS) - {"Fx0"}  # no x0 here


def test_compute_trace__random_cg_start_is_recorded_and_replayed():
    tr = trace_of("sb3-contrib")
    x0 = tr["cg_x0"]
    # SB3-contrib's start: 1e-4 * N(0, I); its product A x0 (r0 = g - A x0) has its own key
    assert 0 < np.abs(x0).max() < 1e-3
    policy, theta, batch = small_case()
    _, info = trpo_mod.trpo_step(policy, theta, batch, TRPOConfig.preset("sb3-contrib"))
    np.testing.assert_array_equal(info.x0, x0)
    np.testing.assert_array_equal(tr["Fx0"], info.Fx0)
    np.testing.assert_array_equal(tr["fisher_v"][0], tr["g"] - tr["Fx0"])  # p0 = r0
    # a replay with another seed but the recorded x0 reproduces the trace exactly
    other = Trace(dict(tr.meta, config=dict(tr.meta["config"], seed=12345)), tr.arrays)
    report = check_trace(other, rtol=0.0, atol=0.0, mode="end-to-end")
    assert report.ok, report.to_text("failures")


def test_save__is_atomic(tmp_path, monkeypatch):
    path = trace_of().save(tmp_path / "t.npz")
    before = path.read_bytes()

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(np, "savez_compressed", boom)
    with pytest.raises(RuntimeError):
        trace_of(seed=1).save(path)
    assert path.read_bytes() == before  # the old file is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.npz"]  # no temporary left behind


def test_trace_from_other_backend__stores_host_arrays(xb):
    policy, theta, batch = small_case()
    dev_batch = trpo_mod.Batch(xb.asarray(batch.obs), xb.asarray(batch.act), xb.asarray(batch.adv),
                               xb.asarray(batch.logp_old))
    tr = compute_trace(policy, xb.asarray(theta), dev_batch, TRPOConfig.preset("paper"))
    ref = compute_trace(policy, theta, batch, TRPOConfig.preset("paper"))
    assert all(isinstance(v, np.ndarray) for v in tr.arrays.values())
    # same math on another backend: rounding-level agreement (see DEFAULT_RTOL)
    assert compare_traces(ref, tr).ok


# ------------------------------------------------------------------ unusable files
@pytest.fixture(scope="module")
def good_file(tmp_path_factory):
    return trace_of("paper").save(tmp_path_factory.mktemp("good") / "good.npz")


def _meta_edit(**changes):
    def edit(raw):
        meta = json.loads(raw["meta_json"].tobytes())
        meta.update(changes)
        raw["meta_json"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)

    return edit


BROKEN = {
    "not a zip": (lambda p, d: d.write_bytes(b"garbage, not a trace"), "not an .npz (zip) archive"),
    "truncated": (lambda p, d: d.write_bytes(p.read_bytes()[:2000]), "not an .npz"),
    "missing meta": (lambda p, d: rewrite_npz(p, d, lambda r: r.pop("meta_json")), "missing key 'meta_json'"),
    "missing input": (lambda p, d: rewrite_npz(p, d, lambda r: r.pop("obs")), "missing required keys ['obs']"),
    "missing theta_new": (lambda p, d: rewrite_npz(p, d, lambda r: r.pop("theta_new")), "'theta_new'"),
    "unknown key": (lambda p, d: rewrite_npz(p, d, lambda r: r.update(thetta_new=r["theta_new"])), "unknown keys ['thetta_new']"),
    "wrong version": (lambda p, d: rewrite_npz(p, d, _meta_edit(format_version=99)), "format version 99 is not supported"),
    "wrong format": (lambda p, d: rewrite_npz(p, d, _meta_edit(format="other")), "'format' is 'other'"),
    "bad json": (lambda p, d: rewrite_npz(p, d, lambda r: r.update(meta_json=np.frombuffer(b"{nope", np.uint8))), "not valid JSON"),
    "bad config": (lambda p, d: rewrite_npz(p, d, _meta_edit(config={"max_kl": -1.0})), "max_kl"),
    "bad spec": (lambda p, d: rewrite_npz(p, d, _meta_edit(policy={"kind": "beta"})), "unknown policy kind 'beta'"),
    "theta shape": (lambda p, d: rewrite_npz(p, d, lambda r: r.update(theta_old=r["theta_old"][:-1])), "'theta_old' has shape"),
    "g shape": (lambda p, d: rewrite_npz(p, d, lambda r: r.update(g=r["g"][None])), "'g' has shape"),
    "act shape": (lambda p, d: rewrite_npz(p, d, lambda r: r.update(act=r["act"][:, :1])), "'act' has shape"),
    "ls lengths": (lambda p, d: rewrite_npz(p, d, lambda r: r.update(ls_kl=np.zeros(7))), "line-search arrays differ"),
    "object array": (lambda p, d: rewrite_npz(p, d, lambda r: r.update(g=np.array([None] * 3, dtype=object))), "not a readable"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_load_trace__unusable_file_is_a_clear_valueerror(case, good_file, tmp_path):
    make, message = BROKEN[case]
    bad = tmp_path / "bad.npz"
    make(good_file, bad)
    with pytest.raises(ValueError, match=None) as exc:
        load_trace(bad)
    assert message in str(exc.value), str(exc.value)
    assert str(bad) in str(exc.value)


@pytest.mark.parametrize("case", ["not a zip", "wrong version", "g shape", "object array"])
def test_check_cli__unusable_file_exits_2_with_one_line(case, good_file, tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    BROKEN[case][0](good_file, bad)
    rc, out, err = run_cli(["check", bad], capsys)
    assert rc == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("trpo-ref check: error: ")


def test_check_cli__missing_file_exits_2(tmp_path, capsys):
    rc, _, err = run_cli(["check", tmp_path / "nope.npz"], capsys)
    assert rc == 2 and "no such trace file" in err


def test_load_trace__never_unpickles(good_file, tmp_path, monkeypatch):
    seen = []
    real_load = np.load
    monkeypatch.setattr(np, "load", lambda *a, **k: seen.append(k.get("allow_pickle")) or real_load(*a, **k))
    load_trace(good_file)
    assert seen == [False]


# -------------------------------------------------------------- comparison rule
def test_compare__identical_traces_agree_exactly():
    tr = trace_of("garage", "categorical")
    report = compare_traces(tr, tr, rtol=0.0, atol=0.0)
    assert report.ok and report.first_failure is None
    assert report.max_errors() == (0.0, 0.0)


def test_compare__rows_follow_the_algorithm_order():
    tr = trace_of("sb3-contrib")
    names = [r.name for r in compare_traces(tr, tr).rows]
    pos = {n: i for i, n in enumerate(names)}
    order = ["input.theta_old", "logp", "adv_used", "surrogate_before", "g", "Fx0", "cg.r[0]", "fisher[0].v",
             "fisher[0].Fv", "cg.pAp[0]", "cg.x[1]", "cg.r[1]", "fisher[1].v",
             "cg.n_iter", "step_dir", "Fx", "xFx", "beta", "full_step", "expected_improvement",
             "ls[0].fraction", "ls[0].kl", "ls[0].improvement", "ls[0].decision", "accepted_index",
             "theta_new", "kl", "surrogate_after", "status"]
    assert [pos[n] for n in order] == sorted(pos[n] for n in order)


@pytest.mark.parametrize("rel, ok", [(1e-6, True), (1e-4, False)])
def test_compare__tolerance_is_normwise_relative(rel, ok):
    # A perturbation of rel * max|g| on one entry: 1e-6 is inside the default rtol 1e-5;
    # 1e-4 is outside and fails, naming g and the entry.
    tr = trace_of()
    g = tr["g"].copy()
    k = int(np.argmin(np.abs(g)))  # the smallest entry: an element-wise test would fail here
    g[k] += rel * np.abs(g).max()
    report = compare_traces(tr, tr.with_arrays(g=g))
    assert report.ok is ok
    if not ok:
        assert report.first_failure.name == "g"
        assert report.first_failure.where.split("[")[0] in tr.policy.param_shapes()


def test_compare__nan_in_the_same_place_agrees_but_not_elsewhere():
    tr = trace_of("modular_rl")  # no KL check: the tries' KL are NaN in the record
    assert np.isnan(tr["ls_kl"]).all()
    assert compare_traces(tr, tr).ok
    kl = tr["ls_kl"].copy()
    kl[0] = 0.001
    report = compare_traces(tr, tr.with_arrays(ls_kl=kl))
    assert report.first_failure.name == "ls[0].kl"
    assert "non-finite" in report.first_failure.where


def test_compare__unrecorded_outputs_are_skipped_not_passed_silently():
    tr = trace_of()
    partial = Trace(tr.meta, {k: v for k, v in tr.arrays.items()
                              if k in ("theta_old", "obs", "act", "adv", "logp_old", "g", "theta_new")})
    report = compare_traces(tr, partial)
    assert report.ok
    assert report.row("g").status == "ok" and report.row("beta").status == "skipped"
    assert "not recorded" in report.to_text()


def test_compare__an_extra_cg_iteration_fails_at_that_iteration():
    tr = trace_of()
    it = tr["cg_iterates"]
    cand = tr.with_arrays(cg_iterates=np.concatenate([it, it[-1:]]))
    report = compare_traces(tr, cand)
    assert report.first_failure.name == f"cg.x[{it.shape[0] + 1}]"


def test_compare__other_inputs_fail_first():
    a, b = trace_of(seed=0), trace_of(seed=1)
    assert compare_traces(a, b).first_failure.name == "input.theta_old"


# ----------------------------------------------------------------------- golden
GOLDEN_CASES = golden_cases()


def test_golden__one_file_per_preset_and_kind_and_small():
    names = {c[0] for c in GOLDEN_CASES}
    kinds = {p: PRESET_KINDS.get(p, GOLDEN_KINDS) for p in PRESETS}  # skrl: Gaussian only; tianshou: 2 heads
    assert len(names) == sum(len(k) for k in kinds.values())
    assert {p.name for p in GOLDEN.glob("*.npz")} == names
    # ~18-25 KB each at GOLDEN_SIZES (measured); 25 KB each on average keeps the repository small
    assert sum(p.stat().st_size for p in GOLDEN.glob("*.npz")) < 25 * 1024 * len(names)


@pytest.mark.parametrize("name, preset, kind, seed", GOLDEN_CASES, ids=[c[0][:-4] for c in GOLDEN_CASES])
def test_golden__recomputes_to_float64_rounding(name, preset, kind, seed):
    """The committed trace passes the stage-wise check and equals a fresh recomputation.

    Stage-wise (the default verdict): every quantity recomputed from the file's own
    upstream values agrees to the float64 tolerance.  End-to-end against trpo_ref's
    chain on the file's inputs: what comes before CG is a short chain of sums and must
    agree to 1e-12 relative; CG's iterates and what follows amplify rounding and are
    held to DEFAULT_RTOL.  The file is what scripts/make_golden.py makes today.
    """
    trace = load_trace(GOLDEN / name)
    assert trace.meta["format_version"] == FORMAT_VERSION == 2
    assert trace.preset == preset and trace.policy.kind == kind
    assert trace.config == TRPOConfig.preset(preset)
    report = check_trace(GOLDEN / name, drift=False)
    assert report.ok, report.to_text("failures")
    assert report.mode == "stage-wise"
    e2e = check_trace(trace, mode="end-to-end")
    assert e2e.ok, e2e.to_text("failures")
    strict = check_trace(trace, rtol=1e-12, atol=1e-15, mode="end-to-end")
    for row in ("logp", "adv_used", "surrogate_before", "entropy", "g", "cg.r[0]", "fisher[0].v", "fisher[0].Fv"):
        assert strict.row(row).ok, strict.row(row)
    fresh = golden_trace(preset, kind, seed)
    assert compare_traces(fresh, trace).ok


def _paper(t, pol, obs, adv, th):
    # advantages used as given, CG from 0 (first direction = g), fractions 0.5^j
    np.testing.assert_array_equal(t["adv_used"], adv)
    assert "cg_x0" not in t.arrays
    np.testing.assert_array_equal(t["fisher_v"][0], t["g"])
    np.testing.assert_array_equal(t["ls_fraction"], 0.5 ** np.arange(len(t["ls_fraction"])))


def _sb3_contrib(t, pol, obs, adv, th):
    # (A − mean)/(std_ddof1 + 1e-8), random x0 ~ 1e-4, fractions 0.8^j, KL(new‖old); the KL averaged
    # over the terms SB3's distribution keeps apart (a Gaussian's action dimensions, a MultiBinary's
    # bits; one term for the categoricals), so F is scaled by the same 1/A
    np.testing.assert_allclose(t["adv_used"], (adv - adv.mean()) / (adv.std(ddof=1) + 1e-8), rtol=1e-13)
    assert "cg_x0" in t.arrays and 1e-6 < np.abs(t["cg_x0"]).max() < 1e-3
    np.testing.assert_allclose(t["ls_fraction"], 0.8 ** np.arange(len(t["ls_fraction"])), rtol=1e-15)
    scale = 1.0 / (pol.act_dim if pol.kind == "gaussian" else pol.n if pol.kind == "bernoulli" else 1)
    kl_rev = scale * float(pol.kl(th, t["theta_new"], obs, reverse=True))
    assert float(t["kl"]) == pytest.approx(kl_rev, rel=1e-13)
    v = t["fisher_v"][1]
    np.testing.assert_allclose(t["fisher_Fv"][1], scale * pol.fisher_vector_product(th, obs, v) + 0.1 * v,
                               rtol=1e-12, atol=1e-15)


def _baselines(t, pol, obs, adv, th):
    # (A − mean)/std_ddof0, FVP on every 5th sample only, KL ≤ 1.5δ, ΔL ≥ 0
    np.testing.assert_allclose(t["adv_used"], (adv - adv.mean()) / adv.std(), rtol=1e-13)
    v = t["fisher_v"][0]
    np.testing.assert_allclose(t["fisher_Fv"][0], pol.fisher_vector_product(th, obs[::5], v) + 0.1 * v,
                               rtol=1e-12, atol=1e-15)
    acc = int(t["accepted_index"])
    assert t["ls_kl"][acc] <= 1.5 * 0.01 and t["ls_improvement"][acc] >= 0


def _spinningup(t, pol, obs, adv, th):
    # CG never stops early (exactly 10 iterations); KL(old‖new) for the categorical policy (its
    # d_kl), KL(new‖old) for the Gaussian one and, by the preset's kl_direction, the other heads
    assert int(t["cg_n_iter"]) == 10 and not bool(t["cg_converged"])
    kl = float(pol.kl(th, t["theta_new"], obs, reverse=pol.kind != "categorical"))
    assert float(t["kl"]) == pytest.approx(kl, rel=1e-13)


def _modular_rl(t, pol, obs, adv, th):
    # no KL in the line search, ratio test actual/expected > 0.1, damping 1e-3
    assert np.isnan(t["ls_kl"]).all()
    acc = int(t["accepted_index"])
    assert t["ls_ratio"][acc] > 0.1 and t["ls_improvement"][acc] > 0
    v = t["fisher_v"][0]
    np.testing.assert_allclose(t["fisher_Fv"][0], pol.fisher_vector_product(th, obs, v) + 1e-3 * v,
                               rtol=1e-12, atol=1e-15)


def _garage(t, pol, obs, adv, th):
    # (A − mean)/(var_ddof1 + 1e-8), 15 tries of 0.8^j, β with +1e-8, KL < δ
    np.testing.assert_allclose(t["adv_used"], (adv - adv.mean()) / (adv.var(ddof=1) + 1e-8), rtol=1e-13)
    assert float(t["beta"]) == pytest.approx(math.sqrt(2 * 0.01 / (float(t["xFx"]) + 1e-8)), rel=1e-15)
    assert TRPOConfig.preset("garage").backtrack_iters == 15
    assert t["ls_kl"][int(t["accepted_index"])] < 0.01


#: preset -> what its golden traces show about that library's update (docs/presets.md cites the sources)
CONVENTIONS = {"paper": _paper, "sb3-contrib": _sb3_contrib, "baselines": _baselines, "spinningup": _spinningup,
               "modular_rl": _modular_rl, "garage": _garage}
CONVENTION_CASES = [c for c in GOLDEN_CASES if c[1] in CONVENTIONS]


@pytest.mark.parametrize("name, preset, kind, seed", CONVENTION_CASES, ids=[c[0][:-4] for c in CONVENTION_CASES])
def test_golden__preset_conventions_are_visible_in_the_traces(name, preset, kind, seed):
    t = load_trace(GOLDEN / name)
    CONVENTIONS[preset](t, t.policy, t["obs"], t["adv"], t["theta_old"])


# ---------------------------------------------------------------- planted bugs
def as_if_correct(buggy: Trace, config: TRPOConfig) -> Trace:
    """The buggy implementation's record claims the correct configuration (as a real one would)."""
    return Trace(dict(buggy.meta, config=config.to_dict()), dict(buggy.arrays))


def first_failure(candidate: Trace):
    report = check_trace(candidate)
    assert not report.ok
    return report.first_failure, report


def test_planted_bug__control_the_correct_traces_pass():
    for preset in ("spinningup", "sb3-contrib", "paper"):
        assert check_trace(trace_of(preset)).ok


def test_planted_bug__advantages_not_normalized_shows_first_in_adv_used():
    policy, theta, batch = small_case()
    cfg = TRPOConfig.preset("spinningup")
    buggy = compute_trace(policy, theta, batch, replace(cfg, normalize_adv=False))
    row, report = first_failure(as_if_correct(buggy, cfg))
    assert row.name == "adv_used"
    assert report.row("logp").ok  # everything before it agrees
    assert row.max_rel > 1e-3  # far above the tolerance


@pytest.mark.parametrize("preset, kind", [("sb3-contrib", "gaussian"), ("paper", "gaussian"), ("paper", "categorical")])
def test_planted_bug__kl_direction_swapped_shows_first_in_the_line_search_kl(preset, kind):
    # Both directions have the same Hessian at θ_old, so g, every Fisher product, CG and β
    # agree; the first difference is the KL of the first try.
    policy, theta, batch = small_case(kind)
    cfg = TRPOConfig.preset(preset)
    swapped = "old_new" if cfg.kl_direction == "new_old" else "new_old"
    buggy = compute_trace(policy, theta, batch, replace(cfg, kl_direction=swapped))
    row, report = first_failure(as_if_correct(buggy, cfg))
    assert row.name == "ls[0].kl"
    assert report.row("beta").ok and report.row("Fx").ok
    assert row.max_rel > 1e4 * report.rtol  # far above the tolerance


def test_planted_bug__fvp_of_zero_shows_first_in_the_first_fisher_product():
    # KL(π_old‖π_θ) with π_old not detached is identically 0: its Hessian-vector product is 0,
    # and CG only sees the damping λv.
    policy, theta, batch = small_case()
    cfg = TRPOConfig.preset("paper")
    policy.fisher_operator = lambda th, obs, damping=0.0, **kw: (lambda v: 0.0 * v)
    buggy = compute_trace(policy, theta, batch, cfg)
    del policy.fisher_operator
    np.testing.assert_allclose(buggy["fisher_Fv"][0], cfg.cg_damping * buggy["fisher_v"][0], rtol=1e-15)
    row, report = first_failure(as_if_correct(buggy, cfg))
    assert row.name == "fisher[0].Fv"
    assert report.row("fisher[0].v").ok and report.row("g").ok
    assert row.max_rel > 0.5


def test_planted_bug__damping_missing_from_the_step_size_shows_first_in_Fx(monkeypatch):
    # CG solves (F + λI)x = g correctly, but β uses xᵀFx instead of xᵀ(F + λI)x.
    policy, theta, batch = small_case()
    cfg = TRPOConfig.preset("paper")
    after_cg = {"flag": False}
    real_cg = trpo_mod.conjugate_gradient
    real_op = type(policy).fisher_operator

    def cg_then_flag(*a, **k):
        res = real_cg(*a, **k)
        after_cg["flag"] = True
        return res

    def fisher_operator(th, obs, damping=0.0, **kw):
        op = real_op(policy, th, obs, **kw)
        return lambda v: op(v) - cfg.cg_damping * v if after_cg["flag"] else op(v)

    monkeypatch.setattr(trpo_mod, "conjugate_gradient", cg_then_flag)
    policy.fisher_operator = fisher_operator
    buggy = compute_trace(policy, theta, batch, cfg)
    monkeypatch.undo()
    del policy.fisher_operator
    row, report = first_failure(as_if_correct(buggy, cfg))
    assert row.name == "Fx"
    assert report.row("step_dir").ok and report.row(f"cg.x[{int(buggy['cg_n_iter'])}]").ok
    # stage-wise: xᵀ(Fx) and β are recomputed from the candidate's own (wrong) Fx, so the
    # error is charged to Fx alone; end to end, everything after it differs too.
    assert report.row("xFx").ok and report.row("beta").ok
    e2e = check_trace(as_if_correct(buggy, cfg), mode="end-to-end")
    assert not e2e.row("xFx").ok and not e2e.row("beta").ok
    assert row.max_rel > 1e4 * report.rtol


def test_planted_bug__failed_line_search_that_keeps_the_last_try_shows_first_in_theta_new():
    # Two tries with KL ≈ δ and ≈ δ/4 against a bound of δ/20: both fail, and the correct
    # update returns θ_old bit for bit.
    cfg = TRPOConfig.preset("paper", backtrack_iters=2, kl_bound_factor=0.05)
    policy, theta, batch = small_case()
    good = compute_trace(policy, theta, batch, cfg)
    assert good.status == "line_search_failed" and int(good["accepted_index"]) == -1
    np.testing.assert_array_equal(good["theta_new"], theta)
    kept = theta + good["ls_fraction"][-1] * good["full_step"]
    buggy = good.with_arrays(
        theta_new=kept,
        kl=np.array(float(policy.kl(theta, kept, batch.obs))),
        surrogate_after=np.array(float(policy.surrogate(kept, batch.obs, batch.act, good["adv_used"], batch.logp_old))),
    )
    row, report = first_failure(buggy)
    assert row.name == "theta_new"
    assert report.row("accepted_index").ok and report.row("ls[1].decision").ok


def test_planted_bug__log_std_not_updated_shows_first_in_theta_new_at_log_std():
    policy, theta, batch = small_case()
    good = trace_of("paper")
    names = policy.param_shapes()
    n_mlp = policy.mlp.num_params
    stuck = good["theta_new"].copy()
    stuck[n_mlp:] = theta[n_mlp:]
    assert np.any(good["theta_new"][n_mlp:] != theta[n_mlp:])  # the correct update moves log σ
    buggy = good.with_arrays(theta_new=stuck, kl=np.array(float(policy.kl(theta, stuck, batch.obs))))
    row, _ = first_failure(buggy)
    assert row.name == "theta_new"
    assert row.where.startswith("log_std[")
    assert "log_std" in names


def test_planted_bug__log_std_left_out_of_the_parameters_shows_first_in_g_at_log_std(monkeypatch):
    # The other form of the same bug: log σ is not a parameter, so its gradient is missing.
    from trpo_ref.policy import PolicyAt

    policy, theta, batch = small_case()
    cfg = TRPOConfig.preset("paper")
    real = PolicyAt.surrogate_grad
    n_mlp = policy.mlp.num_params

    def no_log_std(self, *a):
        g = np.array(real(self, *a))
        g[n_mlp:] = 0.0
        return g

    monkeypatch.setattr(PolicyAt, "surrogate_grad", no_log_std)
    buggy = compute_trace(policy, theta, batch, cfg)
    monkeypatch.undo()
    row, _ = first_failure(buggy)
    assert row.name == "g" and row.where.startswith("log_std[")


# ---------------------------------------------------------------------------- CLI
def test_cli_trace_then_check__agrees_and_exits_0(tmp_path, capsys):
    out = tmp_path / "t.npz"
    rc, text, _ = run_cli(["trace", "--preset", "baselines", "--policy", "categorical", "--seed", 3, "--n", 30,
                           "--obs-dim", 2, "--act-dim", 4, "--hidden", "6,5", "-o", out], capsys)
    assert rc == 0 and "wrote" in text
    tr = load_trace(out)
    assert tr.policy.spec()["hidden_sizes"] == [6, 5] and tr["obs"].shape == (30, 2)
    rc, text, _ = run_cli(["check", out], capsys)
    assert rc == 0
    assert text.splitlines()[-1].startswith("OK: all ")
    for name in ("logp", "g", "fisher[0].Fv", "cg.x[1]", "xFx", "beta", "ls[0].kl", "theta_new"):
        assert f" {name} " in text


def test_cli_check__out_of_tolerance_exits_1_and_names_the_first(tmp_path, capsys):
    tr = trace_of("spinningup")
    beta = tr["beta"] * (1 + 1e-3)
    path = tr.with_arrays(beta=np.array(beta)).save(tmp_path / "c.npz")
    rc, text, _ = run_cli(["check", path, "--failures-only"], capsys)
    assert rc == 1
    assert "first: beta" in text.splitlines()[-1]
    # a loose tolerance accepts it
    rc, _, _ = run_cli(["check", path, "--rtol", "1e-2"], capsys)
    assert rc == 0


def test_cli_check__json_and_reference(tmp_path, capsys):
    a = trace_of().save(tmp_path / "a.npz")
    b = trace_of().with_arrays(kl=np.array(0.5)).save(tmp_path / "b.npz")
    rc, text, _ = run_cli(["check", b, "--reference", a, "--json"], capsys)
    assert rc == 1
    d = json.loads(text)
    assert d["first_failure"] == "kl" and d["ok"] is False


def test_cli_trace__argument_errors_exit_2(tmp_path, capsys):
    rc, _, err = run_cli(["trace", "--preset", "paper", "-o", tmp_path / "x.npz"], capsys)
    assert rc == 2 and "--policy" in err
    rc, _, err = run_cli(["trace", "--preset", "paper", "--weights", tmp_path / "w.npz", "-o", tmp_path / "x.npz"],
                         capsys)
    assert rc == 2 and "--batch" in err


def test_default_tolerances_are_the_documented_ones():
    assert (DEFAULT_RTOL, DEFAULT_ATOL) == (1e-5, 1e-12)
    doc = (ROOT / "docs" / "trace-format.md").read_text()
    assert "1e-5" in doc and "1e-12" in doc


def test_zip_members_are_plain_npy(good_file):
    with zipfile.ZipFile(good_file) as z:
        assert all(n.endswith(".npy") for n in z.namelist())
        assert "meta_json.npy" in z.namelist()


# ------------------------------------------------------------- review regressions
def test_compare__ls_expected_improvement_ratio_and_surrogate_change_are_compared_in_order():
    tr = trace_of("modular_rl")  # its line search uses the ratio test
    names = [r.name for r in compare_traces(tr, tr).rows]
    order = ["ls[0].improvement", "ls[0].expected_improvement", "ls[0].ratio", "ls[0].decision",
             "surrogate_after", "surrogate_change", "status"]
    assert [names.index(n) for n in order] == sorted(names.index(n) for n in order)
    for key, row in (("ls_ratio", "ls[0].ratio"), ("ls_expected_improvement", "ls[0].expected_improvement")):
        bad = tr[key].copy()
        bad[0] *= 1.01
        report = compare_traces(tr, tr.with_arrays(**{key: bad}))
        assert not report.ok and report.first_failure.name == row
    report = compare_traces(tr, tr.with_arrays(surrogate_change=np.array(float(tr["surrogate_change"]) + 0.1)))
    assert not report.ok and report.first_failure.name == "surrogate_change"


def test_compare__ls_ratio_nan_in_both_agrees():
    tr = trace_of("modular_rl")
    ratio = tr["ls_ratio"].copy()
    ratio[0] = np.nan
    t2 = tr.with_arrays(ls_ratio=ratio)
    assert compare_traces(t2, t2).ok
    assert compare_traces(tr, t2).first_failure.name == "ls[0].ratio"


def test_cli_check__corrupted_modular_rl_ratio_exits_1(tmp_path, capsys):
    tr = trace_of("modular_rl")
    path = tr.with_arrays(ls_ratio=tr["ls_ratio"] + 0.5).save(tmp_path / "c.npz")
    rc, text, _ = run_cli(["check", path, "--failures-only"], capsys)
    assert rc == 1 and "first: ls[0].ratio" in text.splitlines()[-1]


def test_cli_trace__output_is_a_directory_or_in_a_missing_one(tmp_path, capsys):
    for out, needle in ((tmp_path, "is a directory"), (tmp_path / "no" / "t.npz", "does not exist")):
        rc, _, err = run_cli(["trace", "--preset", "paper", "--policy", "gaussian", "-o", out], capsys)
        assert rc == 2 and needle in err and str(out) in err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.mark.parametrize("argv", [["trace", "--preset", "paper"], ["check"], ["check", "x.npz", "--rtol", "big"],
                                  ["trace", "--preset", "nope", "-o", "x.npz"]])
def test_cli_trace_check__usage_errors_are_one_line(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"trpo-ref {argv[0]}: error:"), err


def test_save__creates_the_file_with_the_usual_mode(tmp_path):
    # Through fileio.atomic_savez: the mode open() gives (0644 under umask 022), not mkstemp's 0600.
    from trpo_ref.fileio import default_file_mode

    path = trace_of().save(tmp_path / "t.npz")
    assert (path.stat().st_mode & 0o777) == default_file_mode()
