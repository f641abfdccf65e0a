"""`python tools/convert.py ...` is `vitzoo convert ...` (see vitzoo/commands/convert.py)."""

import sys

from vitzoo.cli import main

if __name__ == "__main__":
    sys.exit(main(["convert", *sys.argv[1:]]))
