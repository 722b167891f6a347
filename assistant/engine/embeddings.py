"""The token-embedding table read straight from the GGUF (llama.cpp has no API for it).

Rows are dequantized on demand with `gguf.quants` and cached: dequantizing a whole table
costs seconds on large vocabularies, and a step needs only a few rows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ModelError
from .gguf_file import model_files, read_header


class EmbeddingTable:
    def __init__(self, path: Path):
        from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

        for part in model_files(path):  # a split model's table may be in any part
            info = read_header(part).tensors.get("token_embd.weight")
            if info is not None:
                path = part
                break
        else:
            raise ModelError(f"{path} has no token_embd.weight tensor")
        self.width, self.n_rows = info.shape[0], info.shape[1]
        self.qtype = GGMLQuantizationType(info.ggml_type)
        block, type_size = GGML_QUANT_SIZES[self.qtype]
        row_bytes = self.width // block * type_size
        self._raw = np.memmap(path, dtype=np.uint8, mode="r", offset=info.offset, shape=(self.n_rows, row_bytes))
        self._cache: dict[int, np.ndarray] = {}

    def rows(self, tokens) -> np.ndarray:
        from gguf.quants import dequantize

        ids = [int(t) for t in np.atleast_1d(np.asarray(tokens))]
        missing = sorted({i for i in ids if i not in self._cache})
        if missing:
            raw = np.asarray(self._raw[missing])
            deq = dequantize(raw, self.qtype).astype(np.float32, copy=False).reshape(len(missing), self.width)
            for i, row in zip(missing, deq, strict=True):
                self._cache[i] = row
        if not ids:
            return np.zeros((0, self.width), np.float32)
        return np.stack([self._cache[i] for i in ids])
