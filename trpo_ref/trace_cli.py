"""``trpo-ref trace`` and ``trpo-ref check``: write an oracle trace, check one.

Exit codes of ``check``: 0 every quantity agrees, 1 a quantity is out of
tolerance (the first one is named), 2 the file is unusable (one line on
stderr, no traceback).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .cli import CLIError, one_line_errors
from .heads import HEADS

__all__ = ["register_cli", "cmd_trace", "cmd_check", "config_from_file"]


def _sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 64,64, got {text!r}") from None
    if any(s < 1 for s in sizes):
        raise argparse.ArgumentTypeError(f"hidden sizes must be >= 1, got {text!r}")
    return sizes


def register_cli(subparsers) -> None:
    r"""Add the ``trace`` and ``check`` subcommands.

    Parameters
    ----------
    subparsers : argparse._SubParsersAction
        From ``ArgumentParser.add_subparsers``.
    """
    from .oracle import DEFAULT_ATOL, DEFAULT_RTOL, TOLERANCES
    from .trpo import PRESETS

    p = subparsers.add_parser(
        "trace", help="write an oracle trace of one update (synthetic case, or your weights and batch)",
        description="Run one trpo_ref update and write its inputs and every intermediate to a .npz trace. "
                    "Either a seeded synthetic case (--policy, --seed) or your own weights and batch "
                    "(--weights, --batch). See docs/oracle.md.")
    one_line_errors(p, "trace")
    p.add_argument("--preset", choices=sorted(PRESETS),
                   help="library whose update to replay (required unless --config is given)")
    p.add_argument("--config", metavar="FILE",
                   help="TRPOConfig fields (JSON or YAML) on top of --preset, or of the paper's defaults without it")
    p.add_argument("-o", "--output", required=True, help="trace file to write (.npz)")
    syn = p.add_argument_group("synthetic case")
    syn.add_argument("--policy", choices=tuple(HEADS),
                     help="policy kind of the synthetic case")
    syn.add_argument("--seed", type=int, default=0, help="seed of the synthetic case (default 0)")
    syn.add_argument("--n", type=int, default=64, help="batch size (default 64)")
    syn.add_argument("--obs-dim", type=int, default=4, help="observation dimension (default 4)")
    syn.add_argument("--act-dim", type=int, default=2,
                     help="action dimension, or number of actions for categorical (default 2)")
    syn.add_argument("--hidden", type=_sizes, default=(16, 16), help="hidden sizes, e.g. 64,64 (default 16,16)")
    own = p.add_argument_group("your weights and batch")
    own.add_argument("--weights", help="policy weights (.npz or .safetensors)")
    own.add_argument("--batch", help="batch (.npz or .safetensors with obs, act, adv, logp_old [, cg_x0])")
    own.add_argument("--layout", default="auto", choices=("auto", "sb3", "cleanrl", "trpo_ref"),
                     help="key layout of the weights (default: guessed from the keys)")
    p.add_argument("--activation", default="tanh", choices=("tanh", "relu"), help="hidden activation (default tanh)")
    p.set_defaults(func=cmd_trace)

    c = subparsers.add_parser(
        "check", help="recompute a trace's update and report where it departs",
        description="Stage-wise (default): recompute every recorded quantity from the candidate's own upstream "
                    "values, so an error is charged to the stage that made it; a drift section sets the "
                    "end-to-end distance beside the spread rounding alone gives here. End-to-end: compare with "
                    "trpo_ref's whole update. Exit 0: all agree; 1: a quantity is out of tolerance; "
                    "2: unusable file.")
    one_line_errors(c, "check")
    c.add_argument("file", help="trace file (.npz)")
    c.add_argument("--mode", choices=("stage-wise", "end-to-end"), default=None,
                   help="stage-wise (default) or end-to-end comparison")
    tol = ", ".join(f"{k} {v[0]:g}" for k, v in TOLERANCES.items())
    c.add_argument("--rtol", type=float, default=None,
                   help=f"relative tolerance (stage-wise default by the trace's dtype: {tol}; "
                        f"end-to-end default {DEFAULT_RTOL:g})")
    c.add_argument("--atol", type=float, default=None,
                   help=f"absolute tolerance, end-to-end only (default {DEFAULT_ATOL:g})")
    c.add_argument("--no-drift", action="store_true", help="stage-wise: leave out the drift section")
    c.add_argument("--reference", help="compare end-to-end against this trace file instead of recomputing")
    c.add_argument("--preset", choices=sorted(PRESETS),
                   help="check against this library's conventions instead of the config stored in the trace")
    c.add_argument("--config", metavar="FILE",
                   help="TRPOConfig fields (JSON or YAML) on top of --preset, or of the trace's config without it")
    c.add_argument("--failures-only", action="store_true", help="print only the rows out of tolerance")
    c.add_argument("--json", action="store_true", help="print the report as JSON")
    c.set_defaults(func=cmd_check)


def config_from_file(path, base=None):
    r"""A :class:`~trpo_ref.trpo.TRPOConfig`: the fields in a JSON or YAML file on top of ``base``.

    Parameters
    ----------
    path : str or Path
        ``.json`` (JSON) or anything else (YAML, which reads JSON too; ``1e-3`` is a
        number), holding one mapping of TRPOConfig field names to values, e.g.
        ``{"max_kl": 0.05}``, or such a mapping under ``"trpo"`` (a run's config.json).
    base : TRPOConfig, optional
        Defaults to ``TRPOConfig()`` (the paper's update).

    Returns
    -------
    TRPOConfig

    Raises
    ------
    CLIError
        Unreadable file, not a mapping, an unknown field (named) or an invalid value.
    """
    from .settings import ConfigError, _load_text
    from .trpo import TRPOConfig

    path = Path(path)
    try:
        data = _load_text(str(path), path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CLIError(f"--config {path}: cannot read it ({exc.strerror or exc})") from None
    except ConfigError as exc:
        raise CLIError(f"--config {exc}") from None
    if isinstance(data, dict) and isinstance(data.get("trpo"), dict):  # a run's config.json, or {"trpo": {...}}
        data = data["trpo"]
    if not isinstance(data, dict):
        raise CLIError(f"--config {path}: expected a mapping of TRPOConfig fields, got {type(data).__name__}")
    base = TRPOConfig() if base is None else base
    try:
        return TRPOConfig.from_dict({**base.to_dict(), **data})
    except (ValueError, TypeError) as exc:
        raise CLIError(f"--config {path}: {exc}") from None


def _config_args(args, base=None):
    """(config, preset name) from --preset and --config; ``base`` when neither is given."""
    from .trpo import TRPOConfig

    cfg = TRPOConfig.preset(args.preset) if args.preset else base
    if args.config:
        cfg = config_from_file(args.config, cfg)
    return cfg, args.preset


def cmd_trace(args) -> int:
    r"""``trpo-ref trace``: compute one TRPO update's trace and save it.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed arguments of the subcommand.

    Returns
    -------
    int
        Exit status.
    """
    from . import interop
    from .oracle import compute_trace, synthetic_case

    if args.preset is None and args.config is None:
        raise CLIError("give --preset NAME, --config FILE, or both (the file's fields on top of the preset)")
    config, preset = _config_args(args)
    out = Path(args.output)
    if out.is_dir():
        raise CLIError(f"-o {args.output} is a directory: give a file name such as {out / 'trace.npz'}")
    if not (out.parent if str(out.parent) else Path(".")).is_dir():
        raise CLIError(f"-o {args.output}: directory {out.parent} does not exist")
    own = args.weights is not None or args.batch is not None
    if own and args.policy is not None:
        raise CLIError("give either --policy (synthetic case) or --weights and --batch, not both")
    if own:
        if args.weights is None or args.batch is None:
            raise CLIError("--weights and --batch go together")
        policy, theta = interop.load_weights(args.weights, args.layout, activation=args.activation)
        batch, x0 = interop.load_batch(args.batch, policy)
    else:
        if args.policy is None:
            raise CLIError("give --policy gaussian|categorical (synthetic case) or --weights and --batch")
        for name in ("n", "obs_dim", "act_dim"):
            if getattr(args, name) < 1:
                raise CLIError(f"--{name.replace('_', '-')} must be >= 1")
        policy, theta, batch = synthetic_case(args.policy, args.seed, args.n, args.obs_dim, args.act_dim,
                                              args.hidden, args.activation)
        x0 = None
    trace = compute_trace(policy, theta, batch, config, preset, x0=x0)
    path = trace.save(args.output)
    acc = int(trace["accepted_index"])
    conventions = " + ".join(([f"preset {preset}"] if preset else []) + ([f"config {args.config}"] if args.config
                                                                         else []))
    print(f"wrote {path}: {policy.kind} policy, {policy.num_params} parameters, N = {len(batch)}, "
          f"{conventions}, status {trace.status}"
          + (f" (try {acc})" if acc >= 0 else ""))
    return 0


def cmd_check(args) -> int:
    r"""``trpo-ref check``: compare a trace (or two trace files) against the reference.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed arguments of the subcommand.

    Returns
    -------
    int
        Exit status: 0 when every row passes.
    """
    import json

    from .oracle import DEFAULT_ATOL, DEFAULT_RTOL, check_trace, compare_files

    for name in ("rtol", "atol"):
        v = getattr(args, name)
        if v is not None and not (v >= 0 and v != float("inf")):
            raise CLIError(f"--{name} must be finite and >= 0")
    if args.reference and (args.mode == "stage-wise" or args.no_drift):
        raise CLIError("--reference compares two files end to end: --mode stage-wise and --no-drift do not apply")
    args.mode = args.mode or ("end-to-end" if args.reference else "stage-wise")
    if args.atol and args.mode == "stage-wise":
        raise CLIError("--atol applies to --mode end-to-end only (stage-wise scales a quantity that cancels "
                       "by its terms)")
    conventions = args.preset is not None or args.config is not None
    if conventions and args.reference:
        raise CLIError("--preset/--config apply to a recomputed check, not to --reference")
    if args.reference:
        report = compare_files(args.reference, args.file, DEFAULT_RTOL if args.rtol is None else args.rtol,
                               DEFAULT_ATOL if args.atol is None else args.atol)
    elif conventions:
        from .oracle import load_trace

        trace = load_trace(args.file)
        config, preset = _config_args(args, trace.config)
        trace.meta["config"] = config.to_dict()
        trace.meta["preset"] = preset if preset else trace.preset
        report = check_trace(trace, args.rtol, args.atol, mode=args.mode, drift=not args.no_drift)
        report.header.insert(0, f"trace: {args.file} (format v{trace.meta['format_version']}, status {trace.status}); "
                                "conventions: " + " + ".join(([f"preset {args.preset}"] if args.preset else
                                                               ["the trace's config"])
                                                              + ([f"config {args.config}"] if args.config else [])))
    else:
        report = check_trace(args.file, args.rtol, args.atol, mode=args.mode, drift=not args.no_drift)
    if args.json:
        print(json.dumps(report.to_dict(), indent=1, default=str))
    else:
        print(report.to_text("failures" if args.failures_only else "all"))
    sys.stdout.flush()
    return 0 if report.ok else 1
