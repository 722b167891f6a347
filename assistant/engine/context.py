"""A llama.cpp context with many sequences in one unified KV cache.

`Context.decode({seq: tokens, ...})` evaluates every sequence's new tokens in one
`llama_decode` batch (split only when the batch exceeds `n_batch`) and returns a zero-copy
numpy view of each sequence's last logits, valid until the next decode; `decode_rows` streams
every new token's logits chunk by chunk, read in place. `Sequence` objects
track the tokens their KV cells hold, so forking is a metadata copy and prompt prefill keeps
the longest common prefix already in the cache. What a batch of n output rows costs here (and
whether it reproduces n single rows) is measured by its `RowPrices` part (row_prices.py).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import time
from collections.abc import Callable, Iterator, Mapping
from collections.abc import Sequence as Seq
from pathlib import Path

import llama_cpp
import numpy as np

from ..errors import Cancelled, ContextOverflow, EngineError, UserError
from ..signals import interrupts_deferred
from . import _llama
from .counters import Counters
from .model import Model
from .prices import PriceBook
from .row_prices import RowPrices, price_key

DEFAULT_N_CTX = 4096
LLAMA_MAX_SEQ = 256  # llama.cpp's LLAMA_MAX_SEQ: it refuses a context with more sequences
GGML_MAX_N_THREADS = 512  # ggml's limit: far past it (an int32 that wraps) the process aborts
# `decode_rows` decodes at most this many bytes of logits at a time: llama.cpp keeps a batch's
# output rows twice (graph output and logits buffer), and 512 rows of Gemma 3's 262k vocabulary
# are 0.5 GB each time; teacher forcing costs the same per row in chunks of 64 rows.
STREAM_BYTES = 64 << 20


def usable_cpus() -> list[int]:
    """The CPUs this process may run on (its affinity: a container's or `taskset`'s share)."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return list(range(os.cpu_count() or 1))


def default_threads(sysfs: Path = Path("/sys/devices/system/cpu")) -> int:
    """One thread per physical core this process may use, as llama.cpp's own default: a
    second hardware thread on a core shares its memory bandwidth and vector units, and on a
    decode (memory-bound) mostly adds waiting. Every usable CPU where sysfs does not say."""
    cpus = usable_cpus()
    cores = set()
    for cpu in cpus:
        try:
            siblings = (sysfs / f"cpu{cpu}" / "topology" / "thread_siblings_list").read_text().strip()
        except OSError:
            return max(1, len(cpus))
        cores.add(siblings)  # the same text for every hardware thread of one core
    return max(1, len(cores))


def common_prefix(a: Seq[int], b: Seq[int]) -> int:
    """Length of the longest common prefix of two token lists."""
    n, limit = 0, min(len(a), len(b))
    while n < limit and a[n] == b[n]:
        n += 1
    return n


