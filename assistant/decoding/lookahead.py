"""Greedy rollouts from forked sequences: the lookahead shared by search strategies.

Batched, all branches advance together, one `llama_decode` per lookahead step, so k branches
of L tokens cost L batched passes instead of k*L single ones: the right trade where a k-row
batch costs about one step (a GPU). Best-first decodes one branch at a time and stops once no
other can win: fewer rows, the right trade where each row costs nearly a step (a CPU).
"""

from __future__ import annotations

import time
import weakref
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
    logits: list[np.ndarray | None] = field(default_factory=list)  # copies (see keep_logits_above)
    finished: bool = False
    text: str = ""
    max_length: int = 0  # lookahead length L: the rollout stops after this many tokens
    pruned: bool = False  # best-first stopped it early: it could not win
    # with the reference's scoring, the tokens counted in the score's length once the branch
    # met its end (an unindented line): the rollout goes on to L tokens, adding log-probs
    scored_length: int | None = None

    @property
    def score_sum(self) -> float:
        return self.first_logprob + sum(self.logprobs)

    @property
    def done(self) -> bool:
        return self.finished or len(self.tokens) >= self.max_length

    @property
    def score(self) -> float:
        """Length-normalised log-probability; while the rollout is unfinished, an upper bound
        (the tokens still to come can only add log-probabilities <= 0 and length up to L)."""
        if self.scored_length is not None:  # more tokens only add log-probabilities <= 0
            return self.score_sum / (self.scored_length + 1)
        return self.score_sum / (len(self.tokens) + 1 if self.done else self.max_length + 1)

    def add(self, token: int, logprob: float, entropy: float, logits: np.ndarray | None, piece: str) -> None:
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


SCHEDULES = ("batch", "best-first")


