"""`python tools/train_lit.py ...` is `vitzoo train_lit ...` (see vitzoo/commands/train_lit.py)."""

import sys

from vitzoo.cli import main

if __name__ == "__main__":
    sys.exit(main(["train_lit", *sys.argv[1:]]))
