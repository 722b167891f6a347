"""Suffix-aware stopping for infilling on models without FIM tokens.

The model only sees the prefix and writes left to right; this guard decides where the middle
ends so that it joins the suffix instead of repeating it:
- the cursor line continues after the cursor (the suffix's first line has text): the middle
  is single-line; it ends at the first newline and drops a tail that repeats the suffix line;
- otherwise the middle may span lines and ends before a generated line equal to the suffix's
  first non-blank line (the model started writing the suffix again): same indentation, same
  code once spaces inside the line are ignored (`total/len(xs)` repeats `total / len(xs)`;
  models respace code freely, and the repeat is just as wrong). The suffix then starts
  with the newline that ends the cursor line, so the middle's own trailing newlines and blank
  lines are dropped (they would add blank lines before the suffix): a whitespace tail with a
  newline in it is held back until text follows it.
"""

from __future__ import annotations


class SuffixGuard:
    def __init__(self, suffix: str):
        first, _, rest = suffix.partition("\n")
        self.single_line = first.strip() != ""
        self.rest_of_line = first.strip()
        self.next_line = ""
        self.trim_tail = not self.single_line and "\n" in suffix
        if not self.single_line:
            for line in rest.split("\n"):
                if line.strip():
                    self.next_line = line.rstrip()
                    break
        self.next_indent, self.next_code = _indent(self.next_line), _code(self.next_line)

    def check(self, text: str, final: bool) -> tuple[bool, int]:
        if self.single_line:
            return self._single(text, final)
        return self._multi(text, final)

    def _single(self, text: str, final: bool) -> tuple[bool, int]:
        nl = text.find("\n")
        line = text if nl < 0 else text[:nl]
        if nl >= 0 or final:
            return nl >= 0, self._drop_repeat(line)
        # hold back a tail that could be the start of the rest of the line
        hold = _longest_tail_prefix(line, self.rest_of_line)
        return False, len(line) - hold

    def _drop_repeat(self, line: str) -> int:
        """Cut a tail of `line` that repeats the text after the cursor."""
        target = self.rest_of_line
        stripped = line.rstrip()
        if target and stripped.endswith(target):
            return len(stripped) - len(target)
        # the model may have repeated only the start of the rest of the line (e.g. `)` of `):`)
        n = _longest_tail_prefix(stripped, target)
        return len(stripped) - n if n else len(line)

    def _multi(self, text: str, final: bool) -> tuple[bool, int]:
        start = 0
        while self.next_line:
            nl = text.find("\n", start)
            line = text[start:] if nl < 0 else text[start:nl]
            complete = nl >= 0 or final
            if complete and line.strip() and _indent(line) == self.next_indent and _code(line) == self.next_code:
                return True, self._tail_end(text, start)
            if nl < 0:
                if not final and line and self._may_become_next_line(line):
                    return False, self._tail_end(text, start)  # hold it back
                break
            start = nl + 1
        return False, self._tail_end(text, len(text))

    def _may_become_next_line(self, line: str) -> bool:
        """Whether the unfinished `line` could still turn into the suffix's next line."""
        if not line.strip():
            return self.next_indent.startswith(line)
        return _indent(line) == self.next_indent and self.next_code.startswith(_code(line))

    def _tail_end(self, text: str, end: int) -> int:
        """`end`, less a whitespace tail holding a newline (when the suffix supplies it)."""
        if not self.trim_tail:
            return end
        kept = len(text[:end].rstrip())
        return kept if "\n" in text[kept:end] else end


def _longest_tail_prefix(text: str, target: str) -> int:
    """Length of the longest tail of `text` that is a prefix of `target`."""
    for n in range(min(len(text), len(target)), 0, -1):
        if text.endswith(target[:n]):
            return n
    return 0


def _indent(line: str) -> str:
    return line[: len(line) - len(line.lstrip())]


def _code(line: str) -> str:
    """The line without any whitespace: what two spellings of the same code share."""
    return "".join(line.split())
