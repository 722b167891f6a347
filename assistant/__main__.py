"""`python -m assistant` and the `assistant` command."""

import sys


def main() -> None:
    """The CLI. A Ctrl-C while its imports load (typer, numpy, llama.cpp: about half a second)
    exits 130 quietly, as one does later, instead of printing a traceback."""
    try:
        try:
            from . import engine  # noqa: F401  llama.cpp before numpy (see assistant/engine/__init__.py)
        except (ImportError, OSError, RuntimeError) as exc:  # not installed, or its library will not load
            sys.stderr.write(
                f"assistant: error: llama-cpp-python could not be loaded ({type(exc).__name__}: {exc}); "
                'reinstall it as the README says: CMAKE_ARGS="-DGGML_NATIVE=OFF" pip install --force-reinstall '
                "--no-cache-dir llama-cpp-python==0.3.36\n"
            )
            raise SystemExit(1) from None
        from .cli import main as cli_main
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    cli_main()


if __name__ == "__main__":
    main()
