"""The engine on the real bundled models: batching, forking, prefix reuse, embeddings, errors."""

from __future__ import annotations

import json
import os
import signal

import numpy as np
import pytest
from conftest import ROOT

from assistant.engine import Context, Model, PriceBook, baselines
from assistant.errors import Cancelled, ContextOverflow, UserError

PROMPT = "def add(a, b):\n    return"


def greedy_tokens(ctx, seq, prompt_tokens, n):
    logits = ctx.prefill(seq, prompt_tokens)
    out = []
    for _ in range(n):
        tok = int(np.argmax(logits))
        out.append(tok)
        logits = ctx.decode_one(seq, tok)
    return out


def test_model_metadata(smol, gemma):
    assert smol.architecture == "llama" and smol.n_vocab == 49152
    assert gemma.architecture.startswith("gemma3") and gemma.n_vocab == 262144
    assert smol.fim is None and gemma.fim is None  # neither bundled model has FIM tokens
    assert smol.is_eog(smol.eos)
    assert smol.detokenize(smol.tokenize("x = [1, 2]")) == "x = [1, 2]"
    assert "im_start" in (smol.chat_template or "")


def test_a_model_whose_file_name_is_not_utf8_loads(smol_path, tmp_path):
    """Linux file names are bytes: `m\xff.gguf` (a Latin-1 name) was a UnicodeEncodeError
    traceback where the path met llama.cpp; the stock baseline says why it cannot open it."""
    odd = tmp_path / os.fsdecode(b"m\xff.gguf")
    odd.symlink_to(smol_path)
    model = Model(odd)
    assert model.n_vocab == 49152
    with pytest.raises(UserError, match="its name is not UTF-8"):
        baselines.stock_greedy(model, model.tokenize("x"), 2, threads=1, n_ctx=256)


def test_a_split_model_loads_from_its_first_part_and_says_what_is_wrong_with_the_rest(tmp_path):
    """Large models come in parts (gguf-split: NAME-00001-of-00003.gguf); llama.cpp loads them
    from the first. Given another part, or with a part missing, it said only that it could not
    load the file (unsupported architecture, or corrupt); `models` gave the first part's size."""
    from conftest import run_cli
    from tiny_gguf import write_tiny_gguf

    from assistant.engine import read_info
    from assistant.errors import ModelError

    split, whole = tmp_path / "split", tmp_path / "whole"
    split.mkdir()
    whole.mkdir()
    first = write_tiny_gguf(split / "tiny.gguf", split=4)
    parts = sorted(split.glob("tiny-*-of-*.gguf"))
    assert first == parts[0] and len(parts) == 3 and first.name == "tiny-00001-of-00003.gguf"  # 13 tensors
    model = Model(first)  # llama.cpp finds the other parts: a tensor missing would fail the load
    assert model.detokenize(model.tokenize("def x")).strip() == "def x"
    one_file = Model(write_tiny_gguf(whole / "tiny.gguf"))  # the same weights in one file
    assert np.array_equal(model.token_embeddings([5, 40]), one_file.token_embeddings([5, 40]))  # superposed's
    info = read_info(first)
    assert info.parts == 3 and info.size_bytes == sum(p.stat().st_size for p in parts)
    listed = json.loads(run_cli("models", "--json", env={"ASSISTANT_MODEL_DIRS": str(split)}).stdout)[2:]
    assert [(r["path"], r["parts"]) for r in listed] == [(str(first), 3)], listed  # one model, not three rows
    with pytest.raises(ModelError, match="part 2 of 3 of a split model: give its first part, .*tiny-00001-of-00003"):
        Model(parts[1])
    parts[2].unlink()
    with pytest.raises(ModelError, match="the first of 3 parts of a split model, and tiny-00003-of-00003.gguf is miss"):
        Model(first)


