"""`python tools/generate.py ...` is `vitzoo generate ...` (see vitzoo/commands/generate/)."""

import sys

from vitzoo.cli import main

if __name__ == "__main__":
    sys.exit(main(["generate", *sys.argv[1:]]))
