"""`eval humaneval`, `eval compare`, `eval infill` and `calibrate`: quality, measured and saved
as it goes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import Interrupted, UserError
from .app import app, eval_app
from .loading import completion_service
from .options import (
    CtxOpt,
    GpuOpt,
    JsonOpt,
    ModelOpt,
    OptionOpt,
    SeedOpt,
    StrategyOpt,
    TempOpt,
    ThreadsOpt,
    parse_options,
    path_parser,
    sampling_for,
    strategy_name,
)
from .output import echo_notes, emit_json, note_unused_temperature, rate
from .progress import progress_bar, say_where_work_is_saved

_GIVE = "give a results file of `eval humaneval`"


@eval_app.command("humaneval")
def eval_humaneval(
    strategy: StrategyOpt = None,
    option: OptionOpt = None,
    limit: Annotated[int | None, typer.Option("--limit", help="Only the first N problems.", min=1)] = None,
    temperature: TempOpt = None,
    seed: SeedOpt = None,
    max_tokens: Annotated[int, typer.Option("--max-tokens", "-n", help="Most tokens per problem.", min=1)] = 384,
    output: Annotated[
        Path | None,
        typer.Option("--output", help="Results JSONL (default: in the data dir).", parser=path_parser("--output")),
    ] = None,
    model: ModelOpt = None,
    n_gpu_layers: GpuOpt = None,
    threads: ThreadsOpt = None,
    n_ctx: CtxOpt = None,
    as_json: JsonOpt = False,
):
    """pass@1 on HumanEval; each completion runs against its tests in the sandbox."""
    from ..evals.humaneval import run_humaneval

    settings, service = completion_service(
        model, n_gpu_layers=n_gpu_layers, threads=threads, n_ctx=n_ctx, quiet=as_json
    )
    name = strategy_name(settings, strategy, infill=False)
    note_unused_temperature(service, name, temperature)
    with say_where_work_is_saved(), progress_bar(f"humaneval [{name}]", enabled=not as_json) as advance:
        summary = run_humaneval(  # checks the settings before it shows the bar
            service,
            strategy=name,
            options=parse_options(option),
            limit=limit,
            sampling=sampling_for(settings, temperature, seed),
            max_tokens=max_tokens,
            output=output,
            progress=advance,
        )
    if as_json:
        emit_json(summary)
        return
    extra = "  ".join(f"{k} {v:.3f}" for k, v in summary.items() if k.startswith("pass@") and k != "pass@1")
    typer.echo(f"{summary['model']} [{name}] pass@1 {summary['pass@1']:.3f} on {summary['n']} problems  {extra}")
    typer.echo(
        f"  {summary['tokens_generated']} tokens, {summary['seconds']:.1f}s generating; results: {summary['results']}"
    )
    echo_notes(summary.get("notes", []))


@eval_app.command("compare")
def eval_compare(
    a: Annotated[
        Path, typer.Argument(help="Results JSONL of run A (from `eval humaneval`).", parser=path_parser("A", _GIVE))
    ],
    b: Annotated[Path, typer.Argument(help="Results JSONL of run B.", parser=path_parser("B", _GIVE))],
    as_json: JsonOpt = False,
):
    """Pair two HumanEval runs problem by problem: who passes what, and whether it is chance."""
    from ..evals.compare import compare_results

    c = compare_results(a, b)
    if as_json:
        emit_json(c)
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
    echo_notes(c.get("notes", []))


@eval_app.command("infill")
def eval_infill(
    cases: Annotated[
        Path | None,
        typer.Option(
            "--cases", help="JSONL of {prefix, suffix, middle, test?, language?, id?}.", parser=path_parser("--cases")
        ),
    ] = None,
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
    from ..evals.infill import humaneval_cases, load_cases, run_infill_eval

    if kind not in ("single", "multi", "both"):
        raise UserError("--kind must be single, multi or both")
    settings, service = completion_service(
        model, n_gpu_layers=n_gpu_layers, threads=threads, n_ctx=n_ctx, quiet=as_json
    )
    name = strategy_name(settings, strategy, infill=True)
    service.registry.strategy(name)  # an unknown --strategy: said before any case runs
    note_unused_temperature(service, name, temperature)
    chosen = (load_cases(cases) if cases else humaneval_cases(kind))[: limit or None]
    with progress_bar(f"infill [{name}]", enabled=not as_json) as advance:
        result = run_infill_eval(
            service,
            cases=chosen,
            strategy=name,
            options=parse_options(option),
            sampling=sampling_for(settings, temperature, seed),
            max_tokens=max_tokens,
            syntax_valid=syntax_valid,
            progress=advance,
        )
    if as_json:
        emit_json(result)
    else:
        typer.echo(
            f"[{name}] n={result['n']} syntax_valid {result['syntax_valid_rate']:.3f}  nonempty_valid "
            f"{result['nonempty_valid_rate']:.3f}  exact {result['exact_match']:.3f}  edit_sim "
            f"{result['edit_similarity']:.3f}  pass {rate(result['pass_rate'])}  "
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
    from ..calibration import add_rerank_check, spread_is_wide
    from ..calibration import calibrate as run_calibration

    settings, service = completion_service(
        model, n_gpu_layers=n_gpu_layers, threads=threads, n_ctx=n_ctx, quiet=as_json
    )
    with (
        say_where_work_is_saved(),
        progress_bar("teacher-forcing HumanEval solutions", enabled=not as_json) as advance,
    ):
        try:
            result = run_calibration(service, limit=limit, replace=replace, progress=advance)
        except KeyboardInterrupt:
            raise Interrupted("interrupted: nothing was stored (a stored calibration is as it was)") from None
    if check_rerank:
        with say_where_work_is_saved(), progress_bar("checking the lookahead rerank", enabled=not as_json) as advance:
            try:
                result = add_rerank_check(service, result, progress=advance)
            except KeyboardInterrupt:
                kept = "is stored" if result["stored"] else "was not stored (see above)"
                raise Interrupted(
                    f"interrupted: the threshold {result['threshold']:.3f} nats {kept}; the rerank check was "
                    "not finished (`calibrate --check-rerank` runs it again)"
                ) from None
    if as_json:
        emit_json(result)
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
    from ..rerank_check import verdict

    typer.echo(
        f"rerank check at {c['pauses']} pause positions of the reference solutions: greedy's token was the "
        f"reference {c['greedy_right']} times, the lookahead winner {c['rerank_right']}; of the "
        f"{c['changed']} changes, {c['changed_to_reference']} went to the reference and "
        f"{c['changed_from_reference']} away from it (exact McNemar p = {c['p']:.2g})"
    )
    warning = verdict(c)
    if warning:
        typer.echo(f"assistant: note: {warning}", err=True)
