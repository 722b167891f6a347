"""What an interface asks for. Strategies read it; they never see the UI."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Sampling:
    """Sampling settings (used by `sample` and any strategy that samples)."""

    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    seed: int | None = None


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
        from ..errors import UserError

        if self.max_tokens < 0:
            raise UserError("max_tokens must be >= 0")
        if self.sampling.temperature < 0:
            raise UserError("temperature must be >= 0")
        if not 0.0 < self.sampling.top_p <= 1.0:
            raise UserError("top_p must be in (0, 1]")
        if not 0.0 <= self.sampling.min_p < 1.0:
            raise UserError("min_p must be in [0, 1)")
        if self.sampling.seed is not None and self.sampling.seed < 0:
            raise UserError("seed must be >= 0 (leave it out for a fresh random seed)")
        if self.n_indent < 0 or self.t_max_predict_ms < 0:
            raise UserError("n_indent and t_max_predict_ms must be >= 0")
