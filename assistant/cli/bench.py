"""`bench speed` and `bench strategies`: ratios against a baseline measured in the same run."""

from __future__ import annotations

from typing import Annotated

import typer

from ..errors import UserError
from .app import bench_app
from .loading import completion_service
from .options import CtxOpt, GpuOpt, JsonOpt, ModelOpt, ThreadsOpt
from .output import emit_json


def _run(bench, model, tokens: int, rounds: int, *, as_json: bool, **flags) -> dict | None:
    """Run a benchmark on the completion model, its steps said on stderr; with --json print its
    result and return None, else return it to be shown."""
    if tokens < 2:
        raise UserError(f"--tokens must be >= 2, got {tokens}")
    if rounds < 1:
        raise UserError(f"--rounds must be >= 1, got {rounds}")
    _, service = completion_service(model, quiet=as_json, **flags)
    note = None if as_json else (lambda msg: typer.echo(f"  {msg}", err=True))
    result = bench(service, n_tokens=tokens, rounds=rounds, progress=note)
    if as_json:
        emit_json(result)
        return None
    return result


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
    from ..bench.speed import run_speed

    result = _run(
        run_speed, model, tokens, rounds, as_json=as_json, n_gpu_layers=n_gpu_layers, threads=threads, n_ctx=n_ctx
    )
    if result is None:
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
    from ..bench.strategies import run_strategies_bench

    result = _run(
        run_strategies_bench,
        model,
        tokens,
        rounds,
        as_json=as_json,
        n_gpu_layers=n_gpu_layers,
        threads=threads,
        n_ctx=n_ctx,
    )
    if result is None:
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
