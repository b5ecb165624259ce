"""Sequential recommendation, written once: synthetic interaction sequences with item clusters and Zipf popularity,
two small next-item recommenders (GRU4Rec-style and SASRec-style) and a black-box top-k query wrapper.

Items are ``0 … I−1``; the padding token is ``PAD = I`` (its own embedding row, never scored), so a score matrix
``[B, I]`` is indexed by item id directly and padding can never be recommended or sampled as a negative.

The world (``make_interactions``), after the card of method 16:

    items     I items in C clusters of equal size (a random assignment); popularity Zipf(a): the item of
              popularity rank r has weight r^−a (ranks a random permutation)
    users     each user prefers ``n_preferred`` clusters and starts in one of them; at every step
                  with prob. ``stay``     the next item comes from the current cluster,
                  otherwise               the user jumps to another preferred cluster,
              and within a cluster items are drawn ∝ popularity. At each jump, with prob. ``drift``, the cluster
              left behind is replaced in the preferred set by a random new one (the preference drifts).

Models (``GRURec``, ``SASRec``) read a left-padded batch ``[B, L]`` and return next-item scores at every position
``[B, L, I]``: position t scores the item after the prefix ``x[:t+1]``. Both are causal and ignore padding
exactly (the GRU keeps its state through a pad, attention never looks at a pad, positions count real items), so
the scores of a prefix do not depend on how much padding sits in front of it; ``last_scores`` gives ``[B, I]``.
Scores are dot products with the item embeddings (shared input/output table), as in GRU4Rec/SASRec.

``BlackBox`` is all an attacker may touch: ``query(prefixes) -> top-k item ids [B, k]`` (best first), no scores,
no gradients, and every prefix asked is one counted query.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "Interactions",
    "make_interactions",
    "zipf_popularity",
    "left_pad",
    "prefixes_of",
    "GRURec",
    "SASRec",
    "make_recommender",
    "last_scores",
    "train_next_item",
    "next_item_loss",
    "BlackBox",
]


# --- the data -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Interactions:
    """User sequences ``[U, T]`` (item ids, no padding) and the world that generated them."""

    sequences: Tensor  # [U, T] long
    cluster_of: Tensor  # [I] long
    popularity: Tensor  # [I] float, sums to 1
    n_items: int
    n_clusters: int

    @property
    def pad(self) -> int:
        return self.n_items


def zipf_popularity(n_items: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """p(i) ∝ rank(i)^−a with a random rank permutation, [I], summing to 1."""
    ranks = rng.permutation(n_items) + 1
    weights = ranks.astype(float) ** -exponent
    return weights / weights.sum()


def make_interactions(
    n_items: int,
    n_clusters: int,
    n_users: int,
    seq_len: int,
    seed: int,
    *,
    zipf: float = 1.0,
    stay: float = 0.7,
    n_preferred: int = 3,
    drift: float = 0.1,
) -> Interactions:
    """Draw ``n_users`` sequences of ``seq_len`` items (see the module docstring). Deterministic in ``seed``."""
    if n_items < n_clusters or n_preferred > n_clusters:
        raise ValueError(f"need n_items ≥ n_clusters ≥ n_preferred, got {n_items}, {n_clusters}, {n_preferred}")
    rng = np.random.default_rng(seed)
    cluster_of = rng.permutation(np.arange(n_items) % n_clusters)
    popularity = zipf_popularity(n_items, zipf, rng)
    members = [np.flatnonzero(cluster_of == c) for c in range(n_clusters)]
    within = [popularity[m] / popularity[m].sum() for m in members]
    preferred = np.stack([rng.choice(n_clusters, n_preferred, replace=False) for _ in range(n_users)])  # [U, P]
    slot = rng.integers(0, n_preferred, n_users)  # which preferred cluster the user is in
    seqs = np.empty((n_users, seq_len), dtype=np.int64)
    users = np.arange(n_users)
    for t in range(seq_len):
        if t > 0:
            jump = rng.random(n_users) > stay
            if n_preferred > 1:
                # move to another preferred slot (uniform among the others)
                step = rng.integers(1, n_preferred, n_users)
                new_slot = (slot + step) % n_preferred
                drifting = jump & (rng.random(n_users) < drift)
                fresh = rng.integers(0, n_clusters, n_users)
                # the cluster left behind is replaced by a fresh one (a duplicate is harmless)
                preferred[users[drifting], slot[drifting]] = fresh[drifting]
                slot = np.where(jump, new_slot, slot)
        current = preferred[users, slot]
        for c in range(n_clusters):
            who = np.flatnonzero(current == c)
            if len(who):
                seqs[who, t] = rng.choice(members[c], size=len(who), p=within[c])
    return Interactions(
        sequences=torch.from_numpy(seqs),
        cluster_of=torch.from_numpy(cluster_of),
        popularity=torch.from_numpy(popularity).float(),
        n_items=n_items,
        n_clusters=n_clusters,
    )


def left_pad(prefixes: list[Tensor] | Tensor, length: int, pad: int) -> Tensor:
    """Left-pad (or left-truncate) each 1-D prefix to ``length``: ``[B, length]``."""
    rows = [p[-length:] for p in prefixes]
    out = torch.full((len(rows), length), pad, dtype=torch.long)
    for b, row in enumerate(rows):
        if len(row):
            out[b, length - len(row) :] = row
    return out


def prefixes_of(sequences: Tensor, pad: int) -> tuple[Tensor, Tensor]:
    """Every proper prefix of every sequence, left-padded to T−1, and its real next item.

    ``sequences [N, T]`` → prefixes ``[N·(T−1), T−1]`` (row n·(T−1) + t holds ``x[:t+1]``), next items ``[N·(T−1)]``.
    """
    n, length = sequences.shape
    rows, targets = [], []
    for t in range(1, length):
        block = torch.full((n, length - 1), pad, dtype=torch.long)
        block[:, length - 1 - t :] = sequences[:, :t]
        rows.append(block)
        targets.append(sequences[:, t])
    prefixes = torch.stack(rows, 1).reshape(n * (length - 1), length - 1)
    return prefixes, torch.stack(targets, 1).reshape(-1)


# --- the models ----------------------------------------------------------------------------------------------


class GRURec(nn.Module):
    """GRU4Rec-style: item embedding → GRU → dot product with the item embeddings. A pad keeps the state."""

    def __init__(self, n_items: int, dim: int):
        super().__init__()
        self.n_items = n_items
        self.emb = nn.Embedding(n_items + 1, dim)  # row n_items is PAD
        self.cell = nn.GRUCell(dim, dim)
        nn.init.normal_(self.emb.weight, std=0.1)

    def forward(self, seqs: Tensor) -> Tensor:
        """``seqs [B, L]`` (left-padded) → scores ``[B, L, I]``."""
        real = (seqs != self.n_items).unsqueeze(-1).float()  # [B, L, 1]
        x = self.emb(seqs)  # [B, L, d]
        h = x.new_zeros(x.shape[0], x.shape[2])
        states = []
        for t in range(seqs.shape[1]):
            # h_t = GRU(x_t, h_{t−1}) on a real item, h_{t−1} on a pad
            h = real[:, t] * self.cell(x[:, t], h) + (1 - real[:, t]) * h
            states.append(h)
        hidden = torch.stack(states, 1)  # [B, L, d]
        return hidden @ self.emb.weight[: self.n_items].T


class _Block(nn.Module):
    """Pre-norm causal self-attention + point-wise feed-forward (SASRec's block)."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.ff = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, h: Tensor, allowed: Tensor) -> Tensor:
        """``h [B, L, d]``, ``allowed [B, 1, L, L]`` (query × key) → ``[B, L, d]``."""
        b, n, d = h.shape
        q, k, v = self.qkv(self.norm1(h)).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        # softmax(q kᵀ / √d_h) over the allowed keys
        att = (q @ k.transpose(-1, -2)) / math.sqrt(d // self.heads)
        att = att.masked_fill(~allowed, float("-inf")).softmax(-1)
        h = h + self.drop(self.out((att @ v).transpose(1, 2).reshape(b, n, d)))
        return h + self.drop(self.ff(self.norm2(h)))


class SASRec(nn.Module):
    """SASRec-style: item + position embedding, ``n_blocks`` causal attention blocks, dot product with the items.

    Positions count real items (the first real item is position 0), keys exclude pads, a pad query attends
    to itself only (its output is never used), so a prefix's scores ignore the padding in front of it."""

    def __init__(self, n_items: int, dim: int, max_len: int, n_blocks: int = 2, heads: int = 2, dropout: float = 0.0):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim={dim} must be divisible by heads={heads}")
        self.n_items, self.max_len = n_items, max_len
        self.emb = nn.Embedding(n_items + 1, dim)
        self.pos = nn.Embedding(max_len, dim)
        self.blocks = nn.ModuleList(_Block(dim, heads, dropout) for _ in range(n_blocks))
        self.norm = nn.LayerNorm(dim)
        nn.init.normal_(self.emb.weight, std=0.1)
        nn.init.normal_(self.pos.weight, std=0.1)

    def encode(self, seqs: Tensor) -> Tensor:
        """``seqs [B, L]`` → hidden states ``[B, L, d]``."""
        real = seqs != self.n_items  # [B, L]
        position = (real.long().cumsum(1) - 1).clamp(0, self.max_len - 1)
        h = self.emb(seqs) * math.sqrt(self.emb.embedding_dim) + self.pos(position)
        n = seqs.shape[1]
        causal = torch.ones(n, n, dtype=torch.bool, device=seqs.device).tril()
        eye = torch.eye(n, dtype=torch.bool, device=seqs.device)
        # query t may attend to key s ≤ t if s is a real item (a pad query to itself only)
        allowed = (causal & real.unsqueeze(1)) | eye  # [B, L, L]
        for block in self.blocks:
            h = block(h, allowed.unsqueeze(1))
        return self.norm(h)

    def forward(self, seqs: Tensor) -> Tensor:
        """``seqs [B, L]`` (left-padded) → scores ``[B, L, I]``."""
        return self.encode(seqs) @ self.emb.weight[: self.n_items].T


def make_recommender(arch: str, n_items: int, dim: int, max_len: int, n_blocks: int = 2) -> nn.Module:
    """``"sasrec"`` or ``"gru"``."""
    if arch == "sasrec":
        return SASRec(n_items, dim, max_len, n_blocks=n_blocks)
    if arch == "gru":
        return GRURec(n_items, dim)
    raise ValueError(f"unknown recommender {arch!r}: use 'sasrec' or 'gru'")


def last_scores(model: nn.Module, prefixes: Tensor) -> Tensor:
    """Scores of the next item after each left-padded prefix, ``[B, I]``."""
    return model(prefixes)[:, -1]


# --- training a recommender on real sequences ---------------------------------------------------------------


def next_item_loss(scores: Tensor, sequences: Tensor) -> Tensor:
    """Cross-entropy of the real next item at every position: ``scores [B, T, I]`` of ``sequences [B, T]``
    (position t predicts x_{t+1}; the last position has no target)."""
    return F.cross_entropy(scores[:, :-1].reshape(-1, scores.shape[-1]), sequences[:, 1:].reshape(-1))


def train_next_item(
    model: nn.Module,
    sequences: Tensor,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    generator: torch.Generator,
    on_step=None,
) -> nn.Module:
    """Adam on the next-item cross-entropy over all items (the victim's training). ``on_step(step, loss, model)``."""
    opt = torch.optim.Adam(model.parameters(), lr=lr, foreach=True)
    model.train()
    step = 0
    for _ in range(epochs):
        for idx in torch.randperm(len(sequences), generator=generator).split(batch_size):
            batch = sequences[idx]
            loss = next_item_loss(model(batch), batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            if on_step is not None:
                on_step(step, loss.detach(), model)
    model.eval()
    return model


# --- the black box -------------------------------------------------------------------------------------------


class BlackBox:
    """The victim as an attacker sees it: a ranked top-k list per prefix, nothing else; every prefix is a query."""

    def __init__(self, model: nn.Module, k: int):
        if not 1 <= k <= model.n_items:
            raise ValueError(f"k={k} must be between 1 and the number of items ({model.n_items})")
        self._model = model
        self.k = k
        self.n_items = model.n_items
        self.pad = model.n_items
        self.n_queries = 0

    @torch.no_grad()
    def query(self, prefixes: Tensor) -> Tensor:
        """``prefixes [B, L]`` (left-padded) → the victim's top-k item ids ``[B, k]``, best first."""
        self.n_queries += prefixes.shape[0]
        was_training = self._model.training
        self._model.eval()
        scores = last_scores(self._model, prefixes)
        self._model.train(was_training)
        return scores.topk(self.k, dim=1).indices

    @torch.no_grad()
    def query_sequences(self, sequences: Tensor) -> Tensor:
        """The lists for every proper prefix of ``sequences [N, T]`` at once: ``[N, T−1, k]``; N·(T−1) queries
        (a causal model scores all prefixes of a sequence in one pass; the count is the same as asking each)."""
        n, length = sequences.shape
        self.n_queries += n * (length - 1)
        self._model.eval()
        scores = self._model(sequences)[:, :-1]  # [N, T−1, I]
        return scores.topk(self.k, dim=-1).indices
