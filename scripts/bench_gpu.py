#!/usr/bin/env python
r"""Large-scale benchmark of the policy math on one device (issue 6).

For each batch size, hidden width and dtype: one Fisher-vector product, one
whole ``trpo_step`` (SB3-contrib preset) and one critic fit (one epoch of
minibatch Adam, minibatch 4096: at 1e6 samples SB3's 128 would time Python
loop overhead, not the device), with the FVP's
achieved FLOP/s beside the device's own matmul throughput measured in the
same run, and, where torch can use the device, the same FVP by torch double
back-prop (KL gradient with ``create_graph=True``, then the gradient of
``grad_kl · v``), interleaved with ours.

Usage::

    python scripts/bench_gpu.py --device cuda                       # the GPU grid (CuPy; torch if it sees CUDA)
    python scripts/bench_gpu.py --device cpu --quick                # tiny smoke test on NumPy
    python scripts/bench_gpu.py --device cuda --batches 1000000 --widths 256 --dtypes float32

Writes ``--out`` (JSON) and prints a Markdown table to paste into
docs/performance.md's GPU section.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

if __name__ == "__main__":
    for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, "1")  # CPU runs: one BLAS thread unless the caller says otherwise

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
for p in (str(ROOT), str(ROOT / "scripts")):
    if p not in sys.path:
        sys.path.insert(0, p)

import trpo_ref as tr  # noqa: E402
from trpo_ref import backend  # noqa: E402
from trpo_ref.trpo import Batch, TRPOConfig, trpo_step  # noqa: E402
from trpo_ref.value import ValueFunction, fit_adam  # noqa: E402

from bench import fvp_flops, interleaved  # noqa: E402

OBS_DIM, ACT_DIM, DAMPING = 17, 6, 0.1


def synchronizer(xp):
    """A callable that waits for the device (no-op on NumPy)."""
    if "cupy" in getattr(xp, "__name__", ""):
        import cupy

        return lambda: cupy.cuda.get_current_stream().synchronize()
    return lambda: None


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        import cupy

        props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
        name = props["name"]
        return name.decode() if isinstance(name, bytes) else str(name)
    import subprocess

    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    return next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")), "cpu")


def matmul_throughput(xp, dev, dtype: str, size: int, reps: int = 10) -> float:
    """The device's own FLOP/s on a square ``size`` matmul (2 size³ FLOPs), median of reps."""
    a = backend.from_numpy(np.random.default_rng(0).standard_normal((size, size)), xp, dev, dtype)
    sync = synchronizer(xp)

    def mm():
        a @ a
        sync()

    return 2.0 * size ** 3 / interleaved({"mm": mm}, reps, 2)["mm"]["median_s"]


def make_problem(xp, dev, batch: int, width: int, dtype: str, seed: int = 0):
    """Gaussian policy obs 17 -> width x width tanh -> act 6; data drawn on the host, moved once."""
    rng = np.random.default_rng(seed)
    pi = tr.GaussianMLPPolicy(OBS_DIM, ACT_DIM, hidden_sizes=(width, width))
    theta_host = pi.init_params(seed)
    obs_host = rng.standard_normal((batch, OBS_DIM))
    act_host, logp_host = pi.sample(theta_host, obs_host, rng)
    move = lambda a: backend.from_numpy(a, xp, dev, dtype)  # noqa: E731
    batch_ = Batch(obs=move(obs_host), act=move(act_host), adv=move(rng.standard_normal(batch)),
                   logp_old=move(logp_host))
    return pi, move(theta_host), batch_, move(rng.standard_normal(batch))


def torch_fvp(pi, theta, obs, device: str, dtype: str):
    """Torch double back-prop FVP of the same policy at the same θ and batch, or None without torch on ``device``.

    KL(π_old‖π_θ) mean over samples (summed over action dims), gradient with
    ``create_graph=True`` built once; each product is ``grad(grad_kl · v)`` + λv.
    """
    try:
        import torch
    except ImportError:
        return None
    tdev = "cuda" if device.startswith("cuda") else "cpu"
    if tdev == "cuda" and not torch.cuda.is_available():
        return None
    tdtype = torch.float64 if dtype == "float64" else torch.float32
    named = pi.unflatten(backend.to_numpy(theta))
    params = []
    for k in pi.param_shapes():
        params.append(torch.tensor(np.asarray(named[k]), dtype=tdtype, device=tdev, requires_grad=True))
    x = torch.as_tensor(backend.to_numpy(obs), dtype=tdtype, device=tdev)
    n_layers = pi.mlp.n_layers

    def mean_of(ps):
        h = x
        for l in range(n_layers):
            h = h @ ps[2 * l] + ps[2 * l + 1]
            if l < n_layers - 1:
                h = torch.tanh(h)
        return h

    mean = mean_of(params)
    log_std = params[-1]
    mean_old, log_std_old = mean.detach(), log_std.detach()
    kl = (log_std - log_std_old + (torch.exp(2 * log_std_old) + (mean_old - mean) ** 2)
          / (2 * torch.exp(2 * log_std)) - 0.5).sum(dim=1).mean()
    grads = torch.autograd.grad(kl, params, create_graph=True)
    grad_kl = torch.cat([g.reshape(-1) for g in grads])
    sync = (lambda: torch.cuda.synchronize()) if tdev == "cuda" else (lambda: None)

    def hvp(v_t):
        out = torch.autograd.grad((grad_kl * v_t).sum(), params, retain_graph=True)
        res = torch.cat([o.reshape(-1) for o in out]) + DAMPING * v_t
        sync()
        return res

    v_t = torch.as_tensor(np.random.default_rng(2).standard_normal(pi.num_params), dtype=tdtype, device=tdev)
    return hvp, v_t


