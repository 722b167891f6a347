"""Loops shared by strategies that pick one token at a time on one sequence."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from .events import Event
from .run import Run


def token_by_token(run: Run, choose: Callable[[np.ndarray], int]) -> Iterator[Event]:
    """Prefill, then repeatedly: constrain the logits, `choose` a token, accept it, decode it.

    Every rule that ends a generation (stop strings, n_indent, deadline, max tokens, EOS,
    cancellation, a full context) is applied by `run.accept` / `run.step`.
    """
    logits = run.start()
    while logits is not None:
        token = choose(run.constrain(logits))
        yield from run.take(token)
        if run.finished:
            break
        logits = run.step(token)
    yield run.done()
