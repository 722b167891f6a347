"""Constraints through llguidance: every strategy obeys them; bad grammars fail clearly."""

from __future__ import annotations

import json
import re

import jsonschema
import pytest
from conftest import ROOT, run_cli

from assistant import grammars
from assistant.constraints import ConstraintError, build
from assistant.decoding import Done, Request, Sampling
from assistant.registry import get_registry

SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 6}, "age": {"type": "integer", "maximum": 99}},
    "required": ["name", "age"],
    "additionalProperties": False,
}
LEFT_TO_RIGHT = sorted(s for s in get_registry().strategies() if s != "grammar-infill")


@pytest.mark.parametrize("strategy", LEFT_TO_RIGHT)
def test_json_schema_output_validates_for_every_strategy(service, strategy):
    model = service.model()
    constraint = build("json-schema", json.dumps(SCHEMA), model)
    options = {"corpus": str(ROOT / "assistant")} if strategy == "superposed" else {}
    req = Request(
        prompt="A user record as JSON: ", max_tokens=48, strategy=strategy, options=options, sampling=Sampling(seed=2)
    )
    done = [e for e in service.generate(req, constraint=constraint) if isinstance(e, Done)][0]
    assert done.finish_reason == "stop", (strategy, done.text)
    jsonschema.validate(json.loads(done.text), SCHEMA)


def test_shipped_grammars_compile_and_constrain(service):
    model = service.model()
    assert {"json.lark", "python_line.lark", "sql_select.lark", "tool_call.schema.json"} <= set(grammars.available())
    for name in grammars.available():
        kind = "json-schema" if name.endswith(".json") else "lark"
        c = build(kind, grammars.path(name).read_text(), model, origin=name)
        assert 0 < c.allowed().sum() < model.n_vocab, name
    sql = build("lark", grammars.path("sql_select.lark").read_text(), model)
    req = Request(prompt="-- names of all users\n", max_tokens=24)
    done = [e for e in service.generate(req, constraint=sql) if isinstance(e, Done)][0]
    assert done.text.upper().startswith("SELECT"), done.text
    # json: an object, as llama.cpp's json.gbnf gives (any value let the model write a number)
    as_json = build("lark", grammars.path("json.lark").read_text(), model)
    done = service.run(Request(prompt="A user record as JSON: ", max_tokens=48), constraint=as_json)
    assert done.finish_reason == "stop" and isinstance(json.loads(done.text), dict), done.text


def test_the_json_grammar_takes_what_json_loads_takes(service):
    """The shipped JSON grammar used Lark's common string, number and whitespace, which let a
    string hold a raw line end (superposed wrote `{"\\n\\nThe user is ...`), and took +1, 1., .5,
    01, a tab in a string and a form feed: text no JSON parser reads. Each text here is taken
    whole by the grammar exactly when json.loads reads it as an object. Whitespace is bounded
    as llama.cpp's json.gbnf bounds it (one space, or a line end and up to 20 indentation
    characters): with any amount allowed, "1, 2, 3," gave `{` and blank lines to the limit."""
    from assistant.constraints import ConstraintError

    model = service.model()
    source = grammars.path("json.lark").read_text()

    def taken(text: str) -> bool:
        c = build("lark", source, model)
        try:
            for token in model.tokenize(text):
                c.advance(token)
        except ConstraintError:
            return False
        return c.complete()

    texts = ['{"a": 1}', '{"a\n": 1}', '{"a": +1}', '{"a": 1.}', '{"a": .5}', '{"a": 01}', '{"a": "\t"}']
    texts += ['{\f"a": 1}', '{"a": -0.5e+3, "b": [true, null, "\\u00e9\\n\\/"]}', '{ "é": {} }', "[1]"]
    texts += ['{\n    "a": [\n        1,\n        2\n    ]\n}', '{\r\n\t"a": 1\r\n}']
    for text in texts:
        try:
            is_json = isinstance(json.loads(text), dict)
        except ValueError:
            is_json = False
        assert taken(text) == is_json, text
    for padded in ("{" + "\n" * 30 + "}", '{"a":  1}', '{"a": 1' + " " * 21 + "}", "{\n" + " " * 21 + '"a": 1}'):
        assert isinstance(json.loads(padded), dict) and not taken(padded), padded
    assert taken("{\n" + " " * 20 + '"a": 1}')


def _syntax_error(language: str, text: str) -> bool:
    """Whether Python, or SQLite (a missing table is no syntax error), refuses the text."""
    import ast
    import sqlite3

    if language == "python":
        try:
            ast.parse(text)
        except SyntaxError:
            return True
        return False
    try:
        sqlite3.connect(":memory:").execute(f"EXPLAIN {text}")
    except sqlite3.OperationalError as exc:
        return "syntax error" in str(exc) or "unrecognized token" in str(exc)
    return False


