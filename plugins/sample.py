"""`sample`: temperature / top-k / top-p / min-p sampling, seeded for reproducibility."""

from __future__ import annotations

from dataclasses import dataclass

from assistant import hookimpl
from assistant.decoding import Run, Strategy, option, token_by_token
from assistant.decoding.request import check_sampling


@dataclass
class SampleOptions:
    temperature: float | None = option(None, "softmax temperature (default: the request's)")
    top_k: int | None = option(None, "keep the k most likely tokens; 0 keeps all (default: the request's)")
    top_p: float | None = option(None, "nucleus mass to keep (default: the request's)")
    min_p: float | None = option(None, "drop tokens below min_p x the top probability (default: the request's)")

    def __post_init__(self):
        check_sampling(self.temperature, self.top_k, self.top_p, self.min_p)


class Sample(Strategy):
    name = "sample"
    summary = "Sample with temperature, top-k, top-p and min-p (seeded)."
    Options = SampleOptions

    def generate(self, run: Run):
        s = run.request.sampling
        o = self.options
        temperature = s.temperature if o.temperature is None else o.temperature
        top_k = s.top_k if o.top_k is None else o.top_k
        top_p = s.top_p if o.top_p is None else o.top_p
        min_p = s.min_p if o.min_p is None else o.min_p
        ops = run.ops

        if temperature <= 0:
            return token_by_token(run, ops.argmax)

        def choose(logits):
            ids, x = ops.top_k_live(logits, top_k)  # first: the rest works on k numbers, not the vocabulary
            x = ops.apply_temperature(x, temperature)
            x = ops.min_p_mask(x, min_p)
            x = ops.top_p_mask(x, top_p)
            return int(ids[ops.sample(x, run.rng)])

        return token_by_token(run, choose)


@hookimpl
def register_strategies(register):
    register(Sample)
