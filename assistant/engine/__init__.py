"""The engine: the only package that imports llama_cpp."""

from .context import Context, Sequence, common_prefix, default_threads
from .counters import Counters
from .gguf_file import GGUFInfo, check_gguf_path, read_info
from .model import FimTokens, Model
from .prices import PriceBook

__all__ = [
    "Context",
    "Counters",
    "FimTokens",
    "GGUFInfo",
    "Model",
    "PriceBook",
    "Sequence",
    "check_gguf_path",
    "common_prefix",
    "default_threads",
    "read_info",
]
