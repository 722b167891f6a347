"""`assistant eval infill`: infilling quality on cases {"prefix", "suffix", "middle", "test"?,
"language"? (default python; a test runs only for Python)}.

Default cases are cut from the HumanEval canonical solutions: one line masked after its
indentation (single-line) and a three-line block (multi-line); each keeps the problem's tests.
Reported: syntax_valid_rate (prefix + completion + suffix parses), nonempty_valid_rate (the
same with a non-empty completion: an empty middle often parses too, so this one counts),
exact_match, edit similarity, pass_rate (cases with a test run in the sandbox), seconds/case.
"""

from __future__ import annotations

import difflib
import json
import time
from collections.abc import Callable
from pathlib import Path

from ..calibration import humaneval_problems
from ..context.syntax import EXTENSIONS, parses
from ..decoding import Request, Sampling
from ..errors import UserError, reason
from ..sandbox import run_python

LANGUAGES = frozenset(EXTENSIONS.values())


def humaneval_cases(kind: str = "single") -> list[dict]:
    """Cases cut from HumanEval canonical solutions (kind: single, multi or both)."""
    cases = []
    for prob in humaneval_problems():
        lines = prob["canonical_solution"].split("\n")
        body = [i for i, line in enumerate(lines) if line.strip()]
        if not body:
            continue
        test = f"{prob['test']}\n\ncheck({prob['entry_point']})\n"
        if kind in ("single", "both"):
            i = body[len(body) // 2]
            indent = len(lines[i]) - len(lines[i].lstrip())
            cases.append(
                {
                    "id": f"{prob['task_id']}/single",
                    "prefix": prob["prompt"] + "\n".join(lines[:i]) + ("\n" if i else "") + lines[i][:indent],
                    "suffix": "\n" + "\n".join(lines[i + 1 :]),
                    "middle": lines[i][indent:],
                    "test": test,
                }
            )
        if kind in ("multi", "both") and len(body) >= 3:
            i = body[len(body) // 3]
            j = min(i + 3, len(lines))
            indent = len(lines[i]) - len(lines[i].lstrip())
            cases.append(
                {
                    "id": f"{prob['task_id']}/multi",
                    "prefix": prob["prompt"] + "\n".join(lines[:i]) + ("\n" if i else "") + lines[i][:indent],
                    "suffix": "\n" + "\n".join(lines[j:]),
                    "middle": "\n".join(lines[i:j])[indent:],
                    "test": test,
                }
            )
    return cases


def load_cases(path: Path) -> list[dict]:
    cases = []
    try:
        text = Path(path).read_text(encoding="utf-8-sig")  # a BOM is no JSON
    except OSError as exc:
        raise UserError(f"cannot read cases file {path}: {reason(exc)}") from None
    except UnicodeDecodeError as exc:
        raise UserError(f"cases file {path} is not UTF-8 text (byte {exc.start})") from None
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            case = json.loads(line)
        except ValueError as exc:
            raise UserError(f"{path}:{n}: not JSON: {exc}") from None
        if not isinstance(case, dict):
            raise UserError(f"{path}:{n}: expected a JSON object with prefix, suffix and middle")
        missing = [k for k in ("prefix", "suffix", "middle") if not isinstance(case.get(k), str)]
        if missing:
            raise UserError(f"{path}:{n}: missing string field(s) {', '.join(missing)}")
        if not isinstance(case.get("test", ""), str | None):
            raise UserError(f"{path}:{n}: 'test' must be a string of Python to run after the file")
        language = case.get("language", "python")
        if language not in LANGUAGES:  # parsed as Python, a JavaScript case was never valid
            raise UserError(f"{path}:{n}: 'language' must be one of {', '.join(sorted(LANGUAGES))}, got {language!r}")
        if language != "python" and case.get("test"):
            raise UserError(f"{path}:{n}: 'test' runs as Python, and this case is {language}")
        case.setdefault("id", f"{Path(path).name}:{n}")
        cases.append(case)
    if not cases:
        raise UserError(f"no cases in {path}")
    return cases


def run_infill_eval(
    service,
    *,
    cases: list[dict],
    strategy: str = "greedy",
    options: dict | None = None,
    sampling: Sampling | None = None,
    max_tokens: int = 96,
    language: str = "python",
    syntax_valid: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    def request(case: dict) -> Request:
        # single-line holes stop at the end of the line, as single-line infilling benchmarks do
        single = "\n" not in case["middle"].strip("\n")
        return Request(
            prompt=case["prefix"],
            suffix=case["suffix"],
            max_tokens=max_tokens,
            strategy=strategy,
            options=dict(options or {}),
            language=case.get("language", language),
            syntax_valid=syntax_valid,
            stop=["\n"] if single else [],
            sampling=sampling or Sampling(),
        )

    if cases:  # bad settings fail here, before any case runs
        service.check(request(cases[0]))
    if progress:
        progress(0, len(cases))
    rows = []
    try:
        for n, case in enumerate(cases, 1):
            rows.append(_run_case(service, request(case), case))
            if progress:
                progress(n, len(cases))
    except KeyboardInterrupt:  # Ctrl-C: the cases done so far are still a result, said as partial
        interrupted = True
    else:
        interrupted = False
    n = len(rows)
    tested = [r for r in rows if "passed" in r]

    def rate(key):
        return round(sum(r[key] for r in rows) / n, 4) if n else 0.0

    summary = {
        "benchmark": "infill",
        "strategy": strategy,
        "n": n,
        "syntax_valid_rate": rate("syntax_valid"),
        "nonempty_valid_rate": rate("nonempty_valid"),
        "exact_match": rate("exact_match"),
        "edit_similarity": round(sum(r["edit_similarity"] for r in rows) / n, 4) if n else 0.0,
        "pass_rate": round(sum(r["passed"] for r in tested) / len(tested), 4) if tested else None,
        "seconds_per_case": round(sum(r["seconds"] for r in rows) / n, 4) if n else 0.0,
        "rows": rows,
    }
    if interrupted:
        summary.update(interrupted=True, cases=len(cases))
    return summary


def _run_case(service, req: Request, case: dict) -> dict:
    """One case: the completion, whether the file then parses, how close it is, its test."""
    t0 = time.perf_counter()
    final = service.run(req)
    seconds = time.perf_counter() - t0
    middle = final.text
    valid = parses(case["prefix"] + middle + case["suffix"], req.language)
    row = {
        "id": case.get("id"),
        "completion": middle,
        "finish_reason": final.finish_reason,
        "syntax_valid": valid,
        "nonempty_valid": valid and bool(middle.strip()),
        "exact_match": middle.strip() == case["middle"].strip(),
        "edit_similarity": difflib.SequenceMatcher(None, middle.strip(), case["middle"].strip()).ratio(),
        "seconds": seconds,
    }
    if "seed" in final.stats:  # a sampled case can be run again
        row["seed"] = final.stats["seed"]
    if case.get("test"):
        program = case["prefix"] + middle + case["suffix"] + "\n\n" + case["test"]
        row["passed"] = run_python(program, timeout=10).passed
    return row
