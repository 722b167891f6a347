"""Exceptions shared by every layer.

`UserError` subclasses are problems the user can fix (a bad path, a bad option): interfaces
print their message on one line and exit with status 2, never a traceback.
"""


class UserError(Exception):
    """Bad input from the user; shown as one line, exit status 2."""


class ModelError(UserError):
    """A model path that is missing, unreadable, not GGUF, or that llama.cpp cannot load."""


class ContextOverflow(UserError):
    """The prompt does not fit in the context window."""


class PluginError(UserError):
    """Unknown strategy, bad strategy option, or a plugin that cannot be used."""


class EngineError(RuntimeError):
    """llama.cpp reported a failure that is not the user's fault."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C that has something to tell the user: what was saved and how to go on."""


class Cancelled(Exception):
    """The generation was cancelled (client gone, newer keystroke, Ctrl-C)."""


def reason(exc: BaseException) -> str:
    """Why an operation on a file failed, for a message that names the file itself: an
    OSError's reason without the path it repeats ("Is a directory"), anything else whole."""
    return str(getattr(exc, "strerror", None) or exc)
