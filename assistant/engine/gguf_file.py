"""GGUF files without loading them into llama.cpp: path validation, a fast header reader,
and a metadata summary.

`gguf.GGUFReader` builds a numpy object per array element, which takes ~20 s for a
262k-token vocabulary; this reader walks the header once with `struct` and keeps only what
the assistant needs (scalars, the token count, FIM tokens, tensor locations).
"""

from __future__ import annotations

import mmap
import os
import re
import struct
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import ModelError, UserError, reason
from ..files import kind_of

GGUF_MAGIC = b"GGUF"
FIM_KEYS = ("tokenizer.ggml.fim_pre_token_id", "tokenizer.ggml.prefix_token_id")
FIM_TEXTS = {
    t.encode()
    for t in ("<|fim_prefix|>", "<fim_prefix>", "<fim-prefix>", "<PRE>", "▁<PRE>", "<｜fim▁begin｜>", "[PREFIX]")
}
# GGUF value types -> struct format (8: string, 9: array)
_SCALAR = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


# llama.cpp's name for the parts of a split model (gguf-split): NAME-00001-of-00003.gguf; it
# is given the first and finds the others by this name
_SPLIT = re.compile(r"(?P<stem>.+)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf", re.IGNORECASE)


def _part(p: Path, m: re.Match, no: int) -> Path:
    """Part `no` of the split model whose part `p` is (`m`: its name's match)."""
    return p.with_name(f"{m['stem']}-{no:05d}-of-{m['count']}{p.suffix}")


def model_files(path: str | os.PathLike) -> list[Path]:
    """The files a model is in: its parts when `path` is the first part of a split model (by
    llama.cpp's naming), else the one file."""
    p = Path(path).expanduser()
    m = _SPLIT.fullmatch(p.name)
    if m is None or int(m["no"]) != 1:
        return [p]
    return [_part(p, m, no) for no in range(1, int(m["count"]) + 1)]


def later_part(path: str | os.PathLike) -> bool:
    """Whether `path` is a split model's part after the first (its model is named by the first)."""
    m = _SPLIT.fullmatch(Path(path).name)
    return m is not None and int(m["no"]) != 1


def _check_split(p: Path) -> None:
    """A part of a split model must be the first, and the others must be beside it: llama.cpp
    said only that it could not load the file (unsupported architecture, or corrupt)."""
    m = _SPLIT.fullmatch(p.name)
    if m is None:
        return
    no, count = int(m["no"]), int(m["count"])
    if no != 1:
        raise ModelError(f"{p} is part {no} of {count} of a split model: give its first part, {_part(p, m, 1)}")
    missing = [f.name for f in model_files(p)[1:] if kind_of(f, "model file") != "file"]
    if missing:
        what = f"{missing[0]} and {len(missing) - 1} more are" if len(missing) > 1 else f"{missing[0]} is"
        raise ModelError(f"{p} is the first of {count} parts of a split model, and {what} missing beside it")


def check_gguf_path(path: str | os.PathLike) -> Path:
    """Return the path if it is a readable GGUF file, else raise ModelError with one clear line."""
    p = Path(path).expanduser()
    try:
        kind = kind_of(p, "model file")
    except UserError as exc:  # a folder on the way it may not search: a traceback in `models`
        raise ModelError(str(exc)) from None
    if kind is None:
        if p.is_symlink():
            raise ModelError(f"model file not found: {p} is a link to {os.readlink(p)}, which does not exist")
        raise ModelError(f"model file not found: {p}")
    if kind == "folder":
        raise ModelError(f"model path is a directory, not a GGUF file: {p}")
    if kind == "other":  # a FIFO would block the read below (a listing of a model folder hung)
        raise ModelError(f"model path is not a regular file (a pipe, socket or device): {p}")
    try:
        with p.open("rb") as fh:
            magic = fh.read(4)
    except OSError as exc:
        raise ModelError(f"cannot read model file {p}: {reason(exc)}") from None
    if not magic:
        raise ModelError(f"not a GGUF file (empty): {p}")
    if magic != GGUF_MAGIC:
        raise ModelError(f"not a GGUF file (bad magic {magic!r}): {p}")
    _check_split(p)
    return p


@dataclass
class TensorInfo:
    name: str
    shape: tuple[int, ...]  # GGUF order: fastest-varying dimension first
    ggml_type: int
    offset: int  # absolute offset in the file


@dataclass
class GGUFHeader:
    metadata: dict = field(default_factory=dict)  # scalars and strings
    n_tokens: int = 0
    fim_tokens: bool = False
    tensors: dict[str, TensorInfo] = field(default_factory=dict)