def test_greedy_is_deterministic_and_matches_bare_loop(smol, smol_ctx):
    prompt = smol.tokenize(PROMPT)
    a = greedy_tokens(smol_ctx, smol_ctx.new_sequence(), prompt, 12)
    b = greedy_tokens(smol_ctx, smol_ctx.new_sequence(), prompt, 12)
    assert a == b
    bare = baselines.bare_loop(smol, prompt, 12, threads=smol_ctx.threads, n_ctx=512)
    assert bare["tokens"] == a


def test_three_sequences_in_one_batch_match_single_decodes(smol, smol_ctx):
    prompts = [smol.tokenize(p) for p in ("import os\n", "def f(x):\n", "class A:\n    def")]
    singles = []
    for p in prompts:
        seq = smol_ctx.new_sequence()
        singles.append(np.array(smol_ctx.prefill(seq, p)))
        seq.release()
    seqs = [smol_ctx.new_sequence() for _ in prompts]
    before = smol_ctx.counters.forward_passes
    out = smol_ctx.decode(dict(zip(seqs, prompts, strict=True)))
    assert smol_ctx.counters.forward_passes == before + 1  # one llama_decode for all three
    for seq, single in zip(seqs, singles, strict=True):
        np.testing.assert_allclose(out[seq], single, atol=2e-2, rtol=0)
        assert int(np.argmax(out[seq])) == int(np.argmax(single))


def test_padded_output_batch_gives_the_same_logits_and_leaves_no_cells(smol, smol_ctx):
    """A batch of n output rows may get one scratch row (cheaper on some CPU kernels): the
    real rows' logits must not change and the scratch cell must be gone afterwards."""
    import llama_cpp

    root = smol_ctx.new_sequence()
    smol_ctx.prefill(root, smol.tokenize(PROMPT))
    tokens = smol.tokenize(" a b c")[:3]
    results = {}
    for pad in (False, True):
        smol_ctx.set_output_padding(3, pad)
        forks = [root.fork() for _ in tokens]
        c0 = smol_ctx.counters.copy()
        out = smol_ctx.decode({f: [t] for f, t in zip(forks, tokens, strict=True)})
        work = smol_ctx.counters.since(c0)
        assert (work.forward_passes, work.padding_rows, work.tokens_evaluated) == (1, int(pad), 3 + pad)
        results[pad] = [np.array(out[f]) for f in forks]
        assert [len(f.tokens) for f in forks] == [len(root.tokens) + 1] * 3
        for f in forks:
            f.release()
        assert llama_cpp.llama_memory_seq_pos_max(smol_ctx._mem, smol_ctx._scratch) == -1
    for plain, padded in zip(results[False], results[True], strict=True):
        np.testing.assert_allclose(padded, plain, atol=5e-2, rtol=0)
        assert int(np.argmax(padded)) == int(np.argmax(plain))
    # may_pad=False (calibration): never padded, even where padding was measured cheaper
    forks = [root.fork() for _ in tokens]
    c0 = smol_ctx.counters.copy()
    smol_ctx.decode({f: [t] for f, t in zip(forks, tokens, strict=True)}, may_pad=False)
    assert smol_ctx.counters.since(c0).padding_rows == 0
    for f in forks:
        f.release()
    root.release()


@pytest.mark.parametrize("which", ["smol", "gemma"])
def test_a_cached_prompt_gives_the_logits_of_a_fresh_one_bit_for_bit(which, request):
    """An editor resends the same prompt: the answer must not depend on whether it was cached.
    The prompt's last token is always decoded alone, so both paths use the same kernels."""
    model = request.getfixturevalue(which)
    ctx = Context(model, n_ctx=512, n_seq_max=2)
    # on Gemma with AVX2 repacking this prompt's last token, batched, rounds ~1.5 off a lone one
    tokens = model.bos_tokens() + model.tokenize('def add(a, b):\n    """Add two numbers."""\n    return a +')
    seq = ctx.new_sequence()
    fresh = np.array(ctx.prefill(seq, tokens))
    ctx.decode_one(seq, int(np.argmax(fresh)))  # the cache now runs past the prompt
    c0 = ctx.counters.copy()
    cached = np.array(ctx.prefill(seq, tokens))
    assert ctx.counters.since(c0).tokens_reused == len(tokens) - 1
    np.testing.assert_array_equal(cached, fresh)
    ctx.close()


