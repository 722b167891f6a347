"""The decoding strategies on a real model: pauses, drafts, exactness, masks, evaluation."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from conftest import ROOT, run_cli

from assistant.calibration import humaneval_problems
from assistant.config import Settings
from assistant.decoding import AllowedTokens, Done, Drafts, Pause, Request, Sampling, Token
from assistant.engine import Context
from assistant.errors import UserError
from assistant.registry import get_registry
from assistant.service import Service

SMALL_CORPUS = str(ROOT / "assistant")  # a quick n-gram corpus for superposed


def run(service, request, **kw):
    events = list(service.generate(request, **kw))
    done = events[-1]
    assert isinstance(done, Done)
    assert "".join(e.text for e in events if isinstance(e, Token)) == done.text
    return done, events


def prompt_leaving(service, cells: int) -> str:
    """The most lines of `v{i} = …` whose prompt leaves `cells` cells of the context free."""
    n_ctx, model = service.context().n_ctx, service.model()
    lines = [f"v{i} = {i * 7 % 100}" for i in range(2000)]
    lo, hi = 1, len(lines)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if len(model.tokenize("\n".join(lines[:mid]) + "\n")) <= n_ctx - cells:
            lo = mid
        else:
            hi = mid - 1
    return "\n".join(lines[:lo]) + "\n"


def first_fragile(pauses, tau: float, default: int) -> int:
    """Position of the first decision llama.cpp's batch-shape arithmetic could flip: an
    entropy near the threshold, or a near-tie between the exact scores (a pruned candidate's
    score is only a bound, so it cannot tell a near-tie)."""
    fragile = []
    for p in pauses:
        exact = sorted(s for i, s in enumerate(p.scores) if i not in p.pruned)
        if abs(p.entropy - tau) < 0.15 or (len(exact) > 1 and exact[-1] - exact[-2] < 0.05):
            fragile.append(p.position)
    return min(fragile, default=default)


def test_adadec_pauses_and_batches_its_lookahead(service):
    req = Request(
        prompt="# a list of fruits\nfruits = [",
        max_tokens=12,
        strategy="adadec",
        options={"threshold": "0.5", "k": "3", "lookahead": "4", "schedule": "batch"},
    )
    done, events = run(service, req)
    pauses = [e for e in events if isinstance(e, Pause)]
    assert pauses, "a low threshold on an open-ended prompt must pause"
    assert done.stats["adadec_schedule"] == "batch"
    for p in pauses:
        assert p.entropy >= 0.5 and len(p.candidates) == len(p.scores) <= 3
        assert 0 <= p.chosen < len(p.candidates)
        # the k branches advance together: at most L passes, several tokens per pass
        assert 1 <= p.stats["forward_passes"] <= 4
        assert p.stats["tokens_evaluated"] > p.stats["forward_passes"]
    assert done.stats["pauses"] == len(pauses)
    # a threshold nothing reaches gives exactly greedy
    calm = Request(prompt="def add(a, b):\n", max_tokens=10, strategy="adadec", options={"threshold": "100"})
    greedy = Request(prompt="def add(a, b):\n", max_tokens=10)
    calm_done = run(service, calm)[0]
    assert calm_done.tokens == run(service, greedy)[0].tokens
    assert calm_done.stats["adadec_schedule"] == "auto"  # never paused: nothing was timed


def test_adadec_reuse_and_seeded_lookahead_change_work_not_output(service):
    """Accepting the winner's lookahead tokens, and starting the next pause's greedy branch
    from the rollout already known, must give the tokens plain AdaDec gives, with fewer
    tokens evaluated. Logits from a batch differ slightly from a single decode's (llama.cpp
    arithmetic depends on the batch shape), so the runs are compared up to the first fragile
    decision: a near-tie between candidates, or an entropy near the threshold."""
    tau = 0.5
    done, pauses = {}, {}
    for reuse in (True, False):
        req = Request(
            prompt="# a list of fruits\nfruits = [",
            max_tokens=16,
            strategy="adadec",
            ignore_eos=True,
            options={"threshold": str(tau), "reuse_lookahead": str(reuse), "schedule": "batch"},
        )
        done[reuse], events = run(service, req)
        pauses[reuse] = [e for e in events if isinstance(e, Pause)]
    stable = first_fragile(pauses[True] + pauses[False], tau, default=16)
    assert stable >= 4, "the prompt must give a few robust decisions to compare"
    assert done[True].tokens[:stable] == done[False].tokens[:stable]
    assert len(pauses[True]) >= 2
    assert done[True].stats["tokens_evaluated"] < done[False].stats["tokens_evaluated"]
    # the line-bounded lookahead (the reference's AdaDynL) runs too
    req = Request(
        prompt="# a list of fruits\nfruits = [",
        max_tokens=16,
        strategy="adadec",
        ignore_eos=True,
        options={"threshold": str(tau), "mode": "line"},
    )
    line = run(service, req)[0]
    assert line.stats["pauses"] >= 1 and len(line.tokens) == 16


def test_adadec_best_first_finds_the_batched_winner_with_fewer_rows(service):
    """Branch and bound: a branch is dropped only once even a perfect rest of its rollout
    (log-probabilities <= 0) could not beat a finished branch, so the choices are the batched
    schedule's (compared up to the first fragile decision, as above) for less work."""
    tau, n = 0.5, 16
    done, pauses = {}, {}
    for schedule in ("batch", "best-first"):
        req = Request(
            prompt="# a list of fruits\nfruits = [",
            max_tokens=n,
            strategy="adadec",
            ignore_eos=True,
            options={"threshold": str(tau), "schedule": schedule},
        )
        done[schedule], events = run(service, req)
        pauses[schedule] = [e for e in events if isinstance(e, Pause)]
        assert done[schedule].stats["adadec_schedule"] == schedule
    stable = first_fragile(pauses["batch"] + pauses["best-first"], tau, default=n)
    assert stable >= 4, "the prompt must give a few robust decisions to compare"
    assert done["batch"].tokens[:stable] == done["best-first"].tokens[:stable]
    assert done["best-first"].stats["tokens_evaluated"] < done["batch"].stats["tokens_evaluated"]
    pruned = [p for p in pauses["best-first"] if p.pruned]
    assert pruned, "a clear favourite must let best-first drop a candidate"
    for p in pauses["best-first"]:
        assert p.chosen not in p.pruned
        assert all(p.scores[i] < p.scores[p.chosen] for i in p.pruned)
    assert all(not p.pruned for p in pauses["batch"])


def test_adadec_reference_scoring_rolls_on_past_the_end_of_the_code(service):
    """score_past_end (the reference's scoring): a branch that starts an unindented line keeps
    its score's length there but rolls on to L tokens adding log-probabilities, so it scores
    no better than when it stopped; with the default it stops there."""
    from assistant.decoding import Run
    from assistant.decoding.lookahead import greedy_rollouts
    from assistant.decoding.steps import top_candidates

    model, ctx, ops = service.model(), service.context(), service.ops()
    prompt = model.tokenize("def one():\n    return 1\n\n\ndef two():\n    return 2\n")
    seq = ctx.new_sequence()
    branches = {}
    try:
        cands, logprobs = top_candidates(ops, ctx.prefill(seq, prompt), 3)
        for past in (False, True):
            req = Request(prompt="-", max_tokens=6)
            r = Run(request=req, model=model, context=ctx, prompt_tokens=prompt, ops=ops, sequence=seq)
            branches[past], forks = greedy_rollouts(
                r, cands, [float(x) for x in logprobs], 5, schedule="batch", score_past_end=past
            )
            for f in forks:
                if f is not None:
                    f.release()
    finally:
        seq.release()
    ended = [i for i, b in enumerate(branches[False]) if len(b.tokens) < 5 and not model.is_eog(b.tokens[-1])]
    assert ended, [(model.piece(b.first), b.text) for b in branches[False]]
    for i in ended:
        stop, past = branches[False][i], branches[True][i]
        assert stop.finished and len(past.tokens) == 5 and past.scored_length == len(stop.tokens)
        assert past.tokens[: len(stop.tokens)] == stop.tokens
        assert past.score == pytest.approx((past.first_logprob + sum(past.logprobs)) / (past.scored_length + 1))
        assert past.score <= stop.score
    for i in set(range(len(cands))) - set(ended):  # branches that did not end score alike
        assert branches[True][i].score == pytest.approx(branches[False][i].score)


def test_adadec_goes_past_an_end_of_generation_winner(isolated_env):
    """With ignore_eos (the benches), a pause whose winner is an end-of-generation token (never
    rolled out: its branch ends at once) crashed adopting its missing fork; the run now
    decodes the token and goes on. The bundled Gemma ends this file there (found at token 48
    of a 200-token bench run)."""
    gemma = Service(Settings(n_ctx=1024))
    prompt = (
        "import json\n\n\ndef load_users(path):\n    with open(path) as f:\n        data = json.load(f)\n"
        '    return data\n\n\nif __name__ == "__main__":\n    data = load_users()\n    print(data)\n'
    )
    req = Request(prompt=prompt, max_tokens=4, ignore_eos=True, strategy="adadec", options={"threshold": "0"})
    done, events = run(gemma, req)
    first = next(e for e in events if isinstance(e, Pause))
    assert gemma.model().is_eog(done.tokens[0]) and first.chosen == 0, first.candidates
    assert len(done.tokens) == 4 and done.finish_reason == "length"


