"""`python tools/cache_latents.py ...` is `vitzoo cache_latents ...` (see vitzoo/commands/cache_latents.py)."""

import sys

from vitzoo.cli import main

if __name__ == "__main__":
    sys.exit(main(["cache_latents", *sys.argv[1:]]))
