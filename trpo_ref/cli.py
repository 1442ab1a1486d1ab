"""The ``trpo-ref`` command: train, eval, plot, trace, check, bench.

Each command module registers its own sub-parser; this module only builds the
top-level parser, dispatches, and turns expected errors into one clear line
and a non-zero exit (no traceback).
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["main", "build_parser", "CLIError", "one_line_errors"]


class CLIError(Exception):
    """An error to report as one line, with an exit code (default 2)."""

    def __init__(self, message: str, code: int = 2):
        super().__init__(message)
        self.code = code


def one_line_errors(parser: argparse.ArgumentParser, name: str) -> None:
    """Make ``parser`` report argument errors as one line (no usage block), exit status 2."""

    def error(message):
        print(f"trpo-ref {name}: error: {message} (see 'trpo-ref {name} --help')", file=sys.stderr)
        raise SystemExit(2)

    parser.error = error


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every registered sub-command."""
    parser = argparse.ArgumentParser(
        prog="trpo-ref",
        description="Trust Region Policy Optimization, reference implementation (NumPy/CuPy, hand-written derivatives).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    # Registration hooks: each module adds its sub-commands with set_defaults(func=...).
    from . import commands

    commands.register_all(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``trpo-ref`` with ``argv``; returns the exit code (0 ok, 1 check failed, 2 usage/input error)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        rc = args.func(args)
    except CLIError as exc:
        print(f"trpo-ref {args.command}: error: {exc}", file=sys.stderr)
        return exc.code
    except OSError as exc:
        # e.g. a file where a directory should be: name the path, no traceback
        if exc.strerror and exc.filename is not None:
            msg = f"{exc.filename}: {exc.strerror}"
            if getattr(exc, "filename2", None) is not None:
                msg += f" (and {exc.filename2})"
        else:
            msg = str(exc)
        print(f"trpo-ref {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except (ValueError, KeyError) as exc:
        msg = f"missing entry {exc.args[0]!r}" if isinstance(exc, KeyError) and exc.args else exc
        print(f"trpo-ref {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"trpo-ref {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
