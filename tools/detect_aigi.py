"""`python tools/detect_aigi.py ...` is `vitzoo detect_aigi ...` (see vitzoo/commands/detect_aigi.py)."""

import sys

from vitzoo.cli import main

if __name__ == "__main__":
    sys.exit(main(["detect_aigi", *sys.argv[1:]]))
