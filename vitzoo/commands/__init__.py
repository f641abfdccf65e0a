"""Subcommands of the ``vitzoo`` command, one module each (see :mod:`vitzoo.cli`)."""
