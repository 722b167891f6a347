"""Packaging: the wheel maps plugins/, tui/, grammars/ into the `assistant` namespace."""

from __future__ import annotations

import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

from conftest import ROOT


def test_wheel_installs_into_fresh_venv_and_imports(tmp_path):
    dist, src = tmp_path / "dist", tmp_path / "src"
    # from a copy without build/: setuptools puts whatever an earlier build left there in the
    # wheel (a module since moved, or a package the list no longer names, seemed shipped)
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns("build", "*.egg-info", ".*", "__pycache__"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(src)],
        check=True,
        capture_output=True,
    )
    wheel = next(dist.glob("*.whl"))
    env_dir = tmp_path / "venv"
    # system site packages provide the (compiled) dependencies; the wheel itself goes in the venv
    venv.EnvBuilder(with_pip=True, system_site_packages=True).create(env_dir)
    py = env_dir / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", str(wheel)], check=True, capture_output=True)
    script = (
        "import assistant, assistant.plugins, assistant.tui, assistant.grammars, assistant.engine\n"
        "import assistant.plugins.greedy, assistant.plugins.sample, assistant.cli\n"
        "from importlib.metadata import entry_points\n"
        "print(assistant.__file__)\n"
        "print(assistant.plugins.__file__)\n"
        "print(assistant.grammars.path('json.lark').is_file())\n"
        "print(sorted(e.name for e in entry_points(group='assistant')))\n"
    )
    out = subprocess.run(
        [str(py), "-c", script], check=True, capture_output=True, text=True, cwd=tmp_path
    ).stdout.splitlines()
    site = str(env_dir)
    assert out[0].startswith(site) and out[1].startswith(site), out
    assert out[2] == "True"
    assert "greedy" in out[3] and "sample" in out[3]
    names = zipfile.ZipFile(wheel).namelist()
    assert "assistant/plugins/greedy.py" in names and "assistant/grammars/json.lark" in names
    packages = {str(p.parent.relative_to(ROOT)).replace("/", ".") for p in (ROOT / "assistant").rglob("__init__.py")}
    missing = [p for p in sorted(packages) if f"{p.replace('.', '/')}/__init__.py" not in names]
    assert not missing, f"packages left out of the wheel (pyproject's list): {missing}"
    assert not any(n.startswith(("plugins/", "tui/", "grammars/")) for n in names)  # nothing generic


def test_only_the_engine_imports_llama_cpp():
    offenders = []
    for path in (ROOT / "assistant").rglob("*.py"):
        if "engine" in path.relative_to(ROOT / "assistant").parts:
            continue
        text = path.read_text()
        if "import llama_cpp" in text or "from llama_cpp" in text:
            offenders.append(str(path))
    for folder in ("plugins", "tui", "grammars"):
        for path in (ROOT / folder).rglob("*.py"):
            if "llama_cpp" in path.read_text():
                offenders.append(str(path))
    assert offenders == []
    assert Path(ROOT / "pyproject.toml").is_file()
