"""``trpo-ref train``, ``eval`` and ``plot`` (registered by :mod:`trpo_ref.commands`)."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
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


def _steps_at_least(lo: int):
    """argparse type: a step count >= lo, written 100000, 1e6, 2.5e5 or 1_000_000."""

    def parse(text: str) -> int:
        from .settings import parse_steps

        try:
            v = parse_steps(text)
        except ValueError:
            v = None
        if v is None or v < lo:
            raise argparse.ArgumentTypeError(f"expected a whole number >= {lo} (such as 100000 or 1e6), got {text!r}")
        return v

    return parse


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
    p.add_argument("--total-steps", type=_steps_at_least(1), default=None,
                   help="environment steps to train for, rounded up to whole iterations "
                        "(default: the env's entry in trpo_ref/envs.py, else 100000); with --resume, "
                        "a larger value extends the run")
    p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="the TRPO update of this library (see docs/presets.md; default: sb3-contrib, "
                        "with --resume: the saved run's)")
    p.add_argument("--n-envs", type=_positive_int, default=None,
                   help="environments stepped together (default: the env's entry, else 1)")
    p.add_argument("--n-steps", type=_steps_at_least(1), default=None,
                   help="steps per env per iteration (default: the env's entry, else 2048)")
    p.add_argument("--async", dest="vectorization", action="store_const", const="async", default=None,
                   help="step the envs in subprocesses (gymnasium AsyncVectorEnv) instead of in this process")
    p.add_argument("--device", default=None, help="where the update runs: cpu or cuda[:K] (default: cpu)")
    p.add_argument("--dtype", choices=("float64", "float32"), default=None,
                   help="floating type of the update (default: float64)")
    p.add_argument("--config", metavar="FILE", default=None,
                   help="JSON or YAML file of TrainConfig / TRPOConfig fields (flat, or as {\"train\": {...}, "
                        "\"trpo\": {...}}), a run's own config.json, or an RL-Zoo hyperparameter file "
                        "(e.g. hyperparams/trpo.yml: the entry for ENV is used)")
    p.add_argument("--out", metavar="DIR", default=None,
                   help="run directory: new or empty for a new run (default: a new runs/ENV/seedSEED-TIMESTAMP; "
                        "with --resume: the newest run under runs/ENV/)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last checkpoint (after a crash or kill; from the "
                        "start when it stopped before its first); it ends with the same numbers as an "
                        "uninterrupted run")
    p.add_argument("--eval-freq", type=_steps_at_least(0), default=None,
                   help="evaluate every this many environment steps (summed over envs; 0: never, the default); "
                        "writes evaluations.npz (SB3's layout) and best_policy.npz")
    p.add_argument("--eval-episodes", type=_positive_int, default=None,
                   help="episodes per evaluation (default: 5)")
    p.add_argument("--eval-stochastic", action="store_true",
                   help="evaluate by sampling actions (default: the deterministic policy, as SB3)")
    p.add_argument("--tensorboard-log", metavar="DIR", default=None,
                   help="also write TensorBoard scalars under SB3's names to DIR/RUN-NAME "
                        "(pip install 'trpo-ref[tensorboard]')")
    p.add_argument("--quiet", action="store_true",
                   help="print nothing per iteration (default: a progress bar on a terminal, else one line "
                        "per iteration)")
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
    p.add_argument("--best", action="store_true",
                   help="the policy of the best evaluation during training (best_policy.npz, from --eval-freq) "
                        "instead of the final one")
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
                   help="image file to write, e.g. curves.png or curves.pdf; an existing directory gets "
                        "plot.png inside it (default: RUN_DIR/plot.png for one run, else ./plot.png)")
    p.set_defaults(func=cmd_plot)


# ---------------------------------------------------------------------- helpers
def _check_env_id(env_id: str) -> None:
    import gymnasium as gym

    if env_id not in gym.registry:
        close = [k for k in gym.registry if k.lower().split("-v")[0] == env_id.lower().split("-v")[0]]
        hint = f"; did you mean {', '.join(sorted(close)[:3])}?" if close else ""
        raise CLIError(f"unknown environment id {env_id!r}{hint}")


def _read_config_file(path: str, env_id: str) -> tuple[dict, list]:
    from .settings import read_config_file

    try:
        return read_config_file(path, env_id)
    except ValueError as exc:
        raise CLIError(str(exc)) from None


def _build_configs(env_id, preset, file_layer, options, path):
    from .settings import build_configs

    if path:
        try:  # the file alone first, so that its errors name it
            build_configs(env_id, preset, file_layer)
        except ValueError as exc:
            raise CLIError(f"--config {path}: {exc}") from None
    try:
        return build_configs(env_id, preset, file_layer, options)
    except ValueError as exc:
        raise CLIError(str(exc)) from None


def _named_fields(layer: dict) -> set:
    return (set(layer) - {"train", "trpo"}) | set(layer.get("train") or {}) | set(layer.get("trpo") or {})


def _check_resume_configs(args, cfg, trpo_cfg, file_layer, doc, run_dir) -> None:
    """--preset/--config given with --resume must describe the saved run (it is continued with its own).

    With --preset, every TRPOConfig field built from the preset, the env table and --config must
    equal the saved one; otherwise (and for TrainConfig fields) the fields --config names.
    ``total_steps`` may differ.
    """
    if args.preset is None and not args.config:
        return
    sections = (("train", cfg.to_dict(), doc["train"]), ("trpo", trpo_cfg.to_dict(), doc["trpo"]))
    named = _named_fields(file_layer)
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
    from .rundir import is_run_dir

    root = RUNS_ROOT / env_id
    runs = sorted((p for p in root.glob("*") if is_run_dir(p)), key=lambda p: (p / "config.json").stat().st_mtime)
    if not runs:
        raise CLIError(f"--resume: no run under {root}/ (pass --out DIR)")
    return runs[-1]


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """SIGTERM (kill) ends the run like Ctrl-C: workers stopped, temporary files removed, exit 130."""

    def handler(signum, frame):
        raise KeyboardInterrupt

    try:
        old = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


# --------------------------------------------------------------------- commands
def cmd_train(args) -> int:
    r"""``trpo-ref train``: build the configs for an environment and train.

    Everything is read and checked before anything is written; settings are
    preset < per-env defaults < --config < options (see :mod:`trpo_ref.settings`).

    Parameters
    ----------
    args : argparse.Namespace
        Parsed arguments of the subcommand.

    Returns
    -------
    int
        Exit status.
    """
    from .rundir import RunDirError, check_fresh, claim_new_run_dir, remove_if_empty
    from .train import read_run_config, train

    _check_env_id(args.env)
    if args.out and Path(args.out).exists() and not Path(args.out).is_dir():
        raise CLIError(f"--out {args.out} exists and is not a directory")
    file_layer, notes = _read_config_file(args.config, args.env) if args.config else ({}, [])
    flags = {"seed": args.seed, "total_steps": args.total_steps, "n_envs": args.n_envs, "n_steps": args.n_steps,
             "vectorization": args.vectorization, "device": args.device, "dtype": args.dtype,
             "eval_freq": args.eval_freq, "eval_episodes": args.eval_episodes,
             "eval_deterministic": False if args.eval_stochastic else None}
    options = {k: v for k, v in flags.items() if v is not None}
    cfg, trpo_cfg = _build_configs(args.env, args.preset or "sb3-contrib", file_layer, options, args.config)
    if args.tensorboard_log is not None:
        from .train import summary_writer_class

        try:
            summary_writer_class()
        except ImportError as exc:
            raise CLIError(f"--tensorboard-log: {exc}") from None

    claimed = False
    if args.resume:
        run_dir = Path(args.out) if args.out else _newest_run(args.env)
        if not (run_dir / "config.json").is_file():
            raise CLIError(f"--resume: {run_dir} holds no trpo_ref run to continue (no config.json)")
        doc = read_run_config(run_dir)
        saved = doc["train"]
        if saved["env_id"] != args.env:
            raise CLIError(f"--resume: {run_dir} is a run of {saved['env_id']}, not {args.env}")
        for k, v in options.items():
            if k != "total_steps" and saved.get(k) != v:
                opt = {"vectorization": "--async", "eval_deterministic": "--eval-stochastic"}.get(
                    k, f"--{k.replace('_', '-')} {v}")
                raise CLIError(f"--resume: {opt} differs from the saved run's {k} = {saved.get(k)!r}")
        _check_resume_configs(args, cfg, trpo_cfg, file_layer, doc, run_dir)
        if args.total_steps is None:
            import dataclasses

            if "total_steps" not in saved:
                raise CLIError(f"{run_dir / 'config.json'}: missing entry 'train.total_steps'")
            # the run's current target (config.json is rewritten when a resume extends it)
            cfg = dataclasses.replace(cfg, total_steps=saved["total_steps"])
    elif args.out:
        run_dir = Path(args.out)
        try:
            check_fresh(run_dir)
        except RunDirError as exc:
            raise CLIError(str(exc)) from None
    else:
        run_dir = claim_new_run_dir(RUNS_ROOT / args.env, cfg.seed)
        claimed = True

    for note in notes:
        print(f"trpo-ref train: warning: {note}", file=sys.stderr)
    try:
        with _sigterm_as_interrupt():
            result = train(cfg, trpo_cfg, run_dir, resume=args.resume, quiet=args.quiet, plot=not args.no_plot,
                           n_blas_threads=args.threads, tensorboard_log=args.tensorboard_log)
    except RunDirError as exc:
        raise CLIError(str(exc)) from None
    except BaseException:
        if claimed:
            remove_if_empty(run_dir)
        raise
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
    path = run_dir / ("best_policy.npz" if args.best else "policy.npz")
    if not path.is_file():
        if args.best:
            raise CLIError(f"{run_dir} has no best_policy.npz (train with --eval-freq N to keep the best policy)")
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
    from .plotting import learning_curve, plot_runs

    runs = _expand_runs(args.run_dirs)
    out = Path(args.output) if args.output else (runs[0] / "plot.png" if len(runs) == 1 else Path("plot.png"))
    if out.is_dir():
        out = out / "plot.png"
    elif not out.suffix:
        raise CLIError(f"-o {out}: name an image file with its extension, e.g. {out}.png (or an existing "
                       "directory, to write plot.png in it)")
    try:
        if not any(len(learning_curve(d)[0]) for d in runs):
            raise CLIError(f"nothing to plot: no iteration of {', '.join(str(d) for d in runs)} finished an "
                           "episode (progress.csv has no ep_return_mean)")
        path = plot_runs(runs, out)
    except ImportError as exc:
        raise CLIError(str(exc)) from None
    except (OSError, KeyError, ValueError) as exc:
        raise CLIError(f"cannot plot: {exc}") from None
    print(f"wrote {path} ({len(runs)} run(s))")
    return 0
