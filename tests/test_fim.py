"""FIM prompt layouts per model family, on tiny GGUF files written by the test itself."""

from __future__ import annotations

import json
import re

import pytest
from conftest import run_cli
from tiny_gguf import FAMILIES, write_tiny_gguf

from assistant.context import build_prompt
from assistant.context.fim import detect
from assistant.decoding import ContextChunk, Request
from assistant.engine import Model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gguf")
    return {fam: Model(write_tiny_gguf(folder / f"{fam}.gguf", fam)) for fam in FAMILIES}


def psm_body(m, pre, suf, mid, prefix="def x", suffix="return y"):
    """BOS, then prefix-suffix-middle: the part every PSM layout ends with."""
    return m.bos_tokens() + [pre] + m.tokenize(prefix) + [suf] + m.tokenize(suffix) + [mid]


def ids(model, *texts):
    return [model.special_token(t) for t in texts]


@pytest.mark.parametrize("family", ["qwen", "starcoder", "codellama", "deepseek", "codestral", "codegemma"])
def test_family_detected(tiny, family):
    layout = detect(tiny[family])
    assert layout is not None and layout.family == family
    assert layout.spm == (family == "codestral")


def test_no_fim_tokens(tiny):
    assert detect(tiny["none"]) is None
    p = build_prompt(tiny["none"], Request(prompt="def x", suffix="return y"), 256)
    assert p.mode == "prefix" and p.guard is not None


def test_a_file_with_no_code_before_the_cursor_is_named_in_a_comment(tiny):
    """Without FIM tokens the model sees only the prefix: in an empty `main.go` that was
    nothing, and Gemma wrote HTML. Where the prefix holds no code, a comment in the file's
    language names the file; anywhere else the prompt is the prefix alone."""
    m = tiny["none"]

    def text(prefix, **kw):
        toks = build_prompt(m, Request(prompt=prefix, suffix="}\n", **kw), 256).tokens
        return m.detokenize(toks[len(m.bos_tokens()) :]).removeprefix(" ")  # its tokenizer adds a space

    assert text("", filename="main.go", language="go") == "// main.go\n"
    assert text("\n\n", filename="x.py", language="python") == "# x.py\n\n\n"
    assert text("", filename="page.html", language="html") == "<!-- page.html -->\n"
    assert text("package main\n", filename="main.go", language="go") == "package main\n"
    assert text("\n", filename="data.json", language="json") == "\n"  # JSON has no comments
    assert text("\n", filename=None, language="python") == "\n"  # stdin without a name: no name to give
    fim = tiny["codellama"]  # a FIM model sees the suffix: no hint added
    assert build_prompt(fim, Request(prompt="", suffix="}", filename="a.go", language="go"), 256).tokens == (
        build_prompt(fim, Request(prompt="", suffix="}"), 256).tokens
    )


def test_psm_layout_with_repo_context_qwen(tiny):
    m = tiny["qwen"]
    req = Request(prompt="def x", suffix="return y", extra=[ContextChunk("x = 1", "a.py")], filename="b.py")
    toks = build_prompt(m, req, 256).tokens
    rep, sep, pre, suf, mid = ids(
        m, "<|repo_name|>", "<|file_sep|>", "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"
    )
    expected = (
        [rep]
        + m.tokenize("myproject\n")
        + [sep]
        + m.tokenize("a.py\nx = 1")
        + [sep]
        + m.tokenize("b.py\n")
        + psm_body(m, pre, suf, mid)
    )
    assert toks == expected


def test_starcoder_uses_its_own_repo_tokens(tiny):
    m = tiny["starcoder"]
    toks = build_prompt(m, Request(prompt="a", suffix="b", extra=[ContextChunk("c", "f.py")]), 256).tokens
    assert toks[0] == m.special_token("<repo_name>") and m.special_token("<file_sep>") in toks


def test_spm_order_codestral(tiny):
    m = tiny["codestral"]
    toks = build_prompt(m, Request(prompt="def x", suffix="return y"), 256).tokens
    pre, suf = ids(m, "[PREFIX]", "[SUFFIX]")
    assert toks == m.bos_tokens() + [suf] + m.tokenize("return y") + [pre] + m.tokenize("def x")


@pytest.mark.parametrize(
    "family, tokens",
    [
        ("codellama", ("▁<PRE>", "▁<SUF>", "▁<MID>")),
        ("deepseek", ("<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>")),
    ],
)
def test_psm_without_repo_tokens_uses_snippet_separator(tiny, family, tokens):
    m = tiny[family]
    toks = build_prompt(m, Request(prompt="def x", suffix="return y", extra=[ContextChunk("z = 2")]), 256).tokens
    pre, suf, mid = ids(m, *tokens)
    assert toks == (m.tokenize("z = 2\n\n--- snippet ---\n\n") + psm_body(m, pre, suf, mid))


def test_long_infill_is_truncated_not_crashed(tiny):
    m = tiny["qwen"]
    p = build_prompt(m, Request(prompt="x + " * 400, suffix="y - " * 400, max_tokens=32), 256)
    assert p.truncated and len(p.tokens) < 256


