"""The same logits kernels on torch, for models whose layers run on a GPU.

Inputs may be numpy arrays or tensors; outputs are tensors on `device`. `sample` draws its
uniform from the caller's numpy Generator so both backends give the same token for a seed.
"""

from __future__ import annotations

import numpy as np
import torch

name = "torch"
device = "cuda" if torch.cuda.is_available() else "cpu"


def asarray(x) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.to(device=device, dtype=torch.float32)
    return torch.as_tensor(np.asarray(x, dtype=np.float32), device=device)


def to_numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def argmax(logits) -> int:
    return int(torch.argmax(asarray(logits)))


def log_softmax(logits) -> torch.Tensor:
    return torch.log_softmax(asarray(logits), dim=-1)


def softmax(logits) -> torch.Tensor:
    return torch.softmax(asarray(logits), dim=-1)


def entropy(logits) -> float:
    logp = log_softmax(logits)
    finite = torch.isfinite(logp)
    return float(-(logp[finite].exp() * logp[finite]).sum())


def logsumexp(logits) -> float:
    return float(torch.logsumexp(asarray(logits), dim=-1))


def logsumexp_entropy(logits) -> tuple[float, float]:
    return logsumexp(logits), entropy(logits)


def entropy_at_least(logits, threshold: float) -> bool:
    """`entropy(logits) >= threshold`: on a GPU the full pass is cheap, so no bounds."""
    return entropy(logits) >= threshold


def top_k(logits, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    x = asarray(logits)
    k = max(1, min(int(k), x.shape[0]))
    values, idx = torch.topk(x, k, sorted=True)
    return values, idx


def apply_temperature(logits, temperature: float) -> torch.Tensor:
    if temperature <= 0:
        raise ValueError("temperature must be > 0 (use greedy for temperature 0)")
    return asarray(logits) / temperature


def top_k_mask(logits, k: int) -> torch.Tensor:
    x = asarray(logits).clone()
    if k <= 0 or k >= x.shape[0]:
        return x
    kth = torch.topk(x, k).values[-1]
    x[x < kth] = -torch.inf
    return x


def top_k_live(logits, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    x = asarray(logits)
    if k <= 0 or k >= x.shape[0]:
        ids = torch.nonzero(x > -torch.inf).flatten()
    else:
        kth = torch.topk(x, k).values[-1]
        ids = torch.nonzero((x >= kth) & (x > -torch.inf)).flatten()
    return ids, x[ids]


def top_p_mask(logits, p: float) -> torch.Tensor:
    x = asarray(logits).clone()
    if p >= 1.0:
        return x
    # stable sort so ties break by token id exactly as numpy's stable argsort does
    live = torch.nonzero(x > -torch.inf).flatten()
    order = live[torch.sort(-x[live], stable=True).indices]
    cum = torch.cumsum(torch.softmax(x[order], dim=-1), dim=-1)
    keep = int(torch.searchsorted(cum, torch.tensor([p], device=x.device, dtype=cum.dtype))[0]) + 1
    x[order[keep:]] = -torch.inf
    return x


def min_p_mask(logits, p: float) -> torch.Tensor:
    x = asarray(logits).clone()
    if p <= 0.0:
        return x
    cutoff = torch.max(x) + float(np.log(p))
    x[x < cutoff] = -torch.inf
    return x


def mask_inplace(logits, allowed) -> torch.Tensor:
    x = asarray(logits)
    allowed_t = torch.as_tensor(np.asarray(allowed, dtype=bool), device=x.device)
    x[~allowed_t] = -torch.inf
    return x


def masked(logits, allowed) -> torch.Tensor:
    x = asarray(logits)
    allowed_t = torch.as_tensor(np.asarray(allowed, dtype=bool), device=x.device)
    return torch.where(allowed_t, x, torch.tensor(-torch.inf, device=x.device))


def sample(logits, rng: np.random.Generator) -> int:
    x = asarray(logits)
    live = torch.nonzero(x > -torch.inf).flatten()
    cum = torch.cumsum(torch.softmax(x[live], dim=-1).to(torch.float64), dim=-1)
    u = rng.random() * float(cum[-1])
    idx = int(torch.searchsorted(cum, torch.tensor([u], dtype=cum.dtype, device=cum.device), right=True)[0])
    return int(live[min(idx, live.shape[0] - 1)])
