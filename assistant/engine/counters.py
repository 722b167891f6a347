"""Work counters every context keeps; strategies report them and benchmarks read them."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class Counters:
    forward_passes: int = 0  # llama_decode calls
    tokens_evaluated: int = 0  # tokens (or embedding rows) sent through the model
    tokens_reused: int = 0  # prompt tokens kept from the KV cache instead of re-evaluated
    seconds: float = 0.0  # wall time inside llama_decode
    padding_rows: int = 0  # scratch output rows added because the padded batch was cheaper

    def copy(self) -> Counters:
        return Counters(**asdict(self))

    def since(self, start: Counters) -> Counters:
        now, then = asdict(self), asdict(start)
        return Counters(**{k: now[k] - then[k] for k in now})

    def to_dict(self) -> dict:
        d = asdict(self)
        d["seconds"] = round(d["seconds"], 6)
        return d
