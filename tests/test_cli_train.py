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
               "--config", "--out", "--resume", "--quiet", "--threads", "--no-plot", "--eval-freq",
               "--eval-episodes", "--eval-stochastic", "--tensorboard-log"]),
    ("eval", ["--episodes", "--deterministic", "--seed", "--best"]),
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


def test_train__resume_of_a_directory_without_a_run(capsys, tmp_path):
    _one_line_error(*_run(["train", "CartPole-v1", "--resume", "--out", str(tmp_path)], capsys), "no trpo_ref run",
                    "config.json")


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


# ------------------------------------------------------------- review regressions
def _small_run(d, *extra):
    return main(["train", "CartPole-v1", "--n-steps", "64", "--total-steps", "256", "--out", str(d), "--quiet",
                 "--no-plot", *extra])


def test_resume__killed_extension_resumed_without_total_steps_reaches_the_extended_target(tmp_path, monkeypatch,
                                                                                         capsys):
    import trpo_ref.train as train_mod

    d = tmp_path / "b"
    assert _small_run(d) == 0
    real, calls = train_mod.trpo_step, []

    def dying(*a, **k):  # the extension is "killed" in its 3rd iteration, before any new checkpoint
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("killed")
        return real(*a, **k)

    monkeypatch.setattr(train_mod, "trpo_step", dying)
    with pytest.raises(RuntimeError, match="killed"):
        main(["train", "CartPole-v1", "--resume", "--total-steps", "640", "--out", str(d), "--quiet", "--no-plot"])
    monkeypatch.setattr(train_mod, "trpo_step", real)
    assert json.loads((d / "config.json").read_text())["train"]["total_steps"] == 640
    capsys.readouterr()
    assert main(["train", "CartPole-v1", "--resume", "--out", str(d), "--quiet", "--no-plot"]) == 0
    assert "640 steps" in capsys.readouterr().out
    assert len((d / "progress.csv").read_text().splitlines()) == 1 + 10
    # a resume with nothing left to do reports the run's real totals, not "0 steps"
    assert main(["train", "CartPole-v1", "--resume", "--out", str(d), "--quiet", "--no-plot"]) == 0
    assert "640 steps" in capsys.readouterr().out


def test_resume__a_different_preset_or_config_is_a_one_line_error(trained_run, capsys, tmp_path):
    _one_line_error(*_run(["train", "CartPole-v1", "--resume", "--out", str(trained_run), "--preset", "paper"],
                          capsys), "--preset paper", "trpo.")
    conf = tmp_path / "c.json"
    conf.write_text(json.dumps({"trpo": {"max_kl": 0.05}}))
    _one_line_error(*_run(["train", "CartPole-v1", "--resume", "--out", str(trained_run), "--config", str(conf)],
                          capsys), "trpo.max_kl", str(conf))
    conf.write_text(json.dumps({"gamma": 0.5}))
    _one_line_error(*_run(["train", "CartPole-v1", "--resume", "--out", str(trained_run), "--config", str(conf)],
                          capsys), "train.gamma")


@pytest.mark.parametrize("doc, needle", [
    ({"trpo": {"bogus": 1}}, "bogus"),
    ({"gamma": "x"}, "gamma"),
    ({"hidden_sizes": 5}, "hidden_sizes"),
    ({"train": [1]}, "'train'"),
    ({"trpo": 3}, "'trpo'"),
    ({"train": {"normalize_obs": "yes"}}, "normalize_obs"),
    ({"cg_iters": "x"}, "cg_iters"),
    ({"env_id": "Pendulum-v1"}, "env_id"),
    ({"train": {"env_id": "Pendulum-v1"}}, "env_id"),
])
def test_train__config_values_of_the_wrong_type_or_env_are_one_line_errors(doc, needle, capsys, tmp_path):
    conf = tmp_path / "c.json"
    conf.write_text(json.dumps(doc))
    _one_line_error(*_run(["train", "CartPole-v1", "--config", str(conf), "--out", str(tmp_path / "x")], capsys),
                    needle, "c.json")
    assert not (tmp_path / "x").exists()


