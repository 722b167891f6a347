"""`generate` and `complete`: the commands that write code."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import UserError
from .app import app
from .loading import completion_service
from .options import (
    CtxOpt,
    GpuOpt,
    GrammarOpt,
    JsonOpt,
    MaxTokOpt,
    ModelOpt,
    OptionOpt,
    RegexOpt,
    SchemaOpt,
    SeedOpt,
    StopOpt,
    StrategyOpt,
    TempOpt,
    ThreadsOpt,
    constraint_from_flags,
    path_parser,
    prompt_text,
    request_for,
    stdin_text,
)
from .output import note_unused_temperature, run_and_show


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
    _write(locals(), prompt=prompt_text(prompt))


@app.command()
def complete(
    file: Annotated[
        Path,
        typer.Argument(
            help="Source file to complete in, or - to read it from stdin.",
            parser=path_parser("FILE", "give a file or -"),
        ),
    ],
    line: Annotated[int, typer.Option("--line", "-l", help="Cursor line, 1-based.")],
    column: Annotated[
        int, typer.Option("--column", "-c", help="Cursor column, 1-based (cursor is before it), in --column-unit.")
    ],
    column_unit: Annotated[
        str,
        typer.Option(
            "--column-unit",
            help="What --column counts: chars (Emacs, Helix), bytes of UTF-8 (Vim's col()), utf-16 (VS Code, LSP); "
            "LSP's names utf-8 and utf-32 also work.",
        ),
    ] = "chars",
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
    t_max_predict_ms: Annotated[
        int,
        typer.Option(
            "--t-max-predict-ms",
            help="Stop once this many ms have passed since the first token and a line has ended "
            "(llama.vim sends 1000; 0: no limit).",
        ),
    ] = 0,
    n_prefix: Annotated[
        int,
        typer.Option("--n-prefix", help="Lines above the cursor's line the model sees (llama.vim's default; 0: all)."),
    ] = 256,
    n_suffix: Annotated[
        int,
        typer.Option("--n-suffix", help="Lines below the cursor's line the model sees (llama.vim's default; 0: all)."),
    ] = 64,
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
    flags = dict(locals())  # before anything else is named here
    from ..context.cursor import read_source, split_at_cursor
    from ..context.syntax import language_of

    if str(file) == "-":  # an editor's buffer, unsaved: its text comes on stdin, its name may be given
        raw, where, named = stdin_text("the file '-'"), "standard input", stdin_filename
    elif stdin_filename is not None:
        raise UserError("--stdin-filename names the text read from stdin: give FILE as -")
    else:
        raw, where, named = read_source(file), str(file), file
    prefix, suffix, newline = split_at_cursor(raw, line, column, where, column_unit)
    rest_of_line = suffix.split("\n", 1)[0]
    if n_indent is None:  # the block the cursor is in: a completion ends where it does
        current = prefix[prefix.rfind("\n") + 1 :] + rest_of_line
        n_indent = len(current) - len(current.lstrip(" \t"))
    language = language_of(named, (prefix + suffix).split("\n", 1)[0])
    _write(
        flags,
        prompt=prefix,
        suffix=suffix,
        n_indent=n_indent,
        t_max_predict_ms=t_max_predict_ms,
        n_prefix=n_prefix,
        n_suffix=n_suffix,
        syntax_valid=syntax_valid,
        language=language,
        filename=named.name if named else None,
        workspace=str(named.resolve().parent) if named else None,  # no name, no project to learn from
        show={
            "extra": {"file": str(file), "line": line, "column": column},
            "live": False,
            "newline": newline,
            "line_goes_on": bool(rest_of_line.strip()),  # the cursor is inside its line
        },
    )


def _write(flags: dict, *, show: dict | None = None, **fields) -> None:
    """Run a request on the completion model from a command's `flags` (its parameters, by name)
    and the request's own `fields`, and show it (`show`: how, for `run_and_show`)."""
    settings, service = completion_service(
        flags["model"],
        n_gpu_layers=flags["n_gpu_layers"],
        threads=flags["threads"],
        n_ctx=flags["n_ctx"],
        quiet=flags["as_json"],
    )
    request = request_for(
        settings,
        **{k: flags[k] for k in ("strategy", "max_tokens", "temperature", "seed", "stop")},
        options=flags["option"],
        **fields,
    )
    newline = (show or {}).get("newline", "\n")
    if newline != "\n":  # the model writes "\n" (its line ends become the file's at the end): a stop too
        request.stop = [s.replace(newline, "\n") for s in request.stop]
    note_unused_temperature(service, request.strategy, flags["temperature"])
    constraint = constraint_from_flags(service, flags["grammar"], flags["regex"], flags["json_schema"])
    run_and_show(service, request, as_json=flags["as_json"], constraint=constraint, **(show or {}))
