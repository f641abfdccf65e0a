"""`python tools/train.py ...` is `vitzoo train ...` (see vitzoo/commands/train.py); works under `accelerate launch`."""

import sys

from vitzoo.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
