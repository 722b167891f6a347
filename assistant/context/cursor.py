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


def split_at_cursor(raw: str, line: int, column: int, where: str) -> tuple[str, str, str]:
    """(prefix, suffix, newline) of the text `raw` (named `where` in errors): the text with "\n"
    line ends, as models mostly saw code, and its own line end ("\r\n" in a Windows file),
    which the inserted text must use."""
    newline = "\r\n" if raw.count("\r\n") * 2 > raw.count("\n") else "\n"
    text = raw.replace("\r\n", "\n").replace("\r", "\n")
    lines = text.split("\n")  # a trailing newline gives an empty last line: the cursor may go there
    if not 1 <= line <= len(lines):
        raise UserError(f"--line {line} is outside {where} (1..{len(lines)})")
    current = lines[line - 1]
    if not 1 <= column <= len(current) + 1:
        raise UserError(f"--column {column} is outside line {line} (1..{len(current) + 1})")
    offset = sum(len(s) + 1 for s in lines[: line - 1]) + column - 1
    return text[:offset], text[offset:], newline
