"""The Service every interface calls: loaded models by role, their contexts, the plugin
registry and settings. Requests to one context run one at a time (a lock per context)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from . import bundled, engine, ops  # noqa: F401  engine before ops: llama.cpp loads before numpy (engine/__init__)
from .config import Settings, cache_dir
from .context import build_prompt
from .context.syntax import known_languages
from .decoding import Constraint, Done, Event, Request, Run, Token
from .engine import Context, Model, PriceBook, check_gguf_path, check_kv_fits
from .errors import Cancelled, EngineError, PluginError, UserError
from .registry import BUILTIN_PREFIX, Registry, get_registry


class Service:
    def __init__(
        self,
        settings: Settings,
        registry: Registry | None = None,
        *,
        on_progress: Callable[[str, float], None] | None = None,
        on_warning: Callable[[str], None] | None = None,
    ):
        """`on_progress(name, fraction)` follows a model's loading; `on_warning(line)` hears
        what the user should know before slow work starts (nothing is said without it)."""
        self.settings = settings
        self.on_warning = on_warning
        self.registry = registry or get_registry()
        self.on_progress = on_progress
        self._models: dict[str, Model] = {}
        self._contexts: dict[str, Context] = {}
        self._main: dict[str, object] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    # -- models -----------------------------------------------------------------------------
    def model_path(self, role: str = bundled.COMPLETION) -> Path:
        configured = self.settings.chat_model if role == bundled.CHAT else self.settings.completion_model
        return check_gguf_path(configured) if configured else bundled.default_path(role)

    def model(self, role: str = bundled.COMPLETION) -> Model:
        with self._guard:
            path = self.model_path(role)
            key = str(path.resolve())
            if key not in self._models:
                progress = None
                if self.on_progress is not None:
                    name = path.name

                    def progress(fraction, _name=name):
                        self.on_progress(_name, fraction)

                self._models[key] = Model(
                    path,
                    n_gpu_layers=self.settings.n_gpu_layers,
                    rpc_servers=self.settings.rpc_servers,
                    progress=progress,
                )
            return self._models[key]

    def context(self, role: str = bundled.COMPLETION) -> Context:
        model = self.model(role)
        key = str(model.path.resolve())
        with self._guard:
            if key not in self._contexts:
                self._warn_beyond_training(model)
                self._contexts[key] = self._new_context(model, self.settings.n_seq_max)
                self._locks[key] = threading.Lock()
            return self._contexts[key]

    def _new_context(self, model: Model, n_seq_max: int) -> Context:
        s = self.settings
        return Context(
            model,
            n_ctx=s.n_ctx,
            n_seq_max=n_seq_max,
            n_batch=s.n_batch,
            threads=s.threads,
            prices=PriceBook(cache_dir() / "decode_prices.json"),
        )

    def _warn_beyond_training(self, model: Model) -> None:
        """llama.cpp allocates a context's KV cache whole: `--n-ctx 1000000` on the bundled
        Gemma (trained on 32768) took 18 GB and a minute before the first token, without a
        word; and text past the trained length is unreliable (a run notes it when it gets
        there). Said of a size the user set, and only where the context can be made at all."""
        s, trained = self.settings, model.n_ctx_train
        source = s.sources.get("n_ctx")
        if self.on_warning is None or source is None or not trained or s.n_ctx <= trained:
            return
        check_kv_fits(model, s.n_ctx)  # one that cannot is refused, and the warning would be noise
        self.on_warning(
            f"{source} asks for a context of {s.n_ctx} tokens and {model.path.name} was trained on {trained}: "
            f"llama.cpp allocates its cache for all of them at once, and text past {trained} tokens may be poor"
        )

    def _sized(self, key: str, sequences: int) -> Context:
        """The context, made anew with more sequences where a run needs more than it has (k
        drafts or candidates each take one; llama.cpp fixes the number when a context is made)
        and the user left n_seq_max unset. A set n_seq_max is the user's cap, and a run that
        needs more than it, or than any context holds, is refused here, before it starts, with
        the fix. Called with the context's lock held."""
        ctx = self._contexts[key]
        if sequences <= ctx.n_seq_max:
            return ctx
        if sequences > ctx.most_sequences or "n_seq_max" in self.settings.sources:
            ctx.refuse_sequences(sequences)
        model = ctx.model
        with self._guard:  # held while it is made, as `context` holds it: no one makes another meanwhile
            del self._contexts[key]  # the old one goes first: two KV caches of a large model may not fit
            self._main.pop(key, None)
            del ctx  # freed here unless a caller still holds it (then it stays usable to that caller)
            bigger = self._contexts[key] = self._new_context(model, sequences)
        return bigger

    # -- requests ---------------------------------------------------------------------------
    def check(self, request: Request):
        """(strategy class, parsed options) of a request, or a UserError saying what is wrong
        with it: lets a long job (an eval) refuse bad input before it starts."""
        request.validate()
        strategy_cls = self.registry.strategy(request.strategy)
        options = strategy_cls.parse_options(request.options)
        infill_only = strategy_cls.needs_syntax_guard
        if infill_only and not request.is_infill:
            # said before an eval opens its results file and shows its bar, not at its first problem
            raise UserError(f"{request.strategy} needs an infill request (a prefix and a suffix)")
        if (
            request.is_infill
            and (request.syntax_valid or infill_only)
            and request.language is None
            and request.filename
        ):
            # a file of a kind no parser knows would be checked as Python: a Markdown file's
            # middle would never "parse" (and a heading would, as a comment)
            why = "--syntax-valid" if request.syntax_valid else f"strategy {request.strategy}"
            raise UserError(
                f"{why} checks that the file parses, and {request.filename} is of no language it knows "
                f"({known_languages()})"
            )
        return strategy_cls, options

    def generate(
        self,
        request: Request,
        *,
        role: str = bundled.COMPLETION,
        cancel: threading.Event | None = None,
        constraint: Constraint | None = None,
        progress: Callable[[str, int, int], None] | None = None,
    ) -> Iterator[Event]:
        """Run a request through its strategy, yielding events (the last one is `Done`)."""
        strategy_cls, options = self.check(request)
        if strategy_cls.needs_syntax_guard and request.is_infill:
            request.syntax_valid = True
        strategy = strategy_cls(options)
        model = self.model(role)
        self.context(role)
        key = str(model.path.resolve())
        with self._locks[key]:
            context = self._sized(key, strategy.sequences())
            context.reset_abort()
            prompt = build_prompt(model, request, context.n_ctx)
            main = self._main.get(key)
            if main is None:
                main = self._main[key] = context.new_sequence()  # kept for prefix reuse
            run = Run(
                request=request,
                model=model,
                context=context,
                prompt_tokens=prompt.tokens,
                ops=self.ops(),
                strategy=strategy_cls.name,
                guard=prompt.guard,
                constraint=constraint,
                cancel=cancel,
                sequence=main,
                progress=progress,
            )
            ended, shown = False, []
            try:
                for event in strategy.generate(run):
                    ended = isinstance(event, Done)
                    if ended and (tail := _unshown(event, shown)) is not None:
                        yield tail
                    if isinstance(event, Token):
                        shown.append(event.text)
                    yield _with_prompt_stats(event, prompt)
            except Cancelled:  # an aborted decode the strategy did not catch (e.g. in a lookahead)
                run.finish("cancelled")
                ended = False
            except (UserError, EngineError):
                raise
            except Exception as exc:
                if strategy_cls.__module__.startswith(BUILTIN_PREFIX):
                    raise  # our own bug: the traceback is the report
                raise PluginError(_plugin_failure(strategy_cls, exc)) from exc
            if not ended:  # every caller reads a last `Done`; a plugin's strategy may end without one
                done = run.done()
                if (tail := _unshown(done, shown)) is not None:
                    yield tail
                yield _with_prompt_stats(done, prompt)

    def run(self, request: Request, **kwargs) -> Done:
        """Run a request to the end and return its `Done` (for callers that do not stream)."""
        done = None
        for event in self.generate(request, **kwargs):
            if isinstance(event, Done):
                done = event
        return done

    def ops(self):
        """The logits-kernel backend (numpy unless the settings name torch)."""
        return ops.backend(self.settings.ops_backend)

    def cancel_all(self) -> None:
        """Abort any decode running on any context (e.g. on a newer keystroke)."""
        for ctx in self._contexts.values():
            ctx.abort()


def _plugin_failure(strategy_cls: type, exc: Exception) -> str:
    """One line for a third-party strategy that raised: whose bug it is and where, instead of
    a traceback the user would take for the assistant's."""
    import traceback

    frames = traceback.extract_tb(exc.__traceback__)
    where = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""
    return (
        f"strategy {strategy_cls.name!r} (plugin module {strategy_cls.__module__}) failed{where}: "
        f"{type(exc).__name__}: {exc} (a bug in that plugin)"
    )


def _unshown(done: Done, shown: list[str]) -> Token | None:
    """The end of the run's text that no `Token` showed: text held back as the start of a stop
    string when the run ended where what `Run.finish` returns could not be yielded (a full
    context or a cancel inside `Run.step`, superposed's end): streamed output lacked it while
    `Done.text` had it."""
    before = "".join(shown)
    if len(done.text) > len(before) and done.text.startswith(before):
        return Token(done.text[len(before) :])
    return None


def _with_prompt_stats(event: Event, prompt) -> Event:
    if isinstance(event, Done):  # a run's stats, not a pause's lookahead work
        event.stats.setdefault("prompt_truncated", prompt.truncated)
        event.stats.setdefault("prompt_mode", prompt.mode)
    return event
