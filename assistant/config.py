"""Settings: defaults < TOML config file (XDG config dir) < environment < CLI flags.

The config file is `$XDG_CONFIG_HOME/assistant/config.toml` (or the path in
ASSISTANT_CONFIG). Environment variables are `ASSISTANT_<FIELD>` in upper case, e.g.
ASSISTANT_COMPLETION_MODEL=/models/qwen2.5-coder-1.5b-q8_0.gguf. List fields take
comma-separated values from the environment.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import platformdirs

from .errors import UserError, reason
from .files import kind_of

APP = "assistant"


@dataclass
class Settings:
    completion_model: str | None = None  # GGUF path; None = bundled Gemma 3 270M (base)
    chat_model: str | None = None  # GGUF path; None = bundled SmolLM2-135M-Instruct
    model_dirs: list[str] = field(default_factory=list)  # folders `assistant models` lists
    n_gpu_layers: int = 0
    threads: int | None = None  # None = one per physical core this process may use
    n_ctx: int = 4096
    n_seq_max: int = 8
    n_batch: int = 512
    rpc_servers: list[str] = field(default_factory=list)
    ops_backend: str = "auto"  # auto (= numpy) | numpy | torch
    strategy: str = "greedy"
    max_tokens: int = 128
    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    seed: int | None = None
    # where each value that is not a default was set ("config file ~/.config/…"), for errors
    # found later (a strategy name is checked against the plugins)
    sources: dict[str, str] = field(default_factory=dict, compare=False, repr=False)


def config_path() -> Path:
    override = os.environ.get("ASSISTANT_CONFIG")
    if override:
        return Path(override).expanduser()
    return platformdirs.user_config_path(APP) / "config.toml"


def data_dir() -> Path:
    """Per-user data (calibrated thresholds, eval results, GGUF hashes)."""
    return _user_dir("ASSISTANT_DATA_DIR", platformdirs.user_data_path(APP), "data")


def cache_dir() -> Path:
    """Per-user caches (decode prices, n-gram stores, vocabulary tables): losing them costs time,
    so a folder that cannot be made stops nothing (a read-only HOME stopped every run): each
    cache is made when saved and rebuilt where it cannot be; `cache_problem` says why."""
    return Path(os.environ.get("ASSISTANT_CACHE_DIR") or platformdirs.user_cache_path(APP)).expanduser()


def cache_problem() -> str | None:
    """Why the cache folder cannot be made, for a warning; None where it can."""
    try:
        _user_dir("ASSISTANT_CACHE_DIR", cache_dir(), "cache")
    except UserError as exc:
        return str(exc)
    return None


def _user_dir(env: str, default: Path, what: str) -> Path:
    path = Path(os.environ.get(env) or default).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        why = reason(exc)
        raise UserError(f"cannot create the {what} folder {path} ({why}); set {env} to a writable folder") from None
    return path


# sizes llama.cpp would take silently (threads -2, a context of 0) and then do something else
_MINIMUM = {"threads": 1, "n_ctx": 16, "n_batch": 1, "n_seq_max": 1, "max_tokens": 0, "seed": 0}
# llama.cpp's own limits (GGML_MAX_N_THREADS, LLAMA_MAX_SEQ less the one kept back): past them
# it aborts the process (threads 10**20: std::bad_alloc) or refuses without naming the setting
_MAXIMUM = {"threads": 512, "n_seq_max": 255}
_CHOICES = {"ops_backend": ("auto", "numpy", "torch")}


def _coerce(name: str, value: Any, tp: Any, source: str) -> Any:
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    optional = type(None) in typing.get_args(tp)
    if optional and (value is None or (isinstance(value, str) and value.strip().lower() in ("", "none"))):
        return None
    base = args[0] if optional and args else tp
    try:
        if typing.get_origin(base) is list:
            if isinstance(value, str):
                return [v.strip() for v in value.split(",") if v.strip()]
            if not isinstance(value, list):
                raise ValueError(value)
            return [str(v) for v in value]
        if base is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)
            number = int(value)
            if number < _MINIMUM.get(name, number):
                raise UserError(f"{source}: {name} must be at least {_MINIMUM[name]}, got {number}")
            if number > _MAXIMUM.get(name, number):
                raise UserError(f"{source}: {name} must be at most {_MAXIMUM[name]} (llama.cpp's limit), got {number}")
            return number
        if base is float:
            return float(value)
        if base is str:
            if name in _CHOICES and str(value) not in _CHOICES[name]:
                raise UserError(f"{source}: {name} must be one of {', '.join(_CHOICES[name])}, got {value!r}")
            return str(value)
    except (TypeError, ValueError):
        raise UserError(f"{source}: {name} must be {getattr(base, '__name__', base)}, got {value!r}") from None
    return value


def load_settings(overrides: dict[str, Any] | None = None) -> Settings:
    """Resolve settings from every layer; `overrides` are CLI flags (None means not given)."""
    hints = typing.get_type_hints(Settings)
    names = {f.name for f in dataclasses.fields(Settings)} - {"sources"}
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}  # where each value that is not a default was set
    path = config_path()
    is_file = kind_of(path, "config file") == "file"
    if os.environ.get("ASSISTANT_CONFIG") and not is_file:  # named on purpose: a typo must not pass
        raise UserError(f"ASSISTANT_CONFIG names {path}, which is not a file")
    if is_file:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8-sig"))  # a BOM is no TOML
        except (tomllib.TOMLDecodeError, OSError, UnicodeDecodeError) as exc:
            raise UserError(f"config file {path}: {reason(exc)}") from None
        for key, value in data.items():
            key_n = key.replace("-", "_")
            if key_n not in names:
                raise UserError(f"config file {path}: unknown setting {key!r}")
            sources[key_n] = f"config file {path}"
            values[key_n] = _coerce(key_n, value, hints[key_n], sources[key_n])
    for name in names:
        env = os.environ.get(f"ASSISTANT_{name.upper()}")
        if env is not None:
            sources[name] = f"environment ASSISTANT_{name.upper()}"
            values[name] = _coerce(name, env, hints[name], sources[name])
    for name, value in (overrides or {}).items():
        if value is not None:
            sources[name] = f"option --{name.replace('_', '-')}"
            values[name] = _coerce(name, value, hints[name], sources[name])
    _check_sampling(values, sources)
    return Settings(**values, sources=sources)


def _check_sampling(values: dict[str, Any], sources: dict[str, str]) -> None:
    """Sampling settings from the config or the environment, checked where they are read: the
    request's own check said `top_p must be in (0, 1], got 7.0` and not where that 7 was set."""
    from . import engine  # noqa: F401  llama.cpp before numpy, which decoding loads (engine/__init__.py)
    from .decoding.request import check_sampling  # the one set of rules

    names = ("temperature", "top_k", "top_p", "min_p")
    for name in names:
        if values.get(name) is not None:
            try:
                check_sampling(**{n: values[name] if n == name else None for n in names})
            except UserError as exc:
                raise UserError(f"{sources[name]}: {exc}") from None