def test_adadec_auto_schedule_weighs_measured_prices(service):
    from assistant.decoding.lookahead import cheaper_schedule

    # figures measured on Gemma 3 270M (ms): 2 CPU cores; an H100; and a large model on a GPU
    assert cheaper_schedule(24.0, 49.0, 1.0, k=3, length=5, best_first_waste=1.7) == "best-first"
    assert cheaper_schedule(1.06, 1.31, 0.6, k=3, length=5, best_first_waste=1.7) == "best-first"
    assert cheaper_schedule(10.0, 10.5, 0.15, k=3, length=5, best_first_waste=1.7) == "batch"
    done, _ = run(service, Request(prompt="x = ", max_tokens=2, strategy="adadec", options={"threshold": "0"}))
    assert done.stats["adadec_schedule"] in ("batch", "best-first")
    # k forks more than any context holds (or than n_batch: a traceback from the timing decode)
    # are refused before the run starts, whatever the schedule: best-first may hold them all
    n = service.context().n_seq_max
    for k, schedule in ((255, "best-first"), (600, "auto")):
        options = {"threshold": "0", "k": str(k), "schedule": schedule}
        with pytest.raises(UserError, match=f"needs {k + 1} sequences at once and the context has {n}"):
            run(service, Request(prompt="x = ", max_tokens=2, strategy="adadec", options=options))


def test_a_damaged_calibration_store_is_no_calibration(isolated_env, smol_path):
    """A hand-edited or damaged store (not an object, an entry not an object, a threshold that
    is not a finite number, a rerank check without its counts) crashed every adadec run with
    a traceback; it is read as no calibration (or no check) and the default is said."""
    from assistant.calibration import STORE, file_sha256, load_calibration

    svc = Service(Settings(completion_model=str(smol_path), n_ctx=1024))
    store = isolated_env / "data" / STORE
    store.parent.mkdir(parents=True, exist_ok=True)
    key = file_sha256(smol_path)
    nan = json.dumps({key: {"threshold": float("nan")}})  # Python writes (and reads) NaN
    for text in ("[1, 2]", "{bad", json.dumps({key: 5}), json.dumps({key: {"threshold": "abc"}}), nan):
        store.write_text(text)
        assert load_calibration(smol_path) is None, text
        done, _ = run(svc, Request(prompt="x = ", max_tokens=2, strategy="adadec"))
        assert done.stats["threshold_source"] == "default", text
    store.write_text(json.dumps({key: {"threshold": 0.7, "rerank": {"changed": "x"}}}))
    assert load_calibration(smol_path) == {"threshold": 0.7}
    done, _ = run(svc, Request(prompt="x = ", max_tokens=2, strategy="adadec"))
    assert done.stats["threshold_source"] == "calibrated" and done.stats["adadec_threshold"] == 0.7


def test_a_threshold_that_cannot_be_saved_is_said(isolated_env, monkeypatch, service):
    """A full disk or a broken store lost the fit (minutes of work): the error names it."""
    from assistant.calibration import STORE, add_rerank_check, calibrate

    fit = calibrate(service, limit=2)  # where it can be saved
    assert fit["stored"]
    monkeypatch.setenv("ASSISTANT_DATA_DIR", str(isolated_env / "full"))
    (isolated_env / "full" / STORE).mkdir(parents=True)  # where the file goes: cannot be replaced
    with pytest.raises(UserError) as err:
        calibrate(service, limit=2)
    assert f"cannot save the threshold {fit['threshold']:.3f} nats to " in str(err.value)
    assert f"-o threshold={fit['threshold']:.3f} uses it meanwhile" in str(err.value)
    with pytest.raises(UserError, match=r"and its rerank check \(\d+ changes: \d+ to the reference, \d+ away"):
        add_rerank_check(service, {**fit, "stored": True})


def test_calibrate_stores_a_threshold_that_auto_uses(isolated_env, smol_path):
    svc = Service(Settings(completion_model=str(smol_path), n_ctx=1024))
    req = Request(prompt="x = ", max_tokens=3, strategy="adadec")
    before, _ = run(svc, req)
    assert before.stats["threshold_source"] == "default" and "calibrate" in before.stats["notes"][0]
    env = {"ASSISTANT_DATA_DIR": str(isolated_env / "data")}
    cli = ["generate", "x = ", "--model", str(smol_path), "-s", "adadec", "-n", "2"]
    plain = run_cli(*cli, env=env)  # as text too, the user is told which default was used
    assert plain.returncode == 0 and "note: adadec: no calibrated threshold" in plain.stderr, plain.stderr
    he = ["eval", "humaneval", "--model", str(smol_path), "-s", "adadec", "--limit", "1", "-n", "6", "--json"]
    he += ["--output", str(isolated_env / "he.jsonl")]
    evaluated = run_cli(*he, env=env)
    assert evaluated.returncode == 0, evaluated.stderr
    assert any("no calibrated threshold" in n for n in json.loads(evaluated.stdout)["notes"]), evaluated.stdout
    resumed = run_cli(*[a for a in he if a != "--json"], env=env)  # as text; resumed, notes from the file
    assert resumed.returncode == 0 and "note: adadec: no calibrated threshold" in resumed.stderr, resumed.stderr
    (rec,) = [json.loads(x) for x in (isolated_env / "he.jsonl").read_text().splitlines()]
    assert rec["stats"]["adadec_threshold"] == 1.0 and rec["stats"]["threshold_source"] == "default"
    res = run_cli(
        "calibrate",
        "--model",
        str(smol_path),
        "--limit",
        "4",
        "--json",
        env={"ASSISTANT_DATA_DIR": str(isolated_env / "data")},
    )
    assert res.returncode == 0, res.stderr
    fit = json.loads(res.stdout)
    assert fit["positions"] > 50 and fit["coef"] < 0 and fit["threshold"] > 0
    lo, hi = fit["split_spread"]
    assert 0 < lo <= hi, fit
    text = run_cli("calibrate", "--model", str(smol_path), "--limit", "4", env=env)
    assert "teacher-forcing HumanEval solutions" in text.stderr and "4/4" in text.stderr, text.stderr
    assert text.returncode == 0 and "other random 80/20 splits give" in text.stdout, text.stdout
    assert "note: the threshold is noisy" in text.stderr and "without --limit" in text.stderr, text.stderr
    after, _ = run(svc, req)
    assert after.stats["threshold_source"] == "calibrated"
    stale = run_cli(*he, env=env)  # results made with the default threshold do not resume
    assert stale.returncode == 2 and "another run" in stale.stderr and "learned threshold" in stale.stderr
    # does the lookahead beat greedy where it pauses? counted on the same reference solutions
    checked = run_cli("calibrate", "--model", str(smol_path), "--limit", "4", "--check-rerank", "--json", env=env)
    assert checked.returncode == 0, checked.stderr
    c = json.loads(checked.stdout)["rerank"]
    assert c["pauses"] > 10 and c["k"] == 3 and c["lookahead"] == 5
    assert c["changed_to_reference"] + c["changed_from_reference"] <= c["changed"] <= c["pauses"]
    assert c["rerank_right"] == c["greedy_right"] - c["changed_from_reference"] + c["changed_to_reference"]
    assert 0 < c["p"] <= 1
    from assistant.rerank_check import verdict

    noted = run_cli(*cli, env=env).stderr  # adadec warns exactly when the stored check says it loses
    assert ("expect AdaDec to do worse than greedy" in noted) == (verdict(c) is not None), noted
    # a fit on fewer positions than the stored one is reported, not stored, unless --replace
    store = isolated_env / "data" / "adadec_thresholds.json"
    before_quick = store.read_bytes()
    quick = run_cli("calibrate", "--model", str(smol_path), "--limit", "2", "--check-rerank", env=env)
    assert quick.returncode == 0 and "NOT stored" in quick.stdout and "--replace" in quick.stdout, quick.stdout
    assert f"fit on {json.loads(checked.stdout)['positions']} positions from 4 problems" in quick.stdout
    assert "rerank check at" in quick.stdout and store.read_bytes() == before_quick
    quick = json.loads(run_cli("calibrate", "--model", str(smol_path), "--limit", "1", "--json", env=env).stdout)
    assert quick["stored"] is False and quick["kept"]["problems_used"] == 4 and store.read_bytes() == before_quick
    text = run_cli("calibrate", "--model", str(smol_path), "--limit", "2", "--check-rerank", "--replace", env=env)
    assert text.returncode == 0 and "rerank check at" in text.stdout and "checking the lookahead rerank" in text.stderr
    assert "stored for this GGUF" in text.stdout
    assert "note:" not in run_cli(*cli, env=env).stderr
    (checked_2,) = json.loads(store.read_text()).values()
    assert checked_2["problems_used"] == 2 and "stored" not in checked_2
    again = run_cli("calibrate", "--model", str(smol_path), "--limit", "2", "--json", env=env)
    assert json.loads(again.stdout)["rerank"] == checked_2["rerank"]  # same fit: the check still holds
    other = run_cli("calibrate", "--model", str(smol_path), "--limit", "3", "--json", env=env)
    assert "rerank" not in json.loads(other.stdout)  # a check of another fit says nothing about this one
    assert after.stats["adadec_threshold"] == pytest.approx(fit["threshold"], abs=1e-3)


