"""Per-pipeline parts of ``vitzoo generate``: one module per ``--pipeline`` value.

A module defines ``HELP`` (one line), ``add_arguments(group)`` for flags only it uses (the common flags
live in ``vitzoo/commands/generate.py``; do not redefine them) and ``run(args) -> int``. Modules here
must not import diffusers at import time: the ``vitzoo`` command builds its parser from all of them.
"""
