"""The training loop: smoke runs of the real loop, determinism, exact resume (in process and after SIGKILL)."""

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from trpo_ref.trpo import TRPOConfig
from trpo_ref.train import (PROGRESS_COLUMNS, WALL_CLOCK_COLUMNS, TrainConfig, build_configs, load_policy,
                            read_progress, train)

ROOT = Path(__file__).resolve().parents[1]


def _cfg(env_id, **kw):
    return build_configs(env_id, "sb3-contrib", kw)


def _rows(run_dir):
    return [{k: v for k, v in r.items() if k not in WALL_CLOCK_COLUMNS} for r in read_progress(run_dir / "progress.csv")]


def _assert_same_run(a: Path, b: Path):
    assert _rows(a) == _rows(b)
    assert (a / "episodes.csv").read_text() == (b / "episodes.csv").read_text()
    ta, tb = load_policy(a / "policy.npz")[1], load_policy(b / "policy.npz")[1]
    assert np.array_equal(ta, tb)


# ------------------------------------------------------------------------ smoke
@pytest.mark.parametrize("env_id, kw", [
    ("CartPole-v1", dict(n_envs=2, n_steps=128, total_steps=512)),
    ("Pendulum-v1", dict(n_envs=2, n_steps=200, total_steps=800, normalize_obs=True, normalize_reward=True)),
])
def test_smoke__real_loop_writes_complete_finite_progress(tmp_path, env_id, kw):
    cfg, tc = _cfg(env_id, **kw)
    train(cfg, tc, tmp_path, quiet=True, plot=False)
    rows = read_progress(tmp_path / "progress.csv")
    assert len(rows) == cfg.n_iterations
    assert tuple(rows[0]) == PROGRESS_COLUMNS
    for i, r in enumerate(rows):
        assert int(r["iteration"]) == i + 1
        assert int(r["total_steps"]) == (i + 1) * cfg.steps_per_iteration
        assert int(r["n_episodes"]) >= 1  # settings chosen so that episodes finish every iteration
        for c in PROGRESS_COLUMNS:
            if c != "step_status":
                assert math.isfinite(float(r[c])), (c, r[c])
    assert {r["step_status"] for r in rows} <= {"accepted", "line_search_failed"}
    cfg_doc = json.loads((tmp_path / "config.json").read_text())
    assert TrainConfig.from_dict(cfg_doc["train"]) == cfg
    policy, theta, norm, env = load_policy(tmp_path / "policy.npz")
    assert env == env_id and theta.shape == (policy.num_params,)
    assert (norm is not None) == cfg.normalize_obs
    with np.load(tmp_path / "checkpoint.npz", allow_pickle=False) as z:
        assert json.loads(str(z["meta"]))["iteration"] == cfg.n_iterations


# ---------------------------------------------------------------- reproducibility
def test_same_seed__identical_progress_apart_from_wall_clock(tmp_path):
    cfg, tc = _cfg("CartPole-v1", n_envs=2, n_steps=64, total_steps=384)
    train(cfg, tc, tmp_path / "a", quiet=True, plot=False)
    train(cfg, tc, tmp_path / "b", quiet=True, plot=False)
    _assert_same_run(tmp_path / "a", tmp_path / "b")
    other, _ = _cfg("CartPole-v1", n_envs=2, n_steps=64, total_steps=384, seed=1)
    train(other, tc, tmp_path / "c", quiet=True, plot=False)
    assert _rows(tmp_path / "a") != _rows(tmp_path / "c")