def test_decode_rows_streams_a_long_batch_in_place_with_the_rows_decode_copies(smol):
    """A batch longer than n_batch: `decode_rows` yields each chunk's rows as views, a piece
    per sequence per chunk in order, and they are the very rows `decode(all_logits=True)`
    copies and joins for the same batch."""
    ctx = Context(smol, n_ctx=256, n_seq_max=4, n_batch=8)
    work = [smol.tokenize("def add(a, b):\n    return a + b\n")[:11], smol.tokenize("x = [1, 2, 3]")[:6]]
    assert len(work[0]) == 11 and len(work[1]) == 6  # 17 rows: chunks of 8, 8, 1
    seqs = [ctx.new_sequence() for _ in work]
    pieces = []
    for seq, first, rows in ctx.decode_rows(dict(zip(seqs, work, strict=True))):
        assert not rows.flags.owndata and len(rows) <= 8
        pieces.append((seqs.index(seq), first, len(rows), rows.copy()))
    assert [p[:3] for p in pieces] == [(0, 0, 8), (0, 8, 3), (1, 0, 5), (1, 5, 1)]
    assert [s.tokens for s in seqs] == work
    for s in seqs:
        s.release()
    again = [ctx.new_sequence() for _ in work]
    joined = ctx.decode(dict(zip(again, work, strict=True)), all_logits=True)
    for i, seq in enumerate(again):
        streamed = np.concatenate([p[3] for p in pieces if p[0] == i])
        np.testing.assert_array_equal(joined[seq], streamed)
    ctx.close()


def test_decode_rows_bounds_the_logits_of_one_decode_by_bytes(gemma):
    """By default a chunk holds at most STREAM_BYTES of logits, whatever n_batch allows:
    64 rows of Gemma 3's 262k vocabulary, where 512 rows would be 0.5 GB in each of
    llama.cpp's two output buffers; the caller may choose the size."""
    from assistant.engine.context import STREAM_BYTES

    ctx = Context(gemma, n_ctx=256, n_seq_max=2, n_batch=512)
    tokens = (gemma.tokenize("def f(x):\n    return x + 1\n") * 20)[:70]
    rows_per_decode = STREAM_BYTES // (4 * gemma.n_vocab)
    assert rows_per_decode == 64
    seq = ctx.new_sequence()
    c0 = ctx.counters.copy()
    assert [(first, len(r)) for _, first, r in ctx.decode_rows({seq: tokens})] == [(0, 64), (64, 6)]
    assert ctx.counters.since(c0).forward_passes == 2
    seq.truncate(0)
    assert [len(r) for _, _, r in ctx.decode_rows({seq: tokens}, rows_per_decode=50)] == [50, 20]
    ctx.close()


@pytest.mark.parametrize("which", ["smol", "gemma"])
def test_probe_of_batch_rows_says_whether_they_match_single_decodes(which, request):
    """llama.cpp may round an n-row batch differently from n one-token decodes (on some
    quantisations by whole units of a logit); the probe must report what a direct comparison
    through `decode` finds, whichever it is on this machine, and leave no cells behind."""
    import llama_cpp

    model = request.getfixturevalue(which)
    ctx = Context(model, n_ctx=256, n_seq_max=2)
    tokens = (model.tokenize("def probe(x):\n    return [x, x + 1]\n") * 8)[:8]
    for n in (2, 4, 8):
        one = ctx.new_sequence()
        singles = [np.array(ctx.decode_one(one, t)) for t in tokens[:n]]
        one.release()
        many = ctx.new_sequence()
        rows = np.array(ctx.decode({many: tokens[:n]}, all_logits=True)[many])
        many.release()
        ctx.clear()
        direct = all(np.array_equal(r, s) for r, s in zip(rows, singles, strict=True))
        assert ctx.matches_single_rows(n) == direct, n
        assert llama_cpp.llama_memory_seq_pos_max(ctx._mem, ctx._scratch) == -1
    assert ctx.matches_single_rows(1)
    ctx.close()


