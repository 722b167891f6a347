"""Logits kernels with two interchangeable backends.

`numpy_ops` is always available and is what "auto" picks; `torch_ops` (extra `[torch]`) is
used only when asked for by name. On an H100 machine, torch 2.11+cu130 and a CUDA build of
llama.cpp 0.3.36 in one process segfaulted at start-up whichever loaded first, so a GPU
model never pulls torch in by itself. Both modules expose the same functions, so code
written against `backend(...)` works with either.
"""

from __future__ import annotations

import importlib.util
from types import ModuleType

from ..errors import UserError
from . import numpy_ops


def torch_available() -> bool:
    return importlib.util.find_spec("torch") is not None


def backend(name: str = "auto") -> ModuleType:
    """Pick a kernel module: "numpy" or "auto" (numpy), or "torch"."""
    if name in ("auto", "numpy"):
        return numpy_ops
    if name != "torch":
        raise UserError(f"ops backend must be 'auto', 'numpy' or 'torch', got {name!r}")
    if not torch_available():
        raise UserError("the torch backend needs torch: pip install 'llama-assistant[torch]'")
    from . import torch_ops

    return torch_ops


__all__ = ["backend", "numpy_ops", "torch_available"]
