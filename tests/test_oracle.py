"""trpo_ref.oracle: the stage-wise verdict on realistic networks, planted bugs, the schema, format versions.

The realistic cases (trpo_ref.oracle.cases.realistic_case) are 64×64 tanh policies
with N = 256, CG at its 10-iteration cap without converging, and a line search that
backtracks.  A correct update — trpo_ref's own, written stage by stage by
``candidate_update``, summed in another order, at θ_old ± 1 ulp, or in float32 —
must pass the stage-wise check; each planted bug must be named first at its own stage.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import trpo_ref.trpo as trpo_mod
from trpo_ref import cli
from trpo_ref.oracle import (
    BUGS,
    FIELDS,
    FORMAT_VERSION,
    TOLERANCES,
    Trace,
    check_trace,
    compute_trace,
    load_trace,
    recompute,
    schema,
)
from trpo_ref.oracle.cases import candidate_update, realistic_case, synthetic_case
from trpo_ref.oracle.stagewise import check_stagewise
from trpo_ref.trpo import PRESETS, TRPOConfig

ROOT = Path(__file__).resolve().parents[1]
KINDS = ("gaussian", "categorical")


@pytest.fixture(scope="module", params=KINDS)
def realistic(request):
    """(policy, θ_old, batch, config, trpo_ref's own trace) of a realistic case."""
    policy, theta, batch, config = realistic_case(request.param)
    own = compute_trace(policy, theta, batch, config)
    return policy, theta, batch, config, own


def worst_row(report):
    rows = [r for r in report.rows if not r.exact and r.status != "skipped"]
    return max(rows, key=lambda r: r.max_rel)


# ------------------------------------------------------------- the cases
def test_realistic_case__is_realistic(realistic):
    policy, theta, batch, config, own = realistic
    assert policy.hidden_sizes == (64, 64) and policy.activation == "tanh" and len(batch) >= 256
    assert int(own["cg_n_iter"]) == config.cg_iters and not bool(own["cg_converged"])  # CG at its cap
    assert int(own["accepted_index"]) >= 2  # the line search backtracked (twice or more)
    assert own.status == "accepted"


@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize("kind", KINDS)
def test_candidate_update__run_correct_is_trpo_step_bit_for_bit(preset, kind):
    policy, theta, batch = synthetic_case(kind, 3, n=40)
    config = TRPOConfig.preset(preset)
    own = compute_trace(policy, theta, batch, config)
    cand = candidate_update(policy, theta, batch, config, x0=own.x0)
    assert set(cand.arrays) == set(own.arrays)
    for k in own.arrays:
        np.testing.assert_array_equal(cand[k], own[k], err_msg=k)
    assert cand.status == own.status


# -------------------------------------------------- correct updates pass
@pytest.mark.parametrize("dtype, variant", [
    ("float64", dict(permute_seed=1)), ("float64", dict(ulp_seed=1)), ("float64", dict(permute_seed=2, ulp_seed=2)),
    ("float32", dict()), ("float32", dict(permute_seed=1)), ("float32", dict(ulp_seed=1)),
])
def test_stagewise__correct_realistic_updates_pass_far_inside_the_tolerance(realistic, dtype, variant):
    policy, theta, batch, config, own = realistic
    cand = candidate_update(policy, theta, batch, config, dtype=dtype, **variant)
    assert cand.dtype == dtype
    report = check_stagewise(cand, own=own)
    assert report.ok, report.to_text("failures")
    # Measured on these cases (scripts/make_golden.py --spread): float64 worst 1.1e-14,
    # float32 worst 8.7e-7; over the realistic cases of every preset 1.4e-14 and 1.9e-6.
    # The tolerances (1e-10, 1e-4) keep a margin of at least 50 over what rounding does.
    assert worst_row(report).max_rel < TOLERANCES[dtype][0] / 50, worst_row(report)


def test_end_to_end__rounding_alone_moves_the_realistic_chain_far_beyond_the_stagewise_error(realistic):
    # Why the verdict is stage-wise: trpo_ref against itself with the batch permuted moves
    # the step direction by far more than the stage-wise error of the same candidate.
    policy, theta, batch, config, own = realistic
    cand = candidate_update(policy, theta, batch, config, permute_seed=1, ulp_seed=1)
    e2e = check_trace(cand, mode="end-to-end", rtol=0.0, atol=0.0)
    step = e2e.row("step_dir").max_rel
    stage = worst_row(check_stagewise(cand, own=own)).max_rel
    # docs/trace-format.md: spread 2.7e-4 (Gaussian) and 5.3e-4 (categorical) on step_dir,
    # stage-wise error <= 1.1e-14 (the spread's exact size depends on the BLAS; its order does not)
    assert step > 1e-6 and stage < 1e-13, (step, stage)
    assert not check_trace(cand, mode="end-to-end").ok  # a correct update fails end to end at 1e-5


def test_drift_section__sets_the_drift_beside_the_rounding_spread(realistic):
    policy, theta, batch, config, own = realistic
    cand = candidate_update(policy, theta, batch, config, permute_seed=3)
    report = check_trace(cand)
    text = report.to_text()
    assert report.ok and report.mode == "stage-wise"
    assert report.drift and "rounding alone" in report.drift[0]
    line = next(ln for ln in report.drift if ln.split() and ln.split()[0] == "step_dir")
    drift, spread = map(float, line.split()[1:3])
    assert drift > 0 and spread > 0
    assert "step_dir" in text and "stage-wise" in text


def test_drift_section__a_correct_update_is_within_rounding_and_a_planted_bug_is_not(realistic):
    policy, theta, batch, config, own = realistic
    correct = check_trace(candidate_update(policy, theta, batch, config, permute_seed=4, ulp_seed=4))
    assert "within 10x what rounding alone gives" in correct.drift[-1], correct.drift
    cand = candidate_update(policy, theta, batch, config, bug="beta_without_factor_2")
    report = check_trace(cand)
    assert "largest drift beyond rounding" in report.drift[-1]


# ------------------------------------------------------------ planted bugs
FIRST_ROW = {
    "kl_direction_swapped": "ls[0].kl",
    "damping_missing_from_beta": "Fx",
    "advantages_not_normalized": "adv_used",
    "zero_fvp": "fisher[0].Fv",
    "beta_without_factor_2": "beta",
    "cg_one_iteration_short": "cg.n_iter",
    "log_std_not_in_tries": "ls[0].kl",
    "expected_improvement_compounded": "ls[2].expected_improvement",
    "ratio_in_float32": "surrogate_before",
}


def test_planted_bugs__every_bug_has_its_expected_stage():
    assert set(FIRST_ROW) == set(BUGS)


@pytest.mark.parametrize("bug", sorted(BUGS))
def test_planted_bug__named_first_at_its_own_stage(realistic, bug):
    policy, theta, batch, config, own = realistic
    if bug == "log_std_not_in_tries" and policy.kind != "gaussian":
        pytest.skip("a categorical policy has no log σ")
    cand = candidate_update(policy, theta, batch, config, bug=bug)
    assert cand.meta["config"] == config.to_dict()  # the buggy record claims the correct config
    report = check_stagewise(cand, own=own)
    first = report.first_failure
    assert first is not None and first.name == FIRST_ROW[bug], report.to_text("failures")
    # well above the tolerance (smallest measured here: ratio_in_float32, 1.1e-7 relative to
    # the rounding floor of the ≈0 surrogate, 1000x the float64 rtol; over every preset 4.1e-9)
    assert first.exact or first.max_rel > 100 * report.rtol, first


def test_planted_bug__end_to_end_names_a_rounding_row_before_the_bug():
    # What the review saw: end to end, a correct candidate's rounding already fails CG's
    # late rows, so a bug planted after CG is not named at its stage.  Stage-wise, β without
    # the factor 2 is named at beta; end to end (default tolerances) the first failure is a
    # CG row that the bug did not touch.
    policy, theta, batch, config = realistic_case("categorical")
    cand = candidate_update(policy, theta, batch, config, bug="beta_without_factor_2", permute_seed=1)
    stage = check_trace(cand, drift=False)
    assert stage.first_failure.name == "beta"
    e2e = check_trace(cand, mode="end-to-end")
    assert not e2e.ok
    assert e2e.first_failure.name.startswith(("fisher[", "cg.")), e2e.first_failure


# -------------------------------------------- one relative change of 1e-6
def _perturbations(trace: Trace):
    """(row name, key, index) for every float quantity after the inputs."""
    out = []
    a = trace.arrays
    for f in FIELDS:
        if f.role != "output" or f.dtype != "float" or f.key not in a:
            continue
        arr = a[f.key]
        if f.key in ("fisher_v", "fisher_Fv", "cg_iterates", "cg_residual_norms", "cg_pAp") or f.key.startswith("ls_"):
            for i in {0, arr.shape[0] // 2, arr.shape[0] - 1} if arr.shape[0] else ():
                name = {"fisher_v": f"fisher[{i}].v", "fisher_Fv": f"fisher[{i}].Fv", "cg_iterates": f"cg.x[{i + 1}]",
                        "cg_residual_norms": f"cg.r[{i}]", "cg_pAp": f"cg.pAp[{i}]"}.get(f.key)
                if name is None:
                    name = f"ls[{i}].{f.key[3:]}"
                out.append((name, f.key, i))
        else:
            out.append((f.key, f.key, None))
    return out


@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize("kind", KINDS)
def test_a_relative_change_of_1e6_in_any_quantity_is_flagged_at_that_quantity(preset, kind):
    policy, theta, batch = synthetic_case(kind, 11, n=64, obs_dim=5, act_dim=3, hidden_sizes=(16, 16))
    config = TRPOConfig.preset(preset)
    trace = compute_trace(policy, theta, batch, config)
    own = recompute(trace)
    checked = 0
    for name, key, i in _perturbations(trace):
        arr = trace[key].copy()
        value = arr if i is None else arr[i]
        if not np.all(np.isfinite(value)) or not np.any(value):
            continue  # NaN (a KL modular_rl does not compute) or exactly 0: no relative change
        if key == "surrogate_before" and config.normalize_adv:
            continue  # ≈1e-17 by construction (normalised Â): 1e-6 of it is below any rounding
        if i is None:
            arr = arr * (1 + 1e-6)
        else:
            arr[i] = arr[i] * (1 + 1e-6)
        report = check_stagewise(trace.with_arrays(**{key: arr}), own=own)
        first = report.first_failure
        assert first is not None and first.name == name, (name, report.to_text("failures"))
        checked += 1
    assert checked >= 30


# ------------------------------------------------------------ schema and docs
def test_schema__drives_the_tables_in_trace_format_md():
    doc = (ROOT / "docs" / "trace-format.md").read_text()
    for role in ("input", "output"):
        block = re.search(rf"<!-- schema-{role}s:begin -->\n(.*?)\n<!-- schema-{role}s:end -->", doc, re.S)
        assert block, f"docs/trace-format.md lacks the schema-{role}s block"
        assert block.group(1).strip() == schema.markdown_table(role).strip(), \
            f"regenerate with: python scripts/make_trace_docs.py ({role}s)"


def test_tolerance_table_in_the_docs_is_the_code():
    doc = (ROOT / "docs" / "trace-format.md").read_text()
    def e(x):  # 1e-10, 1e-4
        return f"{x:.0e}".replace("e-0", "e-")

    for dtype, (rtol, terms_rtol) in TOLERANCES.items():
        assert f"| {dtype} | {e(rtol)} | {e(terms_rtol)} |" in doc, dtype


@pytest.mark.parametrize("preset", ["paper", "sb3-contrib"])
def test_schema__names_every_row_of_both_comparisons(preset):
    # Each report row belongs to one schema key (Field.row), and every recorded output key
    # has its rows in both the stage-wise and the end-to-end report.
    policy, theta, batch = synthetic_case("gaussian", 0, n=30)
    trace = compute_trace(policy, theta, batch, TRPOConfig.preset(preset, max_kl=0.5), preset)
    derived = {"status", "ls.n_tries"}  # from the metadata / the rule, not a key
    for report in (check_trace(trace, drift=False), check_trace(trace, mode="end-to-end")):
        names = [r.name for r in report.rows]
        owner = {n: [f.key for f in FIELDS if schema.row_pattern(f.key).match(n)] for n in names}
        assert all(len(v) >= 1 for n, v in owner.items() if n not in derived), owner
        for key in trace.arrays:
            if schema.field(key).role == "output":
                assert any(schema.row_pattern(key).match(n) for n in names), (report.mode, key)


def test_schema__every_recorded_key_is_in_the_schema():
    policy, theta, batch = synthetic_case("gaussian", 0)
    tr = compute_trace(policy, theta, batch, TRPOConfig.preset("sb3-contrib"))
    assert set(tr.arrays) == {f.key for f in FIELDS}
    assert FORMAT_VERSION == 2


def test_schema__a_free_symbol_must_agree_across_keys(tmp_path):
    policy, theta, batch = synthetic_case("gaussian", 0)
    tr = compute_trace(policy, theta, batch, TRPOConfig())
    bad = tr.with_arrays(cg_residual_norms=tr["cg_residual_norms"][:-1])  # n+1 must follow cg_iterates' n
    path = bad.save(tmp_path / "bad.npz")
    with pytest.raises(ValueError, match="cg_residual_norms"):
        load_trace(path)


def test_version_1_files_are_read_and_upgraded():
    v1 = load_trace(ROOT / "tests" / "golden_v1" / "sb3-contrib-gaussian.npz")
    assert v1.meta["upgraded_from"] == 1 and v1.meta["format_version"] == FORMAT_VERSION
    # version 1 stored (F+λI)x₀ as the first Fisher product; version 2 names it Fx0
    assert "Fx0" in v1 and v1["fisher_v"].shape[0] == int(v1["cg_n_iter"])
    np.testing.assert_array_equal(v1["fisher_v"][0], v1["g"] - v1["Fx0"])  # p0 = r0 = g − (F+λI)x0
    report = check_trace(v1, drift=False)
    assert report.ok, report.to_text("failures")


def test_stepinfo__names_x0_and_Fx():
    policy, theta, batch = synthetic_case("gaussian", 0)
    _, info = trpo_mod.trpo_step(policy, theta, batch, TRPOConfig.preset("sb3-contrib"))
    fx = policy.fisher_vector_product(theta, batch.obs, info.step_dir) / policy.act_dim + 0.1 * info.step_dir
    np.testing.assert_allclose(info.Fx, fx, rtol=1e-12)  # SB3's "mean" reduction: F/A + λI
    x0_product = policy.fisher_vector_product(theta, batch.obs, info.x0) / policy.act_dim + 0.1 * info.x0
    np.testing.assert_allclose(info.Fx0, x0_product, rtol=1e-12)
    assert len(info.fisher_products) == info.cg.n_iter
    assert info.n_fisher_products == info.cg.n_iter + 2


# ------------------------------------------------------------ not recorded
def test_stagewise__a_quantity_not_recorded_is_skipped_and_taken_from_trpo_ref():
    policy, theta, batch, config = realistic_case("categorical")
    cand = candidate_update(policy, theta, batch, config, permute_seed=1).without("g", "fisher_Fv", "Fx")
    report = check_trace(cand, drift=False)
    assert report.ok, report.to_text("failures")
    assert report.row("g").status == "skipped" and report.row("Fx").status == "skipped"
    assert any("taken from trpo_ref's own chain" in n and n.endswith("g, fisher_Fv, Fx") for n in report.notes), \
        report.notes


def test_stagewise__float32_candidates_get_the_float32_tolerance():
    policy, theta, batch, config = realistic_case("gaussian")
    cand = candidate_update(policy, theta, batch, config, dtype="float32")
    report = check_trace(cand, drift=False)
    assert report.ok and report.rtol == TOLERANCES["float32"][0]
    assert check_trace(cand, rtol=TOLERANCES["float64"][0], drift=False).ok is False  # float32 is not float64


# ------------------------------------------------------------------ CLI
def run(argv, capsys):
    code = cli.main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_check__stagewise_by_default_with_a_drift_section_and_end_to_end_on_request(tmp_path, capsys):
    policy, theta, batch, config = realistic_case("categorical")
    path = candidate_update(policy, theta, batch, config, bug="zero_fvp").save(tmp_path / "bug.npz")
    code, out, _ = run(["check", str(path)], capsys)
    assert code == 1 and "stage-wise" in out and "rounding alone" in out
    assert out.strip().splitlines()[-1].startswith("FAIL:") and "first: fisher[0].Fv" in out
    code, out, _ = run(["check", str(path), "--mode", "end-to-end"], capsys)
    assert code == 1 and "end-to-end" in out
    code, _, err = run(["check", str(path), "--atol", "1e-9"], capsys)
    assert code == 2 and "end-to-end only" in err


# ------------------------------------------- review regressions (every status, partial records)
@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_status_round_trips_through_a_file_and_passes(preset, tmp_path):
    # A trace where CG did not run (VPG, g = 0, a skipped update) has no iterates and no
    # residual norms; it must load and pass like any other.
    from trpo_ref.trpo import Batch

    for kind in KINDS:
        policy, theta, batch = synthetic_case(kind, 1, n=30)
        zero = Batch(batch.obs, batch.act, np.zeros_like(batch.adv), batch.logp_old)
        for b, overrides, status in [(batch, dict(method="npg"), "fixed_step"), (batch, dict(method="vpg"), "fixed_step"),
                                     (zero, dict(), "zero_gradient"), (zero, dict(skip_if_zero_grad=True), "skipped"),
                                     (zero, dict(skip_if_zero_grad=True, method="vpg"), "skipped")]:
            config = TRPOConfig.preset(preset, **overrides)
            trace = compute_trace(policy, theta, b, config, preset)
            assert trace.status == ("skipped" if b is zero and config.skip_if_zero_grad else status)
            path = trace.save(tmp_path / "t.npz")
            report = check_trace(path, drift=False)
            assert report.ok, (kind, overrides, report.to_text("failures"))


@pytest.mark.parametrize("dropped", [("cg_iterates",), ("fisher_v",), ("fisher_v", "fisher_Fv"),
                                     ("cg_iterates", "step_dir"), ("cg_residual_norms",),
                                     ("fisher_v", "fisher_Fv", "cg_iterates", "cg_pAp")])
def test_stagewise__a_correct_update_missing_cg_records_still_passes(realistic, dropped):
    # Without its own records the check must not fall back on trpo_ref's chaotic CG chain:
    # directions come from the candidate's iterates (x_{k+1} − x_k = τ_k p_k), and what
    # cannot be forced at all is skipped, not compared end to end.
    policy, theta, batch, config, own = realistic
    cand = candidate_update(policy, theta, batch, config, permute_seed=1).without(*dropped)
    report = check_stagewise(cand, own=own)
    assert report.ok, report.to_text("failures")
    assert any(d in n for n in report.notes for d in dropped if d != "step_dir")


def test_stagewise__partial_or_non_finite_records_fail_at_their_row_without_crashing(realistic):
    policy, theta, batch, config, own = realistic
    cand = candidate_update(policy, theta, batch, config)
    cut = cand.with_arrays(fisher_v=cand["fisher_v"][:3], fisher_Fv=cand["fisher_Fv"][:3])
    report = check_stagewise(cut, own=own)
    assert report.first_failure.name == "fisher[3].v" and "missing" in report.first_failure.where
    short = candidate_update(policy, theta, batch, config, bug="cg_one_iteration_short").without("fisher_v")
    assert check_stagewise(short, own=own).first_failure.name == "cg.n_iter"
    for key, value in (("theta_new", np.nan), ("full_step", np.inf)):
        arr = cand[key].copy()
        arr[0] = value
        report = check_stagewise(cand.with_arrays(**{key: arr}), own=own)
        assert report.first_failure.name == key and "non-finite" in report.first_failure.where


def test_stagewise__the_skip_rule_comes_first():
    from trpo_ref.trpo import Batch

    policy, theta, batch = synthetic_case("gaussian", 0, n=30)
    tiny = Batch(batch.obs, batch.act, batch.adv * 1e-12, batch.logp_old)  # g ≈ 0 to np.allclose
    config = TRPOConfig.preset("baselines", normalize_adv=False)
    good = compute_trace(policy, theta, tiny, config, "baselines")
    assert good.status == "skipped" and check_trace(good, drift=False).ok
    # a candidate that ignores the rule and steps anyway fails where it departs: CG ran
    stepped = compute_trace(policy, theta, tiny, replace(config, skip_if_zero_grad=False))
    cand = Trace(dict(stepped.meta, config=config.to_dict()), stepped.arrays)
    assert stepped.status == "accepted"
    assert check_trace(cand, drift=False).first_failure.name == "cg.n_iter"


def test_stagewise__a_random_cg_start_not_recorded_is_the_seeded_draw():
    policy, theta, batch = synthetic_case("gaussian", 0)
    trace = compute_trace(policy, theta, batch, TRPOConfig.preset("sb3-contrib"), "sb3-contrib")
    report = check_trace(trace.without("cg_x0", "Fx0"), drift=False)
    assert report.ok, report.to_text("failures")
    assert any("cg_x0 not recorded" in n for n in report.notes)


def test_version_1__integer_flags_are_read_and_Fx0_needs_cg_x0(tmp_path):
    import json

    raw = dict(np.load(ROOT / "tests" / "golden_v1" / "sb3-contrib-gaussian.npz"))
    raw["ls_accepted"] = raw["ls_accepted"].astype(np.int64)  # version 1 took any numeric dtype
    np.savez(tmp_path / "v1.npz", **raw)
    assert load_trace(tmp_path / "v1.npz")["ls_accepted"].dtype == bool
    meta = json.loads(bytes(raw["meta_json"]).decode())
    meta["format_version"] = 2
    raw["meta_json"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    raw["Fx0"] = raw["fisher_Fv"][0]
    del raw["cg_x0"]
    np.savez(tmp_path / "v2.npz", **raw)
    with pytest.raises(ValueError, match="'cg_x0'"):
        load_trace(tmp_path / "v2.npz")


def test_cli_check__reference_is_end_to_end_only(tmp_path, capsys):
    policy, theta, batch = synthetic_case("gaussian", 0)
    path = compute_trace(policy, theta, batch, TRPOConfig()).save(tmp_path / "t.npz")
    code, out, _ = run(["check", str(path), "--reference", str(path)], capsys)
    assert code == 0 and "end-to-end" in out
    for extra in (["--mode", "stage-wise"], ["--no-drift"]):
        code, _, err = run(["check", str(path), "--reference", str(path), *extra], capsys)
        assert code == 2 and "--reference" in err
