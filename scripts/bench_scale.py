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
* its resident memory after imports and the batch, and before the timed work
  (for the FVP: after building the operator, whose forward-pass cache is
  O(N)), so the call's own peak is the difference;
* for the FVP, the peak of the memory NumPy allocates *during one product*
  (``tracemalloc``; NumPy reports its buffers to it), blocked (the default
  ``block_rows``) and unblocked (``block_rows = N``): the temporaries.

A fresh process per point keeps one point's peak out of the next (and the
launcher itself stays small: Linux carries a parent's peak RSS into the
``ru_maxrss`` of the children it starts later).  The slope
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
    out = {"n": n, "dtype": dtype, "what": what, "rss_batch_mib": _rss_mib()}
    if what == "fvp":
        tracemalloc.start()  # what the operator holds: its forward cache (h, φ′ of each hidden layer, output)
        op = pi.fisher_operator(theta, batch.obs, DAMPING)
        op(v)  # warm-up (fills φ' in the cache)
        out["operator_held_mib"] = tracemalloc.get_traced_memory()[0] / 2**20
        tracemalloc.stop()
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
    out["loadavg_1min"] = os.getloadavg()[0]
    out["median_s"] = float(np.median(times))
    out["min_s"], out["max_s"] = float(np.min(times)), float(np.max(times))
    return out


def time_interleaved(ns, dtype: str, what: str, rounds: int) -> dict:
    """Times of ``what`` ("fvp" or "step") at every N, in one process, N interleaved round by round.

    The machine is shared: its speed drifts over a run of many minutes.  Each
    round times one call at every N in turn, so a slow spell hits all sizes of
    that round alike, and the slope fitted per round is not bent by it.

    Returns
    -------
    dict with ``times_s`` {N: [seconds per round]} and ``slopes`` (one per round, N ≥ 1e4).
    """
    from bench import DAMPING, make_problem
    from trpo_ref.trpo import TRPOConfig, trpo_step

    config = TRPOConfig.preset("sb3-contrib")
    calls = {}
    for n in ns:
        pi, theta, batch, _ = make_problem(n, dtype)
        if what == "fvp":
            op = pi.fisher_operator(theta, batch.obs, DAMPING)
            v = np.random.default_rng(2).standard_normal(pi.num_params).astype(dtype)
            calls[n] = (lambda op=op, v=v: op(v))
        else:
            calls[n] = (lambda pi=pi, theta=theta, batch=batch: trpo_step(pi, theta, batch, config))
        calls[n]()  # warm-up
    times = {n: [] for n in ns}
    for _ in range(rounds):
        for n in ns:
            t0 = time.perf_counter()
            calls[n]()
            times[n].append(time.perf_counter() - t0)
    slopes = [slope([{"n": n, "median_s": times[n][r]} for n in ns]) for r in range(rounds)]
    return {"times_s": {int(n): t for n, t in times.items()}, "slopes": [x for x in slopes if x is not None],
            "loadavg_1min": os.getloadavg()[0]}


