"""The real `assistant` command: output formats and error paths."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from conftest import run_cli


def test_generate_json_and_stream(smol_path):
    res = run_cli("generate", "def fibonacci(n):", "--model", str(smol_path), "-n", "12", "--json")
    assert res.returncode == 0, res.stderr
    obj = json.loads(res.stdout)
    assert set(obj) >= {"text", "strategy", "finish_reason", "stats"}
    assert obj["strategy"] == "greedy" and obj["stats"]["generated_tokens"] <= 12
    streamed = run_cli("generate", "def fibonacci(n):", "--model", str(smol_path), "-n", "12")
    assert streamed.returncode == 0
    assert streamed.stdout.rstrip("\n") == obj["text"].rstrip("\n")


def test_generate_reads_stdin_and_samples(smol_path):
    args = [
        "generate",
        "-",
        "--model",
        str(smol_path),
        "-n",
        "10",
        "--json",
        "--strategy",
        "sample",
        "--temperature",
        "0.9",
        "--seed",
        "5",
    ]
    a = run_cli(*args, input="import os\n")
    b = run_cli(*args, input="import os\n")
    assert a.returncode == 0, a.stderr
    assert json.loads(a.stdout)["text"] == json.loads(b.stdout)["text"]


def test_generate_default_model_is_gemma(tmp_path):
    res = run_cli("generate", "def add(a, b):", "-n", "8", "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["stats"]["generated_tokens"] > 0


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
@pytest.mark.parametrize("args", [["generate", "x", "-n", "3"], ["generate", "x", "-n", "3", "--json"], ["strategies"]])
def test_output_to_a_full_disk_is_one_line(smol_path, args):
    """`> out.txt` on a full disk (here /dev/full) was a 40-line traceback from wherever the
    text was being printed."""
    if args[0] == "generate":
        args = [*args, "--model", str(smol_path)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASSISTANT_")}
    with open("/dev/full", "w") as full:
        res = subprocess.run(
            [sys.executable, "-m", "assistant", *args], stdout=full, stderr=subprocess.PIPE, text=True, env=env
        )
    assert res.returncode == 1 and res.stderr == "assistant: error: cannot write: No space left on device\n", res.stderr


def test_text_stdout_cannot_encode_is_escaped_not_lost():
    """Under an ASCII or Latin-1 locale (or into a file on Windows) a generated CJK character
    ended the run in UnicodeEncodeError, its text lost: it is written as an escape."""
    res = run_cli("generate", "# 日本語のコメント\n# 次のコメント：", "-n", "12", env={"PYTHONIOENCODING": "ascii"})
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr
    assert "\\u" in res.stdout and res.stdout.isascii(), res.stdout  # the model wrote some


def test_closed_standard_streams_are_no_traceback(smol_path):
    """Started with stdin, stdout or stderr closed (a daemon, `<&-`, `>&-`), Python has None
    for them: `generate -` and every printed token were AttributeError tracebacks, and with
    stderr closed any error was a silent exit 1."""
    base = [sys.executable, "-m", "assistant", "generate", "-m", str(smol_path), "-n", "3"]
    closed_in = subprocess.run(
        [*base, "-"], stdin=subprocess.DEVNULL, capture_output=True, timeout=120, preexec_fn=lambda: os.close(0)
    )
    assert closed_in.returncode == 2 and b"standard input is closed" in closed_in.stderr, closed_in.stderr
    closed_out = subprocess.run(
        [*base, "def f("],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        timeout=120,
        preexec_fn=lambda: os.close(1),
    )
    assert closed_out.returncode == 0 and b"Traceback" not in closed_out.stderr, closed_out.stderr
    closed_err = subprocess.run(
        [*base, "-s", "nonesuch", "x"], capture_output=True, timeout=120, preexec_fn=lambda: os.close(2)
    )
    assert closed_err.returncode == 2, closed_err  # the error's status, its line gone as asked


def test_a_prompt_that_is_not_utf8_is_a_clear_error(smol_path):
    """Bytes that are not UTF-8, piped in or in the argument, are named; they were a traceback."""
    cmd = [sys.executable, "-m", "assistant", "generate", "-", "-m", str(smol_path), "-n", "2"]
    piped = subprocess.run(cmd, input=b"def f():\n    \xff\xfe\n", capture_output=True, timeout=120)
    assert piped.returncode == 2 and b"standard input is not UTF-8 text (byte 13" in piped.stderr
    assert b"Traceback" not in piped.stderr
    argv = [os.fsencode(a) for a in cmd[:4]] + [b"x = \xff"] + [os.fsencode(a) for a in cmd[5:]]
    named = subprocess.run(argv, capture_output=True, timeout=120)
    assert named.returncode == 2 and b"the prompt is not UTF-8 text" in named.stderr
    # a stop string was never found, and a regex was a traceback from llguidance
    for flag, said in ((b"--stop", b"--stop '\\udcff' is not UTF-8 text"), (b"--regex", b"--regex is not UTF-8 text")):
        odd = subprocess.run([*argv[:4], b"x", flag, b"\xff", *argv[5:]], capture_output=True, timeout=120)
        assert odd.returncode == 2 and said in odd.stderr and b"Traceback" not in odd.stderr, odd.stderr


def test_stop_strings_understand_backslash_escapes(smol_path):
    r"""`--stop "\n"` as typed in a shell is a backslash and an n; it means a newline."""
    res = run_cli("generate", "import os\nimport sys\n", "-m", str(smol_path), "-n", "24", "--stop", r"\n", "--json")
    obj = json.loads(res.stdout)
    assert obj["finish_reason"] == "stop" and "\n" not in obj["text"], obj


def test_temperature_a_strategy_ignores_is_pointed_out(smol_path):
    """top-h has its own temperature option and greedy none: --temperature was dropped silently."""
    base = ("generate", "def f():", "-m", str(smol_path), "-n", "2", "--temperature", "1.5", "-s")
    top_h, sample = run_cli(*base, "top-h"), run_cli(*base, "sample")
    note = "'top-h' does not use --temperature; set its own with -o temperature=1.5"
    assert top_h.returncode == 0 and note in top_h.stderr
    assert sample.returncode == 0 and "does not use --temperature" not in sample.stderr


def test_complete_at_cursor(tmp_path, smol_path):
    src = tmp_path / "calc.py"
    src.write_text("def add(a, b):\n    return a + b\n\n\nresult = add(1, )\nprint(result)\n")
    res = run_cli("complete", str(src), "--line", "5", "--column", "17", "--model", str(smol_path), "--json")
    assert res.returncode == 0, res.stderr
    obj = json.loads(res.stdout)
    assert "\n" not in obj["text"] and not obj["text"].endswith(")")
    plain = run_cli("complete", str(src), "--line", "5", "--column", "17", "--model", str(smol_path))
    assert plain.stdout == obj["text"]
    # a multi-draft strategy gives an editor its alternatives, as `generate --json` does
    res = run_cli(
        "complete", str(src), "-l", "5", "-c", "17", "-m", str(smol_path), "-s", "superposed", "-n", "6", "--json"
    )
    drafts = json.loads(res.stdout)
    assert len(drafts["texts"]) == 3 and drafts["text"] in drafts["texts"] and drafts["file"] == str(src)
    assert len(set(drafts["texts"])) == 3  # alternatives to insert are distinct texts


def test_complete_in_an_empty_file_writes_the_files_language(tmp_path):
    """The bundled Gemma, seeing nothing of an empty `main.go`, wrote an HTML page (`<h1>`);
    the comment naming the file keeps it to the file's language."""
    src = tmp_path / "main.go"
    src.write_text("")
    res = run_cli("complete", str(src), "-l", "1", "-c", "1", "-n", "16", "--json")
    obj = json.loads(res.stdout)
    assert res.returncode == 0 and obj["text"].startswith("//") and "<" not in obj["text"], obj


