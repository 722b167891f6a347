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


def top_candidates(ops, logits, k: int, lse: float | None = None) -> tuple[list[int], np.ndarray]:
    """The k most likely tokens still allowed (finite logits), best first, and their
    log-probabilities under softmax(logits) (`lse`: its log-normaliser, when already known)."""
    values, ids = ops.top_k(logits, k)
    values, ids = np.asarray(ops.to_numpy(values), dtype=np.float64), ops.to_numpy(ids)
    keep = np.isfinite(values)
    return [int(i) for i in ids[keep]], values[keep] - (ops.logsumexp(logits) if lse is None else lse)