def read_header(path: str | os.PathLike) -> GGUFHeader:
    p = check_gguf_path(path)
    with p.open("rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        try:
            return _parse(memoryview(mm))
        except struct.error:  # a read past the end: struct's own words name buffers and offsets
            why = f"the file ends inside its header, at byte {len(mm):,}: an unfinished download?"
        except (IndexError, ValueError, UnicodeDecodeError) as exc:
            # only the message leaves this block: the traceback's frames hold views of the
            # map, and closing it while they live raised BufferError over this error
            why = str(exc)
    raise ModelError(f"corrupt or truncated GGUF header in {p}: {why}")


def _parse(buf: memoryview) -> GGUFHeader:
    unpack_from = struct.unpack_from
    version, n_tensors, n_kv = unpack_from("<IQQ", buf, 4)
    if version < 2:
        raise ValueError(f"unsupported GGUF version {version}")
    pos = 24
    header = GGUFHeader()

    def string(at: int) -> tuple[bytes, int]:
        (n,) = unpack_from("<Q", buf, at)
        end = at + 8 + n
        if end > len(buf):
            raise ValueError("string runs past the end of the file")
        return bytes(buf[at + 8 : end]), end

    def skip_value(vtype: int, at: int) -> int:
        if vtype in _SCALAR:
            return at + struct.calcsize("<" + _SCALAR[vtype])
        if vtype == 8:
            return string(at)[1]
        raise ValueError(f"bad value type {vtype}")

    for _ in range(n_kv):
        key_b, pos = string(pos)
        key = key_b.decode("utf-8")
        (vtype,) = unpack_from("<I", buf, pos)
        pos += 4
        if vtype == 9:
            etype, count = unpack_from("<IQ", buf, pos)
            pos += 12
            if key == "tokenizer.ggml.tokens":
                header.n_tokens = count
            if etype == 8:
                check = key == "tokenizer.ggml.tokens"
                for _i in range(count):
                    (n,) = unpack_from("<Q", buf, pos)
                    if check and 3 <= n <= 24 and bytes(buf[pos + 8 : pos + 8 + n]) in FIM_TEXTS:
                        header.fim_tokens = True
                    pos += 8 + n
            elif etype in _SCALAR:
                pos += count * struct.calcsize("<" + _SCALAR[etype])
            else:
                raise ValueError(f"unsupported array element type {etype}")
        elif vtype == 8:
            value, pos = string(pos)
            header.metadata[key] = value.decode("utf-8", "replace")
        elif vtype in _SCALAR:
            fmt = "<" + _SCALAR[vtype]
            (header.metadata[key],) = unpack_from(fmt, buf, pos)
            pos += struct.calcsize(fmt)
        else:
            raise ValueError(f"bad value type {vtype} for {key}")
    infos = []
    for _ in range(n_tensors):
        name_b, pos = string(pos)
        (n_dims,) = unpack_from("<I", buf, pos)
        dims = unpack_from(f"<{n_dims}Q", buf, pos + 4)
        pos += 4 + 8 * n_dims
        ggml_type, offset = unpack_from("<IQ", buf, pos)
        pos += 12
        infos.append((name_b.decode("utf-8"), tuple(dims), ggml_type, offset))
    align = int(header.metadata.get("general.alignment", 32))
    data_start = (pos + align - 1) // align * align
    for name, dims, ggml_type, offset in infos:
        header.tensors[name] = TensorInfo(name, dims, ggml_type, data_start + offset)
    if any(k in header.metadata for k in FIM_KEYS):
        header.fim_tokens = True
    return header


@dataclass
class GGUFInfo:
    path: str
    size_bytes: int  # all its parts, for a split model
    architecture: str
    name: str
    vocab_size: int
    context_length: int | None
    fim: bool
    parts: int = 1  # files of a split model

    def to_dict(self) -> dict:
        return asdict(self)


def read_info(path: str | os.PathLike) -> GGUFInfo:
    """Summarise a GGUF from its header (no weights are read)."""
    p = check_gguf_path(path)
    h = read_header(p)
    arch = h.metadata.get("general.architecture", "unknown")
    files = model_files(p)
    return GGUFInfo(
        path=str(p),
        size_bytes=sum(f.stat().st_size for f in files),
        architecture=arch,
        name=h.metadata.get("general.name") or p.stem,
        vocab_size=h.n_tokens,
        context_length=h.metadata.get(f"{arch}.context_length"),
        fim=h.fim_tokens,
        parts=len(files),
    )
