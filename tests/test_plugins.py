"""Third-party plugins: a real package with its own pyproject.toml and entry point, installed
with pip, then listed and used by the real CLI. Broken plugins are reported and skipped."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from conftest import run_cli

PLUGIN_SRC = """
from assistant import hookimpl
from assistant.decoding import Strategy, token_by_token


class SecondBest(Strategy):
    name = "second-best"
    summary = "Always the second most likely token (a third-party test plugin)."

    def generate(self, run):
        def choose(logits):
            _, ids = run.ops.top_k(logits, 2)
            return int(ids[1])

        return token_by_token(run, choose)


@hookimpl
def register_strategies(register):
    register(SecondBest)
"""


def make_package(root, dist, module, source):
    root.mkdir()
    (root / "pyproject.toml").write_text(
        textwrap.dedent(
            f"""
            [build-system]
            requires = ["setuptools>=61"]
            build-backend = "setuptools.build_meta"

            [project]
            name = "{dist}"
            version = "0.1.0"

            [project.entry-points.assistant]
            {module} = "{module}"

            [tool.setuptools]
            py-modules = ["{module}"]
            """
        )
    )
    (root / f"{module}.py").write_text(source)
    return root


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory):
    base = tmp_path_factory.mktemp("plugins")
    site = base / "site"
    good = make_package(base / "good", "assistant-second-best", "assistant_second_best", PLUGIN_SRC)
    bad = make_package(base / "bad", "assistant-broken", "assistant_broken", "import not_a_real_module_xyz\n")
    for pkg in (good, bad):
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(pkg)],
            check=True,
            capture_output=True,
        )
    return site


def test_third_party_strategy_is_listed_and_used(plugin_site, smol_path):
    env = {"PYTHONPATH": str(plugin_site)}
    listed = run_cli("strategies", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    names = [s["name"] for s in json.loads(listed.stdout)]
    assert {"greedy", "sample", "second-best"} <= set(names)
    # the broken plugin is reported by name and skipped
    assert "assistant_broken" in listed.stderr and "skipped" in listed.stderr

    args = ["generate", "def hello():", "--model", str(smol_path), "--max-tokens", "8", "--json"]
    third = run_cli(*args, "--strategy", "second-best", env=env)
    greedy = run_cli(*args, env=env)
    assert third.returncode == 0, third.stderr
    out, ref = json.loads(third.stdout), json.loads(greedy.stdout)
    assert out["strategy"] == "second-best" and out["stats"]["generated_tokens"] > 0
    assert out["text"] != ref["text"]


def test_plugin_filter_env(plugin_site):
    env = {"PYTHONPATH": str(plugin_site), "ASSISTANT_PLUGINS": "greedy"}
    listed = run_cli("strategies", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    assert [s["name"] for s in json.loads(listed.stdout)] == ["greedy"]
    assert "assistant_broken" not in listed.stderr
    typo = run_cli("strategies", "--json", env={**env, "ASSISTANT_PLUGINS": "greedy,greedyy"})
    assert [s["name"] for s in json.loads(typo.stdout)] == ["greedy"]  # a name no plugin has is said, not lost
    assert "plugin 'greedyy' skipped: ASSISTANT_PLUGINS names it, but no installed plugin" in typo.stderr
    # a strategy the limit left out: the error says the user's own limit did it (set in a shell
    # long ago, it read as if adadec were not installed)
    left_out = run_cli("generate", "x", "-s", "adadec", "-n", "1", env=env)
    assert left_out.returncode == 2, left_out.stderr
    assert "unknown strategy 'adadec'; available: greedy; ASSISTANT_PLUGINS=greedy limits" in left_out.stderr


CLASH_SRC = '''
from assistant import hookimpl
from assistant.decoding import Strategy, token_by_token


class NotGreedy(Strategy):
    name = "greedy"
    summary = "A second 'greedy': the second most likely token."

    def generate(self, run):
        return token_by_token(run, lambda logits: int(run.ops.top_k(logits, 2)[1][1]))


def generate():
    """A second 'generate'."""
    print("not the built-in generate")


@hookimpl
def register_strategies(register):
    register(NotGreedy)


@hookimpl
def register_commands(register):
    register(generate)
'''


def test_a_plugin_cannot_replace_a_builtin_strategy_or_command(tmp_path, smol_path):
    """pluggy calls the last-installed plugin first, so a third-party 'greedy' silently replaced
    the built-in one (every bench's baseline with it), and a 'generate' command the CLI's own.
    Built-ins now keep their names and the other registration is reported."""
    site = tmp_path / "site"
    pkg = make_package(tmp_path / "clash", "assistant-clash", "assistant_clash", CLASH_SRC)
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(pkg)],
        check=True,
        capture_output=True,
    )
    args = ["generate", "def hello():", "--model", str(smol_path), "-n", "8", "--json"]
    plain = run_cli(*args)
    clash = run_cli(*args, env={"PYTHONPATH": str(site)})
    assert clash.returncode == 0, clash.stderr
    assert json.loads(clash.stdout)["text"] == json.loads(plain.stdout)["text"]
    assert "plugin 'assistant_clash': its strategy 'greedy' is ignored: plugin 'greedy' registers" in clash.stderr
    assert "plugin command 'generate' ignored: the name is taken" in clash.stderr
    listed = run_cli("strategies", "--json", env={"PYTHONPATH": str(site)})
    (greedy,) = [s for s in json.loads(listed.stdout) if s["name"] == "greedy"]
    assert greedy["summary"].startswith("Always take the most likely")
