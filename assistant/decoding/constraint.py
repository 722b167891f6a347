"""The constraint hook every strategy's step goes through.

A constraint restricts which tokens may come next. The full constraint layer (grammars,
regex, JSON schema) plugs in behind this small protocol.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np


class Constraint(Protocol):
    def allowed(self) -> np.ndarray | None:
        """Bool mask over the vocabulary for the next token (None: anything goes)."""

    def advance(self, token: int) -> None:
        """The token was chosen; move the constraint's state forward."""

    def fork(self) -> Constraint:
        """An independent copy for a forked sequence."""

    def complete(self) -> bool:
        """Whether the tokens so far are a whole match (the output may end here)."""


class AllowedTokens:
    """The simplest constraint: a fixed set of token ids (plus end-of-generation tokens)."""

    def __init__(self, n_vocab: int, token_ids, always=()):
        mask = np.zeros(n_vocab, dtype=bool)
        mask[list(token_ids)] = True
        mask[list(always)] = True
        self.mask = mask

    def allowed(self) -> np.ndarray:
        return self.mask

    def advance(self, token: int) -> None:
        if not self.mask[token]:
            raise AssertionError(f"token {token} violates the constraint")

    def fork(self) -> AllowedTokens:
        return self

    def complete(self) -> bool:
        return True