class Sequence:
    """One sequence of the KV cache: its id and the tokens its cells hold."""

    __slots__ = ("ctx", "id", "tokens")

    def __init__(self, ctx: Context, seq_id: int):
        self.ctx = ctx
        self.id = seq_id
        self.tokens: list[int] = []

    def __len__(self) -> int:
        return len(self.tokens)

    def __repr__(self) -> str:
        return f"Sequence(id={self.id}, n={len(self.tokens)})"

    def fork(self) -> Sequence:
        """A new sequence sharing this one's cells (cheap with kv_unified)."""
        child = self.ctx.new_sequence()
        if self.tokens:
            llama_cpp.llama_memory_seq_cp(self.ctx._mem, self.id, child.id, -1, -1)
        child.tokens = list(self.tokens)
        return child

    def forks(self, n: int) -> list[Sequence]:
        """n forks, or none: refused up front when fewer are free, and those made are given
        back if making one fails (a Ctrl-C), so a long-lived context is not left short."""
        self.ctx.require_free(n)
        made: list[Sequence] = []
        try:
            for _ in range(n):
                made.append(self.fork())
        except BaseException:
            for f in made:
                f.release()
            raise
        return made

    def adopt(self, other: Sequence) -> None:
        """Hold exactly `other`'s tokens: cells past the common prefix are dropped and
        `other`'s are shared in (metadata only with kv_unified). `other` is unchanged."""
        common = common_prefix(self.tokens, other.tokens)
        mem = self.ctx._mem
        llama_cpp.llama_memory_seq_rm(mem, self.id, common, -1)
        if len(other.tokens) > common:
            llama_cpp.llama_memory_seq_cp(mem, other.id, self.id, common, -1)
        self.tokens = list(other.tokens)

    def truncate(self, n: int) -> None:
        """Keep only the first n tokens."""
        n = max(0, n)
        if n >= len(self.tokens):
            return
        if not llama_cpp.llama_memory_seq_rm(self.ctx._mem, self.id, n, -1):
            # recurrent/hybrid memories cannot drop a partial range: start over
            llama_cpp.llama_memory_seq_rm(self.ctx._mem, self.id, -1, -1)
            keep = self.tokens[:n]
            self.tokens = []
            if keep:
                self.ctx.decode({self: keep})
            return
        del self.tokens[n:]

    def release(self) -> None:
        """Free this sequence's cells and id."""
        if self.id < 0:
            return
        llama_cpp.llama_memory_seq_rm(self.ctx._mem, self.id, -1, -1)
        self.ctx._release(self.id)
        self.tokens = []
        self.id = -1


