"""Registry of the CLI's sub-commands (see :mod:`trpo_ref.cli`).

Each listed module defines ``register_cli(subparsers)``; a module that is not
written yet is skipped, so the command grows as the project does.
"""

from __future__ import annotations

import importlib

#: Modules that contribute sub-commands, in the order ``--help`` lists them.
COMMAND_MODULES = ("trpo_ref.train_cli", "trpo_ref.trace_cli", "trpo_ref.bench_cli")


def register_all(subparsers) -> None:
    """Add every available module's sub-commands to ``subparsers``."""
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue
            raise
        module.register_cli(subparsers)
