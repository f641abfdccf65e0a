"""`python tools/validate.py ...` is `vitzoo validate ...` (see vitzoo/commands/validate.py)."""

import sys

from vitzoo.cli import main

if __name__ == "__main__":
    sys.exit(main(["validate", *sys.argv[1:]]))