def test_rerank_verdict_warns_only_on_a_significant_loss():
    from assistant.evals.compare import mcnemar_exact_p
    from assistant.rerank_check import verdict

    def check(to_ref, from_ref):
        counts = {"changed_to_reference": to_ref, "changed_from_reference": from_ref}
        return {**counts, "changed": to_ref + from_ref, "p": mcnemar_exact_p(to_ref, from_ref)}

    assert "226 to the reference, 296 away" in verdict(check(226, 296))  # Gemma 3 270M, p = 0.0025
    assert verdict(check(296, 226)) is None  # a significant gain needs no warning
    assert verdict(check(3, 5)) is None  # a loss within chance is no evidence


def test_calibration_names_the_problems_it_left_out_and_the_code_that_made_it(isolated_env, smol_path):
    env = {"ASSISTANT_DATA_DIR": str(isolated_env / "data")}
    text = run_cli("calibrate", "--model", str(smol_path), "--limit", "21", "--n-ctx", "256", env=env)
    assert text.returncode == 0, text.stderr
    # HumanEval/20 is 287 SmolLM2 tokens: left out, and the bar counts the 20 that were decoded
    assert "20/20" in text.stderr and "21/21" not in text.stderr, text.stderr
    assert "1 of 21 problems are longer than the context (256 tokens)" in text.stderr, text.stderr
    assert "from 20 problems" in text.stdout, text.stdout
    svc = Service(Settings(completion_model=str(smol_path), n_ctx=1024))
    req = Request(prompt="x = ", max_tokens=2, strategy="adadec")
    fresh, _ = run(svc, req)
    assert fresh.stats["threshold_source"] == "calibrated" and not fresh.stats.get("notes"), fresh.stats

    from assistant.rerank_check import check_code

    store = isolated_env / "data" / "adadec_thresholds.json"

    def notes_with(**changes):
        data = json.loads(store.read_text())
        for entry in data.values():
            entry.update(changes)
        store.write_text(json.dumps(data))
        done, _ = run(svc, req)
        assert done.stats["threshold_source"] == "calibrated"
        return " | ".join(done.stats.get("notes", []))

    losing = {"changed": 522, "changed_to_reference": 226, "changed_from_reference": 296, "p": 0.0025}
    notes = notes_with(rerank={**losing, "code": check_code()})
    assert "expect AdaDec to do worse" in notes and "out of date" not in notes, notes
    notes = notes_with(rerank={**losing, "code": "older"})  # a check by other code is no evidence
    assert "expect AdaDec to do worse" not in notes and "calibrate --check-rerank` again" in notes, notes
    notes = notes_with(code="older")  # e.g. a threshold stored before the fit changed
    assert "learned by other calibration code" in notes and "out of date" in notes, notes


def test_code_hash_follows_the_functions_named_not_the_rest_of_their_file(tmp_path, monkeypatch):
    """A stored threshold stays valid through edits to its module that the fit does not use."""
    import importlib
    import linecache
    import sys

    from assistant.code_hash import code_hash

    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    module = tmp_path / "fit_module_for_hash.py"

    def hash_of_fit(other_body: str, fit_body: str) -> str:
        module.write_text(f"def fit(x):\n    {fit_body}\n\n\ndef other():\n    {other_body}\n")
        linecache.checkcache(str(module))
        sys.modules.pop(module.stem, None)
        return code_hash(importlib.import_module(module.stem).fit)

    first = hash_of_fit("return 0", "return x + 1")
    assert hash_of_fit("return 1  # edited", "return x + 1") == first
    assert hash_of_fit("return 0", "return x + 2") != first


def test_split_spread_narrows_with_data_around_a_clear_threshold():
    """Labels drawn from a logistic in entropy that crosses 1/2 at 1.2 nats: other splits of
    5,000 positions agree within a narrow band around it; 80 positions scatter more widely."""
    from assistant.calibration import fit_threshold, split_spread

    rng = np.random.default_rng(1)
    widths = []
    for n in (5000, 80):
        entropy = rng.uniform(0, 3, n)
        label = rng.random(n) < 1 / (1 + np.exp(-4 * (1.2 - entropy)))
        lo, hi = split_spread(entropy, label)
        assert lo <= hi
        widths.append(hi - lo)
        if n == 5000:
            assert 1.0 < lo and hi < 1.6 and lo <= fit_threshold(entropy, label)["threshold"] <= hi + 0.05
    assert widths[0] < widths[1]


@pytest.mark.parametrize(
    ("strategy", "options", "counter"),
    [
        ("adadec", {"threshold": "0"}, "pauses_without_room"),
        ("contrastive", {}, "steps_without_room"),
        ("superposed", {"rescore": "true", "corpus": SMALL_CORPUS}, None),  # k drafts' cells: one at a time
    ],
)
def test_forking_strategies_run_to_the_end_of_the_context(service, strategy, options, counter):
    """A few cells from the end of the context the branches (adadec's lookahead, contrastive's
    candidates) do not fit: those steps take the most likely token (and say so) and the run
    ends at the context's end like greedy's, not with 'no room left in the KV cache' (adadec)
    or a few tokens early (contrastive); superposed's rescoring pass teacher-forces its drafts
    one at a time there."""
    n_ctx = service.context().n_ctx
    prompt = prompt_leaving(service, 12)
    greedy, _ = run(service, Request(prompt=prompt, max_tokens=40))
    done, events = run(service, Request(prompt=prompt, max_tokens=40, strategy=strategy, options=options))
    assert greedy.finish_reason == done.finish_reason == "length"
    assert len(done.tokens) == len(greedy.tokens) < 40, (len(done.tokens), len(greedy.tokens))
    # "length" with fewer tokens than asked for: the note says the context ended it
    cut = f"the context ({n_ctx} tokens) filled before the token limit (40)"
    assert any(n.startswith(cut) for n in done.stats["notes"]) and any(n.startswith(cut) for n in greedy.stats["notes"])
    if counter is not None:
        assert 1 <= done.stats[counter] < len(done.tokens)  # it used its branches while there was room
        assert any("near the end of the context" in n for n in done.stats["notes"]), done.stats["notes"]


def test_text_held_back_for_a_stop_is_shown_when_the_context_ends_the_run(service):
    """Text that might start a stop string is held back; where the full context then ended the
    run (inside `Run.step`, which cannot yield), the held text was in `Done.text` and --json
    but never streamed: the terminal showed `v33 ` where the JSON said `v33 = 2`."""
    prompt = prompt_leaving(service, 8)
    whole, _ = run(service, Request(prompt=prompt, max_tokens=40))
    assert whole.finish_reason == "length" and len(whole.text) > 3
    # a stop its last 3 characters start: held back at the end, never completed
    held, events = run(service, Request(prompt=prompt, max_tokens=40, stop=[whole.text[-3:] + "\u2603"]))
    assert held.text == whole.text  # (and `run` checks the streamed tokens spell it)
    assert events[-2].text.endswith(whole.text[-3:])


def test_adadec_lookahead_longer_than_the_room_left_decodes_no_branch(service):
    """`-o lookahead=99999999999999999999` ran past a 90 s timeout for 6 tokens: every pause
    decoded its branches to the end of the context, only to find the lookahead did not fit
    and take greedy's token. Such a pause now takes it at once (no more passes than greedy's),
    and a lookahead no context position could hold is refused before the prompt is read."""
    n_ctx = service.context().n_ctx
    prompt = "def f(x):\n    return"
    greedy, _ = run(service, Request(prompt=prompt, max_tokens=6))
    req = Request(
        prompt=prompt, max_tokens=6, strategy="adadec", options={"threshold": "0", "lookahead": str(n_ctx - 1)}
    )
    done, events = run(service, req)
    assert done.text == greedy.text and not any(isinstance(e, Pause) for e in events)
    # (greedy's run may have read the prompt in one pass more: it was not cached yet)
    assert done.stats["pauses_without_room"] == 6 and done.stats["forward_passes"] <= greedy.stats["forward_passes"]
    assert any("near the end of the context" in n for n in done.stats["notes"])
    for lookahead in (n_ctx, 10**20):
        req = Request(prompt=prompt, max_tokens=6, strategy="adadec", options={"lookahead": str(lookahead)})
        with pytest.raises(UserError, match=f"a lookahead of {lookahead} tokens cannot fit in the context"):
            run(service, req)


