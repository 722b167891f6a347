"""Pipelined AdaDec: the greedy chain runs ahead while pauses are decided behind it.

At a pause, the top candidate's lookahead is the greedy chain itself, and the top candidate
usually wins. So the chain never waits for a decision: it keeps decoding greedily, holding
back every token after an undecided pause, and each row another candidate's lookahead needs
rides along in the chain's next decode (a 2-row batch). A losing candidate's row then costs
what a second row adds to a decode instead of a whole one: next to nothing on a GPU, but
0.65-1.0 of a row on 2 CPU cores with Gemma 3 270M, where best-first is as fast.

The decisions are best-first's: a candidate's row is decoded only while its score bound is at
least every finished branch's score and the greedy branch's bound, and a pause is decided
once no branch could still beat the best finished one (`Branch.score`). So the winner is the
one the batched schedule finds. A pause won by another candidate drops the held-back tokens,
takes over the winner's forked cells, and carries on from its rollout.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from ..engine import Sequence
from ..errors import Cancelled, ContextOverflow, EngineError
from .events import Event, Pause
from .lookahead import Branch, branch_finishes, extend_branch
from .run import Run
from .steps import top_candidates


@dataclass
class _Pending:
    """An undecided pause: its candidates' branches (branch 0 is the greedy chain's)."""

    index: int  # the generated token it decides
    entropy: float
    branches: list[Branch]
    forks: list[Sequence | None] = field(default_factory=list)  # forks[0] stays None: the chain
    rows: int = 0  # rows decoded for the other candidates
    paired: int = 0  # of those, rows that rode along in a chain decode

    def best_finished(self) -> float:
        return max((b.score for b in self.branches if b.done), default=-np.inf)

    def next_row(self) -> int | None:
        """The candidate whose next row every schedule must decode, if the greedy branch
        wins: the open one with the best bound, once that bound reaches the greedy one's."""
        bs, best = self.branches, self.best_finished()
        lead = bs[0].score
        open_ = [i for i in range(1, len(bs)) if not bs[i].done and bs[i].score >= max(best, lead)]
        return max(open_, key=lambda i: (bs[i].score, -i)) if open_ else None

    def decided(self) -> bool:
        best = self.best_finished()
        return all(b.done or b.score < best for b in self.branches)

    def release(self) -> None:
        for f in self.forks:
            if f is not None:
                f.release()


