"""Write tiny, deterministic GGUF models with a chosen vocabulary (random weights).

Output is nonsense, but llama.cpp loads them like any model, so prompt layouts (FIM tokens of
each model family) can be tested without downloading anything.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

FAMILIES = {
    "qwen": ["<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>"],
    "starcoder": ["<fim_prefix>", "<fim_suffix>", "<fim_middle>", "<fim_pad>", "<repo_name>", "<file_sep>"],
    "codellama": ["▁<PRE>", "▁<SUF>", "▁<MID>", "▁<EOT>"],
    "deepseek": ["<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>"],
    "codestral": ["[PREFIX]", "[SUFFIX]", "[MIDDLE]"],
    "codegemma": ["<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>", "<|file_separator|>"],
    "none": [],
}


def write_tiny_gguf(path: Path, family: str = "none", *, seed: int = 0, nan: bool = False, split: int = 0) -> Path:
    """`nan`: NaN token embeddings, so every logit is NaN (a broken model file). `split`: at
    most that many tensors a file, named as gguf-split names a model's parts (the first part's
    path is returned)."""
    import gguf

    rng = np.random.default_rng(seed)
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL] + [gguf.TokenType.BYTE] * 256
    words = ["▁", "▁def", "▁return", "▁x", "▁y", "(", ")", ":", "=", "+", "▁print", "▁if", "▁else"]
    words += [chr(c) for c in range(ord("a"), ord("z") + 1)]
    tokens += words
    types += [gguf.TokenType.NORMAL] * len(words)
    tokens += FAMILIES[family]
    types += [gguf.TokenType.CONTROL] * len(FAMILIES[family])
    scores = [0.0] * 259 + [-float(i) for i in range(len(tokens) - 259)]
    n_vocab, n_embd, n_ff, n_head = len(tokens), 32, 64, 2

    w = gguf.GGUFWriter(str(path), "llama", split_max_tensors=split)
    w.add_name(f"tiny-{family}")
    w.add_context_length(256)
    w.add_embedding_length(n_embd)
    w.add_block_count(1)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head)
    w.add_rope_dimension_count(n_embd // n_head)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(0)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(True)

    def t(*shape):
        return (rng.standard_normal(shape) * 0.1).astype(np.float32)

    w.add_tensor("token_embd.weight", t(n_vocab, n_embd) * (np.nan if nan else 1))
    w.add_tensor("output_norm.weight", np.ones(n_embd, np.float32))
    w.add_tensor("output.weight", t(n_vocab, n_embd))
    w.add_tensor("blk.0.attn_norm.weight", np.ones(n_embd, np.float32))
    for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
        w.add_tensor(f"blk.0.{name}.weight", t(n_embd, n_embd))
    w.add_tensor("blk.0.ffn_norm.weight", np.ones(n_embd, np.float32))
    w.add_tensor("blk.0.ffn_gate.weight", t(n_ff, n_embd))
    w.add_tensor("blk.0.ffn_up.weight", t(n_ff, n_embd))
    w.add_tensor("blk.0.ffn_down.weight", t(n_embd, n_ff))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    if split:
        return next(iter(sorted(Path(path).parent.glob(f"{Path(path).stem}-00001-of-*.gguf"))))
    return path
