"""Split a file at an editor cursor (1-based line and column, cursor before the column)."""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError, reason


def read_source(path: Path) -> str:
    """A source file's text as saved: line ends kept (`split_at_cursor` needs them), a
    byte-order mark dropped (editors count no column for it, and the model never sees it)."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            return f.read()
    except FileNotFoundError:
        raise UserError(f"file not found: {path}") from None
    except IsADirectoryError:
        raise UserError(f"not a file: {path}") from None
    except UnicodeDecodeError:
        raise UserError(f"not a UTF-8 text file: {path}") from None
    except OSError as exc:
        raise UserError(f"cannot read {path}: {reason(exc)}") from None


# what a column counts, by how editors count it: Emacs and Helix characters, Vim and Sublime
# UTF-8 bytes, VS Code and LSP UTF-16 code units (LSP's positionEncoding names work too:
# utf-8, utf-16, utf-32)
COLUMN_UNITS = {
    "chars": None,
    "bytes": ("utf-8", 1),
    "utf-16": ("utf-16-le", 2),
    "utf-8": ("utf-8", 1),
    "utf-32": None,
}


def split_at_cursor(raw: str, line: int, column: int, where: str, unit: str = "chars") -> tuple[str, str, str]:
    """(prefix, suffix, newline) of the text `raw` (named `where` in errors): the text with "\n"
    line ends, as models mostly saw code, and its own line end ("\r\n" in a Windows file, "\r"
    in a classic Mac OS one), which the inserted text must use. `unit`: what `column` counts (COLUMN_UNITS)."""
    crlf = raw.count("\r\n")
    counts = {"\n": raw.count("\n") - crlf, "\r\n": crlf, "\r": raw.count("\r") - crlf}  # "\r": classic Mac OS
    newline = max(counts, key=counts.get)  # the most common; "\n" where none is
    text = raw.replace("\r\n", "\n").replace("\r", "\n")
    lines = text.split("\n")  # a trailing newline gives an empty last line: the cursor may go there
    if not 1 <= line <= len(lines):
        raise UserError(f"--line {line} is outside {where} (1..{len(lines)})")
    offset = sum(len(s) + 1 for s in lines[: line - 1]) + _characters_before(lines[line - 1], column, line, unit)
    return text[:offset], text[offset:], newline


def _characters_before(current: str, column: int, line: int, unit: str) -> int:
    """How many characters of the line `current` come before the 1-based `column` in `unit`:
    a Vim column counted in bytes put the cursor past every `é` before it."""
    if unit not in COLUMN_UNITS:
        raise UserError(f"--column-unit must be one of {', '.join(COLUMN_UNITS)}, got {unit!r}")
    encoding, width = COLUMN_UNITS[unit] or (None, 1)
    coded = current.encode(encoding, "surrogatepass") if encoding else current
    size = len(coded) // width
    if not 1 <= column <= size + 1:
        per = "" if unit == "chars" else f" in {unit}"
        raise UserError(f"--column {column} is outside line {line} (1..{size + 1}{per})")
    if encoding is None:
        return column - 1
    try:
        return len(coded[: (column - 1) * width].decode(encoding))
    except UnicodeDecodeError:
        raise UserError(f"--column {column} ({unit}) falls inside a character of line {line}") from None
