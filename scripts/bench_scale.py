#!/usr/bin/env python
r"""How the FVP and trpo_step scale with the batch size N on one CPU core (issue 14, item 4).

For each N (1e3 … 1e6) and dtype, two fresh Python processes run, one for the
Fisher-vector product and one for ``trpo_step`` (sb3-contrib preset: 15 CG
iterations, 0.8 × 10 line search), on the benchmark's problem (Gaussian
64×64 tanh policy, obs 17, act 6; scripts/bench.py's ``make_problem``).  Each
reports

* the median time of its repetitions (after one warm-up call);
* its peak resident memory (``getrusage(RUSAGE_SELF).ru_maxrss``, whole
  process: interpreter, NumPy, the batch and everything the call keeps);
* its resident memory before the timed work (after imports and the batch), so
  the call's own peak is the difference;
* for the FVP, the peak of the memory NumPy allocates *during one product*
  (``tracemalloc``; NumPy reports its buffers to it), blocked (the default
  ``block_rows``) and unblocked (``block_rows = N``): the temporaries.

A fresh process per point keeps one point's peak out of the next.  The slope
of log time against log N is fitted by least squares over N ≥ 1e4 (below
that, fixed per-call costs flatten the curve).  Like scripts/bench.py, the
process runs BLAS on one thread, pins itself to one CPU and removes
``OPENBLAS_CORETYPE`` / ``OPENBLAS_L2_SIZE`` from its own environment.

Usage::

    python scripts/bench_scale.py                   # 1e3 … 1e6, float64 and float32; writes docs/perf_scale.json,
                                                    # docs/img/perf_scale.png and the "scale" block of docs/performance.md
    python scripts/bench_scale.py --quick           # N 1e3 and 3e3, a temp dir (never docs/)
"""

from __future__ import annotations

import os
import sys

_KERNEL_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
LIFTED = {}
if __name__ == "__main__":
    for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[_var] = "1"
    for _var in _KERNEL_VARS:
        if _var in os.environ:
            LIFTED[_var] = os.environ.pop(_var)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = Path(__file__).resolve().parent