def test_complete_takes_llama_vims_time_limit(tmp_path):
    """llama.vim bounds a suggestion's time with t_max_predict_ms (1000): past it, once a line
    has ended, generation stops. `complete` had no way to say it."""
    src = tmp_path / "m.py"
    src.write_text("def main():\n    \n")
    args = ["complete", str(src), "-l", "2", "-c", "5", "-n", "80", "--n-indent", "0"]
    free = json.loads(run_cli(*args, "--json").stdout)
    timed = json.loads(run_cli(*args, "--t-max-predict-ms", "1", "--json").stdout)
    assert free["finish_reason"] == "length" and free["text"].count("\n") > 3, free
    assert timed["finish_reason"] == "time_limit" and timed["text"].count("\n") <= 2, timed
    assert free["text"].startswith(timed["text"])


def test_complete_reads_an_unsaved_buffer_from_stdin(tmp_path, smol_path):
    """An editor's buffer is often unsaved: `complete -` reads it from stdin (as `black -`,
    `ruff --stdin-filename`), and `--stdin-filename` gives its language and project; it was
    'file not found: -'."""
    js = "function add(a, b) {\n  return \n}\n"
    (tmp_path / "add.js").write_text(js)
    args = ["-l", "2", "-c", "10", "-n", "8", "-m", str(smol_path), "--json"]
    saved = json.loads(run_cli("complete", str(tmp_path / "add.js"), *args).stdout)
    piped = run_cli("complete", "-", "--stdin-filename", str(tmp_path / "add.js"), *args, input=js)
    assert piped.returncode == 0, piped.stderr
    assert json.loads(piped.stdout)["text"] == saved["text"] and saved["text"], (piped.stdout, saved)
    # the name says the language: a syntax check of JavaScript, not of Python (which this fails)
    guarded = [*args, "--syntax-valid", "--n-indent", "0", "-n", "24"]
    js_guarded = json.loads(run_cli("complete", "-", "--stdin-filename", "src/add.js", *guarded, input=js).stdout)
    assert js_guarded["finish_reason"] == "stop" and js_guarded["text"], js_guarded
    unnamed = json.loads(run_cli("complete", "-", *guarded, input=js).stdout)  # no name: Python's checks
    assert unnamed["finish_reason"] == "no_valid_infill" and unnamed["file"] == "-", unnamed
    stray = run_cli("complete", str(tmp_path / "add.js"), "--stdin-filename", "a.js", *args)
    assert stray.returncode == 2 and "give FILE as -" in stray.stderr
    outside = run_cli("complete", "-", "-l", "9", "-c", "1", "-m", str(smol_path), input=js)
    assert outside.returncode == 2 and "--line 9 is outside standard input (1..4)" in outside.stderr


