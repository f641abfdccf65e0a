"""`python tools/eval_aigi.py ...` is `vitzoo eval_aigi ...` (see vitzoo/commands/eval_aigi.py)."""

import sys

from vitzoo.cli import main

if __name__ == "__main__":
    sys.exit(main(["eval_aigi", *sys.argv[1:]]))
