"""`top-h`: Top-H entropy-bounded truncation sampling (arXiv 2509.02510).

Per step: take the top_n most likely tokens of softmax(logits / T), and keep the longest
most-likely-first prefix whose accumulated entropy mass (sum of -p log2 p) stays within alpha
times the mass of all top_n; always keep the top token. Sample from what is kept. The other
samplers (top-k/top-p/min-p) do not run on top of it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from assistant import hookimpl
from assistant.decoding import Run, Strategy, option, token_by_token


@dataclass
class TopHOptions:
    alpha: float = option(0.4, "entropy budget as a fraction of the top_n entropy mass (0.3-0.5)")
    top_n: int = option(100, "candidates considered per step")
    temperature: float = option(1.0, "temperature of the distribution (the paper uses 1-2)")

    def __post_init__(self):
        if not 0.0 < self.alpha < 1.0:
            raise ValueError("alpha must be in (0, 1)")
        if self.top_n < 1 or self.temperature <= 0:
            raise ValueError("top_n must be >= 1 and temperature > 0")


def top_h_keep(logits: np.ndarray, alpha: float, top_n: int, temperature: float) -> tuple[np.ndarray, np.ndarray]:
    """(token ids kept, their probabilities renormalised), most likely first."""
    x = np.asarray(logits, dtype=np.float64) / temperature
    n = min(top_n, x.shape[0])
    idx = np.argpartition(x, -n)[-n:]
    idx = idx[np.argsort(-x[idx], kind="stable")]
    m = np.max(x)
    log_z = m + np.log(np.sum(np.exp(x - m)))
    p = np.exp(x[idx] - log_z)
    with np.errstate(divide="ignore", invalid="ignore"):
        mass = np.where(p > 0, -p * np.log2(p), 0.0)  # underflowed p contributes 0, not NaN
    cum = np.cumsum(mass)
    keep = max(1, int(np.searchsorted(cum, alpha * cum[-1], side="right")))
    kept = idx[:keep]
    probs = p[:keep] / p[:keep].sum()
    return kept, probs


class TopH(Strategy):
    name = "top-h"
    summary = "Sample from the entropy-bounded head of the distribution (Top-H)."
    Options = TopHOptions

    def generate(self, run: Run):
        o = self.options

        def choose(logits):
            kept, probs = top_h_keep(run.ops.to_numpy(logits), o.alpha, o.top_n, o.temperature)
            live = np.isfinite(np.asarray(run.ops.to_numpy(logits))[kept])
            kept, probs = kept[live], probs[live] / probs[live].sum()
            return int(kept[min(int(np.searchsorted(np.cumsum(probs), run.rng.random())), len(kept) - 1)])

        return token_by_token(run, choose)


@hookimpl
def register_strategies(register):
    register(TopH)
