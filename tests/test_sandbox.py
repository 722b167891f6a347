"""The sandbox really limits what generated code can do."""

from assistant.sandbox import network_isolated, run_python


def test_pass_fail_timeout_memory():
    assert run_python("assert 1 + 1 == 2").status == "passed"
    assert run_python("assert 1 + 1 == 3").status == "failed"
    slow = run_python("while True:\n    pass", timeout=1)
    assert slow.status == "timeout" and slow.seconds < 5
    assert run_python("x = bytearray(3 * 1024 ** 3)", memory_mb=256).status == "failed"


def test_runs_in_a_scrubbed_temp_dir():
    res = run_python("import os\nprint(os.getcwd())\nprint(sorted(os.environ))")
    cwd, env = res.stdout.splitlines()
    assert "assistant-sandbox-" in cwd
    assert "ASSISTANT" not in env and "PYTHONPATH" not in env


def test_no_network_where_the_os_allows():
    res = run_python("import socket\nsocket.create_connection(('127.0.0.1', 9), timeout=2)")
    assert res.status == "failed"
    if network_isolated():
        assert "unreachable" in res.stderr or "Errno 101" in res.stderr