def test_row_costs_are_not_cached_while_the_cache_is_full(smol, smol_ctx):
    """Timing n rows needs n free cells; a full cache must not pin 'unmeasurable' forever."""
    root = smol_ctx.new_sequence()
    filler = smol.tokenize(PROMPT)
    smol_ctx.prefill(root, (filler * smol_ctx.n_ctx)[: smol_ctx.n_ctx - 1])
    assert smol_ctx.output_cost(3) == float("inf")
    root.release()
    assert 0 < smol_ctx.output_cost(3) < float("inf")


def test_threads_past_ggmls_limit_are_refused_before_llama_cpp(smol):
    """An API caller's threads went to llama.cpp as an int32: 10**20 wrapped and aborted the
    process (std::bad_alloc)."""
    for threads in (513, 10**20, -1):
        with pytest.raises(UserError, match=f"threads must be 1 to 512 .*got {threads}"):
            Context(smol, n_ctx=256, n_seq_max=1, threads=threads)


def test_decode_prices_are_kept_across_contexts_and_only_for_the_same_set_up(smol, tmp_path, monkeypatch):
    """A one-shot CLI run must not spend seconds re-timing decodes a previous process timed."""
    book = PriceBook(tmp_path / "prices.json")
    first = Context(smol, n_ctx=256, n_seq_max=1, n_batch=64, threads=1, prices=book)
    cost = first.output_cost(3)
    first.close()
    assert 0 < cost < float("inf")

    def no_timing(self, n, repeats):
        raise AssertionError(f"timed {n} rows again")

    again = Context(smol, n_ctx=256, n_seq_max=1, n_batch=64, threads=1, prices=book)
    monkeypatch.setattr(Context, "_time_rows", no_timing)
    assert again.output_cost(3) == cost  # read back, not measured
    again.close()
    monkeypatch.undo()
    other = Context(smol, n_ctx=256, n_seq_max=1, n_batch=64, threads=2, prices=book)
    assert 3 not in other._raw_costs  # another thread count is another price
    other.close()
    # stale or corrupt records mean measuring again, never an error
    assert PriceBook(book.path, max_age_s=0).load(again._price_key) == {}
    book.path.write_text("{not json")
    assert book.load(again._price_key) == {}
    book.save("k", 2, 0.5)
    assert book.load("k") == {2: 0.5}


def test_prices_compared_together_are_timed_in_the_same_rounds(smol, tmp_path, monkeypatch):
    """A price is kept a week, so sizes a strategy compares (speculative's draft sizes,
    adadec's 1 and k rows, a size and its padded size) are timed round-robin, best of
    PRICE_REPEATS each: a burst of load on the host then hits all of them alike."""
    from assistant.engine.row_prices import PRICE_PROGRESS, PRICE_REPEATS

    ctx = Context(smol, n_ctx=256, n_seq_max=1, n_batch=64, threads=1, prices=PriceBook(tmp_path / "p.json"))
    real, timed = Context._time_rows, []

    def spy(self, n, repeats):
        timed.append((n, repeats))
        return real(self, n, repeats)

    monkeypatch.setattr(Context, "_time_rows", spy)
    heard = []  # minutes on a large model: the first measuring reports progress
    costs = ctx.output_costs(1, 3, progress=lambda *a: heard.append(a))
    assert timed == [(n, 1) for n in (1, 3, 4)] * (1 + PRICE_REPEATS)  # a warm-up each, then rounds
    total = 3 * (1 + PRICE_REPEATS)
    assert heard == [(PRICE_PROGRESS, done, total) for done in range(1, total + 1)]
    assert costs[1] == ctx._raw_costs[1] and costs[3] == ctx._raw_costs[4 if ctx._pads(3) else 3]
    timed.clear()
    assert ctx.output_costs(3, progress=lambda *a: heard.append(a))[3] == costs[3] and timed == []  # kept
    assert len(heard) == total  # and nothing to report
    timed.clear()
    ctx.weigh_padding(5, 40, progress=lambda *a: heard.append(a))  # 40 rows are never padded
    assert timed == [(n, 1) for n in (5, 6)] * (1 + PRICE_REPEATS) and len(heard) == total + len(timed)
    timed.clear()
    ctx.decode({ctx.new_sequence(): [1, 2, 3, 4, 5]}, all_logits=True)  # its padding choice: priced
    assert timed == []
    ctx.close()


