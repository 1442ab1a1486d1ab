"""What SB3 / RL-Zoo users expect of the command line (trainer review: defect 8 and the conventions list)."""

import contextlib
import os
import signal
import stat
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest

from trpo_ref.cli import main
from trpo_ref.fileio import default_file_mode
from trpo_ref.train import load_policy, read_progress

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
SMALL = ["--n-steps", "32", "--total-steps", "128", "--no-plot"]  # 4 iterations of 32 steps


def _train(out, *extra):
    return main(["train", "CartPole-v1", *SMALL, "--out", str(out), *extra])


def test_version(capsys):
    import trpo_ref

    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"trpo-ref {trpo_ref.__version__}"


def test_off_a_terminal__one_plain_line_per_iteration(tmp_path, capsys):
    """Under nohup, | tee or > log nothing used to be printed until the end (the bar needs a TTY)."""
    assert _train(tmp_path / "r") == 0
    out = capsys.readouterr().out.splitlines()
    lines = [ln for ln in out if ln.startswith("iteration ")]
    assert len(lines) == 4
    for k, ln in enumerate(lines, start=1):
        assert ln.startswith(f"iteration {k}/4  steps {32 * k}  return ") and "  kl " in ln and "steps/s" in ln
    assert _train(tmp_path / "q", "--quiet") == 0
    assert not [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("iteration ")]