def test_complete_in_a_windows_file_inserts_windows_line_ends(tmp_path):
    """The model sees "\n" line ends either way; the text to insert uses the file's own (a
    classic Mac OS file's "\r" became "\n" in it)."""
    unix = 'def f(x):\n    """Twice x."""\n    return \n\nprint(f(1))\n'
    texts = {}
    for name, newline in (("unix.py", "\n"), ("windows.py", "\r\n"), ("mac.py", "\r")):
        src = tmp_path / name
        src.write_bytes(unix.replace("\n", newline).encode())
        res = run_cli("complete", str(src), "-l", "3", "-c", "12", "-n", "12", "--n-indent", "0", "--json")
        assert res.returncode == 0, res.stderr
        texts[newline] = json.loads(res.stdout)["text"]
    assert "\n" in texts["\n"] and "\r" not in texts["\n"]  # the completion runs past its line
    assert texts["\r\n"] == texts["\n"].replace("\n", "\r\n") and texts["\r"] == texts["\n"].replace("\n", "\r")
    # a stop at the file's own line end: the model writes "\n", so "\r\n" was never found
    args = ["complete", str(tmp_path / "windows.py"), "-l", "3", "-c", "12", "-n", "12", "--n-indent", "0"]
    stopped = run_cli(*args, "--stop", r"\r\n", "--json")
    assert json.loads(stopped.stdout)["text"] == texts["\n"].split("\n")[0], stopped.stdout


def test_complete_stops_at_the_end_of_the_cursors_block_by_default(tmp_path):
    """As llama.vim sends n_indent = the cursor line's indentation: a completion inside a
    function ends where the function does (it ran on into the next function); --n-indent 0
    lifts the limit, and the limited text is where the same greedy decode was cut, less the
    blank lines before the cut, which the text after the cursor has already (as llama.vim
    drops them: they were inserted twice)."""
    src = tmp_path / "m.py"
    src.write_text("def add(a, b):\n    \n\nprint(add(1, 2))\n")
    args = ["complete", str(src), "-l", "2", "-c", "5", "-n", "24", "--json"]
    block = json.loads(run_cli(*args).stdout)["text"]
    free = json.loads(run_cli(*args, "--n-indent", "0").stdout)["text"]
    assert free.startswith(block)
    assert all(not line.strip() or line.startswith("    ") for line in block.split("\n")[1:]), block
    assert not re.search(r"\n[ \t]*\Z", block), block
    if free != block:  # what was cut is a line that leaves the block, after blank lines
        rest = free[len(block) :]
        assert re.match(r"(\n[ \t]*)*\n {0,3}\S", rest), (block, rest)


def test_the_cursors_line_is_found_without_splitting_the_file(monkeypatch):
    """The file was split into all its lines to find the cursor's (a 112 MB file: 1.9 s and
    100 MB more); its line ends are counted a chunk at a time instead. Chunks of a few
    characters here, so that a line starts in every place a chunk can leave it."""
    import random

    from assistant.context import cursor
    from assistant.errors import UserError

    rng = random.Random(0)
    for chunk in (1, 3, 8):
        monkeypatch.setattr(cursor, "_CHUNK", chunk)
        for _ in range(40):
            text = "".join(rng.choice(["a", "bc", "\n", "\n\n"]) for _ in range(rng.randrange(0, 30)))
            lines = text.split("\n")
            for line, current in enumerate(lines, 1):
                column = rng.randrange(1, len(current) + 2)
                offset = sum(len(s) + 1 for s in lines[: line - 1]) + column - 1
                assert cursor.split_at_cursor(text, line, column, "f") == (text[:offset], text[offset:], "\n")
            with pytest.raises(UserError, match=f"outside f \\(1..{len(lines)}\\)"):
                cursor.split_at_cursor(text, len(lines) + 1, 1, "f")