@pytest.mark.parametrize("env_id, kw", [
    ("CartPole-v1", dict(n_envs=2, n_steps=64)),
    # normalisers, reward scaling and episodes longer than an iteration (200 > 96) all cross the boundary
    ("Pendulum-v1", dict(n_envs=2, n_steps=96, normalize_obs=True, normalize_reward=True, checkpoint_every=2)),
])
def test_resume__n_then_m_iterations_equals_m(tmp_path, env_id, kw):
    full, tc = _cfg(env_id, total_steps=6 * kw["n_envs"] * kw["n_steps"], **kw)
    part = TrainConfig.from_dict({**full.to_dict(), "total_steps": 3 * kw["n_envs"] * kw["n_steps"]})
    train(full, tc, tmp_path / "full", quiet=True, plot=False)
    train(part, tc, tmp_path / "split", quiet=True, plot=False)
    train(full, tc, tmp_path / "split", resume=True, quiet=True, plot=False)
    _assert_same_run(tmp_path / "full", tmp_path / "split")


def test_resume__after_sigkill_equals_uninterrupted(tmp_path):
    conf = tmp_path / "conf.json"
    conf.write_text(json.dumps({"checkpoint_every": 3}))
    args = [sys.executable, "-m", "trpo_ref", "train", "CartPole-v1", "--n-envs", "2", "--n-steps", "32",
            "--total-steps", str(64 * 150), "--config", str(conf), "--quiet", "--no-plot"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    killed = tmp_path / "killed"
    proc = subprocess.Popen(args + ["--out", str(killed)], env=env, cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while not (killed / "checkpoint.npz").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.005)
    time.sleep(0.05)  # let it run past the checkpoint: rows after it must be dropped on resume
    assert proc.poll() is None, "the run finished before it could be killed: make it longer"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    n_rows_at_kill = len(read_progress(killed / "progress.csv"))
    assert n_rows_at_kill < 150
    subprocess.run(args + ["--out", str(killed), "--resume"], env=env, cwd=tmp_path, check=True,
                   stdout=subprocess.DEVNULL)
    subprocess.run(args + ["--out", str(tmp_path / "straight")], env=env, cwd=tmp_path, check=True,
                   stdout=subprocess.DEVNULL)
    _assert_same_run(tmp_path / "straight", killed)
    assert len(read_progress(killed / "progress.csv")) == 150


def test_resume__extends_total_steps_and_rejects_fresh_start_in_used_dir(tmp_path):
    cfg, tc = _cfg("CartPole-v1", n_envs=1, n_steps=64, total_steps=128)
    train(cfg, tc, tmp_path, quiet=True, plot=False)
    with pytest.raises(ValueError, match="already holds a run"):
        train(cfg, tc, tmp_path, quiet=True, plot=False)
    longer = TrainConfig.from_dict({**cfg.to_dict(), "total_steps": 256})
    train(longer, tc, tmp_path, resume=True, quiet=True, plot=False)
    assert len(read_progress(tmp_path / "progress.csv")) == 4


def test_build_configs__layers_and_unknown_key():
    cfg, tc = build_configs("HalfCheetah-v5", "sb3-contrib", {"n_steps": 100, "cg_damping": 0.2})
    assert (cfg.n_envs, cfg.n_steps, cfg.normalize_obs) == (2, 100, True)  # table, then override
    assert (tc.max_kl, tc.cg_damping, tc.cg_iters, tc.kl_strict) == (0.04, 0.2, 25, True)  # table, override, preset
    with pytest.raises(ValueError, match="no_such_field"):
        build_configs("CartPole-v1", "sb3-contrib", {"no_such_field": 1})
    with pytest.raises(ValueError, match="n_envs"):
        build_configs("CartPole-v1", "sb3-contrib", {"n_envs": 0})


# ------------------------------------------------------------- review regressions
def test_resume__extension_is_recorded_in_config_json(tmp_path):
    cfg, tc = _cfg("CartPole-v1", n_envs=1, n_steps=64, total_steps=128)
    train(cfg, tc, tmp_path, quiet=True, plot=False)
    longer = TrainConfig.from_dict({**cfg.to_dict(), "total_steps": 256})
    train(longer, tc, tmp_path, resume=True, quiet=True, plot=False)
    assert json.loads((tmp_path / "config.json").read_text())["train"]["total_steps"] == 256
    # nothing left to do: the returned row still holds the run's totals
    res = train(longer, tc, tmp_path, resume=True, quiet=True, plot=False)
    assert (res["iteration"], res["total_steps"]) == (4, 256)


def test_progress__undefined_explained_variance_is_an_empty_cell(tmp_path, monkeypatch):
    import trpo_ref.train as train_mod

    monkeypatch.setattr(train_mod, "explained_variance", lambda *a: float("nan"))
    cfg, tc = _cfg("CartPole-v1", n_envs=1, n_steps=64, total_steps=64)
    train(cfg, tc, tmp_path, quiet=True, plot=False)
    assert read_progress(tmp_path / "progress.csv")[0]["explained_variance"] == ""


def test_trim__rewrites_through_a_temporary_file_and_os_replace(tmp_path, monkeypatch):
    from trpo_ref.rundir import CSVLog

    p = CSVLog(tmp_path / "progress.csv", ("iteration", "x"), one_row_per_iteration=True)
    e = CSVLog(tmp_path / "episodes.csv", ("iteration", "total_steps", "return", "length"), False)
    p.path.write_text("iteration,x\n1,a\n2,b\n")
    e.path.write_text("iteration,total_steps,return,length\n1,64,1.0,3\n2,128,2.0,4\n3,19")
    replaced, real = [], os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (replaced.append(Path(b)), real(a, b)))
    p.replace(p.trimmed(1))
    e.replace(e.trimmed(1))
    assert replaced == [p.path, e.path]  # a kill mid-write leaves the old file, never a half-written one
    assert p.path.read_text() == "iteration,x\n1,a\n"
    assert e.path.read_text() == "iteration,total_steps,return,length\n1,64,1.0,3\n"
    assert not list(tmp_path.glob("*.tmp"))


