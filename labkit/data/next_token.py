"""A synthetic next-token world with "factual" and "creative" contexts, and its exact next-token distributions.

Vocabulary of ``m`` tokens; a context is the previous two tokens (a, b), so there are m² contexts. The first token
decides the kind of context:

    factual  (a < m/2):  next = b with probability ``p_copy``, else uniform over all m tokens
    creative (a ≥ m/2):  next uniform over the ``group_size``-token group that contains b

so a factual context has one clear answer (low entropy) and a creative one many equally good answers (entropy
log group_size). The world itself is deterministic; a seed only picks which contexts are held out
(:func:`split_contexts`) and which labels are drawn (:func:`sample_next_tokens`), from a CPU ``torch.Generator``,
so a seed fixes the same data on any device.

>>> world = make_next_token_world(vocab_size=8, group_size=4)
>>> world.contexts.shape, world.probs.shape, int(world.factual.sum())
(torch.Size([64, 2]), torch.Size([64, 8]), 32)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class NextTokenWorld:
    """Every context ``(C, 2)`` (a, b), its true next-token distribution ``(C, m)`` and its kind ``(C,)``."""

    contexts: torch.Tensor  # (C, 2) int64, C = m²
    probs: torch.Tensor  # (C, m) float32, rows sum to 1
    factual: torch.Tensor  # (C,) bool: True for a < m/2
    group_size: int
    p_copy: float

    @property
    def vocab_size(self) -> int:
        return int(self.probs.shape[1])

    @property
    def n_contexts(self) -> int:
        return int(self.probs.shape[0])

    def entropy(self) -> torch.Tensor:
        """H(p(· | a, b)) per context ``(C,)`` (nats): the lowest expected cross-entropy any model can reach."""
        p = self.probs
        return -(p * p.clamp_min(1e-30).log()).sum(-1)

    def to(self, device) -> NextTokenWorld:
        return NextTokenWorld(
            self.contexts.to(device), self.probs.to(device), self.factual.to(device), self.group_size, self.p_copy
        )


def make_next_token_world(vocab_size: int = 64, group_size: int = 16, p_copy: float = 0.9) -> NextTokenWorld:
    """All m² contexts (a, b) with their true next-token distributions (see the module docstring)."""
    if vocab_size % 2 or vocab_size % group_size:
        raise ValueError(f"vocab_size={vocab_size} must be even and a multiple of group_size={group_size}")
    if not 0.0 <= p_copy <= 1.0:
        raise ValueError(f"p_copy={p_copy} must be a probability")
    m = vocab_size
    a, b = torch.meshgrid(torch.arange(m), torch.arange(m), indexing="ij")
    contexts = torch.stack([a.reshape(-1), b.reshape(-1)], dim=1)  # (C, 2)
    factual = contexts[:, 0] < m // 2
    # factual: p_copy on b plus (1 − p_copy) spread uniformly over all m tokens                       (C, m)
    copy = torch.nn.functional.one_hot(contexts[:, 1], m).float()
    probs_factual = p_copy * copy + (1.0 - p_copy) / m
    # creative: uniform over the group {g·G, …, g·G + G − 1} with g = b // G                            (C, m)
    group = torch.arange(m) // group_size
    same_group = (group[None, :] == (contexts[:, 1] // group_size)[:, None]).float()
    probs_creative = same_group / group_size
    probs = torch.where(factual[:, None], probs_factual, probs_creative)
    return NextTokenWorld(contexts, probs, factual, group_size, p_copy)


def split_contexts(n_contexts: int, train_frac: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A random split of the context indices into (train, held-out), ``round(train_frac·C)`` for training."""
    if not 0.0 < train_frac < 1.0:
        raise ValueError(f"train_frac={train_frac} must be in (0, 1)")
    order = torch.randperm(n_contexts, generator=torch.Generator().manual_seed(seed))
    n_train = max(1, min(n_contexts - 1, round(train_frac * n_contexts)))
    return order[:n_train].sort().values, order[n_train:].sort().values


def sample_next_tokens(probs: torch.Tensor, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` (context row, next token) draws: rows uniform over ``probs (C, m)``, the token from that row's
    distribution (inverse CDF: the first token whose cumulative probability passes a uniform draw). Returns
    ``(rows (n,), tokens (n,))`` int64 on the CPU."""
    probs = probs.cpu()
    rows = torch.randint(probs.shape[0], (n,), generator=generator)
    cdf = probs.double().cumsum(1)  # (C, m)
    cdf = cdf / cdf[:, -1:]
    u = torch.rand(n, 1, generator=generator, dtype=torch.float64)
    tokens = torch.empty(n, dtype=torch.long)
    for start in range(0, n, _CHUNK):  # in chunks: the gathered CDF rows are (chunk, m) float64
        stop = min(n, start + _CHUNK)
        tokens[start:stop] = torch.searchsorted(cdf[rows[start:stop]], u[start:stop], right=True).squeeze(1)
    return rows, tokens.clamp_max(probs.shape[1] - 1)


#: draws per chunk in :func:`sample_next_tokens` (65,536 × m float64: 32 MB at m = 64)
_CHUNK = 65_536


def max_entropy(vocab_size: int) -> float:
    """log m: the entropy of the uniform distribution, the KL budget's ceiling (ρ < log m)."""
    return math.log(vocab_size)
