"""Prompt building: plain prompts, FIM prompts, and suffix-aware infill without FIM tokens."""

from .infill import SuffixGuard
from .prompt import Prompt, build_prompt

__all__ = ["Prompt", "SuffixGuard", "build_prompt"]