def physical_memory() -> int | None:
    """Bytes of memory this machine has; None where the OS does not say (not POSIX)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def check_kv_fits(model: Model, n_ctx: int) -> None:
    """Refuse a context whose KV cache cannot fit in this machine's memory, before llama.cpp
    tries: asked for 10^8 or 10^9 tokens, it took 5-20 GB and up to 35 s before failing, and a
    smaller mistake (10^6 for 10^5) pushes a laptop into swap. The bound counts sliding-window
    layers in full, as llama.cpp allocated them here (Gemma 3 at 10^6 tokens: 18.5 GB resident
    against 17 GB estimated). Not checked when layers are offloaded to a GPU, whose cache is
    elsewhere."""
    need = n_ctx * model.kv_bytes_per_token
    memory = physical_memory()
    if memory is None:  # not POSIX: llama.cpp will say
        return
    if model.n_gpu_layers == 0 and need > memory:
        trained = f", the model was trained on {model.n_ctx_train}" if model.n_ctx_train else ""
        raise UserError(
            f"a context of {n_ctx} tokens needs up to {need / 2**30:.0f} GiB of KV cache and this machine has "
            f"{memory / 2**30:.0f} GiB of memory; lower --n-ctx{trained}"
        )


def _nan_logits() -> EngineError:
    """Logits that are NaN (checked on one entry a row: a NaN hidden state makes every one NaN)
    would be read as token 0 by argmax and as an empty distribution by samplers."""
    return EngineError(
        "llama.cpp returned NaN logits: the model file, or this build's kernels for it, are broken "
        "(a damaged or badly quantised GGUF; with a GPU, try fewer --n-gpu-layers)"
    )


class Context(RowPrices):
    """Owns a llama_context created with `n_seq_max` sequences and `kv_unified=True`."""

    def __init__(
        self,
        model: Model,
        *,
        n_ctx: int | None = None,
        n_seq_max: int = 8,
        n_batch: int = 512,
        threads: int | None = None,
        embeddings: bool = False,
        prices: PriceBook | None = None,
    ):
        """`prices`: where decode prices measured on this machine are kept across processes
        (None: each context measures its own, once)."""
        self.model = model
        threads = threads or default_threads()
        if not 1 <= threads <= GGML_MAX_N_THREADS:
            raise UserError(f"threads must be 1 to {GGML_MAX_N_THREADS} (llama.cpp's limit), got {threads}")
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = int(n_ctx or min(DEFAULT_N_CTX, model.n_ctx_train or DEFAULT_N_CTX))
        check_kv_fits(model, params.n_ctx)
        if not 1 <= n_seq_max < LLAMA_MAX_SEQ:  # one more is kept for padding and timing
            raise UserError(f"n_seq_max must be 1 to {LLAMA_MAX_SEQ - 1} (llama.cpp's limit), got {n_seq_max}")
        if min(n_batch, params.n_ctx) <= n_seq_max:  # an output row per sequence, or llama.cpp aborts
            what = f"n_batch is {n_batch}" if n_batch <= n_seq_max else f"the context is {params.n_ctx} tokens"
            raise UserError(
                f"a batch must hold n_seq_max + 1 = {n_seq_max + 1} rows (one for every sequence and one for "
                f"padding) and {what}: raise it, or lower n_seq_max (config file or ASSISTANT_N_SEQ_MAX)"
            )
        params.n_batch = n_batch
        params.n_ubatch = n_batch
        params.n_seq_max = n_seq_max + 1  # one more, private: the scratch sequence (padding, timing)
        params.n_threads = threads
        params.n_threads_batch = threads
        params.kv_unified = True
        params.embeddings = embeddings
        params.no_perf = True
        self._abort = _llama.AbortFlag()
        params.abort_callback = self._abort.callback
        params.abort_callback_data = self._abort.data
        with interrupts_deferred():
            self._ptr = llama_cpp.llama_init_from_model(model._ptr, params)
        if not self._ptr:
            trained = f"; the model was trained on {model.n_ctx_train}" if model.n_ctx_train else ""
            raise EngineError(
                f"llama.cpp could not create a context of {params.n_ctx} tokens (most often too little "
                f"memory for its KV cache{trained}): lower --n-ctx"
            )
        self.n_ctx = int(llama_cpp.llama_n_ctx(self._ptr))
        # llama.cpp lowers n_batch (and n_ubatch) to n_ctx for causal models; a bigger batch
        # than it took aborts the process (GGML_ASSERT), so every chunk is sized by its figures
        n_batch = min(n_batch, int(llama_cpp.llama_n_batch(self._ptr)), int(llama_cpp.llama_n_ubatch(self._ptr)))
        self.n_batch = n_batch
        self.n_seq_max = n_seq_max
        self.threads = threads
        self.embeddings = embeddings
        self._mem = llama_cpp.llama_get_memory(self._ptr)
        self._free_ids = list(range(n_seq_max - 1, -1, -1))
        self._scratch = n_seq_max  # never handed out; emptied after every use
        self._init_row_prices(prices, price_key(model, threads, n_batch, embeddings) if prices is not None else "")
        self.counters = Counters()
        # one reusable token batch; numpy views over its arrays make filling it cheap
        self._batch = llama_cpp.llama_batch_init(n_batch, 0, n_seq_max + 1)
        self._tok = np.ctypeslib.as_array(self._batch.token, shape=(n_batch,))
        self._pos = np.ctypeslib.as_array(self._batch.pos, shape=(n_batch,))
        self._nseq = np.ctypeslib.as_array(self._batch.n_seq_id, shape=(n_batch,))
        self._out = np.ctypeslib.as_array(self._batch.logits, shape=(n_batch,))
        self._seq_ids = [self._batch.seq_id[i] for i in range(n_batch)]
        self._embd_batch = None
        self._last_out: dict[int, int] = {}  # seq id -> batch index of its last output
        self._row = ctypes.c_float * model.n_vocab
        self._ctx_vp = ctypes.c_void_p(self._ptr)
        self._decode = llama_cpp.llama_decode

    # -- sequences --------------------------------------------------------------------------
    def new_sequence(self) -> Sequence:
        if not self._free_ids:
            self.refuse_sequences(self.n_seq_max + 1)
        return Sequence(self, self._free_ids.pop())

    def require_free(self, n: int) -> None:
        """Refuse, with the number the run needs, n more sequences than are free."""
        if n > self.free_sequences:
            self.refuse_sequences(self.n_seq_max - self.free_sequences + n)

    def refuse_sequences(self, needed: int) -> None:
        """Say that a run needs `needed` sequences at once, and the fix that gives them."""
        why = (
            f"this run needs {needed} sequences at once and the context has {self.n_seq_max} (a strategy's "
            "k branches, drafts or candidates each take one)"
        )
        if needed >= LLAMA_MAX_SEQ:
            raise UserError(f"{why}: more than llama.cpp allows ({LLAMA_MAX_SEQ - 1}); lower k")
        raise UserError(
            f"{why}: raise n_seq_max in the config file or with "
            f"ASSISTANT_N_SEQ_MAX={max(needed, min(2 * self.n_seq_max, LLAMA_MAX_SEQ - 1))}, or lower k"
        )

    def _release(self, seq_id: int) -> None:
        self._free_ids.append(seq_id)

    @property
    def free_sequences(self) -> int:
        return len(self._free_ids)

    @property
    def most_sequences(self) -> int:
        """The most sequences a context of this size and batch could be made with: llama.cpp's
        limit, and a batch (and the context) must hold a row for each and one for padding."""
        return min(LLAMA_MAX_SEQ, self.n_batch, self.n_ctx) - 1

    def clear(self) -> None:
        """Forget every cached token (all sequences must have been released)."""
        llama_cpp.llama_memory_clear(self._mem, True)

    def set_hidden_states(self, on: bool) -> None:
        """Also output final hidden states (contrastive search needs them)."""
        llama_cpp.llama_set_embeddings(self._ptr, bool(on))
        self.embeddings = bool(on)

    @contextlib.contextmanager
    def uncounted(self) -> Iterator[None]:
        """Decodes in the block leave the counters as they were: a one-time check of the model
        is no run's work (as the price timings are not), and the counters are what proves a
        strategy's passes per step."""
        saved = self.counters.copy()
        try:
            yield
        finally:
            self.counters.__dict__.update(saved.__dict__)

    # -- cancellation -----------------------------------------------------------------------
    def abort(self) -> None:
        """Make the running (or next) llama_decode stop early; thread-safe."""
        self._abort.set()

    def reset_abort(self) -> None:
        self._abort.clear()

    @property
    def aborted(self) -> bool:
        return self._abort.is_set

    # -- decoding ---------------------------------------------------------------------------
    def logits(self, index: int) -> np.ndarray:
        """Zero-copy view of the logits of batch output `index` (valid until the next decode)."""
        addr = _llama.get_logits_ith(self._ctx_vp, index)
        if not addr:
            raise EngineError(f"no logits for batch index {index}")
        row = np.frombuffer(self._row.from_address(addr), dtype=np.float32)
        if row[0] != row[0]:
            raise _nan_logits()
        return row

    def _output_table(self, n_outputs: int) -> np.ndarray:
        """Zero-copy (n_outputs, n_vocab) view of every output row of the last decode."""
        addr = ctypes.cast(llama_cpp.llama_get_logits(self._ptr), ctypes.c_void_p).value
        if not addr:
            raise EngineError("no logits from the last decode")
        buf = (ctypes.c_float * (n_outputs * self.model.n_vocab)).from_address(addr)
        table = np.frombuffer(buf, dtype=np.float32).reshape(n_outputs, self.model.n_vocab)
        if np.isnan(table[:, 0]).any():
            raise _nan_logits()
        return table

    def hidden_of(self, seq: Sequence) -> np.ndarray:
        """The final hidden state after `seq`'s last token in the last `decode` (a copy)."""
        if seq.id not in self._last_out:
            raise EngineError("no output of this sequence in the last decode")
        return self.hidden(self._last_out[seq.id]).copy()

    def hidden(self, index: int) -> np.ndarray:
        """The final hidden state of batch output `index` (needs hidden states switched on)."""
        addr = _llama.get_embeddings_ith(self._ctx_vp, index)
        if not addr:
            raise EngineError("no hidden state: create the context with embeddings=True")
        return np.frombuffer((ctypes.c_float * self.model.n_embd).from_address(addr), dtype=np.float32)

    def decode_one(self, seq: Sequence, token: int) -> np.ndarray:
        """Evaluate one token on one sequence: the hot path of every left-to-right loop."""
        pos = len(seq.tokens)
        if pos >= self.n_ctx:
            raise ContextOverflow(f"context full ({self.n_ctx} tokens); raise --n-ctx")
        self._tok[0] = token
        self._pos[0] = pos
        self._nseq[0] = 1
        self._seq_ids[0][0] = seq.id
        self._out[0] = 1
        self._batch.n_tokens = 1
        t0 = time.perf_counter()
        rc = self._decode(self._ptr, self._batch)
        c = self.counters
        c.seconds += time.perf_counter() - t0
        if rc != 0:
            self._fail(rc, [seq])
        c.forward_passes += 1
        c.tokens_evaluated += 1
        seq.tokens.append(token)
        self._last_out[seq.id] = 0
        return self.logits(0)

    def decode(
        self,
        work: Mapping[Sequence, Seq[int]],
        *,
        all_logits: bool = False,
        logits: bool = True,
        may_pad: bool = True,
    ) -> dict[Sequence, np.ndarray]:
        """Evaluate new tokens for many sequences in one batch.

        Returns, per sequence, the logits after its last new token (or, with all_logits, an
        array of shape (n_new, n_vocab) for every new token; with logits=False, nothing: the
        tokens only fill the KV cache). Views are zero-copy when the batch fits in `n_batch`;
        otherwise the batch is split and earlier outputs are copied (to read a long batch in
        place, use `decode_rows`). `may_pad=False` never adds a padding row, so the logits do
        not depend on which batch shape timed cheaper on this machine (padding changes the
        kernels' rounding): for measurements that must be reproducible, such as calibration.
        """
        if all_logits:
            whole = sum(len(toks) for toks in work.values()) <= self.n_batch  # views stay valid
            pieces: dict[Sequence, list[np.ndarray]] = {seq: [] for seq in work}
            for seq, _first, rows in self.decode_rows(work, may_pad=may_pad, rows_per_decode=self.n_batch):
                pieces[seq].append(rows if whole else rows.copy())
            return {
                seq: rows[0] if len(rows) == 1 else np.concatenate(rows) if rows else self._no_rows()
                for seq, rows in pieces.items()
            }
        last: dict[Sequence, np.ndarray] = {}
        for chunk, final in self._decode_chunks(work, wants=(lambda j, n: logits and j == n - 1), may_pad=may_pad):
            for i, (seq, _tok, _pos, want) in enumerate(chunk):
                if want:
                    view = self.logits(i)
                    last[seq] = view if final else view.copy()
        return last

    def decode_rows(
        self, work: Mapping[Sequence, Seq[int]], *, may_pad: bool = True, rows_per_decode: int | None = None
    ) -> Iterator[tuple[Sequence, int, np.ndarray]]:
        """Evaluate new tokens for many sequences and stream the logits after every one:
        yields (sequence, index of the piece's first row among the sequence's new tokens,
        zero-copy (rows, n_vocab) view), in batch order, a piece per sequence per chunk. A
        view is valid only until the generator resumes, which decodes the next chunk: so a
        long batch (teacher forcing, rescoring drafts) is read in place instead of copied,
        n_vocab floats a row (1 MB on Gemma 3's vocabulary). Chunks hold `rows_per_decode`
        rows (default: as many as `STREAM_BYTES` of logits; at most n_batch)."""
        if rows_per_decode is None:
            rows_per_decode = max(1, STREAM_BYTES // (4 * self.model.n_vocab))
        done: dict[Sequence, int] = {}
        for chunk, _final in self._decode_chunks(work, wants=None, may_pad=may_pad, size=rows_per_decode):
            table = self._output_table(len(chunk))
            a = 0
            while a < len(chunk):
                seq, b = chunk[a][0], a + 1
                while b < len(chunk) and chunk[b][0] is seq:
                    b += 1
                first = done.get(seq, 0)
                done[seq] = first + b - a
                yield seq, first, table[a:b]
                a = b

    def _no_rows(self) -> np.ndarray:
        return np.zeros((0, self.model.n_vocab), np.float32)

    def _decode_chunks(
        self,
        work: Mapping[Sequence, Seq[int]],
        *,
        wants: Callable[[int, int], bool] | None,
        may_pad: bool,
        size: int | None = None,
    ) -> Iterator[tuple[list[tuple[Sequence, int, int, bool]], bool]]:
        """Decode `work` in chunks of `size` rows (at most, and by default, n_batch), each
        only when the caller asks for it: yields (the chunk's entries (sequence, token,
        position, wants logits), whether it is the last) after its decode, when its output
        rows sit at the entries' batch indices. `wants(j, n)`: whether new token j of a
        sequence's n wants logits (None: every one)."""
        entries: list[tuple[Sequence, int, int, bool]] = []
        for seq, toks in work.items():
            if seq.id < 0:
                raise EngineError("decode on a released sequence")
            start = len(seq.tokens)
            if start + len(toks) > self.n_ctx:
                raise ContextOverflow(
                    f"{start + len(toks)} tokens do not fit in the context ({self.n_ctx}); raise --n-ctx"
                )
            count = len(toks)
            entries += [(seq, int(t), start + j, wants is None or wants(j, count)) for j, t in enumerate(toks)]
        size = min(size or self.n_batch, self.n_batch)
        n_chunks = (len(entries) + size - 1) // size
        pad = may_pad and n_chunks == 1 and all(e[3] for e in entries) and self._pads(len(entries))
        seqs = list(work)
        for c_i in range(n_chunks):
            chunk = entries[c_i * size : (c_i + 1) * size]
            n = len(chunk)
            self._tok[:n] = [e[1] for e in chunk]
            self._pos[:n] = [e[2] for e in chunk]
            self._nseq[:n] = 1
            self._out[:n] = [1 if e[3] else 0 for e in chunk]
            ids = self._seq_ids
            for i, e in enumerate(chunk):
                ids[i][0] = e[0].id
            if pad:  # one scratch row after the real ones, so their indices are unchanged
                self._fill_scratch(n, 1, chunk[-1][1])
            self._batch.n_tokens = n + pad
            try:
                self._run_decode(n, seqs, pad=int(pad))
            except ContextOverflow:
                if not pad:
                    raise
                self._batch.n_tokens = n  # no cell left for the scratch row: go without it
                self._run_decode(n, seqs)
            finally:
                if pad:
                    llama_cpp.llama_memory_seq_rm(self._mem, self._scratch, -1, -1)
            for seq in seqs:  # an output of an earlier chunk is overwritten now
                self._last_out.pop(seq.id, None)
            for i, (seq, tok, _pos, want) in enumerate(chunk):
                seq.tokens.append(tok)  # commit tokens as soon as their cells exist
                if want:
                    self._last_out[seq.id] = i
            yield chunk, c_i == n_chunks - 1

    def decode_embeddings(self, seq: Sequence, vectors: np.ndarray, *, token_ids=None) -> np.ndarray:
        """Evaluate input-embedding rows (n x n_embd_inp) on one sequence; returns the last
        logits. `token_ids` (optional) records which tokens the rows stand for; otherwise -1."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim == 1:
            vectors = vectors[None, :]
        n, width = vectors.shape
        if width != self.model.n_embd_inp:
            raise EngineError(f"embedding width {width} != model input width {self.model.n_embd_inp}")
        if n > self.n_batch:
            raise EngineError(f"{n} embedding rows exceed n_batch={self.n_batch}")
        start = len(seq.tokens)
        if start + n > self.n_ctx:
            raise ContextOverflow(f"context full ({self.n_ctx} tokens); raise --n-ctx")
        if self._embd_batch is None:
            self._embd_batch = llama_cpp.llama_batch_init(self.n_batch, self.model.n_embd_inp, self.n_seq_max)
        b = self._embd_batch
        np.ctypeslib.as_array(b.embd, shape=(self.n_batch * width,))[: n * width] = vectors.ravel()
        np.ctypeslib.as_array(b.pos, shape=(self.n_batch,))[:n] = np.arange(start, start + n)
        np.ctypeslib.as_array(b.n_seq_id, shape=(self.n_batch,))[:n] = 1
        out = np.ctypeslib.as_array(b.logits, shape=(self.n_batch,))
        out[:n] = 0
        out[n - 1] = 1
        for i in range(n):
            b.seq_id[i][0] = seq.id
        b.n_tokens = n
        t0 = time.perf_counter()
        rc = self._decode(self._ptr, b)
        self.counters.seconds += time.perf_counter() - t0
        if rc != 0:
            self._fail(rc, [seq])
        self.counters.forward_passes += 1
        self.counters.tokens_evaluated += n
        ids = list(token_ids) if token_ids is not None else [-1] * n
        seq.tokens.extend(int(t) for t in ids)
        return self.logits(n - 1)

    def _run_decode(self, n: int, seqs: list[Sequence], pad: int = 0) -> None:
        t0 = time.perf_counter()
        rc = self._decode(self._ptr, self._batch)
        self.counters.seconds += time.perf_counter() - t0
        if rc != 0:
            self._fail(rc, seqs)
        self.counters.forward_passes += 1
        self.counters.tokens_evaluated += n + pad
        self.counters.padding_rows += pad

    def _fail(self, rc: int, seqs: list[Sequence]) -> None:
        # llama.cpp rolls back a failed batch; make sure cells past what we track are gone
        for seq in seqs:
            if seq.id >= 0:
                llama_cpp.llama_memory_seq_rm(self._mem, seq.id, len(seq.tokens), -1)
        if rc == 2:
            raise Cancelled("decode aborted")
        if rc == 1:
            raise ContextOverflow(f"no room left in the KV cache ({self.n_ctx} cells); raise --n-ctx")
        raise EngineError(f"llama_decode failed with status {rc}")

    def prefill(self, seq: Sequence, tokens: Seq[int]) -> np.ndarray:
        """Make `seq` hold exactly `tokens` and return the logits after the last one.

        Keeps the longest common prefix already cached (editors resend the whole file on
        every keystroke) and evaluates only the rest, in chunks of n_batch. The last token is
        always decoded on its own: llama.cpp picks matmul kernels by batch size, and on some
        quantisations they round differently (Gemma 3 Q4_K_M on AVX2: up to ~2 in a logit),
        so the same prompt, cached or not, would otherwise give different logits and, at a
        close call, a different greedy completion.
        """
        tokens = list(tokens)
        if not tokens:
            raise EngineError("empty prompt")
        if len(tokens) > self.n_ctx:
            raise ContextOverflow(
                f"prompt is {len(tokens)} tokens but the context holds {self.n_ctx}; raise --n-ctx "
                "or shorten the prompt"
            )
        # keep the longest cached prefix, but re-evaluate the last token for its logits
        common = min(common_prefix(seq.tokens, tokens), len(tokens) - 1)
        seq.truncate(common)
        self.counters.tokens_reused += common
        body, last = tokens[common:-1], tokens[-1]
        for i in range(0, len(body), self.n_batch):
            self.decode({seq: body[i : i + self.n_batch]}, logits=False)
        return self.decode_one(seq, last)

    def close(self) -> None:
        if getattr(self, "_ptr", None):
            llama_cpp.llama_batch_free(self._batch)
            if self._embd_batch is not None:
                llama_cpp.llama_batch_free(self._embd_batch)
            llama_cpp.llama_free(self._ptr)
            self._ptr = None

    def __del__(self):  # pragma: no cover
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass
