"""`contrastive`: contrastive search (Su et al. 2022; code settings k=3, alpha=0.4).

Per step the top-k candidates are decoded together (k forks, one batch); each candidate's
final hidden state comes from that same decode. Score = (1 - alpha) * p(v) - alpha * max cosine
similarity between its hidden state and those of the previous tokens (the degeneration
penalty). The winner's logits from that batch are the next step's, so no extra pass is needed.

The hidden states of the prompt are taken from its last `window` tokens (re-evaluated once
with outputs on): keeping a logits row for every prompt token would cost n_prompt x n_vocab
floats, which is gigabytes on large vocabularies.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from assistant import hookimpl
from assistant.decoding import Run, Strategy, option, require
from assistant.decoding.steps import top_candidates
from assistant.errors import Cancelled, ContextOverflow


@dataclass
class ContrastiveOptions:
    k: int = option(3, "candidates per step")
    alpha: float = option(0.4, "degeneration penalty weight")
    window: int = option(64, "prompt tokens whose hidden states join the penalty")

    def __post_init__(self):
        require(self.k >= 1, "k", self.k, ">= 1")
        require(0.0 <= self.alpha <= 1.0, "alpha", self.alpha, "in [0, 1]")
        require(self.window >= 1, "window", self.window, ">= 1")


def _unit(v: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v)
    return v / n if n > 0 else v


class Contrastive(Strategy):
    name = "contrastive"
    summary = "Contrastive search: top-k by probability minus similarity to earlier hidden states."
    Options = ContrastiveOptions
    reads_temperature = False

    def sequences(self) -> int:
        return self.options.k + 1  # the run's own and one per candidate

    def generate(self, run: Run):
        o = self.options
        ctx, ops = run.context, run.ops
        ctx.set_hidden_states(True)
        try:
            yield from self._generate(run, o, ctx, ops)
        finally:
            ctx.set_hidden_states(False)

    def _generate(self, run: Run, o, ctx, ops):
        if run.start() is None:
            yield run.done()
            return
        seq = run.seq
        window = min(o.window, len(run.prompt_tokens), ctx.n_batch)  # one decode: its hidden states are read
        ctx.weigh_padding(window, o.k, progress=run.progress)  # timed once a week: not silently
        seq.truncate(len(run.prompt_tokens) - window)
        rows = ctx.decode({seq: run.prompt_tokens[-window:]}, all_logits=True)[seq]
        history = np.stack([_unit(ctx.hidden(i)) for i in range(window)])
        logits = rows[-1]
        while True:
            x = run.constrain(logits)
            cands, logprobs = top_candidates(ops, x, o.k)
            probs = np.exp(logprobs)
            forks = seq.forks(len(cands))
            try:
                try:
                    out = ctx.decode({f: [c] for f, c in zip(forks, cands, strict=True)})
                except Cancelled:
                    run.finish("cancelled")
                    break
                except ContextOverflow:
                    # the k candidates' cells do not fit near the end of the context: the most
                    # likely one, decoded alone, so the run ends where greedy's does
                    run.extra_stats["steps_without_room"] = run.extra_stats.get("steps_without_room", 0) + 1
                    yield from run.take(cands[0])
                    if run.finished or (logits := run.step(cands[0])) is None:
                        break
                    history = np.vstack([history, _unit(ctx.hidden_of(seq))])
                    continue
                hidden = [_unit(ctx.hidden_of(f)) for f in forks]
                penalty = [float(np.max(history @ h)) for h in hidden]
                scores = [(1 - o.alpha) * p - o.alpha * pen for p, pen in zip(probs, penalty, strict=True)]
                best = int(np.argmax(scores))
                yield from run.take(cands[best])
                if run.finished:
                    break
                seq.adopt(forks[best])
                logits = out[forks[best]]  # valid: nothing decodes before the next step reads it
                history = np.vstack([history, hidden[best]])
            finally:
                for f in forks:
                    f.release()
        if run.extra_stats.get("steps_without_room"):
            run.notes.append(
                f"contrastive: {run.extra_stats['steps_without_room']} step(s) near the end of the context took "
                "the most likely token (no room for the candidates); raise --n-ctx"
            )
        yield run.done()


@hookimpl
def register_strategies(register):
    register(Contrastive)