def test_train__failed_setup_leaves_no_directory(tmp_path, monkeypatch):
    import trpo_ref.train as train_mod

    def boom(*a, **k):
        raise RuntimeError("env failed")

    monkeypatch.setattr(train_mod, "VectorRollout", boom)
    cfg, tc = _cfg("CartPole-v1", n_envs=1, n_steps=64, total_steps=64)
    with pytest.raises(RuntimeError):
        train(cfg, tc, tmp_path / "run", quiet=True, plot=False)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("kw, needle", [
    ({"gamma": "x"}, "gamma"), ({"hidden_sizes": 5}, "hidden_sizes"), ({"train": [1]}, "'train'"),
    ({"trpo": {"bogus": 1}}, "bogus"), ({"vf_hidden_sizes": [0]}, "vf_hidden_sizes"),
    ({"normalize_reward": 1}, "normalize_reward"), ({"device": 3}, "device"),
])
def test_build_configs__wrong_types_are_valueerrors_naming_the_field(kw, needle):
    with pytest.raises(ValueError, match=needle):
        build_configs("CartPole-v1", "sb3-contrib", kw)


# ------------------------------------------------------------- the loop apart from files
def test_iterate__writes_no_files_and_yields_the_rows_train_logs(tmp_path, monkeypatch):
    from trpo_ref.train import iterate

    cfg, tc = _cfg("CartPole-v1", n_envs=2, n_steps=32, total_steps=192)
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    recs = list(iterate(cfg, tc))
    assert list(work.iterdir()) == []  # no run directory, no file
    assert [r.row["iteration"] for r in recs] == [1, 2, 3]
    assert recs[-1].trainer.rollout.envs.closed  # the generator closed its environments
    train(cfg, tc, tmp_path / "run", quiet=True, plot=False)
    logged = _rows(tmp_path / "run")
    yielded = [{k: ("" if v == "" else (repr(v) if isinstance(v, float) else str(v))) for k, v in r.row.items()
                if k not in WALL_CLOCK_COLUMNS} for r in recs]
    assert yielded == logged  # train() is iterate() plus persistence: the same numbers, bit for bit
    assert np.array_equal(recs[-1].trainer.theta, load_policy(tmp_path / "run" / "policy.npz")[1])


