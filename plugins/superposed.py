"""`superposed`: Superposed Decoding (arXiv 2405.18400): k drafts for the cost of one.

One sequence; every step feeds ONE input embedding, the weighted superposition of the drafts'
last-token embeddings (weights: softmax of the drafts' cumulative scores), and shares the
resulting distribution across drafts. Each draft then scores the n_token_sample most likely
tokens of that (very sharp, temp 0.06) distribution, geometrically interpolated with its own
n-gram probabilities, which is what makes the drafts differ:
    s_i(v) = (1 - alpha) * log p(v) + alpha * log q_i(v),   q_i = sum_m w_m P(v | last m tokens)
(a token the draft's n-grams never saw gets (1 - alpha) * log p(v) - penalty: the paper's score
when no candidate matches, used per token so that a small corpus still leaves k drafts). The best
k of all (draft, token) pairs become the new drafts; drafts that end go to a finished list.
Final drafts are ranked by perplexity of their scores (or by true model log-probability with
`rescore`, one extra batched pass). The n-gram store comes from a corpus you name (default:
the source files of the request's git repository, the current one for `generate` and the
file's for `complete`; the Python stdlib where there is none, as in `eval` and `bench`),
cached on disk.
"""

from __future__ import annotations

import codecs
import math
from dataclasses import dataclass

import numpy as np

from assistant import hookimpl
from assistant.decoding import Drafts, Run, Strategy, option, require, text_of
from assistant.errors import Cancelled, ContextOverflow, PluginError
from assistant.ngrams import MAX_CONTEXT
from assistant.ops import numpy_ops

MAX_DRAFTS = 254


@dataclass
class SuperposedOptions:
    k: int = option(3, f"number of drafts (at most {MAX_DRAFTS})")
    alpha: float = option(0.54, "weight of the n-gram term in the geometric interpolation")
    temp: float = option(0.06, "temperature of the shared LM distribution (sharp on purpose)")
    n_token_sample: int = option(9, "tokens of the shared distribution each draft may extend with")
    ngram_weights: str = option("0.01,0.04,0.15,0.18,0.12", "weights of bigram..6-gram probabilities")
    penalty: float = option(200.0, "score penalty for a candidate with no n-gram match")
    corpus: str = option(
        "", "n-gram corpus: a file or folder, 'stdlib', or '' for the request's git repository (else the stdlib)"
    )
    rescore: bool = option(False, "rank final drafts by true model log-probability (one batched pass)")

    def __post_init__(self):
        require(self.k >= 1, "k", self.k, ">= 1")
        # as many as llama.cpp's 255 sequences hold with the run's own, which rescore=true needs;
        # without it nothing stopped 10**20 drafts, whose number grows n_token_sample-fold a step
        # (6 tokens took 13 s and 900 MB, each step more)
        require(self.k <= MAX_DRAFTS, "k", self.k, f"<= {MAX_DRAFTS}")
        require(self.n_token_sample >= 1, "n_token_sample", self.n_token_sample, ">= 1")
        # one token a step extends the one draft there is at the start: k drafts were 1, silently
        require(self.k == 1 or self.n_token_sample >= 2, "n_token_sample", self.n_token_sample, ">= 2 when k > 1")
        require(self.temp > 0, "temp", self.temp, "> 0")
        require(0.0 <= self.alpha < 1.0, "alpha", self.alpha, "in [0, 1)")
        require(self.penalty >= 0, "penalty", self.penalty, ">= 0 (it ranks unmatched candidates below matched ones)")
        try:
            self.weights = [float(w) for w in str(self.ngram_weights).split(",") if w.strip()]
        except ValueError:
            raise ValueError(f"ngram_weights must be comma-separated numbers: {self.ngram_weights!r}") from None
        if not 1 <= len(self.weights) <= MAX_CONTEXT or not all(0 <= w < math.inf for w in self.weights):
            raise ValueError(
                f"ngram_weights must be 1 to {MAX_CONTEXT} numbers >= 0 (bigram, trigram, ...), "
                f"got {self.ngram_weights!r}"
            )


