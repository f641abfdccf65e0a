"""The ``vitzoo`` command. Each subcommand lives in ``vitzoo/commands/<name>.py`` and is found on import.

A command module defines ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``.
``tools/<verb>.py`` scripts call :func:`main` with their verb, so ``vitzoo bench ...`` and
``python tools/benchmark.py ...`` behave identically.
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

__all__ = ["main", "build_parser"]


def _command_modules() -> dict[str, object]:
    from . import commands
    from ._discovery import import_submodules

    return import_submodules(commands.__name__, commands.__path__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vitzoo", description="linear-attention model zoo")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module in sorted(_command_modules().items()):
        command = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(command)
        command.set_defaults(_run=module.run)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``vitzoo`` with ``argv`` (defaults to ``sys.argv[1:]``); returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except (ValueError, FileNotFoundError) as err:
        print(f"vitzoo {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
