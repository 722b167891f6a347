"""Logits kernels with two interchangeable backends.

`numpy_ops` is always available; `torch_ops` is used when torch is installed (extra
`[torch]`) and the model runs on a GPU. Both modules expose the same functions, so code
written against `backend(...)` works with either.
"""

from __future__ import annotations

import importlib.util
from types import ModuleType

from . import numpy_ops


def torch_available() -> bool:
    return importlib.util.find_spec("torch") is not None


def backend(name: str = "auto", *, on_gpu: bool = False) -> ModuleType:
    """Pick a kernel module: "numpy", "torch", or "auto" (torch only for GPU models)."""
    if name == "numpy" or (name == "auto" and not (on_gpu and torch_available())):
        return numpy_ops
    if not torch_available():
        raise ImportError("the torch backend needs torch: pip install 'llama-assistant[torch]'")
    from . import torch_ops

    return torch_ops


__all__ = ["backend", "numpy_ops", "torch_available"]
