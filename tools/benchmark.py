"""`python tools/benchmark.py ...` is `vitzoo bench ...` (see vitzoo/commands/bench.py)."""

import sys

from vitzoo.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