@dataclass
class Draft:
    tokens: list[int]
    score: float
    raw: bytes = b""
    stops: object = None
    constraint: object = None
    finish: str | None = None
    text: str | None = None  # final (cut) text once finished
    eog: int | None = None  # the end-of-generation token that finished it, counted as the others count it
    pending: bytes = b""  # the start of a character its last token left unfinished

    def extend(self, run: Run, token: int, score: float, pending: bytes = b"") -> Draft:
        child = Draft(self.tokens + [token], score, self.raw + run.model.piece(token), pending=pending)
        child.stops = self.stops.fork()  # every draft has its rules: the root's are the run's fork
        if self.constraint is not None:
            child.constraint = self.constraint.fork()
            child.constraint.advance(token)
        return child

    @property
    def log_perplexity(self) -> float:
        """What drafts are ranked by (the log keeps the order; exp overflowed for scores made of
        large no-match penalties)."""
        return -self.score / max(1, len(self.tokens))


def _utf8_tail(pending: bytes, piece: bytes) -> bytes | None:
    """The unfinished character's bytes after `pending + piece`, or None where they are not
    UTF-8. The drafts share one distribution: a byte-fallback token that finishes another
    draft's character is likely there, and as a draft's next token it spelled U+FFFD."""
    if not pending and piece.isascii():
        return b""
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    try:
        decoder.decode(pending + piece)
    except UnicodeDecodeError:
        return None
    return decoder.getstate()[0]


# model file -> how closely its logits for a token's input embedding follow those for the token
_INPUT_AGREEMENT: dict[str, float] = {}
MIN_INPUT_AGREEMENT = 0.99  # correlation: 1.000 on both bundled models, 0.61 on Gemma without its scale


def _check_embedding_input(run: Run, logits) -> np.ndarray:
    """The prompt's logits (a copy: the check decodes), after checking once per model that an
    input embedding gives the logits its token gives. Superposed decoding feeds embeddings, and
    a graph that changes token inputs on their own path (Gemma scales them, handled in
    `Model.token_embeddings`; other architectures may too) would make every draft nonsense
    without a word. A note says so; the drafts are still made."""
    logits = np.array(run.ops.to_numpy(logits), dtype=np.float32)
    key = str(run.model.path)
    if key not in _INPUT_AGREEMENT and run.context.free_sequences:
        last = run.prompt_tokens[-1]
        fork = run.seq.fork()
        try:
            fork.truncate(len(run.prompt_tokens) - 1)
            rows = run.model.token_embeddings([last])
            with run.context.uncounted():  # once per model and process: not this run's passes
                by_input = np.array(run.context.decode_embeddings(fork, rows, token_ids=[last]), dtype=np.float64)
            _INPUT_AGREEMENT[key] = float(np.corrcoef(logits.astype(np.float64), by_input)[0, 1])
        except (Cancelled, ContextOverflow):
            pass  # checked another time
        finally:
            fork.release()
    agreement = _INPUT_AGREEMENT.get(key, 1.0)
    if not agreement >= MIN_INPUT_AGREEMENT:
        run.notes.append(
            f"superposed: on {run.model.architecture} the logits of a token's input embedding differ from the "
            f"token's own (correlation {agreement:.2f}): its graph treats token inputs in a way embedding input "
            "skips, and the drafts may be nonsense"
        )
    return logits


def _best_distinct(drafts: list, k: int) -> list:
    """The k most likely drafts with distinct texts: a draft that ends in the text of one
    already finished (reached in other tokens) took a finished slot and pushed a distinct one
    out (k=5 under a regex gave 3 drafts)."""
    best: dict[str, Draft] = {}
    for d in sorted(drafts, key=lambda d: d.log_perplexity):
        best.setdefault(d.text, d)
    return list(best.values())[:k]