def greedy_rollouts(
    run: Run,
    candidates: list[int],
    logprobs: list[float],
    length: int,
    *,
    stop_unindented: bool = True,
    stop_at_line_end: bool = False,
    seed: Seed | None = None,
    schedule: str = "batch",
    keep_logits_above: float = -np.inf,
    score_past_end: bool = False,
):
    """Roll each candidate out greedily for `length` tokens, each on its own fork of the main
    sequence; returns (branches, forks) for the caller to adopt or release (a fork is None
    where its branch never needed a decode; on an error they are released here).

    A branch finishes at an end-of-generation token, (for code) when its continuation starts
    an unindented line, and with `stop_at_line_end` once its text ends a line (AdaDec's
    dynamic-length lookahead). A `seed` branch starts from its known tokens and is decoded
    only for the steps still missing. A branch keeps a copy of a row's logits only where
    their entropy reaches `keep_logits_above` (`Branch.logits` holds None elsewhere): a
    caller that reuses a rollout needs a distribution again only where it will pause, and
    copying 1 MB a row (Gemma 3's 262k vocabulary) is not free.

    `score_past_end` is the AdaDec reference's scoring: a branch that starts an unindented
    line stops growing its score's length there but rolls on to L tokens, adding their
    log-probabilities (so candidates that end the code early are penalised). An
    end-of-generation token still ends a branch.

    Schedules, for a caller that keeps the branch with the best length-normalised
    log-probability (`Branch.score`):
    - 'batch': every branch advances in the same decode, one batch per lookahead step.
    - 'best-first': decode one branch at a time, always the one with the best upper bound on
      its score, and stop as soon as a finished branch scores at least every other bound.
      Log-probabilities are <= 0, so a branch's score can only fall as it grows: a pruned
      branch (`Branch.pruned`, its `score` then an upper bound) could not have won, and the
      winner is the one 'batch' finds, with fewer rows evaluated.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    rollouts = _Rollouts(
        run, candidates, logprobs, length, stop_unindented, stop_at_line_end, seed, keep_logits_above, score_past_end
    )
    try:
        if schedule == "batch":
            rollouts.run_batched()
        else:
            rollouts.run_best_first()
        return rollouts.branches, rollouts.forks
    except BaseException:
        rollouts.release()
        raise


_host_costs: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # context -> {ops name: seconds}


def host_row_cost(run: Run) -> float:
    """Seconds of host work one lookahead row costs beyond its decode: copying its logits,
    argmax, log Z and entropy over the whole vocabulary (timed once per context and kernel
    backend). On a GPU this, not the decode, can be most of a row's price: Gemma 3's 262k
    vocabulary costs ~1 ms a row on the host, a decode of 3 rows on an H100 1.3 ms."""
    cache = _host_costs.setdefault(run.context, {})
    if run.ops.name not in cache:
        ops = run.ops
        x = np.random.default_rng(0).standard_normal(run.model.n_vocab).astype(np.float32)
        best = float("inf")
        for _ in range(5):
            t0 = time.perf_counter()
            y = np.array(x, copy=True)
            ops.argmax(y)
            ops.logsumexp_entropy(y)
            best = min(best, time.perf_counter() - t0)
        cache[run.ops.name] = best
    return cache[run.ops.name]


def pick_schedule(run: Run, k: int, length: int, best_first_waste: float) -> str:
    """'batch' or 'best-first', whichever `cheaper_schedule` finds cheaper with this
    context's measured decode prices and this backend's host price per row."""
    ctx = run.context  # decode prices measured once per context
    costs = ctx.output_costs(1, k, progress=run.progress)  # measured in the same rounds: a comparable pair
    c1, ck = costs[1], costs[k]
    if not (np.isfinite(c1) and np.isfinite(ck)):
        return "best-first"
    return cheaper_schedule(c1, ck, host_row_cost(run), k, length, best_first_waste)


def cheaper_schedule(c1: float, ck: float, host: float, k: int, length: int, best_first_waste: float) -> str:
    """Extra seconds a pause costs over greedy; both schedules reuse the winner's rollout as
    greedy steps. Batch pays, per lookahead step, a k-row decode (ck) over a 1-row one (c1)
    and the host work of k-1 extra rows; best-first pays the rows it spends on candidates
    that lose (`best_first_waste` a pause, measured), each a 1-row decode plus host work."""
    batch = length * ((ck - c1) + (k - 1) * host)
    best_first = best_first_waste * (c1 + host)
    return "batch" if batch <= best_first else "best-first"


class _Rollouts:
    """The branches of one lookahead, their forks (made when first decoded) and constraints."""

    def __init__(
        self, run: Run, candidates, logprobs, length, stop_unindented, stop_at_line_end, seed, keep_above, past_end
    ):
        if seed is not None and (run.constraint is not None or seed.candidate not in candidates):
            raise ValueError("a seed needs an unconstrained run and one of the candidates")
        self.run, self.length = run, length
        self.stop_unindented, self.stop_at_line_end = stop_unindented, stop_at_line_end
        self.keep_above, self.past_end = keep_above, past_end
        self.branches = [Branch(c, lp, max_length=length) for c, lp in zip(candidates, logprobs, strict=True)]
        self.forks: list[Sequence | None] = [None] * len(candidates)
        self.constraints = [run.constraint.fork() if run.constraint is not None else None for _ in candidates]
        for con, c in zip(self.constraints, candidates, strict=True):
            if con is not None:
                con.advance(c)
        model = run.model
        for i, b in enumerate(self.branches):
            b.finished = model.is_eog(b.first)
            b.text = model.piece(b.first).decode("utf-8", "replace")
            if seed is not None and b.first == seed.candidate:  # replay the known tokens
                self.forks[i] = seed.fork
                src = seed.source
                for j in range(seed.at + 1, min(len(src.tokens), seed.at + 1 + length)):
                    if b.finished:
                        break
                    piece = model.piece(src.tokens[j]).decode("utf-8", "replace")
                    b.add(src.tokens[j], src.logprobs[j], src.entropies[j], src.logits[j], piece)
                    self._check_end(b)

    def _check_end(self, b: Branch) -> None:
        """After a token: mark the branch finished, or (`past_end`) fix its score's length."""
        if self.run.model.is_eog(b.tokens[-1]) or (self.stop_at_line_end and b.text.endswith("\n")):
            b.finished = True  # no more text, or AdaDynL's lookahead length
        elif b.scored_length is None and self.stop_unindented and _unindented_line(b.text):
            if self.past_end:
                b.scored_length = len(b.tokens)
            else:
                b.finished = True

    def run_batched(self) -> None:
        for step in range(self.length):
            # a branch is fed when it still needs token `step`
            need = [i for i, b in enumerate(self.branches) if not b.done and len(b.tokens) == step]
            if need:
                self.advance(need)
            elif all(b.done for b in self.branches):
                break

    def run_best_first(self) -> None:
        branches = self.branches
        while True:
            best = max((b.score for b in branches if b.done), default=-np.inf)
            # ties go to the earlier candidate, as argmax over the scores does
            open_ = [i for i, b in enumerate(branches) if not b.done and b.score >= best]
            if not open_:
                break
            self.advance([max(open_, key=lambda i: (branches[i].score, -i))])
        for b in branches:
            b.pruned = not b.done

    def advance(self, indices: list[int]) -> None:
        """One decode: the next token of each branch named, all in one batch."""
        run, ops = self.run, self.run.ops
        feed = {}
        for i in indices:
            if self.forks[i] is None:
                self.forks[i] = run.seq.fork()
            b = self.branches[i]
            feed[self.forks[i]] = [b.tokens[-1] if b.tokens else b.first]  # its candidate, then its last token
        out = run.context.decode(feed)
        for i in indices:
            b, con = self.branches[i], self.constraints[i]
            logits = out[self.forks[i]]
            allowed = con.allowed() if con is not None else None
            if allowed is not None:
                logits = ops.masked(logits, allowed)
            tok = ops.argmax(logits)
            lse, entropy = ops.logsumexp_entropy(logits)
            kept = None
            if entropy >= self.keep_above:  # a masked array is the branch's own; the view dies next decode
                kept = logits if allowed is not None else np.array(logits, copy=True)
            b.add(tok, float(logits[tok]) - lse, entropy, kept, run.model.piece(tok).decode("utf-8", "replace"))
            self._check_end(b)
            if not b.done and con is not None:
                con.advance(tok)

    def release(self) -> None:
        for f in self.forks:
            if f is not None:
                f.release()


def _unindented_line(text: str) -> bool:
    """True once the text contains a newline followed by a non-blank, unindented character."""
    pos = text.find("\n")
    while pos >= 0 and pos + 1 < len(text):
        ch = text[pos + 1]
        if ch not in " \t\n\r":
            return True
        pos = text.find("\n", pos + 1)
    return False


def rollout_code() -> tuple:
    """What a rollout's branches depend on, for `code_hash` (a stored check names its code)."""
    return (Branch, Seed, greedy_rollouts, _Rollouts, _unindented_line)
