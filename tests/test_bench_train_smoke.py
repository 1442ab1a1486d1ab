"""Smoke test of scripts/bench_vs_sb3_train.py --quick: it runs, names the machine and BLAS kernel, and
leaves docs/ alone (issue 14: a quick run writes to a temporary directory).  It times nothing that matters."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _docs_digest() -> str:
    h = hashlib.sha256()
    for p in sorted((ROOT / "docs").rglob("*.md")):
        h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()


def test_bench_vs_sb3_train__quick_writes_a_temporary_file_never_docs():
    pytest.importorskip("sb3_contrib")
    before = _docs_digest()
    env = {**os.environ, "OPENBLAS_CORETYPE": "Haswell"}  # the script must lift it for itself and say so
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_vs_sb3_train.py"), "--quick"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert _docs_digest() == before
    written = Path(re.search(r"^wrote (.+)$", out.stdout, re.M).group(1))
    assert written.is_file() and not written.resolve().is_relative_to((ROOT / "docs").resolve())
    text = written.read_text()
    assert "<!-- train:begin -->" in text and "| CartPole-v1 |" in text
    assert "BLAS: " in text and "lifted for this process: OPENBLAS_CORETYPE=Haswell" in text
    # the solve, interleaved seed by seed with the first swapped (cut at 2048 steps: nothing solves)
    assert re.search(r"^\| 0 \| trpo_ref \| nan \(nan\) \| nan \(nan\) \| nan× \|$", text, re.M)
    assert re.search(r"^\| 1 \| SB3-contrib \| nan \(nan\) \| nan \(nan\) \| nan× \|$", text, re.M)
    assert "solve seed 0 (trpo_ref first)" in out.stdout and "solve seed 1 (SB3-contrib first)" in out.stdout
    if importlib.util.find_spec("mujoco") is not None:  # the Hopper-v5 per-env-step budget, tiny
        assert "### Hopper-v5 per-env-step budget" in text and "**ceiling**: SB3 whole iteration" in text
        # (f): the update's bare matrix products, counted from the update's own FVPs (≥ 1 CG product and β's)
        f_row = re.search(r"^\| \(f\) trpo_ref's update as bare matrix products.*\(median (\d+) per update.*"
                          r"the critic's (\d+) minibatch passes \| ([0-9.]+) \|$", text, re.M)
        from trpo_ref.envs import env_defaults

        hopper = env_defaults("Hopper-v5")
        assert f_row and float(f_row.group(3)) > 0
        # CG's products (1 to cg_iters) + (F+λI)x, + (F+λI)x₀ when CG starts from one; the quick budget's
        # 2 × 32 steps are one minibatch per epoch
        assert 2 <= int(f_row.group(1)) <= hopper["trpo"]["cg_iters"] + 2
        assert int(f_row.group(2)) == hopper["train"]["critic_epochs"]
        assert "**ceiling with the update's matrix products**" in text
