"""`python -m assistant` and the `assistant` command."""


def main() -> None:
    """The CLI. A Ctrl-C while its imports load (typer, numpy, llama.cpp: about half a second)
    exits 130 quietly, as one does later, instead of printing a traceback."""
    try:
        from . import engine  # noqa: F401  llama.cpp before numpy (see assistant/engine/__init__.py)
        from .cli import main as cli_main
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    cli_main()


if __name__ == "__main__":
    main()
