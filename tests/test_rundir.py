"""Run directories never lose or mix data: lock, unique names, refusal, trimming by iteration,
validation before writing, checkpoint rules and checksums, resume of a run killed before its
first checkpoint.  Each test is a regression test of the trainer review (defects 2-6)."""

import errno
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from trpo_ref import rundir
from trpo_ref.cli import main
from trpo_ref.train import read_progress

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
SMALL = ["--n-steps", "32", "--total-steps", "128", "--quiet", "--no-plot"]  # 4 iterations


def _train(out, *extra):
    return main(["train", "CartPole-v1", *SMALL, "--out", str(out), *extra])


def _snapshot(d: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir()) if p.is_file()}


def _one_line(capsys, *needles):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    for n in needles:
        assert n in err[0], (n, err[0])
    return err[0]


def _same_run(a: Path, b: Path):
    from trpo_ref.train import WALL_CLOCK_COLUMNS, load_policy

    def rows(d):
        return [{k: v for k, v in r.items() if k not in WALL_CLOCK_COLUMNS} for r in read_progress(d / "progress.csv")]

    assert rows(a) == rows(b)
    assert (a / "episodes.csv").read_text() == (b / "episodes.csv").read_text()
    assert np.array_equal(load_policy(a / "policy.npz")[1], load_policy(b / "policy.npz")[1])


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    d = tmp_path_factory.mktemp("straight") / "run"
    assert _train(d) == 0
    return d


# ------------------------------------------------------------------------- lock
def test_lock__a_second_process_on_the_directory_stops_and_touches_nothing(straight, tmp_path, capsys):
    d = tmp_path / "run"
    assert _train(d, "--total-steps", "64") == 0
    capsys.readouterr()
    before = _snapshot(d)
    with open(d / rundir.LOCK_NAME, "a") as fh:  # another trpo-ref process holds the run
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert _train(d, "--resume") == 2
        _one_line(capsys, str(d), "in use by another trpo-ref process")
    assert _snapshot(d) == before


