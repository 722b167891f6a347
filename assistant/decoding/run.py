"""`Run`: everything a strategy needs for one request, and the step helpers they share.

A strategy asks the run to prefill the prompt (`start`), to evaluate a chosen token
(`step`), and hands every chosen token to `accept`, which applies the constraint, the stop
rules, max tokens, cancellation and incremental UTF-8 decoding, and returns the `Token`
event to stream. Keeping these here means every strategy stops the same way.
"""

from __future__ import annotations

import codecs
import secrets
import threading
import time
from collections.abc import Iterator
from types import ModuleType

import numpy as np

from ..engine import Context, Model, Sequence
from ..errors import Cancelled, ContextOverflow
from .constraint import Constraint
from .events import Done, Token
from .request import Request
from .stops import StopRules, TextGuard


def text_of(raw: bytes) -> str:
    """A model's output bytes as text. Invalid bytes show as U+FFFD, but a character the
    last token cut through (one byte-fallback token of several) is left out, as streaming
    leaves it out: it is not text, and an editor would insert U+FFFD into the file."""
    return codecs.getincrementaldecoder("utf-8")("replace").decode(raw)


class Run:
    def __init__(
        self,
        *,
        request: Request,
        model: Model,
        context: Context,
        prompt_tokens: list[int],
        ops: ModuleType,
        strategy: str = "",
        guard: TextGuard | None = None,
        constraint: Constraint | None = None,
        cancel: threading.Event | None = None,
        sequence: Sequence | None = None,
        progress=None,
    ):
        self.request = request
        self.model = model
        self.context = context
        self.prompt_tokens = prompt_tokens
        self.ops = ops
        self.strategy = strategy
        self.constraint = constraint
        self.cancel = cancel or threading.Event()
        self.stops = StopRules(request, guard)
        self._rng: np.random.Generator | None = None
        self.seed: int | None = None  # the seed of `rng`, once chance has chosen something
        self.seq = sequence
        self.tokens: list[int] = []
        self.text = ""
        self.emitted = 0
        self.finish_reason: str | None = None
        self.final_end: int | None = None
        self._utf8 = codecs.getincrementaldecoder("utf-8")("replace")
        self._counters0 = context.counters.copy()
        self._t0 = time.perf_counter()
        self._max_tokens = request.max_tokens
        self.notes: list[str] = []  # things the user should know (e.g. a default was used)
        self.extra_stats: dict = {}  # strategy-specific figures reported in Done.stats
        self.progress = progress  # (label, done, total) for long preparation work; set by interfaces

    @property
    def rng(self) -> np.random.Generator:
        """The run's random numbers, from the request's seed or, where it gives none, a fresh
        one that `stats` reports: a sampled run worth keeping can then be made again."""
        if self._rng is None:
            seed = self.request.sampling.seed
            self.seed = secrets.randbits(63) if seed is None else seed
            self._rng = np.random.default_rng(self.seed)
        return self._rng

    # -- engine steps -----------------------------------------------------------------------
    def start(self) -> np.ndarray | None:
        """Prefill the prompt into the main sequence (reusing any cached prefix).

        Returns the next-token logits, or None when the run is already over (max_tokens=0,
        cancelled before start)."""
        if self.seq is None:
            self.seq = self.context.new_sequence()
        if self.cancel.is_set():
            self.finish("cancelled")
            return None
        self._t_prefill = time.perf_counter()  # the strategy's set-up (an n-gram store, ...) ends here
        try:
            logits = self.context.prefill(self.seq, self.prompt_tokens)
        except Cancelled:
            self.finish("cancelled")
            return None
        self._t_prompt = time.perf_counter()
        if self._max_tokens == 0:
            self.finish("length")
            return None
        return logits

    def step(self, token: int) -> np.ndarray | None:
        """Evaluate one chosen token on the main sequence; None if the run had to end."""
        try:
            return self.context.decode_one(self.seq, token)
        except Cancelled:
            self.finish("cancelled")
        except ContextOverflow:
            self.finish("length")
        return None

    def constrain(self, logits: np.ndarray) -> np.ndarray:
        """Apply the active constraint's mask (a copy; the engine's view stays intact)."""
        if self.constraint is None:
            return logits
        allowed = self.constraint.allowed()
        if allowed is None:
            return logits
        return self.ops.masked(logits, allowed)

    # -- bookkeeping ------------------------------------------------------------------------
    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    def accept(self, token: int, *, cancellable: bool = True) -> Token | None:
        """Record a chosen token; returns the text that became safe to show (or None).
        A finished run takes no more tokens. `cancellable=False`: a token already computed
        (a draft being released) is kept even when a cancel is pending."""
        if self.finished:
            return None
        self._t_last = time.perf_counter()
        if self.constraint is not None:
            self.constraint.advance(token)
        if self.model.is_eog(token) and not self.request.ignore_eos:
            self.tokens.append(token)
            return self.finish("stop")
        self.tokens.append(token)
        self.text += self._utf8.decode(self.model.piece(token))
        reason, end = self.stops.check(self.text)
        if reason is not None:
            return self.finish(reason, end)
        if len(self.tokens) >= self._max_tokens:
            return self.finish("length")
        if cancellable and self.cancel.is_set():
            return self.finish("cancelled")
        if end > self.emitted:
            new = self.text[self.emitted : end]
            self.emitted = end
            return Token(new, token)
        return None

    def take(self, token: int, *, cancellable: bool = True) -> Iterator[Token]:
        """`accept` for generators: `yield from run.take(token)` streams what it releases."""
        event = self.accept(token, cancellable=cancellable)
        if event is not None:
            yield event

    def finish(self, reason: str, end: int | None = None) -> Token | None:
        """End the run; returns the last piece of text to show, if any."""
        if self.finish_reason is not None:
            return None
        self._utf8.reset()  # bytes of a character the last token cut through: not text (text_of)
        if end is None:
            end = self.stops.finish(self.text)
        end = max(end, self.emitted)  # never take back text already shown
        if self.stops.no_valid_end and reason != "cancelled":
            reason = "no_valid_infill"  # the syntax guard found no stop where the file parses
        self.finish_reason = reason
        self.final_end = end
        new = self.text[self.emitted : end]
        self.emitted = end
        return Token(new) if new else None

    def restart(self) -> None:
        """Forget the generated text to try again from the prompt (nothing shown is lost:
        only guards that hold text back until the end allow a restart)."""
        if self.emitted:
            raise RuntimeError("cannot restart a run that already showed text")
        self.tokens, self.text, self.finish_reason, self.final_end = [], "", None, None
        self._utf8.reset()
        guard = self.stops.guard
        if guard is not None and hasattr(guard, "reset"):
            guard.reset()
        self.stops = StopRules(self.request, guard)
        self._max_tokens = self.request.max_tokens

    @property
    def final_text(self) -> str:
        return self.text[: self.final_end if self.final_end is not None else self.emitted]

    def stats(self) -> dict:
        now = time.perf_counter()
        work = self.context.counters.since(self._counters0).to_dict()
        work["decode_seconds"] = work.pop("seconds")  # time inside llama_decode
        t_prompt = getattr(self, "_t_prompt", now)
        t_prefill = getattr(self, "_t_prefill", t_prompt)  # set before _t_prompt, so never later
        gen_s = max(now - t_prompt, 1e-9)
        n = len(self.tokens)
        # llama.cpp's eval rate: tokens after the first over the time from the prompt's logits
        # to the last token. Timed from the prompt, not from the first token shown: a strategy
        # may release its tokens in a burst at the end (superposed) or after a lookahead
        t_last = getattr(self, "_t_last", now)
        decode_rate = (n - 1) / (t_last - t_prompt) if n > 1 and t_last > t_prompt else 0.0
        return {
            "prompt_tokens": len(self.prompt_tokens),
            "generated_tokens": n,
            "seconds": round(now - self._t0, 6),
            "setup_seconds": round(t_prefill - self._t0, 6),  # before the prompt: loading what the strategy needs
            "prompt_seconds": round(t_prompt - t_prefill, 6),
            "tokens_per_second": round(n / gen_s, 3) if n else 0.0,
            "decode_tokens_per_second": round(decode_rate, 3),
            **work,
            **({"seed": self.seed} if self.seed is not None else {}),  # only where chance chose tokens
            **self.extra_stats,
            **({"notes": list(self.notes)} if self.notes else {}),
        }

    def done(self, texts: list[str] | None = None) -> Done:
        if self.finish_reason is None:
            self.finish("stop")
        if self.finish_reason == "no_valid_infill":  # said once, however many attempts a strategy made
            self.notes.append("no stop was found where the code around the cursor parses: nothing to insert")
        complete = getattr(self.constraint, "complete", None)  # a plugin's constraint may not say
        unmatched = complete is not None and not complete()
        what = getattr(self.constraint, "description", "constraint")
        if self.finish_reason == "length" and unmatched:
            self.notes.append(  # a JSON object cut mid-way looks like output; say it is not
                f"the token limit came before the {what} was matched: "
                "the text is incomplete; raise the limit (--max-tokens)"
            )
        if self.finish_reason == "stop" and unmatched:  # it ended as if the match were whole: say it is not
            stuck = getattr(self.constraint, "dead_end", None)
            why = (
                "nothing can follow it (a rule no text matches?)"
                if stuck is not None and stuck()
                else "a stop ended it"
            )
            self.notes.append(f"the text ended before the {what} was matched: {why}; the text is incomplete")
        if self.finish_reason == "length" and len(self.tokens) < self._max_tokens:  # the context ended it
            self.notes.append(  # no count in it, as below
                f"the context ({self.context.n_ctx} tokens) filled before the token limit ({self._max_tokens}): "
                "the text is cut short; raise --n-ctx"
            )
        trained = self.model.n_ctx_train
        if trained and len(self.prompt_tokens) + len(self.tokens) > trained:  # llama.cpp only logs it
            self.notes.append(  # no count in it: an eval says each distinct note once
                f"prompt and output ran past the {trained} tokens the model was trained on: the text beyond may be poor"
            )
        return Done(
            text=self.final_text,
            finish_reason=self.finish_reason or "stop",
            stats=self.stats(),
            texts=texts,
            tokens=list(self.tokens),
        )
