"""llguidance's tokenizer built from the llama.cpp vocabulary (needs llama_cpp, so it lives here).

Building it walks every token through ctypes (~5 s on a 262k vocabulary), so the token bytes are
cached on disk per GGUF (by sha256) and the tokenizer once per loaded model.
"""

from __future__ import annotations

import contextlib
import ctypes
import pickle
from dataclasses import dataclass

import llama_cpp
import numpy as np

from ..files import write_atomically


def _token_bytes(model) -> list[bytes]:
    from ..calibration import file_sha256
    from ..config import cache_dir

    path = cache_dir() / "vocab" / f"{file_sha256(model.path)[:24]}.pkl"  # its folder: made on saving
    try:
        with path.open("rb") as fh:
            tokens = pickle.load(fh)
        if len(tokens) == model.n_vocab:
            return tokens
    except (OSError, pickle.PickleError, EOFError, ValueError, TypeError):
        pass  # missing or unreadable: build it again
    buf = ctypes.create_string_buffer(16 * 1024 + 1)
    tokens = []
    control = llama_cpp.LLAMA_TOKEN_ATTR_CONTROL
    user = llama_cpp.LLAMA_TOKEN_ATTR_USER_DEFINED
    for token in range(model.n_vocab):
        n = llama_cpp.llama_token_to_piece(model.vocab, token, buf, 16 * 1024, 0, True)
        tok = bytes(buf[: max(n, 0)])
        attr = llama_cpp.llama_vocab_get_attr(model.vocab, token)
        # special tokens are marked with a 0xff prefix, as llguidance.llamacpp does
        if attr & control or (attr & user and tok.startswith(b"<") and tok.endswith(b">")):
            tok = b"\xff" + tok
        tokens.append(tok)
    with contextlib.suppress(OSError):  # a read-only or full cache: built again next time
        write_atomically(path, lambda fh: pickle.dump(tokens, fh))
    return tokens


def lltokenizer(model):
    """The llguidance tokenizer of a loaded model (cached on the model)."""
    cached = getattr(model, "_lltokenizer", None)
    if cached is not None:
        return cached
    from llguidance import LLTokenizer

    fptr = ctypes.cast(llama_cpp.llama_cpp._lib.llama_tokenize, ctypes.c_void_p).value
    tok = LLTokenizer.from_llamacpp(
        tokens=_token_bytes(model), vocab_ptr=model.vocab, tokenize_fptr=fptr, eos_token=model.eos, slices=None
    )
    model._lltokenizer = tok
    return tok


@dataclass(frozen=True)
class TrailingBlanks:
    """Per token: whether it is whitespace alone, and the characters and line ends of the
    whitespace it ends with (all of it, for a blank token). Lets a constraint follow the run
    of whitespace at the end of the text from the tokens alone."""

    blank: np.ndarray  # bool
    chars: np.ndarray  # int32
    lines: np.ndarray  # int32


def trailing_blanks(model) -> TrailingBlanks:
    """The model's `TrailingBlanks` (cached on the model; from the cached token bytes)."""
    cached = getattr(model, "_trailing_blanks", None)
    if cached is not None:
        return cached
    tokens = _token_bytes(model)
    blank = np.zeros(len(tokens), bool)
    chars = np.zeros(len(tokens), np.int32)
    lines = np.zeros(len(tokens), np.int32)
    for i, tok in enumerate(tokens):
        if tok.startswith(b"\xff"):  # a special token: no text
            continue
        body = tok.rstrip(b" \t\r\n")
        if len(body) < len(tok):
            blank[i] = not body
            chars[i] = len(tok) - len(body)
            lines[i] = tok.count(b"\n", len(body))
    model._trailing_blanks = TrailingBlanks(blank, chars, lines)
    return model._trailing_blanks
