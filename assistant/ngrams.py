"""n-gram statistics over a code corpus, tokenized with the model's own tokenizer.

Superposed decoding separates its drafts with n-gram probabilities P(next | last m tokens),
m = 1..5 (bigram to 6-gram). Counts are kept as sorted arrays of 64-bit hashes (context hash,
and context+next hash) with counts, so a store of millions of positions takes tens of MB and a
lookup is one `searchsorted` per context length. Stores are cached on disk per (model,
corpus) and built once with progress reports.

Default corpus: the source files of the git repository holding the request's workspace (the
user's project); fallback: the Python standard library on this machine.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import sys
import sysconfig
import zipfile
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import numpy as np

from .config import cache_dir
from .errors import UserError
from .files import kind_of, write_atomically

CODE_SUFFIXES = {
    ".py",
    ".pyi",
    ".js",
    ".jsx",
    ".ts",
    ".tsx",
    ".go",
    ".rs",
    ".c",
    ".h",
    ".cc",
    ".cpp",
    ".hpp",
    ".java",
    ".kt",
    ".rb",
    ".php",
    ".cs",
    ".swift",
    ".scala",
    ".sh",
    ".sql",
    ".lua",
    ".toml",
}
MAX_CHARS = 6_000_000  # about 1.5-2M tokens: a store of that size builds in under a minute
# the most the cached stores may take together: a few projects for a few models (a stdlib-sized
# store of Gemma's is 66 MB); the least recently used go first
CACHE_BYTES = 512 << 20
MAX_CONTEXT = 5
_MUL = np.uint64(0x9E3779B97F4A7C15)
_SEP = -1


def default_corpus(workspace: str | Path | None = None) -> list[Path]:
    """The source files git tracks in the repository holding `workspace` (all of it, not only
    the part under that folder); the Python stdlib when there is no workspace, no git repository
    or no source file in it."""
    if workspace is not None:
        try:
            root = subprocess.run(
                ["git", "rev-parse", "--show-toplevel"],
                capture_output=True,
                text=True,
                timeout=20,
                check=True,
                cwd=Path(workspace),
            ).stdout.strip()
            out = subprocess.run(  # from the top: ls-files lists paths relative to its cwd
                ["git", "ls-files", "-z"], capture_output=True, timeout=20, check=True, cwd=root
            ).stdout.decode("utf-8", "replace")
            files = [Path(root) / f for f in out.split("\0") if f and Path(f).suffix in CODE_SUFFIXES]
            files = [f for f in files if _is_regular(f)]  # one it may not look at: not the whole repository lost
            if files:
                return sorted(files)
        except (OSError, subprocess.SubprocessError):
            pass
    return stdlib_corpus()


@lru_cache(maxsize=1)
def _stdlib_files() -> tuple[Path, ...]:
    root = Path(sysconfig.get_paths()["stdlib"])
    return tuple(sorted(p for p in root.rglob("*.py") if "site-packages" not in p.parts and "test" not in p.parts))


def stdlib_corpus() -> list[Path]:
    files = list(_stdlib_files())
    if not files:  # some system Pythons ship the standard library compiled only
        raise UserError(
            f"no Python standard library sources under {sysconfig.get_paths()['stdlib']} for the n-gram "
            "corpus: name one with -o corpus=PATH (a folder of source files)"
        )
    return files


def corpus_files(spec: str | None, workspace: str | Path | None = None) -> list[Path]:
    """A corpus given by the user: a file, a folder (code files inside), 'stdlib', or None for
    the default (`default_corpus` of the request's workspace)."""
    if not spec:
        return default_corpus(workspace)
    if spec == "stdlib":
        return stdlib_corpus()
    p = Path(spec).expanduser()
    kind = kind_of(p, "corpus")
    if kind == "file":
        return [p]
    if kind == "folder":
        files = _source_files(p)
        if files:
            return files
        raise UserError(f"no source files under {p}")
    if kind is not None:
        raise UserError(f"corpus must be a file or a folder of source files: {p}")
    raise UserError(f"corpus not found: {p}")


def _source_files(root: Path) -> list[Path]:
    """Code files under a folder the user named, in a stable order. Hidden folders (.git,
    .venv) and virtual environments are left out: a project's .venv sorted first and filled
    the corpus's budget with installed packages before the project's own code. Folders and
    files it may not read are skipped (one was a PermissionError traceback)."""
    found = []
    for folder, dirs, names in os.walk(root):  # unreadable folders: skipped (no onerror)
        here = Path(folder)
        dirs[:] = [d for d in dirs if not d.startswith(".") and not os.path.exists(here / d / "pyvenv.cfg")]
        for name in names:
            f = here / name
            if f.suffix in CODE_SUFFIXES and _is_regular(f):
                found.append(f)
    return sorted(found)


def _is_regular(path: Path) -> bool:
    return os.path.isfile(path)  # False, not an error, where it may not be looked at


def _hash_step(h: np.ndarray, tok: np.ndarray) -> np.ndarray:
    return (h ^ (tok.astype(np.uint64) + np.uint64(_ADD))) * _MUL


_MASK = (1 << 64) - 1
_ADD = 0x632BE59BD9B4E019


def _mix(prev: int, tok: int, m: int) -> int:
    """Scalar twin of the vectorised hashing in `NgramStore.build`."""
    cur = ((prev ^ ((tok + _ADD) & _MASK)) * int(_MUL)) & _MASK
    return ((cur * m) & _MASK) ^ prev if m > 1 else cur


class NgramStore:
    """Counts of (context of length m) and (context, next token) for m = 1..MAX_CONTEXT."""

    def __init__(self, tables: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]], n_tokens: int):
        self.tables = tables  # m -> (ctx_keys, ctx_counts, pair_keys, pair_counts), keys sorted
        self.n_tokens = n_tokens
        self.corpus = ""  # what it was built from, in words (`describe_corpus`)

    @classmethod
    def build(cls, tokens: np.ndarray) -> NgramStore:
        t = tokens.astype(np.int64)
        valid = t != _SEP
        tables = {}
        h = np.zeros(len(t), dtype=np.uint64)  # h[i]: hash of the m tokens ending at i
        ok = valid.copy()
        with np.errstate(over="ignore"):
            for m in range(1, MAX_CONTEXT + 1):
                if m == 1:
                    h = _hash_step(np.zeros(len(t), np.uint64), t)
                else:
                    h_prev = np.concatenate([np.zeros(1, np.uint64), h[:-1]])
                    ok_prev = np.concatenate([np.zeros(1, bool), ok[:-1]])
                    h = _hash_step(h_prev, t)
                    h = (h * np.uint64(m)) ^ h_prev
                    ok = ok & ok_prev
                # context = tokens ending at i, next = t[i+1]
                ctx_ok = ok[:-1] & valid[1:]
                ctx = h[:-1][ctx_ok]
                nxt = t[1:][ctx_ok]
                pair = _hash_step(ctx, nxt)
                ck, cc = np.unique(ctx, return_counts=True)
                pk, pc = np.unique(pair, return_counts=True)
                tables[m] = (ck, cc.astype(np.int32), pk, pc.astype(np.int32))
        return cls(tables, int(valid.sum()))

    @staticmethod
    def context_hashes(context: list[int]) -> dict[int, np.uint64]:
        """Hash of the last m tokens of `context` for each m, chained exactly as `build` does."""
        toks = [int(t) for t in context[-MAX_CONTEXT:]]
        out = {}
        for m in range(1, len(toks) + 1):
            cur = 0
            for j, tok in enumerate(toks[-m:], 1):
                cur = _mix(cur, tok, j)
            out[m] = np.uint64(cur)
        return out

    def probs(self, context: list[int], candidates: np.ndarray, weights: list[float]) -> np.ndarray:
        """sum_m weights[m-1] * P(candidate | last m tokens of context); 0 where unseen."""
        q = np.zeros(len(candidates), dtype=np.float64)
        cand = np.asarray(candidates, dtype=np.int64)
        for m, hm in self.context_hashes(context).items():
            if m > len(weights) or weights[m - 1] == 0:
                continue
            ck, cc, pk, pc = self.tables[m]
            i = np.searchsorted(ck, hm)
            if i >= len(ck) or ck[i] != hm:
                continue
            total = cc[i]
            with np.errstate(over="ignore"):
                pairs = _hash_step(np.full(len(cand), hm, dtype=np.uint64), cand)
            j = np.searchsorted(pk, pairs)
            j_ok = j < len(pk)
            hit = np.zeros(len(cand), bool)
            hit[j_ok] = pk[j[j_ok]] == pairs[j_ok]
            counts = np.zeros(len(cand))
            counts[hit] = pc[j[hit]]
            q += weights[m - 1] * counts / total
        return q

    def save(self, path: Path) -> None:
        arrays = {f"{name}{m}": arr for m, tab in self.tables.items() for name, arr in zip("abcd", tab, strict=True)}
        write_atomically(path, lambda fh: np.savez(fh, n_tokens=np.asarray(self.n_tokens), **arrays))

    @classmethod
    def load(cls, path: Path) -> NgramStore:
        with np.load(path) as z:
            tables = {m: tuple(z[f"{name}{m}"] for name in "abcd") for m in range(1, MAX_CONTEXT + 1)}
            return cls(tables, int(z["n_tokens"]))


