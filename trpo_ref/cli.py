"""The ``trpo-ref`` command: train, eval, plot, trace, check, bench.

Each command module registers its own sub-parser; this module only builds the
top-level parser, dispatches, and turns expected errors into one clear line
and a non-zero exit (no traceback).
"""

from __future__ import annotations

import argparse
import os
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
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="trpo-ref",
        description="Trust Region Policy Optimization, reference implementation (NumPy/CuPy, hand-written derivatives).",
    )
    parser.add_argument("--version", action="version", version=f"trpo-ref {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    # Registration hooks: each module adds its sub-commands with set_defaults(func=...).
    from . import commands

    commands.register_all(sub)
    return parser


class _ClosedPipeSafe:
    """stdout that stops writing, silently, once its reader has gone (``trpo-ref check … | head``).

    The command then finishes and returns its own exit status: a closed pipe is
    not an unusable input file (2).  The stream's descriptor is pointed at
    /dev/null so that the interpreter's final flush does not complain either.
    """

    def __init__(self, stream):
        self._stream = stream
        self.closed_pipe = False

    def _gone(self):
        self.closed_pipe = True
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)
        except (OSError, ValueError, AttributeError):
            pass

    def write(self, text):
        if self.closed_pipe:
            return len(text)
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._gone()
            return len(text)

    def flush(self):
        if self.closed_pipe:
            return
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._gone()

    def __getattr__(self, name):
        return getattr(self._stream, name)


def main(argv: list[str] | None = None) -> int:
    """Run ``trpo-ref`` with ``argv``; returns the exit code (0 ok, 1 check failed, 2 usage/input error)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    real_stdout = sys.stdout
    sys.stdout = _ClosedPipeSafe(real_stdout)
    try:
        return _run(args)
    finally:
        sys.stdout = real_stdout


def _run(args) -> int:
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
