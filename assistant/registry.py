"""The plugin manager: built-in and third-party plugins, both loaded from entry points.

Entry points are loaded once per process. A plugin that fails to import, or whose hook
raises, is recorded in `failures` under its entry-point name and skipped; it never takes the
assistant down. `ASSISTANT_PLUGINS=name,name` limits which entry points load.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Iterable
from importlib.metadata import entry_points
from typing import Any

import pluggy

from . import hookspecs
from .errors import PluginError

ENTRY_POINT_GROUP = "assistant"
BUILTIN_PREFIX = "assistant.plugins."  # the modules of the built-in plugins
# the hooks whose calls are register(name, thing): every spec but strategies' and commands'
NAMED_HOOKS = tuple(
    n for n in vars(hookspecs) if n.startswith("register_") and n not in ("register_strategies", "register_commands")
)
ONLY_ENV = "ASSISTANT_PLUGINS"


class Registry:
    """Loaded plugins and what they registered."""

    def __init__(self, only: Iterable[str] | None = None):
        self.pm = pluggy.PluginManager("assistant")
        self.pm.add_hookspecs(hookspecs)
        self.failures: dict[str, str] = {}  # plugins skipped, whole or a hook of theirs, and why
        self.clashes: dict[str, str] = {}  # registrations ignored: another plugin has the name
        self._cache: dict[str, list[tuple[str, tuple, dict]]] = {}
        self.only = sorted(only) if only is not None else None
        self._load(set(only) if only is not None else None)

    def _load(self, only: set[str] | None) -> None:
        installed = entry_points(group=ENTRY_POINT_GROUP)
        for name in sorted((only or set()) - set(installed.names)):  # a typo must not load nothing silently
            self.failures[name] = f"{ONLY_ENV} names it, but no installed plugin has that name"
        for ep in installed:
            if only is not None and ep.name not in only:
                continue
            if self.pm.get_plugin(ep.name) is not None:
                continue  # the same distribution seen twice on sys.path
            try:
                module = ep.load()
                self.pm.register(module, name=ep.name)
            except Exception as exc:  # noqa: BLE001 - any broken plugin is skipped
                self.failures[ep.name] = f"{type(exc).__name__}: {exc}"

    def add(self, module: Any, name: str) -> None:
        """Register an in-process plugin object (used by embedding applications)."""
        self.pm.register(module, name=name)
        self._cache.clear()

    def collect(self, hook: str) -> list[tuple[str, tuple, dict]]:
        """Call every implementation of `register_<kind>` in isolation.

        Returns (plugin name, args, kwargs) for each `register(...)` call.
        """
        if hook in self._cache:
            return self._cache[hook]
        found: list[tuple[str, tuple, dict]] = []
        for impl in getattr(self.pm.hook, hook).get_hookimpls():
            calls: list[tuple[str, tuple, dict]] = []

            def register(*args, _calls=calls, _name=impl.plugin_name, **kwargs):
                _calls.append((_name, args, kwargs))

            try:
                impl.function(register=register)
            except Exception as exc:  # noqa: BLE001
                self._fail(impl.plugin_name, f"{hook} raised {type(exc).__name__}: {exc}")
                continue
            found.extend(calls)
        self._cache[hook] = found
        return found

    def _fail(self, plugin: str, why: str) -> None:
        """Note one more thing wrong with a plugin (each once: registrations are read again)."""
        said = self.failures.get(plugin)
        if said is None:
            self.failures[plugin] = why
        elif why not in said.split("; "):
            self.failures[plugin] = f"{said}; {why}"

    def _builtin(self, plugin: str) -> bool:
        module = self.pm.get_plugin(plugin)
        return getattr(module, "__name__", "").startswith(BUILTIN_PREFIX)

    def _by_name(self, kind: str, entries: list[tuple[str, str, Any]]) -> dict[str, Any]:
        """{name: thing} from (plugin, name, thing) registrations. Where two plugins register
        one name, a built-in wins, else the plugin first by name, and the other is reported:
        pluggy calls the last-installed plugin first, so a third-party 'greedy' silently
        replaced the built-in one (and with it every bench's baseline)."""
        out: dict[str, Any] = {}
        owner: dict[str, str] = {}
        for plugin, name, thing in sorted(entries, key=lambda e: (not self._builtin(e[0]), e[0])):
            if name in out:
                if thing is not out[name]:
                    self.clashes[plugin] = f"its {kind} {name!r} is ignored: plugin {owner[name]!r} registers that name"
                continue
            out[name], owner[name] = thing, plugin
        return dict(sorted(out.items()))

    def strategies(self) -> dict[str, type]:
        """Strategy classes by name (see `_by_name` for two of one name)."""
        entries = []
        for plugin, args, _ in self.collect("register_strategies"):
            cls = args[0]
            name = getattr(cls, "name", None)
            if not name:
                self._fail(plugin, f"strategy {cls!r} has no `name`")
                continue
            problem = _strategy_problem(cls)
            if problem:  # listed, it would break `strategies` for every plugin (and fail at run time)
                self._fail(plugin, f"strategy {name!r} {problem}")
                continue
            entries.append((plugin, name, cls))
        return self._by_name("strategy", entries)

    def strategy(self, name: str) -> type:
        strategies = self.strategies()
        if name not in strategies:
            if self.only is not None:  # the user's own limit, which they may have forgotten
                why = f"; {ONLY_ENV}={','.join(self.only)} limits the plugins that load"
            else:
                why = "" if strategies else " (is the package installed?)"
            raise PluginError(f"unknown strategy {name!r}; available: {', '.join(strategies) or 'none'}{why}")
        return strategies[name]

    def commands(self) -> list[tuple[Callable, str | None]]:
        return [(args[0], kwargs.get("name")) for _, args, kwargs in self.collect("register_commands")]

    def named(self, hook: str) -> dict[str, Any]:
        """Registrations of the form register(name, thing) for constraints, scorers, tools, ..."""
        kind = hook.removeprefix("register_").rstrip("s")
        entries = [(plugin, args[0], args[1]) for plugin, args, _ in self.collect(hook) if len(args) >= 2]
        return self._by_name(kind, entries)

    def warnings(self) -> list[str]:
        """What a user should hear about the plugins, after every registration hook has run: a
        hook that raises, or a name two plugins register, is only found when its hook runs,
        which was after the warnings were printed."""
        self.strategies()
        self.commands()
        for hook in NAMED_HOOKS:
            self.named(hook)
        skipped = [f"plugin {name!r} skipped: {why}" for name, why in self.failures.items()]
        return skipped + [f"plugin {name!r}: {why}" for name, why in self.clashes.items()]


_registry: Registry | None = None


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def _strategy_problem(cls: Any) -> str | None:
    """Why a registered strategy cannot be used, or None: a name one can type after `-s` and
    put in a file name (an eval's results: `a/b` made a folder), a `generate`, and options
    that are a dataclass whose every field has a default (a run without options uses them)."""
    if not _NAME.fullmatch(str(cls.name)):
        return "has a name that is not letters, digits, '-', '_' and '.'"
    if not isinstance(cls, type) or not callable(getattr(cls, "generate", None)):
        return "has no generate(run) method"
    options = getattr(cls, "Options", None)
    if not (isinstance(options, type) and dataclasses.is_dataclass(options)):
        return "has Options that are not a dataclass"
    try:
        options()
        cls.describe()
    except Exception as exc:  # noqa: BLE001 - any failure here is the plugin's
        return f"has Options that cannot be used without arguments ({type(exc).__name__}: {exc})"
    return None


def get_registry() -> Registry:
    """The process-wide registry, created on first use."""
    global _registry
    if _registry is None:
        only = os.environ.get(ONLY_ENV)
        names = [n.strip() for n in only.split(",") if n.strip()] if only else None
        _registry = Registry(names)
    return _registry
