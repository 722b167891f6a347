"""Logits kernels: numpy against direct formulas, and torch against numpy when torch is present."""

from __future__ import annotations

import math

import numpy as np
import pytest

from assistant import ops
from assistant.ops import numpy_ops as N

rng = np.random.default_rng(0)
LOGITS = (rng.standard_normal(5000) * 3).astype(np.float32)


def test_log_softmax_and_entropy():
    lp = N.log_softmax(LOGITS)
    assert math.isclose(float(np.exp(lp).sum()), 1.0, rel_tol=1e-4)
    p = np.exp(lp.astype(np.float64))
    assert math.isclose(N.entropy(LOGITS), float(-(p * np.log(p)).sum()), rel_tol=1e-4)
    assert N.entropy(np.array([0.0, -np.inf, -np.inf], np.float32)) == 0.0
    assert math.isclose(N.entropy(np.zeros(4, np.float32)), math.log(4), rel_tol=1e-6)
    lse, h = N.logsumexp_entropy(LOGITS)
    assert math.isclose(lse, N.logsumexp(LOGITS), rel_tol=1e-6) and h == N.entropy(LOGITS)


def test_entropy_at_least_gives_the_full_pass_answer_mostly_without_it(monkeypatch):
    """The bounds from the tokens near the top decide as the full pass would, on a 262k
    vocabulary with peaked, flat and masked distributions and thresholds right at the entropy;
    where the entropy is far from the threshold on a peaked distribution, no full pass runs."""
    r = np.random.default_rng(5)
    cases = []
    for scale in (0.5, 2.0, 6.0, 12.0):
        x = (r.standard_normal(262_144) * scale).astype(np.float32)
        x[r.integers(0, x.size, 3)] += np.float32(8 * scale)  # a few clear favourites
        cases.append(x)
    masked = cases[-1].copy()
    masked[r.random(masked.size) < 0.5] = -np.inf
    cases += [masked, np.zeros(10, np.float32), np.array([3.0, -np.inf, 1.0], np.float32)]
    for x in cases:
        h = N.entropy(x)
        for tau in (0.0, h - 0.02, h - 1e-4, h, h + 1e-4, h + 0.02, h + 1.0, 50.0):
            assert N.entropy_at_least(x, tau) == (h >= tau), (h, tau)
    full_passes = []
    monkeypatch.setattr(N, "entropy", lambda x: full_passes.append(1) or 0.0)
    peaked = cases[-4]  # scale 12: a few hundred tokens within ln V + 8 nats of the top
    assert not N.entropy_at_least(peaked, 5.0) and not full_passes


def test_top_k_top_p_min_p():
    vals, idx = N.top_k(LOGITS, 5)
    assert list(idx) == list(np.argsort(-LOGITS)[:5]) and np.all(np.diff(vals) <= 0)
    assert np.isfinite(N.top_k_mask(LOGITS, 7)).sum() == 7
    x = N.top_p_mask(LOGITS, 0.5)
    kept = np.isfinite(x)
    p = N.softmax(LOGITS)
    assert p[kept].sum() >= 0.5 and p[kept].sum() - p[kept].min() < 0.5
    y = N.min_p_mask(LOGITS, 0.1)
    assert np.all(p[np.isfinite(y)] >= 0.1 * p.max() - 1e-7)
    assert N.argmax(N.apply_temperature(LOGITS, 0.5)) == int(np.argmax(LOGITS))


def test_top_k_searching_only_the_chunks_with_the_largest_maxima_is_exact():
    """Large vocabularies (a partial last chunk too), ties, masked tokens, and the k largest
    values crowded into one chunk or spread over many, for a few or hundreds (Top-H's 100,
    top-k sampling's 40): the values of a full sort."""
    r = np.random.default_rng(7)
    for trial in range(60):
        n = int(r.choice([262_144, 262_147, 151_936, 49_152]))
        x = (r.standard_normal(n) * r.choice([0.1, 3.0, 10.0])).astype(np.float32)
        if trial % 3 == 0:
            x[r.random(n) < 0.5] = -np.inf
        if trial % 4 == 0:
            x = np.round(x)  # many ties
        if trial % 5 == 0:
            x[100:110] += 100  # the top ten in one chunk
        if trial % 7 == 0:
            x[-2:] += 200  # in the last chunk, which is partial where n is no multiple of its size
        k = int(r.integers(1, 12)) if trial % 2 else int(r.integers(12, 400))  # larger k: smaller chunks
        vals, idx = N.top_k(x, k)
        np.testing.assert_array_equal(vals, np.sort(x)[::-1][:k])
        np.testing.assert_array_equal(x[idx], vals)
        assert len(set(idx.tolist())) == k


def test_sampling_is_seeded_and_respects_masks():
    masked = N.mask_inplace(LOGITS.copy(), np.arange(LOGITS.size) % 7 == 0)
    draws = [N.sample(masked, np.random.default_rng(3)) for _ in range(3)]
    assert len(set(draws)) == 1 and draws[0] % 7 == 0
    many = [N.sample(N.top_k_mask(LOGITS, 3), np.random.default_rng(s)) for s in range(200)]
    assert set(many) <= set(np.argsort(-LOGITS)[:3].tolist()) and len(set(many)) > 1


