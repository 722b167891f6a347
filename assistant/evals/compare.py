"""`assistant eval compare A B`: two HumanEval runs, problem by problem.

Two pass@1 figures alone hide how the runs differ: with a few passes on 164 problems, a
difference of two can be chance. The comparison pairs the problems, lists the ones only one run
passes, and gives the exact two-sided McNemar p-value (a binomial test on those discordant
problems), so "strategy X must not lose to greedy" can be judged on evidence.
"""

from __future__ import annotations

from math import comb
from pathlib import Path

from ..errors import UserError
from ..files import kind_of
from .humaneval import model_of_tag, read_results, strategy_of_tag


def mcnemar_exact_p(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value: the chance, were both runs equally good, of a split of
    the discordant problems at least this uneven."""
    d = only_a + only_b
    if d == 0:
        return 1.0
    tail = sum(comb(d, i) for i in range(min(only_a, only_b) + 1)) / 2**d
    return min(1.0, 2 * tail)


def _ms_per_token(records: list[dict]) -> float | None:
    """Generation time (a run's seconds less its set-up and prompt) per token generated."""
    tokens = sum(r.get("tokens", 0) for r in records)
    seconds = 0.0
    for r in records:
        st = r.get("stats") or {}
        seconds += r.get("seconds", 0.0) - st.get("setup_seconds", 0.0) - st.get("prompt_seconds", 0.0)
    return round(1000 * seconds / tokens, 3) if tokens and seconds > 0 else None


def _describe(path: Path, records: list[dict]) -> dict:
    runs = {r.get("run") for r in records} - {None}
    if len(runs) > 1:
        raise UserError(f"{path} mixes the results of {len(runs)} runs: compare files written by one run each")
    tag = runs.pop() if runs else ""
    model = model_of_tag(tag) if tag else ""
    return {"results": str(path), "run": tag, "strategy": strategy_of_tag(tag) if tag else "unknown", "model": model}


def compare_results(a: Path, b: Path) -> dict:
    """Pair two results files on the problems both hold; see the module docstring."""
    runs = []
    for path in (Path(a), Path(b)):
        kind = kind_of(path, "results file")
        if kind != "file":
            what = {"folder": f"{path} is a folder", "other": f"{path} is not a regular file"}
            raise UserError(f"{what.get(kind or '', f'no file {path}')}: compare two results files of `eval humaneval`")
        records = read_results(path)
        if not records:
            raise UserError(f"{path} holds no results")
        runs.append((path, records, {r["task_id"]: r for r in records}))
    (pa, la, ra), (pb, lb, rb) = runs
    common = [t for t in ra if t in rb]
    if not common:
        raise UserError(f"{pa} and {pb} share no problems")
    only_a = [t for t in common if ra[t]["passed"] and not rb[t]["passed"]]
    only_b = [t for t in common if rb[t]["passed"] and not ra[t]["passed"]]
    both = sum(1 for t in common if ra[t]["passed"] and rb[t]["passed"])
    summary = {"n": len(common)}
    for key, path, records, results in (("a", pa, la, ra), ("b", pb, lb, rb)):
        passed = sum(1 for t in common if results[t]["passed"])
        summary[key] = {
            **_describe(path, records),
            "passed": passed,
            "pass@1": round(passed / len(common), 4),
            "tokens": sum(results[t].get("tokens", 0) for t in common),  # what the passes cost
            "seconds": round(sum(results[t].get("seconds", 0.0) for t in common), 2),
            "ms_per_token": _ms_per_token([results[t] for t in common]),
        }
    summary.update(
        only_a=only_a,
        only_b=only_b,
        both=both,
        neither=len(common) - both - len(only_a) - len(only_b),
        identical_completions=sum(1 for t in common if ra[t].get("completion") == rb[t].get("completion")),
        unpaired=len(ra) + len(rb) - 2 * len(common),
        mcnemar_p=round(mcnemar_exact_p(len(only_a), len(only_b)), 4),
        seconds_a_vs_b=round(summary["a"]["seconds"] / summary["b"]["seconds"], 3) if summary["b"]["seconds"] else None,
        # the strategies' cost per token written: runs that end at different lengths compare fairly
        ms_per_token_a_vs_b=(
            round(summary["a"]["ms_per_token"] / summary["b"]["ms_per_token"], 3)
            if summary["a"]["ms_per_token"] and summary["b"]["ms_per_token"]
            else None
        ),
    )
    ma, mb = summary["a"]["model"], summary["b"]["model"]
    if ma and mb and ma != mb:  # a different model explains any difference: say so beside it
        summary["notes"] = [f"A and B ran different model files (sha256 {ma}... and {mb}...)"]
    return summary
