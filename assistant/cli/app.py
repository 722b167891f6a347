"""The typer app, its command groups, and `main`: what every command shares at start and end
(standard streams, SIGTERM, the one-line errors and their exit statuses)."""

from __future__ import annotations

import errno
import os
import signal
import sys
from typing import Annotated

import typer

from ..errors import EngineError, UserError

app = typer.Typer(
    name="assistant",
    help="Local code-generation assistant on llama.cpp with pluggable decoding strategies.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _show_version(value: bool) -> None:
    if value:
        import platform

        from .. import __version__
        from ..engine import build_info

        typer.echo(f"assistant {__version__} (Python {platform.python_version()}); {build_info()}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option("--version", help="Show versions and the engine's build.", callback=_show_version, is_eager=True),
    ] = False,
):
    """Local code-generation assistant on llama.cpp with pluggable decoding strategies."""


bench_app = typer.Typer(help="Benchmarks (ratios against a baseline measured in the same run).", no_args_is_help=True)
app.add_typer(bench_app, name="bench")


eval_app = typer.Typer(help="Quality evaluations (results saved per problem, resumable).", no_args_is_help=True)
app.add_typer(eval_app, name="eval")


def _register_plugin_commands() -> None:
    try:
        from ..registry import get_registry

        taken = {c.name or c.callback.__name__.replace("_", "-") for c in app.registered_commands}
        taken |= {g.name for g in app.registered_groups}
        for fn, name in get_registry().commands():
            name = name or fn.__name__.replace("_", "-")
            if name in taken:  # a plugin must not replace a built-in command (or another's)
                typer.echo(f"assistant: warning: plugin command {name!r} ignored: the name is taken", err=True)
                continue
            taken.add(name)
            app.command(name=name)(fn)
    except Exception as exc:  # noqa: BLE001 - a broken plugin must not break the CLI
        typer.echo(f"assistant: warning: plugin commands skipped: {exc}", err=True)


def _usable_standard_streams() -> None:
    """Started with stdout or stderr closed (a daemon, `>&-`), Python has None for them and the
    first token or message was an AttributeError (with stderr closed, a silent exit 1): what
    goes there goes nowhere, as asked. Text stdout's encoding cannot hold (a generated CJK
    comment under an ASCII or Latin-1 locale, a file on Windows) is written as backslash
    escapes, as Python writes stderr, instead of ending the run in UnicodeEncodeError."""
    for name in ("stdout", "stderr"):
        if getattr(sys, name) is None:
            setattr(sys, name, open(os.devnull, "w"))  # kept open for the whole process
    reconfigure = getattr(sys.stdout, "reconfigure", None)
    if reconfigure is not None:
        reconfigure(errors="backslashreplace")


def _no_room(exc: OSError) -> bool:
    """Whether `exc` is a write that found no room (`> out.txt` on a full disk, `> /dev/full`):
    it was a 40-line traceback from wherever the text was being printed. Files the product
    writes say their own errors, with their names; this is what is left, standard output above
    all."""
    return exc.filename is None and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO)


def main() -> None:
    _usable_standard_streams()
    # SIGTERM (a timeout, systemd, a CI cancel) ends a command as Ctrl-C does: what was saved is
    # said, a sandboxed program and its temp folder are cleaned up (they were left behind)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # it raises KeyboardInterrupt
    try:
        _register_plugin_commands()  # imports every plugin: Ctrl-C may land there too
        app()
    except UserError as exc:
        typer.echo(f"assistant: error: {exc}", err=True)
        raise SystemExit(2) from None
    except EngineError as exc:  # llama.cpp failed: said on one line, as a user's error is
        typer.echo(f"assistant: error: {exc}", err=True)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except OSError as exc:
        if not _no_room(exc):
            raise
        try:  # what standard output still holds goes nowhere: Python's flush at exit would fail again
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        typer.echo(f"assistant: error: cannot write: {exc.strerror}", err=True)
        raise SystemExit(1) from None
