"""`trpo-ref train / eval / plot`: help, one-line errors with a non-zero exit, a small end-to-end run."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from trpo_ref.cli import main

ROOT = Path(__file__).resolve().parents[1]


def _run(argv, capsys):
    """(exit status, stderr) of the CLI in process; argparse's own exits are caught too."""
    try:
        rc = main(argv)
    except SystemExit as exc:
        rc = exc.code
    err = capsys.readouterr().err
    return rc, err


def _one_line_error(rc, err, *needles):
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err  # one line, no traceback, no usage block
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], (n, lines[0])


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("run") / "cp"
    rc = main(["train", "CartPole-v1", "--n-steps", "64", "--total-steps", "256", "--out", str(d), "--quiet"])
    assert rc == 0
    return d


# ----------------------------------------------------------------------- help
@pytest.mark.parametrize("command, options", [
    ("train", ["--seed", "--total-steps", "--preset", "--n-envs", "--n-steps", "--async", "--device", "--dtype",
               "--config", "--out", "--resume", "--quiet", "--threads", "--no-plot"]),
    ("eval", ["--episodes", "--deterministic", "--seed"]),
    ("plot", ["--output"]),
])
def test_help__explains_every_option(command, options, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for opt in options:
        assert opt in out


# ---------------------------------------------------------------------- errors
def test_train__unknown_env_id(capsys, tmp_path):
    _one_line_error(*_run(["train", "CartPolee-v1", "--out", str(tmp_path / "x")], capsys), "CartPolee-v1")
    assert not (tmp_path / "x").exists()


def test_train__unknown_env_id_suggests_close_ids(capsys, tmp_path):
    _one_line_error(*_run(["train", "CartPole-v7", "--out", str(tmp_path / "x")], capsys), "CartPole-v1")


@pytest.mark.parametrize("argv, needle", [
    (["--n-envs", "0"], "--n-envs"),
    (["--total-steps", "many"], "--total-steps"),
    (["--seed", "-1"], "--seed"),
    (["--preset", "nope"], "--preset"),
    (["--dtype", "float16"], "--dtype"),
    (["--device", "tpu"], "device"),
])
def test_train__bad_option_value(argv, needle, capsys, tmp_path):
    _one_line_error(*_run(["train", "CartPole-v1", "--out", str(tmp_path / "x"), *argv], capsys), needle)


def test_train__bad_config_file(capsys, tmp_path):
    _one_line_error(*_run(["train", "CartPole-v1", "--config", str(tmp_path / "missing.json")], capsys), "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    _one_line_error(*_run(["train", "CartPole-v1", "--config", str(bad)], capsys), "not valid JSON")
    unknown = tmp_path / "unknown.json"
    unknown.write_text(json.dumps({"max_kll": 0.1}))
    _one_line_error(*_run(["train", "CartPole-v1", "--config", str(unknown)], capsys), "max_kll")


def test_train__resume_without_checkpoint(capsys, tmp_path):
    _one_line_error(*_run(["train", "CartPole-v1", "--resume", "--out", str(tmp_path)], capsys), "checkpoint")


def test_train__resume_with_changed_option_and_fresh_start_in_used_dir(trained_run, capsys):
    _one_line_error(*_run(["train", "CartPole-v1", "--resume", "--out", str(trained_run), "--n-envs", "3"], capsys),
                    "--n-envs")
    _one_line_error(*_run(["train", "CartPole-v1", "--out", str(trained_run)], capsys), "--resume")


@pytest.mark.parametrize("command", ["eval", "plot"])
def test_unreadable_run_dir(command, capsys, tmp_path):
    _one_line_error(*_run([command, str(tmp_path / "nowhere")], capsys), "nowhere")
    _one_line_error(*_run([command, str(tmp_path)], capsys), str(tmp_path))


def test_eval__corrupt_policy_file(capsys, tmp_path):
    (tmp_path / "policy.npz").write_bytes(b"not a zip file")
    _one_line_error(*_run(["eval", str(tmp_path)], capsys), "policy.npz")


def test_eval__bad_episode_count(trained_run, capsys):
    _one_line_error(*_run(["eval", str(trained_run), "--episodes", "0"], capsys), "--episodes")


# ------------------------------------------------------------------ end to end
def test_train_eval_plot__end_to_end(trained_run, capsys, tmp_path):
    for name in ("config.json", "progress.csv", "episodes.csv", "checkpoint.npz", "policy.npz"):
        assert (trained_run / name).is_file(), name
    assert main(["eval", str(trained_run), "--episodes", "2", "--deterministic"]) == 0
    assert "mean return" in capsys.readouterr().out
    pytest.importorskip("matplotlib")
    assert (trained_run / "plot.png").is_file()  # written by train
    out = tmp_path / "both.png"
    assert main(["plot", str(trained_run), str(trained_run), "-o", str(out)]) == 0
    assert out.stat().st_size > 0


def test_python_dash_m__runs_the_cli():
    res = subprocess.run([sys.executable, "-m", "trpo_ref", "train", "NoSuchEnv-v0"], cwd=ROOT,
                         capture_output=True, text=True)
    assert res.returncode == 2
    assert res.stderr.strip().count("\n") == 0 and "NoSuchEnv-v0" in res.stderr
