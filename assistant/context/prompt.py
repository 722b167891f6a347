"""Turn a Request into prompt tokens (and, for infill without FIM, a suffix guard)."""

from __future__ import annotations

from dataclasses import dataclass

from ..decoding.request import Request
from ..engine import Model
from ..errors import ContextOverflow, UserError
from .fim import detect as detect_fim
from .fim import fim_tokens
from .infill import SuffixGuard
from .syntax import SyntaxGuard

# room kept for generation when an infill prompt has to be shortened
MIN_GENERATION_ROOM = 64


@dataclass
class Prompt:
    tokens: list[int]
    guard: SuffixGuard | None = None
    truncated: bool = False
    mode: str = "plain"  # plain | fim | prefix (infill without FIM tokens)


def build_prompt(model: Model, request: Request, n_ctx: int) -> Prompt:
    prompt = _build(model, request, n_ctx)
    if request.is_infill and request.syntax_valid:
        prompt.guard = SyntaxGuard(request.prompt, request.suffix or "", request.language, inner=prompt.guard)
    return prompt


def _build(model: Model, request: Request, n_ctx: int) -> Prompt:
    bos = model.bos_tokens() if request.add_bos else []
    if not request.is_infill:
        tokens = bos + model.tokenize(request.prompt)
        if not tokens:
            raise UserError("empty prompt")
        if len(tokens) >= n_ctx:
            raise ContextOverflow(
                f"prompt is {len(tokens)} tokens but the context holds {n_ctx}; raise --n-ctx or shorten the prompt"
            )
        return Prompt(tokens)
    prefix, suffix = request.prompt, request.suffix or ""
    room = max(n_ctx - min(request.max_tokens, n_ctx // 2) - len(bos) - 4, MIN_GENERATION_ROOM)
    pre = model.tokenize(prefix)
    fim = detect_fim(model)
    if fim is None:
        # no FIM tokens: prompt with the prefix; the suffix steers stopping only
        truncated = len(pre) > room
        pre = pre[-room:] if truncated else pre
        tokens = bos + pre
        if not tokens:
            raise UserError("nothing to complete: the prefix is empty and the model has no BOS token")
        return Prompt(tokens, guard=SuffixGuard(suffix), truncated=truncated, mode="prefix")
    suf = model.tokenize(suffix)
    # documented truncation: keep the end of the prefix (3/4 of the room) and the start of the suffix
    truncated = len(pre) + len(suf) > room
    if truncated:
        keep_suf = min(len(suf), room // 4)
        suf = suf[:keep_suf]
        pre = pre[-(room - keep_suf) :]
    extra = [(c.filename, c.text) for c in request.extra]
    tokens = fim_tokens(model, fim, pre, suf, bos=bos, extra=extra, filename=request.filename or "filename")
    if len(tokens) >= n_ctx:  # extra context first to go: it is the least local
        tokens = fim_tokens(model, fim, pre, suf, bos=bos, filename=request.filename or "filename")
        truncated = True
    return Prompt(tokens, truncated=truncated, mode=f"fim:{fim.family}")
