"""The one place that imports llama_cpp: process-wide set-up and raw C entry points.

- The backend is initialised once and llama.cpp's logging is silenced unless
  ASSISTANT_LLAMA_LOG=1 (the callback object is kept alive here: ctypes would free a
  temporary one and crash the process).
- `AbortFlag` gives llama.cpp an abort callback that never enters Python: llama.cpp calls it
  once per graph node, and a Python callback there would cost ~1 ms per token.
- `assistant.signals.interrupts_deferred` keeps a Ctrl-C or SIGTERM that lands inside
  a Python callback (the log callback, a load's progress callback) from being lost.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

import llama_cpp

lib = llama_cpp.llama_cpp._lib  # the loaded shared library


def _numpy_loaded_first() -> bool:
    """Whether numpy was imported before llama.cpp's library (sys.modules keeps import order)."""
    order = list(sys.modules)
    return "numpy" in order and order.index("numpy") < order.index("llama_cpp.llama_cpp")


if _numpy_loaded_first() and llama_cpp.llama_supports_gpu_offload():
    import warnings

    warnings.warn(
        "numpy was imported before llama.cpp: with a GPU build this segfaulted in every model load on "
        "an H200 image; import assistant.engine before numpy (the `assistant` command does)",
        RuntimeWarning,
        stacklevel=2,
    )

_state: dict[str, object] = {}


def gpu_offload_supported() -> bool:
    """Whether this build of llama.cpp can put layers on a GPU (CUDA, Metal, Vulkan, ...)."""
    return bool(llama_cpp.llama_supports_gpu_offload())


def build_info() -> str:
    """What a bug report needs about the engine: the binding's version, whether it can offload
    to a GPU, and the CPU features and backends llama.cpp was built with."""
    features = llama_cpp.llama_print_system_info().decode("utf-8", "replace").strip(" |")
    gpu = "yes" if gpu_offload_supported() else "no"
    return f"llama-cpp-python {llama_cpp.__version__}, GPU offload: {gpu}; {features}"


def _log_callback(level, text, user_data):  # pragma: no cover - only when logging is on
    sys.stderr.write(text.decode("utf-8", "replace"))


def ensure_backend() -> None:
    if _state.get("ready"):
        return
    if os.environ.get("ASSISTANT_LLAMA_LOG") == "1":
        cb = llama_cpp.llama_log_callback(_log_callback)
    else:
        cb = llama_cpp.llama_log_callback(lambda level, text, data: None)
    _state["log_cb"] = cb
    llama_cpp.llama_log_set(cb, ctypes.c_void_p(0))
    llama_cpp.llama_backend_init()
    _one_blas_thread()
    _state["ready"] = True


def _one_blas_thread() -> None:
    """numpy's OpenBLAS keeps its worker threads spinning after each call, on the very cores
    llama.cpp's threads decode on: one ddot over a few thousand floats per step made a
    pause-free adadec run ~25% slower than greedy on 2 cores (its decodes, not the ddot). The
    host's vectors are small, so one BLAS thread serves."""
    from threadpoolctl import threadpool_limits

    _state["blas_limits"] = threadpool_limits(limits=1, user_api="blas")


def raw(name: str, restype, argtypes):
    """A private function pointer with our own signature (e.g. c_void_p results that skip
    ctypes' pointer-object construction on hot paths) without touching llama_cpp's bindings."""
    fn = lib[name]
    fn.restype = restype
    fn.argtypes = argtypes
    return fn


get_logits_ith = raw("llama_get_logits_ith", ctypes.c_void_p, [ctypes.c_void_p, ctypes.c_int32])
get_embeddings_ith = raw("llama_get_embeddings_ith", ctypes.c_void_p, [ctypes.c_void_p, ctypes.c_int32])


class AbortFlag:
    """A one-byte flag that llama.cpp polls in C.

    The callback is libc's `strlen` applied to a NUL-terminated buffer: length 0 (false)
    normally, 1 (true) once `set()` writes a byte. llama.cpp's `bool (*)(void *)` reads the
    low byte of the return register, which is exactly that length. If libc cannot be found,
    a Python callback is used instead (slower, same behaviour).
    """

    def __init__(self) -> None:
        self._buf = ctypes.create_string_buffer(2)
        self.data = ctypes.cast(self._buf, ctypes.c_void_p)
        libc_name = ctypes.util.find_library("c")
        self.callback = None
        if libc_name and sys.platform.startswith("linux"):
            try:
                libc = ctypes.CDLL(libc_name)
                addr = ctypes.cast(libc.strlen, ctypes.c_void_p).value
                self.callback = llama_cpp.ggml_abort_callback(addr)
            except (OSError, AttributeError):
                self.callback = None
        if self.callback is None:
            self.callback = llama_cpp.ggml_abort_callback(lambda data: self._buf.raw[0] != 0)

    def set(self) -> None:
        self._buf[0] = b"x"

    def clear(self) -> None:
        self._buf[0] = b"\0"

    @property
    def is_set(self) -> bool:
        return self._buf.raw[0] != 0


def supports_rpc() -> bool:
    return bool(llama_cpp.llama_supports_rpc())


def add_rpc_servers(servers: list[str]) -> None:
    """Register llama.cpp RPC workers ("host:port") as devices; layers are then spread
    over them at model load. Needs a build with -DGGML_RPC=on."""
    from ..errors import ModelError

    if not supports_rpc():
        raise ModelError(
            "this llama-cpp-python build has no RPC support; reinstall with "
            'CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_RPC=on"'
        )
    ggml = llama_cpp._ggml.libggml
    ggml.ggml_backend_reg_by_name.restype = ctypes.c_void_p
    ggml.ggml_backend_reg_by_name.argtypes = [ctypes.c_char_p]
    ggml.ggml_backend_reg_get_proc_address.restype = ctypes.c_void_p
    ggml.ggml_backend_reg_get_proc_address.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    ggml.ggml_backend_register.argtypes = [ctypes.c_void_p]
    reg = ggml.ggml_backend_reg_by_name(b"RPC")
    addr = reg and ggml.ggml_backend_reg_get_proc_address(reg, b"ggml_backend_rpc_add_server")
    if not addr:
        raise ModelError("the RPC backend is not available in this llama.cpp build")
    add_server = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_char_p)(addr)
    for endpoint in servers:
        if endpoint in _state.setdefault("rpc", set()):
            continue
        server_reg = add_server(endpoint.encode())
        if not server_reg:
            raise ModelError(f"could not connect to RPC server {endpoint}")
        ggml.ggml_backend_register(server_reg)
        _state["rpc"].add(endpoint)
