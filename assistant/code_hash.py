"""Hashes of the project's own source, so that results and learned values name the code that
made them and a later version never reuses them silently."""

from __future__ import annotations

import functools
import hashlib
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
def package_hash(*relative: str) -> str:
    """`source_hash` of the named package modules ('calibration.py', 'decoding/lookahead.py');
    once per process, as adadec asks on every run."""
    return source_hash(*(PACKAGE / name for name in relative))


def whole_package_files() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))
