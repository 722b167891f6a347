"""Writing cache and store files so that a reader never sees half of one, and reading them back."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO


@contextlib.contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """A temporary path of its own beside `path`, to write whole; it replaces `path` when the
    block ends without an error, and is removed otherwise. Its own, because two processes
    (two editors' completions, a `generate` beside an `eval`) may build the same cache entry
    at once: with one shared temporary name their writes interleave, and the file renamed
    into place is corrupt."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_atomically(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Write `path` whole or not at all: `write` fills a temporary file (see `replacing`)."""
    with replacing(path) as tmp, tmp.open("wb") as fh:
        write(fh)


def write_text_atomically(path: Path, text: str) -> None:
    """`write_atomically` for a text file (UTF-8)."""
    with replacing(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def read_json_object(path: Path) -> dict:
    """A JSON object from a cache or store file; {} when it is missing, unreadable, not JSON
    or not an object (a damaged or hand-edited file costs what it held, not a traceback)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