def bench_one(xp, dev, device: str, batch: int, width: int, dtype: str, reps: int, critic_epochs: int,
              critic_batch: int) -> dict:
    pi, theta, data, ret = make_problem(xp, dev, batch, width, dtype)
    sync = synchronizer(xp)
    v = backend.from_numpy(np.random.default_rng(2).standard_normal(pi.num_params), xp, dev, dtype)
    fisher = pi.fisher_operator(theta, data.obs, DAMPING)

    def fvp():
        fisher(v)
        sync()

    group = {"fvp": fvp}
    th = torch_fvp(pi, theta, data.obs, device, dtype)
    if th is not None:
        hvp, v_t = th
        group["torch_fvp"] = lambda: hvp(v_t)
    row = {"batch": batch, "width": width, "dtype": dtype, "fvp_flops": fvp_flops(pi.mlp, batch)}
    row.update(interleaved(group, reps, 2))
    row["fvp_flop_per_s"] = row["fvp_flops"] / row["fvp"]["median_s"]
    config = TRPOConfig.preset("sb3-contrib")

    def step():
        trpo_step(pi, theta, data, config)
        sync()

    vf = ValueFunction(OBS_DIM, (width, width))
    w = vf.init_params(0, dtype=dtype, device=device)

    def critic():
        fit_adam(vf, w, data.obs, ret, epochs=critic_epochs, batch_size=critic_batch, rng=0)
        sync()

    row.update(interleaved({"trpo_step": step}, max(3, reps // 4), 1))
    row.update(interleaved({"critic_fit": critic}, 3, 1))
    return row


def render(result: dict) -> str:
    lines = [f"Device: **{result['device_name']}** (`--device {result['device']}`), {result['date']}.", "",
             "| batch | width | dtype | FVP ms | FVP TFLOP/s | device matmul TFLOP/s | FVP / matmul | torch FVP ms "
             "| torch / ours | trpo_step ms | critic fit ms |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        if "error" in r:
            lines.append(f"| {r['batch']} | {r['width']} | {r['dtype']} | {r['error']} |||||||| ")
            continue
        peak = result["matmul_flop_per_s"][r["dtype"]]
        torch_ms = f"{1e3 * r['torch_fvp']['median_s']:.2f}" if "torch_fvp" in r else "–"
        ratio = f"{r['torch_fvp']['median_s'] / r['fvp']['median_s']:.2f}×" if "torch_fvp" in r else "–"
        lines.append(f"| {r['batch']} | {r['width']} | {r['dtype']} | {1e3 * r['fvp']['median_s']:.2f} | "
                     f"{r['fvp_flop_per_s'] / 1e12:.3f} | {peak / 1e12:.3f} | {r['fvp_flop_per_s'] / peak:.0%} | "
                     f"{torch_ms} | {ratio} | {1e3 * r['trpo_step']['median_s']:.1f} | "
                     f"{1e3 * r['critic_fit']['median_s']:.1f} |")
    return "\n".join(lines)


def run(device="cuda", batches=(10_000, 100_000, 1_000_000), widths=(64, 256, 1024), dtypes=("float32", "float64"),
        reps=20, critic_epochs=1, critic_batch=4096, matmul_size=None) -> dict:
    xp, dev = backend.get_namespace(device)
    matmul_size = matmul_size or (8192 if device.startswith("cuda") else 1024)
    result = {"device": device, "device_name": device_name(device), "date": time.strftime("%Y-%m-%d %H:%M"),
              "reps": reps, "critic": {"epochs": critic_epochs, "batch_size": critic_batch},
              "matmul_size": matmul_size,
              "matmul_flop_per_s": {dt: matmul_throughput(xp, dev, dt, matmul_size) for dt in dtypes}, "rows": []}
    for dt in dtypes:
        for width in widths:
            for b in batches:
                try:
                    row = bench_one(xp, dev, device, b, width, dt, reps, critic_epochs, critic_batch)
                except Exception as exc:  # out of device memory at the largest sizes: record, go on
                    row = {"batch": b, "width": width, "dtype": dt, "error": type(exc).__name__}
                result["rows"].append(row)
                print(json.dumps({k: v for k, v in row.items() if not isinstance(v, dict)}), flush=True)
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", help="'cuda' (CuPy) or 'cpu' (NumPy)")
    p.add_argument("--quick", action="store_true", help="tiny sizes, few reps (smoke test; works on cpu)")
    p.add_argument("--batches", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    p.add_argument("--widths", type=int, nargs="+", default=[64, 256, 1024])
    p.add_argument("--dtypes", nargs="+", default=["float32", "float64"])
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "perf_gpu.json")
    args = p.parse_args(argv)
    if args.quick:
        result = run(args.device, batches=(256,), widths=(16,), dtypes=("float32", "float64"), reps=3,
                     critic_batch=64, matmul_size=128)
    else:
        result = run(args.device, tuple(args.batches), tuple(args.widths), tuple(args.dtypes), args.reps)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, default=str))
    print(render(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
