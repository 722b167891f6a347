"""Refuse a bench's --tokens that runs past the context, before minutes of runs.

A run the context stops early writes fewer tokens than another, and ratios of unequal work
mean nothing."""

from __future__ import annotations

from ..errors import UserError


def check_room(service, n_tokens: int, prompts: list[str], margin: int) -> None:
    """`margin`: context cells the bench needs beyond prompt and output (lookahead rows, which
    share the context)."""
    model, n_ctx = service.model(), service.context().n_ctx
    longest = max(len(model.bos_tokens() + model.tokenize(p)) for p in prompts)
    need = longest + n_tokens + margin
    if need > n_ctx:
        raise UserError(
            f"--tokens {n_tokens} needs a context of {need} tokens with this bench's prompts (up to {longest} "
            f"tokens on this model) and the context holds {n_ctx}: lower --tokens or raise --n-ctx"
        )
