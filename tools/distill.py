"""`python tools/distill.py ...` is `vitzoo distill ...` (see vitzoo/commands/distill.py).

Multi-GPU: `accelerate launch --multi_gpu --num_processes N tools/distill.py ...`."""

import sys

from vitzoo.cli import main

if __name__ == "__main__":
    sys.exit(main(["distill", *sys.argv[1:]]))
