"""Plugin hook specifications. Every hook receives a `register` callable.

A plugin is a module exposed in the `assistant` entry-point group that implements some of
these hooks with `@assistant.hookimpl`. The built-in strategies in `assistant.plugins` are
registered exactly this way.
"""

from pluggy import HookspecMarker

hookspec = HookspecMarker("assistant")


@hookspec
def register_strategies(register):
    """Register decoding strategy classes: register(StrategyClass)."""


@hookspec
def register_constraints(register):
    """Register constraint factories: register(name, factory)."""


@hookspec
def register_scorers(register):
    """Register value functions for search: register(name, scorer)."""


@hookspec
def register_context_providers(register):
    """Register prompt-context providers: register(name, provider)."""


@hookspec
def register_tools(register):
    """Register agent tools: register(name, tool)."""


@hookspec
def register_commands(register):
    """Register extra typer commands: register(function, name=None)."""
