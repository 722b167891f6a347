"""Does AdaDec's lookahead rerank help this model? A teacher-forced check on reference code.

AdaDec pays off only if, where it pauses, its lookahead winner is the right token more often
than greedy's argmax. That can be measured without running any tests: teacher-force the
HumanEval reference solutions (as `calibrate` does), and at every position whose entropy
reaches the threshold run the same top-k, L-token greedy lookahead the strategy runs and see
which token it keeps. Where the winner differs from greedy's token, count how often the change
went to the reference token and how often away from it; the exact McNemar p-value says whether
the split could be chance. On a model where the rerank moves away from the reference more
often, AdaDec should be expected to lose to greedy.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .calibration import fit_functions, forced_rows
from .code_hash import code_hash
from .decoding import Request, Run
from .decoding.lookahead import greedy_rollouts, rollout_code
from .decoding.steps import top_candidates
from .evals.compare import mcnemar_exact_p

SIGNIFICANT = 0.05


def check_rerank(
    model,
    context,
    ops,
    inputs: list[tuple[list[int], int]],
    threshold: float,
    *,
    k: int = 3,  # the paper's defaults, as adadec's options
    lookahead: int = 5,
    score_past_end: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Counts at the reference positions where AdaDec would pause (see the module docstring),
    over the teacher-forced solutions `inputs` (`calibration.forced_inputs`)."""
    pauses = changed = to_ref = from_ref = greedy_right = 0
    if progress:
        progress(0, len(inputs))
    for i, (seq, full, start, rows) in enumerate(forced_rows(context, inputs)):
        pause_at = []  # read every row before the lookaheads' decodes reuse the logits buffer
        for j, row in enumerate(rows):
            lse, entropy = ops.logsumexp_entropy(row)
            if entropy >= threshold:
                pause_at.append((start + j, *top_candidates(ops, row, k, lse)))
        for at, cands, logprobs in pause_at:
            target = full[at]
            won = _lookahead_winner(model, context, ops, seq, full[:at], cands, logprobs, lookahead, score_past_end)
            pauses += 1
            greedy_right += cands[0] == target
            if won != cands[0]:
                changed += 1
                to_ref += won == target
                from_ref += cands[0] == target
        if progress:
            progress(i + 1, len(inputs))
    return {
        "threshold": threshold,
        "k": k,
        "lookahead": lookahead,
        "pauses": pauses,
        "greedy_right": greedy_right,
        "rerank_right": greedy_right - from_ref + to_ref,
        "changed": changed,
        "changed_to_reference": to_ref,
        "changed_from_reference": from_ref,
        "p": round(mcnemar_exact_p(to_ref, from_ref), 6),
    }


def _lookahead_winner(model, context, ops, seq, prefix, cands, logprobs, lookahead, score_past_end=False) -> int:
    """The candidate AdaDec keeps after `prefix` (which `seq` holds the cells of, and more)."""
    fork = seq.fork()
    fork.truncate(len(prefix))
    run = Run(
        request=Request(prompt="-", max_tokens=lookahead + 1, n_indent=1),
        model=model,
        context=context,
        prompt_tokens=list(prefix),
        ops=ops,
        sequence=fork,
    )
    try:  # best-first: the winner batch finds, in single rows that round as greedy does
        branches, forks = greedy_rollouts(
            run,
            cands,
            [float(x) for x in logprobs],
            lookahead,
            schedule="best-first",
            keep_logits_above=np.inf,
            score_past_end=score_past_end,
        )
        for f in forks:
            if f is not None:
                f.release()
    finally:
        fork.release()
    return cands[int(np.argmax([b.score for b in branches]))]


def check_code() -> str:
    """Names the code a check is measured by: the fit's, the check's and the lookahead's."""
    return code_hash(*fit_functions(), check_rerank, _lookahead_winner, *rollout_code(), top_candidates)


def verdict(check: dict) -> str | None:
    """A warning when the rerank measurably moves away from the reference, else None."""
    to_ref, from_ref = check["changed_to_reference"], check["changed_from_reference"]
    if from_ref > to_ref and check["p"] < SIGNIFICANT:
        return (
            f"on reference solutions, the lookahead rerank changed greedy's token {check['changed']} times: "
            f"{to_ref} to the reference, {from_ref} away from it (p = {check['p']:.2g}); "
            "expect AdaDec to do worse than greedy on this model"
        )
    return None
