"""Constraints: Lark grammars, regular expressions and JSON schemas, all through llguidance.

A constraint gives a per-step token mask that every strategy applies through the shared step
helper (`Run.constrain`), and forks with the sequences of search strategies. Errors in a
grammar, regex or schema become one clear `ConstraintError` that points at the problem.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from ..errors import UserError, reason
from ..files import kind_of

KINDS = ("lark", "regex", "json-schema")


class ConstraintError(UserError):
    """An invalid grammar, regex or JSON schema."""


# The most whitespace at the end of the text before a token of whitespace alone is refused:
# a grammar whose whitespace may go anywhere, in any amount (Lark's `%ignore WS`), let a model
# that did not know how to go on pad to the token limit (`Select\n\nI have \n\nFROM \n\n \n\n…`
# under the SQL grammar). Three line ends hold two blank lines (PEP 8's most); 64 characters, a
# deep indentation. Where the grammar allows nothing else, its own mask stands.
MAX_BLANK_LINES = 3
MAX_BLANK_CHARS = 64


class GrammarConstraint:
    """An llguidance matcher behind the `Constraint` protocol."""

    def __init__(self, matcher, n_vocab: int, description: str = "", blanks=None):
        import llguidance.numpy as lln

        self.matcher = matcher
        self.n_vocab = n_vocab
        self.description = description
        self.blanks = blanks  # engine.guidance.TrailingBlanks, or None: whitespace unbounded
        self._run = (0, 0)  # characters and line ends of the whitespace the text ends with
        self._bitmask = lln.allocate_token_bitmask(1, n_vocab)
        self._fill = lln.fill_next_token_bitmask
        self._mask: np.ndarray | None = None  # this state's, until a token moves it on

    def allowed(self) -> np.ndarray:
        """The mask of this state, computed once for it (read-only): `build` checks it, and a
        strategy may ask more than once a step (superposed: for the shared candidates, then
        per draft)."""
        if self._mask is None:
            self._fill(self.matcher, self._bitmask, 0)
            mask = np.unpackbits(self._bitmask[0].view(np.uint8), bitorder="little")[: self.n_vocab].view(bool)
            chars, lines = self._run
            if self.blanks is not None and (chars >= MAX_BLANK_CHARS or lines >= MAX_BLANK_LINES):
                bounded = mask & ~self.blanks.blank[: self.n_vocab]
                if bounded.any():
                    mask = bounded
            mask.flags.writeable = False
            self._mask = mask
        return self._mask

    def advance(self, token: int) -> None:
        self._mask = None
        if not self.matcher.consume_token(int(token)):
            raise ConstraintError(f"{self.description} failed at token {token}: {matcher_error(self.matcher)}")
        if self.blanks is not None and 0 <= token < len(self.blanks.blank):
            chars, lines = int(self.blanks.chars[token]), int(self.blanks.lines[token])
            if self.blanks.blank[token]:
                chars, lines = chars + self._run[0], lines + self._run[1]
            self._run = (chars, lines)

    def fork(self) -> GrammarConstraint:
        child = GrammarConstraint(self.matcher.deep_copy(), self.n_vocab, self.description, self.blanks)
        child._run = self._run
        return child

    def complete(self) -> bool:
        return self.matcher.is_accepting()

    def dead_end(self) -> bool:
        """No token can follow (the grammar has a rule no text matches): llguidance then allows
        only the end, and the text would end as if it matched."""
        return self.matcher.is_error()


def _regex_error(pattern: str, error: str) -> str:
    """The regex parser's complaint in one line, where it points: llguidance wraps the pattern
    in a grammar of its own and shows both (`at 1(8): invalid regex "(" (in regex): regex parse
    error:`, the pattern, carets, the complaint, then its grammar line `start: /(/`)."""
    lines = error.strip().splitlines()
    at = next((i for i, ln in enumerate(lines) if ln.startswith("error: ")), None)
    if at is None:  # llguidance's own (`lookarounds not supported yet; WordUnicode in regex /a\b/`)
        return re.sub(r'^at \d+\(\d+\): invalid regex ".*?" \(in regex\): ', "", lines[0])
    complaint = lines[at][len("error: ") :]
    caret = lines[at - 1].find("^") if at > 0 else -1  # the carets under the pattern, indented 4
    if "\n" in pattern:  # several lines: no one column to name
        return f"{complaint} in {pattern!r}"
    return f'{complaint} at column {caret - 3} of "{pattern}"' if caret >= 4 else f'{complaint} in "{pattern}"'


def matcher_error(matcher) -> str:
    """llguidance's error in one line: after it come its parser's state and the whole grammar
    (40 lines for `root ::= "a" root`, after a warning of its own on stderr)."""
    error = (matcher.get_error().strip() or "unknown error").splitlines()[0]
    if "Too many items" in error:  # its parser gave up on the text the grammar forces
        error += ' (a rule that only repeats itself, as `root ::= "a" root`, forces text without end)'
    return error


_GBNF_RULE = re.compile(r"(?m)^\s*[A-Za-z][\w-]*\s*::=")


def _is_gbnf(source: str) -> bool:
    """llama.cpp's grammar format (`root ::= ...`): what its users already have (json.gbnf,
    c.gbnf, ...). Lark rules are written `name: ...`."""
    return _GBNF_RULE.search(source) is not None


_LARK_RULE = re.compile(r"(?m)^\s*[?!]?[A-Za-z_]\w*(\.\d+)?\s*:[^:]")


def _is_json_object(source: str) -> bool:
    try:
        return isinstance(json.loads(source), dict)
    except ValueError:
        return False


def _lark_from_gbnf(source: str) -> str:
    from llguidance.gbnf_to_lark import gbnf_to_lark

    try:
        return gbnf_to_lark(source)
    except Exception as exc:  # the converter's own error types, and plain ones for odd input
        raise ConstraintError(f"invalid GBNF grammar: {exc}") from None


def grammar_text(kind: str, source: str) -> str:
    """An llguidance grammar from a Lark grammar, a regex, or a JSON schema (text)."""
    import llguidance

    if kind == "lark":
        if _is_json_object(source):  # llguidance read it as its own grammar format: "missing field `grammars`"
            raise ConstraintError("it is JSON, not Lark or GBNF; a JSON schema goes to --json-schema")
        return llguidance.LLMatcher.grammar_from_lark(_lark_from_gbnf(source) if _is_gbnf(source) else source)
    if kind == "regex":
        if (len(source) - len(source.rstrip("\\"))) % 2:  # llguidance drops it: `ab\` matched "ab"
            raise ConstraintError(f'"{source}" ends in a backslash that escapes nothing (\\\\ matches one)')
        return llguidance.LLMatcher.grammar_from_regex(source)
    if kind == "json-schema":
        try:
            json.loads(source)
        except ValueError as exc:
            hint = "; a Lark or GBNF grammar goes to --grammar" if _LARK_RULE.search(source) or _is_gbnf(source) else ""
            raise ConstraintError(f"not valid JSON ({exc}){hint}") from None
        return llguidance.LLMatcher.grammar_from_json_schema(source)
    raise ConstraintError(f"unknown constraint kind {kind!r} (use one of {', '.join(KINDS)})")


_WHAT = {"lark": "grammar", "json-schema": "JSON schema", "regex": "regex"}  # a file's kind, in words


def build(kind: str, source: str, model, *, origin: str = "") -> GrammarConstraint:
    """Compile and validate; errors name the problem (and the file, when given)."""
    import llguidance

    from ..engine.guidance import lltokenizer, trailing_blanks

    what = _WHAT.get(kind, kind) + (f" in {origin}" if origin else "")  # "grammar in sql.lark"
    tokenizer = lltokenizer(model)
    try:
        grammar = grammar_text(kind, source)
    except ConstraintError as exc:  # said of the file it came from
        raise ConstraintError(f"{what}: {exc}") from None
    error = llguidance.LLMatcher.validate_grammar(grammar, tokenizer)
    if error:
        error = _regex_error(source, error) if kind == "regex" else error.strip()
        raise ConstraintError(f"invalid {what}: {error}")
    matcher = llguidance.LLMatcher(tokenizer, grammar, log_level=0)  # its errors are ours to say, once
    if matcher.is_error():
        raise ConstraintError(f"invalid {what}: {matcher_error(matcher)}")
    constraint = GrammarConstraint(matcher, model.n_vocab, what, trailing_blanks(model))
    constraint.allowed()  # the first mask: a grammar that matches no text is dead before it starts
    if constraint.dead_end():
        raise ConstraintError(f"the {what} matches no text at all")
    probe = matcher.deep_copy()  # the text it forces from the start, where the parser may give up
    forced = probe.compute_ff_tokens()
    if forced and not probe.consume_tokens(forced):
        raise ConstraintError(f"invalid {what}: {matcher_error(probe)}")
    return constraint


def _suffixes(kind: str) -> tuple[str, ...]:
    return (".lark",) if kind == "lark" else (".schema.json", ".json")


def _shipped_names(kind: str) -> list[str]:
    from .. import grammars

    return [n for n in grammars.available() if n.endswith(_suffixes(kind))]


def shipped(kind: str, name: str) -> Path | None:
    """A grammar or schema shipped in `assistant.grammars` by its name, with or without its
    suffix (`json`, `sql_select.lark`, `tool_call`): installed from PyPI there is no
    `grammars/` folder to point a path at."""
    from .. import grammars

    known = _shipped_names(kind)
    for candidate in (name, *(name + s for s in _suffixes(kind))):
        if candidate in known:
            return grammars.path(candidate)
    return None


def read_source(kind: str, path: str | Path) -> str:
    """The text of a grammar or schema file (a path, or the name of a shipped one), with a
    clear error when it cannot be read."""
    p = Path(path).expanduser()
    if kind_of(p, f"{_WHAT[kind]} file") is None:
        p = shipped(kind, str(path)) or p
    try:
        return p.read_text(encoding="utf-8-sig")  # a BOM (Windows editors) is no grammar
    except FileNotFoundError:
        names = ", ".join(_shipped_names(kind))
        other = "json-schema" if kind == "lark" else "lark"
        if shipped(other, str(path)):  # `--grammar tool_call`: a shipped file of the other kind
            flag = "--json-schema" if other == "json-schema" else "--grammar"
            raise ConstraintError(f"{path} is a shipped {_WHAT[other]}: give it to {flag}") from None
        raise ConstraintError(f"{_WHAT[kind]} file not found: {p} (shipped, usable by name: {names})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConstraintError(f"cannot read {_WHAT[kind]} file {p}: {reason(exc)}") from None
