"""Turn a Request into prompt tokens (and, for infill without FIM, a suffix guard)."""

from __future__ import annotations

from dataclasses import dataclass

from ..decoding.request import Request
from ..engine import Model
from ..errors import ContextOverflow, UserError
from .fim import detect as detect_fim
from .fim import fim_tokens
from .header import file_header
from .infill import SuffixGuard
from .syntax import SyntaxGuard

# room kept for generation when an infill prompt has to be shortened
MIN_GENERATION_ROOM = 64
# tokens dropped next to a cut in the text: a token there may be split differently
CUT_MARGIN = 16


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
        head, cut = _tokens_near(model, request.prompt, n_ctx, tail=False)  # enough to tell it is too long
        tokens = bos + head
        if not tokens:
            raise UserError("empty prompt")
        if len(tokens) >= n_ctx:
            size = f"over {len(tokens)}" if cut else f"{len(tokens)}"
            raise ContextOverflow(
                f"prompt is {size} tokens and the context holds {n_ctx}, which leaves no room to generate; "
                "raise --n-ctx or shorten the prompt"
            )
        return Prompt(tokens)
    prefix, suffix = near_cursor(request.prompt, request.suffix or "", request.n_prefix, request.n_suffix)
    room = max(n_ctx - min(request.max_tokens, n_ctx // 2) - len(bos) - 4, MIN_GENERATION_ROOM)
    fim = detect_fim(model)
    if fim is None:
        # no FIM tokens: prompt with the prefix (named in a comment where it holds no code); the
        # suffix steers stopping only
        pre = _tokens_near(model, file_header(prefix, request.filename, request.language) + prefix, room, tail=True)[0]
        truncated = len(pre) > room
        pre = pre[-room:] if truncated else pre
        tokens = bos + pre
        if not tokens:
            raise UserError("nothing to complete: the prefix is empty and the model has no BOS token")
        return Prompt(tokens, guard=SuffixGuard(suffix), truncated=truncated, mode="prefix")
    pre = _tokens_near(model, prefix, room, tail=True)[0]
    suf = _tokens_near(model, suffix, room, tail=False)[0]
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


def near_cursor(prefix: str, suffix: str, n_prefix: int, n_suffix: int) -> tuple[str, str]:
    """The text around the cursor a model sees: the cursor's line, with `n_prefix` whole lines
    above it and `n_suffix` below (0: all), as llama.vim sends them. The whole file cost a
    long prefill for what it adds (argparse.py, 2,630 lines: 4,076 tokens and 10.4 s on 2
    cores, against 2,289 and 5.0 s with 256 and 64 lines, for the same completion)."""
    if n_prefix:
        cut = len(prefix)
        for _ in range(n_prefix + 1):  # the cursor line's start, then one line further up each time
            cut = prefix.rfind("\n", 0, cut)
            if cut < 0:
                break
        prefix = prefix[cut + 1 :]
    if n_suffix:
        cut = -1
        for _ in range(n_suffix + 1):  # the cursor line's end, then one line further down each time
            cut = suffix.find("\n", cut + 1)
            if cut < 0:
                break
        if cut >= 0:
            suffix = suffix[: cut + 1]
    return prefix, suffix


def _tokens_near(model: Model, text: str, budget: int, *, tail: bool) -> tuple[list[int], bool]:
    """(tokens, whether the text was cut before tokenizing): the tokens of `text`, or, where it
    is far longer than `budget` tokens, more than `budget` of them from its end (`tail`) or its
    start (so the caller sees it must cut), without tokenizing the rest: an editor sends the
    whole file, and tokenizing megabytes (seconds, growing faster than the text) to keep one
    end of it is waste."""
    window = 8 * (budget + CUT_MARGIN)  # code averages 3-4 characters a token
    while window < len(text):
        tokens = model.tokenize(text[-window:] if tail else text[:window])
        if len(tokens) > budget + CUT_MARGIN:  # more than the budget: the caller sees a cut
            return (tokens[CUT_MARGIN:] if tail else tokens[:-CUT_MARGIN]), True
        window *= 2
    return model.tokenize(text), False
