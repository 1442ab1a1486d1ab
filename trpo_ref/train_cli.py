"""``trpo-ref train``, ``eval`` and ``plot`` (registered by :mod:`trpo_ref.commands`)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .cli import CLIError, one_line_errors

__all__ = ["register_cli"]

RUNS_ROOT = Path("runs")


def _int_at_least(lo: int):
    """argparse type: an integer >= lo, with a one-line message otherwise."""

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            v = None
        if v is None or v < lo:
            raise argparse.ArgumentTypeError(f"expected an integer >= {lo}, got {text!r}")
        return v

    return parse


_positive_int = _int_at_least(1)
_nonneg_int = _int_at_least(0)


def register_cli(subparsers) -> None:
    r"""Add the ``train``, ``eval`` and ``plot`` subcommands.

    Parameters
    ----------
    subparsers : argparse._SubParsersAction
        From ``ArgumentParser.add_subparsers``.
    """
    from .trpo import PRESETS

    # ------------------------------------------------------------------ train
    p = subparsers.add_parser(
        "train", help="train a policy on a gymnasium environment",
        description="Train a TRPO policy.  Settings: preset < per-env defaults (trpo_ref/envs.py) < --config "
                    "< options.  Writes config.json, progress.csv, checkpoint.npz, policy.npz and plot.png "
                    "to runs/ENV/RUN-NAME/ (or --out).")
    one_line_errors(p, "train")
    p.add_argument("env", metavar="ENV", help="gymnasium environment id, e.g. CartPole-v1, Pendulum-v1, Hopper-v5")
    p.add_argument("--seed", type=_nonneg_int, default=None,
                   help="seed of every random draw of the run (default: 0)")
    p.add_argument("--total-steps", type=_positive_int, default=None,
                   help="environment steps to train for, rounded up to whole iterations "
                        "(default: the env's entry in trpo_ref/envs.py, else 100000); with --resume, "
                        "a larger value extends the run")
    p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="the TRPO update of this library (see docs/presets.md; default: sb3-contrib, "
                        "with --resume: the saved run's)")
    p.add_argument("--n-envs", type=_positive_int, default=None,
                   help="environments stepped together (default: the env's entry, else 1)")
    p.add_argument("--n-steps", type=_positive_int, default=None,
                   help="steps per env per iteration (default: the env's entry, else 2048)")
    p.add_argument("--async", dest="vectorization", action="store_const", const="async", default=None,
                   help="step the envs in subprocesses (gymnasium AsyncVectorEnv) instead of in this process")
    p.add_argument("--device", default=None, help="where the update runs: cpu or cuda[:K] (default: cpu)")
    p.add_argument("--dtype", choices=("float64", "float32"), default=None,
                   help="floating type of the update (default: float64)")
    p.add_argument("--config", metavar="FILE", default=None,
                   help="JSON file of TrainConfig / TRPOConfig fields, flat or as {\"train\": {...}, \"trpo\": {...}}")
    p.add_argument("--out", metavar="DIR", default=None,
                   help="run directory (default: runs/ENV/seedSEED-TIMESTAMP; with --resume: the newest "
                        "run of ENV under runs/ENV/ that has a checkpoint)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last checkpoint (after a crash or kill); "
                        "it ends with the same numbers as an uninterrupted run")
    p.add_argument("--quiet", action="store_true", help="no progress bar (there is none when stderr is not a terminal)")
    p.add_argument("--threads", type=_positive_int, default=1,
                   help="BLAS threads (1 is fastest for these small networks)")
    p.add_argument("--no-plot", action="store_true", help="do not write plot.png at the end")
    p.set_defaults(func=cmd_train)

    # ------------------------------------------------------------------- eval
    p = subparsers.add_parser(
        "eval", help="run a trained policy for some episodes and print its returns",
        description="Load RUN_DIR/policy.npz and run full episodes on its environment (one env).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    one_line_errors(p, "eval")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by 'trpo-ref train'")
    p.add_argument("--episodes", type=_positive_int, default=10, help="number of episodes")
    p.add_argument("--deterministic", action="store_true",
                   help="take the mode of the policy (mean action / most likely action) instead of sampling")
    p.add_argument("--seed", type=_nonneg_int, default=12345, help="seed of the episodes and of the action noise")
    p.set_defaults(func=cmd_eval)

    # ------------------------------------------------------------------- plot
    p = subparsers.add_parser(
        "plot", help="plot learning curves of one or more runs",
        description="Mean episode return against environment steps; several runs of one env are drawn as "
                    "their mean with a ±1 std band (one panel per env).  A directory without progress.csv "
                    "stands for the runs inside it (e.g. runs/CartPole-v1).  Needs matplotlib "
                    "(pip install 'trpo-ref[plot]').")
    one_line_errors(p, "plot")
    p.add_argument("run_dirs", metavar="RUN_DIR", nargs="+", help="run directories (or directories of runs)")
    p.add_argument("-o", "--output", metavar="FILE", default=None,
                   help="image file to write (default: RUN_DIR/plot.png for one run, else ./plot.png)")
    p.set_defaults(func=cmd_plot)


# ---------------------------------------------------------------------- helpers
def _check_env_id(env_id: str) -> None:
    import gymnasium as gym

    if env_id not in gym.registry:
        close = [k for k in gym.registry if k.lower().split("-v")[0] == env_id.lower().split("-v")[0]]
        hint = f"; did you mean {', '.join(sorted(close)[:3])}?" if close else ""
        raise CLIError(f"unknown environment id {env_id!r}{hint}")


def _read_config_file(path: str) -> dict:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise CLIError(f"cannot read --config {path}: {exc.strerror or exc}") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CLIError(f"--config {path} is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise CLIError(f"--config {path} must hold a JSON object")
    return doc


def _check_config_env(doc: dict, path: str | None, env_id: str) -> None:
    """An ``env_id`` in --config must be the positional ENV (it would silently override it)."""
    for where, d in (("", doc), ("train.", doc.get("train"))):
        if isinstance(d, dict) and "env_id" in d and d["env_id"] != env_id:
            raise CLIError(f"--config {path}: {where}env_id {d['env_id']!r} differs from ENV {env_id!r} "
                           "(drop it from the file, or train that env)")


def _build_configs(build_configs, env_id, preset, overrides, path, file_doc):
    try:
        if path:
            try:  # the file alone first, so that its errors name it
                build_configs(env_id, preset, file_doc)
            except ValueError as exc:
                raise CLIError(f"--config {path}: {exc}") from None
        return build_configs(env_id, preset, overrides)
    except TypeError as exc:  # a value of the wrong type that validation did not name
        where = f"--config {path}" if path else "options"
        raise CLIError(f"{where}: invalid value: {exc}") from None


def _check_resume_configs(args, cfg, trpo_cfg, overrides, doc, run_dir) -> None:
    """--preset/--config given with --resume must describe the saved run (it is continued with its own).

    With --preset, every TRPOConfig field built from the preset, the env table and --config must
    equal the saved one; otherwise (and for TrainConfig fields) the fields --config and the options
    name.  ``total_steps`` may differ.
    """
    if args.preset is None and not args.config:
        return
    sections = (("train", cfg.to_dict(), doc["train"]), ("trpo", trpo_cfg.to_dict(), doc["trpo"]))
    named = set(overrides) | set(overrides.get("train") or {}) | set(overrides.get("trpo") or {})
    for section, built, saved in sections:
        for k, v in built.items():
            if k == "total_steps" or (section == "trpo" and k == "seed"):
                continue
            if k not in named and not (section == "trpo" and args.preset is not None):
                continue
            if k not in saved or saved[k] != v:
                given = (f"--preset {args.preset}" if args.preset else "") + \
                        (" with " if args.preset and args.config else "") + \
                        (f"--config {args.config}" if args.config else "")
                raise CLIError(f"--resume: {given} gives {section}.{k} = {v!r}, the saved run in {run_dir} has "
                               f"{saved.get(k, '(none)')!r}")


def _run_dir_of(path: str) -> Path:
    d = Path(path)
    if not d.is_dir():
        raise CLIError(f"{path} is not a directory")
    return d


def _newest_run(env_id: str) -> Path:
    root = RUNS_ROOT / env_id
    runs = sorted((p for p in root.glob("*") if (p / "checkpoint.npz").is_file()),
                  key=lambda p: (p / "checkpoint.npz").stat().st_mtime)
    if not runs:
        raise CLIError(f"--resume: no run with a checkpoint under {root}/ (pass --out DIR)")
    return runs[-1]


# --------------------------------------------------------------------- commands
def cmd_train(args) -> int:
    r"""``trpo-ref train``: build the configs for an environment and train.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed arguments of the subcommand.

    Returns
    -------
    int
        Exit status.
    """
    from .train import build_configs, read_run_config, train

    _check_env_id(args.env)
    if args.out and Path(args.out).exists() and not Path(args.out).is_dir():
        raise CLIError(f"--out {args.out} exists and is not a directory")
    file_doc = _read_config_file(args.config) if args.config else {}
    _check_config_env(file_doc, args.config, args.env)
    overrides = dict(file_doc)
    flags = {"seed": args.seed, "total_steps": args.total_steps, "n_envs": args.n_envs, "n_steps": args.n_steps,
             "vectorization": args.vectorization, "device": args.device, "dtype": args.dtype}
    overrides.update({k: v for k, v in flags.items() if v is not None})
    cfg, trpo_cfg = _build_configs(build_configs, args.env, args.preset or "sb3-contrib", overrides, args.config, file_doc)

    if args.resume:
        run_dir = Path(args.out) if args.out else _newest_run(args.env)
        if not (run_dir / "checkpoint.npz").is_file():
            raise CLIError(f"--resume: {run_dir} has no checkpoint.npz to continue from")
        doc = read_run_config(run_dir)
        saved = doc["train"]
        if saved["env_id"] != args.env:
            raise CLIError(f"--resume: {run_dir} is a run of {saved['env_id']}, not {args.env}")
        for k, v in flags.items():
            if v is not None and k != "total_steps" and saved.get(k) != v:
                raise CLIError(f"--resume: --{k.replace('_', '-')} {v} differs from the saved run's {saved.get(k)!r}")
        _check_resume_configs(args, cfg, trpo_cfg, overrides, doc, run_dir)
        if args.total_steps is None:
            import dataclasses

            if "total_steps" not in saved:
                raise CLIError(f"{run_dir / 'config.json'}: missing entry 'train.total_steps'")
            # the run's current target (config.json is rewritten when a resume extends it)
            cfg = dataclasses.replace(cfg, total_steps=saved["total_steps"])
    else:
        if args.out:
            run_dir = Path(args.out)
            if (run_dir / "checkpoint.npz").exists():
                raise CLIError(f"{run_dir} already holds a run: add --resume to continue it, or choose another --out")
        else:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            run_dir = RUNS_ROOT / args.env / f"seed{cfg.seed}-{stamp}"
            k = 1
            while run_dir.exists():
                run_dir = RUNS_ROOT / args.env / f"seed{cfg.seed}-{stamp}-{k}"
                k += 1

    result = train(cfg, trpo_cfg, run_dir, resume=args.resume, quiet=args.quiet, plot=not args.no_plot,
                   n_blas_threads=args.threads)
    ret = result.get("ep_return_mean", "")
    ret_txt = f"{ret:.1f}" if isinstance(ret, float) else "n/a"
    print(f"{args.env}: {result.get('total_steps', 0)} steps, last iteration's mean return {ret_txt}; "
          f"run in {run_dir}")
    if not args.no_plot and not (run_dir / "plot.png").exists():
        print("no plot.png: install matplotlib (pip install 'trpo-ref[plot]') and run 'trpo-ref plot "
              f"{run_dir}'", file=sys.stderr)
    return 0


def cmd_eval(args) -> int:
    r"""``trpo-ref eval``: run a saved policy for some episodes and print the returns.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed arguments of the subcommand.

    Returns
    -------
    int
        Exit status.
    """
    import numpy as np

    from .train import evaluate, load_policy

    run_dir = _run_dir_of(args.run_dir)
    path = run_dir / "policy.npz"
    if not path.is_file():
        raise CLIError(f"{run_dir} has no policy.npz (is it a finished 'trpo-ref train' run?)")
    policy, theta, norm, env_id = load_policy(path)
    returns = evaluate(policy, theta, env_id, args.episodes, args.deterministic, args.seed, norm)
    mode = "deterministic" if args.deterministic else "stochastic"
    print(f"{env_id}: mean return {np.mean(returns):.2f} ± {np.std(returns):.2f} over {len(returns)} episodes "
          f"({mode} policy; min {np.min(returns):.2f}, max {np.max(returns):.2f})")
    return 0


def _expand_runs(paths) -> list[Path]:
    out = []
    for p in paths:
        d = _run_dir_of(p)
        if (d / "progress.csv").is_file():
            out.append(d)
            continue
        inner = sorted(q for q in d.iterdir() if (q / "progress.csv").is_file())
        if not inner:
            raise CLIError(f"{d} holds no progress.csv (not a run directory, nor a directory of runs)")
        out.extend(inner)
    for d in out:
        if not (d / "config.json").is_file():
            raise CLIError(f"{d} has progress.csv but no config.json: not a complete run directory")
    return out


def cmd_plot(args) -> int:
    r"""``trpo-ref plot``: plot the learning curves of one or more runs.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed arguments of the subcommand.

    Returns
    -------
    int
        Exit status.
    """
    from .train import plot_runs

    from .train import _curve

    runs = _expand_runs(args.run_dirs)
    out = Path(args.output) if args.output else (runs[0] / "plot.png" if len(runs) == 1 else Path("plot.png"))
    try:
        if not any(len(_curve(d)[0]) for d in runs):
            raise CLIError(f"nothing to plot: no iteration of {', '.join(str(d) for d in runs)} finished an "
                           "episode (progress.csv has no ep_return_mean)")
        path = plot_runs(runs, out)
    except ImportError as exc:
        raise CLIError(str(exc)) from None
    except (OSError, KeyError, ValueError) as exc:
        raise CLIError(f"cannot plot: {exc}") from None
    print(f"wrote {path} ({len(runs)} run(s))")
    return 0
