"""Local, plugin-based code-generation assistant running GGUF models through llama.cpp.

Third-party plugins import `hookimpl` from here and expose modules in the `assistant`
entry-point group (see `assistant.hookspecs`).
"""

import pluggy

__version__ = "0.1.0"

hookimpl = pluggy.HookimplMarker("assistant")

__all__ = ["__version__", "hookimpl"]
