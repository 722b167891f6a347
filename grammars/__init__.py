"""Grammar files shipped as package data (`assistant.grammars`)."""

from importlib.resources import files
from pathlib import Path


def path(name: str) -> Path:
    """Filesystem path of a shipped grammar, e.g. path("json.lark")."""
    return Path(str(files(__name__).joinpath(name)))


def available() -> list[str]:
    return sorted(p.name for p in Path(str(files(__name__))).iterdir() if p.suffix in (".lark", ".json"))
