"""Reference decoders for `assistant bench speed`, measured in the same run as the engine.

- `stock_greedy`: llama-cpp-python's high-level `Llama.generate` at temperature 0, the
  path most projects use.
- `bare_loop`: the least code that can decode greedily: one `llama_decode` per token and a
  numpy argmax over `llama_get_logits_ith`, no abstractions. The engine must stay within a
  few percent of it.

Both report the decode rate between the first and the last generated token, so prompt
processing is excluded the same way for every path.
"""

from __future__ import annotations

import time

import llama_cpp
import numpy as np

from ..errors import UserError
from . import _llama
from .model import Model


def _rate(n: int, t_first: float, t_last: float) -> float:
    return (n - 1) / (t_last - t_first) if n > 1 and t_last > t_first else 0.0


def stock_greedy(model: Model, prompt: list[int], n_tokens: int, *, threads: int, n_ctx: int) -> dict:
    _llama.ensure_backend()
    try:
        str(model.path).encode("utf-8")  # the stock class encodes it so; the engine passes the bytes
    except UnicodeEncodeError:
        raise UserError(
            f"the stock llama_cpp.Llama baseline cannot open {model.path}: its name is not UTF-8; "
            "rename the file or link to it under a UTF-8 name"
        ) from None
    llm = llama_cpp.Llama(
        model_path=str(model.path),
        n_ctx=n_ctx,
        n_batch=512,
        n_threads=threads,
        n_threads_batch=threads,
        n_gpu_layers=model.n_gpu_layers,
        verbose=False,
    )
    try:
        out: list[int] = []
        t_first = t_last = 0.0
        for tok in llm.generate(prompt, temp=0.0, top_k=1, repeat_penalty=1.0, reset=True):
            t_last = time.perf_counter()
            if not out:
                t_first = t_last
            out.append(int(tok))
            if len(out) >= n_tokens:
                break
        return {"tok_s": _rate(len(out), t_first, t_last), "tokens": out}
    finally:
        llm.close()


def bare_loop(model: Model, prompt: list[int], n_tokens: int, *, threads: int, n_ctx: int) -> dict:
    _llama.ensure_backend()
    params = llama_cpp.llama_context_default_params()
    params.n_ctx = n_ctx
    params.n_batch = 512
    params.n_ubatch = 512
    params.n_threads = threads
    params.n_threads_batch = threads
    ctx = llama_cpp.llama_init_from_model(model._ptr, params)
    batch = llama_cpp.llama_batch_init(512, 0, 1)
    n_vocab = model.n_vocab
    try:
        n = len(prompt)
        for i, t in enumerate(prompt):
            batch.token[i] = t
            batch.pos[i] = i
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = 0
            batch.logits[i] = 0
        batch.logits[n - 1] = 1
        batch.n_tokens = n
        if llama_cpp.llama_decode(ctx, batch) != 0:
            raise RuntimeError("prefill failed")
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx, n - 1), shape=(n_vocab,))
        tok = int(np.argmax(logits))
        out = [tok]
        t_first = t_last = time.perf_counter()
        pos = n
        while len(out) < n_tokens:
            batch.token[0] = tok
            batch.pos[0] = pos
            batch.n_seq_id[0] = 1
            batch.seq_id[0][0] = 0
            batch.logits[0] = 1
            batch.n_tokens = 1
            if llama_cpp.llama_decode(ctx, batch) != 0:
                raise RuntimeError("decode failed")
            logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx, 0), shape=(n_vocab,))
            tok = int(np.argmax(logits))
            out.append(tok)
            pos += 1
            t_last = time.perf_counter()
        return {"tok_s": _rate(len(out), t_first, t_last), "tokens": out}
    finally:
        llama_cpp.llama_batch_free(batch)
        llama_cpp.llama_free(ctx)