class Superposed(Strategy):
    name = "superposed"
    summary = "k drafts from one sequence: superposed input embeddings + n-gram separation."
    Options = SuperposedOptions
    reads_temperature = False

    def sequences(self) -> int:
        # the drafts share the run's one sequence; only rescoring forks one per draft (the
        # once-per-model input check takes a fork only where one is free)
        return self.options.k + 1 if self.options.rescore else 1

    def generate(self, run: Run):
        from assistant.ngrams import get_store

        o = self.options
        model, ctx, ops = run.model, run.context, run.ops
        if model.architecture in ("gemma3n", "gemma4"):
            raise PluginError(f"superposed decoding does not work on {model.architecture} (per-layer token inputs)")

        def building(label: str, done: int, total: int) -> None:
            if run.cancel.is_set():  # Ctrl-C while a large corpus is read: stop there, store nothing
                raise Cancelled("cancelled while building the n-gram store")
            if run.progress is not None:
                run.progress(label, done, total)

        try:
            store = get_store(model, o.corpus or None, progress=building, workspace=run.request.workspace)
        except Cancelled:
            run.finish("cancelled")
            yield run.done(texts=[])
            return
        run.extra_stats.update(ngram_corpus=store.corpus, ngram_tokens=store.n_tokens)
        logits = run.start()
        if logits is not None:
            logits = _check_embedding_input(run, logits)
        root = Draft([], 0.0, stops=run.stops.fork())
        if run.constraint is not None:
            root.constraint = run.constraint.fork()
        alive, finished = [root], []
        steps, cancelled = 0, False
        while logits is not None and alive and steps < run.request.max_tokens:
            if run.cancel.is_set():
                cancelled = True
                break
            alive, done_now = self._step(run, o, store, ops, logits, alive)
            finished = _best_distinct(finished + done_now, o.k)
            steps += 1
            if alive:
                yield Drafts([text_of(d.raw) for d in alive], [d.score for d in alive])
            if len(finished) >= o.k or not alive or steps >= run.request.max_tokens:
                break
            weights = np.exp(np.array([d.score for d in alive]) - max(d.score for d in alive))
            weights /= weights.sum()
            mix = weights @ model.token_embeddings([d.tokens[-1] for d in alive])
            try:
                logits = ctx.decode_embeddings(run.seq, mix)
            except Cancelled:
                cancelled = True
                break
            except ContextOverflow:
                break
        # cancelled: the drafts so far, ranked without the rescoring pass
        ranked = self._rank(run, o, alive + finished, rescore=o.rescore and not cancelled)
        texts = [self._final_text(run, d) for d in ranked]
        run.extra_stats.update(drafts=len(ranked), superposed_steps=steps)
        if ranked:  # the best draft becomes the run's text (stop rules applied as for any strategy)
            yield Drafts(texts, [d.score for d in ranked], final=True)
            end = [ranked[0].eog] if ranked[0].eog is not None else []
            for token in ranked[0].tokens + end:
                yield from run.take(token, cancellable=False)  # written already: nothing to cancel
                if run.finished:
                    break
        if not run.finished:
            reason = "cancelled" if cancelled else ranked[0].finish if ranked and ranked[0].finish else "length"
            run.finish(reason)
        yield run.done(texts=texts)

    def _step(self, run, o, store, ops, logits, alive):
        """Score (draft, token) pairs on the shared distribution; returns (alive, finished)."""
        model = run.model
        x = ops.to_numpy(logits)
        masks = [d.constraint.allowed() for d in alive if d.constraint is not None]
        masks = [np.asarray(m) for m in masks if m is not None]
        if masks:  # draw the shared candidates from tokens some draft may take
            x = np.array(x, dtype=np.float32)
            x[~np.logical_or.reduce(masks)] = -np.inf
        # the temperature keeps the order, so only the candidates need it (a pass over the
        # whole vocabulary, and a partition of it, cost ~1 ms a step on 262k logits)
        values, top = numpy_ops.top_k(x, o.n_token_sample)
        logp = (values.astype(np.float32) / np.float32(o.temp)).astype(np.float64)
        logp = logp - (np.max(logp) + np.log(np.sum(np.exp(logp - np.max(logp)))))
        pairs = []
        context = list(run.prompt_tokens[-8:])
        sources = alive[:1] if not alive[0].tokens else alive  # first step: the drafts are identical
        for i, d in enumerate(sources):
            ok = np.ones(len(top), bool)
            if d.constraint is not None:
                allowed = d.constraint.allowed()
                if allowed is not None:
                    ok = np.asarray(allowed)[top]
            q = store.probs(context + d.tokens, top, o.weights)
            # the paper's geometric mix; a token the n-grams never saw takes the paper's
            # no-match penalty instead of log 0, so it ranks below every matched one but a small
            # corpus (few matches) still leaves k drafts rather than one
            with np.errstate(divide="ignore", invalid="ignore"):  # log 0, and 0 x -inf at alpha=0: not taken
                s = np.where(q > 0, (1 - o.alpha) * logp + o.alpha * np.log(q), (1 - o.alpha) * logp - o.penalty)
            s[~ok] = -np.inf
            pairs.extend((d.score + float(sv), i, int(v)) for sv, v in zip(s, top, strict=True) if np.isfinite(sv))
        pairs.sort(key=lambda p: -p[0])
        new_alive, done = [], []
        # the best 2k pairs, where a pair spelling the text of a better one in other tokens
        # ("aa" + "b" after "a" + "ab") counts as none: it would take a draft's slot for nothing
        texts, considered = set(), 0
        for score, i, v in pairs:
            if considered >= 2 * o.k:
                break
            parent = sources[i]
            if model.is_eog(v):
                considered += 1
                d = Draft(parent.tokens, score, parent.raw, stops=parent.stops.fork(), finish="stop", eog=v)
                d.text = self._cut(run, d)
                done.append(d)
                continue
            piece = model.piece(v)
            raw, pending = parent.raw + piece, _utf8_tail(parent.pending, piece)
            if raw in texts or pending is None:
                continue
            texts.add(raw)
            considered += 1
            if len(new_alive) >= o.k:
                continue
            child = parent.extend(run, v, score, pending)
            reason, end = child.stops.check(text_of(child.raw))
            if reason is not None:
                child.finish, child.text = reason, text_of(child.raw)[:end]
                done.append(child)
            else:
                new_alive.append(child)
        return new_alive, done

    def _cut(self, run, d: Draft) -> str:
        text = text_of(d.raw)
        return text[: d.stops.finish(text)] if d.stops is not None else text

    def _final_text(self, run, d: Draft) -> str:
        return d.text if d.text is not None else self._cut(run, d)

    def _rank(self, run, o, drafts, *, rescore: bool):
        """The k best drafts with distinct texts. Drafts the syntax guard found no valid end for
        are dropped while any has one, however likely: a long draft that never closes a bracket
        can be the most fluent, and was the answer (an empty insertion)."""
        drafts = [d for d in drafts if d.tokens]
        for d in drafts:
            d.text = self._final_text(run, d)
        usable = [d for d in drafts if not d.stops.no_valid_end]
        drafts = usable or drafts
        if rescore and drafts:
            scores = self._true_logprobs(run, drafts)
            for d, s in zip(drafts, scores, strict=True):
                d.score = s
        return _best_distinct(drafts, o.k)  # drafts cut to the same text are one alternative, not two

    def _true_logprobs(self, run, drafts) -> list[float]:
        """Sum of the model's log-probabilities of each draft after the prompt: the drafts are
        teacher-forced together by `decode_rows`, which reads their rows in place a bounded
        chunk at a time (a row is 1 MB on Gemma 3's vocabulary; three 384-token drafts).
        Near the end of the context their cells do not fit together; one at a time they do
        (each is no longer than the single sequence that drafted it)."""
        try:
            return self._teacher_forced(run, drafts)
        except ContextOverflow:
            return [self._teacher_forced(run, [d])[0] for d in drafts]

    def _teacher_forced(self, run, drafts) -> list[float]:
        ctx, ops = run.context, run.ops
        run.seq.truncate(len(run.prompt_tokens) - 1)
        forks = dict(zip(run.seq.forks(len(drafts)), drafts, strict=True))
        scores = dict.fromkeys(forks, 0.0)
        work = {f: [run.prompt_tokens[-1], *d.tokens[:-1]] for f, d in forks.items()}
        try:
            for fork, first, rows in ctx.decode_rows(work):
                targets = forks[fork].tokens[first : first + len(rows)]
                scores[fork] += sum(float(row[t]) - ops.logsumexp(row) for row, t in zip(rows, targets, strict=True))
            return list(scores.values())
        finally:
            for f in forks:
                f.release()


@hookimpl
def register_strategies(register):
    register(Superposed)
