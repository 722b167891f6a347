"""Stop rules, implemented once for every strategy.

After each generated token the rules look at the whole generated text and answer two
things: whether generation ends (and where the final text is cut), and how much of the text
is safe to show now (a possible start of a stop string, or of a line that may be cut, is held
back so streamed text never has to be taken back).
"""

from __future__ import annotations

import copy
import time
from typing import Protocol

from .request import Request


class TextGuard(Protocol):
    """An extra stop rule (e.g. the infill suffix guard)."""

    def check(self, text: str, final: bool) -> tuple[bool, int]:
        """(stop?, end): end is the cut if stopping, else how far text is safe to show."""


class StopRules:
    def __init__(self, request: Request, guard: TextGuard | None = None):
        self.stops = [s for s in request.stop if s]
        self.longest_stop = max((len(s) for s in self.stops), default=0)
        self.n_indent = request.n_indent
        self.t_max = request.t_max_predict_ms / 1000.0 if request.t_max_predict_ms else 0.0
        self.deadline = request.deadline
        self.guard = guard
        self.started: float | None = None
        self._stop_scan = 0  # stop strings cannot start before this index
        self._stop_floor = 0
        self._line_scan = 0  # lines starting before this index passed the n_indent rule
        self.trivial = not (self.stops or self.n_indent or self.t_max or self.deadline or guard)

    def check(self, text: str) -> tuple[str | None, int]:
        """(finish_reason or None, end). Finished: text[:end] is final. Else text[:end] may be shown."""
        if self.trivial:
            return None, len(text)
        now = time.monotonic()
        if self.started is None:
            self.started = now
        end = len(text)
        hold = end
        if self.stops:
            found = self._find_stop(text)
            gate = getattr(self.guard, "valid", None)  # a syntax guard decides which stops count
            if found is not None and (gate is None or gate(text[:found])):
                return "stop", found
            hold = min(hold, end - self._partial_stop(text))
        if self.n_indent:
            cut, safe = self._indent(text)
            if cut is not None:  # the block ended; a guard judges the text up to there as any end
                return "stop", cut if self.guard is None else self.finish(text[:cut])
            hold = min(hold, safe)
        if self.guard is not None:
            stop, g_end = self.guard.check(text, final=False)
            if stop:
                return "stop", g_end
            hold = min(hold, g_end)
        if self.deadline is not None and now >= self.deadline:
            return "deadline", self.finish(text)
        if self.t_max and "\n" in text and now - self.started > self.t_max:
            return "time_limit", self.finish(text)
        return None, hold

    @property
    def no_valid_end(self) -> bool:
        """The guard (the syntax guard) found no place where the text may end."""
        return bool(getattr(self.guard, "failed", False))

    def fork(self) -> StopRules:
        """A copy for another text that starts as this one (superposed's drafts): its scan
        positions, and a guard of its own where the guard keeps state (the syntax guard's), so
        one draft's lines are never taken as another's."""
        other = copy.copy(self)
        fork = getattr(self.guard, "fork", None)
        other.guard = fork() if fork is not None else self.guard
        return other

    def finish(self, text: str) -> int:
        """Where to cut when generation ends for another reason (EOS, length, time)."""
        if self.guard is not None:
            _, end = self.guard.check(text, final=True)
            return end
        return len(text)

    def _find_stop(self, text: str) -> int | None:
        best = None
        start = max(self._stop_floor, self._stop_scan - self.longest_stop)
        for s in self.stops:
            i = text.find(s, start)
            if i >= 0 and (best is None or i < best):
                best = i
        self._stop_scan = len(text)
        if best is not None:
            self._stop_floor = best + 1  # a rejected stop is not found again
        return best

    def _partial_stop(self, text: str) -> int:
        """Length of the longest tail of text that is a proper prefix of a stop string."""
        longest = 0
        for s in self.stops:
            for n in range(min(len(s) - 1, len(text)), longest, -1):
                if text.endswith(s[:n]):
                    longest = n
                    break
        return longest

    def _indent(self, text: str) -> tuple[int | None, int]:
        """llama.cpp's n_indent: a new line indented less than n_indent ends generation; the
        text is cut at that line's first non-blank character. Returns (cut, safe)."""
        pos = text.find("\n", self._line_scan)
        safe = len(text)
        while pos >= 0:
            start = pos + 1
            j = start
            while j < len(text) and text[j] in " \t":
                j += 1
            if j == len(text):  # indentation not known yet: hold the line's whitespace
                safe = start
                break
            if text[j] != "\n" and j - start < self.n_indent:
                return j, j
            self._line_scan = start
            pos = text.find("\n", start)
        return None, safe
