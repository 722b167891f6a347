"""Stop rules and the infill suffix guard, fed token by token as a strategy would."""

from __future__ import annotations

from assistant.context.infill import SuffixGuard
from assistant.decoding.request import Request
from assistant.decoding.stops import StopRules


def feed(rules: StopRules, pieces: list[str]):
    """Return (shown text, finish_reason, final text) as Run would produce them."""
    text, shown, emitted = "", "", 0
    for piece in pieces:
        text += piece
        reason, end = rules.check(text)
        if reason:
            end = max(end, emitted)
            return shown + text[emitted:end], reason, text[:end]
        if end > emitted:
            shown += text[emitted:end]
            emitted = end
    end = max(rules.finish(text), emitted)
    return shown + text[emitted:end], None, text[:end]


def test_stop_string_split_across_tokens_is_never_shown():
    rules = StopRules(Request(stop=["\nEND"]))
    shown, reason, final = feed(rules, ["x = 1", "\n", "EN", "D", "more"])
    assert reason == "stop" and final == "x = 1" and shown == "x = 1"


def test_partial_stop_string_that_does_not_complete_is_released():
    rules = StopRules(Request(stop=["</s>"]))
    shown, reason, final = feed(rules, ["a <", "/b> c"])
    assert reason is None and final == "a </b> c" == shown


def test_n_indent_cuts_the_dedented_line_like_llama_server():
    rules = StopRules(Request(n_indent=4))
    shown, reason, final = feed(rules, ["x = 1\n", "    y = 2\n", "\n", "  ", "z = 3\n"])
    assert reason == "stop"
    assert final == "x = 1\n    y = 2\n\n  "  # cut at the first non-blank character of the line
    assert shown == final


def test_suffix_guard_single_line_drops_repeated_rest_of_line():
    guard = SuffixGuard(")\nprint(x)\n")
    rules = StopRules(Request(), guard)
    shown, reason, final = feed(rules, ['"hello"', ")", "\nprint"])
    assert reason == "stop" and final == '"hello"' and shown == final


def test_suffix_guard_multi_line_stops_before_the_suffix_line():
    guard = SuffixGuard("\n    return total\n")
    rules = StopRules(Request(), guard)
    pieces = ["\n    for x in xs:\n", "        total += x\n", "    return", " total\n", "extra"]
    shown, reason, final = feed(rules, pieces)
    assert reason == "stop"
    # the suffix starts with the newline that ends the last line: none is added before it
    assert final == "\n    for x in xs:\n        total += x"
    assert "return" not in shown and shown == final
    # the same code spaced differently is the same repeat; at another indentation it is not
    rules = StopRules(Request(), SuffixGuard("\n    return total / len(xs)\n"))
    shown, reason, final = feed(rules, ["        total += x\n", "    return total/", "len(xs)\n", "x"])
    assert reason == "stop" and final == "        total += x" and shown == final
    rules = StopRules(Request(), SuffixGuard("\n    return total / len(xs)\n"))
    shown, reason, final = feed(rules, ["        if x:\n", "            return total/len(xs)\n"])
    assert reason is None and final == "        if x:\n            return total/len(xs)", final


def test_suffix_guard_holds_back_blank_lines_until_text_follows():
    guard = SuffixGuard("\n\ndef sub(a, b):\n    return a - b\n")
    rules = StopRules(Request(), guard)
    shown, reason, final = feed(rules, ["return a + b", "\n", "\n", "def", " sub(a, b):\n"])
    assert reason == "stop" and final == "return a + b" and shown == final
    rules = StopRules(Request(), SuffixGuard("\n\ndef sub(a, b):\n"))
    shown, reason, final = feed(rules, ["x = 1\n", "\n", "    ", "y = 2\n"])  # blank lines inside stay
    assert reason is None and final == "x = 1\n\n    y = 2" and shown == final
    rules = StopRules(Request(), SuffixGuard(""))  # end of file: nothing follows, keep the newline
    assert feed(rules, ["x = 1\n"])[2] == "x = 1\n"


def test_suffix_guard_on_end_of_generation_trims_a_partial_repeat():
    guard = SuffixGuard("):\n    pass\n")
    rules = StopRules(Request(), guard)
    shown, reason, final = feed(rules, ["a, b", ")"])
    assert reason is None and final == "a, b" and shown == "a, b"


def test_the_end_of_the_block_is_no_way_round_the_syntax_check():
    """`complete --syntax-valid` stops only where the file parses, and the n_indent rule (the
    cursor's block ended) stopped without asking: `]` went into `s[end:e|nd + 1]` (found by
    completing at random cursors in json/decoder.py). The block's end is judged as any end:
    the text up to it when that parses, else nothing (no valid infill)."""
    from assistant.context.syntax import SyntaxGuard

    prefix = "def scan(s, end):\n    if s:\n        nextchar = s[end:e"
    suffix = "nd + 1]\n    return nextchar\n"

    def rules():
        return StopRules(Request(n_indent=8), SyntaxGuard(prefix, suffix, "python", inner=SuffixGuard(suffix)))

    bad = rules()
    shown, reason, final = feed(bad, ["]", "\n", "    ", "return"])  # the model leaves the block
    assert reason == "stop" and final == "" and bad.no_valid_end, (shown, final)
    # a middle that parses stops at its line's end before the block can end; without the
    # syntax check the suffix guard trims the block's end as it trims any end
    multi = StopRules(Request(n_indent=8), SuffixGuard("\n    return x\n"))
    _, reason, final = feed(multi, ["y = 1", "\n", "\n", "    ", "return"])
    assert reason == "stop" and final == "y = 1", final