def test_a_column_counts_what_the_editor_counts(tmp_path, smol_path):
    """Vim's col() counts UTF-8 bytes and VS Code UTF-16 code units: such a column put the
    cursor past its place after every `é` or emoji before it. --column-unit says which."""
    from assistant.context.cursor import split_at_cursor

    text = 's = "h\u00e9llo \U0001f389"  # x\n'
    at_quote = ('s = "h\u00e9llo \U0001f389', '"  # x\n', "\n")
    assert split_at_cursor(text, 1, 13, "f") == at_quote  # characters
    assert split_at_cursor(text, 1, 17, "f", "bytes") == at_quote  # é is 2 bytes, the emoji 4
    assert split_at_cursor(text, 1, 14, "f", "utf-16") == at_quote  # the emoji is 2 code units
    # LSP's positionEncoding names, as a client negotiated them
    assert split_at_cursor(text, 1, 17, "f", "utf-8") == split_at_cursor(text, 1, 13, "f", "utf-32") == at_quote
    src = tmp_path / "u.py"
    src.write_text(text)
    args = ["complete", str(src), "-l", "1", "-m", str(smol_path), "-n", "2"]
    inside = run_cli(*args, "-c", "16", "--column-unit", "bytes")
    assert inside.returncode == 2 and "--column 16 (bytes) falls inside a character of line 1" in inside.stderr
    past = run_cli(*args, "-c", "21", "--column-unit", "utf-16")
    assert past.returncode == 2 and "outside line 1 (1..20 in utf-16)" in past.stderr, past.stderr
    bad = run_cli(*args, "-c", "1", "--column-unit", "columns")
    assert bad.returncode == 2 and "--column-unit must be one of chars, bytes, utf-16, utf-8, utf-32" in bad.stderr


def test_a_byte_order_mark_is_no_text(tmp_path):
    """Windows editors may save UTF-8 with a BOM: it took a column on line 1 and a token in the
    prompt; now the cursor and the prompt are the file's text alone."""
    from assistant.context.cursor import read_source, split_at_cursor

    src = tmp_path / "bom.py"
    src.write_bytes(b"\xef\xbb\xbfdef add(a, b):\n    return \n")
    assert split_at_cursor(read_source(src), 1, 4, "bom.py") == ("def", " add(a, b):\n    return \n", "\n")
    # files a user writes by hand: a config file, infill cases, a grammar (each was refused)
    from assistant.config import load_settings
    from assistant.constraints import read_source
    from assistant.evals.infill import load_cases

    bom = b"\xef\xbb\xbf"
    (tmp_path / "config.toml").write_bytes(bom + b"max_tokens = 3\n")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ASSISTANT_CONFIG", str(tmp_path / "config.toml"))
        assert load_settings().max_tokens == 3
    (tmp_path / "cases.jsonl").write_bytes(bom + b'{"prefix": "a", "suffix": "", "middle": "b"}\n')
    assert load_cases(tmp_path / "cases.jsonl")[0]["middle"] == "b"
    (tmp_path / "g.lark").write_bytes(bom + b'start: "yes"\n')
    assert read_source("lark", tmp_path / "g.lark") == 'start: "yes"\n'


@pytest.mark.parametrize(
    "args, message",
    [
        (["generate", "x", "--model", "/nonexistent/model.gguf"], "model file not found"),
        (["generate", "x", "--model", "{tmp}"], "directory"),
        (["generate", "x", "--model", "{tmp}/notes.txt"], "not a GGUF file"),
        (["generate", "x", "--model", "{tmp}/locked.gguf"], "cannot read"),
        (["generate", "x", "--strategy", "nope", "--model", "{smol}"], "unknown strategy"),
        (["generate", "x", "-o", "oops", "--model", "{smol}"], "KEY=VALUE"),
        (["generate", "x", "-s", "contrastive", "-o", "k=3", "-o", "k=4", "--model", "{smol}"], "k given twice"),
        (["generate", "x", "-s", "sample", "--temperature", "nan", "--model", "{smol}"], "finite number"),
        (["generate", "x", "-s", "sample", "--seed", "-1", "--model", "{smol}"], "seed must be >= 0"),
        (["generate", "x", "--n-ctx", "100000000", "--model", "{smol}"], "GiB of KV cache and this machine has"),
        (["complete", "{tmp}/missing.py", "--line", "1", "--column", "1"], "file not found"),
        (["complete", "{tmp}/notes.txt", "--line", "9", "--column", "1"], "outside"),
        (["generate", "x", "-n", "-1", "--model", "{smol}"], "max_tokens must be >= 0, got -1"),
        (["generate", "x", "-t", "99999999999999999999", "--model", "{smol}"], "threads must be at most 512"),
        # an empty value (a shell variable that was not set): the error named `.`, or it ran anyway
        (["generate", "x", "--model", ""], '--model "" is empty'),  # "a directory, not a GGUF file: ."
        (["generate", "x", "--grammar", "", "--model", "{smol}"], '--grammar "" is empty'),
        (["generate", "x", "--regex", "", "--model", "{smol}"], '--regex "" is empty'),  # wrote nothing, exit 0
        (["generate", "x", "-s", "", "--model", "{smol}"], '--strategy "" is empty'),  # ran greedy
        (["complete", "", "-l", "1", "-c", "1"], 'FILE "" is empty'),  # "not a file: ."
        (["eval", "compare", "", "{tmp}/notes.txt"], 'A "" is empty'),
        (["bench", "speed", "--rounds", "0", "--model", "{smol}"], "--rounds must be >= 1, got 0"),
        (["bench", "strategies", "--tokens", "1", "--model", "{smol}"], "--tokens must be >= 2, got 1"),
        (["bench", "strategies", "--tokens", "5000", "--model", "{smol}"], "--tokens 5000 needs a context of"),
        (["bench", "speed", "--tokens", "100", "--n-ctx", "256", "--model", "{smol}"], "or raise --n-ctx"),
        (["complete", "{tmp}/notes.txt", "-l", "1", "-c", "1", "--n-indent", "-2"], "n_indent must be >= 0, got -2"),
        (["models", "--model", "{tmp}/notes.txt"], "not a GGUF file"),
        (["generate", "x", "--grammar", "{tmp}", "--model", "{smol}"], "cannot read grammar file"),
        (["generate", "x", "--stop", "", "--model", "{smol}"], '--stop "" is empty'),
        (["generate", "x", "--grammar", "{tmp}/latin1.lark", "--model", "{smol}"], "can't decode byte 0xe9"),
        (["generate", "x", "--json-schema", "{tmp}/none.json", "--model", "{smol}"], "JSON schema file not found"),
    ],
)
def test_errors_are_one_line_exit_2(tmp_path, smol_path, args, message):
    (tmp_path / "notes.txt").write_text("hello\n")
    (tmp_path / "latin1.lark").write_bytes(b'start: "caf\xe9"\n')  # a grammar not in UTF-8
    locked = tmp_path / "locked.gguf"
    locked.write_bytes(b"GGUF")
    locked.chmod(0)
    args = [a.format(tmp=tmp_path, smol=smol_path) for a in args]
    res = run_cli(*args)
    if message == "cannot read" and os.access(locked, os.R_OK):  # running as root: permissions don't apply
        pytest.skip("root can read a mode-000 file")
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert message in res.stderr
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1