@pytest.mark.parametrize(
    ("grammar", "language", "valid", "glued"),
    [
        (
            "sql_select.lark",
            "sql",
            ["SELECT id FROM users ORDER BY id DESC;", "select a FROM t WHERE b IN (1, 2) AND c IS NOT NULL"],
            ["SELECTid FROM users", "SELECT * FROMusers", "SELECT a FROM t WHERE x = 1 ANDy = 2"],
        ),
        (
            "python_line.lark",
            "python",
            ["from os import path as p", "y = [x for x in range(3) if x]", "v = x is not None and not y"],
            ["from os importpath", "y = [x for x inrange(3)]", "z = a andb", "v = x isNone"],
        ),
    ],
)
def test_shipped_grammars_keep_keywords_apart_from_names(service, grammar, language, valid, glued):
    """The lexer takes whatever lexeme fits where it is, so a keyword ran into the name after
    it ("SELECTid", "a andb"): text the grammar took that SQL or Python refuses."""
    source, model = grammars.path(grammar).read_text(), service.model()
    for text in valid:
        assert _accepts(source, model, text) and not _syntax_error(language, text), text
    for text in glued:
        assert _syntax_error(language, text) and not _accepts(source, model, text), text


def _accepts(source: str, model, text: str) -> bool:
    """Whether the Lark grammar `source` lets the model write `text` whole."""
    c = build("lark", source, model)
    for token in model.tokenize(text):
        allowed = c.allowed()
        if allowed is not None and not allowed[token]:
            return False
        c.advance(token)
    return c.complete()


def test_sql_keywords_are_in_one_case(service):
    """Keywords took any mix of cases, and a constrained model wrote `sElEcT`, one likely
    token at a time; capitals, lower case and capitalised remain."""
    source, model = grammars.path("sql_select.lark").read_text(), service.model()
    for text in ("SELECT a FROM t WHERE b IS NULL", "select a from t where b is null", "Select a From t"):
        assert _accepts(source, model, text), text
    for text in ("sElEcT a FROM t", "SELECT a fROM t", "SELECT a FROM t WHERE b iS NULL"):
        assert not _accepts(source, model, text), text


def test_a_python_line_ends_where_the_model_ends_it(service, smol_path, tmp_path):
    """python_line allowed no newline, so a model that had finished its line was made to go on
    to the token limit ('0  * len(xs)  + 1  * ...'): the line ends with its newline, which
    `complete` drops (the file has one)."""
    line = build("lark", grammars.path("python_line.lark").read_text(), service.model())
    done = [e for e in service.generate(Request(prompt="import os\nx = ", max_tokens=24), constraint=line)][-1]
    assert done.finish_reason == "stop" and done.text.endswith("\n") and done.text.count("\n") == 1, done
    src = tmp_path / "a.py"
    src.write_text("import os\nx = \n")
    res = run_cli(
        "complete",
        str(src),
        "-l",
        "2",
        "-c",
        "5",
        "--grammar",
        "python_line",
        "-n",
        "24",
        "--json",
        "-m",
        str(smol_path),
    )
    out = json.loads(res.stdout)
    assert out["finish_reason"] == "stop" and out["text"] == done.text.rstrip("\n"), (out, done.text)


def test_regex_constraint(service):
    c = build("regex", r"[0-9]{3}-[0-9]{4}", service.model())
    done = [e for e in service.generate(Request(prompt="Phone: ", max_tokens=12), constraint=c)][-1]
    assert done.finish_reason == "stop"
    assert re.fullmatch(r"[0-9]{3}-[0-9]{4}", done.text), done.text


def test_a_gbnf_grammar_works_as_in_llama_cpp(service, tmp_path):
    """llama.cpp's users have GBNF grammars (`root ::= ...`); they were refused as bad Lark."""
    c = build("lark", 'root ::= answer\nanswer ::= "yes" | "no"\n', service.model(), origin="yn.gbnf")
    done = [e for e in service.generate(Request(prompt="Is water wet? Answer:", max_tokens=4), constraint=c)][-1]
    assert done.text in ("yes", "no") and done.finish_reason == "stop", done
    with pytest.raises(ConstraintError, match="invalid GBNF grammar: Rule 'thing' not found"):
        build("lark", "root ::= thing\n", service.model())


