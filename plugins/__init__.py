"""Built-in decoding strategies, one module each.

Each module is registered through the `assistant` entry-point group in pyproject.toml,
exactly as a third-party plugin would be: they are the living example for plugin authors.
"""
