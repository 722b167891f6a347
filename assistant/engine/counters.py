"""Work counters every context keeps; strategies report them and benchmarks read them."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class Counters:
    forward_passes: int = 0  # llama_decode calls
    tokens_evaluated: int = 0  # tokens (or embedding rows) sent through the model
    tokens_reused: int = 0  # prompt tokens kept from the KV cache instead of re-evaluated
    seconds: float = 0.0  # wall time inside llama_decode

    def copy(self) -> Counters:
        return Counters(**asdict(self))

    def since(self, start: Counters) -> Counters:
        return Counters(
            self.forward_passes - start.forward_passes,
            self.tokens_evaluated - start.tokens_evaluated,
            self.tokens_reused - start.tokens_reused,
            self.seconds - start.seconds,
        )

    def to_dict(self) -> dict:
        d = asdict(self)
        d["seconds"] = round(d["seconds"], 6)
        return d
