"""Running a request and showing it: streamed text, the inserted text of `complete`, or one
JSON object; notes on stderr."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import signal
import sys
import threading
from typing import Any

import typer

from ..signals import INTERRUPTS
from .progress import WorkProgress


def echo_notes(notes: list[str]) -> None:
    """What a strategy told its run (e.g. which default it fell back to), on stderr."""
    for note in notes:
        typer.echo(f"assistant: note: {note}", err=True)


def emit_json(obj: Any) -> None:
    typer.echo(json.dumps(obj, ensure_ascii=False))


@contextlib.contextmanager
def _ctrl_c_cancels(service):
    """The first Ctrl-C (or SIGTERM: a `timeout`) cancels the run (it ends with its text so
    far, finish_reason 'cancelled', `--json` still prints, and the command exits 130); a
    second one interrupts at once."""
    cancel = threading.Event()

    def on_interrupt(_signum, _frame):
        if cancel.is_set():
            raise KeyboardInterrupt
        cancel.set()
        service.cancel_all()  # also stops a decode under way (a long prompt, a lookahead)

    try:
        previous = {signum: signal.signal(signum, on_interrupt) for signum in INTERRUPTS}
    except ValueError:  # not the main thread: leave Ctrl-C as it is
        yield cancel
        return
    try:
        yield cancel
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def run_and_show(
    service,
    request,
    *,
    as_json: bool,
    extra: dict | None = None,
    constraint=None,
    live: bool = True,
    newline: str = "\n",
    line_goes_on: bool = False,
) -> None:
    """Run a request: stream text to stdout (`live`; else print exactly the text at the end, as
    `complete` does for a caller that inserts it: with the file's `newline` and without trailing
    blank lines, which the text after the cursor already has, unless the cursor's line goes on
    after it (`line_goes_on`: then a line end the text closes with is its own, and the syntax
    check passed it with it), or print one JSON object at the end."""
    done, pauses = None, []
    service.context()  # load first: Ctrl-C while a model loads simply quits
    with _ctrl_c_cancels(service) as cancel:
        progress = WorkProgress(enabled=not as_json)
        for event in service.generate(request, constraint=constraint, cancel=cancel, progress=progress):
            kind = type(event).__name__
            if kind == "Token" and live and not as_json:
                sys.stdout.write(event.text)
                sys.stdout.flush()
            elif kind == "Pause" and as_json:  # AdaDec's decisions: where it hesitated and what it chose
                pauses.append(dataclasses.asdict(event))
            elif kind == "Done":
                done = event
    if not live and not line_goes_on:  # llama.vim drops them too: the n_indent cut leaves the dedented line's newline
        done.text = _without_blank_tail(done.text)
        done.texts = done.texts and list(dict.fromkeys(_without_blank_tail(t) for t in done.texts))
    if newline != "\n":
        done.text = done.text.replace("\n", newline)
        done.texts = done.texts and [t.replace("\n", newline) for t in done.texts]
    _show(done, request, pauses, as_json=as_json, extra=extra, live=live)
    if done.finish_reason == "cancelled":
        raise SystemExit(130)


def _without_blank_tail(text: str) -> str:
    """The text less the blank (or whitespace-only) lines it ends with."""
    return re.sub(r"(?:\n[ \t]*)+\Z", "", text)


def _show(done, request, pauses: list[dict], *, as_json: bool, extra: dict | None, live: bool) -> None:
    """The end of a run: the JSON object, or the rest of the text-mode output."""
    if as_json:
        obj = {
            "text": done.text,
            "strategy": request.strategy,
            "finish_reason": done.finish_reason,
            "stats": done.stats,
        }
        if done.texts is not None:
            obj["texts"] = done.texts
        if pauses:
            obj["pauses"] = pauses
        obj.update(extra or {})
        emit_json(obj)
        return
    if not live:
        sys.stdout.write(done.text)
    if not done.text.endswith("\n") and (live or sys.stdout.isatty()):
        sys.stdout.write("\n")  # piped, `complete` prints the inserted text and nothing else
    sys.stdout.flush()  # the answer before anything said on stderr
    echo_notes(done.stats.get("notes", []))
    others = (done.texts or [])[1:]  # multi-draft strategies: the best went to stdout above
    for i, text in enumerate(others, 2):
        typer.echo(f"--- draft {i} of {len(others) + 1} ---", err=True)
        typer.echo(text if text.endswith("\n") else text + "\n", err=True, nl=False)


def note_unused_temperature(service, strategy: str, temperature: float | None) -> None:
    """--temperature reaches only strategies that read the request's temperature; say so rather
    than ignore it (top-h and grammar-infill have a temperature option of their own)."""
    cls = service.registry.strategies().get(strategy) if temperature is not None else None
    if cls is None or cls.reads_temperature:
        return
    own = any(f.name == "temperature" for f in dataclasses.fields(cls.Options))
    hint = f"; set its own with -o temperature={temperature:g}" if own else ""
    echo_notes([f"strategy {strategy!r} does not use --temperature{hint}"])


def rate(x: float | None) -> str:
    """A rate as the others are printed; '-' where nothing was measured (no case had a test)."""
    return "-" if x is None else f"{x:.3f}"