def test_a_run_of_whitespace_is_bounded_where_the_grammar_allows_any(service, gemma_service):
    """A grammar whose whitespace may go anywhere in any amount (Lark's `%ignore`) let a model
    that did not know how to go on pad to the token limit: the SQL grammar after "Hello" gave
    `inner \\n\\n \\n\\n \\n\\n…` to the end. Once the text ends in three line ends (or 64
    blank characters) a token of whitespace alone is refused, unless the grammar allows nothing
    else; tokens are followed across forks."""
    from assistant.constraints import MAX_BLANK_CHARS, MAX_BLANK_LINES

    model = service.model()
    newline, space, b = (model.tokenize(t)[0] for t in ("\n", " ", "b"))
    c = build("lark", 'start: "a" "b"\n%ignore /[ \\t\\r\\n]+/\n', model)
    for token in model.tokenize("a"):
        c.advance(token)
    for _ in range(MAX_BLANK_LINES):
        assert c.allowed()[newline] and c.allowed()[space]
        c.advance(newline)
    fork = c.fork()
    for state in (c, fork):
        assert not state.allowed()[newline] and not state.allowed()[space] and state.allowed()[b]
    fork.advance(b)
    assert fork.complete() and c.allowed()[b] and not c.allowed()[newline]
    # where only whitespace may come, it may
    only = build("lark", f'start: /[ ]{{{MAX_BLANK_CHARS + 8},200}}/ "b"\n', model)
    for _ in range(MAX_BLANK_CHARS + 1):
        assert only.allowed()[space]
        only.advance(space)
    # the bundled model under the SQL grammar, where it padded
    sql = build("lark", grammars.path("sql_select.lark").read_text(), gemma_service.model())
    done = gemma_service.run(Request(prompt="Hello", max_tokens=40), constraint=sql)
    runs = re.findall(r"\s+", done.text)
    assert max(run.count("\n") for run in runs) <= 2 * MAX_BLANK_LINES, done.text
    assert sum(map(len, runs)) < len(done.text) / 2, done.text


def test_a_match_cut_by_the_token_limit_is_said_to_be_incomplete(service):
    """A JSON object cut at --max-tokens looked like output (exit 0, no word); now a note says
    the text is incomplete, and only then."""
    c = build("regex", r"[0-9]{3}-[0-9]{4}", service.model(), origin="--regex")
    short = [e for e in service.generate(Request(prompt="Phone: ", max_tokens=3), constraint=c)][-1]
    assert short.finish_reason == "length" and not re.fullmatch(r"[0-9]{3}-[0-9]{4}", short.text)
    assert any("before the regex in --regex was matched" in n for n in short.stats["notes"]), short.stats
    c = build("regex", r"[0-9]{3}", service.model())
    whole = [e for e in service.generate(Request(prompt="Phone: ", max_tokens=3), constraint=c)][-1]
    assert re.fullmatch(r"[0-9]{3}", whole.text) and "notes" not in whole.stats, whole


def test_a_match_that_cannot_go_on_or_was_stopped_is_said_to_be_incomplete(service):
    """A grammar with a rule no text matches let the run end mid-match as if it were whole
    (llguidance then allows only the end: `def`, finish 'stop', no word); a stop string
    cutting a match was as silent. Both now say the text is incomplete; a whole match does not."""
    model = service.model()

    def run(constraint, **kw):
        return [e for e in service.generate(Request(prompt="x = ", max_tokens=10, **kw), constraint=constraint)][-1]

    dead = run(build("lark", 'start: "def" b\nb: /[^\\s\\S]/\n', model, origin="dead.lark"))
    assert dead.text == "def" and dead.finish_reason == "stop"
    assert dead.stats["notes"] == [
        "the text ended before the grammar in dead.lark was matched: "
        "nothing can follow it (a rule no text matches?); the text is incomplete"
    ]
    cut = run(build("regex", "[0-9]+x", model, origin="--regex"), stop=["0"])
    assert re.fullmatch("[1-9]+", cut.text) and any("a stop ended it" in n for n in cut.stats["notes"]), cut
    whole = run(build("regex", "[0-9]+", model), stop=["0"])
    assert re.fullmatch("[1-9]+", whole.text) and "notes" not in whole.stats, whole
    assert not build("lark", 'start: "a" | b\nb: /[^\\s\\S]/\n', model).dead_end()  # a dead branch beside a live one