def test_lock__two_processes_started_on_one_directory_never_interleave(tmp_path):
    d = tmp_path / "run"
    args = [sys.executable, "-m", "trpo_ref", "train", "CartPole-v1", "--n-steps", "64", "--total-steps", "3200",
            "--quiet", "--no-plot", "--out", str(d)]
    procs = [subprocess.Popen(args + ["--seed", str(s)], env=ENV, cwd=tmp_path, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for s in (0, 1)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(rc for rc, _ in results)
    assert codes == [0, 2], results  # exactly one ran; the other stopped with one line
    err = next(e for rc, e in results if rc == 2).strip().splitlines()
    assert len(err) == 1 and ("in use by another" in err[0] or "already holds a run" in err[0])
    rows = read_progress(d / "progress.csv")
    assert [int(r["iteration"]) for r in rows] == list(range(1, 51))
    seed = json.loads((d / "config.json").read_text())["train"]["seed"]
    winner = [s for s, (rc, _) in zip((0, 1), results) if rc == 0][0]
    assert seed == winner


# ------------------------------------------------------------------- names
def test_default_names__unique_for_jobs_started_in_the_same_second(tmp_path, monkeypatch):
    monkeypatch.setattr(time, "strftime", lambda fmt, *a: "20261130-120000")
    a = rundir.claim_new_run_dir(tmp_path / "CartPole-v1", 0)
    b = rundir.claim_new_run_dir(tmp_path / "CartPole-v1", 0)
    assert a != b and a.is_dir() and b.is_dir()
    assert a.name == "seed0-20261130-120000" and b.name == "seed0-20261130-120000-1"


def test_default_names__the_cli_claims_its_directory_before_training(tmp_path, monkeypatch, capsys):
    """Two jobs, same seed, same second: the second must not pick the first one's still-empty directory."""
    import trpo_ref.train as train_mod
    import trpo_ref.train_cli as cli_mod

    monkeypatch.setattr(cli_mod, "RUNS_ROOT", tmp_path / "runs")
    monkeypatch.setattr(time, "strftime", lambda fmt, *a: "20261130-120000")
    real_train, seen = train_mod.train, []

    def second_job_starts_meanwhile(cfg, tc, run_dir, **kw):
        seen.append(Path(run_dir))
        if len(seen) == 1:  # while job 1 sets up, job 2 starts and picks its directory
            assert main(["train", "CartPole-v1", *SMALL]) == 0
        return real_train(cfg, tc, run_dir, **kw)

    monkeypatch.setattr(train_mod, "train", second_job_starts_meanwhile)
    assert main(["train", "CartPole-v1", *SMALL]) == 0
    assert len(seen) == 2 and seen[0] != seen[1]
    for d in seen:
        assert len(read_progress(d / "progress.csv")) == 4


# ---------------------------------------------------------------- refusal
def test_out__a_foreign_directory_is_refused_and_untouched(tmp_path, capsys):
    d = tmp_path / "mine"
    d.mkdir()
    (d / "notes.txt").write_text("my notes")
    (d / "progress.csv").write_text("my own progress\n")
    before = _snapshot(d)
    assert _train(d) == 2
    _one_line(capsys, str(d), "holds no trpo_ref run")
    assert _snapshot(d) == before and sorted(p.name for p in d.iterdir()) == ["notes.txt", "progress.csv"]


def test_out__a_run_killed_before_its_first_checkpoint_is_not_overwritten(tmp_path, capsys, monkeypatch):
    d = tmp_path / "run"
    _kill_in_first_iteration(d, monkeypatch)
    capsys.readouterr()
    before = _snapshot(d)
    assert _train(d) == 2
    _one_line(capsys, "already holds a run", "--resume")
    assert _snapshot(d) == before


def test_out__an_empty_directory_is_fine(tmp_path):
    d = tmp_path / "empty"
    d.mkdir()
    assert _train(d) == 0


# -------------------------------------------------------- killed before checkpoint
def _kill_in_first_iteration(d, monkeypatch):
    """A run "killed" (KeyboardInterrupt) inside its first iteration, before any checkpoint."""
    import trpo_ref.train as train_mod

    real = train_mod.trpo_step

    def dying(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_mod, "trpo_step", dying)
    assert _train(d) == 130
    monkeypatch.setattr(train_mod, "trpo_step", real)
    assert (d / "config.json").is_file() and not (d / rundir.CHECKPOINT).exists()


def test_resume__a_run_killed_before_its_first_checkpoint_restarts_and_equals_the_straight_run(
        straight, tmp_path, monkeypatch, capsys):
    d = tmp_path / "run"
    _kill_in_first_iteration(d, monkeypatch)
    capsys.readouterr()
    assert _train(d, "--resume") == 0  # was: "has no checkpoint.npz to continue from"
    assert "no checkpoint" in capsys.readouterr().err
    _same_run(straight, d)


def test_resume__sigkill_before_the_first_checkpoint(straight, tmp_path):
    d = tmp_path / "run"
    # one long iteration (4096 steps, about a second) so that the kill lands inside it
    args = [sys.executable, "-m", "trpo_ref", "train", "CartPole-v1", "--n-steps", "4096", "--total-steps", "4096",
            "--quiet", "--no-plot", "--out", str(d)]
    proc = subprocess.Popen(args, env=ENV, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while not (d / "progress.csv").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (d / rundir.CHECKPOINT).exists(), "the kill came after the first checkpoint: make iteration 1 longer"
    subprocess.run(args + ["--resume"], env=ENV, cwd=tmp_path, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    ref = tmp_path / "ref"
    subprocess.run(args[:-1] + [str(ref)], env=ENV, cwd=tmp_path, check=True, stdout=subprocess.DEVNULL)
    _same_run(ref, d)


# ------------------------------------------------------------ trim by iteration
@pytest.mark.parametrize("mangle, needle", [
    (lambda rows: rows[:1] + rows[1:2] + rows[1:], "exactly one row"),   # iteration 1 twice (two writers)
    (lambda rows: rows[:1] + rows[2:], "exactly one row"),               # iteration 1 missing
])
def test_resume__progress_is_trimmed_by_iteration_number_not_line_count(tmp_path, capsys, mangle, needle):
    d = tmp_path / "run"
    assert _train(d, "--total-steps", "64") == 0  # 2 iterations, checkpoint at 2
    capsys.readouterr()
    lines = (d / "progress.csv").read_text().splitlines(keepends=True)
    (d / "progress.csv").write_text("".join(mangle(lines)))
    before = _snapshot(d)
    assert _train(d, "--resume", "--total-steps", "128") == 2
    _one_line(capsys, "progress.csv", needle)
    assert _snapshot(d) == before  # nothing written, config.json included


def test_resume__rows_after_the_checkpoint_go_whatever_their_position(tmp_path, capsys):
    d = tmp_path / "run"
    assert _train(d, "--total-steps", "64") == 0
    text = (d / "progress.csv").read_text()
    header, r1, r2 = text.splitlines(keepends=True)
    r3 = r2.replace("2,64,", "3,96,", 1)
    # the checkpoint is at iteration 2; a row of iteration 3 (written after it) and a cut line follow
    (d / "progress.csv").write_text(header + r1 + r2 + r3 + "4,12")
    ep = (d / "episodes.csv").read_text()
    (d / "episodes.csv").write_text(ep + "3,96,10.0,10\n")
    assert _train(d, "--resume", "--total-steps", "64") == 0  # nothing left to do: only the trim
    assert [int(r["iteration"]) for r in read_progress(d / "progress.csv")] == [1, 2]
    assert (d / "episodes.csv").read_text() == ep


# ------------------------------------------------------------ validate first
def test_resume__a_failed_resume_leaves_config_json_byte_identical(tmp_path, capsys):
    d = tmp_path / "run"
    assert _train(d, "--total-steps", "64") == 0
    (d / rundir.PREVIOUS_CHECKPOINT).unlink(missing_ok=True)
    (d / rundir.CHECKPOINT).write_bytes(b"not a zip file")
    capsys.readouterr()
    before = _snapshot(d)
    assert _train(d, "--resume", "--total-steps", "256") == 2  # was: config.json rewritten first
    _one_line(capsys, "checkpoint.npz")
    assert _snapshot(d) == before


def test_checkpoint__a_full_disk_names_the_file_and_leaves_no_debris(tmp_path, capsys, monkeypatch):
    d = tmp_path / "run"
    assert _train(d, "--total-steps", "32") == 0  # a first checkpoint exists
    capsys.readouterr()
    good = (d / rundir.CHECKPOINT).read_bytes()
    real = np.savez

    def full(fh, **arrays):
        if "checksum" in arrays:  # the checkpoint write
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fh, **arrays)

    monkeypatch.setattr(np, "savez", full)
    assert _train(d, "--resume", "--total-steps", "96") == 2
    _one_line(capsys, str(d / rundir.CHECKPOINT), "No space left on device")
    assert not [p for p in d.iterdir() if p.name.endswith(".tmp")]
    assert (d / rundir.CHECKPOINT).read_bytes() == good or (d / rundir.PREVIOUS_CHECKPOINT).read_bytes() == good


def test_interrupt__leaves_no_temporary_files(tmp_path, monkeypatch):
    d = tmp_path / "run"
    real = np.savez
    calls = []

    def interrupted(fh, **arrays):
        calls.append(1)
        if len(calls) == 2:  # Ctrl-C in the middle of the second checkpoint write
            fh.write(b"partial")
            raise KeyboardInterrupt
        return real(fh, **arrays)

    monkeypatch.setattr(np, "savez", interrupted)
    assert _train(d, "--config", _every(tmp_path, 2)) == 130
    assert not [p for p in d.iterdir() if p.name.endswith(".tmp")]


def _every(tmp_path, k, seconds=600.0):
    p = tmp_path / f"every{k}.json"
    p.write_text(json.dumps({"checkpoint_every": k, "checkpoint_seconds": seconds}))
    return str(p)


# ---------------------------------------------------------------- checkpoints
def test_checkpoint__after_the_first_iteration_then_every_k_then_the_last(tmp_path, monkeypatch):
    import trpo_ref.train as train_mod

    its = []
    real = rundir.save_checkpoint
    monkeypatch.setattr(rundir, "save_checkpoint", lambda d, meta, arr: (its.append(meta["iteration"]),
                                                                         real(d, meta, arr)))
    assert main(["train", "CartPole-v1", "--n-steps", "16", "--total-steps", "112", "--quiet", "--no-plot",
                 "--config", _every(tmp_path, 3), "--out", str(tmp_path / "a")]) == 0
    assert its == [1, 3, 6, 7]
    its.clear()
    # by elapsed time too: a limit of 1 ns since the last checkpoint writes one after every iteration
    assert main(["train", "CartPole-v1", "--n-steps", "16", "--total-steps", "64", "--quiet", "--no-plot",
                 "--config", _every(tmp_path, 100, 1e-9), "--out", str(tmp_path / "b")]) == 0
    assert its == [1, 2, 3, 4]
    assert train_mod.CHECKPOINT_FORMAT == 2


def test_checkpoint__checksum_detects_an_altered_theta_and_the_previous_one_is_used(straight, tmp_path, capsys):
    d = tmp_path / "run"
    assert main(["train", "CartPole-v1", "--n-steps", "32", "--total-steps", "96", "--quiet", "--no-plot",
                 "--config", _every(tmp_path, 2), "--out", str(d)]) == 0  # checkpoints at 1, 2, 3
    capsys.readouterr()
    z = rundir.load_npz(d / rundir.CHECKPOINT)
    z["theta"] = z["theta"] + 1e-3  # a valid file whose θ was altered
    np.savez(d / rundir.CHECKPOINT, **z)
    assert _train(d, "--resume") == 0  # was: resumed silently from the altered θ
    err = capsys.readouterr().err
    assert "checksum mismatch" in err and "previous checkpoint" in err and "iteration 2" in err
    _same_run(straight, d)  # continued from iteration 2 exactly


def test_checkpoint__altered_and_no_previous_one_is_a_clear_error(tmp_path, capsys):
    d = tmp_path / "run"
    assert _train(d, "--total-steps", "32") == 0
    capsys.readouterr()
    (d / rundir.PREVIOUS_CHECKPOINT).unlink(missing_ok=True)
    z = rundir.load_npz(d / rundir.CHECKPOINT)
    z["w"] = z["w"] * 2
    np.savez(d / rundir.CHECKPOINT, **z)
    before = _snapshot(d)
    assert _train(d, "--resume", "--total-steps", "64") == 2
    _one_line(capsys, "checkpoint.npz", "checksum mismatch")
    assert _snapshot(d) == before


def test_checkpoint__save_and_load_are_inverse(tmp_path):
    meta = {"format": 2, "iteration": 3}
    arrays = {"theta": np.arange(4.0), "rollout/x": np.array([1, 2], dtype=np.int64)}
    rundir.save_checkpoint(tmp_path, meta, arrays)
    m, a, path, note = rundir.load_checkpoint(tmp_path)
    assert m == meta and note is None and path.name == rundir.CHECKPOINT
    assert set(a) == set(arrays) and all(np.array_equal(a[k], arrays[k]) for k in arrays)
    (tmp_path / "empty").mkdir()
    assert rundir.load_checkpoint(tmp_path / "empty") is None
