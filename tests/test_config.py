"""Settings layering: defaults < config file < environment < flags; clear errors."""

from __future__ import annotations

import pytest

from assistant.config import Settings, load_settings
from assistant.errors import UserError


def test_layers(isolated_env, monkeypatch):
    cfg = isolated_env / "config.toml"
    assert load_settings() == Settings()
    cfg.write_text('max_tokens = 99\nthreads = 3\nmodel_dirs = ["/a", "/b"]\nstrategy = "sample"\n')
    s = load_settings()
    assert (s.max_tokens, s.threads, s.model_dirs, s.strategy) == (99, 3, ["/a", "/b"], "sample")
    monkeypatch.setenv("ASSISTANT_MAX_TOKENS", "7")
    monkeypatch.setenv("ASSISTANT_MODEL_DIRS", "/x,/y")
    s = load_settings()
    assert (s.max_tokens, s.threads, s.model_dirs) == (7, 3, ["/x", "/y"])
    s = load_settings({"max_tokens": 5, "threads": None})
    assert (s.max_tokens, s.threads) == (5, 3)


def test_errors_name_the_source(isolated_env, monkeypatch):
    cfg = isolated_env / "config.toml"
    cfg.write_text("max_tokens = 'lots'\n")
    with pytest.raises(UserError, match="config file .*max_tokens"):
        load_settings()
    cfg.write_text("colour = 1\n")
    with pytest.raises(UserError, match="unknown setting 'colour'"):
        load_settings()
    cfg.write_text("max_tokens = [\n")
    with pytest.raises(UserError, match="config file"):
        load_settings()
    cfg.write_text("")
    monkeypatch.setenv("ASSISTANT_N_CTX", "big")
    with pytest.raises(UserError, match="ASSISTANT_N_CTX"):
        load_settings()
    cfg.unlink()  # a config file named on purpose must be there: a typo must not pass silently
    with pytest.raises(UserError, match=r"ASSISTANT_CONFIG names .*config\.toml, which is not a file"):
        load_settings()


def test_sizes_llama_cpp_would_misread_are_refused(isolated_env, monkeypatch):
    """`--threads -2` or a context of 0 went to llama.cpp as given, which then did something
    else without a word."""
    with pytest.raises(UserError, match="option --threads: threads must be at least 1, got -2"):
        load_settings({"threads": -2})
    with pytest.raises(UserError, match="option --threads: threads must be at least 1, got 0"):
        load_settings({"threads": 0})
    monkeypatch.setenv("ASSISTANT_N_CTX", "0")
    with pytest.raises(UserError, match="ASSISTANT_N_CTX: n_ctx must be at least 16"):
        load_settings()
    monkeypatch.setenv("ASSISTANT_N_CTX", "512")
    assert load_settings({"threads": 1}).n_ctx == 512 and load_settings().threads is None


def test_sizes_past_llama_cpps_limits_are_refused_where_they_were_set(isolated_env, monkeypatch):
    """`--threads 99999999999999999999` aborted the process inside llama.cpp (std::bad_alloc,
    exit 134); n_seq_max 300 was refused by the engine without naming where it was set."""
    for threads in (513, 10**20):
        with pytest.raises(UserError, match=f"option --threads: threads must be at most 512 .*got {threads}"):
            load_settings({"threads": threads})
    assert load_settings({"threads": 512}).threads == 512
    monkeypatch.setenv("ASSISTANT_N_SEQ_MAX", "300")
    with pytest.raises(UserError, match="environment ASSISTANT_N_SEQ_MAX: n_seq_max must be at most 255"):
        load_settings()


def test_a_bad_sampling_setting_names_where_it_was_set(isolated_env, monkeypatch):
    """`top_p = 7` in the config or `ASSISTANT_TEMPERATURE=-1` was refused only when a request
    was checked, as `top_p must be in (0, 1]`: nothing said it came from the config."""
    cfg = isolated_env / "config.toml"
    cfg.write_text("top_p = 7\n")
    with pytest.raises(UserError, match=r"config file .*config\.toml: top_p must be in \(0, 1\], got 7"):
        load_settings()
    cfg.write_text("min_p = 0.1\ntop_k = 0\n")  # within their ranges (top_k 0 keeps all)
    assert (load_settings().min_p, load_settings().top_k) == (0.1, 0)
    for name, value, message in (
        ("TEMPERATURE", "-1", "temperature must be a finite number >= 0"),
        ("MIN_P", "nan", "min_p must be in"),
        ("SEED", "-1", "seed must be at least 0"),
        ("MAX_TOKENS", "-3", "max_tokens must be at least 0"),
    ):
        with monkeypatch.context() as env:
            env.setenv(f"ASSISTANT_{name}", value)
            with pytest.raises(UserError, match=f"environment ASSISTANT_{name}: {message}"):
                load_settings()