def test_plain_lines_reach_a_pipe_while_training(tmp_path):
    """The lines are flushed as they are printed: the first one arrives long before the run ends."""
    args = [sys.executable, "-m", "trpo_ref", "train", "CartPole-v1", "--n-steps", "64", "--total-steps", "64000",
            "--no-plot", "--out", str(tmp_path / "r")]
    proc = subprocess.Popen(args, env=ENV, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        first = proc.stdout.readline()
        assert first.startswith("iteration 1/1000"), first
        assert proc.poll() is None  # still training
    finally:
        proc.kill()
        proc.wait()


# ------------------------------------------------------------------ evaluation
def test_eval__evaluations_npz_in_sb3_layout_and_best_policy(tmp_path, capsys):
    d = tmp_path / "r"
    assert _train(d, "--eval-freq", "64", "--eval-episodes", "3", "--quiet") == 0
    with np.load(d / "evaluations.npz") as z:
        assert sorted(z.files) == ["ep_lengths", "results", "timesteps"]
        assert z["timesteps"].tolist() == [64, 128]
        assert z["results"].shape == (2, 3) and z["ep_lengths"].shape == (2, 3)
        assert z["ep_lengths"].dtype.kind == "i"
        # CartPole pays 1 per step: each return equals its length exactly
        assert np.array_equal(z["results"], z["ep_lengths"].astype(float))
        means = z["results"].mean(axis=1)
    # best_policy.npz is the policy of the best evaluation: evaluated again the same way, it scores that mean
    from trpo_ref.train import evaluate
    import json

    policy, theta, norm, env = load_policy(d / "best_policy.npz")
    best = int(np.argmax(means))  # the first of equal bests
    seed = int(np.random.SeedSequence([0, 6, [64, 128][best]]).generate_state(1)[0] % (2**31))
    assert np.mean(evaluate(policy, theta, env, 3, True, seed, norm)) == means[best]
    assert json.loads((d / "config.json").read_text())["train"]["eval_freq"] == 64
    capsys.readouterr()
    assert main(["eval", str(d), "--best", "--episodes", "3", "--deterministic", "--seed", str(seed)]) == 0
    assert f"mean return {means[best]:.2f}" in capsys.readouterr().out
    assert main(["eval", str(tmp_path), "--best"]) == 2
    assert "--eval-freq" in capsys.readouterr().err


def test_eval__does_not_change_training_and_survives_resume(tmp_path, capsys, monkeypatch):
    import trpo_ref.train as train_mod

    assert _train(tmp_path / "plain", "--quiet") == 0
    assert _train(tmp_path / "eval", "--quiet", "--eval-freq", "32", "--eval-episodes", "2") == 0
    strip = lambda d: [{k: v for k, v in r.items() if k not in ("wall_s", "steps_per_s")}  # noqa: E731
                       for r in read_progress(d / "progress.csv")]
    assert strip(tmp_path / "plain") == strip(tmp_path / "eval")  # evaluation draws from its own generator

    real, calls = train_mod.trpo_step, []

    def dying(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(train_mod, "trpo_step", dying)
    assert _train(tmp_path / "killed", "--quiet", "--eval-freq", "32", "--eval-episodes", "2") == 130
    monkeypatch.setattr(train_mod, "trpo_step", real)
    assert _train(tmp_path / "killed", "--quiet", "--resume") == 0
    with np.load(tmp_path / "eval" / "evaluations.npz") as a, np.load(tmp_path / "killed" / "evaluations.npz") as b:
        for k in a.files:
            assert np.array_equal(a[k], b[k]), k
    assert np.array_equal(load_policy(tmp_path / "eval" / "best_policy.npz")[1],
                          load_policy(tmp_path / "killed" / "best_policy.npz")[1])


# ------------------------------------------------------------------ tensorboard
def test_tensorboard__sb3_key_names(tmp_path, monkeypatch, capsys):
    scalars = []

    class FakeWriter:
        def __init__(self, log_dir):
            self.log_dir = log_dir

        def add_scalar(self, key, value, step):
            scalars.append((key, value, step))

        def close(self):
            scalars.append(("closed", None, None))

    monkeypatch.setitem(sys.modules, "tensorboardX", types.SimpleNamespace(SummaryWriter=FakeWriter))
    assert _train(tmp_path / "r", "--quiet", "--tensorboard-log", str(tmp_path / "tb"), "--eval-freq", "64") == 0
    keys = {k for k, _, _ in scalars}
    assert {"rollout/ep_rew_mean", "rollout/ep_len_mean", "train/kl_divergence_loss", "train/explained_variance",
            "time/fps", "time/total_timesteps", "eval/mean_reward"} <= keys
    rows = read_progress(tmp_path / "r" / "progress.csv")
    kl = [(v, s) for k, v, s in scalars if k == "train/kl_divergence_loss"]
    assert kl == [(float(r["kl"]), int(r["total_steps"])) for r in rows]  # SB3 logs against env steps
    assert scalars[-1][0] == "closed"


def test_tensorboard__missing_extra_is_one_line_before_anything_is_written(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    assert _train(tmp_path / "r", "--tensorboard-log", str(tmp_path / "tb")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "trpo-ref[tensorboard]" in err[0]
    assert not (tmp_path / "r").exists()


# ------------------------------------------------------------------ check | head
def test_check_into_a_closed_pipe_keeps_the_checks_exit_status(tmp_path, capsys):
    trace = tmp_path / "case.npz"
    assert main(["trace", "--preset", "sb3-contrib", "--policy", "gaussian", "--seed", "0", "-o", str(trace)]) == 0
    proc = subprocess.Popen([sys.executable, "-m", "trpo_ref", "check", str(trace)], env=ENV, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before the report is written (as `| head` after its lines)
    err = proc.stderr.read().decode()
    assert proc.wait() == 0, err  # was 2, the "unusable file" status
    assert err == ""


# ------------------------------------------------------------------ plot -o
def test_plot__output_directory_gets_plot_png_and_the_message_names_it(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    d = tmp_path / "r"
    assert _train(d, "--quiet") == 0
    outdir = tmp_path / "figs"
    outdir.mkdir()
    capsys.readouterr()
    assert main(["plot", str(d), "-o", str(outdir)]) == 0
    assert capsys.readouterr().out.startswith(f"wrote {outdir / 'plot.png'} ")
    assert (outdir / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (tmp_path / "figs.png").exists()
    assert stat.S_IMODE(os.stat(outdir / "plot.png").st_mode) == default_file_mode()
    assert main(["plot", str(d), "-o", str(tmp_path / "curves")]) == 2  # no extension, not a directory
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "curves.png" in err[0]


def test_run_outputs_are_created_with_the_mode_of_open(tmp_path):
    d = tmp_path / "r"
    assert _train(d, "--quiet", "--eval-freq", "64") == 0
    for p in d.iterdir():
        if p.name != ".lock":
            assert stat.S_IMODE(os.stat(p).st_mode) == default_file_mode(), p.name


# ------------------------------------------------------------------ --async interrupt
@pytest.mark.parametrize("how", ["ctrl-c", "kill"])
def test_async__interrupt_prints_no_worker_traceback(tmp_path, how):
    d = tmp_path / "r"
    args = [sys.executable, "-m", "trpo_ref", "train", "CartPole-v1", "--async", "--n-envs", "2", "--n-steps", "64",
            "--total-steps", "1000000", "--quiet", "--no-plot", "--out", str(d)]
    # The trainer starts with SIGINT at its default action, as a terminal starts it.  A test run launched as a
    # background job of a non-interactive shell has SIGINT ignored, and the trainer would inherit that and
    # never see the Ctrl-C (seen: the run went on in CG 60 s after the signal).  PYTHONFAULTHANDLER: should the
    # trainer still not stop, SIGABRT below makes it print every thread's stack, so that the failure says where.
    proc = subprocess.Popen(args, env={**ENV, "PYTHONFAULTHANDLER": "1"}, cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if (d / "progress.csv").exists() and len((d / "progress.csv").read_text().splitlines()) >= 3:
            break
        time.sleep(0.02)
    assert proc.poll() is None, proc.stderr.read()
    if how == "ctrl-c":
        os.killpg(proc.pid, signal.SIGINT)  # the terminal sends SIGINT to the whole process group
    else:
        proc.send_signal(signal.SIGTERM)  # `kill PID`: the trainer only
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGABRT)  # faulthandler dumps the stacks, then the process ends
        _, err = proc.communicate(timeout=30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the workers, if the trainer left them
        pytest.fail(f"the trainer did not stop within 60 s of the signal; its stacks:\n{err}")
    assert proc.returncode == 130, err
    assert "Traceback" not in err and err.strip().splitlines() == ["trpo-ref train: interrupted"], err
    assert not [p for p in d.iterdir() if p.name.endswith(".tmp")]


def test_tensorboard__unusable_log_dir_fails_before_the_run_writes_anything(tmp_path, monkeypatch, capsys):
    class RefusingWriter:
        def __init__(self, log_dir):
            raise NotADirectoryError(20, "Not a directory", str(log_dir))

    monkeypatch.setitem(sys.modules, "tensorboardX", types.SimpleNamespace(SummaryWriter=RefusingWriter))
    assert _train(tmp_path / "r", "--tensorboard-log", str(tmp_path / "afile")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Not a directory" in err[0]
    assert not (tmp_path / "r").exists()