def test_fork_and_truncate(smol, smol_ctx):
    root = smol_ctx.new_sequence()
    base = np.array(smol_ctx.prefill(root, smol.tokenize(PROMPT)))
    child = root.fork()
    assert child.tokens == root.tokens and child.id != root.id
    a, b = smol.tokenize(" a")[0], smol.tokenize(" b")[0]
    out = smol_ctx.decode({root: [a], child: [b]})
    assert not np.allclose(out[root], out[child])  # the branches really diverged
    after_a = np.array(out[root])
    child.truncate(len(root.tokens) - 1)
    again = smol_ctx.decode({child: [a]})[child]
    np.testing.assert_allclose(again, after_a, atol=2e-2)
    root.truncate(len(root.tokens) - 1)
    relogit = smol_ctx.decode({root: [root.tokens[-1]]})  # not a real step: re-evaluate last
    assert relogit[root].shape == base.shape
    child.release()
    root.release()


def test_prefix_reuse_counters(smol, smol_ctx):
    seq = smol_ctx.new_sequence()
    first = smol.tokenize("def greet(name):\n    return 'hi ' + name\n")
    smol_ctx.prefill(seq, first)
    c0 = smol_ctx.counters.copy()
    extra = smol.tokenize("\n\ndef bye():")
    logits = np.array(smol_ctx.prefill(seq, first + extra))
    work = smol_ctx.counters.since(c0)
    assert work.tokens_reused == len(first)
    assert work.tokens_evaluated == len(extra)
    # same prompt again: only the last token is re-evaluated for its logits
    c1 = smol_ctx.counters.copy()
    again = smol_ctx.prefill(seq, first + extra)
    assert smol_ctx.counters.since(c1).tokens_evaluated == 1
    np.testing.assert_allclose(again, logits, atol=2e-2)
    # a fresh context evaluating everything agrees with the reused one
    fresh = Context(smol, n_ctx=512, n_seq_max=1)
    np.testing.assert_allclose(fresh.prefill(fresh.new_sequence(), first + extra), logits, atol=2e-2)
    fresh.close()


@pytest.mark.parametrize("which", ["smol", "gemma"])
def test_embedding_input_matches_token_input(which, request):
    model = request.getfixturevalue(which)
    ctx = Context(model, n_ctx=256, n_seq_max=2, n_batch=64)
    tokens = model.bos_tokens() + model.tokenize("for i in range(10):")
    seq = ctx.new_sequence()  # the same batch shape as the embedding decode: the same kernels
    by_tokens = np.array(ctx.decode({seq: tokens})[seq])
    rows = model.token_embeddings(tokens)
    assert rows.shape == (len(tokens), model.n_embd_inp)
    by_embd = ctx.decode_embeddings(ctx.new_sequence(), rows, token_ids=tokens)
    np.testing.assert_allclose(by_embd, by_tokens, atol=5e-2)
    assert int(np.argmax(by_embd)) == int(np.argmax(by_tokens))
    ctx.close()


