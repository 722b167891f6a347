"""The `assistant` command line (typer). Every command has --help and --json.

Errors the user can fix print one line on stderr and exit with status 2. One module per group
of commands; `app` holds the typer app and `main`, `options` the flags they share, `output`
and `progress` what they print.
"""

from importlib import import_module

from .app import app, main

# each registers its commands on `app` when imported, and --help lists them in this order
for _commands in ("generation", "catalog", "evaluation", "bench"):
    import_module(f"{__name__}.{_commands}")

__all__ = ["app", "main"]
