"""The engine: the only package that imports llama_cpp."""

# llama.cpp's shared libraries load before numpy: with numpy imported first, a CUDA build of
# llama-cpp-python 0.3.36 segfaulted in every model load on an H200 image (numpy 2.5.2,
# CUDA 13), even with no layer offloaded; loaded first, it ran every strategy there.
from . import _llama  # noqa: F401  (isort keeps it first)
from ._llama import build_info, gpu_offload_supported
from .context import Context, Sequence, check_kv_fits, common_prefix, default_threads, physical_memory, usable_cpus
from .counters import Counters
from .gguf_file import GGUFInfo, check_gguf_path, later_part, model_files, read_info
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
    "build_info",
    "check_gguf_path",
    "check_kv_fits",
    "common_prefix",
    "default_threads",
    "gpu_offload_supported",
    "later_part",
    "model_files",
    "physical_memory",
    "read_info",
    "usable_cpus",
]
