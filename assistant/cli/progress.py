"""Progress on stderr: a bar on a terminal, plain lines in a log; and what a long job says
when Ctrl-C ends it."""

from __future__ import annotations

import contextlib
import sys
import time

import typer

from ..errors import Interrupted


@contextlib.contextmanager
def say_where_work_is_saved():
    """Ctrl-C in a long job that saves as it goes: say what was kept and how to go on, then
    exit 130 (typer turns a bare KeyboardInterrupt into a silent exit)."""
    try:
        yield
    except Interrupted as exc:
        typer.echo(f"assistant: {exc}", err=True)
        raise typer.Exit(130) from None


class WorkProgress:
    """Progress of preparation work a strategy reports (label, done, total), on stderr."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled and sys.stderr.isatty()
        self._bars: dict[str, progress_bar] = {}
        self._advance = {}

    def __call__(self, label: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        if label not in self._bars:
            self._bars[label] = progress_bar(label)
            self._advance[label] = self._bars[label].__enter__()
        self._advance[label](done, total)
        if done >= total:
            self._bars.pop(label).__exit__(None, None, None)


class progress_bar:
    """A rich progress bar on stderr; yields advance(done, total). The bar appears at the first
    advance, so a job that refuses its input first shows the error alone (jobs report 0 of N
    once their input is checked)."""

    def __init__(self, label: str, enabled: bool = True):
        self.label = label
        self.enabled = enabled
        self._progress = None

    def __enter__(self):
        if not self.enabled:
            return lambda done, total: None
        if not sys.stderr.isatty():  # a log file: rich would write the bar once, at the end
            return ProgressLines(self.label)
        task = None

        def advance(done: int, total: int) -> None:
            nonlocal task
            if self._progress is None:
                from rich.console import Console
                from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

                self._progress = Progress(
                    TextColumn(self.label, markup=False),  # a label like "humaneval [adadec]" is no markup
                    BarColumn(),
                    MofNCompleteColumn(),
                    TimeRemainingColumn(),
                    console=Console(stderr=True),
                )
                self._progress.start()
                task = self._progress.add_task(self.label, total=total)
            self._progress.update(task, completed=done, total=total)

        return advance

    def __exit__(self, *exc):
        if self._progress is not None:
            self._progress.stop()
        return False


class ProgressLines:
    """Progress as plain lines for a log (stderr not a terminal): the start, then at most one
    line every `every` seconds, and the end. A 20-minute eval run under nohup said nothing
    until it was over."""

    def __init__(self, label: str, every: float = 30.0, clock=time.monotonic):
        self.label, self.every, self.clock = label, every, clock
        self.t0 = self.last = None
        self.said = None  # the count in the last line

    def __call__(self, done: int, total: int) -> None:
        now = self.clock()
        if self.t0 is None:
            self.t0 = now
        elif done == self.said or (done < total and now - self.last < self.every):
            return
        self.last, self.said = now, done
        elapsed = int(now - self.t0)
        typer.echo(f"{self.label}: {done}/{total} ({elapsed // 60}:{elapsed % 60:02d} elapsed)", err=True)
