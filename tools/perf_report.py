"""`python tools/perf_report.py ...` is `vitzoo perf_report ...` (see vitzoo/commands/perf_report.py)."""

import sys

from vitzoo.cli import main

if __name__ == "__main__":
    sys.exit(main(["perf_report", *sys.argv[1:]]))
