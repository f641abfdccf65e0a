"""`python tools/eval_det.py ...` is `vitzoo eval_det ...` (see vitzoo/commands/eval_det.py)."""

import sys

from vitzoo.cli import main

if __name__ == "__main__":
    sys.exit(main(["eval_det", *sys.argv[1:]]))
