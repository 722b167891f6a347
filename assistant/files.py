"""Writing cache and store files so that a reader never sees half of one, and reading them back."""

from __future__ import annotations

import contextlib
import json
import os
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from .errors import UserError, reason


def kind_of(path: Path, what: str) -> str | None:
    """What is at `path`: "file", "folder", "other" (a pipe, a socket, a device) or None where
    nothing is. Any other failure (a folder on the way it may not search) is one line naming
    `what`: Path.exists() and is_file() raise it, and a --grammar, --output or corpus path
    there was a PermissionError traceback."""
    try:
        mode = path.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise UserError(f"cannot read {what} {path}: {reason(exc)}") from None
    return "file" if stat.S_ISREG(mode) else "folder" if stat.S_ISDIR(mode) else "other"


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


def update_json_object(path: Path, change: Callable[[dict], None], *, sort_keys: bool = False) -> None:
    """Read the JSON object at `path`, let `change` edit it, write it back whole: one process at
    a time (a lock file beside it), or two calibrations ending together each wrote the store
    as it read it, and the first one's threshold was lost."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path.parent / f".{path.name}.lock"):
        data = read_json_object(path)
        change(data)
        write_text_atomically(path, json.dumps(data, indent=1, sort_keys=sort_keys))


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    """An exclusive lock held for the block; none where the OS or file system has no `flock`."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(lock_path, "a") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        except OSError:  # a file system without locks (some network mounts)
            pass
        yield