for _p in (str(ROOT), str(SCRIPTS)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from mdblock import write_marked_block  # noqa: E402

NS = (1_000, 3_000, 10_000, 30_000, 100_000, 300_000, 1_000_000)


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def measure_point(n: int, dtype: str, what: str, budget_s: float = 8.0, max_reps: int = 15) -> dict:
    """One point, in this process: ``what`` is "fvp" or "step".  Returns times (s) and memory (MiB)."""
    import tracemalloc

    from bench import DAMPING, make_problem
    from trpo_ref.trpo import TRPOConfig, trpo_step

    pi, theta, batch, _ = make_problem(n, dtype)
    v = np.random.default_rng(2).standard_normal(pi.num_params).astype(dtype)
    out = {"n": n, "dtype": dtype, "what": what}
    if what == "fvp":
        op = pi.fisher_operator(theta, batch.obs, DAMPING)
        op(v)  # warm-up (fills φ' in the cache)
        out["rss_before_mib"] = _rss_mib()
        t0 = time.perf_counter()
        op(v)
        first = time.perf_counter() - t0
        reps = int(max(3, min(max_reps, budget_s / max(first, 1e-9))))
        times = [first]
        for _ in range(reps - 1):
            t0 = time.perf_counter()
            op(v)
            times.append(time.perf_counter() - t0)
        out["rss_peak_mib"] = _rss_mib()
        for label, rows in (("blocked", None), ("unblocked", n)):
            op_b = pi.fisher_operator(theta, batch.obs, DAMPING) if rows is None else \
                type(op)(pi, theta, batch.obs, DAMPING, block_rows=rows)
            op_b(v)
            tracemalloc.start()
            op_b(v)
            out[f"temporaries_{label}_mib"] = tracemalloc.get_traced_memory()[1] / 2**20
            tracemalloc.stop()
    else:
        config = TRPOConfig.preset("sb3-contrib")
        small_pi, small_theta, small_batch, _ = make_problem(64, dtype)
        trpo_step(small_pi, small_theta, small_batch, config)  # one-time costs (lazy imports) on a tiny batch
        out["rss_before_mib"] = _rss_mib()
        t0 = time.perf_counter()
        _, info = trpo_step(pi, theta, batch, config)
        first = time.perf_counter() - t0
        out["status"] = info.status
        reps = int(max(1, min(5, budget_s / max(first, 1e-9))))
        times = [first]  # the first call is a measurement too: trpo_step keeps nothing between calls
        for _ in range(reps - 1):
            t0 = time.perf_counter()
            trpo_step(pi, theta, batch, config)
            times.append(time.perf_counter() - t0)
        out["rss_peak_mib"] = _rss_mib()
    out["times_s"] = times
    out["median_s"] = float(np.median(times))
    out["min_s"], out["max_s"] = float(np.min(times)), float(np.max(times))
    return out


def run_point(n: int, dtype: str, what: str, budget_s: float) -> dict:
    """:func:`measure_point` in a fresh Python process (so its peak memory is its own)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--point", str(n), dtype, what, "--budget", str(budget_s)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        return {"n": n, "dtype": dtype, "what": what, "error": res.stderr.strip().splitlines()[-1:]}
    return json.loads(res.stdout.strip().splitlines()[-1])


def slope(points: list, n_min: int = 10_000) -> float | None:
    """Least-squares slope of log(median time) against log N over N ≥ n_min."""
    pts = [(p["n"], p["median_s"]) for p in points if "median_s" in p and p["n"] >= n_min]
    if len(pts) < 2:
        return None
    x, y = np.log([p[0] for p in pts]), np.log([p[1] for p in pts])
    return float(np.polyfit(x, y, 1)[0])


def machine() -> dict:
    import platform

    info = {"python": platform.python_version(), "numpy": np.__version__, "lifted": LIFTED,
            "cpus": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None}
    try:
        info["cpu"] = next((ln.split(":", 1)[1].strip() for ln in
                            subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()
                            if ln.startswith("Model name")), "?")
    except OSError:
        info["cpu"] = platform.processor() or "?"
    try:
        import threadpoolctl

        info["blas"] = [f"{p.get('internal_api')} {p.get('version')} kernel {p.get('architecture')}, "
                        f"{p.get('num_threads')} thread(s)" for p in threadpoolctl.threadpool_info()]
    except ImportError:
        info["blas"] = ["unknown (threadpoolctl missing)"]
    return info


def render(result: dict) -> str:
    m = result["machine"]
    lifted = (", removed " + ", ".join(f"`{k}={v}`" for k, v in m["lifted"].items()) + " from its environment"
              if m["lifted"] else ", `OPENBLAS_CORETYPE` / `OPENBLAS_L2_SIZE` not set")
    lines = [f"Run of {result['date']}. Machine: **{m['cpu']}**, pinned to CPU {m['cpus']}; BLAS: "
             f"{'; '.join(m['blas'])}{lifted}. NumPy {m['numpy']}, Python {m['python']}. "
             "Each point is a fresh process; times are medians over the repetitions that fit a few seconds "
             "(FVP ≥ 3, trpo_step ≥ 1), min–max in brackets.", ""]
    for dtype, rows in result["rows"].items():
        fvp = {p["n"]: p for p in rows if p["what"] == "fvp"}
        step = {p["n"]: p for p in rows if p["what"] == "step"}
        s_f, s_s = result["slopes"][dtype]["fvp"], result["slopes"][dtype]["step"]
        lines += [f"### {dtype}: FVP slope {s_f:.2f}, trpo_step slope {s_s:.2f} (log time vs log N, N ≥ 1e4)"
                  if s_f is not None and s_s is not None else f"### {dtype}", "",
                  "| N | FVP (ms) | FVP per 1k samples (µs) | FVP process peak RSS (MiB) | of which before the products "
                  "| FVP temporaries, blocked (MiB) | unblocked (MiB) | trpo_step (s) | trpo_step peak RSS (MiB) "
                  "| of which before the step |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for n in sorted(set(fvp) | set(step)):
            f, s = fvp.get(n, {}), step.get(n, {})

            def cell(d, key, fmt, scale=1.0):
                return fmt.format(d[key] * scale) if key in d else ("error" if "error" in d else "–")
            ft = (f"{1e3 * f['median_s']:.2f} ({1e3 * f['min_s']:.2f}–{1e3 * f['max_s']:.2f})"
                  if "median_s" in f else cell(f, "median_s", "{}"))
            st = (f"{s['median_s']:.3f} ({s['min_s']:.3f}–{s['max_s']:.3f})" if "median_s" in s
                  else cell(s, "median_s", "{}"))
            per_k = f"{1e6 * f['median_s'] / (n / 1e3):.0f}" if "median_s" in f else "–"
            lines.append(f"| {n:,} | {ft} | {per_k} | {cell(f, 'rss_peak_mib', '{:.0f}')} | "
                         f"{cell(f, 'rss_before_mib', '{:.0f}')} | {cell(f, 'temporaries_blocked_mib', '{:.2f}')} | "
                         f"{cell(f, 'temporaries_unblocked_mib', '{:.1f}')} | {st} | "
                         f"{cell(s, 'rss_peak_mib', '{:.0f}')} | {cell(s, 'rss_before_mib', '{:.0f}')} |")
        lines.append("")
    if result.get("plot"):
        lines += [f"![FVP and trpo_step against N]({result['plot']})", ""]
    return "\n".join(lines)


def plot(result: dict, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(10, 4))
    for dtype, rows in result["rows"].items():
        ls = "-" if dtype == "float64" else "--"
        for what, name in (("fvp", "FVP"), ("step", "trpo_step")):
            pts = sorted((p["n"], p["median_s"]) for p in rows if p["what"] == what and "median_s" in p)
            if pts:
                sl = result["slopes"][dtype][what]
                ax_t.loglog(*zip(*pts), ls, marker="o", label=f"{name} {dtype} (slope {sl:.2f})" if sl else name)
        f = sorted((p["n"], p) for p in rows if p["what"] == "fvp" and "rss_peak_mib" in p)
        s = sorted((p["n"], p) for p in rows if p["what"] == "step" and "rss_peak_mib" in p)
        if s:
            ax_m.loglog([n for n, _ in s], [p["rss_peak_mib"] - p["rss_before_mib"] + 1e-3 for n, p in s], ls,
                        marker="o", label=f"trpo_step peak − before ({dtype})")
        if f:
            ax_m.loglog([n for n, _ in f], [p["temporaries_unblocked_mib"] for n, p in f], ls, marker="x",
                        label=f"FVP temporaries, unblocked ({dtype})")
            ax_m.loglog([n for n, _ in f], [p["temporaries_blocked_mib"] for n, p in f], ls, marker="s",
                        label=f"FVP temporaries, blocked ({dtype})")
    ax_t.set_xlabel("batch N")
    ax_t.set_ylabel("seconds (median)")
    ax_t.set_title("time")
    ax_t.legend(fontsize=7)
    ax_m.set_xlabel("batch N")
    ax_m.set_ylabel("MiB")
    ax_m.set_title("memory")
    ax_m.legend(fontsize=7)
    fig.suptitle("Gaussian 64x64 tanh policy, obs 17, act 6, one core")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--point", nargs=3, metavar=("N", "DTYPE", "WHAT"), help=argparse.SUPPRESS)
    p.add_argument("--budget", type=float, default=8.0, help="seconds of repetitions per point (default 8)")
    p.add_argument("--quick", action="store_true", help="N 1e3 and 3e3, float64; writes to a temp dir, never docs/")
    p.add_argument("--ns", type=int, nargs="+", default=None)
    p.add_argument("--dtypes", nargs="+", default=["float64", "float32"])
    p.add_argument("--no-step", action="store_true", help="FVP only")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--md", type=Path, default=None)
    p.add_argument("--plot", type=Path, default=None)
    args = p.parse_args(argv)
    if args.point:
        n, dtype, what = args.point
        print(json.dumps(measure_point(int(n), dtype, what, args.budget)))
        return 0
    docs = ROOT / "docs"
    if args.quick:
        import tempfile

        tmp = Path(tempfile.mkdtemp(prefix="trpo_ref_bench_scale_quick_"))
        for name in ("out", "md", "plot"):
            given = getattr(args, name)
            if given is not None and str(given.resolve()).startswith(str(docs.resolve())):
                p.error(f"--quick never writes into docs/ (got --{name} {given})")
        defaults = {"out": tmp / "perf_scale.json", "md": tmp / "performance.md", "plot": tmp / "perf_scale.png"}
        ns, dtypes, budget = args.ns or (1_000, 3_000), ["float64"], 0.2
    else:
        defaults = {"out": docs / "perf_scale.json", "md": docs / "performance.md",
                    "plot": docs / "img" / "perf_scale.png"}
        ns, dtypes, budget = args.ns or NS, args.dtypes, args.budget
    for name, path in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, path)
    result = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine(), "rows": {},
              "slopes": {}}
    for dtype in dtypes:
        rows = []
        for n in ns:
            for what in ("fvp",) + (() if args.no_step else ("step",)):
                r = run_point(n, dtype, what, budget)
                rows.append(r)
                print(f"{dtype} N={n} {what}: " + (f"{r['median_s']:.4f} s, peak {r['rss_peak_mib']:.0f} MiB"
                                                   if "median_s" in r else f"error {r.get('error')}"), flush=True)
        result["rows"][dtype] = rows
        result["slopes"][dtype] = {w: slope([r for r in rows if r["what"] == w]) for w in ("fvp", "step")}
    if plot(result, args.plot):
        result["plot"] = os.path.relpath(args.plot, args.md.parent)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    write_marked_block(args.md, "scale", render(result), "# Performance")
    print(f"wrote {args.out}, {args.md}" + (f", {args.plot}" if result.get("plot") else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
