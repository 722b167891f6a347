"""Hashes of the project's own source, so that results and learned values name the code that
made them and a later version never reuses them silently."""

from __future__ import annotations

import functools
import hashlib
import inspect
from pathlib import Path

from . import __version__

PACKAGE = Path(__file__).resolve().parent


def source_hash(*files: Path) -> str:
    """sha256 (12 hex digits) of the package version and each file's name and bytes; a file
    inside the package is named by its path there, any other by its base name, so the hash
    does not depend on where the package is installed."""
    h = hashlib.sha256(__version__.encode())
    for path in files:
        path = Path(path).resolve()
        name = path.relative_to(PACKAGE).as_posix() if path.is_relative_to(PACKAGE) else path.name
        h.update(name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:12]


@functools.cache
def code_hash(*objects) -> str:
    """sha256 (12 hex digits) of the package version and the source of each function or class,
    named by module and qualified name: what a learned value depends on, and nothing else, so
    an edit elsewhere in the same file leaves it valid. Once per process: adadec asks on
    every run."""
    h = hashlib.sha256(__version__.encode())
    for obj in objects:
        h.update(f"{obj.__module__}.{obj.__qualname__}".encode())
        h.update(inspect.getsource(obj).encode())
    return h.hexdigest()[:12]


def whole_package_files() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))