class Pipeline:
    """One AdaDec generation with the pipelined schedule (an unconstrained run)."""

    def __init__(self, run: Run, tau: float, k: int, length: int, *, stop_at_line_end: bool, lam: float):
        if run.constraint is not None:
            raise ValueError("the pipelined schedule needs an unconstrained run")
        self.run, self.tau, self.k, self.length, self.lam = run, tau, k, length, lam
        self.stop_at_line_end = stop_at_line_end
        self.pending: deque[_Pending] = deque()  # oldest first
        self.held: deque[int] = deque()  # chain tokens not yet taken: after an undecided pause
        self.stats = {"paired_rows": 0, "rollbacks": 0, "discarded_rows": 0}

    # -- the chain --------------------------------------------------------------------------
    @property
    def _length(self) -> int:
        return len(self.run.tokens) + len(self.held)

    def _last(self) -> int:
        return self.held[-1] if self.held else self.run.tokens[-1]

    def _chain_row(self, logits: np.ndarray, known: tuple[float, float] | None = None) -> None:
        """The distribution of the chain's next token (from a decode): choose the token
        (greedy, or a pause's top candidate). `known`: its (log Z, entropy), if computed."""
        ops = self.run.ops
        wanting = self._wanting()
        if known is not None:
            lse, entropy = known
        elif wanting or ops.entropy_at_least(logits, self.tau):
            lse, entropy = ops.logsumexp_entropy(logits)
        else:
            lse = entropy = None
        if entropy is not None and self._pauses_at(entropy):
            token = self._pause(logits, lse, entropy)
        else:
            token = ops.argmax(logits)
        self._extend(token, float(logits[token]) - lse if lse is not None else 0.0, entropy, wanting)

    def _replay(self, win: Branch) -> None:
        """A winning candidate's rollout as the chain's next rows: its rows kept their logits
        only where they will pause (`extend_branch`'s keep_above), all that is needed again."""
        for j, tok in enumerate(win.tokens):
            wanting = self._wanting()
            entropy, logits = win.entropies[j], win.logits[j]
            if self._pauses_at(entropy) and logits is not None:
                lse = float(logits[tok]) - win.logprobs[j]
                token = self._pause(logits, lse, entropy)
                self._extend(token, float(logits[token]) - lse, entropy, wanting)
            else:
                self._extend(tok, win.logprobs[j], entropy, wanting)

    def _wanting(self) -> list[Branch]:
        """The greedy branches that still want the chain's next token."""
        return [p.branches[0] for p in self.pending if not p.branches[0].done]

    def _pauses_at(self, entropy: float) -> bool:
        # a pause past the last token the run may take could never matter
        return entropy >= self.tau and self._length < self.run.request.max_tokens

    def _pause(self, logits: np.ndarray, lse: float, entropy: float) -> int:
        """Open a pause on the chain's next token; returns its top candidate, the chain's token."""
        run = self.run
        cands, logprobs = top_candidates(run.ops, logits, self.k, lse)
        branches = [Branch(c, float(lp), max_length=self.length) for c, lp in zip(cands, logprobs, strict=True)]
        for b in branches:
            b.finished = run.model.is_eog(b.first)
            b.text = run.model.piece(b.first).decode("utf-8", "replace")
        self.pending.append(_Pending(self._length, float(entropy), branches, [None] * len(branches)))
        run.extra_stats["adadec_schedule"] = "pipelined"
        return cands[0]

    def _extend(self, token: int, logprob: float, entropy: float | None, wanting: list[Branch]) -> None:
        """The chain's next token, given to every greedy branch that wanted it."""
        if wanting:
            piece = self.run.model.piece(token).decode("utf-8", "replace")
            for b in wanting:
                b.add(token, logprob, float(entropy), None, piece)
                b.finished = branch_finishes(self.run.model, b, True, self.stop_at_line_end)
        self.held.append(token)

    def _chain_can_grow(self) -> bool:
        run = self.run
        if run.model.is_eog(self._last()) and not run.request.ignore_eos:
            return False
        if any(not p.branches[0].done for p in self.pending):
            return True
        return self._length < run.request.max_tokens

    def _next_other_row(self) -> tuple[_Pending, int] | None:
        """The oldest pause's candidate row that must be decoded next; a younger pause's only
        while free sequences remain for every fork the older ones may still make."""
        free, reserve = self.run.context.free_sequences, 0
        for p in self.pending:
            i = p.next_row()
            if i is not None and (p.forks[i] is not None or free - reserve >= 1):
                return p, i
            reserve += sum(1 for j, b in enumerate(p.branches) if j and p.forks[j] is None and not b.done)
        return None

    # -- the loop ---------------------------------------------------------------------------
    def generate(self) -> Iterator[Event]:
        """The whole generation, from the prompt."""
        logits = self.run.start()
        if logits is not None:
            yield from self.resume(logits)

    def resume(self, logits: np.ndarray, known: tuple[float, float] | None = None) -> Iterator[Event]:
        """Carry on a run whose main sequence holds the prompt and every token taken so far;
        `logits`: the next token's distribution (`known`: its log Z and entropy)."""
        run = self.run
        try:
            self._chain_row(logits, known)
            while True:
                yield from self._settle()
                if run.finished:
                    return
                if run.cancel.is_set():
                    run.finish("cancelled")
                    return
                grow = self._chain_can_grow()
                other = self._next_other_row()
                if not grow and other is None:
                    if self.pending:  # only a fork shortage can leave a pause undecidable
                        raise EngineError(f"adadec needs {self.k - 1} free sequences for a pause (raise n_seq_max)")
                    run.finish("length")
                    return
                self._decode(grow, other)
        finally:
            for p in self.pending:
                p.release()
            self.pending.clear()
            run.extra_stats.update(self.stats)

    def _decode(self, grow: bool, other: tuple[_Pending, int] | None) -> None:
        """One decode: the chain's next row and/or another candidate's, as one batch."""
        run = self.run
        feed: dict[Sequence, list[int]] = {}
        if grow:
            feed[run.seq] = [self._last()]
        if other is not None:
            p, i = other
            b = p.branches[i]
            if p.forks[i] is None:
                fork = run.seq.fork()
                fork.truncate(len(run.prompt_tokens) + p.index)
                p.forks[i] = fork
            feed[p.forks[i]] = [b.tokens[-1] if b.tokens else b.first]
        try:
            out = run.context.decode(feed)
        except Cancelled:
            run.finish("cancelled")
            return
        except ContextOverflow:
            run.finish("length")
            return
        if other is not None:
            p, i = other
            extend_branch(run, p.branches[i], out[p.forks[i]], True, self.stop_at_line_end, keep_above=self.tau)
            p.rows += 1
            if grow:
                p.paired += 1
                self.stats["paired_rows"] += 1
        if grow:
            self._chain_row(out[run.seq])

    def _settle(self) -> Iterator[Event]:
        """Take the chain's tokens up to the oldest undecided pause, deciding every pause
        that can be decided on the way."""
        run = self.run
        while True:
            while self.held and not (self.pending and self.pending[0].index == len(run.tokens)):
                yield from run.take(self.held.popleft())
                if run.finished:
                    return
            if not self.pending or not self.pending[0].decided():
                return
            p = self.pending.popleft()
            run.extra_stats["pauses"] += 1  # decided ones: a pause dropped by a roll-back is not one
            try:
                scores = [self.lam * b.score for b in p.branches]  # a pruned branch's is a bound below the best
                best = int(np.argmax(scores))
                yield Pause(
                    position=p.index,
                    entropy=p.entropy,
                    candidates=[run.model.piece(b.first).decode("utf-8", "replace") for b in p.branches],
                    scores=[float(s) for s in scores],
                    chosen=best,
                    pruned=[j for j, b in enumerate(p.branches) if not b.done],
                    stats={"forward_passes": p.rows - p.paired, "tokens_evaluated": p.rows, "paired_rows": p.paired},
                )
                if best != 0:
                    yield from self._roll_back(p, best)
                    if run.finished:
                        return
            finally:
                p.release()

    def _roll_back(self, p: _Pending, best: int) -> Iterator[Event]:
        """Another candidate won: drop the held-back chain and continue from its rollout."""
        run = self.run
        self.stats["rollbacks"] += 1
        self.stats["discarded_rows"] += len(self.held) - 1
        self.held.clear()
        for q in self.pending:
            q.release()
        self.pending.clear()
        win = p.branches[best]
        yield from run.take(win.first)
        if run.finished:
            return
        fork = p.forks[best]
        if fork is not None:
            run.seq.adopt(fork)  # prefix + first + tokens[:-1]: the chain's cells
        else:
            run.seq.truncate(len(run.prompt_tokens) + p.index)
        self._replay(win)