def test_prompt_longer_than_context_is_a_clear_error(smol):
    ctx = Context(smol, n_ctx=256, n_seq_max=1, n_batch=64)
    seq = ctx.new_sequence()
    with pytest.raises(ContextOverflow, match="context holds"):
        ctx.prefill(seq, smol.tokenize("x = 1\n" * 400))
    # the context is still usable afterwards
    assert ctx.prefill(seq, smol.tokenize("x = 1\n")).shape == (smol.n_vocab,)
    ctx.close()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_inside_a_load_callback_stops_the_load_and_reaches_the_caller(smol_path, signum):
    """llama.cpp calls back into Python all through a load (progress, logging), and ctypes
    drops an exception raised in a callback: a Ctrl-C landing there was lost and the load went
    on (and, in the CLI, the whole run). The same for SIGTERM (a timeout, a CI cancel)."""
    seen = []

    def progress(fraction):
        seen.append(fraction)
        if len(seen) == 1:  # the handler runs at the next Python code: inside a callback
            os.kill(os.getpid(), signum)

    before = signal.signal(signal.SIGTERM, signal.default_int_handler)  # as the CLI sets it
    try:
        with pytest.raises(KeyboardInterrupt):
            Model(smol_path, progress=progress)
        assert seen and max(seen) < 1.0  # stopped early, not loaded to the end
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        assert signal.getsignal(signal.SIGTERM) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGTERM, before)


def test_abort_cancels_a_decode_and_context_recovers(smol, smol_ctx):
    seq = smol_ctx.new_sequence()
    tokens = smol.tokenize("print('hello')\n" * 30)
    smol_ctx.abort()
    with pytest.raises(Cancelled):
        smol_ctx.prefill(seq, tokens)
    assert seq.tokens == []
    smol_ctx.reset_abort()
    assert smol_ctx.prefill(seq, tokens).shape == (smol.n_vocab,)
    assert len(seq) == len(tokens)


