"""Events a strategy yields. Interfaces render them; the server only concatenates `Token`s."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class Token:
    """New text to show (may be empty while a stop string is being checked)."""

    text: str
    token_id: int = -1


@dataclass(slots=True)
class Drafts:
    """k alternative drafts advanced together (superposed decoding). A run's last Drafts
    event is `final`: the finished drafts, best first, with the scores they were ranked by."""

    texts: list[str]
    scores: list[float] = field(default_factory=list)
    final: bool = False


@dataclass(slots=True)
class Pause:
    """An uncertain step: the candidates considered, their scores and the one chosen."""

    position: int
    entropy: float
    candidates: list[str]
    scores: list[float]
    chosen: int
    stats: dict[str, Any] = field(default_factory=dict)  # work the lookahead cost
    pruned: list[int] = field(default_factory=list)  # candidates dropped early: score is an upper bound


@dataclass(slots=True)
class Node:
    """A search expansion (MCTS / A*): partial text and its value."""

    text: str
    score: float
    parent: int | None = None
    node_id: int = 0


@dataclass(slots=True)
class Done:
    """The end of a generation: final text(s), why it ended, and the work it cost."""

    text: str
    finish_reason: str
    stats: dict[str, Any]
    texts: list[str] | None = None
    tokens: list[int] = field(default_factory=list)


Event = Token | Drafts | Pause | Node | Done
