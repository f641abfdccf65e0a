"""`python tools/distill.py ...` is `vitzoo distill ...` (see vitzoo/commands/distill.py); use it with `accelerate launch`."""

import sys

from vitzoo.cli import main

if __name__ == "__main__":
    sys.exit(main(["distill", *sys.argv[1:]]))