def test_sampling_on_the_top_k_draws_what_the_whole_vocabulary_draws():
    """`sample` works on the k tokens top_k_live keeps (ids ascending) instead of masked
    copies of the whole vocabulary: for every seed and setting the same token as the dense
    pipeline, ties with the k-th and masked tokens included."""
    r = np.random.default_rng(11)
    big = (r.standard_normal(262_144) * 3).astype(np.float32)
    tied = big.copy()
    tied[r.integers(0, tied.size, 6)] = np.sort(big)[-10]  # ties with the 10th largest
    masked = N.masked(big, r.random(big.size) < 0.0001)  # ~26 allowed: fewer than k
    for x in (big, tied, masked, LOGITS):
        for k, t, min_p, top_p in ((40, 0.8, 0.05, 0.95), (10, 1.3, 0.0, 1.0), (3, 0.5, 0.2, 0.5), (0, 1.0, 0.05, 0.9)):
            for seed in range(25):
                dense = N.top_p_mask(N.min_p_mask(N.apply_temperature(N.top_k_mask(x, k), t), min_p), top_p)
                want = N.sample(dense, np.random.default_rng(seed))
                ids, v = N.top_k_live(x, k)
                v = N.top_p_mask(N.min_p_mask(N.apply_temperature(v, t), min_p), top_p)
                assert int(ids[N.sample(v, np.random.default_rng(seed))]) == want, (k, t, seed)
    ids, _ = N.top_k_live(tied, 10)
    assert len(ids) > 10 and (np.diff(ids) > 0).all()  # the ties kept, ids ascending


def test_masked_sparse_and_dense_paths_agree():
    for every in (2, 50):  # dense (half allowed) and sparse (2% allowed)
        allowed = np.arange(LOGITS.size) % every == 0
        out = N.masked(LOGITS, allowed)
        assert (np.isfinite(out) == allowed).all()
        np.testing.assert_array_equal(out[allowed], LOGITS[allowed])
        assert N.argmax(out) == int(np.flatnonzero(allowed)[np.argmax(LOGITS[allowed])])


def test_backend_selection():
    """A wrong backend name is a user's error (it was a ValueError traceback from the CLI), and a
    config file naming one is refused with the file's name."""
    from assistant.config import load_settings
    from assistant.errors import UserError

    assert ops.backend("auto") is N and ops.backend("numpy") is N
    with pytest.raises(UserError, match="ops backend"):
        ops.backend("cuda")
    with pytest.raises(UserError, match="environment ASSISTANT_OPS_BACKEND: ops_backend must be one of auto, numpy"):
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("ASSISTANT_OPS_BACKEND", "cuda")
            load_settings()


@pytest.mark.skipif(not ops.torch_available(), reason="torch not installed (optional extra)")
def test_torch_backend_agrees_with_numpy():
    T = ops.backend("torch")
    close = lambda a, b: np.testing.assert_allclose(T.to_numpy(a), b, rtol=1e-5, atol=1e-5)  # noqa: E731
    close(T.log_softmax(LOGITS), N.log_softmax(LOGITS))
    assert math.isclose(T.entropy(LOGITS), N.entropy(LOGITS), rel_tol=1e-5)
    for a, b in zip(T.logsumexp_entropy(LOGITS), N.logsumexp_entropy(LOGITS), strict=True):
        assert math.isclose(a, b, rel_tol=1e-5)
    tv, ti = T.top_k(LOGITS, 9)
    nv, ni = N.top_k(LOGITS, 9)
    assert T.to_numpy(ti).tolist() == ni.tolist()
    for fn, arg in (("top_k_mask", 11), ("top_p_mask", 0.8), ("min_p_mask", 0.05)):
        a, b = T.to_numpy(getattr(T, fn)(LOGITS, arg)), getattr(N, fn)(LOGITS, arg)
        assert (np.isfinite(a) == np.isfinite(b)).all(), fn
    for k in (0, 40):
        for a, b in zip(T.top_k_live(LOGITS, k), N.top_k_live(LOGITS, k), strict=True):
            np.testing.assert_array_equal(T.to_numpy(a), b)
    allowed = np.arange(LOGITS.size) % 5 == 0
    assert (np.isfinite(T.to_numpy(T.mask_inplace(LOGITS.copy(), allowed))) == allowed).all()
    np.testing.assert_array_equal(T.to_numpy(T.masked(LOGITS, allowed)), N.masked(LOGITS, allowed))
    for seed in range(20):
        x = N.top_p_mask(N.top_k_mask(LOGITS, 40), 0.9)
        assert T.sample(x, np.random.default_rng(seed)) == N.sample(x, np.random.default_rng(seed))
    assert T.argmax(LOGITS) == N.argmax(LOGITS)
