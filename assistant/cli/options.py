"""The options commands share, and turning flags (over the config file) into settings, a
request and a constraint."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from .. import bundled
from ..config import Settings, load_settings
from ..errors import UserError


def path_parser(what: str, hint: str = "leave it out or give a path"):
    """A path flag's or argument's parser: an empty value (a shell variable that was not set)
    became Path("."), and the error then named `.`, which the user never typed (`cannot read
    grammar file .: Is a directory`)."""

    def parse(value: str) -> Path:
        if value == "":
            raise UserError(f'{what} "" is empty: {hint}')
        return Path(value)

    return parse


# -- flags the commands share ------------------------------------------------------------------
ModelOpt = Annotated[
    Path | None,
    typer.Option("--model", "-m", help="Any GGUF file (default: bundled model).", parser=path_parser("--model")),
]
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
SeedOpt = Annotated[
    int | None,
    typer.Option(
        "--seed",
        help="Random seed for sampling strategies (default: a fresh one each run, reported in --json's "
        "stats.seed; an eval reports each result's).",
    ),
]
StopOpt = Annotated[
    list[str] | None, typer.Option("--stop", help=r"Stop string (repeatable); \n, \t, \r and \\ are understood.")
]
GrammarOpt = Annotated[
    Path | None,
    typer.Option(
        "--grammar",
        help="Constrain output to a grammar file: Lark, or llama.cpp's GBNF.",
        parser=path_parser("--grammar"),
    ),
]
RegexOpt = Annotated[str | None, typer.Option("--regex", help="Constrain output to a regular expression.")]
SchemaOpt = Annotated[
    Path | None,
    typer.Option("--json-schema", help="Constrain output to a JSON schema file.", parser=path_parser("--json-schema")),
]


def constraint_from_flags(
    service, grammar: Path | None, regex: str | None, schema: Path | None, role: str = bundled.COMPLETION
):
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
        if value == "":  # a shell variable that was not set: the output could only be empty
            raise UserError('--regex "" is empty: it matches only the empty text; leave it out or give a pattern')
        return factories[kind](utf8_text(value, "--regex"), model, origin="--regex")
    from ..constraints import read_source

    return factories[kind](read_source(kind, value), model, origin=str(value))


def settings_for(role: str, model: Path | None = None, **flags: Any) -> Settings:
    key = "chat_model" if role == bundled.CHAT else "completion_model"
    overrides = {k: v for k, v in flags.items()}
    if model is not None:
        overrides[key] = str(model)
    return load_settings(overrides)


def parse_options(items: list[str] | None) -> dict[str, str]:
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


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\"}


def _unescape(text: str) -> str:
    r"""`--stop "\n\n"` means two newlines, as in llama.cpp's tools (a shell passes the
    backslashes through); any other backslash stays as typed."""
    return re.sub(r"\\([ntr\\])", lambda m: _ESCAPES[m.group(1)], text)


def stdin_text(what: str) -> str:
    """Standard input as UTF-8 text, less a byte-order mark (no text: a Windows file piped in);
    other bytes are a clear error, not a traceback. Line ends are kept as sent."""
    if sys.stdin is None:  # started with stdin closed (`<&-`): Python has none to read
        raise UserError(f"standard input is closed: nothing to read for {what}")
    if sys.stdin.isatty():  # typed, not piped: it waited without a word
        sys.stderr.write(f"assistant: reading {what} from the terminal; end it with Ctrl-D\n")
    data = sys.stdin.buffer.read()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise UserError(f"standard input is not UTF-8 text (byte {e.start}: {data[e.start : e.start + 1]!r})") from None


def utf8_text(arg: str, what: str) -> str:
    """A text argument as llama.cpp and llguidance can take it: bytes that are not UTF-8 (Python
    keeps them as lone surrogates) are a clear error, not a traceback (or a stop never found)."""
    try:
        arg.encode("utf-8")
    except UnicodeEncodeError as e:
        raise UserError(f"{what} is not UTF-8 text (character {e.start})") from None
    return arg


def prompt_text(arg: str) -> str:
    """The prompt argument, or standard input for '-'."""
    return stdin_text("the prompt '-'") if arg == "-" else utf8_text(arg, "the prompt")


def request_for(settings: Settings, *, strategy, options, max_tokens, temperature, seed, stop, **kw):
    """The request of a command run in the user's project: its workspace is the current folder
    unless the command names another (`complete`: the file's)."""
    from ..decoding import Request

    kw.setdefault("workspace", str(Path.cwd()))
    return Request(
        strategy=strategy_name(settings, strategy, infill=kw.get("suffix") is not None),
        options=parse_options(options),
        max_tokens=max_tokens if max_tokens is not None else settings.max_tokens,
        stop=_stop_strings(stop),
        sampling=sampling_for(settings, temperature, seed),
        **kw,
    )


def strategy_name(settings: Settings, flag: str | None, *, infill: bool) -> str:
    """--strategy, else the configured one, which must be a strategy there is, and one the
    command can run (`infill`: it has a suffix): `strategy = "adadek"` in the config said only
    "unknown strategy 'adadek'" to a user who gave none, and `strategy = "grammar-infill"`
    made every `generate` fail without saying the config chose it."""
    if flag == "":  # a shell variable that was not set: it ran the configured strategy silently
        raise UserError('--strategy "" is empty: leave it out for the configured one, or name a strategy')
    if flag is not None or "strategy" not in settings.sources:
        return flag or settings.strategy
    from ..registry import get_registry

    source = settings.sources["strategy"]
    try:
        cls = get_registry().strategy(settings.strategy)
    except UserError as exc:
        raise UserError(f"{source}: {exc}") from None
    if cls.needs_syntax_guard and not infill:
        raise UserError(f"{source}: strategy {settings.strategy} only infills; give this command a --strategy")
    return settings.strategy


def _stop_strings(stop: list[str] | None) -> list[str]:
    """--stop values as text; an empty one (a shell variable that was not set) stops nothing,
    which the user did not mean: it is refused (it was dropped without a word)."""
    if any(s == "" for s in stop or []):
        raise UserError('--stop "" is empty: it cannot end anything; leave it out or give the text to stop at')
    return [_unescape(utf8_text(s, f"--stop {s!r}")) for s in stop or []]


def sampling_for(settings: Settings, temperature: float | None, seed: int | None):
    """The sampling settings of a command: its flags over the config's (evals too: they used
    the built-in defaults whatever the config said)."""
    from ..decoding import Sampling

    return Sampling(
        temperature=temperature if temperature is not None else settings.temperature,
        top_k=settings.top_k,
        top_p=settings.top_p,
        min_p=settings.min_p,
        seed=seed if seed is not None else settings.seed,
    )
