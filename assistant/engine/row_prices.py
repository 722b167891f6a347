"""What a decode of n output rows costs on this context, and whether it gives the logits of
n one-row decodes: the measurements `Context.decode` pads batches by and strategies choose by
(speculative's draft length, AdaDec's schedule), kept across processes in a `PriceBook`.

`RowPrices` is the part of `Context` that measures; it decodes on the context's private
scratch sequence, which it empties after every use.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable

import llama_cpp
import numpy as np

from ..errors import Cancelled, EngineError
from .model import Model
from .prices import PriceBook, machine_id

PAD_MAX_ROWS = 16  # longer all-logits batches are never padded (see `_pads`)
PRICE_REPEATS = 5  # timings of a decode price (see `_raw_costs_of`)
PRICE_PROGRESS = "timing decode prices (once a week)"  # the label `progress` hears
Progress = Callable[[str, int, int], None]  # (label, done, total), as `Run.progress`


def price_key(model: Model, threads: int, n_batch: int, embeddings: bool) -> str:
    """What decode prices depend on: the file, the offload, the threads, the batch size, the
    llama.cpp build (its CPU features and backends) and the machine."""
    st = model.path.stat()
    system = llama_cpp.llama_print_system_info().decode("utf-8", "replace").strip()
    return " | ".join(
        [
            f"{model.path.resolve()} {st.st_size} {st.st_mtime_ns}",
            f"ngl={model.n_gpu_layers} rpc={','.join(model.rpc_servers)}",
            f"devices={os.environ.get('CUDA_VISIBLE_DEVICES', '')}",
            f"threads={threads} n_batch={n_batch} embeddings={embeddings}",
            f"llama_cpp={getattr(llama_cpp, '__version__', '?')} {system}",
            machine_id(),
        ]
    )


def _digest(row: np.ndarray) -> bytes:
    """A fingerprint of a logits row's exact bits."""
    return hashlib.blake2b(np.ascontiguousarray(row).tobytes(), digest_size=16).digest()


