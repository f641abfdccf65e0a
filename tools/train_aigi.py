"""`python tools/train_aigi.py ...` is `vitzoo train_aigi ...` (see vitzoo/commands/train_aigi.py)."""

import sys

from vitzoo.cli import main

if __name__ == "__main__":
    sys.exit(main(["train_aigi", *sys.argv[1:]]))