def test_superposed_gives_distinct_drafts(service):
    req = Request(
        prompt="def area(r):\n    return", max_tokens=8, strategy="superposed", options={"corpus": SMALL_CORPUS}
    )
    done, events = run(service, req)
    assert any(isinstance(e, Drafts) for e in events)
    assert len(done.texts) == 3 and len(set(done.texts)) == 3, done.texts
    assert done.text == done.texts[0]
    # all k drafts came from one sequence: one forward pass per step
    assert done.stats["forward_passes"] <= done.stats["superposed_steps"] + 1
    # its tokens are released together at the end; the eval rate still spans the drafting
    st = done.stats
    span = (st["generated_tokens"] - 1) / st["decode_tokens_per_second"]
    assert 0.5 * st["decode_seconds"] <= span <= st["seconds"] - st["prompt_seconds"] + 1e-3, st


def test_superposed_says_when_embedding_input_is_not_token_input(gemma_service, monkeypatch):
    """Superposed feeds input embeddings; an architecture whose graph changes token inputs on
    their own path (Gemma scales them by sqrt(n_embd), which `token_embeddings` copies) would
    make every draft nonsense without a word. Checked once per model: as if llama.cpp scaled
    a token input we did not know of (the scale left out), the run says so."""
    import assistant.plugins.superposed as superposed

    req = Request(prompt="def add(a, b):", max_tokens=4, strategy="superposed", options={"corpus": SMALL_CORPUS})
    monkeypatch.setattr(superposed, "_INPUT_AGREEMENT", {})
    done, _ = run(gemma_service, req)
    assert not any("input embedding" in n for n in done.stats.get("notes", [])), done.stats
    assert list(superposed._INPUT_AGREEMENT.values())[0] > 0.999
    assert done.stats["forward_passes"] <= done.stats["superposed_steps"] + 1  # the check is no run's work
    monkeypatch.setitem(gemma_service.model().__dict__, "input_scale", 1.0)
    monkeypatch.setattr(superposed, "_INPUT_AGREEMENT", {})
    done, _ = run(gemma_service, req)
    assert any("input embedding differ from the token's own" in n for n in done.stats["notes"]), done.stats


def test_superposed_drafts_stay_utf8(gemma_service):
    """The drafts share one distribution, where a byte-fallback token finishing one draft's
    character is likely; another draft took it after a whole character and spelled U+FFFD
    ('ꙮ \ufffd\ufffdꙮꙮ'). A draft takes only tokens that keep its bytes UTF-8."""
    req = Request(prompt="# ꙮꙮꙮ ꙮꙮ", max_tokens=13, strategy="superposed", options={"corpus": SMALL_CORPUS})
    done, events = run(gemma_service, req)
    seen = [t for e in events if isinstance(e, Drafts) for t in e.texts]
    assert sum("ꙮ" in t for t in seen) > 10 and len(set(done.texts)) == 3, done.texts
    assert not any("\ufffd" in t for t in seen), [t for t in seen if "\ufffd" in t]


def test_superposed_without_ngrams_warns_of_nothing(service):
    """alpha=0 (the model's distribution alone) printed numpy's 'invalid value encountered in
    multiply' to the user's terminal: 0 x log 0 in a branch never taken."""
    import warnings

    options = {"alpha": "0", "corpus": SMALL_CORPUS}
    req = Request(prompt="def f():", max_tokens=4, strategy="superposed", options=options)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        done, _ = run(service, req)
    assert len(done.texts) == 3


def test_superposed_ranks_drafts_of_large_penalties(service, tmp_path):
    """Drafts are ranked by perplexity; with a large no-match penalty (-o penalty=1000) on a
    corpus that knows little, exp(-score / length) overflowed: OverflowError mid-run."""
    (tmp_path / "a.py").write_text("def foo(x):\n    return x + 1\n")
    options = {"penalty": "1000", "corpus": str(tmp_path)}
    req = Request(prompt="import os\n", max_tokens=1, strategy="superposed", options=options)
    done, _ = run(service, req)
    assert len(done.texts) == 3 and len(done.tokens) == 1


def test_superposed_finished_drafts_are_distinct_texts(service):
    """Under a regex the drafts end early, some in the text of one already finished, reached in
    other tokens: those took finished slots and pushed distinct drafts out (k=5 gave 3)."""
    from assistant.plugins.superposed import Draft, _best_distinct

    drafts = [Draft([1], -1.0, text="aa"), Draft([2, 3], -0.5, text="aa"), Draft([4], -3.0, text="ab")]
    assert [(d.text, d.tokens) for d in _best_distinct(drafts, 2)] == [("aa", [2, 3]), ("ab", [4])]
    regex = service.registry.named("register_constraints")["regex"]("[ab]{5}", service.model(), origin="test")
    req = Request(prompt='x = "', max_tokens=8, strategy="superposed", options={"k": "5", "corpus": SMALL_CORPUS})
    done, _ = run(service, req, constraint=regex)
    assert len(set(done.texts)) == len(done.texts) >= 4, done.texts
    assert all(len(t) == 5 and set(t) <= {"a", "b"} for t in done.texts), done.texts
    # the end-of-generation token that ended the best draft is one of its tokens, as every
    # other strategy counts it (generated_tokens was one short)
    assert service.model().is_eog(done.tokens[-1]) and done.stats["generated_tokens"] == len(done.tokens)


def test_superposed_keeps_k_drafts_on_a_tiny_corpus(service, tmp_path):
    """A corpus that knows one continuation: the tokens it never saw score with the no-match
    penalty instead of log 0, so they rank last but still fill the k drafts (they were dropped,
    and the user asking for 3 drafts got 1)."""
    (tmp_path / "a.py").write_text("def foo(x):\n    return x + 1\n")
    req = Request(prompt="def foo(x):", max_tokens=8, strategy="superposed", options={"corpus": str(tmp_path)})
    done, events = run(service, req)
    steps = [e for e in events if isinstance(e, Drafts) and not e.final]
    assert all(len(e.texts) == 3 for e in steps), [e.texts for e in steps]
    assert len(set(done.texts)) == 3, done.texts
    # which corpus the store came from is said (the default falls back to the stdlib silently)
    assert done.stats["ngram_corpus"] == f"{tmp_path / 'a.py'}" and 0 < done.stats["ngram_tokens"] < 30
    # a folder named in Latin-1 (names are bytes on Linux) was a UnicodeEncodeError traceback
    odd = tmp_path / os.fsdecode(b"caf\xe9")
    odd.mkdir()
    (odd / os.fsdecode(b"\xfc.py")).write_text("def foo(x):\n    return x + 1\n")
    done, _ = run(
        service, Request(prompt="def foo(x):", max_tokens=4, strategy="superposed", options={"corpus": str(odd)})
    )
    assert done.stats["ngram_corpus"].startswith(str(odd)) and done.stats["ngram_tokens"] > 0


def test_superposed_rescore_ranks_by_the_models_log_probability(service, smol):
    """rescore=true (best-of-k by log-probability): the last Drafts event, before the best
    draft's tokens, holds the final drafts, best first, scored by the model's own
    log-probability of each."""
    from assistant.context.prompt import build_prompt

    req = Request(
        prompt="import os\n\ndef list_python_files(folder):\n    ",
        max_tokens=8,
        strategy="superposed",
        options={"corpus": SMALL_CORPUS, "rescore": True},
    )
    done, events = run(service, req)
    final = [e for e in events if isinstance(e, Drafts) and e.final]
    assert len(final) == 1 and [e for e in events if isinstance(e, Drafts)][-1] is final[0]
    assert final[0].texts == done.texts and len(done.tokens) == 8
    # the best draft's score, teacher-forced again one token at a time on another context
    ctx = Context(smol, n_ctx=256, n_seq_max=1)
    try:
        seq = ctx.new_sequence()
        logits = ctx.prefill(seq, build_prompt(smol, req, 256).tokens)
        lp = 0.0
        for t in done.tokens:
            x = logits.astype(np.float64)
            lp += x[t] - np.logaddexp.reduce(x)
            logits = ctx.decode_one(seq, t)
    finally:
        ctx.close()
    assert final[0].scores[0] == pytest.approx(lp, abs=0.05)


def test_strategy_set_up_is_not_counted_as_prompt_time(service, monkeypatch):
    """superposed loads its n-gram store before the prompt; that time is `setup_seconds`, so
    `prompt_seconds` stays the prefill's (it used to absorb the store's load)."""
    import time as _time

    import assistant.ngrams

    real = assistant.ngrams.get_store

    def slow_store(*args, **kwargs):
        _time.sleep(0.5)
        return real(*args, **kwargs)

    monkeypatch.setattr(assistant.ngrams, "get_store", slow_store)
    req = Request(prompt="def f(x):\n", max_tokens=3, strategy="superposed", options={"corpus": SMALL_CORPUS})
    st, _ = run(service, req)
    st = st.stats
    assert st["setup_seconds"] >= 0.5 and st["prompt_seconds"] < 0.5, st
    assert st["setup_seconds"] + st["prompt_seconds"] <= st["seconds"], st


