"""What an interface asks for. Strategies read it; they never see the UI."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ..errors import UserError


@dataclass
class Sampling:
    """Sampling settings (used by `sample` and any strategy that samples)."""

    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    seed: int | None = None

    def validate(self) -> None:
        check_sampling(self.temperature, self.top_k, self.top_p, self.min_p)
        if self.seed is not None and self.seed < 0:
            raise UserError("seed must be >= 0 (leave it out for a fresh random seed)")


def check_sampling(temperature: float | None, top_k: int | None, top_p: float | None, min_p: float | None) -> None:
    """One set of rules for sampling settings, whether they come with the request or as a
    strategy's options (None: not given). NaN fails every comparison, so each test is written
    to fail on it."""
    if temperature is not None and not (0.0 <= temperature < math.inf):
        raise UserError(f"temperature must be a finite number >= 0, got {temperature}")
    if top_k is not None and top_k < 0:
        raise UserError(f"top_k must be >= 0 (0 keeps all), got {top_k}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise UserError(f"top_p must be in (0, 1], got {top_p}")
    if min_p is not None and not 0.0 <= min_p < 1.0:
        raise UserError(f"min_p must be in [0, 1), got {min_p}")


@dataclass
class ContextChunk:
    """Extra context an editor sends with an infill request (llama.vim's input_extra)."""

    text: str
    filename: str = "tmp"


@dataclass
class Request:
    """A generation request.

    Plain continuation uses `prompt`. Infilling sets `suffix` (and `prompt` is the prefix);
    `extra` carries repository context chunks.
    """

    prompt: str = ""
    suffix: str | None = None
    extra: list[ContextChunk] = field(default_factory=list)
    max_tokens: int = 128
    stop: list[str] = field(default_factory=list)
    n_indent: int = 0  # stop at a new line indented less than this (llama.cpp semantics)
    # infill: lines above / below the cursor's line the model sees (llama.vim's n_prefix and
    # n_suffix; 0: all); checks that the file parses still see all of it
    n_prefix: int = 0
    n_suffix: int = 0
    t_max_predict_ms: int = 0  # time limit that fires only after a newline (llama.cpp semantics)
    deadline: float | None = None  # absolute time.monotonic() after which generation stops
    sampling: Sampling = field(default_factory=Sampling)
    strategy: str = "greedy"
    options: dict[str, Any] = field(default_factory=dict)
    add_bos: bool = True
    ignore_eos: bool = False  # keep going past end-of-generation tokens (benchmarks)
    syntax_valid: bool = False  # infill: stop only where prefix + middle + suffix parses
    language: str | None = None  # language of the file being infilled (for syntax checks)
    filename: str | None = None  # name of the file being infilled (repo-level FIM prompts)
    # the folder of the user's project the text comes from (strategies that learn from the
    # user's code read it: superposed's default n-gram corpus); None where the text has no
    # project (evaluations, benchmarks), so their results do not depend on where they run
    workspace: str | None = None

    @property
    def is_infill(self) -> bool:
        return self.suffix is not None

    def validate(self) -> None:
        self.sampling.validate()
        for name in ("max_tokens", "n_indent", "n_prefix", "n_suffix", "t_max_predict_ms"):
            if getattr(self, name) < 0:
                raise UserError(f"{name} must be >= 0, got {getattr(self, name)}")
