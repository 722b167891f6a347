"""Batched greedy rollouts from forked sequences: the lookahead shared by search strategies.

All branches advance together, one `llama_decode` per lookahead step, so k branches of L
tokens cost L batched passes instead of k*L single ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..engine import Sequence
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

    def add(self, token: int, logprob: float, entropy: float, logits: np.ndarray, piece: str) -> None:
        self.tokens.append(token)
        self.logprobs.append(logprob)
        self.entropies.append(entropy)
        self.logits.append(logits)
        self.text += piece


@dataclass
class Seed:
    """A candidate whose greedy rollout is partly known already: the previous pause's winning
    branch `source` passed through it as source.tokens[at] and rolled on from there. `fork`
    holds the prefix plus, when anything follows `at`, source.tokens[at:-1]."""

    fork: Sequence
    source: Branch
    at: int

    @property
    def candidate(self) -> int:
        return self.source.tokens[self.at]


def greedy_rollouts(
    run: Run,
    candidates: list[int],
    logprobs: list[float],
    length: int,
    *,
    stop_unindented: bool = True,
    stop_at_line_end: bool = False,
    seed: Seed | None = None,
):
    """Fork the main sequence once per candidate and roll each out greedily for `length` tokens.

    A branch finishes at an end-of-generation token, (for code) when its continuation starts
    an unindented line, and with `stop_at_line_end` once its text ends a line (AdaDec's
    dynamic-length lookahead). A `seed` branch starts from its known tokens and joins the
    batch only for the steps still missing. The forks (the seed's included, when used) are
    returned for the caller to adopt or release; they are released here only on an error.
    """
    ctx, model, ops = run.context, run.model, run.ops
    if seed is not None and (run.constraint is not None or seed.candidate not in candidates):
        raise ValueError("a seed needs an unconstrained run and one of the candidates")
    branches = [Branch(c, lp) for c, lp in zip(candidates, logprobs, strict=True)]
    forks: list[Sequence] = []
    try:
        for c in candidates:
            forks.append(seed.fork if seed is not None and c == seed.candidate else run.seq.fork())
        constraints = [run.constraint.fork() if run.constraint is not None else None for _ in candidates]
        for con, c in zip(constraints, candidates, strict=True):
            if con is not None:
                con.advance(c)

        def finishes(b: Branch) -> bool:
            return (
                model.is_eog(b.tokens[-1])
                or (stop_unindented and _unindented_line(b.text))
                or (stop_at_line_end and b.text.endswith("\n"))
            )

        for b in branches:
            b.finished = model.is_eog(b.first)
            b.text = model.piece(b.first).decode("utf-8", "replace")
            if seed is not None and b.first == seed.candidate:  # replay the known tokens
                src = seed.source
                for j in range(seed.at + 1, min(len(src.tokens), seed.at + 1 + length)):
                    if b.finished:
                        break
                    piece = model.piece(src.tokens[j]).decode("utf-8", "replace")
                    b.add(src.tokens[j], src.logprobs[j], src.entropies[j], src.logits[j], piece)
                    b.finished = finishes(b)
        for step in range(length):
            # a branch is fed when it still needs token `step`: its candidate, then its last token
            feed = {
                forks[i]: [b.tokens[-1] if b.tokens else b.first]
                for i, b in enumerate(branches)
                if not b.finished and len(b.tokens) == step
            }
            if not feed:
                if all(b.finished or len(b.tokens) >= length for b in branches):
                    break
                continue
            out = ctx.decode(feed)
            for i, f in enumerate(forks):
                if f not in feed:
                    continue
                b = branches[i]
                logits = out[f]
                allowed = constraints[i].allowed() if constraints[i] is not None else None
                # a copy either way: the engine's view dies with the next decode
                logits = ops.masked(logits, allowed) if allowed is not None else np.array(logits, copy=True)
                tok = ops.argmax(logits)
                lse, entropy = ops.logsumexp_entropy(logits)
                b.add(tok, float(logits[tok]) - lse, entropy, logits, model.piece(tok).decode("utf-8", "replace"))
                b.finished = finishes(b)
                if not b.finished and constraints[i] is not None and len(b.tokens) < length:
                    constraints[i].advance(tok)
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
