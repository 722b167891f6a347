"""Ctrl-C and SIGTERM held back while code runs that Python may call back into.

Python turns a signal into an exception in whatever Python code runs next. Inside a ctypes
callback (llama.cpp's log callback during a model load) or a fork callback (logging's, while
the sandbox starts a program), that exception is printed as "Exception ignored" and dropped:
the interrupt was lost and the work went on to its end.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator

INTERRUPTS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def interrupts_deferred() -> Iterator[Callable[[], bool]]:
    """While the block runs, SIGINT and SIGTERM only set a flag (the yielded function reads it,
    so a progress callback can abort a load); the first one is raised again, to the handler
    there was, once the block ends. Only the main thread runs handlers, so elsewhere this
    does nothing."""
    hit: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return
    previous = {}
    for signum in INTERRUPTS:
        if signal.getsignal(signum) is not None:  # one Python did not install could not be put back
            previous[signum] = signal.signal(signum, lambda number, _frame: hit.append(number))
    try:
        yield lambda: bool(hit)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if hit:
            signal.raise_signal(hit[0])
