"""Ranking metrics shared by the retrieval and recommendation methods (LoL PRF, SSL recsys, model extraction).

Every function takes a score matrix ``scores`` of shape [Q, N] (Q queries or users, N documents or items; higher is
better) and returns one value per row, shape [Q], so that a caller averages over rows, or over seeds, itself.
Ranking is a stable sort by descending score: among equal scores the lower index ranks first, so that results do not
depend on the sort kernel. Relevance is a boolean (or 0/1) matrix [Q, N]; ``ndcg_at_k`` also takes graded gains.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "ranking",
    "recall_at_k",
    "precision_at_k",
    "hit_rate_at_k",
    "mrr_at_k",
    "ndcg_at_k",
    "average_precision",
    "agreement_at_k",
]


def _check(scores: Tensor, relevant: Tensor | None = None, k: int | None = None) -> None:
    if scores.dim() != 2:
        raise ValueError(f"scores must be a [queries, items] matrix, got shape {tuple(scores.shape)}")
    if relevant is not None and relevant.shape != scores.shape:
        raise ValueError(f"relevance shape {tuple(relevant.shape)} differs from scores shape {tuple(scores.shape)}")
    if k is not None and not 1 <= k <= scores.shape[1]:
        raise ValueError(f"k={k} must be between 1 and the number of items ({scores.shape[1]})")


def ranking(scores: Tensor) -> Tensor:
    """Item indices of each row from best to worst, [Q, N] (stable: ties keep index order)."""
    _check(scores)
    return torch.sort(scores, dim=1, descending=True, stable=True).indices


def _top_k_relevance(scores: Tensor, relevant: Tensor, k: int) -> Tensor:
    """The relevance of the items ranked 1..k, [Q, k] float."""
    _check(scores, relevant, k)
    return relevant.float().gather(1, ranking(scores)[:, :k])


def recall_at_k(scores: Tensor, relevant: Tensor, k: int) -> Tensor:
    """recall@k = |relevant ∩ top-k| / |relevant|, [Q] (NaN for a row without any relevant item)."""
    hits = _top_k_relevance(scores, relevant, k).sum(1)
    n_relevant = relevant.float().sum(1)
    return torch.where(n_relevant > 0, hits / n_relevant.clamp_min(1), torch.full_like(hits, float("nan")))


def precision_at_k(scores: Tensor, relevant: Tensor, k: int) -> Tensor:
    """precision@k = |relevant ∩ top-k| / k, [Q]."""
    return _top_k_relevance(scores, relevant, k).sum(1) / k


def hit_rate_at_k(scores: Tensor, relevant: Tensor, k: int) -> Tensor:
    """hit@k = 1 if any relevant item is in the top k, else 0, [Q]."""
    return (_top_k_relevance(scores, relevant, k).sum(1) > 0).float()


def mrr_at_k(scores: Tensor, relevant: Tensor, k: int) -> Tensor:
    """Reciprocal rank of the first relevant item within the top k (0 if none there), [Q]."""
    rel = _top_k_relevance(scores, relevant, k) > 0
    ranks = torch.arange(1, k + 1, dtype=torch.float32, device=rel.device).expand_as(rel)
    first = torch.where(rel, ranks, torch.full_like(ranks, math.inf)).min(1).values
    return torch.where(torch.isfinite(first), 1.0 / first, torch.zeros_like(first))


def ndcg_at_k(scores: Tensor, gains: Tensor, k: int) -> Tensor:
    """nDCG@k with linear gains: DCG@k = Σ_{r=1..k} g_r / log2(r+1), divided by the DCG@k of the ideal order, [Q].

    ``gains`` is the relevance matrix (0/1 or graded, ≥ 0); a row without any gain gets NaN.
    """
    _check(scores, gains, k)
    if (gains < 0).any():
        raise ValueError("gains must be non-negative")
    discount = 1.0 / torch.log2(torch.arange(2, k + 2, dtype=torch.float32, device=gains.device))  # [k]
    dcg = (_top_k_relevance(scores, gains, k) * discount).sum(1)
    ideal = (torch.sort(gains.float(), dim=1, descending=True).values[:, :k] * discount).sum(1)
    return torch.where(ideal > 0, dcg / ideal.clamp_min(1e-12), torch.full_like(dcg, float("nan")))


def average_precision(scores: Tensor, relevant: Tensor) -> Tensor:
    """AP over the whole ranking = mean over relevant items of precision at that item's rank, [Q] (MAP = its mean).

    NaN for a row without any relevant item.
    """
    _check(scores, relevant)
    rel = relevant.float().gather(1, ranking(scores))  # [Q, N] relevance in rank order
    ranks = torch.arange(1, rel.shape[1] + 1, dtype=torch.float32, device=rel.device)
    precision = rel.cumsum(1) / ranks
    n_relevant = rel.sum(1)
    ap = (precision * rel).sum(1) / n_relevant.clamp_min(1)
    return torch.where(n_relevant > 0, ap, torch.full_like(ap, float("nan")))


def agreement_at_k(scores_a: Tensor, scores_b: Tensor, k: int) -> Tensor:
    """Agreement@k = |top-k(a) ∩ top-k(b)| / k, the overlap of two models' top-k lists per row, [Q]."""
    _check(scores_a, scores_b, k)
    top_a = torch.zeros_like(scores_a, dtype=torch.bool).scatter_(1, ranking(scores_a)[:, :k], True)
    top_b = torch.zeros_like(scores_b, dtype=torch.bool).scatter_(1, ranking(scores_b)[:, :k], True)
    return (top_a & top_b).float().sum(1) / k
