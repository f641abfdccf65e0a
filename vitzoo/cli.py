"""The ``vitzoo`` command. Each subcommand lives in ``vitzoo/commands/<name>.py`` and is found on import.

A command module defines ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``.
``tools/<verb>.py`` scripts call :func:`main` with their verb, so ``vitzoo bench ...`` and
``python tools/benchmark.py ...`` behave identically.

The error boundary: flags are checked where they are parsed (argparse ``type=`` functions,
:mod:`vitzoo.commands._types`); every expected failure of a command (``ValueError`` for bad input, an
incompatible checkpoint or a bad config; ``OSError`` for a missing file, folder or offline hub id) is printed
as one line ``vitzoo <command>: error: <message>`` and exits with status 2. ``--debug`` (before or after the
command) or ``VITZOO_DEBUG=1`` re-raises it with its traceback instead. Anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

__all__ = ["main", "build_parser"]


def _command_modules() -> dict[str, object]:
    from . import commands
    from ._discovery import import_submodules

    return import_submodules(commands.__name__, commands.__path__)


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``vitzoo <command>: error: <what was expected>`` and exit status 2
    (the usage stays available through ``--help``)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="vitzoo", description="linear-attention model zoo")
    _add_debug(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module in sorted(_command_modules().items()):
        command = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(command)
        _add_debug(command)
        command.set_defaults(_run=module.run)
    return parser


def _add_debug(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the traceback of an error instead of one line (also: VITZOO_DEBUG=1)")


def _one_line(err: BaseException) -> str:
    """The error's message on one line (an OSError without a message is named by its file)."""
    text = str(err) or getattr(err, "filename", None) or type(err).__name__
    if isinstance(err, OSError) and err.strerror and err.filename and str(err.filename) not in text:
        text = f"{err.strerror}: {err.filename}"
    return " ".join(str(text).split())


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``vitzoo`` with ``argv`` (defaults to ``sys.argv[1:]``); returns the exit status."""
    args = build_parser().parse_args(argv)
    debug = bool(getattr(args, "debug", False)) or os.environ.get("VITZOO_DEBUG", "") not in ("", "0")
    if hasattr(args, "debug"):
        del args.debug
    try:
        return int(args._run(args) or 0)
    except (ValueError, OSError) as err:
        if debug:
            raise
        print(f"vitzoo {args.command}: error: {_one_line(err)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