def test_ngram_store_rebuilt_after_an_edit_replaces_the_old_one(smol, tmp_path, monkeypatch):
    import assistant.ngrams
    from assistant.ngrams import get_store

    monkeypatch.setenv("ASSISTANT_CACHE_DIR", str(tmp_path / "cache"))
    corpus = tmp_path / "repo"
    corpus.mkdir()
    (corpus / "a.py").write_text("def add(a, b):\n    return a + b\n")
    first = get_store(smol, str(corpus))
    (corpus / "a.py").write_text("def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return a - b\n")
    second = get_store(smol, str(corpus))
    assert second.n_tokens > first.n_tokens
    (stored,) = (tmp_path / "cache" / "ngrams").glob("*.npz")
    stored.write_bytes(stored.read_bytes()[:1000])  # a damaged cache file is built again
    monkeypatch.setattr(assistant.ngrams, "_loaded", {})
    assert get_store(smol, str(corpus)).n_tokens == second.n_tokens
    assert len(list((tmp_path / "cache" / "ngrams").glob("*.npz"))) == 1


def test_the_ngram_cache_keeps_the_stores_used_last_within_its_bound(smol, tmp_path, monkeypatch):
    """A store is kept per model and corpus, and none was ever removed but an older version of
    the same corpus's: every project, model and test corpus added one (367 MB here after a
    month of test runs, stores of up to 66 MB). Past the bound the least recently used go."""
    import os

    import assistant.ngrams
    from assistant.ngrams import get_store

    monkeypatch.setenv("ASSISTANT_CACHE_DIR", str(tmp_path / "cache"))
    folder = tmp_path / "cache" / "ngrams"
    folder.mkdir(parents=True)
    corpora = []
    for name in ("used", "old", "new"):
        corpus = tmp_path / name
        corpus.mkdir()
        (corpus / "a.py").write_text(f"def {name}(a, b):\n    return a + b\n")
        corpora.append(str(corpus))
    get_store(smol, corpora[0])
    get_store(smol, corpora[1])
    used, old = sorted(folder.glob("*.npz"), key=lambda p: p.stat().st_mtime)
    for i, store in enumerate((used, old)):  # both a day old, `used` the older
        os.utime(store, (store.stat().st_atime, store.stat().st_mtime - 86400 + i))
    monkeypatch.setattr(assistant.ngrams, "_loaded", {})
    get_store(smol, corpora[0])  # loaded again: now the most recently used of the two
    monkeypatch.setattr(assistant.ngrams, "CACHE_BYTES", used.stat().st_size * 2 + 1)
    get_store(smol, corpora[2])  # a third store: one must go, and it is `old`
    assert used.exists() and not old.exists() and len(list(folder.glob("*.npz"))) == 2


def test_the_hash_cache_forgets_files_gone_or_changed(tmp_path, isolated_env):
    """The GGUF hash cache (also code files' hashes) kept an entry for every file ever hashed:
    151 here, 149 of them test files long deleted."""
    import json

    from assistant.calibration import HASHES, file_sha256
    from assistant.config import data_dir

    a, b, c = (tmp_path / f"{n}.bin" for n in "abc")
    for path in (a, b, c):
        path.write_bytes(path.name.encode())
    for path in (a, b):
        file_sha256(path)
    a.unlink()
    b.write_bytes(b"changed")
    file_sha256(c)
    keys = json.loads((data_dir() / HASHES).read_text())
    assert [k.rsplit(":", 2)[0] for k in keys] == [str(c.resolve())], keys


