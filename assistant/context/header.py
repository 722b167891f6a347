"""A comment naming the file, for a model that sees no code of it.

Without FIM tokens the model sees only the text before the cursor; in an empty file (or
above the first line of one) that is nothing, and the bundled Gemma wrote an HTML page about
a mollusk into `main.go`. A first line such as `// main.go` is the hint editors' assistants
put in every prompt; here it goes only where the prefix holds no code to say the language.
"""

from __future__ import annotations

_SLASHES = ("javascript", "typescript", "tsx", "rust", "go", "c", "cpp", "java", "csharp", "kotlin", "php")

# each language's comment, around the file name
_COMMENTS = {
    **dict.fromkeys(("python", "ruby", "bash", "toml", "yaml"), ("# ", "")),
    **dict.fromkeys((*_SLASHES, "swift", "scala"), ("// ", "")),
    **dict.fromkeys(("sql", "lua"), ("-- ", "")),
    "html": ("<!-- ", " -->"),
    "css": ("/* ", " */"),
}  # JSON has no comments: no hint


def file_header(prefix: str, filename: str | None, language: str | None) -> str:
    """`// main.go\\n` where `prefix` has no code and the file's name and language are known;
    else ''."""
    comment = _COMMENTS.get(language or "")
    if prefix.strip() or not filename or comment is None or "\n" in filename:
        return ""
    start, end = comment
    return f"{start}{filename}{end}\n"
