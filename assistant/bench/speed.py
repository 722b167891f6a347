"""`assistant bench speed`: the engine's greedy loop against stock llama-cpp-python and a bare
low-level loop, plus prefill throughput and batched decoding of several sequences.

Rounds are interleaved (stock, engine, bare, stock, ...) and each path keeps its best round,
so a noisy neighbour slows all paths alike instead of one.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ..decoding import Request
from ..engine import baselines
from ..service import Service
from .room import check_room

BENCH_PROMPT = '''import os
import sys


def read_config(path):
    """Read a key=value config file into a dict."""
    config = {}
    with open(path) as fh:
        for line in fh:
'''


def run_speed(
    service: Service,
    *,
    n_tokens: int = 128,
    rounds: int = 3,
    prefill_tokens: int = 512,
    batch_sizes: tuple[int, ...] = (1, 2, 4),
    batch_steps: int = 32,
    progress: Callable[[str], None] | None = None,
) -> dict:
    note = progress or (lambda _msg: None)
    model = service.model()
    ctx = service.context()
    threads = ctx.threads
    prompt = model.bos_tokens() + model.tokenize(BENCH_PROMPT)
    # beyond prompt and output: the batched rows, beside a second copy of the prompt
    check_room(service, n_tokens, [BENCH_PROMPT], margin=max(batch_sizes) * batch_steps + len(prompt) + 16)
    n_ctx = max(1024, len(prompt) + n_tokens + 16)
    best = {"stock": 0.0, "engine": 0.0, "raw": 0.0}
    engine_matches_raw = stock_matches = True
    for r in range(rounds):
        note(f"round {r + 1}/{rounds}: stock llama_cpp.Llama")
        stock = baselines.stock_greedy(model, prompt, n_tokens, threads=threads, n_ctx=n_ctx)
        note(f"round {r + 1}/{rounds}: engine greedy")
        engine = _engine_greedy(service, n_tokens)
        note(f"round {r + 1}/{rounds}: bare llama_decode loop")
        raw = baselines.bare_loop(model, prompt, n_tokens, threads=threads, n_ctx=n_ctx)
        best["stock"] = max(best["stock"], stock["tok_s"])
        best["engine"] = max(best["engine"], engine["tok_s"])
        best["raw"] = max(best["raw"], raw["tok_s"])
        engine_matches_raw &= engine["tokens"] == raw["tokens"]
        stock_matches &= stock["tokens"] == engine["tokens"]
    note("prefill and batched decode")
    # a small --n-ctx: the prefill that fits beside what the engine's greedy run left cached
    prefill_tokens = min(prefill_tokens, ctx.n_ctx - len(prompt) - n_tokens - 1)
    prefill = _prefill_rate(service, prefill_tokens)
    batched = {str(k): _batched_rate(service, k, batch_steps) for k in batch_sizes}
    return {
        "model": model.name,
        "model_path": str(model.path),
        "threads": threads,
        "tokens": n_tokens,
        "rounds": rounds,
        "baseline_tok_s": round(best["stock"], 2),
        "engine_tok_s": round(best["engine"], 2),
        "raw_tok_s": round(best["raw"], 2),
        "ratio": round(best["engine"] / best["stock"], 4) if best["stock"] else None,
        "engine_vs_raw": round(best["engine"] / best["raw"], 4) if best["raw"] else None,
        # identical kernels give identical tokens; stock's context differs slightly, so on a
        # near-tie its greedy path may diverge (llama.cpp logits depend on batch layout)
        "engine_matches_raw": engine_matches_raw,
        "stock_matches_engine": stock_matches,
        "prefill_tok_s": round(prefill, 2),
        "prefill_tokens": prefill_tokens,
        "batched": batched,
    }


def _engine_greedy(service: Service, n_tokens: int) -> dict:
    request = Request(prompt=BENCH_PROMPT, max_tokens=n_tokens, strategy="greedy", ignore_eos=True)
    done = service.run(request)
    return {"tok_s": done.stats["decode_tokens_per_second"], "tokens": done.tokens}


def _prefill_rate(service: Service, n: int) -> float:
    model = service.model()
    ctx = service.context()
    text = BENCH_PROMPT * (1 + n // max(1, len(model.tokenize(BENCH_PROMPT))))
    tokens = (model.bos_tokens() + model.tokenize(text))[:n]
    seq = ctx.new_sequence()
    try:
        t0 = time.perf_counter()
        ctx.prefill(seq, tokens)
        return len(tokens) / (time.perf_counter() - t0)
    finally:
        seq.release()


def _batched_rate(service: Service, k: int, steps: int) -> dict:
    """k sequences forked from one prompt, one token each per llama_decode."""
    model = service.model()
    ctx = service.context()
    root = ctx.new_sequence()
    seqs = []
    try:
        logits = ctx.prefill(root, model.bos_tokens() + model.tokenize(BENCH_PROMPT))
        first = int(logits.argmax())
        seqs = root.forks(k)
        nxt = {s: first for s in seqs}
        t0 = time.perf_counter()
        for _ in range(steps):
            out = ctx.decode({s: [nxt[s]] for s in seqs})
            nxt = {s: int(v.argmax()) for s, v in out.items()}
        dt = time.perf_counter() - t0
        return {"steps_per_s": round(steps / dt, 2), "tok_s": round(steps * k / dt, 2)}
    finally:
        for s in seqs:
            s.release()
        root.release()