def test_cancel_while_the_ngram_store_builds_stops_it(service, tmp_path, monkeypatch):
    """Ctrl-C while a large corpus was read let the build run to its end (a minute on a big
    corpus) before the run saw it; now the build stops at the next file and nothing is stored."""
    import threading

    import assistant.ngrams

    monkeypatch.setenv("ASSISTANT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(assistant.ngrams, "_loaded", {})  # not the store an earlier test loaded
    cancel = threading.Event()
    cancel.set()
    req = Request(prompt="def f(x):\n", max_tokens=3, strategy="superposed", options={"corpus": SMALL_CORPUS})
    done, _ = run(service, req, cancel=cancel)
    assert done.finish_reason == "cancelled" and done.text == "" and done.texts == []
    assert not list((tmp_path / "cache").rglob("*.npz"))


def test_a_huge_corpus_file_is_read_within_the_budget_and_tokenized_in_pieces(gemma, tmp_path, monkeypatch):
    """A generated file of megabytes took minutes: read whole, then tokenized in one call whose
    time grows with length times newlines. Now it is read up to the budget, in pieces of whole
    lines (a line without end is cut anywhere), and the pieces give back the text."""
    import assistant.ngrams
    from assistant.ngrams import _tokenize_by_lines, get_store

    for text in ("", "x = 1\n" * 3000, "var a=1;" * 3000, "é\n\n" * 2000 + "tail"):
        assert gemma.detokenize(_tokenize_by_lines(gemma, text, piece=500)) == text
    monkeypatch.setenv("ASSISTANT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(assistant.ngrams, "MAX_CHARS", 20_000)
    big = tmp_path / "big.py"
    big.write_text("".join(f"x_{i} = f({i})\n" for i in range(100_000)))  # 1.5 MB
    store = get_store(gemma, str(big))
    assert 3_000 < store.n_tokens < 20_000


def test_speculative_output_equals_greedy(smol_path):
    """Token for token, except where greedy itself is a numerical coin toss: llama.cpp's logits
    depend slightly on batch shape, so a near-tie may fall either way."""
    prompt = "def fizzbuzz(n):\n    for i in range(1, n + 1):\n        if i % 15 == 0:\n            print('FizzBuzz')\n"
    outs = {}
    for strategy in ("greedy", "speculative"):  # fresh caches: same arithmetic history
        svc = Service(Settings(completion_model=str(smol_path), n_ctx=1024))
        # free_batch: draft whenever the text repeats, whatever this CPU's batch costs are
        options = {"free_batch": "true"} if strategy == "speculative" else {}
        req = Request(prompt=prompt, max_tokens=40, strategy=strategy, ignore_eos=True, options=options)
        outs[strategy] = run(svc, req)[0]
    g, s = outs["greedy"].tokens, outs["speculative"].tokens
    first_diff = next((i for i, (a, b) in enumerate(zip(g, s, strict=True)) if a != b), None)
    if first_diff is not None:
        model = svc.model()
        ctx = Context(model, n_ctx=1024, n_seq_max=1)
        seq = ctx.new_sequence()
        logits = np.array(ctx.prefill(seq, model.bos_tokens() + model.tokenize(prompt)))
        for t in g[:first_diff]:
            logits = np.array(ctx.decode_one(seq, t))
        top2 = np.sort(logits)[-2:]
        assert top2[1] - top2[0] < 1.0, f"speculative left greedy at {first_diff} without a near-tie"
    assert outs["speculative"].stats["accepted_draft_tokens"] > 0
    assert outs["speculative"].stats["forward_passes"] < outs["greedy"].stats["forward_passes"]


@pytest.mark.parametrize("strategy", sorted(get_registry().strategies()))
def test_every_strategy_respects_a_token_mask(service, strategy):
    model = service.model()
    allowed = sorted({t for w in ("0", "1", " 0", " 1", ",", " ,") for t in model.tokenize(w)})
    options = {"corpus": SMALL_CORPUS} if strategy == "superposed" else {}
    infill = {"suffix": "]\n"} if strategy == "grammar-infill" else {}  # it only infills
    req = Request(
        prompt="bits = [1, 0, ", max_tokens=6, strategy=strategy, options=options, sampling=Sampling(seed=3), **infill
    )
    done, _ = run(service, req, constraint=AllowedTokens(model.n_vocab, allowed))
    assert done.tokens, strategy
    assert set(done.tokens) <= set(allowed), (strategy, done.tokens)


@pytest.mark.parametrize("strategy", sorted(get_registry().strategies()))
def test_every_strategy_ends_cleanly_when_its_decode_is_aborted(service, strategy):
    """An abort (Ctrl-C, a newer keystroke) may land in any decode, a lookahead's included:
    the run still ends with its text so far and finish_reason 'cancelled', never an error."""
    options = {"corpus": SMALL_CORPUS} if strategy == "superposed" else {}
    options |= {"threshold": "0"} if strategy == "adadec" else {}  # pause at every step
    infill = {"suffix": "\n"} if strategy == "grammar-infill" else {}
    req = Request(prompt="def long_function():\n", max_tokens=400, strategy=strategy, options=options, **infill)
    req.ignore_eos = True
    timer = threading.Timer(0.4, service.cancel_all)
    timer.start()
    try:
        done, _ = run(service, req)
    finally:
        timer.cancel()
    assert done.finish_reason == "cancelled" and len(done.tokens) < 400, (strategy, done.finish_reason)
    after, _ = run(service, Request(prompt="x = ", max_tokens=2, strategy=strategy, options=options, **infill))
    assert after.finish_reason != "cancelled"


def test_contrastive_and_top_h(service, gemma_service):
    c, _ = run(service, Request(prompt="import os\n", max_tokens=8, strategy="contrastive"))
    assert len(c.tokens) == 8 or c.finish_reason == "stop"
    # the degeneration penalty at work: greedy writes one line five times, contrastive search
    # (its code settings) five different lines; with no penalty it picks by probability alone
    lines = {}
    for name, options in (("greedy", {}), ("contrastive", {}), ("contrastive", {"alpha": "0"})):
        req = Request(prompt="def add(a, b):", max_tokens=40, strategy=name, options=options)
        lines[name, bool(options)] = [line for line in run(gemma_service, req)[0].text.split("\n") if line.strip()]
    assert len(set(lines["greedy", False])) == 1 < len(lines["greedy", False]), lines
    assert len(set(lines["contrastive", False])) == len(lines["contrastive", False]) > 3, lines
    assert lines["contrastive", True] != lines["contrastive", False], lines
    a = run(service, Request(prompt="import", max_tokens=8, strategy="top-h", sampling=Sampling(seed=4)))[0]
    b = run(service, Request(prompt="import", max_tokens=8, strategy="top-h", sampling=Sampling(seed=4)))[0]
    assert a.tokens == b.tokens


def test_top_h_keeps_what_a_full_sort_keeps():
    """Top-H done the slow, obvious way (float64, a sort of the whole vocabulary) keeps the
    same tokens with the same probabilities as the plugin's chunked top-n search."""
    from assistant.plugins.top_h import top_h_keep

    rng = np.random.default_rng(0)
    for trial in range(24):
        n = int(rng.choice([1000, 49152, 262144]))
        x = (rng.standard_normal(n) * rng.choice([1.0, 3.0])).astype(np.float32)
        x[rng.integers(n, size=5)] += 8  # a few clear favourites
        if trial % 3 == 0:
            x[rng.random(n) < 0.5] = -np.inf  # a constraint's mask
        alpha, temperature = float(rng.choice([0.3, 0.4, 0.5])), float(rng.choice([1.0, 1.5]))
        kept, probs = top_h_keep(x, alpha, 100, temperature)
        y = x.astype(np.float64) / temperature
        order = np.argsort(-y, kind="stable")[:100]
        p = np.exp(y[order] - (y.max() + np.log(np.exp(y - y.max()).sum())))
        cum = np.cumsum(-p * np.log2(p))
        keep = max(1, int(np.searchsorted(cum, alpha * cum[-1], side="right")))
        assert set(kept.tolist()) == set(order[:keep].tolist()), trial
        np.testing.assert_allclose(probs, p[:keep] / p[:keep].sum(), rtol=1e-5)


def test_cli_superposed_returns_all_drafts(smol_path):
    args = ["generate", "def square(x):", "--model", str(smol_path), "-s", "superposed", "-n", "6"]
    res = run_cli(*args, "-o", f"corpus={SMALL_CORPUS}", "--json")
    assert res.returncode == 0, res.stderr
    obj = json.loads(res.stdout)
    assert len(obj["texts"]) == 3 and obj["text"] == obj["texts"][0]
    # as text: the best draft on stdout (pipes get one answer), the others on stderr
    plain = run_cli(*args, "-o", f"corpus={SMALL_CORPUS}")
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.rstrip("\n") == obj["text"].rstrip("\n")
    for i, text in enumerate(obj["texts"][1:], 2):
        assert f"--- draft {i} of 3 ---\n{text}" in plain.stderr


def test_cli_json_lists_adadec_pauses(smol_path):
    args = ["generate", "def f(x):", "--model", str(smol_path), "-s", "adadec", "-o", "threshold=0", "-n", "3"]
    res = run_cli(*args, "--json")
    assert res.returncode == 0, res.stderr
    obj = json.loads(res.stdout)
    assert len(obj["pauses"]) == obj["stats"]["pauses"] >= 1
    for p in obj["pauses"]:
        assert len(p["candidates"]) == len(p["scores"]) == 3 and 0 <= p["chosen"] < 3 and p["entropy"] >= 0
        assert set(p["stats"]) == {"forward_passes", "tokens_evaluated"}  # its lookahead's work only


def test_default_corpus_is_the_whole_git_repository_of_the_workspace(tmp_path):
    """superposed's default n-gram corpus: every tracked source file of the repository holding
    the request's workspace (also from a subfolder); the stdlib with no workspace (eval, bench:
    their results must not depend on where they run) or outside a repository."""
    from assistant.ngrams import corpus_files, stdlib_corpus

    repo = tmp_path / "repo"
    (repo / "pkg" / "sub").mkdir(parents=True)
    (repo / "top.py").write_text("x = 1\n")
    (repo / "pkg" / "sub" / "deep.py").write_text("y = 2\n")
    (repo / "untracked.py").write_text("z = 3\n")
    (repo / "notes.bin").write_bytes(b"\0")
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run(["git", "add", "top.py", "pkg", "notes.bin"], cwd=repo, check=True)
    expected = [repo / "pkg" / "sub" / "deep.py", repo / "top.py"]
    assert corpus_files(None, repo) == expected
    assert corpus_files(None, repo / "pkg" / "sub") == expected  # the whole repository, from a subfolder
    stdlib = stdlib_corpus()
    assert len(stdlib) > 100 and corpus_files(None, None) == stdlib
    plain = tmp_path / "plain"
    plain.mkdir()
    assert corpus_files(None, plain) == stdlib
    from assistant.ngrams import describe_corpus

    assert describe_corpus(stdlib) == f"the Python standard library ({len(stdlib)} files)"
    assert describe_corpus(expected) == f"{repo} (2 files)"


def test_a_corpus_folder_leaves_out_environments_and_what_it_may_not_read(tmp_path):
    """A project's .venv (or a venv without the dot) sorted before its code and filled the
    corpus's budget with installed packages; a file it may not look at (here a link into
    another process's /proc entry) was a PermissionError traceback."""
    from assistant.ngrams import corpus_files

    project = tmp_path / "project"
    for folder in (".venv/lib", "venv/lib", ".git", "src"):
        (project / folder).mkdir(parents=True)
    (project / "venv" / "pyvenv.cfg").write_text("home = /usr/bin\n")
    for name in (".venv/lib/pkg.py", "venv/lib/pkg.py", ".git/hook.py", "src/app.py", "setup.py"):
        (project / name).write_text("x = 1\n")
    (project / "locked.py").symlink_to("/proc/1/cwd/locked.py")
    assert corpus_files(str(project), None) == [project / "setup.py", project / "src" / "app.py"]


def test_a_corpus_the_user_names_must_hold_source_files(tmp_path, monkeypatch):
    import assistant.ngrams
    from assistant.errors import UserError
    from assistant.ngrams import corpus_files, corpus_signature

    (tmp_path / "empty").mkdir()
    for spec, message in (
        (tmp_path / "nope", "corpus not found"),
        (tmp_path / "empty", "no source files under"),
        ("/dev/null", "corpus must be a file or a folder"),
    ):
        with pytest.raises(UserError, match=message):
            corpus_files(str(spec), None)
    # a system Python with its standard library compiled only: the fallback says what to do
    monkeypatch.setattr(assistant.ngrams, "_stdlib_files", lambda: ())
    for spec in ("stdlib", None):
        with pytest.raises(UserError, match="no Python standard library sources .* -o corpus=PATH"):
            corpus_files(spec, None)
    (tmp_path / "a.py").write_text("x = 1\n")
    assert corpus_signature(corpus_files(str(tmp_path / "a.py"), None))  # another corpus still works


def test_evals_sample_with_the_configs_settings(tmp_path, smol_path):
    """`eval humaneval -s sample` ignored the config's temperature (and top-k/p, min-p, seed):
    it sampled at the built-in 0.8, and its results file did not name the temperature, so a
    run at another one resumed it. Now --temperature or the config's sets it, and the run's
    name; greedy's name does not depend on it. `eval infill` takes them as well."""
    out = tmp_path / "he.jsonl"
    base = ["eval", "humaneval", "-m", str(smol_path), "--limit", "1", "-n", "4", "--output", str(out), "--json"]
    sample = [*base, "-s", "sample", "--seed", "3"]
    assert json.loads(run_cli(*sample, "--temperature", "0.2").stdout)["resumed"] == 0
    other = run_cli(*sample, "--temperature", "0.9")
    assert other.returncode == 2 and "another run" in other.stderr, other.stderr
    # the config's temperature is the same run
    assert json.loads(run_cli(*sample, env={"ASSISTANT_TEMPERATURE": "0.2"}).stdout)["resumed"] == 1
    greedy = tmp_path / "greedy.jsonl"
    args = [*base[:-2], str(greedy), "--json"]
    assert json.loads(run_cli(*args).stdout)["resumed"] == 0
    warm = run_cli(*args, "--temperature", "0.2")
    assert json.loads(warm.stdout)["resumed"] == 1 and "'greedy' does not use --temperature" in warm.stderr
    infill = ["eval", "infill", "-m", str(smol_path), "--limit", "2", "-n", "8", "-s", "sample", "--json"]
    runs = [json.loads(run_cli(*infill, "--seed", "5", "--temperature", t).stdout) for t in ("0.1", "0.1", "3")]
    texts = [[r["completion"] for r in run["rows"]] for run in runs]
    assert texts[0] == texts[1] != texts[2], texts  # seeded: the same; hotter: not


def test_eval_humaneval_is_resumable(tmp_path, smol_path):
    out = tmp_path / "new folder" / "he.jsonl"  # a folder that does not exist yet
    args = ["eval", "humaneval", "--model", str(smol_path), "--limit", "2", "-n", "48", "--output", str(out), "--json"]
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr
    s1 = json.loads(first.stdout)
    assert s1["n"] == 2 and 0.0 <= s1["pass@1"] <= 1.0 and s1["resumed"] == 0
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["task_id"] for r in lines] == ["HumanEval/0", "HumanEval/1"]
    assert all(r["status"] in ("passed", "failed", "timeout") for r in lines)
    again = json.loads(run_cli(*args).stdout)
    assert again["resumed"] == 2 and again["pass@1"] == s1["pass@1"]
    # another set-up must not resume (and so silently mix with) these results
    other = run_cli(*[a if a != "48" else "40" for a in args])
    assert other.returncode == 2 and "another run" in other.stderr and "Traceback" not in other.stderr
    assert len(out.read_text().splitlines()) == 2
    # a last line an interruption cut short: the problem is redone once, on a line of its own
    first, second = out.read_text().splitlines()
    out.write_text(first + "\n" + second[:40])
    assert json.loads(run_cli(*args).stdout)["resumed"] == 1
    assert json.loads(run_cli(*args).stdout)["resumed"] == 2  # it was redone on every resume
    from assistant.evals.humaneval import read_results

    lines = read_results(out)  # the records the file now holds (the redone one included)
    assert [r["task_id"] for r in lines] == ["HumanEval/0", "HumanEval/1"]
    # bad settings are refused before any results file is made; --limit 0 is not "all of them",
    # -n 0 would fail every problem with an empty completion, and a context too small for some
    # prompt is found before the problems ahead of it are run
    fresh = tmp_path / "fresh.jsonl"
    bad_settings = (["--seed", "-1"], ["-s", "adadec", "-o", "k=0"], ["--limit", "0"], ["-n", "0"], ["--n-ctx", "256"])
    for bad in (*bad_settings, ["-s", "grammar-infill"]):  # an infill-only strategy
        res = run_cli("eval", "humaneval", "--model", str(smol_path), "--output", str(fresh), *bad)
        assert res.returncode == 2 and "Traceback" not in res.stderr, (bad, res.stderr)
        assert not re.search(r"humaneval \[[a-z-]+\]", res.stderr), (bad, res.stderr)  # no empty progress bar
        assert not fresh.exists(), bad
    # a file that is not a results file (a cases file named by mistake) is not appended to
    cases = tmp_path / "cases.jsonl"
    cases.write_text('{"prefix": "a", "suffix": "", "middle": "b"}\n')
    res = run_cli(*args[:9], str(cases))
    assert res.returncode == 2 and f"{cases} is not a HumanEval results file" in res.stderr, res.stderr
    assert cases.read_text() == '{"prefix": "a", "suffix": "", "middle": "b"}\n'
    cut = tmp_path / "cut.jsonl"  # but a first record an interruption cut short is this runner's
    cut.write_text(first[:30])
    assert json.loads(run_cli(*args[:9], str(cut), "--json").stdout)["resumed"] == 0
    # `eval compare` pairs this run with another strategy's on the same problems
    ada = tmp_path / "ada.jsonl"
    res = run_cli(*args[:4], "-s", "adadec", "-o", "threshold=0", *args[4:9], str(ada), "--json")
    assert res.returncode == 0, res.stderr
    c = json.loads(run_cli("eval", "compare", str(ada), str(out), "--json").stdout)
    ada_lines = [json.loads(x) for x in ada.read_text().splitlines()]
    assert c["n"] == 2 and c["unpaired"] == 0 and (c["a"]["strategy"], c["b"]["strategy"]) == ("adadec", "greedy")
    assert c["a"]["passed"] == sum(r["passed"] for r in ada_lines)
    assert c["b"]["passed"] == sum(r["passed"] for r in lines)
    assert c["a"]["tokens"] == sum(r["tokens"] for r in ada_lines) and c["b"]["seconds"] > 0
    assert c["seconds_a_vs_b"] == pytest.approx(c["a"]["seconds"] / c["b"]["seconds"], rel=1e-2)
    for key, recs in (("a", ada_lines), ("b", lines)):  # generation time (less set-up and prompt) per token
        gen = sum(r["seconds"] - r["stats"]["setup_seconds"] - r["stats"]["prompt_seconds"] for r in recs)
        assert c[key]["ms_per_token"] == pytest.approx(1000 * gen / sum(r["tokens"] for r in recs), rel=1e-2)
    assert c["ms_per_token_a_vs_b"] == pytest.approx(c["a"]["ms_per_token"] / c["b"]["ms_per_token"], rel=1e-2)
    assert c["both"] + c["neither"] + len(c["only_a"]) + len(c["only_b"]) == 2 and 0 < c["mcnemar_p"] <= 1
    same = json.loads(run_cli("eval", "compare", str(out), str(out), "--json").stdout)
    assert same["identical_completions"] == 2 and same["mcnemar_p"] == 1.0 and not same["only_a"] + same["only_b"]
    assert "notes" not in c and "notes" not in same  # one model: nothing to say
    other_model = tmp_path / "other_model.jsonl"  # the same records, named as another GGUF's run
    other_model.write_text("".join(json.dumps({**r, "run": "0" * 12 + r["run"][12:]}) + "\n" for r in lines))
    res = run_cli("eval", "compare", str(out), str(other_model))
    assert res.returncode == 0 and "note: A and B ran different model files (sha256 " in res.stderr, res.stderr
    for path, said in ((tmp_path, "is a folder"), (tmp_path / "none.jsonl", "no file")):  # it said "no results file at"
        res = run_cli("eval", "compare", str(out), str(path))
        assert res.returncode == 2 and said in res.stderr, res.stderr
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text(out.read_text() + ada.read_text())
    res = run_cli("eval", "compare", str(mixed), str(out))
    assert res.returncode == 2 and "mixes the results of 2 runs" in res.stderr and "Traceback" not in res.stderr
    stub = tmp_path / "stub.jsonl"  # lines that are not results (no 'passed') are not counted as results
    stub.write_text(
        '{"task_id": "HumanEval/0"}\n[1]\n'
        '{"task_id": "HumanEval/0", "passed": true, "tokens": "x", "seconds": 1}\n'
        '{"task_id": "HumanEval/0", "passed": true, "tokens": 3, "seconds": 1, "stats": {"prompt_seconds": "z"}}\n'
        '{"task_id": "HumanEval/0", "passed": true, "tokens": 3, "seconds": null}\n'
    )
    res = run_cli("eval", "compare", str(stub), str(out))
    assert res.returncode == 2 and "holds no results" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
def test_a_full_disk_while_eval_writes_is_one_line(smol_path):
    """A write that fails (a full disk) ended `eval humaneval` in a traceback."""
    res = run_cli("eval", "humaneval", "--model", str(smol_path), "--limit", "1", "-n", "4", "--output", "/dev/full")
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert "cannot write the results file /dev/full: No space left on device" in res.stderr


def test_sigterm_ends_eval_as_ctrl_c_does(tmp_path, smol_path):
    """SIGTERM (a timeout, systemd, a CI cancel) killed `eval humaneval` where it stood: no
    word of what was saved, and a running program and its temp folder left behind."""
    out = tmp_path / "he.jsonl"
    args = [sys.executable, "-m", "assistant", "eval", "humaneval", "--model", str(smol_path), "-n", "32"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASSISTANT_")}
    proc = subprocess.Popen([*args, "--limit", "80", "--output", str(out)], stderr=subprocess.PIPE, env=env)
    deadline = time.monotonic() + 120
    while not (out.exists() and out.read_text()) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    saved = len(out.read_text().splitlines())
    assert proc.returncode == 130 and f"{saved} of 80 problems are saved in {out}" in err.decode(), err


def test_ctrl_c_in_eval_says_what_was_saved(tmp_path, smol_path):
    """Ctrl-C during `eval humaneval`: the problems done are kept, the command says where and
    that running it again resumes (typer used to end it silently, exit 130)."""
    out = tmp_path / "he.jsonl"
    args = [sys.executable, "-m", "assistant", "eval", "humaneval", "--model", str(smol_path), "-n", "32"]
    args += ["--output", str(out)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASSISTANT_")}
    proc = subprocess.Popen([*args, "--limit", "80"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    deadline = time.monotonic() + 120
    while not (out.exists() and out.read_text()) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    # meanwhile a second run into the same file is refused (two wrote every line twice)
    second = subprocess.run([*args, "--limit", "80"], capture_output=True, text=True, env=env)
    assert proc.poll() is None, "the first run ended before the second tried"
    assert second.returncode == 2 and f"another run is writing {out} now" in second.stderr, second.stderr
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    err = err.decode()
    saved = len(out.read_text().splitlines())
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert 1 <= saved < 80 and f"{saved} of 80 problems are saved in {out}" in err, (saved, err)
    assert len({json.loads(line)["task_id"] for line in out.read_text().splitlines()}) == saved
    again = subprocess.run([*args, "--limit", "1", "--json"], capture_output=True, text=True, env=env)
    assert again.returncode == 0 and json.loads(again.stdout)["resumed"] == 1, again.stderr


def test_ctrl_c_in_eval_infill_reports_the_cases_done(smol_path):
    """Ctrl-C during `eval infill` (not resumable: no results file) used to end it silently and
    lose every case; now the figures of the cases done are printed, marked as partial. (The
    signal goes once the cases have started, as the first progress line says: a fixed wait
    could end inside the model's load on a busy machine.)"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASSISTANT_")}
    args = [sys.executable, "-m", "assistant", "eval", "infill", "--model", str(smol_path)]
    t0 = time.monotonic()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    assert proc.stderr.readline().startswith("infill [greedy]: 0/164")
    started = time.monotonic() - t0
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert re.search(r"interrupted: the figures cover \d+ of 164 cases", err), err
    assert out.startswith("[greedy] n=") and re.search(r" pass (\d\.\d{3}|-)  ", out), out  # as the other rates
    # --json shows no progress: it waits as long as the cases took to start above, and half
    # again; under a changing load the model may still be loading then (a Ctrl-C there ends
    # the command before any case, 130 and no output): twice as long, and again
    for attempt in range(3):
        proc = subprocess.Popen([*args, "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
        time.sleep((1.5 * started + 1.0) * 2**attempt)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 130 and "Traceback" not in err, err
        if out.strip():
            break
    summary = json.loads(out)
    assert summary["interrupted"] is True and summary["cases"] == 164
    assert summary["n"] == len(summary["rows"]) < 164
    assert f"interrupted: the figures cover {summary['n']} of 164 cases" in err


def test_ctrl_c_in_calibrate_says_what_was_stored(tmp_path, smol_path):
    data = tmp_path / "data"
    args = [sys.executable, "-m", "assistant", "calibrate", "--model", str(smol_path)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASSISTANT_")}
    proc = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**env, "ASSISTANT_DATA_DIR": str(data)}, text=True
    )
    # inside the fit over all 164 problems (~80 s for this model), as its first progress line says
    assert proc.stderr.readline().startswith("teacher-forcing HumanEval solutions: 0/164")
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted: nothing was stored" in err, err
    assert not (data / "adadec_thresholds.json").exists()


def test_results_of_other_code_do_not_resume(tmp_path):
    from assistant.evals.humaneval import code_version, run_tag

    a, b = tmp_path / "a" / "mine.py", tmp_path / "b" / "mine.py"
    for path, text in ((a, "x = 1\n"), (b, "x = 2\n")):
        path.parent.mkdir()
        path.write_text(text)
    assert code_version(str(a)) != code_version(str(b))
    tags = {run_tag(a, "greedy", {}, None, 8, code=code_version(str(p))) for p in (a, b)}
    assert len(tags) == 2
    # a smaller context can cut an answer short: another context size is another run
    assert len({run_tag(a, "greedy", {}, None, 8, n_ctx=n) for n in (1024, 4096)}) == 2
    b.write_text("x = 1\n")  # the same code elsewhere (another clone) is the same version
    code_version.cache_clear()
    assert code_version(str(a)) == code_version(str(b))


def test_mcnemar_exact_p_matches_the_binomial_tail():
    from assistant.evals.compare import mcnemar_exact_p

    assert mcnemar_exact_p(0, 0) == 1.0 and mcnemar_exact_p(3, 3) == 1.0
    assert mcnemar_exact_p(0, 2) == 0.5 and mcnemar_exact_p(2, 0) == 0.5  # 2 * (1/2)^2
    assert mcnemar_exact_p(0, 6) == 2 / 64
    assert abs(mcnemar_exact_p(1, 9) - 2 * 11 / 1024) < 1e-12  # 2 * (C(10,0) + C(10,1)) / 2^10


def test_speculative_drafts_only_where_the_prompt_shows_drafts_pay(gemma):
    """Before any verify is paid for, the prompt says how often a lookup draft would have been
    right here. Ordinary code (HumanEval's prompts) drafts nothing under a CPU-shaped cost curve,
    where the assumed rates alone would draft 7 tokens on every 2-gram match; a file of
    near-identical lines drafts, and long where its earlier copies agree."""
    from assistant.plugins.speculative import AcceptanceTally, DraftPolicy, NgramLookup

    from assistant.bench.strategies import REPETITIVE

    costs = {1: 1.0, 2: 1.9, 4: 2.55, 8: 3.55, 16: 6.3}  # 2 rows ~ 2 steps, 16 rows ~ 6 (2-core CPU)

    def policy(text: str | None) -> DraftPolicy:
        seen = AcceptanceTally(16)
        if text is not None:
            NgramLookup(1, 4).extend(gemma.bos_tokens() + gemma.tokenize(text), seen)
        return DraftPolicy(4, 0.6, 16, costs, seen)

    assumed = policy(None)
    ordinary = policy("".join(p["prompt"] for p in humaneval_problems()[:40]))
    repetitive = policy(REPETITIVE)
    assert [assumed.length(n, 16) for n in (2, 3, 4)] == [7, 7, 7]
    assert [ordinary.length(n, 16) for n in (1, 2, 3, 4)] == [0, 0, 0, 0]
    assert ordinary.first[4] < 0.75 < repetitive.first[2]
    assert repetitive.length(2, 16) >= 3
    assert repetitive.length(2, 16, agree=16) == 15


def test_speculative_exact_equals_greedy_token_for_token_on_gemma():
    """With exact=true speculative verifies only in batch sizes that reproduce one-token
    decodes bit for bit on this model and build, so its output is greedy's with no near-tie
    excuse, on the bundled Gemma (whose batches of 3 or more rows round differently on AVX2 here)."""
    prompt = humaneval_problems()[13]["prompt"]  # without exact, speculative parts from greedy here on AVX2
    outs = {}
    for strategy in ("greedy", "speculative"):  # fresh caches: the prompt is evaluated alike
        svc = Service(Settings(n_ctx=1024))
        options = {"free_batch": "true", "exact": "true"} if strategy == "speculative" else {}
        req = Request(prompt=prompt, max_tokens=40, strategy=strategy, ignore_eos=True, options=options)
        outs[strategy] = run(svc, req)[0]
    assert outs["speculative"].tokens == outs["greedy"].tokens
    assert outs["speculative"].stats["accepted_draft_tokens"] > 0


def test_bench_strategies_json(smol_path):
    res = run_cli(
        "bench",
        "strategies",
        "--model",
        str(smol_path),
        "--tokens",
        "4",
        "--rounds",
        "1",
        "--json",
        env={"ASSISTANT_PLUGINS": "greedy,sample,adadec,speculative,top_h,contrastive,grammar_infill"},
    )
    assert res.returncode == 0, res.stderr
    obj = json.loads(res.stdout)
    assert obj["greedy"]["time_vs_greedy"] == 1.0
    for name in ("sample", "adadec", "speculative", "top-h", "contrastive"):
        assert obj[name]["time_vs_greedy"] > 0 and obj[name]["forward_passes"] > 0
    assert obj["speculative_repetitive"]["speedup"] > 0 and obj["speculative_repetitive"]["exact_speedup"] > 0
    ada = obj["adadec_analysis"]
    assert 0 <= ada["pause_rate"] <= 1 and ada["k_row_batch_vs_step"] > 0 and ada["batch_floor_vs_greedy"] > 0
    assert ada["schedule"] in ("batch", "best-first") and ada["batch_time_vs_greedy"] > 0
    assert ada["threshold"] > 0 and ada["threshold_source"] in ("calibrated", "default")
    assert ada["line_mode_time_vs_greedy"] > 0 and ada["line_mode_pauses"] >= 0
    he = ada["humaneval_prompts"]
    assert he["prompts"] == 8 and he["time_vs_greedy"] > 0 and 0 <= he["pause_rate"] <= 1
    assert he["forward_passes"] >= he["greedy_forward_passes"] >= 8 * 4  # a pass per greedy token at least
    assert he["prompt_reuse"] > 0.9  # every timed run starts from the cached prompt
    assert obj["grammar-infill_infill"]["time_vs_greedy_infill"] > 0
    grammar = obj["grammar"]  # timed over as many tokens as asked (the old prompt got `{}`, 2)
    assert grammar["tokens"] == 4 and grammar["mask_apply_ms"] > 0 and grammar["overhead_vs_step"] > 0


def test_bench_strategies_reports_a_failing_plugin_and_goes_on(smol_path):
    """A plugin's strategy that raised ended the whole bench (every row measured so far lost);
    its row now says why and the others are measured."""
    from conftest import registry_with

    from assistant.bench.strategies import run_strategies_bench
    from assistant.decoding import Strategy

    class Boom(Strategy):
        name = "boom"

        def generate(self, run):
            run.start()
            raise ValueError("no luck")

    registry = registry_with(Boom, only={"greedy", "sample"})
    service = Service(Settings(completion_model=str(smol_path)), registry=registry)
    result = run_strategies_bench(service, n_tokens=3, rounds=2)
    assert result["sample"]["time_vs_greedy"] > 0 and result["greedy"]["time_vs_greedy"] == 1.0
    assert "ValueError: no luck (a bug in that plugin)" in result["boom"]["error"]
