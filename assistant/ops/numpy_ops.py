"""Logits kernels on numpy: the default backend.

All functions take a 1-D float array of logits over the whole vocabulary (no assumption on
its size) and never modify their input unless the name says `_inplace`.
"""

from __future__ import annotations

import math

import numpy as np

NEG_INF = np.float32(-np.inf)
name = "numpy"


def asarray(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float32)


def to_numpy(x) -> np.ndarray:
    return np.asarray(x)


def argmax(logits) -> int:
    return int(np.argmax(logits))


def log_softmax(logits) -> np.ndarray:
    x = np.asarray(logits, dtype=np.float32)
    m = np.max(x)
    shifted = x - m
    return shifted - np.log(np.sum(np.exp(shifted)))


def softmax(logits) -> np.ndarray:
    x = np.asarray(logits, dtype=np.float32)
    e = np.exp(x - np.max(x))
    return e / np.sum(e)


def entropy(logits) -> float:
    """Shannon entropy in nats of softmax(logits) (AdaDec's unit); masked (-inf) tokens count 0."""
    return logsumexp_entropy(logits)[1]


def logsumexp_entropy(logits) -> tuple[float, float]:
    """(log Z, entropy in nats) from one exp pass: lookahead scoring needs both per row, and
    the exp over a 262k vocabulary is most of the cost (~0.6 ms of ~1 ms).

    H = log Z' - sum(e * z) / Z' with z = x - max(x), e = exp(z), Z' = sum(e)."""
    x = np.asarray(logits, dtype=np.float32)
    m = np.max(x)
    z = x - m
    e = np.exp(z)
    total = float(np.sum(e))  # float32 pairwise summation: ~1e-7 relative, half a float64 pass
    log_total = float(np.log(total))
    with np.errstate(invalid="ignore"):
        ez = float(np.dot(e, z))
    if not np.isfinite(ez):  # masked (-inf) tokens: 0 * -inf; a finite floor makes them 0
        ez = float(np.dot(e, np.maximum(z, np.float32(-1e30))))
    return float(m) + log_total, max(0.0, log_total - ez / total)


def entropy_at_least(logits, threshold: float) -> bool:
    """`entropy(logits) >= threshold`, mostly without an exp over the whole vocabulary.

    AdaDec asks this at every step, and on a 262k vocabulary the full pass costs ~1 ms: 4-8%
    of a CPU step on Gemma 3 270M, most of a GPU step. Tokens more than W nats below the top
    (W = ln V + 8) can move the entropy by under 0.01 nats in all, so the few tokens near the
    top bound it from both sides; only an entropy that close to the threshold, or a head that
    is over 1/16 of the vocabulary, takes the full pass. Same answer as the full pass."""
    x = np.asarray(logits, dtype=np.float32)
    n = x.shape[0]
    m = float(np.max(x))
    window = math.log(n) + 8.0
    near = x > np.float32(m - window)
    if not np.isfinite(m) or np.count_nonzero(near) * 16 > n:
        return entropy(x) >= threshold
    head = x[near]
    z = head.astype(np.float64) - m
    e = np.exp(z)
    z_head, a_head = float(e.sum()), -float(np.dot(e, z))  # Z and -sum(e*z) over the head
    # each tail token adds e^y <= e^-W to Z and -y*e^y <= W*e^-W to A (y <= -W <= -1)
    z_tail = (n - head.size) * math.exp(-window)
    low = math.log(z_head) + a_head / (z_head + z_tail)
    high = math.log(z_head + z_tail) + (a_head + window * z_tail) / z_head
    slack = 1e-5  # the full pass's float32 rounding
    if high + slack < threshold:
        return False
    if low - slack >= threshold:
        return True
    return entropy(x) >= threshold


def logsumexp(logits) -> float:
    x = np.asarray(logits, dtype=np.float32)
    m = np.max(x)
    return float(m + np.log(np.sum(np.exp(x - m), dtype=np.float64)))


_CHUNK, _MIN_CHUNK = 2048, 16  # top_k searches the chunks with the largest maxima


