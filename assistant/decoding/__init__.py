"""Requests, events, the strategy protocol and the step helpers all strategies share."""

from .constraint import AllowedTokens, Constraint
from .events import Done, Drafts, Event, Node, Pause, Token
from .request import ContextChunk, Request, Sampling
from .run import Run, text_of
from .steps import token_by_token
from .strategy import Strategy, option, require

__all__ = [
    "AllowedTokens",
    "Constraint",
    "ContextChunk",
    "Done",
    "Drafts",
    "Event",
    "Node",
    "Pause",
    "Request",
    "Run",
    "Sampling",
    "Strategy",
    "Token",
    "option",
    "require",
    "text_of",
    "token_by_token",
]