def test_the_model_sees_the_lines_near_the_cursor_as_llama_vim_sends_them(tiny, tmp_path):
    """`complete` prefilled the whole file up to the context (12.6 s on 2 cores for a
    2,630-line file, and more with a larger --n-ctx); it now sends the cursor's line with 256
    lines above and 64 below, as llama.vim does. A check that the file parses sees all of it."""
    m = tiny["qwen"]
    above = "".join(f"a{i} = {i}\n" for i in range(10))
    below = "".join(f"b{i} = {i}\n" for i in range(10))
    req = Request(prompt=above + "x = ", suffix="1\n" + below, n_prefix=2, n_suffix=3)
    pre, suf, mid = ids(m, "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>")
    near = psm_body(m, pre, suf, mid, prefix="a8 = 8\na9 = 9\nx = ", suffix="1\nb0 = 0\nb1 = 1\nb2 = 2\n")
    tokens = build_prompt(m, req, 256).tokens
    assert tokens[-len(near) :] == near and m.tokenize("a7") not in [tokens[i : i + 2] for i in range(len(tokens))]
    whole = Request(prompt=above + "x = ", suffix="1\n" + below)  # 0: all of it, as before
    body = psm_body(m, pre, suf, mid, prefix=whole.prompt, suffix=whole.suffix)
    assert build_prompt(m, whole, 512).tokens[-len(body) :] == body
    guarded = Request(prompt='s = """\n' + above + "x = ", suffix='"""\n', n_prefix=2, syntax_valid=True)
    guard = build_prompt(m, guarded, 256).guard
    assert (guard.prefix, guard.suffix) == (guarded.prompt, guarded.suffix)  # the opening quotes are far above
    lines_above, lines_below = [f"v{i} = {i}\n" for i in range(400)], [f"w{i} = {i}\n" for i in range(100)]
    src = tmp_path / "long.py"
    src.write_text("".join(lines_above) + "x = \n" + "".join(lines_below))
    args = ["complete", str(src), "-l", "401", "-c", "5", "-m", str(m.path), "-n", "1", "--n-ctx", "8192", "--json"]
    sent = json.loads(run_cli(*args).stdout)["stats"]["prompt_tokens"]
    near = Request(
        prompt="".join(lines_above[-256:]) + "x = ", suffix="\n" + "".join(lines_below[:64]), filename="long.py"
    )
    assert sent == len(build_prompt(m, near, 8192).tokens)
    everything = run_cli(*args, "--n-prefix", "0", "--n-suffix", "0")
    assert json.loads(everything.stdout)["stats"]["prompt_tokens"] > sent


def test_complete_runs_a_fim_model(tmp_path, tiny):
    src = tmp_path / "a.py"
    src.write_text("def x():\n    return 1\n")
    res = run_cli(
        "complete", str(src), "--line", "2", "--column", "5", "--model", str(tiny["qwen"].path), "-n", "4", "--json"
    )
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["stats"]["prompt_mode"] == "fim:qwen"


def test_running_past_the_trained_context_is_said(tiny):
    """A context longer than the model was trained on (256 tokens here) is allowed, but a run
    that goes past it is told so: llama.cpp only writes it to a log the CLI hides."""
    path = str(tiny["none"].path)
    short = run_cli("generate", "x", "--model", path, "--n-ctx", "1024", "-n", "4", "--json")
    assert short.returncode == 0 and "notes" not in json.loads(short.stdout)["stats"], short.stdout
    long = run_cli("generate", "a b c d " * 50, "--model", path, "--n-ctx", "1024", "-n", "4", "--json")
    assert long.returncode == 0, long.stderr
    (note,) = json.loads(long.stdout)["stats"]["notes"]
    assert "ran past the 256 tokens the model was trained on" in note, note


def test_calibrating_a_model_that_never_predicts_the_reference_says_so(tiny, tmp_path):
    """Random weights never pick the reference token: the error said "use more problems",
    which no number of problems mends."""
    env = {"ASSISTANT_DATA_DIR": str(tmp_path)}
    res = run_cli("calibrate", "--model", str(tiny["none"].path), "--limit", "2", env=env)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert re.search(r"greedy's token was the reference at 0 of \d+ positions", res.stderr), res.stderr
    assert "cannot be calibrated" in res.stderr and not list(tmp_path.rglob("*.json"))


class _CountingTokenizer:
    """The real model, noting how much text each tokenize call is given."""

    def __init__(self, model):
        self.model, self.sizes = model, []

    def tokenize(self, text, **kw):
        self.sizes.append(len(text))
        return self.model.tokenize(text, **kw)

    def __getattr__(self, name):
        return getattr(self.model, name)


def test_a_long_file_is_cut_before_it_is_tokenized(gemma):
    """An editor sends the whole file; only text near the cursor is tokenized (tokenizing
    1.7 MB took 12 s), and the tokens kept are the ones tokenizing all of it gives."""
    text = "".join(f"def f{i}(x):\n    return x * {i}\n\n\n" for i in range(6000))  # ~0.2 MB
    prefix, suffix = text + "def g(y):\n    return ", "\n" + text
    counting = _CountingTokenizer(gemma)
    p = build_prompt(counting, Request(prompt=prefix, suffix=suffix, max_tokens=16), 1024)
    bos = gemma.bos_tokens()
    assert p.truncated and p.mode == "prefix" and len(p.tokens) == 1024 - 16 - len(bos) - 4 + len(bos)
    assert p.tokens[len(bos) :] == gemma.tokenize(prefix)[-(len(p.tokens) - len(bos)) :]
    assert max(counting.sizes) < 50_000