@pytest.mark.parametrize(
    "kind, source, message",
    [
        ("lark", "start: foo", "unknown name"),
        ("regex", r"[^\s\S]x", "the regex in s.json matches no text at all"),  # was an empty text, finish 'stop'
        ("lark", 'start: "a" (', "invalid grammar"),
        # one line, where it points: llguidance's own wrapper grammar (`start: /[a-/`) and carets
        ("regex", "[a-", r'^invalid regex in s\.json: unclosed character class at column 1 of "\[a-"$'),
        ("regex", "ab[z-a]", r"^invalid regex in s\.json: invalid character class range, .* at column 4 of"),
        ("regex", r"a\b", r"^invalid regex in s\.json: lookarounds not supported yet; .* /a\\b/$"),
        ("regex", "ab\\", "ends in a backslash that escapes nothing"),  # llguidance dropped it: "ab" matched
        ("json-schema", '{"type": "bogus"}', "bogus"),
        ("json-schema", "{not json", r"^JSON schema in s\.json: not valid JSON \(Expecting property name"),
        # each file given to the other flag: "missing field `grammars`", and no word of a grammar
        ("lark", '{"type": "object"}', r"^grammar in s\.json: it is JSON, not Lark or GBNF; .* --json-schema$"),
        (
            "json-schema",
            'start: "a"\n',
            r"^JSON schema in s\.json: not valid JSON .*; a Lark or GBNF grammar goes to --grammar$",
        ),
        ("json-schema", 'root ::= "a"\n', "a Lark or GBNF grammar goes to --grammar$"),
        # text forced without end: llguidance's parser gave up at the first token, in 40 lines
        ("lark", 'root ::= "a" root\n', r"^invalid grammar in s\.json: parser error: Too many items .* without end\)$"),
        ("lark", 'start: a\na: "(" a ")"\n', "Too many items"),
    ],
)
def test_invalid_constraints_are_clear_errors(service, kind, source, message):
    with pytest.raises(ConstraintError, match=message):
        build(kind, source, service.model(), origin="s.json")


def test_cli_constraint_flags(tmp_path, smol_path):
    schema = tmp_path / "s.json"
    schema.write_text(json.dumps(SCHEMA))
    res = run_cli(
        "generate", "User as JSON: ", "--model", str(smol_path), "--json-schema", str(schema), "-n", "48", "--json"
    )
    assert res.returncode == 0, res.stderr
    jsonschema.validate(json.loads(json.loads(res.stdout)["text"]), SCHEMA)
    bad = tmp_path / "bad.lark"
    bad.write_text("start: missing_rule\n")
    res = run_cli("generate", "x", "--model", str(smol_path), "--grammar", str(bad))
    assert res.returncode == 2 and "missing_rule" in res.stderr and "Traceback" not in res.stderr
    res = run_cli("generate", "x", "--model", str(smol_path), "--regex", "a", "--grammar", str(bad))
    assert res.returncode == 2 and "only one of" in res.stderr


def test_a_grammar_whose_parser_gives_up_midway_is_one_line(tmp_path, smol_path):
    """Once the text took the branch that forces "a" without end, llguidance's parser gave up:
    a warning of its own on stderr, then its parser state and the whole grammar (40 lines)."""
    late = tmp_path / "late.lark"
    late.write_text('start: "y" b | "yx"\nb: "a" b\n')
    res = run_cli("generate", "Answer: ya", "--model", str(smol_path), "--grammar", str(late), "-n", "8")
    assert res.returncode == 2 and res.stdout.startswith("y"), (res.stdout, res.stderr)
    assert re.fullmatch(
        r"assistant: error: grammar in .*late\.lark failed at token \d+: parser error: Too many items.*\n", res.stderr
    )


def test_shipped_grammars_are_usable_by_name(tmp_path):
    """Installed from PyPI there is no grammars/ folder to point a path at: a shipped grammar
    or schema is found by its name, with or without its suffix; a wrong name lists them. A
    file of that name in the current folder still comes first."""
    from assistant.constraints import read_source

    assert read_source("lark", "json") == read_source("lark", "json.lark") == grammars.path("json.lark").read_text()
    assert read_source("json-schema", "tool_call") == grammars.path("tool_call.schema.json").read_text()
    with pytest.raises(ConstraintError, match="shipped, usable by name: json.lark, python_line.lark"):
        read_source("lark", "nope")
    # a shipped file of the other kind: the flag it goes to (it was 'not found')
    with pytest.raises(ConstraintError, match="tool_call is a shipped JSON schema: give it to --json-schema"):
        read_source("lark", "tool_call")
    with pytest.raises(ConstraintError, match="sql_select is a shipped grammar: give it to --grammar"):
        read_source("json-schema", "sql_select")
    own = tmp_path / "json"
    own.write_text('start: "mine"\n')
    assert read_source("lark", own) == 'start: "mine"\n'