class RowPrices:
    """Measured decode prices and row reproducibility of a `Context` (its mixin)."""

    def _init_row_prices(self, prices: PriceBook | None, key: str) -> None:
        self._prices = prices
        self._price_key = key
        # output rows -> seconds of an unpadded decode
        self._raw_costs: dict[int, float] = prices.load(key) if prices is not None else {}
        self._pad: dict[int, bool] = {}  # output rows -> whether one more row is cheaper
        self._matches_single: dict[int, bool] = {}  # output rows -> same logits as 1-row decodes
        self._singles: list[bytes] = []  # digests of the probe's one-token decodes

    # -- output-row padding -----------------------------------------------------------------
    # On CPU the output layer dominates a batch whose every token wants logits, and ggml's
    # matmul kernels are far from linear in the row count: on Gemma 3 (262k vocabulary, AVX2)
    # 3 rows cost 68 ms and 4 rows 49 ms. So a batch of n output rows gets one scratch row
    # more when that was measured to be cheaper on this context (measured once per n). Only
    # small batches are weighed: there one row is a large share of the kernels' row tiles (4
    # or 8 rows), while for a long batch (teacher forcing, rescoring 3 drafts) one row more
    # saves little and timing it costs six decodes of that length, more than the batch itself.
    def _fill_scratch(self, at: int, n: int, token: int) -> None:
        """Batch entries at..at+n-1: `token` at positions 0..n-1 of the scratch sequence."""
        self._tok[at : at + n] = token
        self._pos[at : at + n] = np.arange(n)
        self._nseq[at : at + n] = 1
        self._out[at : at + n] = 1
        for i in range(at, at + n):
            self._seq_ids[i][0] = self._scratch

    def matches_single_rows(self, n: int) -> bool:
        """Whether a decode of n tokens that all want logits (padded as `decode` pads it)
        gives, bit for bit, the logits of n one-token decodes. llama.cpp picks matmul kernels
        by batch size, and some quantise activations differently: on Gemma 3 Q4_K_M with
        AVX2 weight repacking, batches of 3 or more rows (3 are padded to 4) move a logit by
        up to ~2, enough to flip a greedy choice. Checked once per size on the scratch
        sequence; False for more rows than one batch holds, and while the KV cache has no
        room to check."""
        if n <= 1:
            return True
        if n > self.n_batch:
            return False
        if n not in self._matches_single:
            verdict = self._probe_rows(n)
            if verdict is None:
                return False
            self._matches_single[n] = verdict
        return self._matches_single[n]

    def _probe_rows(self, n: int) -> bool | None:
        tokens = (self.model.tokenize("def probe(x):\n    return [x, x + 1]\n") * n)[:n]
        singles = self._single_digests(tokens)
        if singles is None:
            return None
        rows = n + 1 if self._pads(n) else n
        try:
            self._fill_scratch(0, rows, tokens[-1])
            self._tok[:n] = tokens  # positions 0..rows-1; a padding row repeats the last token
            self._batch.n_tokens = rows
            if self._decode(self._ptr, self._batch) != 0:
                return None
            table = self._output_table(rows)
            return all(_digest(table[i]) == singles[i] for i in range(n))
        finally:
            llama_cpp.llama_memory_seq_rm(self._mem, self._scratch, -1, -1)

    def _single_digests(self, tokens: list[int]) -> list[bytes] | None:
        """Digests of the logits after each of `tokens`, decoded one at a time (kept: the
        probe's tokens for n rows are the first n of those for more)."""
        if len(self._singles) < len(tokens):
            digests = []
            try:
                for i, tok in enumerate(tokens):
                    self._fill_scratch(0, 1, tok)
                    self._pos[0] = i
                    self._batch.n_tokens = 1
                    if self._decode(self._ptr, self._batch) != 0:
                        return None
                    digests.append(_digest(self.logits(0)))
            finally:
                llama_cpp.llama_memory_seq_rm(self._mem, self._scratch, -1, -1)
            self._singles = digests
        return self._singles[: len(tokens)]

    def _raw_costs_of(self, *sizes: int, progress: Progress | None = None) -> dict[int, float]:
        """Seconds llama_decode takes for n tokens that all want logits, for each n in
        `sizes`: cached (and kept in the price book) or measured together, `PRICE_REPEATS`
        rounds through the sizes after a warm-up each, best per size. The price is kept a
        week, so one burst of load on the host must not set it: best of two once stored
        4 rows at 64 ms against 40 ms timed again (so 3-row batches went unpadded and
        contrastive took 3.4x greedy's time, not 2.7-2.9x); a burst in the rounds hits every
        size compared alike.
        inf, not cached, while the KV cache has no room to time a size. `progress(label, done,
        total)` hears of each timed decode: on a large model on a CPU the first measuring takes
        minutes (speculative's 14 sizes, 6 decodes each)."""
        todo = [n for n in sizes if n not in self._raw_costs]
        if todo:
            best = dict.fromkeys(todo, float("inf"))
            total, done = len(todo) * (1 + PRICE_REPEATS), 0
            for round_ in range(1 + PRICE_REPEATS):
                for n in todo:
                    cost = self._time_rows(n, 1)
                    if round_:  # round 0 warms up: a batch shape's first run pays one-time set-up (GPU)
                        best[n] = min(best[n], cost)
                    done += 1
                    if progress is not None:
                        progress(PRICE_PROGRESS, done, total)
            for n, cost in best.items():
                if cost == float("inf"):
                    continue
                self._raw_costs[n] = cost
                if self._prices is not None:
                    self._prices.save(self._price_key, n, cost)
        return {n: self._raw_costs.get(n, float("inf")) for n in sizes}

    def _time_rows(self, n: int, repeats: int) -> float:
        best = float("inf")
        try:
            for _ in range(repeats):
                self._fill_scratch(0, n, 0)
                self._batch.n_tokens = n
                t0 = time.perf_counter()
                rc = self._decode(self._ptr, self._batch)
                llama_cpp.llama_synchronize(self._ptr)  # a GPU decode returns before it is done
                best = min(best, time.perf_counter() - t0)
                llama_cpp.llama_memory_seq_rm(self._mem, self._scratch, -1, -1)
                if rc == 2:
                    raise Cancelled("decode aborted")
                if rc == 1:  # no free cells now: report "unknown", never pick padding
                    return float("inf")
                if rc != 0:
                    raise EngineError(f"llama_decode failed with status {rc} while timing {n} rows")
        finally:
            llama_cpp.llama_memory_seq_rm(self._mem, self._scratch, -1, -1)
        return best

    def _weighs_pad(self, n: int) -> bool:
        return 2 <= n <= PAD_MAX_ROWS and n + 1 <= min(self.n_batch, self.n_ctx)

    def _pads(self, n: int) -> bool:
        if not self._weighs_pad(n):
            return False
        if n not in self._pad:
            costs = self._raw_costs_of(n, n + 1)
            plain, padded = costs[n], costs[n + 1]
            if float("inf") in (plain, padded):  # not measurable now: no padding, ask again later
                return False
            self._pad[n] = padded < 0.9 * plain
        return self._pad[n]

    def weigh_padding(self, *sizes: int, progress: Progress | None = None) -> None:
        """Measure now the prices `decode` weighs to pad batches of these sizes (of outputs),
        reporting to `progress`: a strategy about to decode such batches calls it first, so a
        first measuring (seconds to minutes on a large model) is not silent inside `decode`."""
        weighed = [n for n in sizes if self._weighs_pad(n)]
        if weighed:
            self.output_costs(*weighed, progress=progress)

    def set_output_padding(self, n: int, pad: bool) -> None:
        """Override the measured choice for batches of n output rows (tests; a user who knows)."""
        self._pad[n] = bool(pad)

    def output_cost(self, n: int, *, repeats: int = 0) -> float:
        """Measured seconds of a decode of n tokens that all want logits, padding included
        (the figure measured once per context; with `repeats`, timed afresh, best of them)."""
        if repeats > 0:
            return self._time_rows(n + 1 if self._pads(n) else n, repeats)
        return self.output_costs(n)[n]

    def output_costs(self, *sizes: int, progress: Progress | None = None) -> dict[int, float]:
        """`output_cost` of each size, the missing prices measured together in the same rounds
        (each size with one row more where padding is weighed), so that a strategy comparing
        sizes compares figures taken under the same load; `progress` as `_raw_costs_of`."""
        wanted = sorted({m for n in sizes for m in ((n, n + 1) if self._weighs_pad(n) else (n,))})
        self._raw_costs_of(*wanted, progress=progress)
        rows = {n: n + 1 if self._pads(n) else n for n in sizes}
        return {n: self._raw_costs.get(r, float("inf")) for n, r in rows.items()}