def test_batched_decode_splits_when_larger_than_n_batch(smol):
    ctx = Context(smol, n_ctx=1024, n_seq_max=2, n_batch=32)
    tokens = smol.tokenize("def f(x):\n    return x * 2\n" * 8)
    assert len(tokens) > 32
    seq = ctx.new_sequence()
    logits = np.array(ctx.prefill(seq, tokens))
    assert ctx.counters.forward_passes == -(-(len(tokens) - 1) // 32) + 1  # chunks, then the last token alone
    ref = Context(smol, n_ctx=1024, n_seq_max=1, n_batch=512)
    whole = ref.prefill(ref.new_sequence(), tokens)
    # different batch shapes take different matmul kernels in llama.cpp: close, not bit-equal
    np.testing.assert_allclose(whole, logits, atol=1.0)
    assert int(np.argmax(whole)) == int(np.argmax(logits))
    ctx.close()
    ref.close()


def test_numpy_blas_runs_on_one_thread_once_a_model_is_loaded(smol):
    """OpenBLAS workers spin after each call on the cores llama.cpp decodes on."""
    from threadpoolctl import threadpool_info

    blas = [p for p in threadpool_info() if p["user_api"] == "blas"]
    assert blas and all(p["num_threads"] == 1 for p in blas)


def test_long_all_logits_batches_are_neither_timed_nor_padded(smol, tmp_path):
    """Teacher forcing and rescoring decode long batches once each: timing whether one row
    more is cheaper (six decodes of that length) cost superposed's rescore 10 s a call."""
    book = PriceBook(tmp_path / "prices.json")
    ctx = Context(smol, n_ctx=256, n_seq_max=1, n_batch=64, threads=1, prices=book)
    tokens = (smol.tokenize(PROMPT) * 10)[:40]
    seq = ctx.new_sequence()
    c0 = ctx.counters.copy()
    rows = ctx.decode({seq: tokens}, all_logits=True)[seq]
    work = ctx.counters.since(c0)
    assert rows.shape == (40, smol.n_vocab)
    assert (work.forward_passes, work.padding_rows, work.tokens_evaluated) == (1, 0, 40)
    assert book.load(ctx._price_key) == {}  # nothing was timed
    seq.release()
    ctx.decode({ctx.new_sequence(): tokens[:3]}, all_logits=True)  # a short batch still weighs padding
    assert {3, 4} <= set(book.load(ctx._price_key))
    ctx.close()


def test_a_small_context_sizes_its_batches_by_what_llama_cpp_took(smol):
    """llama.cpp lowers n_batch to a small n_ctx (16 here; it still pads the cache to 256
    cells): a decode bigger than what it took aborted the process (GGML_ASSERT in
    `calibrate --n-ctx 64`, contrastive with `--n-ctx 16`)."""
    from assistant.config import Settings
    from assistant.decoding import Request
    from assistant.service import Service

    ctx = Context(smol, n_ctx=16, n_seq_max=2)
    try:
        assert ctx.n_batch <= 16
        seq = ctx.new_sequence()
        tokens = smol.tokenize("x = 1\n" * 40)[: ctx.n_ctx - 1]
        assert len(tokens) > ctx.n_batch or ctx.n_ctx <= ctx.n_batch + 1
        assert ctx.prefill(seq, tokens).shape == (smol.n_vocab,)
        seq.release()
    finally:
        ctx.close()
    service = Service(Settings(completion_model=str(smol.path), n_ctx=16))
    prompt = "def add(a, b):\n    # add two numbers and return the result as an integer value"
    done = service.run(Request(prompt=prompt, max_tokens=6, strategy="contrastive"))  # a 64-row window before
    assert done.finish_reason == "length" and len(done.tokens) == 6


def test_too_few_or_too_many_sequences_are_user_errors(smol, isolated_env, monkeypatch):
    """k branches need k sequences: where the user capped them, running short says which
    setting to raise (it was an EngineError naming no way to raise it); llama.cpp's own limit
    is said before it refuses the context (its failure read as too little memory)."""
    from assistant.config import load_settings
    from assistant.decoding import Request
    from assistant.errors import UserError
    from assistant.service import Service

    with pytest.raises(UserError, match="n_seq_max must be 1 to 255"):
        Context(smol, n_ctx=256, n_seq_max=256)
    monkeypatch.setenv("ASSISTANT_N_SEQ_MAX", "3")  # set by the user: a cap, not a starting size
    service = Service(load_settings({"completion_model": str(smol.path), "n_ctx": 256}))
    for strategy in ("contrastive", "superposed", "adadec"):  # the main sequence and 3 more
        options = {"k": "3", "threshold": "0", "schedule": "batch"} if strategy == "adadec" else {"k": "3"}
        if strategy == "superposed":
            options.update(rescore="true", corpus=str(ROOT / "assistant"))
        with pytest.raises(
            UserError, match="needs 4 sequences at once and the context has 3.*ASSISTANT_N_SEQ_MAX=6, or"
        ):
            service.run(Request(prompt="x = ", max_tokens=2, strategy=strategy, options=options))
    for strategy, options in (("contrastive", {}), ("adadec", {"threshold": "0", "schedule": "batch"})):
        big = Request(prompt="x = ", max_tokens=2, strategy=strategy, options={**options, "k": "300"})
        with pytest.raises(UserError, match=r"needs 301 sequences .*more than llama.cpp allows \(255\); lower k"):
            service.run(big)  # no setting gives 301: the hint must not name one
    # superposed's drafts share one sequence: only rescoring them takes one each
    plain = {"k": "5", "corpus": str(ROOT / "assistant")}
    assert len(service.run(Request(prompt="x = ", max_tokens=2, strategy="superposed", options=plain)).tokens) == 2
    # the sequences forked before the one that failed were given back: k=2 fits in 3
    assert service.run(Request(prompt="x = ", max_tokens=2, strategy="contrastive", options={"k": "2"})).tokens
    # adadec carries the winner's rollout into the next pause on one more sequence only if one is free
    options = {"k": "2", "threshold": "0", "schedule": "batch"}
    done = service.run(Request(prompt="x = ", max_tokens=12, strategy="adadec", options=options))
    assert len(done.tokens) == 12 and done.stats["pauses"] >= 1
    assert service.context().free_sequences == 2  # all but the service's main sequence


def test_a_strategy_gets_the_sequences_its_k_needs(smol_path):
    """`-o k=8` (9 sequences) failed on the default 8-sequence context, telling the user to set
    ASSISTANT_N_SEQ_MAX: with n_seq_max unset the context is made anew with as many sequences
    as the run needs (llama.cpp fixes the number when a context is made) and the run goes on;
    a smaller k afterwards keeps the bigger context."""
    from assistant.config import Settings
    from assistant.decoding import Request
    from assistant.errors import UserError
    from assistant.service import Service

    service = Service(Settings(completion_model=str(smol_path), n_ctx=256))
    first = service.context()
    assert first.n_seq_max == 8
    for strategy, k, size in (("contrastive", 8, 9), ("adadec", 9, 10), ("superposed", 3, 10)):
        options = {"k": str(k), "threshold": "0"} if strategy == "adadec" else {"k": str(k)}
        if strategy == "superposed":
            options["corpus"] = str(ROOT / "assistant")
        done = service.run(Request(prompt="x = ", max_tokens=3, strategy=strategy, options=options))
        assert len(done.tokens) == 3, strategy
        assert service.context().n_seq_max == size, strategy  # grown to k + 1; kept for a smaller k
    assert service.context() is not first
    assert service.context().free_sequences == 9  # all but the main sequence: nothing left held
    with pytest.raises(UserError, match="needs 301 sequences .*more than llama.cpp allows"):
        service.run(Request(prompt="x = ", max_tokens=2, strategy="contrastive", options={"k": "300"}))


def test_default_threads_are_one_per_physical_core(tmp_path, monkeypatch):
    """As llama.cpp's own default: hardware threads sharing a core (SMT) count once; where sysfs
    does not say, every usable CPU counts."""
    from assistant.engine import default_threads

    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0, 1, 2, 3})
    for cpu, siblings in enumerate(("0,2", "1,3", "0,2", "1,3")):
        (tmp_path / f"cpu{cpu}" / "topology").mkdir(parents=True)
        (tmp_path / f"cpu{cpu}" / "topology" / "thread_siblings_list").write_text(siblings + "\n")
    assert default_threads(tmp_path) == 2
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0, 1})  # one thread of each core allowed
    assert default_threads(tmp_path) == 2
    assert default_threads(tmp_path / "missing") == 2


