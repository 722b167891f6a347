"""Decode prices measured on this machine, kept across processes.

Timing the decode-cost curve (speculative's draft sizes, the padding choice, AdaDec's
schedule) takes seconds: 4 s for Gemma 3 270M on 2 cores, more than a one-shot
`assistant generate` spends on its tokens. The prices depend on the model file, the threads,
the offload and the llama.cpp build, so they are stored under a key made of those and measured
again once they are a week old (the machine's load may have changed). A missing, unreadable
or corrupt file only means measuring again.
"""

from __future__ import annotations

import contextlib
import os
import platform
import time
from pathlib import Path

from ..files import read_json_object, update_json_object

MAX_AGE_S = 7 * 24 * 3600
MAX_KEYS = 64  # the oldest keys go first: one per model, thread count and offload in use


def machine_id() -> str:
    """The CPU (model name, logical cores) the prices were measured on."""
    name = platform.processor() or ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{platform.machine()} {name} x{os.cpu_count()}"


class PriceBook:
    """Seconds per decode of n output rows, per key, in one JSON file."""

    def __init__(self, path: str | os.PathLike, max_age_s: float = MAX_AGE_S):
        self.path = Path(path)
        self.max_age_s = max_age_s

    def load(self, key: str) -> dict[int, float]:
        """The fresh prices stored under `key` (rows -> seconds); {} when none are."""
        entry = read_json_object(self.path).get(key)
        if not isinstance(entry, dict):
            return {}
        now = time.time()
        prices = {}
        for rows, item in (entry.get("rows") or {}).items():
            try:
                seconds, saved = float(item[0]), float(item[1])
                n = int(rows)
            except (TypeError, ValueError, IndexError, KeyError):
                continue
            if 0 < seconds < float("inf") and 0 <= now - saved < self.max_age_s:
                prices[n] = seconds
        return prices

    def save(self, key: str, rows: int, seconds: float) -> None:
        """Store one price (best effort: a read-only cache directory only costs re-measuring)."""

        def change(data: dict) -> None:
            entry = data.pop(key, None)
            if not isinstance(entry, dict) or not isinstance(entry.get("rows"), dict):
                entry = {"rows": {}}
            entry["rows"][str(int(rows))] = [float(seconds), time.time()]
            entry["used"] = time.time()
            data[key] = entry
            for old in sorted(data, key=lambda k: _used(data[k]))[: max(0, len(data) - MAX_KEYS)]:
                del data[old]

        with contextlib.suppress(OSError):
            update_json_object(self.path, change, sort_keys=True)


def _used(entry) -> float:
    try:
        return float(entry.get("used", 0.0))
    except (AttributeError, TypeError, ValueError):
        return 0.0
