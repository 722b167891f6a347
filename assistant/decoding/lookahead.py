"""Batched greedy rollouts from forked sequences: the lookahead shared by search strategies.

All branches advance together, one `llama_decode` per lookahead step, so k branches of L
tokens cost L batched passes instead of k*L single ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .run import Run


@dataclass
class Branch:
    first: int  # the candidate token that starts the branch
    first_logprob: float
    tokens: list[int] = field(default_factory=list)  # greedy continuation after `first`
    logprobs: list[float] = field(default_factory=list)
    entropies: list[float] = field(default_factory=list)  # of the distribution each token came from
    logits: list[np.ndarray] = field(default_factory=list)  # copies: after first, tokens[0], ...
    finished: bool = False
    text: str = ""

    @property
    def score_sum(self) -> float:
        return self.first_logprob + sum(self.logprobs)


def greedy_rollouts(
    run: Run,
    candidates: list[int],
    logprobs: list[float],
    length: int,
    *,
    stop_unindented: bool = True,
    stop_at_line_end: bool = False,
):
    """Fork the main sequence once per candidate and roll each out greedily for `length` tokens.

    A branch finishes at an end-of-generation token, (for code) when its continuation starts
    an unindented line, and with `stop_at_line_end` once its text ends a line (AdaDec's
    dynamic-length lookahead). The forks are returned for the caller to adopt or release;
    they are released here only on an error.
    """
    ctx, model, ops = run.context, run.model, run.ops
    forks = [run.seq.fork() for _ in candidates]
    constraints = [run.constraint.fork() if run.constraint is not None else None for _ in candidates]
    branches = [Branch(c, lp) for c, lp in zip(candidates, logprobs, strict=True)]
    try:
        feed = {f: [c] for f, c in zip(forks, candidates, strict=True)}
        for con, c in zip(constraints, candidates, strict=True):
            if con is not None:
                con.advance(c)
        for b, c in zip(branches, candidates, strict=True):
            b.finished = model.is_eog(c)
            b.text = model.piece(c).decode("utf-8", "replace")
        for step in range(length):
            if not feed:
                break
            out = ctx.decode(feed)
            feed = {}
            for i, f in enumerate(forks):
                b = branches[i]
                if f not in out:
                    continue
                logits = out[f]
                allowed = constraints[i].allowed() if constraints[i] is not None else None
                # a copy either way: the engine's view dies with the next decode
                logits = ops.masked(logits, allowed) if allowed is not None else np.array(logits, copy=True)
                tok = ops.argmax(logits)
                lse, entropy = ops.logsumexp_entropy(logits)
                b.logits.append(logits)
                b.entropies.append(entropy)
                if not b.finished:
                    b.tokens.append(tok)
                    b.logprobs.append(float(logits[tok]) - lse)
                    b.text += model.piece(tok).decode("utf-8", "replace")
                    if (
                        model.is_eog(tok)
                        or (stop_unindented and _unindented_line(b.text))
                        or (stop_at_line_end and b.text.endswith("\n"))
                    ):
                        b.finished = True
                if not b.finished and step < length - 1:
                    if constraints[i] is not None:
                        constraints[i].advance(tok)
                    feed[f] = [tok]
        return branches, forks
    except BaseException:
        for f in forks:
            f.release()
        raise


def _unindented_line(text: str) -> bool:
    """True once the text contains a newline followed by a non-blank, unindented character."""
    pos = text.find("\n")
    while pos >= 0 and pos + 1 < len(text):
        ch = text[pos + 1]
        if ch not in " \t\n\r":
            return True
        pos = text.find("\n", pos + 1)
    return False