def _is_stdlib(files: list[Path]) -> bool:
    return bool(files) and files == list(_stdlib_files())


def describe_corpus(files: list[Path]) -> str:
    """Which corpus a store came from, for the user: the default falls back silently to the
    standard library outside a git repository."""
    if _is_stdlib(files):
        return f"the Python standard library ({len(files)} files)"
    if len(files) == 1:
        return str(files[0])
    return f"{os.path.commonpath([str(f) for f in files])} ({len(files)} files)"


def corpus_root_id(files: list[Path]) -> str:
    """Which corpus (the folder its files share), apart from its contents: a store rebuilt
    after an edit replaces the one before instead of piling up beside it."""
    root = os.path.commonpath([str(f) for f in files]) if files else ""
    return hashlib.sha256(os.fsencode(root)).hexdigest()[:8]  # a name's bytes: it need not be UTF-8


def corpus_signature(files: list[Path]) -> str:
    h = hashlib.sha256()
    if _is_stdlib(files):  # the stdlib only changes with the interpreter
        h.update(f"stdlib:{sysconfig.get_paths()['stdlib']}:{sys.version}".encode())
        return h.hexdigest()[:20]
    for f in files:
        st = f.stat()
        h.update(os.fsencode(f"{f}:{st.st_size}:{st.st_mtime_ns}\n"))
    return h.hexdigest()[:20]


