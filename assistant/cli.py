"""The `assistant` command line (typer). Every command has --help and --json.

Errors the user can fix print one line on stderr and exit with status 2.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from . import bundled
from .config import Settings, cache_problem, load_settings
from .errors import EngineError, Interrupted, UserError
from .files import kind_of
from .signals import INTERRUPTS

app = typer.Typer(
    name="assistant",
    help="Local code-generation assistant on llama.cpp with pluggable decoding strategies.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _show_version(value: bool) -> None:
    if value:
        import platform

        from . import __version__
        from .engine import build_info

        typer.echo(f"assistant {__version__} (Python {platform.python_version()}); {build_info()}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option("--version", help="Show versions and the engine's build.", callback=_show_version, is_eager=True),
    ] = False,
):
    """Local code-generation assistant on llama.cpp with pluggable decoding strategies."""


bench_app = typer.Typer(help="Benchmarks (ratios against a baseline measured in the same run).", no_args_is_help=True)
app.add_typer(bench_app, name="bench")

# -- shared options ---------------------------------------------------------------------------
ModelOpt = Annotated[Path | None, typer.Option("--model", "-m", help="Any GGUF file (default: bundled model).")]
GpuOpt = Annotated[int | None, typer.Option("--n-gpu-layers", "-ngl", help="Layers to offload to the GPU.")]
ThreadsOpt = Annotated[
    int | None, typer.Option("--threads", "-t", help="CPU threads (default: one per physical core).")
]
CtxOpt = Annotated[int | None, typer.Option("--n-ctx", help="Context size in tokens (default 4096).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object for scripts.")]
StrategyOpt = Annotated[
    str | None, typer.Option("--strategy", "-s", help="Decoding strategy (see `assistant strategies`).")
]
OptionOpt = Annotated[list[str] | None, typer.Option("--option", "-o", help="Strategy option KEY=VALUE (repeatable).")]
MaxTokOpt = Annotated[int | None, typer.Option("--max-tokens", "-n", help="Most tokens to generate.")]
TempOpt = Annotated[float | None, typer.Option("--temperature", help="Sampling temperature (sample strategy).")]
SeedOpt = Annotated[int | None, typer.Option("--seed", help="Random seed for sampling strategies.")]
StopOpt = Annotated[
    list[str] | None, typer.Option("--stop", help=r"Stop string (repeatable); \n, \t, \r and \\ are understood.")
]
GrammarOpt = Annotated[
    Path | None, typer.Option("--grammar", help="Constrain output to a grammar file: Lark, or llama.cpp's GBNF.")
]
RegexOpt = Annotated[str | None, typer.Option("--regex", help="Constrain output to a regular expression.")]
SchemaOpt = Annotated[Path | None, typer.Option("--json-schema", help="Constrain output to a JSON schema file.")]


def _constraint(service, grammar: Path | None, regex: str | None, schema: Path | None, role: str = bundled.COMPLETION):
    """The constraint the flags ask for (at most one), built by the registered factories."""
    given = [(k, v) for k, v in (("lark", grammar), ("regex", regex), ("json-schema", schema)) if v is not None]
    if not given:
        return None
    if len(given) > 1:
        raise UserError("use only one of --grammar, --regex, --json-schema")
    kind, value = given[0]
    factories = service.registry.named("register_constraints")
    if kind not in factories:
        raise UserError(f"no plugin provides {kind!r} constraints (is ASSISTANT_PLUGINS limiting them?)")
    model = service.model(role)
    if kind == "regex":
        return factories[kind](value, model, origin="--regex")
    from .constraints import read_source

    return factories[kind](read_source(kind, value), model, origin=str(value))


def _settings(role: str, model: Path | None = None, **flags: Any) -> Settings:
    key = "chat_model" if role == bundled.CHAT else "completion_model"
    overrides = {k: v for k, v in flags.items()}
    if model is not None:
        overrides[key] = str(model)
    return load_settings(overrides)


def _service(settings: Settings, *, quiet: bool = False):
    from .engine import gpu_offload_supported
    from .service import Service

    progress = None if quiet else _LoadProgress()
    service = Service(settings, on_progress=progress)
    _warn_plugin_failures(service.registry)
    offloads = bool(settings.n_gpu_layers) and gpu_offload_supported()
    if settings.n_gpu_layers and not offloads:  # llama.cpp would run on the CPU, silently
        typer.echo(
            f"assistant: warning: n_gpu_layers {settings.n_gpu_layers} has no effect: this llama-cpp-python "
            "build has no GPU offload (README: GPU and distributed builds)",
            err=True,
        )
    if not offloads:
        _warn_model_beyond_memory(settings.completion_model)
    _warn_too_many_threads(settings.threads)
    problem = cache_problem()
    if problem:
        typer.echo(f"assistant: warning: {problem}; meanwhile what it keeps is rebuilt on every run", err=True)
    return service


def _warn_too_many_threads(threads: int | None) -> None:
    """More threads than CPUs makes llama.cpp's threads wait on each other: 64 threads on 2
    CPUs decoded 10x slower than 2, and nothing said why."""
    from .engine import usable_cpus

    cpus = len(usable_cpus())
    if threads and threads > cpus:
        typer.echo(
            f"assistant: warning: {threads} threads on the {cpus} CPUs this process may use run slower than "
            f"{cpus} (llama.cpp's threads wait on each other); leave --threads out for one per physical core",
            err=True,
        )


def _warn_model_beyond_memory(path: str | None) -> None:
    """A GGUF larger than this machine's memory loads (llama.cpp maps it) and then reads the
    disk for every token: minutes a token, with no word why."""
    from .engine import physical_memory

    memory = physical_memory()
    if not path or not memory:
        return
    try:
        size = Path(path).expanduser().stat().st_size
    except OSError:  # a missing file is said when it loads
        return
    if size > 0.9 * memory:
        typer.echo(
            f"assistant: warning: the model file is {size / 2**30:.1f} GiB and this machine has "
            f"{memory / 2**30:.1f} GiB of memory: llama.cpp will read it from disk for every token (very "
            "slow); use a smaller quantisation, or offload layers to a GPU (--n-gpu-layers)",
            err=True,
        )


class _LoadProgress:
    """A model-load progress bar on stderr (only when stderr is a terminal)."""

    def __init__(self):
        self.enabled = sys.stderr.isatty()
        self._progress = None
        self._task = None

    def __call__(self, name: str, fraction: float) -> None:
        if not self.enabled:
            return
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn

        if self._progress is None:
            self._progress = Progress(
                TextColumn("loading {task.description}"),
                BarColumn(),
                TextColumn("{task.percentage:>3.0f}%"),
                console=Console(stderr=True),
                transient=True,
            )
            self._progress.start()
            self._task = self._progress.add_task(name, total=1.0)
        self._progress.update(self._task, completed=fraction)
        if fraction >= 1.0:
            self._progress.stop()
            self._progress = None


def _warn_plugin_failures(registry) -> None:
    for line in registry.warnings():
        typer.echo(f"assistant: warning: {line}", err=True)


def _parse_options(items: list[str] | None) -> dict[str, str]:
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UserError(f"--option expects KEY=VALUE, got {item!r}")
        if key in out and out[key] != value:  # which one was meant? (a script's default and an override)
            raise UserError(f"--option {key} given twice: {out[key]!r} and {value!r}")
        out[key] = value
    return out


def _echo_notes(notes: list[str]) -> None:
    """What a strategy told its run (e.g. which default it fell back to), on stderr."""
    for note in notes:
        typer.echo(f"assistant: note: {note}", err=True)


def _emit_json(obj: Any) -> None:
    typer.echo(json.dumps(obj, ensure_ascii=False))


@contextlib.contextmanager
def _ctrl_c_cancels(service):
    """The first Ctrl-C (or SIGTERM: a `timeout`) cancels the run (it ends with its text so
    far, finish_reason 'cancelled', `--json` still prints, and the command exits 130); a
    second one interrupts at once."""
    cancel = threading.Event()

    def on_interrupt(_signum, _frame):
        if cancel.is_set():
            raise KeyboardInterrupt
        cancel.set()
        service.cancel_all()  # also stops a decode under way (a long prompt, a lookahead)

    try:
        previous = {signum: signal.signal(signum, on_interrupt) for signum in INTERRUPTS}
    except ValueError:  # not the main thread: leave Ctrl-C as it is
        yield cancel
        return
    try:
        yield cancel
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _stream(
    service,
    request,
    *,
    as_json: bool,
    extra: dict | None = None,
    constraint=None,
    live: bool = True,
    newline: str = "\n",
) -> None:
    """Run a request: stream text to stdout (`live`; else print exactly the text at the end, as
    `complete` does for a caller that inserts it: with the file's `newline` and without trailing
    blank lines, which the text after the cursor already has), or print one JSON object at the
    end."""
    done, pauses = None, []
    service.context()  # load first: Ctrl-C while a model loads simply quits
    with _ctrl_c_cancels(service) as cancel:
        progress = _WorkProgress(enabled=not as_json)
        for event in service.generate(request, constraint=constraint, cancel=cancel, progress=progress):
            kind = type(event).__name__
            if kind == "Token" and live and not as_json:
                sys.stdout.write(event.text)
                sys.stdout.flush()
            elif kind == "Pause" and as_json:  # AdaDec's decisions: where it hesitated and what it chose
                pauses.append(dataclasses.asdict(event))
            elif kind == "Done":
                done = event
    if not live:  # llama.vim drops them too: the n_indent cut leaves the dedented line's newline
        done.text = _without_blank_tail(done.text)
        done.texts = done.texts and list(dict.fromkeys(_without_blank_tail(t) for t in done.texts))
    if newline != "\n":
        done.text = done.text.replace("\n", newline)
        done.texts = done.texts and [t.replace("\n", newline) for t in done.texts]
    _show(done, request, pauses, as_json=as_json, extra=extra, live=live)
    if done.finish_reason == "cancelled":
        raise SystemExit(130)


def _without_blank_tail(text: str) -> str:
    """The text less the blank (or whitespace-only) lines it ends with."""
    return re.sub(r"(?:\n[ \t]*)+\Z", "", text)


def _show(done, request, pauses: list[dict], *, as_json: bool, extra: dict | None, live: bool) -> None:
    """The end of a run: the JSON object, or the rest of the text-mode output."""
    if as_json:
        obj = {
            "text": done.text,
            "strategy": request.strategy,
            "finish_reason": done.finish_reason,
            "stats": done.stats,
        }
        if done.texts is not None:
            obj["texts"] = done.texts
        if pauses:
            obj["pauses"] = pauses
        obj.update(extra or {})
        _emit_json(obj)
        return
    if not live:
        sys.stdout.write(done.text)
    if not done.text.endswith("\n") and (live or sys.stdout.isatty()):
        sys.stdout.write("\n")  # piped, `complete` prints the inserted text and nothing else
    sys.stdout.flush()  # the answer before anything said on stderr
    _echo_notes(done.stats.get("notes", []))
    others = (done.texts or [])[1:]  # multi-draft strategies: the best went to stdout above
    for i, text in enumerate(others, 2):
        typer.echo(f"--- draft {i} of {len(others) + 1} ---", err=True)
        typer.echo(text if text.endswith("\n") else text + "\n", err=True, nl=False)


def _note_unused_temperature(service, strategy: str, temperature: float | None) -> None:
    """--temperature reaches only strategies that read the request's temperature; say so rather
    than ignore it (top-h and grammar-infill have a temperature option of their own)."""
    cls = service.registry.strategies().get(strategy) if temperature is not None else None
    if cls is None or cls.reads_temperature:
        return
    own = any(f.name == "temperature" for f in dataclasses.fields(cls.Options))
    hint = f"; set its own with -o temperature={temperature:g}" if own else ""
    _echo_notes([f"strategy {strategy!r} does not use --temperature{hint}"])


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\"}


def _unescape(text: str) -> str:
    r"""`--stop "\n\n"` means two newlines, as in llama.cpp's tools (a shell passes the
    backslashes through); any other backslash stays as typed."""
    return re.sub(r"\\([ntr\\])", lambda m: _ESCAPES[m.group(1)], text)


def _stdin_text(what: str) -> str:
    """Standard input as UTF-8 text, less a byte-order mark (no text: a Windows file piped in);
    other bytes are a clear error, not a traceback. Line ends are kept as sent."""
    if sys.stdin is None:  # started with stdin closed (`<&-`): Python has none to read
        raise UserError(f"standard input is closed: nothing to read for {what}")
    data = sys.stdin.buffer.read()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise UserError(f"standard input is not UTF-8 text (byte {e.start}: {data[e.start : e.start + 1]!r})") from None


def _prompt_text(arg: str) -> str:
    """The prompt argument, or standard input for '-', as text llama.cpp can take: bytes that are
    not UTF-8 (Python keeps them as lone surrogates) are a clear error, not a traceback."""
    if arg == "-":
        return _stdin_text("the prompt '-'")
    try:
        arg.encode("utf-8")
    except UnicodeEncodeError as e:
        raise UserError(f"the prompt is not UTF-8 text (character {e.start})") from None
    return arg


def _request(settings: Settings, *, strategy, options, max_tokens, temperature, seed, stop, **kw):
    """The request of a command run in the user's project: its workspace is the current folder
    unless the command names another (`complete`: the file's)."""
    from .decoding import Request

    kw.setdefault("workspace", str(Path.cwd()))
    return Request(
        strategy=strategy or settings.strategy,
        options=_parse_options(options),
        max_tokens=max_tokens if max_tokens is not None else settings.max_tokens,
        stop=_stop_strings(stop),
        sampling=_sampling(settings, temperature, seed),
        **kw,
    )


def _stop_strings(stop: list[str] | None) -> list[str]:
    """--stop values as text; an empty one (a shell variable that was not set) stops nothing,
    which the user did not mean: it is refused (it was dropped without a word)."""
    if any(s == "" for s in stop or []):
        raise UserError('--stop "" is empty: it cannot end anything; leave it out or give the text to stop at')
    return [_unescape(s) for s in stop or []]


def _rate(x: float | None) -> str:
    """A rate as the others are printed; '-' where nothing was measured (no case had a test)."""
    return "-" if x is None else f"{x:.3f}"


def _sampling(settings: Settings, temperature: float | None, seed: int | None):
    """The sampling settings of a command: its flags over the config's (evals too: they used
    the built-in defaults whatever the config said)."""
    from .decoding import Sampling

    return Sampling(
        temperature=temperature if temperature is not None else settings.temperature,
        top_k=settings.top_k,
        top_p=settings.top_p,
        min_p=settings.min_p,
        seed=seed if seed is not None else settings.seed,
    )


# -- commands ---------------------------------------------------------------------------------
@app.command()
def generate(
    prompt: Annotated[str, typer.Argument(help="Text to continue, or - to read it from stdin.")],
    strategy: StrategyOpt = None,
    option: OptionOpt = None,
    max_tokens: MaxTokOpt = None,
    temperature: TempOpt = None,
    seed: SeedOpt = None,
    stop: StopOpt = None,
    grammar: GrammarOpt = None,
    regex: RegexOpt = None,
    json_schema: SchemaOpt = None,
    model: ModelOpt = None,
    n_gpu_layers: GpuOpt = None,
    threads: ThreadsOpt = None,
    n_ctx: CtxOpt = None,
    as_json: JsonOpt = False,
):
    """Continue PROMPT with the completion model and stream the text."""
    prompt = _prompt_text(prompt)
    settings = _settings(bundled.COMPLETION, model, n_gpu_layers=n_gpu_layers, threads=threads, n_ctx=n_ctx)
    service = _service(settings, quiet=as_json)
    request = _request(
        settings,
        strategy=strategy,
        options=option,
        max_tokens=max_tokens,
        temperature=temperature,
        seed=seed,
        stop=stop,
        prompt=prompt,
    )
    _note_unused_temperature(service, request.strategy, temperature)
    _stream(service, request, as_json=as_json, constraint=_constraint(service, grammar, regex, json_schema))


@app.command()
def complete(
    file: Annotated[Path, typer.Argument(help="Source file to complete in, or - to read it from stdin.")],
    line: Annotated[int, typer.Option("--line", "-l", help="Cursor line, 1-based.")],
    column: Annotated[int, typer.Option("--column", "-c", help="Cursor column, 1-based (cursor is before it).")],
    strategy: StrategyOpt = None,
    option: OptionOpt = None,
    max_tokens: Annotated[int, typer.Option("--max-tokens", "-n", help="Most tokens to generate.")] = 64,
    n_indent: Annotated[
        int | None,
        typer.Option(
            "--n-indent",
            help="Stop at a new line indented less than this (default: the cursor line's indentation, "
            "as llama.vim sends; 0: no limit).",
        ),
    ] = None,
    temperature: TempOpt = None,
    seed: SeedOpt = None,
    stop: StopOpt = None,
    grammar: GrammarOpt = None,
    regex: RegexOpt = None,
    json_schema: SchemaOpt = None,
    syntax_valid: Annotated[
        bool, typer.Option("--syntax-valid", help="Only stop where the whole file parses (any strategy).")
    ] = False,
    stdin_filename: Annotated[
        Path | None,
        typer.Option(
            "--stdin-filename",
            help="With FILE -: the path of the text read from stdin (an editor's unsaved buffer): "
            "its language and project folder (without it: a #! line's language, else Python, and no project).",
        ),
    ] = None,
    model: ModelOpt = None,
    n_gpu_layers: GpuOpt = None,
    threads: ThreadsOpt = None,
    n_ctx: CtxOpt = None,
    as_json: JsonOpt = False,
):
    """Infill at a cursor in FILE and print only the inserted text."""
    from .context.cursor import read_source, split_at_cursor
    from .context.syntax import language_of

    if str(file) == "-":  # an editor's buffer, unsaved: its text comes on stdin, its name may be given
        raw, where, named = _stdin_text("the file '-'"), "standard input", stdin_filename
    elif stdin_filename is not None:
        raise UserError("--stdin-filename names the text read from stdin: give FILE as -")
    else:
        raw, where, named = read_source(file), str(file), file
    prefix, suffix, newline = split_at_cursor(raw, line, column, where)
    if n_indent is None:  # the block the cursor is in: a completion ends where it does
        current = prefix[prefix.rfind("\n") + 1 :] + suffix.split("\n", 1)[0]
        n_indent = len(current) - len(current.lstrip(" \t"))
    language = language_of(named, (prefix + suffix).split("\n", 1)[0])
    settings = _settings(bundled.COMPLETION, model, n_gpu_layers=n_gpu_layers, threads=threads, n_ctx=n_ctx)
    service = _service(settings, quiet=as_json)
    request = _request(
        settings,
        strategy=strategy,
        options=option,
        max_tokens=max_tokens,
        temperature=temperature,
        seed=seed,
        stop=stop,
        prompt=prefix,
        suffix=suffix,
        n_indent=n_indent,
        syntax_valid=syntax_valid,
        language=language,
        filename=named.name if named else None,
        workspace=str(named.resolve().parent) if named else None,  # no name, no project to learn from
    )
    _note_unused_temperature(service, request.strategy, temperature)
    _stream(
        service,
        request,
        as_json=as_json,
        extra={"file": str(file), "line": line, "column": column},
        constraint=_constraint(service, grammar, regex, json_schema),
        live=False,
        newline=newline,
    )


@app.command()
def strategies(as_json: JsonOpt = False):
    """List decoding strategies with their options and defaults."""
    from .registry import get_registry

    registry = get_registry()
    _warn_plugin_failures(registry)
    described = [cls.describe() for cls in registry.strategies().values()]
    if as_json:
        _emit_json(described)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("strategy", "summary", "options (default)")
    for d in described:
        opts = "\n".join(f"{o['name']}: {o['type']} = {o['default']!r}  {o['help']}" for o in d["options"])
        table.add_row(d["name"], d["summary"], opts or "-")
    Console().print(table)


@app.command()
def models(
    model: ModelOpt = None,
    as_json: JsonOpt = False,
):
    """Show the default models and the GGUF files in the configured model folders."""
    from .engine import read_info

    settings = _settings(bundled.COMPLETION, None)
    rows = []
    for role, configured in ((bundled.COMPLETION, settings.completion_model), (bundled.CHAT, settings.chat_model)):
        path = Path(configured) if configured else bundled.default_path(role)
        rows.append({"role": f"default {role}", **read_info(path).to_dict()})
    seen = {r["path"] for r in rows}
    candidates = [model] if model is not None else []
    for folder in map(Path, settings.model_dirs):
        folder = folder.expanduser()
        try:
            kind = kind_of(folder, "model folder")
        except UserError as exc:
            kind, why = None, str(exc)
        else:  # a typo in model_dirs would otherwise list nothing, silently
            why = "model folder not found" if kind is None else "not a folder (model_dirs names folders)"
            why = f"{why}: {folder}"
        if kind != "folder":
            rows.append({"role": "", "path": str(folder), "error": why})
            continue
        candidates.extend(sorted(folder.rglob("*.gguf")))
    for path in candidates:
        if str(path) in seen:
            continue
        seen.add(str(path))
        try:
            rows.append({"role": "", **read_info(path).to_dict()})
        except UserError as exc:
            if model is not None and path == model:
                raise
            rows.append({"role": "", "path": str(path), "error": str(exc)})
    if as_json:
        _emit_json(rows)
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Column, Table

    # two columns, the path on a line of its own: what a user copies is never cut, and a
    # narrow terminal does not squeeze it to a dozen characters a line
    table = Table("role", Column("model", overflow="fold"))
    for r in rows:
        if "error" in r:  # the message names the path
            table.add_row(r["role"], f"[red]unusable[/red]: {escape(r['error'])}")
            continue
        fim = "yes" if r["fim"] else "no"
        facts = f"{r['architecture']}, {r['size_bytes'] / 1e6:,.0f} MB, vocab {r['vocab_size']:,}, FIM {fim}"
        table.add_row(r["role"], f"[bold]{escape(r['name'])}[/bold] ({escape(facts)})\n{escape(r['path'])}")
    Console().print(table)


def _check_bench_sizes(tokens: int, rounds: int) -> None:
    if tokens < 2:
        raise UserError(f"--tokens must be >= 2, got {tokens}")
    if rounds < 1:
        raise UserError(f"--rounds must be >= 1, got {rounds}")


@bench_app.command("speed")
def bench_speed(
    model: ModelOpt = None,
    tokens: Annotated[int, typer.Option("--tokens", help="Tokens to generate per path.")] = 128,
    rounds: Annotated[int, typer.Option("--rounds", help="Interleaved rounds; best of each path counts.")] = 3,
    n_gpu_layers: GpuOpt = None,
    threads: ThreadsOpt = None,
    n_ctx: CtxOpt = None,
    as_json: JsonOpt = False,
):
    """Greedy decode speed: engine vs stock llama_cpp.Llama vs a bare llama_decode loop."""
    from .bench.speed import run_speed

    _check_bench_sizes(tokens, rounds)
    settings = _settings(bundled.COMPLETION, model, n_gpu_layers=n_gpu_layers, threads=threads, n_ctx=n_ctx)
    service = _service(settings, quiet=as_json)
    note = None if as_json else (lambda msg: typer.echo(f"  {msg}", err=True))
    result = run_speed(service, n_tokens=tokens, rounds=rounds, progress=note)
    if as_json:
        _emit_json(result)
        return
    typer.echo(f"model {result['model']}  threads {result['threads']}  {tokens} tokens, best of {rounds}")
    typer.echo(f"  stock llama_cpp.Llama greedy : {result['baseline_tok_s']:8.2f} tok/s")
    typer.echo(
        f"  engine greedy                : {result['engine_tok_s']:8.2f} tok/s  "
        f"(ratio {result['ratio']:.3f} vs stock, {result['engine_vs_raw']:.3f} vs bare loop)"
    )
    typer.echo(f"  bare llama_decode loop       : {result['raw_tok_s']:8.2f} tok/s")
    prefill = f"prefill, {result['prefill_tokens']} tokens"
    typer.echo(f"  {prefill:<29}: {result['prefill_tok_s']:8.2f} tok/s")
    for k, v in result["batched"].items():
        label = f"batched decode, {k} seq"
        typer.echo(f"  {label:<29}: {v['steps_per_s']:8.2f} steps/s  {v['tok_s']:8.2f} tok/s")
    typer.echo(
        f"  engine tokens == bare loop tokens: {result['engine_matches_raw']}; "
        f"== stock tokens: {result['stock_matches_engine']}"
    )


@bench_app.command("strategies")
def bench_strategies(
    model: ModelOpt = None,
    tokens: Annotated[int, typer.Option("--tokens", help="Tokens per prompt and strategy.")] = 48,
    rounds: Annotated[int, typer.Option("--rounds", help="Interleaved rounds; ratios are their median.")] = 3,
    n_gpu_layers: GpuOpt = None,
    threads: ThreadsOpt = None,
    n_ctx: CtxOpt = None,
    as_json: JsonOpt = False,
):
    """Every strategy on the same prompts: time relative to greedy, forward passes, tokens."""
    from .bench.strategies import run_strategies_bench

    _check_bench_sizes(tokens, rounds)
    settings = _settings(bundled.COMPLETION, model, n_gpu_layers=n_gpu_layers, threads=threads, n_ctx=n_ctx)
    service = _service(settings, quiet=as_json)
    note = None if as_json else (lambda msg: typer.echo(f"  {msg}", err=True))
    result = run_strategies_bench(service, n_tokens=tokens, rounds=rounds, progress=note)
    if as_json:
        _emit_json(result)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("strategy", "seconds", "x greedy", "tokens", "forward passes", "tokens evaluated")
    for name, row in result.items():
        if "time_vs_greedy" in row:
            table.add_row(
                name,
                f"{row['seconds']:.2f}",
                f"{row['time_vs_greedy']:.2f}",
                str(row["tokens"]),
                str(row["forward_passes"]),
                str(row["tokens_evaluated"]),
            )
    Console().print(table)
    for name, row in result.items():
        if "time_vs_greedy" not in row:
            typer.echo(f"{name}: " + ", ".join(f"{k}={v}" for k, v in row.items()))


eval_app = typer.Typer(help="Quality evaluations (results saved per problem, resumable).", no_args_is_help=True)
app.add_typer(eval_app, name="eval")


@eval_app.command("humaneval")
def eval_humaneval(
    strategy: StrategyOpt = None,
    option: OptionOpt = None,
    limit: Annotated[int | None, typer.Option("--limit", help="Only the first N problems.", min=1)] = None,
    temperature: TempOpt = None,
    seed: SeedOpt = None,
    max_tokens: Annotated[int, typer.Option("--max-tokens", "-n", help="Most tokens per problem.", min=1)] = 384,
    output: Annotated[Path | None, typer.Option("--output", help="Results JSONL (default: in the data dir).")] = None,
    model: ModelOpt = None,
    n_gpu_layers: GpuOpt = None,
    threads: ThreadsOpt = None,
    n_ctx: CtxOpt = None,
    as_json: JsonOpt = False,
):
    """pass@1 on HumanEval; each completion runs against its tests in the sandbox."""
    from .evals.humaneval import run_humaneval

    settings = _settings(bundled.COMPLETION, model, n_gpu_layers=n_gpu_layers, threads=threads, n_ctx=n_ctx)
    service = _service(settings, quiet=as_json)
    name = strategy or settings.strategy
    _note_unused_temperature(service, name, temperature)
    with _say_where_work_is_saved(), _progress_bar(f"humaneval [{name}]", enabled=not as_json) as advance:
        summary = run_humaneval(  # checks the settings before it shows the bar
            service,
            strategy=name,
            options=_parse_options(option),
            limit=limit,
            sampling=_sampling(settings, temperature, seed),
            max_tokens=max_tokens,
            output=output,
            progress=advance,
        )
    if as_json:
        _emit_json(summary)
        return
    extra = "  ".join(f"{k} {v:.3f}" for k, v in summary.items() if k.startswith("pass@") and k != "pass@1")
    typer.echo(f"{summary['model']} [{name}] pass@1 {summary['pass@1']:.3f} on {summary['n']} problems  {extra}")
    typer.echo(
        f"  {summary['tokens_generated']} tokens, {summary['seconds']:.1f}s generating; results: {summary['results']}"
    )
    _echo_notes(summary.get("notes", []))


@eval_app.command("compare")
def eval_compare(
    a: Annotated[Path, typer.Argument(help="Results JSONL of run A (from `eval humaneval`).")],
    b: Annotated[Path, typer.Argument(help="Results JSONL of run B.")],
    as_json: JsonOpt = False,
):
    """Pair two HumanEval runs problem by problem: who passes what, and whether it is chance."""
    from .evals.compare import compare_results

    c = compare_results(a, b)
    if as_json:
        _emit_json(c)
        return
    n = c["n"]
    for key in ("a", "b"):
        r = c[key]
        typer.echo(f"{key.upper()}: [{r['strategy']}] passes {r['passed']}/{n} (pass@1 {r['pass@1']:.4f})")
        typer.echo(f"   {r['tokens']} tokens generated in {r['seconds']:.1f} s  {r['results']}")
    for key in ("only_a", "only_b"):
        ids = c[key]
        typer.echo(f"only {key[-1].upper()}: {len(ids)}" + (f"  ({', '.join(ids)})" if ids else ""))
    typer.echo(f"both: {c['both']}  neither: {c['neither']}  identical completions: {c['identical_completions']}")
    if c["unpaired"]:
        typer.echo(f"left out: {c['unpaired']} problems only one file holds")
    p = c["mcnemar_p"]
    verdict = "within chance (p >= 0.05)" if p >= 0.05 else "unlikely to be chance (p < 0.05)"
    typer.echo(f"exact McNemar p = {p:.4g}: the difference is {verdict}")
    if c["seconds_a_vs_b"] is not None:
        typer.echo(f"A took {c['seconds_a_vs_b']:.3g}x B's generation time")
    if c["ms_per_token_a_vs_b"] is not None:
        a_ms, b_ms = c["a"]["ms_per_token"], c["b"]["ms_per_token"]
        typer.echo(f"per token generated: A {a_ms:.2f} ms, B {b_ms:.2f} ms ({c['ms_per_token_a_vs_b']:.3g}x)")
    _echo_notes(c.get("notes", []))


@eval_app.command("infill")
def eval_infill(
    cases: Annotated[Path | None, typer.Option("--cases", help="JSONL of {prefix, suffix, middle, test?}.")] = None,
    kind: Annotated[str, typer.Option("--kind", help="Default cases: single, multi or both.")] = "single",
    strategy: StrategyOpt = None,
    option: OptionOpt = None,
    limit: Annotated[int | None, typer.Option("--limit", help="Only the first N cases.", min=1)] = None,
    temperature: TempOpt = None,
    seed: SeedOpt = None,
    max_tokens: Annotated[int, typer.Option("--max-tokens", "-n", help="Most tokens per case.", min=1)] = 96,
    syntax_valid: Annotated[
        bool, typer.Option("--syntax-valid", help="Apply the syntax guard to any strategy.")
    ] = False,
    model: ModelOpt = None,
    n_gpu_layers: GpuOpt = None,
    threads: ThreadsOpt = None,
    n_ctx: CtxOpt = None,
    as_json: JsonOpt = False,
):
    """Infill quality: validity, exact match, edit similarity, tests passed."""
    from .evals.infill import humaneval_cases, load_cases, run_infill_eval

    if kind not in ("single", "multi", "both"):
        raise UserError("--kind must be single, multi or both")
    settings = _settings(bundled.COMPLETION, model, n_gpu_layers=n_gpu_layers, threads=threads, n_ctx=n_ctx)
    service = _service(settings, quiet=as_json)
    name = strategy or settings.strategy
    service.registry.strategy(name)
    _note_unused_temperature(service, name, temperature)
    chosen = (load_cases(cases) if cases else humaneval_cases(kind))[: limit or None]
    with _progress_bar(f"infill [{name}]", enabled=not as_json) as advance:
        result = run_infill_eval(
            service,
            cases=chosen,
            strategy=name,
            options=_parse_options(option),
            sampling=_sampling(settings, temperature, seed),
            max_tokens=max_tokens,
            syntax_valid=syntax_valid,
            progress=advance,
        )
    if as_json:
        _emit_json(result)
    else:
        typer.echo(
            f"[{name}] n={result['n']} syntax_valid {result['syntax_valid_rate']:.3f}  nonempty_valid "
            f"{result['nonempty_valid_rate']:.3f}  exact {result['exact_match']:.3f}  edit_sim "
            f"{result['edit_similarity']:.3f}  pass {_rate(result['pass_rate'])}  "
            f"{result['seconds_per_case']:.2f}s/case"
        )
    if result.get("interrupted"):  # Ctrl-C: the figures of the cases done, said as such
        typer.echo(f"assistant: interrupted: the figures cover {result['n']} of {result['cases']} cases", err=True)
        raise typer.Exit(130)


@app.command()
def calibrate(
    model: ModelOpt = None,
    limit: Annotated[
        int | None, typer.Option("--limit", help="Use only the first N HumanEval problems.", min=1)
    ] = None,
    check_rerank: Annotated[
        bool,
        typer.Option(
            "--check-rerank",
            help="Also measure whether AdaDec's lookahead picks the reference token more often than greedy "
            "where it pauses (a lookahead at every pause position: ~16 min for the bundled model on 2 cores). "
            "Stored with the threshold; a later plain calibrate keeps it while it learns the same threshold.",
        ),
    ] = False,
    replace: Annotated[
        bool,
        typer.Option(
            "--replace",
            help="Store this fit even where the stored one was fit on more reference positions "
            "(by default a fit on fewer, e.g. with --limit, is reported and not stored).",
        ),
    ] = False,
    threads: ThreadsOpt = None,
    n_gpu_layers: GpuOpt = None,
    n_ctx: CtxOpt = None,
    as_json: JsonOpt = False,
):
    """Learn the model's AdaDec entropy threshold from HumanEval reference solutions."""
    from .calibration import add_rerank_check, spread_is_wide
    from .calibration import calibrate as run_calibration

    settings = _settings(bundled.COMPLETION, model, n_gpu_layers=n_gpu_layers, threads=threads, n_ctx=n_ctx)
    service = _service(settings, quiet=as_json)
    with (
        _say_where_work_is_saved(),
        _progress_bar("teacher-forcing HumanEval solutions", enabled=not as_json) as advance,
    ):
        try:
            result = run_calibration(service, limit=limit, replace=replace, progress=advance)
        except KeyboardInterrupt:
            raise Interrupted("interrupted: nothing was stored (a stored calibration is as it was)") from None
    if check_rerank:
        with _say_where_work_is_saved(), _progress_bar("checking the lookahead rerank", enabled=not as_json) as advance:
            try:
                result = add_rerank_check(service, result, progress=advance)
            except KeyboardInterrupt:
                kept = "is stored" if result["stored"] else "was not stored (see above)"
                raise Interrupted(
                    f"interrupted: the threshold {result['threshold']:.3f} nats {kept}; the rerank check was "
                    "not finished (`calibrate --check-rerank` runs it again)"
                ) from None
    if as_json:
        _emit_json(result)
        return
    lo, hi = result["split_spread"]
    if result["stored"]:
        where = "stored for this GGUF"
    else:
        kept = result["kept"]
        where = (
            f"NOT stored: the stored threshold {kept['threshold']:.3f} nats was fit on {kept['positions']} "
            f"positions from {kept['problems_used']} problems and is kept (--replace stores this one)"
        )
    typer.echo(
        f"{result['model']}: threshold {result['threshold']:.3f} nats "
        f"(p*={result['p_star']}, test accuracy {result['test_accuracy']:.3f}, "
        f"{result['positions']} positions from {result['problems_used']} problems); {where}\n"
        f"other random 80/20 splits give {lo:.3f}-{hi:.3f} nats (10th-90th percentile)"
    )
    left_out = result["problems"] - result["problems_used"]
    if left_out:
        typer.echo(
            f"assistant: note: {left_out} of {result['problems']} problems are longer than the context "
            f"({result['n_ctx']} tokens) and were left out; a larger --n-ctx uses them",
            err=True,
        )
    if "rerank" in result:
        _echo_rerank_check(result["rerank"])
    few = result["positions"] < 2000  # the full 164 problems give ~10,000 for a 262k-vocabulary model
    if few or spread_is_wide(result):
        hint = "; run without --limit to fit it on all 164 problems" if limit else ""
        typer.echo(
            f"assistant: note: the threshold is noisy ({result['positions']} positions; other splits give "
            f"{lo:.3f}-{hi:.3f} nats){hint}",
            err=True,
        )


def _echo_rerank_check(c: dict) -> None:
    from .rerank_check import verdict

    typer.echo(
        f"rerank check at {c['pauses']} pause positions of the reference solutions: greedy's token was the "
        f"reference {c['greedy_right']} times, the lookahead winner {c['rerank_right']}; of the "
        f"{c['changed']} changes, {c['changed_to_reference']} went to the reference and "
        f"{c['changed_from_reference']} away from it (exact McNemar p = {c['p']:.2g})"
    )
    warning = verdict(c)
    if warning:
        typer.echo(f"assistant: note: {warning}", err=True)


@contextlib.contextmanager
def _say_where_work_is_saved():
    """Ctrl-C in a long job that saves as it goes: say what was kept and how to go on, then
    exit 130 (typer turns a bare KeyboardInterrupt into a silent exit)."""
    try:
        yield
    except Interrupted as exc:
        typer.echo(f"assistant: {exc}", err=True)
        raise typer.Exit(130) from None


class _WorkProgress:
    """Progress of preparation work a strategy reports (label, done, total), on stderr."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled and sys.stderr.isatty()
        self._bars: dict[str, _progress_bar] = {}
        self._advance = {}

    def __call__(self, label: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        if label not in self._bars:
            self._bars[label] = _progress_bar(label)
            self._advance[label] = self._bars[label].__enter__()
        self._advance[label](done, total)
        if done >= total:
            self._bars.pop(label).__exit__(None, None, None)


class _progress_bar:
    """A rich progress bar on stderr; yields advance(done, total). The bar appears at the first
    advance, so a job that refuses its input first shows the error alone (jobs report 0 of N
    once their input is checked)."""

    def __init__(self, label: str, enabled: bool = True):
        self.label = label
        self.enabled = enabled
        self._progress = None

    def __enter__(self):
        if not self.enabled:
            return lambda done, total: None
        if not sys.stderr.isatty():  # a log file: rich would write the bar once, at the end
            return _ProgressLines(self.label)
        task = None

        def advance(done: int, total: int) -> None:
            nonlocal task
            if self._progress is None:
                from rich.console import Console
                from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

                self._progress = Progress(
                    TextColumn(self.label, markup=False),  # a label like "humaneval [adadec]" is no markup
                    BarColumn(),
                    MofNCompleteColumn(),
                    TimeRemainingColumn(),
                    console=Console(stderr=True),
                )
                self._progress.start()
                task = self._progress.add_task(self.label, total=total)
            self._progress.update(task, completed=done, total=total)

        return advance

    def __exit__(self, *exc):
        if self._progress is not None:
            self._progress.stop()
        return False


class _ProgressLines:
    """Progress as plain lines for a log (stderr not a terminal): the start, then at most one
    line every `every` seconds, and the end. A 20-minute eval run under nohup said nothing
    until it was over."""

    def __init__(self, label: str, every: float = 30.0, clock=time.monotonic):
        self.label, self.every, self.clock = label, every, clock
        self.t0 = self.last = None
        self.said = None  # the count in the last line

    def __call__(self, done: int, total: int) -> None:
        now = self.clock()
        if self.t0 is None:
            self.t0 = now
        elif done == self.said or (done < total and now - self.last < self.every):
            return
        self.last, self.said = now, done
        elapsed = int(now - self.t0)
        typer.echo(f"{self.label}: {done}/{total} ({elapsed // 60}:{elapsed % 60:02d} elapsed)", err=True)


def _register_plugin_commands() -> None:
    try:
        from .registry import get_registry

        taken = {c.name or c.callback.__name__.replace("_", "-") for c in app.registered_commands}
        taken |= {g.name for g in app.registered_groups}
        for fn, name in get_registry().commands():
            name = name or fn.__name__.replace("_", "-")
            if name in taken:  # a plugin must not replace a built-in command (or another's)
                typer.echo(f"assistant: warning: plugin command {name!r} ignored: the name is taken", err=True)
                continue
            taken.add(name)
            app.command(name=name)(fn)
    except Exception as exc:  # noqa: BLE001 - a broken plugin must not break the CLI
        typer.echo(f"assistant: warning: plugin commands skipped: {exc}", err=True)


def _usable_standard_streams() -> None:
    """Started with stdout or stderr closed (a daemon, `>&-`), Python has None for them and the
    first token or message was an AttributeError (with stderr closed, a silent exit 1): what
    goes there goes nowhere, as asked. Text stdout's encoding cannot hold (a generated CJK
    comment under an ASCII or Latin-1 locale, a file on Windows) is written as backslash
    escapes, as Python writes stderr, instead of ending the run in UnicodeEncodeError."""
    for name in ("stdout", "stderr"):
        if getattr(sys, name) is None:
            setattr(sys, name, open(os.devnull, "w"))  # kept open for the whole process
    reconfigure = getattr(sys.stdout, "reconfigure", None)
    if reconfigure is not None:
        reconfigure(errors="backslashreplace")


def main() -> None:
    _usable_standard_streams()
    # SIGTERM (a timeout, systemd, a CI cancel) ends a command as Ctrl-C does: what was saved is
    # said, a sandboxed program and its temp folder are cleaned up (they were left behind)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # it raises KeyboardInterrupt
    try:
        _register_plugin_commands()  # imports every plugin: Ctrl-C may land there too
        app()
    except UserError as exc:
        typer.echo(f"assistant: error: {exc}", err=True)
        raise SystemExit(2) from None
    except EngineError as exc:  # llama.cpp failed: said on one line, as a user's error is
        typer.echo(f"assistant: error: {exc}", err=True)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None
