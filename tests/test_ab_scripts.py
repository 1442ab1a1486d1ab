"""The A/B scripts of issue 14 (scripts/ab_train_exact.py, scripts/ab_critic_fit.py): they run, they call two
identical trees identical, and they call a tree that rounds one operation differently different."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(script, *args, timeout=300):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the trees come from the arguments
    return subprocess.run([sys.executable, str(ROOT / "scripts" / script), *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _tree(tmp_path, name):
    shutil.copytree(ROOT / "trpo_ref", tmp_path / name / "trpo_ref", ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path / name


def test_ab_train_exact__identical_trees_pass_and_a_rounding_change_fails(tmp_path):
    base, same = _tree(tmp_path, "base"), _tree(tmp_path, "same")
    changed = _round_adam_differently(_tree(tmp_path, "changed"))
    ok = _run("ab_train_exact.py", base, same, "--cartpole-iters", 2, "--hopper-iters", 0)
    assert ok.returncode == 0, ok.stdout + ok.stderr[-2000:]
    assert ok.stdout.count("identical") == 3 and "DIFFERENT" not in ok.stdout
    bad = _run("ab_train_exact.py", base, changed, "--cartpole-iters", 2, "--hopper-iters", 0)
    assert bad.returncode == 1, bad.stdout + bad.stderr[-2000:]
    assert "checkpoint.npz: DIFFERENT" in bad.stdout and "'w'" in bad.stdout


def _round_adam_differently(tree):
    value = tree / "trpo_ref" / "value.py"
    text = value.read_text()
    old = "tmp_p /= math.sqrt(1.0 - beta2 ** t)"  # √v/√(1−β₂ᵗ) ...
    assert text.count(old) == 1
    value.write_text(text.replace(old, "tmp_p *= 1.0 / math.sqrt(1.0 - beta2 ** t)"))  # ... × 1/√(1−β₂ᵗ)
    return tree


def test_ab_critic_fit__identical_trees_pass_and_a_rounding_change_fails(tmp_path):
    out = _run("ab_critic_fit.py", _tree(tmp_path, "a"), _tree(tmp_path, "b"), "--reps", 1, "--fits", 1)
    assert out.returncode == 0, out.stdout + out.stderr[-2000:]
    assert out.stdout.count("weights and moments identical") == 2
    assert "CartPole-v1: base" in out.stdout and "Hopper-v5: base" in out.stdout
    changed = _round_adam_differently(_tree(tmp_path, "changed"))
    bad = _run("ab_critic_fit.py", tmp_path / "a", changed, "--reps", 1, "--fits", 1)
    assert bad.returncode == 1, bad.stdout + bad.stderr[-2000:]
    assert bad.stdout.count("weights and moments DIFFERENT") == 2