def top_k(logits, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k largest logits and their token ids, best first.

    Only the k chunks of the vocabulary with the largest maxima are searched: each of the k
    largest values lies in one of them (a chunk outside them would have k chunks, each
    holding a value at least its maximum, above it). Chunks shrink as k grows, so that the k
    searched hold at most an eighth of the vocabulary. On Gemma 3's 262k: ~0.1 ms for k = 3
    instead of ~0.7 ms for a partition of the whole array, and for Top-H's k = 100 ~0.3 ms
    instead of ~2.2 ms."""
    x = np.asarray(logits)
    n = x.shape[0]
    k = max(1, min(int(k), n))
    chunk = _CHUNK
    while chunk > _MIN_CHUNK and k * chunk * 8 > n:
        chunk //= 2
    if k * chunk * 8 <= n:
        full = n - n % chunk
        maxima = x[:full].reshape(-1, chunk).max(axis=1)
        chunks = np.argpartition(maxima, -k)[-k:]
        pool = (chunks[:, None] * chunk + np.arange(chunk)).ravel()
        pool = np.concatenate([pool, np.arange(full, n)])  # the last, partial chunk
        idx = pool[np.argpartition(x[pool], -k)[-k:]]
    else:
        idx = np.argpartition(x, -k)[-k:] if k < n else np.arange(n)
    order = np.argsort(-x[idx], kind="stable")
    idx = idx[order]
    return x[idx], idx


def apply_temperature(logits, temperature: float) -> np.ndarray:
    if temperature <= 0:
        raise ValueError("temperature must be > 0 (use greedy for temperature 0)")
    return np.asarray(logits, dtype=np.float32) / np.float32(temperature)


def top_k_mask(logits, k: int) -> np.ndarray:
    """Logits with everything outside the top k set to -inf (k <= 0 keeps all)."""
    x = np.array(logits, dtype=np.float32)
    if k <= 0 or k >= x.shape[0]:
        return x
    kth = top_k(x, k)[0][-1]  # the k-th largest value, as a partition finds it, ~7x faster
    x[x < kth] = NEG_INF
    return x


def top_k_live(logits, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The tokens `top_k_mask` keeps that can be drawn (finite), as ids in ascending order
    and their logits: samplers then work on k numbers, not on the whole vocabulary (~0.5 ms
    a token less on a 262k vocabulary) and, ids ascending, draw exactly the token the dense
    arrays would."""
    x = np.asarray(logits, dtype=np.float32)
    if k <= 0 or k >= x.shape[0]:
        ids = np.flatnonzero(x > NEG_INF)
    else:
        kth = max(top_k(x, k)[0][-1], np.nextafter(NEG_INF, np.float32(0)))  # finite only
        ids = np.flatnonzero(x >= kth)  # ties with the k-th are kept, as top_k_mask keeps them
    return ids, x[ids]


def top_p_mask(logits, p: float) -> np.ndarray:
    """Nucleus truncation: keep the smallest set of tokens whose probability reaches p."""
    x = np.array(logits, dtype=np.float32)
    if p >= 1.0:
        return x
    live = np.flatnonzero(x > NEG_INF)  # after top-k only a few are left: sort just those
    order = live[np.argsort(-x[live], kind="stable")]
    cum = np.cumsum(softmax(x[order]))
    keep = int(np.searchsorted(cum, p, side="left")) + 1
    x[order[keep:]] = NEG_INF
    return x


def min_p_mask(logits, p: float) -> np.ndarray:
    """Drop tokens whose probability is below p times the top token's probability."""
    x = np.array(logits, dtype=np.float32)
    if p <= 0.0:
        return x
    cutoff = np.max(x) + np.float32(np.log(p))
    x[x < cutoff] = NEG_INF
    return x


def mask_inplace(logits, allowed) -> np.ndarray:
    """Set logits of disallowed tokens to -inf. `allowed` is a bool array over the vocabulary."""
    x = np.asarray(logits)
    x[~np.asarray(allowed, dtype=bool)] = NEG_INF
    return x


def masked(logits, allowed) -> np.ndarray:
    """A new array: logits where allowed, -inf elsewhere.

    Grammars usually allow few tokens, so the sparse path (fill -inf, copy the allowed ones)
    touches a fraction of the memory a dense where() does: ~0.07 ms vs ~0.7 ms on a 262k
    vocabulary."""
    x = np.asarray(logits, dtype=np.float32)
    allowed = np.asarray(allowed, dtype=bool)
    idx = np.flatnonzero(allowed)
    if idx.size * 8 < x.shape[0]:
        out = np.full(x.shape[0], NEG_INF, dtype=np.float32)
        out[idx] = x[idx]
        return out
    return np.where(allowed, x, NEG_INF)


def sample(logits, rng: np.random.Generator) -> int:
    """Draw one token from softmax(logits) by inverse CDF with one uniform from `rng`.

    Using the caller's numpy Generator for the uniform makes the draw reproducible for a seed
    and identical across backends.
    """
    x = np.asarray(logits, dtype=np.float32)
    live = np.flatnonzero(x > NEG_INF)
    cum = np.cumsum(softmax(x[live]).astype(np.float64))
    u = rng.random() * cum[-1]
    return int(live[min(np.searchsorted(cum, u, side="right"), live.shape[0] - 1)])
