"""`greedy`: always the most likely token. The baseline every other strategy is measured against."""

from __future__ import annotations

from assistant import hookimpl
from assistant.decoding import Run, Strategy, token_by_token


class Greedy(Strategy):
    name = "greedy"
    summary = "Always take the most likely next token (deterministic)."
    reads_temperature = False

    def generate(self, run: Run):
        return token_by_token(run, run.ops.argmax)


@hookimpl
def register_strategies(register):
    register(Greedy)
