"""Shared fixtures: the real bundled models through llama.cpp (no mocked engine)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from assistant import bundled
from assistant.config import Settings
from assistant.engine import Context, Model

ROOT = Path(__file__).resolve().parent.parent


def registry_with(*strategies, plugin: str = "test-plugin", only=None):
    """The installed plugins (or `only` those) and an in-process plugin registering
    `strategies`, as a third-party one would."""
    import types

    from assistant import hookimpl
    from assistant.registry import Registry

    def register_strategies(register):
        for cls in strategies:
            register(cls)

    registry = Registry(only=only)
    registry.add(types.SimpleNamespace(register_strategies=hookimpl(register_strategies)), plugin)
    return registry


@pytest.fixture(scope="session")
def smol_path() -> Path:
    return bundled.chat_model_path()


@pytest.fixture(scope="session")
def gemma_path() -> Path:
    return bundled.completion_model_path()


@pytest.fixture(scope="session")
def smol(smol_path) -> Model:
    return Model(smol_path)


@pytest.fixture(scope="session")
def gemma(gemma_path) -> Model:
    return Model(gemma_path)


@pytest.fixture()
def smol_ctx(smol):
    ctx = Context(smol, n_ctx=1024, n_seq_max=6, n_batch=256)
    yield ctx
    ctx.close()


@pytest.fixture(scope="session")
def service(smol_path):
    """A Service on the small chat model (fast) used as completion model."""
    from assistant.service import Service

    return Service(Settings(completion_model=str(smol_path), n_ctx=1024))


@pytest.fixture(scope="session")
def gemma_service():
    """A Service on the bundled completion model (Gemma 3 270M: a 262k vocabulary with
    byte-fallback tokens, which the small chat model's never needs for these prompts)."""
    from assistant.service import Service

    return Service(Settings(n_ctx=2048))


@pytest.fixture()
def isolated_env(tmp_path, monkeypatch):
    """No user config or env settings leak into a test."""
    for key in list(os.environ):
        if key.startswith("ASSISTANT_"):
            monkeypatch.delenv(key)
    (tmp_path / "config.toml").write_text("")  # empty: the user's own config stays out
    monkeypatch.setenv("ASSISTANT_CONFIG", str(tmp_path / "config.toml"))
    monkeypatch.setenv("ASSISTANT_DATA_DIR", str(tmp_path / "data"))
    return tmp_path


def run_cli(*args: str, env: dict | None = None, input: str | None = None, cwd=None, timeout=300):
    """Run the real `assistant` console entry point in a subprocess."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("ASSISTANT_")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "assistant", *args],
        capture_output=True,
        text=True,
        env=full_env,
        input=input,
        cwd=cwd,
        timeout=timeout,
    )
