"""Syntax checks for infilling: does prefix + middle + suffix parse?

Python is checked with `ast` and tree-sitter; other languages with the tree-sitter grammars of
tree-sitter-language-pack (pinned to 0.13.0, which ships its grammars offline).
`SyntaxGuard` turns the check into a stop rule: a candidate stop point (a line boundary, end of
generation, a stop string) is accepted only where the whole file parses and the middle is
non-empty.
"""

from __future__ import annotations

import ast
import warnings
from functools import lru_cache
from pathlib import Path

EXTENSIONS = {
    ".py": "python",
    ".pyi": "python",
    ".js": "javascript",
    ".mjs": "javascript",
    ".jsx": "javascript",
    ".ts": "typescript",
    ".tsx": "tsx",
    ".rs": "rust",
    ".go": "go",
    ".c": "c",
    ".h": "c",
    ".cc": "cpp",
    ".cpp": "cpp",
    ".hpp": "cpp",
    ".java": "java",
    ".json": "json",
    ".rb": "ruby",
    ".sh": "bash",
    ".cs": "csharp",
    ".kt": "kotlin",
    ".php": "php",
    ".lua": "lua",
    ".sql": "sql",
    ".toml": "toml",
    ".yaml": "yaml",
    ".yml": "yaml",
    ".html": "html",
    ".css": "css",
    ".swift": "swift",
    ".scala": "scala",
}


def language_of(path: str | Path | None) -> str | None:
    return EXTENSIONS.get(Path(path).suffix.lower()) if path else None


@lru_cache(maxsize=32)
def _parser(language: str):
    from tree_sitter_language_pack import get_parser

    try:
        return get_parser(language)
    except (LookupError, ValueError, KeyError):
        return None


def parses(source: str, language: str | None = "python") -> bool:
    """True when `source` is syntactically valid `language`."""
    language = language or "python"
    if language == "python":
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # invalid escape sequences etc. are not syntax errors
                ast.parse(source)
        except (SyntaxError, ValueError, MemoryError, RecursionError):
            return False
    parser = _parser(language)
    if parser is None:
        return language == "python"
    return not parser.parse(source.encode("utf-8")).root_node.has_error


def top_level_span(prefix: str, suffix: str, language: str) -> tuple[int, int, bool] | None:
    """The top-level statements around a cursor, from the file without a middle: (where they
    start in `prefix`, where they end in `suffix`, in characters; whether the rest of the file
    parses). From the statement the cursor is in or follows (the middle may go on with it: a
    continuation line), to the first one starting at the left margin of a later line.
    Top-level statements parse on their own, so a middle need only make these parse where the
    file is broken elsewhere (a half-edited function further down). None without a
    tree-sitter grammar, or where the span is the whole file."""
    parser = _parser(language)
    if parser is None:
        return None
    before, after = prefix.encode("utf-8"), suffix.encode("utf-8")
    cursor, row = len(before), prefix.count("\n")
    children = parser.parse(before + after).root_node.children
    start, end = 0, len(before) + len(after)
    for child in children:
        if child.start_byte < cursor:  # broken or not: the middle may go on with it
            start = child.start_byte
    # an indented piece is the cursor's statement split where the hole broke it, not a new one
    later = [c for c in children if c.start_byte >= cursor and c.start_point[0] > row and c.start_point[1] == 0]
    if later:
        end = later[0].start_byte
    if start == 0 and end == len(before) + len(after):
        return None
    clean = not any(c.has_error for c in children if c.end_byte <= start or c.start_byte >= end)
    return len(before[:start].decode("utf-8")), len(after[: end - cursor].decode("utf-8")), clean


class SyntaxGuard:
    """Stop only where prefix + middle + suffix parses (and the middle is not empty).

    Candidate stops are line boundaries: the middle ends before the newline when the suffix
    itself starts with one, else just after it. `inner` (the suffix guard of FIM-less prompts)
    still trims a middle that runs into the suffix. Nothing is shown before the stop is known.
    """

    def __init__(self, prefix: str, suffix: str, language: str | None, inner=None):
        self.prefix, self.suffix = prefix, suffix
        self.language = language or "python"
        self.inner = inner
        self.keep_newline = not suffix.startswith("\n")
        self._checked = 0  # line boundaries before this index were already tried
        self.failed = False
        self.checks = self.whole_checks = 0
        span = top_level_span(prefix, suffix, self.language)
        # the whole file is checked, as it must parse; where something outside the statements
        # around the cursor was broken before the middle went in, only those statements
        self.around = None if span is None else (prefix[span[0] :], suffix[: span[1]])
        self.check_whole = span is None or span[2]

    def reset(self) -> None:
        self._checked = 0
        self.failed = False

    def valid(self, middle: str) -> bool:
        if not middle.strip():
            return False
        self.checks += 1
        if not self.check_whole:
            return parses(self.around[0] + middle + self.around[1], self.language)
        self.whole_checks += 1
        return parses(self.prefix + middle + self.suffix, self.language)

    def check(self, text: str, final: bool) -> tuple[bool, int]:
        if self.inner is not None:
            stop, end = self.inner.check(text, final)
            if stop and self.valid(text[:end]):
                return True, end
        pos = text.find("\n", self._checked)
        while pos >= 0:
            cut = pos + 1 if self.keep_newline else pos
            self._checked = pos + 1
            if self.valid(text[:cut]):
                return True, cut
            pos = text.find("\n", self._checked)
        if final:
            cut = self._end_cut(text)
            self.failed = cut is None
            return True, cut or 0
        return False, 0  # hold everything back until a valid stop is found

    def would_accept_end(self, text: str) -> bool:
        """Would ending generation now give a valid file? (used to reject an early EOS)"""
        return self._end_cut(text) is not None

    def _end_cut(self, text: str) -> int | None:
        """Where the middle ends if generation ends now: the suffix guard's trim, the same
        without trailing newlines, or all of it; None when none of these parses."""
        end = self.inner.check(text, True)[1] if self.inner is not None else len(text)
        for candidate in (text[:end], text[:end].rstrip("\n"), text):
            if self.valid(candidate):
                return len(candidate)
        return None
