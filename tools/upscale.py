"""`python tools/upscale.py ...` is `vitzoo upscale ...` (see vitzoo/commands/upscale.py)."""

import sys

from vitzoo.cli import main

if __name__ == "__main__":
    sys.exit(main(["upscale", *sys.argv[1:]]))
