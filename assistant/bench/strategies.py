"""`assistant bench strategies`: every registered strategy on the same prompts in one run.

Each strategy generates the same number of tokens per prompt (end-of-generation ignored, no
stop rules) so wall times compare directly; times are reported relative to greedy measured in
the same run, with forward passes and tokens evaluated. Extra rows answer the goals:
- `superposed_vs_3_samples`: three sequential `sample` runs / one superposed run (k=3),
- `speculative_repetitive`: tok/s of speculative over greedy on a file that repeats itself
  (and of `-o exact=true`, which verifies only in batch sizes that round as single decodes),
- `grammar`: per-token cost of applying a constraint mask, as a fraction of a decode step,
- `adadec_analysis`: the schedule auto chose, pause rate, passes spent per pause, price of a
  k-row batch and the floor it sets for the batched schedule, the batched and
  dynamic-length ('line') variants timed against greedy, and adadec against greedy on the
  first HumanEval prompts (`humaneval_prompts`: another workload, another pause rate).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from ..decoding import Request, Sampling
from ..errors import PluginError
from ..service import Service
from .room import check_room

PROMPTS = [
    'def is_palindrome(s: str) -> bool:\n    """Return True if s reads the same backwards."""\n',
    "import json\n\n\ndef load_users(path):\n",
]

REPETITIVE = (
    "import argparse\n\n\ndef parse_args():\n    parser = argparse.ArgumentParser()\n"
    + "".join(
        f'    parser.add_argument("--{name}", type=float, default=0.1, help="{name} value")\n'
        for name in ("alpha", "beta", "gamma", "delta", "epsilon")
    )
    + '    parser.add_argument("--'
)


def _run(service: Service, prompt: str, strategy: str, n: int, options=None, seed=0, constraint=None) -> dict:
    req = Request(
        prompt=prompt,
        max_tokens=n,
        strategy=strategy,
        options=options or {},
        ignore_eos=True,
        sampling=Sampling(seed=seed),
    )
    t0 = time.perf_counter()
    final = service.run(req, constraint=constraint)
    return {"seconds": time.perf_counter() - t0, "tokens": len(final.tokens), "stats": final.stats}


def _best(rounds: int, fn: Callable[[], float]) -> float:
    """The fastest of `rounds` timings: the machines are shared, and noise only adds time."""
    return min(fn() for _ in range(rounds))


def run_strategies_bench(
    service: Service,
    *,
    n_tokens: int = 48,
    rounds: int = 3,
    progress: Callable[[str], None] | None = None,
) -> dict:
    note = progress or (lambda _m: None)
    check_room(service, n_tokens, [*PROMPTS, REPETITIVE, *_humaneval_prompts()], margin=64)  # 64: adadec's lookaheads
    strategies = service.registry.strategies()
    infill_only = [n for n, cls in strategies.items() if cls.needs_syntax_guard]
    names = [n for n in strategies if n not in infill_only]
    results: dict[str, dict] = {}
    # warm-up: page the model in, build the superposed n-gram store, time speculative's decode
    # costs, so no row pays one-time set-up
    _run(service, PROMPTS[0], "greedy", 4)
    if "superposed" in names:
        _run(service, PROMPTS[0], "superposed", 2)
    if "speculative" in names:  # measures its decode-cost curve once per context
        _run(service, PROMPTS[0], "speculative", 2)
    if "adadec" in names:  # threshold 0 pauses at once: auto times the prices it picks a schedule by
        _run(service, PROMPTS[0], "adadec", 2, options={"threshold": "0"})
    # Each round runs greedy between every two strategies (G S1 G S2 G ... G): a strategy's
    # ratio is its time over the mean of the greedy runs just before and after it, so a slow
    # spell of the shared machine hits both sides; a row reports the median ratio of its
    # rounds and its fastest time.
    others = [s for s in names if s != "greedy"]
    ratios: dict[str, list[float]] = {name: [] for name in others}

    def timed(name: str) -> dict:
        runs = [_run(service, p, name, n_tokens) for p in PROMPTS]
        row = {
            "seconds": round(sum(x["seconds"] for x in runs), 4),
            "tokens": sum(x["tokens"] for x in runs),
            "forward_passes": sum(x["stats"]["forward_passes"] for x in runs),
            "tokens_evaluated": sum(x["stats"]["tokens_evaluated"] for x in runs),
        }
        if any("pauses" in x["stats"] for x in runs):
            row["pauses"] = sum(x["stats"].get("pauses", 0) for x in runs)
        if "adadec_schedule" in runs[0]["stats"]:
            row["schedule"] = runs[0]["stats"]["adadec_schedule"]
            # the pause rate, and so the ratio, follows the threshold: say which one ran
            row["threshold"] = runs[0]["stats"]["adadec_threshold"]
            row["threshold_source"] = runs[0]["stats"]["threshold_source"]
        if name not in results or row["seconds"] < results[name]["seconds"]:
            results[name] = row
        return row

    failed: dict[str, str] = {}  # a plugin's strategy that raised: said in its row, the others go on
    for r in range(rounds):
        note(f"round {r + 1}/{rounds}: greedy")
        before = timed("greedy")["seconds"]
        for name in others:
            if name in failed:
                continue
            note(f"round {r + 1}/{rounds}: {name}")
            try:
                seconds = timed(name)["seconds"]
            except PluginError as exc:
                failed[name] = str(exc)
                continue
            after = timed("greedy")["seconds"]
            ratios[name].append(seconds / ((before + after) / 2))
            before = after
    results["greedy"]["time_vs_greedy"] = 1.0
    for name in others:
        if name not in failed:
            results[name]["time_vs_greedy"] = round(float(np.median(ratios[name])), 4)
    extra: dict[str, dict] = {}
    if "superposed" in results and "sample" in results:
        note("superposed vs three sequential samples")
        three = _best(
            rounds,
            lambda: sum(_run(service, p, "sample", n_tokens, seed=s)["seconds"] for p in PROMPTS for s in range(3)),
        )
        extra["superposed_vs_3_samples"] = {
            "three_samples_seconds": round(three, 4),
            "superposed_seconds": results["superposed"]["seconds"],
            "speedup": round(three / results["superposed"]["seconds"], 4),
        }
    if "speculative" in results:
        note("speculative on repetitive code")
        runs: dict[str, dict] = {}
        variants = {
            "greedy": ("greedy", {}),
            "speculative": ("speculative", {}),
            "exact": ("speculative", {"exact": True}),
        }
        # the prompt cached first: every variant then starts alike (the first to run paid
        # the whole prefill, which with --rounds 1 gave speculative a 3.9x "wall" speed-up)
        _run(service, REPETITIVE, "greedy", 1)
        for _ in range(rounds):
            for name, (strategy, options) in variants.items():
                x = _run(service, REPETITIVE, strategy, n_tokens * 2, options=options)
                if name not in runs or x["seconds"] < runs[name]["seconds"]:
                    runs[name] = x
        g, s = runs["greedy"], runs["speculative"]
        g_tps, s_tps = g["stats"]["decode_tokens_per_second"], s["stats"]["decode_tokens_per_second"]
        exact = runs["exact"]["stats"]
        extra["speculative_repetitive"] = {
            # generation speed, as llama.cpp's "eval" rate: the shared prompt evaluation excluded
            "greedy_tok_s": round(g_tps, 2),
            "speculative_tok_s": round(s_tps, 2),
            "speedup": round(s_tps / g_tps, 4),
            "speedup_wall_with_prompt": round(g["seconds"] / s["seconds"], 4),
            "forward_passes": s["stats"]["forward_passes"],
            "greedy_forward_passes": g["stats"]["forward_passes"],
            "drafted_tokens": s["stats"]["drafted_tokens"],
            "accepted_draft_tokens": s["stats"]["accepted_draft_tokens"],
            # -o exact=true: only batch sizes that reproduce single decodes bit for bit
            "exact_speedup": round(exact["decode_tokens_per_second"] / g_tps, 4),
            "exact_forward_passes": exact["forward_passes"],
        }
    if "adadec" in results:
        note("adadec: dynamic lookahead and cost floor")
        extra["adadec_analysis"] = _adadec_analysis(service, results, n_tokens, rounds, note)
    for name in infill_only:
        note(f"{name} vs greedy on infill")
        extra[f"{name}_infill"] = _infill_row(service, name, n_tokens)
    note("constraint mask overhead")
    extra["grammar"] = _mask_overhead(service, n_tokens)
    results.update(extra)
    results.update({name: {"error": why} for name, why in failed.items()})
    return results


def _greedy_seconds(service: Service, n_tokens: int) -> float:
    return sum(_run(service, p, "greedy", n_tokens)["seconds"] for p in PROMPTS)


def _ratio_to_greedy(service: Service, rounds: int, n_tokens: int, fn: Callable[[], float]) -> float:
    """Median over rounds of fn()'s seconds over the mean of the greedy runs just before and
    after it (the same sandwich as the main rows)."""
    ratios, before = [], _greedy_seconds(service, n_tokens)
    for _ in range(rounds):
        seconds = fn()
        after = _greedy_seconds(service, n_tokens)
        ratios.append(seconds / ((before + after) / 2))
        before = after
    return float(np.median(ratios))


def _adadec_analysis(service: Service, results: dict, n_tokens: int, rounds: int, note: Callable[[str], None]) -> dict:
    """Why adadec costs what it costs here. The batched schedule runs L k-row decodes a pause;
    at best all L lookahead tokens are reused as greedy steps, so no batched implementation
    beats 1 + pause_rate * L * (cost(k) / cost(1) - 1). Best-first pays instead the passes
    spent on candidates that lose. Also times the batched schedule and the reference's
    dynamic-length variant (mode 'line', AdaDynL) on the same prompts, and adadec on
    HumanEval prompts, where the pause rate differs."""
    o = service.registry.strategies()["adadec"].Options()  # its defaults: k, L
    ctx = service.context()
    row_ratio = ctx.output_cost(o.k, repeats=5) / ctx.output_cost(1, repeats=5)
    row, greedy = results["adadec"], results["greedy"]
    pause_rate = row["pauses"] / max(1, row["tokens"])
    variants: dict[str, list[dict]] = {}

    def timed(name: str, options: dict) -> Callable[[], float]:
        def fn() -> float:
            variants[name] = [_run(service, p, "adadec", n_tokens, options=options) for p in PROMPTS]
            return sum(x["seconds"] for x in variants[name])

        return fn

    batch = _ratio_to_greedy(service, rounds, n_tokens, timed("batch", {"schedule": "batch"}))
    line = _ratio_to_greedy(service, rounds, n_tokens, timed("line", {"mode": "line"}))
    note("adadec on HumanEval prompts")
    return {
        "schedule": row["schedule"],
        "threshold": row["threshold"],
        "threshold_source": row["threshold_source"],  # 'default' until `assistant calibrate` ran
        "pause_rate": round(pause_rate, 4),
        "extra_passes_per_pause": round((row["forward_passes"] - greedy["forward_passes"]) / max(1, row["pauses"]), 3),
        "k_row_batch_vs_step": round(row_ratio, 4),
        "batch_floor_vs_greedy": round(1 + pause_rate * o.lookahead * (row_ratio - 1), 4),
        "batch_pause_rate_for_1_3x": round(0.3 / (o.lookahead * max(row_ratio - 1, 1e-9)), 4),
        "batch_time_vs_greedy": round(batch, 4),
        "batch_tokens_evaluated": sum(r["stats"]["tokens_evaluated"] for r in variants["batch"]),
        "line_mode_time_vs_greedy": round(line, 4),
        "line_mode_pauses": sum(r["stats"].get("pauses", 0) for r in variants["line"]),
        "humaneval_prompts": _adadec_on_humaneval(service, n_tokens),
    }


HUMANEVAL_PROMPTS = 8


def _humaneval_prompts() -> list[str]:
    from ..calibration import humaneval_problems

    return [p["prompt"] for p in humaneval_problems()[:HUMANEVAL_PROMPTS]]


def _adadec_on_humaneval(service: Service, n_tokens: int) -> dict:
    """adadec against greedy on the first HumanEval prompts (each continued for n_tokens, as
    the main rows): how much the pause rate, and with it the cost, depends on the workload.
    Each prompt is evaluated once untimed, then timed greedy, adadec, greedy, so every timed run
    reuses the cached prompt (a cold first greedy run paid the prefill and made adadec look
    ~15% cheaper); the ratio is the adadec total over the mean greedy total."""
    prompts = _humaneval_prompts()
    greedy_s = adadec_s = 0.0
    greedy_passes = adadec_passes = pauses = tokens = prompt_tokens = reused = 0
    for prompt in prompts:
        _run(service, prompt, "greedy", 1)
        before = _run(service, prompt, "greedy", n_tokens)
        ada = _run(service, prompt, "adadec", n_tokens)
        after = _run(service, prompt, "greedy", n_tokens)
        for x in (before, ada, after):
            prompt_tokens += x["stats"]["prompt_tokens"]
            reused += x["stats"]["tokens_reused"]
        greedy_s += (before["seconds"] + after["seconds"]) / 2
        adadec_s += ada["seconds"]
        greedy_passes += after["stats"]["forward_passes"]
        adadec_passes += ada["stats"]["forward_passes"]
        pauses += ada["stats"].get("pauses", 0)
        tokens += ada["tokens"]
    return {
        "prompts": len(prompts),
        "time_vs_greedy": round(adadec_s / greedy_s, 4),
        "forward_passes": adadec_passes,
        "greedy_forward_passes": greedy_passes,
        "pause_rate": round(pauses / max(1, tokens), 4),
        "extra_passes_per_pause": round((adadec_passes - greedy_passes) / max(1, pauses), 3),
        # the timed runs' share of prompt tokens served from the cache: near 1, so no run paid
        # a prefill the others did not
        "prompt_reuse": round(reused / max(1, prompt_tokens), 4),
    }


INFILL_CASES = [
    ("def mean(xs):\n    total = 0\n    for x in xs:\n        ", "\n    return total / len(xs)\n"),
    ("def is_even(n):\n    return ", "\n\n\nprint(is_even(4))\n"),
]


def _infill_row(service: Service, name: str, n_tokens: int) -> dict:
    """An infill-only strategy against greedy on the same infill requests (stop at newline)."""
    times = {}
    for strategy in ("greedy", name):
        t0 = time.perf_counter()
        for prefix, suffix in INFILL_CASES:
            req = Request(prompt=prefix, suffix=suffix, max_tokens=n_tokens, strategy=strategy, stop=["\n"])
            service.run(req)
        times[strategy] = time.perf_counter() - t0
    return {
        "greedy_seconds": round(times["greedy"], 4),
        "seconds": round(times[name], 4),
        "time_vs_greedy_infill": round(times[name] / times["greedy"], 4),
    }


class _Timed:
    """Wraps a constraint and times its mask computation and state updates."""

    def __init__(self, inner, clock: dict):
        self.inner, self.clock = inner, clock

    def allowed(self):
        t0 = time.perf_counter()
        mask = self.inner.allowed()
        self.clock["allowed"] += time.perf_counter() - t0
        self.clock["masks"].append(mask.copy())
        return mask

    def advance(self, token):
        t0 = time.perf_counter()
        self.inner.advance(token)
        self.clock["advance"] += time.perf_counter() - t0

    def fork(self):
        return _Timed(self.inner.fork(), self.clock)

    def complete(self):
        return self.inner.complete()


def _mask_overhead(service: Service, n_tokens: int) -> dict:
    """Per-token cost of a real grammar constraint (llguidance, the shipped JSON grammar) during
    greedy generation: computing the mask, updating the matcher, and applying the mask to the
    logits, against a decode step of the same run. llguidance's own numpy apply kernel is timed
    on the same masks for comparison."""
    from .. import grammars
    from ..constraints import build

    model = service.model()
    constraint = build("lark", grammars.path("json.lark").read_text(), model)
    clock = {"allowed": 0.0, "advance": 0.0, "masks": []}
    # a prompt the model answers at length: "Settings as JSON: " got `{}`, 2 tokens to time
    req = Request(prompt="# config.json\n", max_tokens=n_tokens, strategy="greedy")
    final = service.run(req, constraint=_Timed(constraint, clock))
    steps = max(1, len(clock["masks"]))
    logits = np.random.default_rng(0).standard_normal(model.n_vocab).astype(np.float32)
    ops = service.ops()
    t0 = time.perf_counter()
    for mask in clock["masks"]:
        ops.masked(logits, mask)
    apply_s = (time.perf_counter() - t0) / steps
    try:
        import llguidance.numpy as lln

        packed = [np.packbits(m, bitorder="little").view(np.int32)[None, :] for m in clock["masks"]]
        t0 = time.perf_counter()
        for bits in packed:
            lln.apply_token_bitmask_inplace(logits.copy()[None, :], bits)
        llg_s = (time.perf_counter() - t0) / steps
    except (ImportError, ValueError):
        llg_s = float("nan")
    step = final.stats["decode_seconds"] / max(1, final.stats["forward_passes"])
    per_token = (clock["allowed"] + clock["advance"]) / steps + apply_s
    return {
        "tokens": len(final.tokens),
        "mask_compute_ms": round((clock["allowed"] + clock["advance"]) / steps * 1000, 4),
        "mask_apply_ms": round(apply_s * 1000, 4),
        "llguidance_numpy_apply_ms": round(llg_s * 1000, 4),
        "decode_step_ms": round(step * 1000, 4),
        "overhead_vs_step": round(per_token / step, 4),
    }
