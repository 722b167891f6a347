"""`adadec`: AdaDec, entropy-triggered lookahead reranking (arXiv 2506.08980).

Greedy while the model is confident. Where the next-token entropy (nats, untempered) reaches
the model's threshold, pause: take the top-k candidates, roll each out greedily for L tokens
(all branches forked and decoded together, one batch per lookahead step), and keep the
candidate with the best length-normalised log-probability. Where batching does not pay (a
CPU, where a k-row batch costs 2.4x a row on Gemma 3 270M; or a small model on a GPU, where
the host work on each row's 262k logits outweighs the decode), schedule 'best-first' finds
the same winner by branch and bound: it extends one branch at a time and drops a branch once
even a perfect rest of its rollout could not beat a finished one. Mode 'line' is the reference's
AdaDynL: a branch's lookahead also ends where its line ends (at most L tokens), which is
cheaper where pauses fall near the end of a line.

Beyond the reference: the winner's lookahead tokens are exactly what greedy decoding would
produce next, so they are accepted straight from the lookahead (while each step stays below
the threshold) instead of being decoded a second time. A branch that ends the code (starts an
unindented line) stops adding scores; the reference rolls it on to L tokens and keeps adding
them, which penalises candidates that end early (`score_past_end=true`). On the bundled Gemma
3 270M the reference's scoring moved fewer reference tokens away on HumanEval's solutions
(2,070 right at the pauses against 2,047; greedy 2,122) but passed 2 problems, not 4: it
chose `result = x + y` and 20 lines of prints over `return x + y`, whose rollout ends early.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from assistant import hookimpl
from assistant.decoding import Pause, Run, Strategy, option, require
from assistant.decoding.lookahead import SCHEDULES, Seed, greedy_rollouts, pick_schedule
from assistant.decoding.steps import top_candidates
from assistant.errors import ContextOverflow, UserError

DEFAULT_THRESHOLD = 1.0  # nats; the published thresholds for 1-8B code models lie in 0.6-1.3
# Rows a best-first pause spends on candidates that lose, measured on the bench prompts with
# Gemma 3 270M (1.3-2 a pause); `pick_schedule` weighs it against the batched schedule's price.
BEST_FIRST_WASTE = 1.7


@dataclass
class AdaDecOptions:
    threshold: str = option("auto", "entropy threshold in nats, or 'auto' (learned by `assistant calibrate`)")
    k: int = option(3, "candidates reranked at a pause (lookahead_beam_size)")
    lookahead: int = option(5, "greedy lookahead length L (the most, in mode 'line')")
    mode: str = option(
        "fixed", "'fixed': always L tokens (AdaFixL); 'line': stop a branch at the end of its line (AdaDynL)"
    )
    lam: float = option(1.0, "score weight lambda")
    score_past_end: bool = option(
        False,
        "the reference's scoring: a lookahead that starts an unindented line (the code ended) keeps "
        "rolling to L tokens and adding their log-probabilities, penalising candidates that end early",
    )
    reuse_lookahead: bool = option(True, "accept the winner's confident lookahead tokens without re-decoding")
    schedule: str = option(
        "auto",
        "'batch': all k lookaheads in one batch per step (the reference); 'best-first': one branch "
        "at a time, stopping once no other can win (same choice, fewer rows); 'auto': whichever "
        "the measured decode and host prices on this machine make cheaper",
    )

    def __post_init__(self):
        require(self.k >= 1, "k", self.k, ">= 1")
        require(self.lookahead >= 1, "lookahead", self.lookahead, ">= 1")
        require(self.mode in ("fixed", "line"), "mode", self.mode, "'fixed' or 'line'")
        require(self.schedule in ("auto", *SCHEDULES), "schedule", self.schedule, "'auto', 'batch' or 'best-first'")
        require(self.lam > 0, "lam", self.lam, "> 0 (it scales every score alike)")
        if str(self.threshold) != "auto":
            try:
                finite = math.isfinite(float(self.threshold))
            except ValueError:
                finite = False
            if not finite:
                raise ValueError(f"threshold must be a finite number or 'auto', got {self.threshold!r}")


class AdaDec(Strategy):
    name = "adadec"
    summary = "Greedy, but pause at uncertain tokens and rerank top-k by a batched L-token lookahead."
    Options = AdaDecOptions
    reads_temperature = False

    def sequences(self) -> int:
        return self.options.k + 1  # the run's own and a fork per candidate: best-first may hold them all

    @classmethod
    def resolved_settings(cls, options: AdaDecOptions, model_path: Path) -> dict:
        tau, source, _ = _threshold(options, model_path)
        return {} if source == "option" else {"threshold": tau}

    def resolve_threshold(self, run: Run) -> tuple[float, str]:
        tau, source, stored = _threshold(self.options, run.model.path)
        if source == "default":
            run.notes.append(
                f"adadec: no calibrated threshold for {run.model.path.name}; using the default "
                f"{DEFAULT_THRESHOLD} nats (run `assistant calibrate` to learn one)"
            )
        elif source == "calibrated":
            from assistant.calibration import stale_parts
            from assistant.rerank_check import verdict

            stale = stale_parts(stored)
            name = run.model.path.name
            run.notes += [f"adadec: the calibration stored for {name} is out of date: {why}" for why in stale.values()]
            # `calibrate --check-rerank` measured whether the lookahead helps (by this code)
            warning = verdict(stored["rerank"]) if "rerank" in stored and "rerank" not in stale else None
            if warning:
                run.notes.append(f"adadec: {warning}")
        return tau, source

    def resolve_schedule(self, run: Run) -> str:
        o = self.options
        if o.schedule != "auto":
            return o.schedule
        return pick_schedule(run, o.k, o.lookahead, BEST_FIRST_WASTE)

    def generate(self, run: Run):
        if self.options.lookahead >= run.context.n_ctx:  # no pause could ever look ahead
            raise UserError(
                f"adadec: a lookahead of {self.options.lookahead} tokens cannot fit in the context "
                f"({run.context.n_ctx} tokens); lower the lookahead or raise --n-ctx"
            )
        tau, source = self.resolve_threshold(run)
        run.extra_stats.update(
            adadec_threshold=round(tau, 4), threshold_source=source, adadec_schedule=self.options.schedule, pauses=0
        )
        carry: list[Seed] = []  # the next pause's greedy candidate, partly rolled out already
        try:
            yield from self._decode(run, tau, carry)
        finally:
            for seed in carry:
                seed.fork.release()
        skipped = run.extra_stats.get("pauses_without_room")
        if skipped:
            run.notes.append(
                f"adadec: {skipped} pause(s) near the end of the context took greedy's token "
                "(no room for the lookahead); raise --n-ctx to rerank there"
            )
        yield run.done()

    def _decode(self, run: Run, tau: float, carry: list[Seed]):
        o, ops = self.options, run.ops
        schedule = None  # resolved at the first pause: a run that never pauses times nothing
        known = None  # (log Z, entropy) of `logits` when a lookahead row computed them already
        logits = run.start()
        while logits is not None:
            x = run.constrain(logits)
            rollouts = None
            pause = known is not None or ops.entropy_at_least(x, tau)  # (mostly no full exp pass when confident)
            if pause and len(run.seq.tokens) + o.lookahead > run.context.n_ctx:
                # its L lookahead tokens cannot fit: greedy's token, without decoding branches
                # to the end of the context to find that out
                pause, known = False, None
                _count_pause_without_room(run)
                while carry:
                    carry.pop().fork.release()
            if pause:  # rerank the top-k candidates by a greedy lookahead of each
                lse, entropy = known if known is not None else ops.logsumexp_entropy(x)
                known = None
                cands, logprobs = top_candidates(ops, x, o.k, lse)
                if schedule is None:  # after the last read of x: timing decodes reuse the logits buffer
                    schedule = run.extra_stats["adadec_schedule"] = self.resolve_schedule(run)
                    if schedule == "batch":  # its k-row batches may be padded: price them where it shows
                        run.context.weigh_padding(o.k, progress=run.progress)
                seed = carry.pop() if carry else None
                if seed is not None and seed.candidate not in cands:
                    seed.fork.release()
                    seed = None
                if schedule == "batch":  # k forks at once: too few is said with the number needed
                    try:
                        run.context.require_free(len(cands) - (seed is not None))
                    except UserError:
                        if seed is not None:  # the run ends here: the carried rollout's sequence back
                            seed.fork.release()
                        raise
                c0 = run.context.counters.copy()
                try:
                    rollouts = greedy_rollouts(
                        run,
                        cands,
                        [float(lp) for lp in logprobs],
                        o.lookahead,
                        stop_at_line_end=o.mode == "line",
                        seed=seed,
                        schedule=schedule,
                        keep_logits_above=tau,  # reuse needs a distribution again only where it pauses
                        score_past_end=o.score_past_end,
                    )
                except ContextOverflow:  # near the end of the context the branches' cells do not fit
                    _count_pause_without_room(run)
            if rollouts is None:  # confident, or no room to look ahead: greedy's token, as greedy ends
                token = ops.argmax(x)
                yield from run.take(token)
                if run.finished:
                    return
                logits = run.step(token)
                continue
            branches, forks = rollouts
            try:
                scores = [o.lam * b.score for b in branches]  # a pruned branch's is a bound below the best
                best = int(np.argmax(scores))
                work = run.context.counters.since(c0)
                run.extra_stats["pauses"] += 1
                yield Pause(
                    position=len(run.tokens),
                    entropy=float(entropy),
                    candidates=[run.model.piece(c).decode("utf-8", "replace") for c in cands],
                    scores=[float(s) for s in scores],
                    chosen=best,
                    pruned=[i for i, b in enumerate(branches) if b.pruned],
                    stats={"forward_passes": work.forward_passes, "tokens_evaluated": work.tokens_evaluated},
                )
                win = branches[best]
                yield from run.take(win.first)
                if run.finished:
                    return
                if not o.reuse_lookahead or forks[best] is None:  # None: an end-of-generation winner,
                    logits = run.step(win.first)  # never rolled out, that the run goes past (ignore_eos)
                    continue
                # the winner's fork holds first + tokens[:-1]: take its cells and accept its
                # tokens while each came from a confident (below-threshold) distribution
                run.seq.adopt(forks[best])  # the winner's rollout
                logits = None
                for j, tok in enumerate(win.tokens):
                    if win.entropies[j] >= tau:  # the next pause: its distribution is known,
                        logits = win.logits[j]  # and so is its greedy candidate's rollout
                        known = (float(logits[tok]) - win.logprobs[j], win.entropies[j])
                        if run.constraint is None and run.context.free_sequences:  # a saving, not a need
                            carry.append(Seed(run.seq.fork(), win, j))
                        break
                    yield from run.take(tok)
                    if run.finished:
                        return
                run.seq.truncate(len(run.prompt_tokens) + len(run.tokens) - (0 if logits is not None else 1))
                if logits is None:
                    logits = run.step(run.tokens[-1])
            finally:
                for f in forks:
                    if f is not None:
                        f.release()


def _count_pause_without_room(run: Run) -> None:
    run.extra_stats["pauses_without_room"] = run.extra_stats.get("pauses_without_room", 0) + 1


def _threshold(options: AdaDecOptions, model_path: Path) -> tuple[float, str, dict | None]:
    """(threshold, where it came from: 'option', 'calibrated' or 'default', what `calibrate`
    stored for this model when it came from there)."""
    if str(options.threshold) != "auto":
        return float(options.threshold), "option", None
    from assistant.calibration import load_calibration

    stored = load_calibration(model_path)
    if stored is None:
        return DEFAULT_THRESHOLD, "default", None
    return float(stored["threshold"]), "calibrated", stored


@hookimpl
def register_strategies(register):
    register(AdaDec)