LOCKED = "/proc/1/cwd/x"  # behind a folder this user may not search (another process's cwd)


@pytest.mark.parametrize(
    "args, env",
    [
        (["generate", "x", "--grammar", f"{LOCKED}.lark"], {}),
        (["generate", "x", "--json-schema", f"{LOCKED}.json"], {}),
        (["generate", "x", "-s", "superposed", "-o", f"corpus={LOCKED}.py"], {}),
        (["eval", "humaneval", "--limit", "1", "--output", f"{LOCKED}.jsonl"], {}),
        (["eval", "compare", f"{LOCKED}.jsonl", f"{LOCKED}.jsonl"], {}),
        (["generate", "x"], {"ASSISTANT_CONFIG": f"{LOCKED}.toml"}),
        (["generate", "x", "--model", f"{LOCKED}.gguf"], {}),
    ],
)
def test_a_path_that_may_not_be_looked_at_is_one_line(smol_path, args, env):
    """Path.exists() and is_file() raise PermissionError there: each was a traceback."""
    try:
        os.stat("/proc/1/cwd")
    except PermissionError:
        pass
    else:
        pytest.skip("this user may look into pid 1's working folder")
    model = [] if "--model" in args or "compare" in args else ["-m", str(smol_path)]
    res = run_cli(*args, *model, env=env)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert "cannot read" in res.stderr and "Permission denied" in res.stderr, res.stderr


def test_truncated_gguf_is_a_clear_error(tmp_path, smol_path):
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(smol_path.read_bytes()[:4096])
    res = run_cli("generate", "x", "--model", str(broken))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "could not load" in res.stderr or "GGUF" in res.stderr
    # its header is cut short too: `models` names it, alone or in a folder it lists
    res = run_cli("models", "--model", str(broken))
    assert res.returncode == 2 and "corrupt or truncated GGUF header" in res.stderr, res.stderr
    assert "the file ends inside its header, at byte 4,096" in res.stderr  # not struct's words
    (tmp_path / "gone.gguf").symlink_to(tmp_path / "moved.gguf")
    os.mkfifo(tmp_path / "pipe.gguf")  # opening it to read the magic waited for a writer forever
    (tmp_path / "locked.gguf").symlink_to("/proc/1/cwd/x.gguf")  # may not be looked at: a traceback
    missing = tmp_path / "no such folder"  # a typo in model_dirs is said, not an empty list
    dirs = f"{tmp_path},{missing},{LOCKED}"
    res = run_cli("models", "--json", env={"ASSISTANT_MODEL_DIRS": dirs}, timeout=60)
    assert res.returncode == 0, res.stderr
    rows = {r["path"]: r for r in json.loads(res.stdout)}
    assert "corrupt or truncated" in rows[str(broken)]["error"]
    link_error = rows[str(tmp_path / "gone.gguf")]["error"]
    assert link_error.endswith(f"is a link to {tmp_path / 'moved.gguf'}, which does not exist")
    assert rows[str(missing)]["error"] == f"model folder not found: {missing}"
    assert rows[LOCKED]["error"].startswith(("cannot read model folder", "model folder not found")), rows[LOCKED]
    assert rows[str(tmp_path / "pipe.gguf")]["error"].startswith("model path is not a regular file")
    assert rows[str(tmp_path / "locked.gguf")]["error"].startswith(("cannot read model file", "model file not found"))
    # a configured default that is unusable is a row too: `models` is where one looks for why
    res = run_cli("models", "--json", env={"ASSISTANT_COMPLETION_MODEL": str(broken)})
    assert res.returncode == 0 and "corrupt or truncated" in json.loads(res.stdout)[0]["error"], res.stderr
    table = run_cli("models", env={"ASSISTANT_MODEL_DIRS": f"{tmp_path},{missing}", "COLUMNS": "60"}).stdout
    assert "unusable: model folder not found" in table and "Traceback" not in table
    folded = "".join(line.split("│")[2].strip() for line in table.splitlines() if line.count("│") == 3)
    assert str(tmp_path / "gone.gguf") in folded  # paths are folded onto more lines, never cut