def test_trainer__state_dict_round_trip_continues_exactly(tmp_path):
    from trpo_ref.train import Trainer

    cfg, tc = _cfg("Pendulum-v1", n_envs=2, n_steps=50, total_steps=400, normalize_obs=True, normalize_reward=True)
    a = Trainer(cfg, tc)
    rows_a = [a.step().row for _ in range(4)]
    b = Trainer(cfg, tc)
    b.step(), b.step()
    meta, arrays = b.state_dict()
    b.close()
    c = Trainer(cfg, tc)
    c.load_state_dict(json.loads(json.dumps(meta)), arrays)  # through JSON, as in a checkpoint
    rows_c = [c.step().row for _ in range(2)]
    drop = lambda r: {k: v for k, v in r.items() if k not in WALL_CLOCK_COLUMNS}  # noqa: E731
    assert [drop(r) for r in rows_a[2:]] == [drop(r) for r in rows_c]
    assert np.array_equal(a.theta, c.theta)
    a.close(), c.close()


def test_trainer__step_config_sets_each_update_from_its_batch():
    import dataclasses

    from trpo_ref.train import Trainer

    cfg, _ = _cfg("CartPole-v1", n_envs=1, n_steps=32, total_steps=64)
    seen = []

    def npg_step(tc, batch):
        seen.append(len(batch))
        return dataclasses.replace(tc, method="npg", step_size=0.5)

    t = Trainer(cfg, TRPOConfig(), step_config=npg_step)
    rec = t.step()
    t.close()
    assert seen == [32] and rec.info.status == "fixed_step"  # the update ran with the returned config


# --------------------------------------------------- MultiDiscrete and MultiBinary actions
@pytest.mark.parametrize("env_id, random_return, floor", [
    # per step a random policy hits 1/3 + 1/2 (MultiDiscrete [3, 2]) or 3/2 (three bits) columns: 16.7 and 30
    # per 20-step episode; the best policy hits all: 40 and 60.  Measured after 8 iterations of 512 steps:
    # 31.7 and 53.7; the floors are ~10 standard errors of a random policy's mean above it.
    ("MultiDiscreteTargets-v0", 16.7, 25.0),
    ("MultiBinaryTargets-v0", 30.0, 40.0),
])
def test_train__learns_multidiscrete_and_multibinary_actions(tmp_path, env_id, random_return, floor):
    import toy_envs

    toy_envs.register()
    cfg, tc = _cfg(env_id, n_envs=2, n_steps=256, total_steps=512 * 8, max_kl=0.05)
    train(cfg, tc, tmp_path / "run", quiet=True, plot=False)
    rows = read_progress(tmp_path / "run" / "progress.csv")
    assert abs(float(rows[0]["ep_return_mean"]) - random_return) < 5.0  # starts near chance
    assert float(rows[-1]["ep_return_mean"]) > floor
    policy, theta, _, _ = load_policy(tmp_path / "run" / "policy.npz")
    assert policy.kind == ("multicategorical" if "Discrete" in env_id else "bernoulli")
    # resuming mid-episode replays the integer action rows exactly
    part, _ = _cfg(env_id, n_envs=2, n_steps=256, total_steps=512 * 2, max_kl=0.05)
    full, _ = _cfg(env_id, n_envs=2, n_steps=256, total_steps=512 * 4, max_kl=0.05)
    train(full, tc, tmp_path / "full", quiet=True, plot=False)
    train(part, tc, tmp_path / "split", quiet=True, plot=False)
    train(full, tc, tmp_path / "split", resume=True, quiet=True, plot=False)
    _assert_same_run(tmp_path / "full", tmp_path / "split")
