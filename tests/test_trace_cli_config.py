"""``trpo-ref trace --config FILE`` and ``trpo-ref check --config FILE``: custom conventions from a file."""

from __future__ import annotations

import json
import re

import pytest

from trpo_ref import TRPOConfig, cli
from trpo_ref.oracle import load_trace
from trpo_ref.trace_cli import config_from_file


def run_cli(argv, capsys):
    rc = cli.main([str(a) for a in argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_config_from_file__json_and_yaml_on_top_of_a_base(tmp_path):
    (tmp_path / "c.json").write_text(json.dumps({"max_kl": 0.05, "kl_strict": True}))
    (tmp_path / "c.yaml").write_text("max_kl: 0.05\nkl_strict: true\n")
    (tmp_path / "c.conf").write_text("max_kl: 0.05\nkl_strict: true\n")  # unknown suffix: JSON, then YAML
    want = TRPOConfig.preset("tianshou", max_kl=0.05)
    for name in ("c.json", "c.yaml", "c.conf"):
        assert config_from_file(tmp_path / name, TRPOConfig.preset("tianshou")) == want
    assert config_from_file(tmp_path / "c.json") == TRPOConfig(max_kl=0.05, kl_strict=True)
    # YAML 1.2 numbers (1e-3 is a float) and a run's config.json layout ({"trpo": {...}, "train": ...})
    (tmp_path / "e.yaml").write_text("cg_damping: 1e-3\n")
    assert config_from_file(tmp_path / "e.yaml").cg_damping == 1e-3
    (tmp_path / "run.json").write_text(json.dumps({"train": {"seed": 3}, "trpo": TRPOConfig(max_kl=0.02).to_dict()}))
    assert config_from_file(tmp_path / "run.json") == TRPOConfig(max_kl=0.02)


@pytest.mark.parametrize("text, message", [
    ('{"max_k": 1}', r"unknown TRPOConfig fields \['max_k'\]"),
    ('{"max_kl": -1}', r"TRPOConfig.max_kl must be > 0"),
    ("[1, 2]", "expected a mapping of TRPOConfig fields, got list"),
    ("{not json", "is not valid JSON"),
])
def test_cli__bad_config_file_exits_2_with_one_line(tmp_path, capsys, text, message):
    path = tmp_path / "c.json"
    path.write_text(text)
    rc, _, err = run_cli(["trace", "--config", path, "--policy", "gaussian", "-o", tmp_path / "t.npz"], capsys)
    assert rc == 2 and err.count("\n") == 1
    assert f"--config {path}" in err
    assert re.search(message, err), err


def test_cli_trace__config_alone_or_on_a_preset_and_preset_no_longer_required(tmp_path, capsys):
    cfg = tmp_path / "mine.yaml"
    cfg.write_text("max_kl: 0.05\ncg_iters: 12\n")
    rc, out, _ = run_cli(["trace", "--config", cfg, "--policy", "gaussian", "-o", tmp_path / "a.npz"], capsys)
    assert rc == 0 and f"config {cfg}" in out
    a = load_trace(tmp_path / "a.npz")
    assert a.config == TRPOConfig(max_kl=0.05, cg_iters=12) and a.preset is None
    rc, out, _ = run_cli(["trace", "--preset", "skrl", "--config", cfg, "--policy", "gaussian",
                          "-o", tmp_path / "b.npz"], capsys)
    b = load_trace(tmp_path / "b.npz")
    assert rc == 0 and b.config == TRPOConfig.preset("skrl", max_kl=0.05, cg_iters=12) and b.preset == "skrl"
    rc, _, err = run_cli(["trace", "--policy", "gaussian", "-o", tmp_path / "c.npz"], capsys)
    assert rc == 2 and "give --preset NAME, --config FILE, or both" in err


def test_cli_check__config_replaces_the_traces_conventions(tmp_path, capsys):
    cfg = tmp_path / "mine.json"
    cfg.write_text(json.dumps({"max_kl": 0.05, "cg_iters": 12}))
    run_cli(["trace", "--preset", "skrl", "--config", cfg, "--policy", "gaussian", "-o", tmp_path / "t.npz"], capsys)
    rc, out, _ = run_cli(["check", tmp_path / "t.npz", "--no-drift"], capsys)  # its own config: agrees
    assert rc == 0
    # against the plain preset the 12 CG iterations exceed skrl's cap of 10: the first failure says so
    rc, out, _ = run_cli(["check", tmp_path / "t.npz", "--preset", "skrl", "--no-drift"], capsys)
    assert rc == 1 and "first: cg.n_iter" in out and "conventions: preset skrl" in out
    # the same file on top of the preset: agrees again
    rc, out, _ = run_cli(["check", tmp_path / "t.npz", "--preset", "skrl", "--config", cfg, "--no-drift"], capsys)
    assert rc == 0 and f"conventions: preset skrl + config {cfg}" in out
    # a config on top of the trace's own: with a tiny δ, β and the tries change
    small = tmp_path / "small.json"
    small.write_text(json.dumps({"max_kl": 1e-6}))
    rc, out, _ = run_cli(["check", tmp_path / "t.npz", "--config", small, "--no-drift"], capsys)
    assert rc == 1 and "the trace's config + config" in out
    rc, _, err = run_cli(["check", tmp_path / "t.npz", "--config", small, "--reference", tmp_path / "t.npz"], capsys)
    assert rc == 2 and "not to --reference" in err