_loaded: dict[tuple[str, str], NgramStore] = {}


def get_store(
    model,
    corpus: str | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    workspace: str | Path | None = None,
) -> NgramStore:
    """The store for (model, corpus): from memory, from the disk cache, or built (with progress)."""
    from .calibration import file_sha256

    files = corpus_files(corpus, workspace)
    key = f"{file_sha256(model.path)[:16]}-{corpus_root_id(files)}-{corpus_signature(files)}"
    mem_key = (str(model.path), key)
    if mem_key in _loaded:
        return _loaded[mem_key]
    _loaded[mem_key] = store = _load_or_build(model, files, key, progress)
    store.corpus = describe_corpus(files)
    return store


def _tokenize_by_lines(model, text: str, piece: int = 4_000) -> list[int]:
    """Tokens of `text`, tokenized a few thousand characters (whole lines) at a time:
    llama.cpp's time to tokenize one string grows with the text's length times its newlines
    on some vocabularies (Gemma's: 3.6 s for 180k characters of short lines, 0.2 s in pieces;
    the stdlib's files 1.6x faster), and a corpus may hold a file of megabytes. Only tokens
    across a cut can differ (113 of 1.3 million in the stdlib), which n-gram counts do not
    notice."""
    tokens: list[int] = []
    start = 0
    while start < len(text):
        end = start + 2 * piece  # a line this long (minified code) is cut anywhere
        cut = text.find("\n", start + piece, end) + 1 or min(end, len(text))
        tokens += model.tokenize(text[start:cut])
        start = cut
    return tokens


def _load_or_build(model, files: list[Path], key: str, progress) -> NgramStore:
    folder = cache_dir() / "ngrams"  # made when a store is saved
    path = folder / f"{key}.npz"
    if _is_regular(path):
        try:
            store = NgramStore.load(path)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            pass  # unreadable (a disk error, an older writer's half file): build it again
        else:
            with contextlib.suppress(OSError):
                os.utime(path)  # its time says when it was last used (see `_evict`)
            return store
    chunks: list[np.ndarray] = []
    chars = 0
    label = f"n-gram corpus: {describe_corpus(files)}"
    for i, f in enumerate(files):
        try:  # at most what the budget has left: one huge file would take minutes to tokenize
            with f.open(encoding="utf-8") as fh:
                text = fh.read(MAX_CHARS - chars)
        except (OSError, UnicodeDecodeError):
            continue
        chunks.append(np.asarray(_tokenize_by_lines(model, text) + [_SEP], dtype=np.int64))
        chars += len(text)
        if progress:
            progress(label, i + 1, len(files))
        if chars >= MAX_CHARS:
            break
    if progress:
        progress(label, len(files), len(files))
    if not chunks:
        raise UserError("the n-gram corpus is empty")
    store = NgramStore.build(np.concatenate(chunks))
    try:
        store.save(path)
    except OSError:  # a read-only or full cache: built again next time
        return store
    stale_prefix = key.rsplit("-", 1)[0] + "-"  # same model and corpus, older contents
    for old in folder.glob(f"{stale_prefix}*.npz"):
        if old != path:
            old.unlink(missing_ok=True)
    _evict(folder, keep=path)
    return store


def _evict(folder: Path, keep: Path) -> None:
    """Remove the least recently used stores while they take more than CACHE_BYTES together
    (never `keep`, the one just built): a store is kept per model and corpus folder, and every
    project, model and test corpus added one for good (367 MB here after a month of tests)."""
    entries = []
    for store in folder.glob("*.npz"):
        with contextlib.suppress(OSError):
            st = store.stat()
            entries.append((st.st_mtime, st.st_size, store))
    total = sum(size for _, size, _ in entries)
    for _, size, store in sorted(entries, key=lambda e: e[0]):
        if total <= CACHE_BYTES:
            break
        if store != keep:
            store.unlink(missing_ok=True)
            total -= size
