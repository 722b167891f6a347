"""Syntax-valid infilling on tricky suffixes with the real completion model."""

from __future__ import annotations

import json

import pytest
from conftest import run_cli

from assistant.config import Settings
from assistant.context.syntax import SyntaxGuard, parses
from assistant.decoding import Done, Request
from assistant.service import Service

CASES = {
    "closing brackets": ("values = [1, 2, 3]\ntotal = sum(", "))\nprint(total)\n"),
    "else branch": ("def sign(x):\n    if x >= 0:\n        ", "\n    else:\n        return -1\n"),
    "dedented next statement": ("def area(r):\n    ", "\n\n\nprint(area(2))\n"),
    "string left open": ('def greet(name):\n    return "Hello, ', '"\n'),
}


@pytest.fixture(scope="module")
def gemma_service():
    return Service(Settings(n_ctx=2048))


@pytest.mark.parametrize("case", sorted(CASES))
def test_grammar_infill_is_valid_on_tricky_suffixes(gemma_service, case):
    prefix, suffix = CASES[case]
    req = Request(prompt=prefix, suffix=suffix, max_tokens=40, strategy="grammar-infill", language="python")
    done = [e for e in gemma_service.generate(req) if isinstance(e, Done)][0]
    if done.finish_reason == "no_valid_infill":
        assert done.text == ""  # it says so instead of returning broken code
    else:
        assert done.text.strip() and parses(prefix + done.text + suffix), (case, done.text)
        next_line = suffix.strip().split("\n")[0].strip()
        if len(next_line) >= 3:  # the middle does not write the suffix's next line again
            assert not done.text.rstrip().endswith(next_line), done.text


def test_syntax_guard_unit():
    g = SyntaxGuard("x = (1 +", ")\n", "python")
    assert g.check("", final=False) == (False, 0)
    assert g.check(" 2", final=True) == (True, 2)
    bad = SyntaxGuard("def f(:", "\n", "python")
    assert bad.check("pass", final=True) == (True, 0) and bad.failed
    js = SyntaxGuard("function f() { return ", "; }\n", "javascript")
    assert js.valid("1 + 2") and not js.valid("1 +")


def test_complete_syntax_valid_flag_and_eval_infill(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("def mean(xs):\n    total = 0\n    for x in xs:\n        \n    return total / len(xs)\n")
    res = run_cli("complete", str(src), "--line", "4", "--column", "9", "--syntax-valid", "-n", "24", "--json")
    assert res.returncode == 0, res.stderr
    obj = json.loads(res.stdout)
    if obj["finish_reason"] != "no_valid_infill":
        text = src.read_text()
        assert parses(text[: text.index("        \n") + 8] + obj["text"] + text[text.index("        \n") + 8 :])
    cases = tmp_path / "cases.jsonl"
    cases.write_text(
        json.dumps(
            {
                "prefix": "def double(x):\n    return ",
                "suffix": "\n\n\nassert double(2) == 4\n",
                "middle": "2 * x",
                "test": "assert double(3) == 6",
                "extra": "ignored",
            }
        )
        + "\n"
    )
    for strategy in ("greedy", "grammar-infill"):
        res = run_cli("eval", "infill", "--cases", str(cases), "-s", strategy, "--json")
        assert res.returncode == 0, res.stderr
        out = json.loads(res.stdout)
        assert out["n"] == 1 and set(out) >= {
            "syntax_valid_rate",
            "nonempty_valid_rate",
            "exact_match",
            "edit_similarity",
            "pass_rate",
            "seconds_per_case",
        }
    assert out["nonempty_valid_rate"] == 1.0  # grammar-infill: valid and non-empty
    # a bad option is refused before any case runs: the error alone, without a progress bar
    bad = run_cli("eval", "infill", "--cases", str(cases), "-s", "grammar-infill", "-o", "nosuch=1")
    assert bad.returncode == 2 and "has no option 'nosuch'" in bad.stderr, bad.stderr
    assert "infill [" not in bad.stderr and "Traceback" not in bad.stderr