def test_a_batch_too_small_for_the_sequences_is_a_user_error(smol):
    """llama.cpp keeps an output row per sequence in every batch and aborts the process
    (GGML_ASSERT) when n_batch, or the context it is lowered to, has fewer: ASSISTANT_N_BATCH=8
    killed every run with a core dump."""
    from assistant.errors import UserError

    with pytest.raises(UserError, match=r"n_seq_max \+ 1 = 9 rows .* n_batch is 8"):
        Context(smol, n_ctx=256, n_seq_max=8, n_batch=8)
    with pytest.raises(UserError, match=r"n_seq_max \+ 1 = 21 rows .* the context is 16 tokens"):
        Context(smol, n_ctx=16, n_seq_max=20)
    ctx = Context(smol, n_ctx=256, n_seq_max=8, n_batch=9)  # the least that works
    assert ctx.n_batch == 9
    ctx.close()


def test_nan_logits_are_an_engine_error_for_every_strategy(tmp_path):
    """A broken model file (or a backend's broken kernels) gives NaN logits: greedy wrote token
    0 over and over as an empty text with exit 0, and sample, top-h and contrastive died with
    numpy tracebacks. Now every strategy stops with one line saying what is wrong."""
    from conftest import run_cli
    from tiny_gguf import write_tiny_gguf

    broken = write_tiny_gguf(tmp_path / "broken.gguf", nan=True)
    for strategy in ("greedy", "sample", "top-h", "contrastive", "superposed", "adadec", "speculative"):
        own = ["-o", f"corpus={ROOT / 'assistant'}"] if strategy == "superposed" else []
        res = run_cli("generate", "def x(y):", "-m", str(broken), "-s", strategy, "-n", "4", *own)
        assert res.returncode == 1 and "NaN logits" in res.stderr and "Traceback" not in res.stderr, (strategy, res)