def test_train__out_is_a_file(capsys, tmp_path):
    f = tmp_path / "afile"
    f.touch()
    _one_line_error(*_run(["train", "CartPole-v1", "--out", str(f)], capsys), str(f))


def test_main__oserror_is_one_line_naming_the_path(capsys, tmp_path, monkeypatch):
    import trpo_ref.train as train_mod

    def boom(*a, **k):
        raise IsADirectoryError(21, "Is a directory", str(tmp_path / "where"))

    monkeypatch.setattr(train_mod, "train", boom)
    _one_line_error(*_run(["train", "CartPole-v1", "--out", str(tmp_path / "r")], capsys), "where", "Is a directory")


def test_train__failed_setup_leaves_no_empty_run_dir(capsys, tmp_path, monkeypatch):
    import trpo_ref.train as train_mod

    def boom(*a, **k):
        raise ValueError("no such env here")

    monkeypatch.setattr(train_mod, "VectorRollout", boom)
    _one_line_error(*_run(["train", "CartPole-v1", "--out", str(tmp_path / "new" / "run")], capsys), "no such env")
    assert not (tmp_path / "new" / "run").exists()


def test_missing_entries_name_the_file_and_the_entry(capsys, tmp_path):
    d = tmp_path / "r"
    assert _small_run(d) == 0
    capsys.readouterr()
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({k: v for k, v in cfg.items() if k != "train"}))
    _one_line_error(*_run(["train", "CartPole-v1", "--resume", "--out", str(d)], capsys), "config.json",
                    "missing entry 'train'")
    (d / "config.json").write_text(json.dumps(cfg))
    import numpy as np

    with np.load(d / "checkpoint.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    (d / "checkpoint.prev.npz").unlink(missing_ok=True)  # no fallback: the error is reported
    np.savez(d / "checkpoint.npz", **{k: v for k, v in arrays.items() if k != "meta"})
    _one_line_error(*_run(["train", "CartPole-v1", "--resume", "--out", str(d)], capsys), "checkpoint.npz",
                    "missing entry 'meta'")
    rollout_key = next(k for k in arrays if k not in ("meta", "theta", "w", "checksum") and not k.startswith("adam/"))
    np.savez(d / "checkpoint.npz", **{k: v for k, v in arrays.items() if k not in (rollout_key, "checksum")})
    _one_line_error(*_run(["train", "CartPole-v1", "--resume", "--out", str(d)], capsys), "checkpoint.npz",
                    "missing entry 'checksum'")
    meta = json.loads(str(arrays["meta"]))
    meta["format"] = 1  # a format-1 checkpoint has no checksum: the missing entry itself is reported
    np.savez(d / "checkpoint.npz", **{k: v for k, v in arrays.items() if k not in (rollout_key, "checksum", "meta")},
             meta=np.array(json.dumps(meta)))
    _one_line_error(*_run(["train", "CartPole-v1", "--resume", "--out", str(d)], capsys), "checkpoint.npz",
                    "missing entry")


def test_plot__missing_column_and_no_usable_rows_are_one_line_errors(trained_run, capsys, tmp_path):
    pytest.importorskip("matplotlib")
    d = tmp_path / "r"
    d.mkdir()
    (d / "config.json").write_text((trained_run / "config.json").read_text())
    (d / "progress.csv").write_text("iteration,total_steps\n1,64\n")
    _one_line_error(*_run(["plot", str(d), "-o", str(tmp_path / "p.png")], capsys), "progress.csv",
                    "ep_return_mean")
    header = (trained_run / "progress.csv").read_text().splitlines()[0]
    (d / "progress.csv").write_text(header + "\n")
    _one_line_error(*_run(["plot", str(d), "-o", str(tmp_path / "p.png")], capsys), "nothing to plot")
