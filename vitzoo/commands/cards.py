"""``vitzoo cards``: write the model cards (``model_cards/<family>.md``) from the registry and measurements."""

from __future__ import annotations

import argparse

HELP = "write one markdown model card per family into model_cards/"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--family", default=None, help="one family (default: all)")
    parser.add_argument("--out", default="model_cards", help="cards folder (holds data/ and notes/)")
    parser.add_argument("--flops", action="store_true", help="re-measure fvcore FLOPs of every variant")


def run(args: argparse.Namespace) -> int:
    from vitzoo.cards import write_cards

    for path in write_cards(args.out, args.family, flops=args.flops):
        print(f"wrote {path}")
    return 0
