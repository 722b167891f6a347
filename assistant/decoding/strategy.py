"""The strategy protocol: a class with a name, a summary, typed options and `generate`.

Options are a dataclass whose defaults come from the strategy's paper; `parse_options`
turns user input (CLI `--option key=value`, HTTP JSON) into it with clear errors.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

from ..errors import PluginError, UserError
from .events import Event
from .run import Run


@dataclasses.dataclass
class NoOptions:
    pass


class Strategy:
    """Base class for decoding strategies (third-party ones may subclass it too)."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    Options: ClassVar[type] = NoOptions
    # whether the request's sampling temperature (--temperature) applies; the CLI says so when a
    # strategy ignores it (deterministic ones, or those with a temperature option of their own)
    reads_temperature: ClassVar[bool] = True
    # whether the strategy works only on an infill whose text must parse (grammar-infill): it is
    # refused on a plain prompt, and its runs check the syntax as `--syntax-valid` does
    needs_syntax_guard: ClassVar[bool] = False

    def __init__(self, options: Any = None):
        self.options = options if options is not None else self.Options()

    def generate(self, run: Run) -> Iterator[Event]:  # pragma: no cover - interface
        raise NotImplementedError

    def sequences(self) -> int:
        """How many sequences a run holds at once, its own included: the service makes the
        context big enough before the run starts. One unless the strategy forks."""
        return 1

    @classmethod
    def resolved_settings(cls, options: Any, model_path: Path) -> dict[str, Any]:
        """What `options` resolve to from state kept outside the request (a learned
        threshold behind 'auto', say): a saved result is only comparable with another
        whose options and these both match. Nothing by default."""
        return {}

    @classmethod
    def parse_options(cls, raw: dict[str, Any] | None) -> Any:
        raw = dict(raw or {})
        fields = {f.name: f for f in dataclasses.fields(cls.Options)}
        hints = typing.get_type_hints(cls.Options)
        unknown = sorted(set(raw) - set(fields))
        if unknown:
            known = ", ".join(fields) or "none"
            raise PluginError(f"strategy {cls.name!r} has no option {unknown[0]!r} (options: {known})")
        values = {}
        for key, value in raw.items():
            values[key] = _coerce(value, hints[key], f"{cls.name}.{key}")
        try:
            return cls.Options(**values)
        except (TypeError, ValueError, UserError) as exc:
            raise PluginError(f"bad options for {cls.name!r}: {exc}") from None

    @classmethod
    def describe(cls) -> dict[str, Any]:
        hints = typing.get_type_hints(cls.Options)
        options = []
        for f in dataclasses.fields(cls.Options):
            default = f.default if f.default is not dataclasses.MISSING else None
            options.append(
                {
                    "name": f.name,
                    "type": _type_name(hints[f.name]),
                    "default": default,
                    "help": f.metadata.get("help", ""),
                }
            )
        return {"name": cls.name, "summary": cls.summary, "options": options}


def option(default: Any, help: str) -> Any:  # noqa: A002 - mirrors argparse
    """A strategy option with a default (from the paper) and a one-line help text."""
    return dataclasses.field(default=default, metadata={"help": help})


def require(ok: bool, name: str, value: Any, rule: str) -> None:
    """An option check that names the option, the rule and the value it got (a message that
    lists every rule leaves the user to guess which one failed)."""
    if not ok:
        raise ValueError(f"{name} must be {rule}, got {value!r}")


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        errors = []
        for arm in typing.get_args(tp):
            if arm is type(None):
                if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
                    return None
                continue
            try:
                return _coerce(value, arm, where)
            except PluginError as exc:
                errors.append(str(exc))
        raise PluginError(f"{where}: cannot use {value!r} ({'; '.join(errors)})")
    if origin is typing.Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise PluginError(f"{where}: {value!r} is not one of {', '.join(map(repr, allowed))}")
        return value
    try:
        if tp is bool:
            if isinstance(value, str):
                lowered = value.strip().lower()
                if lowered in ("1", "true", "yes", "on"):
                    return True
                if lowered in ("0", "false", "no", "off"):
                    return False
                raise ValueError(value)
            return bool(value)
        if tp in (int, float, str):
            if tp is int and isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            converted = tp(value)
            if tp is float and not math.isfinite(converted):  # nan and inf slip past range checks
                raise PluginError(f"{where}: expected a finite number, got {value!r}")
            return converted
    except (TypeError, ValueError):
        raise PluginError(f"{where}: expected {_type_name(tp)}, got {value!r}") from None
    return value
