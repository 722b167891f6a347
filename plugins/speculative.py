"""`speculative`: prompt-lookup speculative decoding with an adaptive draft length.

Drafts come for free from the text itself: the longest recent n-gram that ends the sequence is
looked up earlier in prompt + output, and the tokens that followed it are proposed. The model
checks the whole draft in one batched decode (logits on every position) and keeps the prefix
that greedy decoding agrees with, plus the token greedy picks where they part. The output is
greedy's, token for token; only the number of forward passes changes. (llama.cpp's logits
depend slightly on the batch shape, so a verified position whose top two logits are nearly
tied is decoded again on its own before it is trusted.)

The draft length adapts on the fly in the spirit of SpecDec++ / ADED. The strategy keeps, per
matched n-gram length, running acceptance rates for a draft's first token (a1) and for a token
after an accepted one (a2), and the measured cost curve cost(n) of decoding n tokens with
logits on each (timed once per context), and drafts the length that maximises expected tokens
per second, over the batch sizes it measured:
    d* = argmax_d (1 + a1 * (1 + a2 + ... + a2^(d-1))) / cost(d + 1)
d* = 0 means no draft. So on a CPU, where verifying a draft costs real time, it drafts only when
the text repeats; on a GPU, where extra batch tokens are nearly free, it drafts long. The rates
start from what the prompt itself shows: each prompt position's draft is checked against the
tokens that really follow it (free), and the assumed rates count as a few trials against that.
On ordinary code a first draft then waits for evidence, where assumed rates alone made it lose
to greedy on a quarter of the prompts (stdlib functions, HumanEval).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from assistant import hookimpl
from assistant.decoding import Run, Strategy, option, require
from assistant.errors import Cancelled, ContextOverflow

MAX_NGRAM = 32  # a 32-token match is as specific as text gets; each n costs a map of every position


@dataclass
class SpeculativeOptions:
    max_ngram: int = option(4, "longest n-gram used as lookup key")
    min_ngram: int = option(1, "shortest n-gram used as lookup key")
    max_draft: int = option(16, "longest draft")
    tie_margin: float = option(0.1, "a verified top-2 logit gap below this is re-decoded singly (exactness)")
    free_batch: bool = option(False, "assume extra batch tokens cost nothing (as on a GPU) instead of measuring")
    prior_acceptance: float = option(
        0.6, "acceptance assumed for 1-gram matches (longer: higher), worth 4 trials against the prompt's own"
    )
    exact: bool = option(
        False,
        "verify only in batch sizes whose logits match one-token decodes bit for bit on this model "
        "and build, so the output is greedy's exactly (where llama.cpp's batched kernels round "
        "differently, e.g. Gemma 3 Q4_K_M on AVX2, that leaves few sizes and little speed-up)",
    )

    def __post_init__(self):
        require(self.min_ngram >= 1, "min_ngram", self.min_ngram, ">= 1")
        require(self.max_ngram >= self.min_ngram, "max_ngram", self.max_ngram, f">= min_ngram ({self.min_ngram})")
        # each n keeps a map of every position's n-gram: 100 took 170 MB more on a 3,600-token prompt
        require(self.max_ngram <= MAX_NGRAM, "max_ngram", self.max_ngram, f"<= {MAX_NGRAM}")
        require(self.max_draft >= 1, "max_draft", self.max_draft, ">= 1")
        require(0.0 < self.prior_acceptance < 1.0, "prior_acceptance", self.prior_acceptance, "in (0, 1)")
        require(self.tie_margin >= 0, "tie_margin", self.tie_margin, ">= 0 (0 re-decodes no near-tie)")


class NgramLookup:
    """Where did the current suffix n-gram occur before? (most recent occurrence, longest n)"""

    def __init__(self, nmin: int, nmax: int):
        self.nmin, self.nmax = nmin, nmax
        self.maps: dict[int, dict[tuple, int]] = {n: {} for n in range(nmin, nmax + 1)}
        self.older: dict[int, dict[tuple, int]] = {n: {} for n in range(nmin, nmax + 1)}
        self.hist: list[int] = []
        self.follow: int | None = None  # index in hist of what followed the previous occurrence
        self.follow2: int | None = None  # ... and the occurrence before that
        self.matched = 0  # length of the n-gram that matched

    def extend(self, tokens, tally: AcceptanceTally | None = None) -> None:
        """Append `tokens`; with a `tally`, first count how the draft proposed at each position
        would have fared against the tokens that really follow (free: they are known)."""
        for i, t in enumerate(tokens):
            if tally is not None and self.follow is not None:
                ahead = tokens[i : i + tally.depth]
                tally.count(self.matched, self.draft(len(ahead)), ahead, self.agreement(len(ahead)))
            self.hist.append(t)
            length = len(self.hist)
            self.follow = self.follow2 = None
            self.matched = 0
            for n in range(self.nmax, self.nmin - 1, -1):
                if length < n:
                    continue
                key = tuple(self.hist[length - n :])
                prev = self.maps[n].get(key)
                self.maps[n][key] = length
                before = self.older[n].get(key)
                if prev is not None:
                    self.older[n][key] = prev
                if prev is not None and self.follow is None:
                    self.follow, self.matched, self.follow2 = prev, n, before

    def draft(self, k: int) -> list[int]:
        if self.follow is None or k <= 0:
            return []
        return self.hist[self.follow : self.follow + k]

    def agreement(self, k: int) -> int:
        """How many tokens the two latest earlier occurrences' continuations share (0 with only
        one earlier occurrence)."""
        if self.follow is None or self.follow2 is None:
            return 0
        a, b, h, n = self.follow, self.follow2, self.hist, 0
        while n < k and a + n < len(h) and b + n < len(h) and h[a + n] == h[b + n]:
            n += 1
        return n


class AcceptanceTally:
    """Hits and trials per matched n-gram length of the drafts the prompt itself would have
    answered: the prompt shows, before a verify is paid for, whether this text repeats itself
    (a file of near-identical lines) or not (ordinary code, where a draft mostly fails and on a
    CPU costs more than it saves). Kinds as in `DraftPolicy`: first, next, inside."""

    WINDOW = 2048  # prompt positions counted: the latest, nearest the text to come

    def __init__(self, depth: int):
        self.depth = depth
        self.hits: dict[tuple[str, int], int] = {}
        self.trials: dict[tuple[str, int], int] = {}

    def _add(self, kind: str, matched: int, hit: bool) -> None:
        key = (kind, matched)
        self.trials[key] = self.trials.get(key, 0) + 1
        self.hits[key] = self.hits.get(key, 0) + int(hit)

    def count(self, matched: int, draft: list[int], actual: list[int], agree: int) -> None:
        for j, (proposed, real) in enumerate(zip(draft, actual, strict=False)):
            kind = "first" if j == 0 else "inside" if j < agree else "next"
            self._add(kind, matched, proposed == real)
            if proposed != real:
                break

    def rate(self, kind: str, matched: int, prior: float, weight: float) -> float:
        """The prior, worth `weight` trials, updated by what was counted."""
        key = (kind, matched)
        return (prior * weight + self.hits.get(key, 0)) / (weight + self.trials.get(key, 0))


_SIZES = (1, 2, 3, 4, 6, 8, 12, 16, 24)


def decode_costs(ctx, progress=None) -> dict[int, float]:
    """Seconds to decode n tokens with logits on every one, for a few n, as the engine
    measured them (once per context; padding included). The curve is far from linear: on CPU
    the output layer of a large vocabulary dominates extra rows, on a GPU they are nearly free.
    `progress` hears of a first measuring (minutes for a large model on a CPU)."""
    return ctx.output_costs(*(n for n in _SIZES if n < min(ctx.n_batch, ctx.n_ctx)), progress=progress)


class DraftPolicy:
    """Running acceptance rates per matched n-gram length; picks the draft length that
    maximises expected tokens per second under the measured decode-cost curve.

    Acceptance is a two-state chain, not one coin per token: `first` is the chance the first
    drafted token is right, `next` the chance a token is right given the one before it was.
    Repeated text fails where the copy diverges (a new name) and then runs true for a whole
    span, so one rate for both would keep every draft short."""

    EMA = 0.3
    PRIOR_WEIGHT = 4.0  # trials the assumed rate is worth against the prompt's own counts

    def __init__(
        self, nmax: int, prior: float, max_draft: int, costs: dict[int, float], seen: AcceptanceTally | None = None
    ):
        # a longer matching n-gram predicts its continuation better: prior 1 - (1 - prior) / n
        assumed = {n: 1 - (1 - prior) / n for n in range(1, nmax + 1)}
        seen = seen or AcceptanceTally(0)
        rates = {
            kind: {n: seen.rate(kind, n, a, self.PRIOR_WEIGHT) for n, a in assumed.items()}
            for kind in ("first", "next", "inside")
        }
        self.first, self.next = rates["first"], rates["next"]
        self.inside = rates["inside"]  # next-token rate where both earlier copies agree
        self.max_draft = max_draft
        self.costs = costs

    def expected_tokens(self, matched: int, d: int, agree: int = 0) -> float:
        """Tokens a verify of a d-token draft yields: 1 + a1 * (1 + q2 + q2 q3 + ...), where
        q_j is the rate inside the span the two latest copies agree on (j < agree), else a2."""
        a1, a2, inside = self.first.get(matched, 0.0), self.next.get(matched, 0.0), self.inside.get(matched, 0.0)
        total, survive = 1.0, a1
        for j in range(d):
            if j > 0:
                survive *= inside if j < agree else a2
            total += survive
        return total

    def length(self, matched: int, available: int, agree: int = 0) -> int:
        """Drafts are sized so that the verify batch (draft + 1) is a measured size: the cost
        curve has steps (kernel tiles, padding) that interpolation would miss."""
        limit = min(self.max_draft, available)
        best_d, best_rate = 0, 1.0 / self.costs[1]
        for rows in sorted(self.costs):
            d = rows - 1
            if d < 1 or d > limit:
                continue
            rate = self.expected_tokens(matched, d, agree) / self.costs[rows]
            if rate > best_rate:
                best_d, best_rate = d, rate
        return best_d

    def observe(self, matched: int, drafted: int, accepted: int, agree: int = 0) -> None:
        """A verified draft: its first token was checked, and each later one whose
        predecessor was accepted."""
        if drafted < 1 or matched not in self.first:
            return
        ema = self.EMA
        self.first[matched] = (1 - ema) * self.first[matched] + ema * float(accepted >= 1)
        reached = range(1, min(drafted, accepted + 1))  # positions 2.. whose predecessor was accepted
        for rates, group in (
            (self.inside, [j for j in reached if j < agree]),
            (self.next, [j for j in reached if j >= agree]),
        ):
            if group:
                rates[matched] = (1 - ema) * rates[matched] + ema * (sum(j < accepted for j in group) / len(group))


class Speculative(Strategy):
    name = "speculative"
    summary = "Greedy output with fewer forward passes: prompt-lookup drafts verified in one batch."
    Options = SpeculativeOptions
    reads_temperature = False

    def generate(self, run: Run):
        o = self.options
        ops, ctx = run.ops, run.context
        lookup = NgramLookup(o.min_ngram, o.max_ngram)
        seen = AcceptanceTally(o.max_draft)
        recent = len(run.prompt_tokens) - AcceptanceTally.WINDOW  # evidence enough; a long file costs no more
        lookup.extend(run.prompt_tokens[: max(recent, 0)])
        lookup.extend(run.prompt_tokens[max(recent, 0) :], seen)
        drafted = accepted_total = 0
        # measured before the prompt, so the run counts it as set-up, not as decoding (the
        # exactness probe runs once per context: ~0.6 s on SmolLM2, in a one-off `generate`)
        costs = {n: 1.0 for n in range(1, o.max_draft + 2)} if o.free_batch else decode_costs(ctx, run.progress)
        if o.exact:  # largest first: the probe's one-token decodes for it serve every smaller size
            exact = {n for n in sorted(costs, reverse=True) if ctx.matches_single_rows(n)}
            costs = {n: c for n, c in costs.items() if n in exact}
        policy = DraftPolicy(o.max_ngram, o.prior_acceptance, o.max_draft, costs, seen)
        logits = run.start()
        unchecked = None  # (matched n, proposed token) of a draft the policy chose not to send
        while logits is not None:
            token = ops.argmax(run.constrain(logits))
            if unchecked is not None:
                # the free check of a draft not sent keeps the acceptance estimate alive: one
                # failure must not switch drafting off for good on a text that repeats
                policy.observe(unchecked[0], 1, int(token == unchecked[1]))
                unchecked = None
            yield from run.take(token)
            if run.finished:
                break
            lookup.extend([token])
            room = min(run.request.max_tokens - len(run.tokens), ctx.n_ctx - len(run.seq.tokens) - 1)
            candidates = lookup.draft(room)
            matched = lookup.matched
            agree = lookup.agreement(len(candidates))
            draft = candidates[: policy.length(matched, len(candidates), agree)]
            if not draft:
                if candidates:
                    unchecked = (matched, candidates[0])
                logits = run.step(token)
                continue
            try:
                rows = ctx.decode({run.seq: [token, *draft]}, all_logits=True)[run.seq]
            except Cancelled:
                run.finish("cancelled")
                break
            except ContextOverflow:
                logits = run.step(token)
                continue
            # row j holds the logits after `token` (j = 0) or after draft[j - 1]
            accepted, recompute = 0, False
            for j in range(len(draft) + 1):
                row = run.constrain(rows[j])
                best = ops.argmax(row)
                if _near_tie(row, best, o.tie_margin):
                    recompute = True  # batch and single decodes may disagree here: redo singly
                    break
                if j == len(draft) or best != draft[j]:
                    break
                accepted += 1
                yield from run.take(draft[j])
                if run.finished:
                    break
            drafted += len(draft)
            accepted_total += accepted
            policy.observe(matched, len(draft), accepted, agree)
            if run.finished:
                break
            lookup.extend(draft[:accepted])
            held = len(run.prompt_tokens) + len(run.tokens)
            if recompute:
                run.seq.truncate(held - 1)
                logits = run.step(run.tokens[-1])
            else:
                logits = rows[accepted]
                run.seq.truncate(held)  # drop the rejected drafts
        run.extra_stats.update(drafted_tokens=drafted, accepted_draft_tokens=accepted_total)
        yield run.done()


def _near_tie(row: np.ndarray, best: int, margin: float) -> bool:
    """True when the runner-up logit is within `margin` of the best one."""
    if margin <= 0:
        return False
    top = row[best]
    row[best] = -np.inf
    second = row.max()
    row[best] = top
    return bool(top - second < margin)


@hookimpl
def register_strategies(register):
    register(Speculative)
