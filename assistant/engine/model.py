"""A loaded GGUF model: weights in llama.cpp plus its vocabulary and metadata."""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import llama_cpp
import numpy as np

from ..errors import ModelError
from ..signals import interrupts_deferred
from . import _llama
from .embeddings import EmbeddingTable
from .gguf_file import check_gguf_path


@dataclass(frozen=True)
class FimTokens:
    """Fill-in-the-middle special tokens found in the vocabulary (-1 where absent)."""

    prefix: int
    suffix: int
    middle: int
    pad: int = -1
    repo: int = -1
    file_sep: int = -1


class Model:
    """Load a GGUF with llama.cpp and expose what strategies need to know about it."""

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        n_gpu_layers: int = 0,
        use_mmap: bool = True,
        rpc_servers: Iterable[str] = (),
        progress: Callable[[float], None] | None = None,
    ):
        self.path: Path = check_gguf_path(path)
        _llama.ensure_backend()
        servers = [s for s in rpc_servers if s]
        if servers:
            _llama.add_rpc_servers(servers)
        params = llama_cpp.llama_model_default_params()
        params.n_gpu_layers = int(n_gpu_layers)
        if hasattr(params, "use_mmap"):
            params.use_mmap = use_mmap
        # a CPU-only build ignores the request: everything is in RAM (the KV check must know)
        self.n_gpu_layers = int(n_gpu_layers) if _llama.gpu_offload_supported() else 0
        self.rpc_servers = tuple(servers)
        with interrupts_deferred() as interrupted:

            def _progress(fraction, _data):  # False aborts the load: Ctrl-C need not wait for it
                if progress is not None:
                    progress(float(fraction))
                return not interrupted()

            self._progress_cb = llama_cpp.llama_progress_callback(_progress)
            params.progress_callback = self._progress_cb
            self._ptr = llama_cpp.llama_model_load_from_file(os.fsencode(self.path), params)  # bytes as on disk
        if not self._ptr:
            raise ModelError(
                f"llama.cpp could not load {self.path} (unsupported architecture, or a corrupt "
                "or truncated file; set ASSISTANT_LLAMA_LOG=1 for details)"
            )
        self.vocab = llama_cpp.llama_model_get_vocab(self._ptr)
        self.n_vocab = int(llama_cpp.llama_vocab_n_tokens(self.vocab))
        self.n_embd = int(llama_cpp.llama_model_n_embd(self._ptr))
        self.n_embd_inp = int(llama_cpp.llama_model_n_embd_inp(self._ptr))
        self.n_layer = int(llama_cpp.llama_model_n_layer(self._ptr))
        self.n_head_kv = int(llama_cpp.llama_model_n_head_kv(self._ptr))
        self.n_head = int(llama_cpp.llama_model_n_head(self._ptr))
        self.n_ctx_train = int(llama_cpp.llama_model_n_ctx_train(self._ptr))
        self.size_bytes = int(llama_cpp.llama_model_size(self._ptr))
        self.n_params = int(llama_cpp.llama_model_n_params(self._ptr))
        self.architecture = self.meta("general.architecture") or "unknown"
        self.name = self.meta("general.name") or self.path.stem
        self.bos = int(llama_cpp.llama_vocab_bos(self.vocab))
        self.eos = int(llama_cpp.llama_vocab_eos(self.vocab))
        self.add_bos = bool(llama_cpp.llama_vocab_get_add_bos(self.vocab))
        self.is_recurrent = bool(llama_cpp.llama_model_is_recurrent(self._ptr)) or bool(
            llama_cpp.llama_model_is_hybrid(self._ptr)
        )
        self._pieces: dict[int, bytes] = {}
        self._piece_buf = ctypes.create_string_buffer(256)
        self._is_eog = llama_cpp.llama_vocab_is_eog
        self._embeddings: EmbeddingTable | None = None

    # -- metadata ---------------------------------------------------------------------------
    @property
    def kv_bytes_per_token(self) -> int:
        """An upper bound on the KV cache a context position takes (f16 keys and values in every
        layer, sliding-window layers counted in full); 0 for recurrent models, whose state does
        not grow with the context."""
        if self.is_recurrent:
            return 0
        key_length = self.meta(f"{self.architecture}.attention.key_length")
        head_dim = int(key_length) if key_length else self.n_embd // max(self.n_head, 1)
        return self.n_layer * 2 * self.n_head_kv * head_dim * 2

    def meta(self, key: str) -> str | None:
        buf = ctypes.create_string_buffer(1024)
        n = llama_cpp.llama_model_meta_val_str(self._ptr, key.encode(), buf, len(buf))
        if n < 0:
            return None
        if n >= len(buf):
            buf = ctypes.create_string_buffer(n + 1)
            llama_cpp.llama_model_meta_val_str(self._ptr, key.encode(), buf, len(buf))
        return buf.value.decode("utf-8", "replace")

    @cached_property
    def chat_template(self) -> str | None:
        tmpl = llama_cpp.llama_model_chat_template(self._ptr, None)
        return tmpl.decode("utf-8", "replace") if tmpl else None

    @cached_property
    def fim(self) -> FimTokens | None:
        """FIM tokens as llama.cpp detected them from the vocabulary, or None."""
        v = self.vocab
        pre, suf, mid = (
            int(llama_cpp.llama_vocab_fim_pre(v)),
            int(llama_cpp.llama_vocab_fim_suf(v)),
            int(llama_cpp.llama_vocab_fim_mid(v)),
        )
        if min(pre, suf, mid) < 0:
            return None
        return FimTokens(
            pre,
            suf,
            mid,
            int(llama_cpp.llama_vocab_fim_pad(v)),
            int(llama_cpp.llama_vocab_fim_rep(v)),
            int(llama_cpp.llama_vocab_fim_sep(v)),
        )

    # -- vocabulary -------------------------------------------------------------------------
    def tokenize(self, text: str, *, add_special: bool = False, parse_special: bool = False) -> list[int]:
        """Tokenize text. `add_special` adds BOS where the model wants it."""
        data = text.encode("utf-8")
        n_max = len(data) + 8
        buf = (llama_cpp.llama_token * n_max)()
        n = llama_cpp.llama_tokenize(self.vocab, data, len(data), buf, n_max, add_special, parse_special)
        if n < 0:
            n_max = -n
            buf = (llama_cpp.llama_token * n_max)()
            n = llama_cpp.llama_tokenize(self.vocab, data, len(data), buf, n_max, add_special, parse_special)
        if n < 0:
            raise ModelError("tokenization failed")
        return list(buf[:n])

    def bos_tokens(self) -> list[int]:
        return [self.bos] if self.add_bos and self.bos >= 0 else []

    def piece(self, token: int) -> bytes:
        """The bytes a token renders to (control tokens render empty). Cached."""
        piece = self._pieces.get(token)
        if piece is None:
            buf = self._piece_buf
            n = llama_cpp.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, False)
            if n < 0:
                buf = ctypes.create_string_buffer(-n)
                n = llama_cpp.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, False)
            piece = buf.raw[: max(n, 0)]
            self._pieces[token] = piece
        return piece

    def token_text(self, token: int) -> str:
        """The token's vocabulary string (special tokens included), for display."""
        raw = llama_cpp.llama_vocab_get_text(self.vocab, token)
        return raw.decode("utf-8", "replace") if raw else ""

    def detokenize(self, tokens: Iterable[int]) -> str:
        return b"".join(self.piece(t) for t in tokens).decode("utf-8", "replace")

    def is_eog(self, token: int) -> bool:
        """End of generation (EOS, EOT, <|im_end|>, ...)."""
        return bool(self._is_eog(self.vocab, token))

    def special_token(self, text: str) -> int | None:
        """The id of `text` if it is one token when special tokens are parsed."""
        ids = self.tokenize(text, parse_special=True)
        return ids[0] if len(ids) == 1 else None

    # -- embeddings -------------------------------------------------------------------------
    def token_embeddings(self, tokens) -> np.ndarray:
        """Input embeddings of `tokens` (float32, n x n_embd_inp) exactly as the model's first
        layer sees them, ready for `Context.decode_embeddings`.

        Rows are dequantized on demand from the GGUF. Gemma-family graphs scale token
        embeddings by sqrt(n_embd) only on the token-input path, so that scale is applied here
        (measured: logits then match token input exactly)."""
        if self._embeddings is None:
            self._embeddings = EmbeddingTable(self.path)
        rows = self._embeddings.rows(tokens)
        return rows * self.input_scale if self.input_scale != 1.0 else rows

    @cached_property
    def input_scale(self) -> float:
        return float(np.sqrt(self.n_embd)) if self.architecture.startswith("gemma") else 1.0

    def close(self) -> None:
        if getattr(self, "_ptr", None):
            llama_cpp.llama_model_free(self._ptr)
            self._ptr = None

    def __del__(self):  # pragma: no cover - interpreter shutdown order varies
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass

    def __repr__(self) -> str:
        return f"Model({self.name!r}, arch={self.architecture}, vocab={self.n_vocab})"
