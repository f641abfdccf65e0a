"""``vitzoo list [PATTERN]``: the registered models (and, with --mixers, the token mixers)."""

from __future__ import annotations

import argparse

HELP = "list vitzoo models matching a pattern, or the mixers"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pattern", nargs="?", default="*", help="shell-style pattern, e.g. 'ravlt_*'")
    parser.add_argument("--mixers", action="store_true", help="list the token mixers instead")


def run(args: argparse.Namespace) -> int:
    import vitzoo
    from vitzoo.mixers import get_mixer_class
    from vitzoo.models import model_family

    if args.mixers:
        for name in vitzoo.list_mixers():
            cls = get_mixer_class(name)
            print(f"{name:<16} {cls.complexity:<10} {cls.__module__}.{cls.__qualname__}")
        return 0
    names = vitzoo.list_models(args.pattern)
    if not names:
        print(f"no vitzoo model matches {args.pattern!r}")
        return 1
    for name in names:
        print(f"{name:<28} {model_family(name)}")
    return 0
