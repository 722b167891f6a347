"""Built-in constraint kinds (Lark grammar, regex, JSON schema), all compiled by llguidance.

Registered through the `register_constraints` hook like any third-party constraint: the factory
takes (source text, model) and returns an object with allowed() / advance() / fork().
"""

from assistant import hookimpl
from assistant.constraints import build


def _factory(kind):
    def make(source: str, model, origin: str = ""):
        return build(kind, source, model, origin=origin)

    return make


@hookimpl
def register_constraints(register):
    for kind in ("lark", "regex", "json-schema"):
        register(kind, _factory(kind))