def run_timing(ns, dtype: str, what: str, rounds: int) -> dict:
    """:func:`time_interleaved` in a fresh Python process.

    Not in this process: Linux carries a process's peak RSS over into the
    children it starts afterwards (``ru_maxrss`` survives fork and exec), so a
    launcher that once held every N would inflate every later memory point.
    """
    cmd = [sys.executable, str(Path(__file__).resolve()), "--timing", dtype, what, str(rounds), *map(str, ns)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        return {"times_s": {}, "slopes": [], "loadavg_1min": float("nan"),
                "error": res.stderr.strip().splitlines()[-1:]}
    out = json.loads(res.stdout.strip().splitlines()[-1])
    out["times_s"] = {int(n): t for n, t in out["times_s"].items()}
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


def _times(result, dtype, what, n):
    t = result.get("timing", {}).get(dtype, {}).get(what, {}).get("times_s", {})
    t = t.get(n, t.get(str(n)))
    return np.asarray(t) if t else None


def render(result: dict) -> str:
    m = result["machine"]
    lifted = (", removed " + ", ".join(f"`{k}={v}`" for k, v in m["lifted"].items()) + " from its environment"
              if m["lifted"] else ", `OPENBLAS_CORETYPE` / `OPENBLAS_L2_SIZE` not set")
    lines = [f"Run of {result['date']}. Machine: **{m['cpu']}**, pinned to CPU {m['cpus']}; BLAS: "
             f"{'; '.join(m['blas'])}{lifted}. NumPy {m['numpy']}, Python {m['python']}.", "",
             "Times: one process per dtype and quantity holds every N and times them round by round "
             "(N interleaved, so a slow spell of the shared machine hits every size of a round alike); median "
             "over the rounds, min–max in brackets; the slope is fitted per round (log time on log N, N ≥ 1e4) "
             "and reported as the median over rounds (min–max). Memory: a fresh process per N and quantity "
             "(peak RSS; by tracemalloc: what the operator holds after its first product — its forward cache — and the "
             "peak of one product's temporaries, blocked and unblocked). Load avg: the 1-minute "
             "load average at the end of each timing process (2 shared cores: above 2, others took time).", ""]
    if result.get("note"):
        lines += [result["note"], ""]
    for dtype, rows in result["rows"].items():
        fvp = {p["n"]: p for p in rows if p["what"] == "fvp"}
        step = {p["n"]: p for p in rows if p["what"] == "step"}
        timing = result.get("timing", {}).get(dtype, {})
        head = f"### {dtype}"
        for what, name in (("fvp", "FVP"), ("step", "trpo_step")):
            sl = timing.get(what, {}).get("slopes")
            if sl:
                head += (f"{',' if name != 'FVP' else ':'} {name} slope {np.median(sl):.2f} "
                         f"({min(sl):.2f}–{max(sl):.2f}, {len(sl)} rounds)")
        load = "/".join(f"{timing[w]['loadavg_1min']:.1f}" for w in ("fvp", "step") if w in timing)
        lines += [head + (f"; load avg {load}" if load else ""), "",
                  "| N | FVP (ms) | FVP per 1k samples (µs) | trpo_step (s) | trpo_step per 1k samples (ms) "
                  "| FVP process peak RSS (MiB) | peak after imports + batch | operator holds (MiB) "
                  "| FVP temporaries, blocked (MiB) | unblocked (MiB) | trpo_step peak RSS (MiB) | peak before the step |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for n in sorted(set(fvp) | set(step)):
            f, s_ = fvp.get(n, {}), step.get(n, {})

            def cell(d, key, fmt):
                return fmt.format(d[key]) if key in d else ("error" if "error" in d else "–")
            tf, ts = _times(result, dtype, "fvp", n), _times(result, dtype, "step", n)
            ft = f"{1e3 * np.median(tf):.2f} ({1e3 * tf.min():.2f}–{1e3 * tf.max():.2f})" if tf is not None else "–"
            st = f"{np.median(ts):.3f} ({ts.min():.3f}–{ts.max():.3f})" if ts is not None else "–"
            fk = f"{1e6 * np.median(tf) / (n / 1e3):.0f}" if tf is not None else "–"
            sk = f"{1e3 * np.median(ts) / (n / 1e3):.1f}" if ts is not None else "–"
            op_mib = f"{f['operator_held_mib']:.0f}" if "operator_held_mib" in f else "–"
            lines.append(f"| {n:,} | {ft} | {fk} | {st} | {sk} | {cell(f, 'rss_peak_mib', '{:.0f}')} | "
                         f"{cell(f, 'rss_batch_mib', '{:.0f}')} | {op_mib} | "
                         f"{cell(f, 'temporaries_blocked_mib', '{:.2f}')} | "
                         f"{cell(f, 'temporaries_unblocked_mib', '{:.1f}')} | "
                         f"{cell(s_, 'rss_peak_mib', '{:.0f}')} | {cell(s_, 'rss_before_mib', '{:.0f}')} |")
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
            pts = sorted((p["n"], float(np.median(_times(result, dtype, what, p["n"])))) for p in rows
                         if p["what"] == what and _times(result, dtype, what, p["n"]) is not None)
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
            held = [(n, p["operator_held_mib"]) for n, p in f if "operator_held_mib" in p]
            if held:
                ax_m.loglog(*zip(*held), ls, marker="^", label=f"operator holds: forward cache ({dtype})")
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
    p.add_argument("--timing", nargs="+", help=argparse.SUPPRESS)  # DTYPE WHAT ROUNDS N...
    p.add_argument("--budget", type=float, default=1.0,
                   help="seconds of repetitions in each memory point's process (default 1)")
    p.add_argument("--quick", action="store_true", help="N 1e3 and 3e3, float64; writes to a temp dir, never docs/")
    p.add_argument("--ns", type=int, nargs="+", default=None)
    p.add_argument("--dtypes", nargs="+", default=["float64", "float32"])
    p.add_argument("--no-step", action="store_true", help="FVP only")
    p.add_argument("--rounds", type=int, default=3,
                   help="interleaved rounds of trpo_step over all N (the FVP gets 3x as many; default 3)")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--md", type=Path, default=None)
    p.add_argument("--plot", type=Path, default=None)
    args = p.parse_args(argv)
    if args.point:
        n, dtype, what = args.point
        print(json.dumps(measure_point(int(n), dtype, what, args.budget)))
        return 0
    if args.timing:
        dtype, what, rounds, *ns_ = args.timing
        print(json.dumps(time_interleaved([int(n) for n in ns_], dtype, what, int(rounds))))
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
        args.rounds = 1
    else:
        defaults = {"out": docs / "perf_scale.json", "md": docs / "performance.md",
                    "plot": docs / "img" / "perf_scale.png"}
        ns, dtypes, budget = args.ns or NS, args.dtypes, args.budget
    for name, path in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, path)
    result = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine(), "rows": {},
              "slopes": {}, "timing": {}}
    for dtype in dtypes:
        rows = []
        for n in ns:
            for what in ("fvp",) + (() if args.no_step else ("step",)):
                r = run_point(n, dtype, what, budget)
                rows.append(r)
                print(f"{dtype} N={n} {what}: " + (f"{r['median_s']:.4f} s, peak {r['rss_peak_mib']:.0f} MiB"
                                                   if "median_s" in r else f"error {r.get('error')}"), flush=True)
        result["rows"][dtype] = rows
        result["timing"][dtype] = {}
        for what in ("fvp",) + (() if args.no_step else ("step",)):
            t = run_timing(ns, dtype, what, args.rounds if what == "step" else 3 * args.rounds)
            result["timing"][dtype][what] = t
            sl = t["slopes"]
            print(f"{dtype} {what} interleaved: slope per round {np.round(sl, 3).tolist()}", flush=True)
        result["slopes"][dtype] = {w: (float(np.median(t["slopes"])) if t["slopes"] else None)
                                   for w, t in result["timing"][dtype].items()}
    if plot(result, args.plot):
        result["plot"] = os.path.relpath(args.plot, args.md.parent)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    write_marked_block(args.md, "scale", render(result), "# Performance")
    print(f"wrote {args.out}, {args.md}" + (f", {args.plot}" if result.get("plot") else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
