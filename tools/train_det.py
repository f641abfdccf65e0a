"""`python tools/train_det.py ...` is `vitzoo train_det ...` (see vitzoo/commands/train_det.py)."""

import sys

from vitzoo.cli import main

if __name__ == "__main__":
    sys.exit(main(["train_det", *sys.argv[1:]]))