def test_strategies_and_models(smol_path, gemma_path):
    res = run_cli("strategies", "--json")
    assert res.returncode == 0
    by_name = {s["name"]: s for s in json.loads(res.stdout)}
    assert {"greedy", "sample"} <= set(by_name)
    assert {o["name"] for o in by_name["sample"]["options"]} >= {"temperature", "top_k", "top_p", "min_p"}
    assert run_cli("strategies").returncode == 0
    res = run_cli("models", "--json", env={"ASSISTANT_MODEL_DIRS": str(smol_path.parent)})
    assert res.returncode == 0, res.stderr
    rows = json.loads(res.stdout)
    roles = {r["role"]: r for r in rows}
    assert roles["default completion"]["vocab_size"] == 262144
    assert roles["default completion"]["fim"] is False
    assert roles["default chat"]["architecture"] == "llama"
    assert any(r["path"] == str(smol_path) for r in rows)


def test_every_command_has_help():
    for cmd in (["generate"], ["complete"], ["strategies"], ["models"], ["bench", "speed"]):
        res = run_cli(*cmd, "--help")
        assert res.returncode == 0 and "--json" in res.stdout, cmd


def test_bench_speed_json(smol_path):
    res = run_cli("bench", "speed", "--model", str(smol_path), "--tokens", "16", "--rounds", "1", "--json")
    assert res.returncode == 0, res.stderr
    obj = json.loads(res.stdout)
    for key in ("baseline_tok_s", "engine_tok_s", "raw_tok_s", "ratio", "prefill_tok_s"):
        assert obj[key] > 0, key
    assert set(obj["batched"]) == {"1", "2", "4"}
    assert obj["engine_matches_raw"] is True  # same kernels, same greedy tokens


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_ends_the_run_with_its_text_so_far(smol_path, signum):
    """The first Ctrl-C cancels: the text so far is kept (and --json still prints its object,
    finish_reason 'cancelled'); the command exits 130 without a traceback. SIGTERM (a
    `timeout`) does the same (it killed the command, --json printing nothing)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASSISTANT_")}
    args = [sys.executable, "-m", "assistant", "generate", "1, 2, 3, 4, 5, 6,", "--model", str(smol_path)]
    args += ["--max-tokens", "3000", "--stop", "never-appears"]
    t0 = time.monotonic()
    plain = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    first = plain.stdout.read(8)  # generation is under way
    started = time.monotonic() - t0
    plain.send_signal(signum)
    out, err = plain.communicate(timeout=60)
    assert plain.returncode == 130 and b"Traceback" not in err, err
    assert len(first + out) > 8
    # --json prints nothing until the end, so "under way" is a delay measured on the first
    # run; under a changing load the model can still be loading then (a Ctrl-C there ends the
    # command, 130 and no traceback, before any run) or the first token not yet out: wait
    # twice as long and try again
    for attempt in range(3):
        as_json = subprocess.Popen([*args, "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        time.sleep((started + 2) * 2**attempt)
        as_json.send_signal(signum)
        out, err = as_json.communicate(timeout=60)
        assert as_json.returncode == 130 and b"Traceback" not in err, err
        if out.strip() and json.loads(out)["text"]:
            break
    obj = json.loads(out)
    assert obj["finish_reason"] == "cancelled" and obj["text"] and obj["stats"]["generated_tokens"] < 3000


def test_the_cli_loads_llama_cpp_before_numpy():
    """With numpy imported first, a CUDA build of llama-cpp-python segfaulted in every model
    load on an H200 image; loaded first, everything ran there. The CLI's first import is the
    engine, whose first import is llama.cpp."""
    res = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "assistant", "strategies", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    done = [line.rsplit("|", 1)[-1].strip() for line in res.stderr.splitlines() if line.startswith("import time:")]
    assert done.index("llama_cpp.llama_cpp") < done.index("numpy"), done[:20]
    # the same for a program that embeds the service (the API the interfaces use)
    code = (
        "import sys, assistant.service; m = list(sys.modules); print(m.index('llama_cpp.llama_cpp') < m.index('numpy'))"
    )
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "True"


def test_a_missing_or_broken_llama_cpp_is_one_line():
    """llama-cpp-python not installed, or its library failing to load (a build for another CPU),
    was a traceback from the CLI's first import."""
    code = (
        "import sys; sys.modules['llama_cpp'] = None; sys.argv = ['assistant', 'strategies']; "
        "from assistant.__main__ import main; main()"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    assert (
        res.stderr.startswith("assistant: error: llama-cpp-python could not be loaded") and "pip install" in res.stderr
    )


def test_a_gpu_build_loaded_after_numpy_is_warned_about():
    """A host program that imports numpy before the engine, with a GPU build of llama.cpp,
    is told (the CLI loads llama.cpp first; see test_the_cli_loads_llama_cpp_before_numpy)."""
    code = (
        "import warnings; warnings.simplefilter('error')\n"
        "import numpy, llama_cpp\n"
        "llama_cpp.llama_supports_gpu_offload = lambda: {gpu}  # this machine's build is CPU-only\n"
        "try:\n    import assistant.engine\nexcept RuntimeWarning as w:\n    print('warned:', w)\n"
    )
    for gpu, warned in ((True, True), (False, False)):
        res = subprocess.run([sys.executable, "-c", code.format(gpu=gpu)], capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr
        assert ("warned: numpy was imported before llama.cpp" in res.stdout) == warned, res.stdout


def test_gpu_layers_on_a_cpu_only_build_are_said_to_do_nothing(smol_path):
    """llama.cpp ignores --n-gpu-layers on a build without GPU offload and runs on the CPU
    without a word; the KV-cache memory check, skipped for offloaded models, must still run."""
    from assistant.engine import gpu_offload_supported

    res = run_cli("generate", "x", "-n", "2", "-ngl", "99", "--model", str(smol_path))
    assert res.returncode == 0, res.stderr
    said = "n_gpu_layers 99 has no effect: this llama-cpp-python build has no GPU offload" in res.stderr
    assert said == (not gpu_offload_supported()), res.stderr
    if not gpu_offload_supported():
        big = run_cli("generate", "x", "-ngl", "99", "--n-ctx", "100000000", "--model", str(smol_path))
        assert big.returncode == 2 and "GiB of KV cache and this machine has" in big.stderr, big.stderr


def test_a_model_larger_than_memory_is_warned_of(tmp_path):
    """llama.cpp maps such a file and then reads the disk for every token, without a word."""
    huge = tmp_path / "huge.gguf"
    with huge.open("wb") as fh:  # sparse: no disk is used
        fh.write(b"GGUF")
        fh.truncate(1 << 40)
    res = run_cli("generate", "x", "-n", "1", "--model", str(huge))
    assert "warning: the model file is 1024.0 GiB and this machine has" in res.stderr, res.stderr
    assert res.returncode != 0 and "Traceback" not in res.stderr  # then the load fails: it is no model


def test_progress_of_a_long_job_in_a_log_is_lines(tmp_path, smol_path):
    """stderr to a file (a job under nohup): rich wrote its bar once, at the end; now a line at
    the start, at most one each 30 s, and one at the end."""
    from assistant.cli.progress import ProgressLines

    out = tmp_path / "he.jsonl"
    res = run_cli("eval", "humaneval", "-m", str(smol_path), "--limit", "2", "-n", "4", "--output", str(out))
    assert res.returncode == 0, res.stderr
    lines = [line for line in res.stderr.splitlines() if line.startswith("humaneval [greedy]: ")]
    assert [line.split()[2] for line in lines] == ["0/2", "2/2"], res.stderr
    assert "━" not in res.stderr  # no bar drawn for a terminal that is not there
    now = [0.0]
    said = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("typer.echo", lambda text, err=False: said.append(text))
        progress = ProgressLines("job", every=30.0, clock=lambda: now[0])
        for done, t in ((0, 0), (1, 10), (2, 31), (3, 40), (3, 41), (4, 45)):
            now[0] = t
            progress(done, 4)
    assert said == ["job: 0/4 (0:00 elapsed)", "job: 2/4 (0:31 elapsed)", "job: 4/4 (0:45 elapsed)"]


def test_version_names_the_engine_build():
    """What a bug report needs: this package's version and llama.cpp's build (GPU offload,
    CPU features), without loading a model."""
    from assistant import __version__

    res = run_cli("--version")
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith(f"assistant {__version__} (Python ") and "llama-cpp-python " in res.stdout
    assert "GPU offload: " in res.stdout and "CPU" in res.stdout


def test_more_threads_than_cpus_is_warned(smol_path):
    """64 threads on 2 CPUs decoded 10x slower than 2 and nothing said why."""
    cpus = len(os.sched_getaffinity(0))
    over = run_cli("generate", "x", "-m", str(smol_path), "-n", "1", "-t", str(cpus + 1))
    assert over.returncode == 0 and f"{cpus + 1} threads on the {cpus} CPUs" in over.stderr, over.stderr
    fits = run_cli("generate", "x", "-m", str(smol_path), "-n", "1", "-t", str(cpus))
    assert fits.returncode == 0 and "threads on the" not in fits.stderr, fits.stderr


def test_a_configured_strategy_that_is_none_names_where_it_was_set(tmp_path, smol_path):
    """`strategy = "adadek"` in the config said only "unknown strategy 'adadek'" to a user who
    had given no --strategy; generate, complete and the evals now say where it was set."""
    cfg = tmp_path / "config.toml"
    cfg.write_text('strategy = "adadek"\n')
    src = tmp_path / "m.py"
    src.write_text("x = \n")
    for args in (
        ("generate", "x", "-n", "1"),
        ("complete", str(src), "-l", "1", "-c", "5", "-n", "1"),
        ("eval", "humaneval", "--limit", "1", "-n", "1", "--output", str(tmp_path / "he.jsonl")),
        ("eval", "infill", "--limit", "1", "-n", "1"),
    ):
        res = run_cli(*args, "-m", str(smol_path), env={"ASSISTANT_CONFIG": str(cfg)})
        assert res.returncode == 2 and f"config file {cfg}: unknown strategy 'adadek'" in res.stderr, (args, res.stderr)
    assert not (tmp_path / "he.jsonl").exists()
    env = {"ASSISTANT_CONFIG": str(cfg)}
    flagged = run_cli("generate", "x", "-n", "1", "-s", "greedy", "-m", str(smol_path), env=env)
    assert flagged.returncode == 0, flagged.stderr  # --strategy over the config: its name is not looked at
    # a configured strategy that only infills: `generate` says the config chose it; `complete` runs it
    cfg.write_text('strategy = "grammar-infill"\n')
    plain = run_cli("generate", "x", "-n", "1", "-m", str(smol_path), env=env)
    assert plain.returncode == 2 and f"config file {cfg}: strategy grammar-infill only infills" in plain.stderr
    infill = run_cli("complete", str(src), "-l", "1", "-c", "5", "-n", "4", "-m", str(smol_path), "--json", env=env)
    assert infill.returncode == 0 and json.loads(infill.stdout)["strategy"] == "grammar-infill", infill.stderr


def test_a_prompt_typed_at_the_terminal_is_asked_for(smol_path):
    """`generate -` with stdin a terminal (nothing piped) waited without a word; it now says
    it reads the prompt there and how to end it, and goes on with what was typed."""
    import pty
    import select
    import signal
    import time

    pid, fd = pty.fork()
    if pid == 0:  # the child: stdin, stdout and stderr are the terminal
        os.execv(sys.executable, [sys.executable, "-m", "assistant", "generate", "-", "-n", "2", "-m", str(smol_path)])
    seen, deadline, sent = b"", time.monotonic() + 60, False
    try:
        while time.monotonic() < deadline:
            if not sent and b"end it with Ctrl-D" in seen:
                os.write(fd, b"def f(x):\n\x04")  # a line, then end of input
                sent = True
            if select.select([fd], [], [], 0.2)[0]:
                try:
                    chunk = os.read(fd, 4096)
                except OSError:  # the child ended: the terminal is gone
                    break
                if not chunk:
                    break
                seen += chunk
    finally:
        if not sent:  # it never asked: it would wait for ever
            os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
    assert b"assistant: reading the prompt '-' from the terminal; end it with Ctrl-D" in seen, seen
    assert sent and os.waitstatus_to_exitcode(status) == 0, seen


def test_a_checked_middle_that_ends_its_line_keeps_its_line_end(tmp_path, smol_path):
    """With the cursor inside a line, `--syntax-valid` may pass a middle that ends the line
    (`&Prox|y{` + `ie()\\n`: `y{…}` starts the next statement); `complete` then dropped that
    line end as a blank tail, and printed `ie()`, which does not parse (found by completing at
    random cursors in Go, JavaScript and Python files). A line end is a blank tail only where
    the cursor's line ends after the cursor."""
    from assistant.context.syntax import parses

    src = 'package main\n\nfunc main() {\n\tproxy := &Proxy{\n\t\tName: "x",\n\t}\n\t_ = proxy\n}\n'
    path = tmp_path / "p.go"
    path.write_text(src)
    args = ["complete", str(path), "-l", "4", "-c", "16", "--syntax-valid", "-n", "8", "-m", str(smol_path)]
    res = run_cli(*args, "--regex", r"ie\(\)\n", "--json")  # the model must write that middle
    text = json.loads(res.stdout)["text"]
    cursor = src.index("&Prox") + len("&Prox")
    assert text == "ie()\n" and parses(src[:cursor] + text + src[cursor:], "go"), (text, res.stderr)


def test_a_context_beyond_the_trained_length_is_warned(smol_path):
    """`--n-ctx 1000000` on the bundled Gemma (trained on 32768) took 18 GB and a minute before
    its first token, with no word; the warning names where the size was set."""
    over = run_cli("generate", "x", "-m", str(smol_path), "-n", "1", "--n-ctx", "8200")
    assert over.returncode == 0, over.stderr
    assert "option --n-ctx asks for a context of 8200 tokens and SmolLM2" in over.stderr, over.stderr
    assert "was trained on 8192" in over.stderr, over.stderr
    fits = run_cli("generate", "x", "-m", str(smol_path), "-n", "1", env={"ASSISTANT_N_CTX": "8192"})
    assert fits.returncode == 0 and "trained on" not in fits.stderr, fits.stderr
