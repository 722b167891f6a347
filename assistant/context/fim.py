"""Fill-in-the-middle prompt formats per model family, detected from the vocabulary.

llama.cpp already recognises many FIM tokens (`Model.fim`); the families below add what it
misses (Codestral's [PREFIX]/[SUFFIX], StarCoder's <repo_name>/<file_sep>, CodeGemma's
<|file_separator|>) and the order (Codestral puts the suffix first: SPM). The layout follows
llama-server's `format_prompt_infill`, so editor clients tuned for it behave the same:

    [REPO]myproject\\n [SEP]{filename}\\n{text} ... [SEP]{current file}\\n
    [BOS] [PRE]{prefix}[SUF]{suffix}[MID]            (PSM)
    [BOS] [SUF]{suffix}[PRE]{prefix}[MID]            (SPM)

Repo-level parts appear only when the vocabulary has those tokens; without a file separator,
extra chunks are joined with llama-server's literal "--- snippet ---" separator.
"""

from __future__ import annotations

from dataclasses import dataclass

SNIPPET_SEPARATOR = "\n\n--- snippet ---\n\n"


@dataclass(frozen=True)
class Family:
    name: str
    prefix: tuple[str, ...]
    suffix: tuple[str, ...]
    middle: tuple[str, ...]
    repo: tuple[str, ...] = ()
    file_sep: tuple[str, ...] = ()
    spm: bool = False


FAMILIES = (
    Family(
        "qwen", ("<|fim_prefix|>",), ("<|fim_suffix|>",), ("<|fim_middle|>",), ("<|repo_name|>",), ("<|file_sep|>",)
    ),
    Family("codegemma", ("<|fim_prefix|>",), ("<|fim_suffix|>",), ("<|fim_middle|>",), (), ("<|file_separator|>",)),
    Family(
        "starcoder",
        ("<fim_prefix>", "<fim-prefix>"),
        ("<fim_suffix>", "<fim-suffix>"),
        ("<fim_middle>", "<fim-middle>"),
        ("<repo_name>", "<reponame>"),
        ("<file_sep>", "<filename>"),
    ),
    Family("codellama", ("▁<PRE>", "<PRE>"), ("▁<SUF>", "<SUF>"), ("▁<MID>", "<MID>")),
    Family("deepseek", ("<｜fim▁begin｜>",), ("<｜fim▁hole｜>",), ("<｜fim▁end｜>",)),
    Family("codestral", ("[PREFIX]",), ("[SUFFIX]",), (), spm=True),  # mistral-common: no middle token
)


@dataclass(frozen=True)
class FimLayout:
    family: str
    prefix: int
    suffix: int
    middle: int  # -1: the format has no middle token (the model continues after the prefix)
    repo: int = -1
    file_sep: int = -1
    spm: bool = False


def _find(model, texts: tuple[str, ...]) -> int:
    for text in texts:
        tid = model.special_token(text)
        if tid is not None and model.token_text(tid) == text:
            return tid
    return -1


def detect(model) -> FimLayout | None:
    """The model's FIM layout, or None when it has no FIM tokens."""
    cached = getattr(model, "_fim_layout", False)
    if cached is not False:
        return cached
    layout = None
    for fam in FAMILIES:
        pre, suf = _find(model, fam.prefix), _find(model, fam.suffix)
        if pre < 0 or suf < 0:
            continue
        mid = _find(model, fam.middle)
        if mid < 0 and not fam.spm:
            continue
        if fam.name == "qwen" and _find(model, fam.repo) < 0 and _find(model, ("<|file_separator|>",)) >= 0:
            continue  # CodeGemma shares Qwen's FIM tokens but not its repo tokens
        llama_fim = model.fim
        layout = FimLayout(
            fam.name,
            pre,
            suf,
            mid,
            repo=_find(model, fam.repo) if fam.repo else (llama_fim.repo if llama_fim else -1),
            file_sep=_find(model, fam.file_sep) if fam.file_sep else (llama_fim.file_sep if llama_fim else -1),
            spm=fam.spm,
        )
        break
    if layout is None and model.fim is not None:  # a family we do not know by name
        f = model.fim
        layout = FimLayout("llama.cpp", f.prefix, f.suffix, f.middle, f.repo, f.file_sep)
    model._fim_layout = layout
    return layout


def fim_tokens(
    model,
    layout: FimLayout,
    prefix: list[int],
    suffix: list[int],
    *,
    bos: list[int],
    extra: list[tuple[str, str]] = (),
    filename: str = "filename",
) -> list[int]:
    """Token ids of a FIM prompt (prefix and suffix already tokenized and truncated)."""
    head: list[int] = []
    if layout.repo >= 0:
        head += [layout.repo] + model.tokenize("myproject\n")
    for name, text in extra:
        if layout.file_sep >= 0:
            head += [layout.file_sep] + model.tokenize(f"{name}\n{text}")
        else:
            head += model.tokenize(text + SNIPPET_SEPARATOR)
    if layout.file_sep >= 0:
        head += [layout.file_sep] + model.tokenize(f"{filename}\n")
    mid = [layout.middle] if layout.middle >= 0 else []
    if layout.spm:
        body = [layout.suffix] + suffix + [layout.prefix] + prefix + mid
    else:
        body = [layout.prefix] + prefix + [layout.suffix] + suffix + mid
    return head + bos + body
