"""A long-tailed synthetic catalogue with correlated categorical item features, users, logged interactions, and a
two-tower retrieval model (per-field embeddings → MLP → L2-normalised) with the in-batch softmax and logQ correction.

Shared by the recommendation methods (SSL recsys first). Everything is seeded numpy on the data side, so that a seed
gives the same catalogue on every machine, and torch on the model side.

The catalogue (one row per item, ``F = 7`` categorical fields)::

    item_id     K values    (unique)
    category    20          uniform
    subcategory 100         category·5 + U{0..4}        (with prob. `noise` a random one)   ← correlated with category
    brand       200         uniform
    tier        5           brand mod 5                                                       ← a function of brand
    price       10          2·tier + U{0, 1}            (with prob. `noise` a random one)   ← correlated with tier
    style       30          ⌊3·category/2⌋ + U{0,1,2}   (with prob. `noise` a random one)   ← correlated with category

Popularity is Zipf: the item at popularity rank r (a random order) has weight r^(−zipf). Users have a preferred
category, price bucket and style (the style drawn from the category like an item's), and a user u picks item i with

    P(i | u) ∝ pop_i · exp(2·[category_i = c_u] + 1·[|price_i − p_u| ≤ 1] + 1.5·[style_i = s_u]).

A two-tower model scores s(x, y) = ⟨q(x), g(y)⟩; the towers here are stacked: M independent models (arms × seeds)
held as one set of tensors with the model first, trained together because their summed loss separates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

ITEM_FIELDS = ("item_id", "category", "subcategory", "brand", "tier", "price", "style")
USER_FIELDS = ("user_id", "pref_category", "pref_price", "pref_style")
N_CATEGORIES, N_SUBCATEGORIES, N_BRANDS, N_TIERS, N_PRICES, N_STYLES = 20, 100, 200, 5, 10, 30
#: the interaction model's weights on a category match, a near price and a style match
W_CATEGORY, W_PRICE, W_STYLE = 2.0, 1.0, 1.5


@dataclass(frozen=True)
class Catalogue:
    """The item table: ``features (K, F)`` int64 (one column per field of ``ITEM_FIELDS``), the number of values of
    each field, and the Zipf popularity ``(K,)`` (sums to 1)."""

    features: np.ndarray
    cardinalities: tuple[int, ...]
    popularity: np.ndarray

    @property
    def n_items(self) -> int:
        return len(self.features)


@dataclass(frozen=True)
class Users:
    """The user table: ``features (U, 4)`` int64 (user id, preferred category, price bucket, style)."""

    features: np.ndarray
    cardinalities: tuple[int, ...]


@dataclass(frozen=True)
class Interactions:
    """Logged (user, item) pairs, split into train / validation / test (each ``(n, 2)`` int64: user, item)."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


@dataclass(frozen=True)
class RecsysData:
    """One seed's problem: the catalogue, the users and the logged interactions."""

    catalogue: Catalogue
    users: Users
    interactions: Interactions

    def train_counts(self) -> np.ndarray:
        """How often each item appears in the training pairs, ``(K,)``."""
        return np.bincount(self.interactions.train[:, 1], minlength=self.catalogue.n_items)


def _noisy(rng: np.random.Generator, values: np.ndarray, n_values: int, noise: float) -> np.ndarray:
    """``values`` with each entry replaced by a uniform random value with probability ``noise``."""
    swap = rng.random(len(values)) < noise
    return np.where(swap, rng.integers(0, n_values, len(values)), values)


def style_of(category: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Style drawn from the category: ⌊3·c/2⌋ + U{0, 1, 2} (mod 30)."""
    return (3 * category // 2 + rng.integers(0, 3, len(category))) % N_STYLES


def make_catalogue(n_items: int, rng: np.random.Generator, zipf: float = 1.1, noise: float = 0.1) -> Catalogue:
    """The item table of the module docstring, with Zipf(``zipf``) popularity over a random order of the items."""
    category = rng.integers(0, N_CATEGORIES, n_items)
    subcategory = _noisy(rng, category * 5 + rng.integers(0, 5, n_items), N_SUBCATEGORIES, noise)
    brand = rng.integers(0, N_BRANDS, n_items)
    tier = brand % N_TIERS
    price = _noisy(rng, 2 * tier + rng.integers(0, 2, n_items), N_PRICES, noise)
    style = _noisy(rng, style_of(category, rng), N_STYLES, noise)
    features = np.stack([np.arange(n_items), category, subcategory, brand, tier, price, style], axis=1)
    # pop_i ∝ rank_i^(−zipf), ranks a random permutation of 1..K
    weight = rng.permutation(n_items).astype(np.float64) + 1.0
    popularity = weight**-zipf
    cards = (n_items, N_CATEGORIES, N_SUBCATEGORIES, N_BRANDS, N_TIERS, N_PRICES, N_STYLES)
    return Catalogue(features.astype(np.int64), cards, popularity / popularity.sum())


def make_users(n_users: int, rng: np.random.Generator) -> Users:
    """Users with a preferred category, price bucket and style (drawn from the category like an item's)."""
    category = rng.integers(0, N_CATEGORIES, n_users)
    price = rng.integers(0, N_PRICES, n_users)
    style = style_of(category, rng)
    features = np.stack([np.arange(n_users), category, price, style], axis=1).astype(np.int64)
    return Users(features, (n_users, N_CATEGORIES, N_PRICES, N_STYLES))


def preference_logits(catalogue: Catalogue, users: Users) -> np.ndarray:
    """log P(i | u) up to a constant per user, ``(U, K)``: log pop_i + 2·[cat] + 1·[|price − p| ≤ 1] + 1.5·[style]."""
    item, user = catalogue.features, users.features
    cat = item[None, :, 1] == user[:, None, 1]
    near = np.abs(item[None, :, 5] - user[:, None, 2]) <= 1
    style = item[None, :, 6] == user[:, None, 3]
    return np.log(catalogue.popularity)[None, :] + W_CATEGORY * cat + W_PRICE * near + W_STYLE * style


def sample_interactions(catalogue: Catalogue, users: Users, n_pairs: int, rng: np.random.Generator) -> np.ndarray:
    """``n_pairs`` (user, item) pairs ``(n, 2)``: the user uniform, the item from P(i | u) (inverse CDF, vectorised)."""
    logits = preference_logits(catalogue, users)
    probs = np.exp(logits - logits.max(1, keepdims=True))
    cdf = np.cumsum(probs / probs.sum(1, keepdims=True), axis=1)
    cdf[:, -1] = 1.0
    n_users, n_items = cdf.shape
    user = rng.integers(0, n_users, n_pairs)
    # row u's CDF shifted by u makes one increasing array: one searchsorted for every pair
    flat = (cdf + np.arange(n_users)[:, None]).ravel()
    item = np.searchsorted(flat, user + rng.random(n_pairs), side="right") - user * n_items
    return np.stack([user, np.minimum(item, n_items - 1)], axis=1).astype(np.int64)


def make_recsys_data(
    seed: int,
    n_items: int = 2000,
    n_users: int = 3000,
    n_train: int = 20_000,
    n_val: int = 2_500,
    n_test: int = 5_000,
    zipf: float = 1.1,
    noise: float = 0.1,
) -> RecsysData:
    """One seed's catalogue, users and interactions (train / validation / test drawn independently)."""
    rng = np.random.default_rng(seed)
    catalogue = make_catalogue(n_items, rng, zipf, noise)
    users = make_users(n_users, rng)
    pairs = sample_interactions(catalogue, users, n_train + n_val + n_test, rng)
    split = Interactions(pairs[:n_train], pairs[n_train : n_train + n_val], pairs[n_train + n_val :])
    return RecsysData(catalogue, users, split)


def frequency_buckets(counts: np.ndarray, tail_max: int = 3, head_min: int = 31) -> np.ndarray:
    """Bucket of each item by its training frequency: 0 = tail (≤ tail_max), 1 = mid, 2 = head (≥ head_min)."""
    return np.where(counts <= tail_max, 0, np.where(counts >= head_min, 2, 1))


# --- the two-tower model (stacked: M independent models held as one set of tensors) ---------------------------


class StackedTower(nn.Module):
    """M independent towers over the same categorical fields: per-field embeddings (dim ``emb_dim``), concatenated,
    → Linear → ReLU → Linear → L2 normalise. A masked field's embedding is replaced by zeros (the "missing" vector).

    Parameters are ``(M, ...)``: model m only ever reads its own slice, so gradients and Adam updates are exactly
    those of M separate models."""

    def __init__(
        self, cardinalities, n_models: int, emb_dim: int = 16, hidden: int = 64, out: int = 32, generator=None
    ):
        super().__init__()
        offsets = np.concatenate([[0], np.cumsum(cardinalities)[:-1]])
        self.register_buffer("offsets", torch.as_tensor(offsets, dtype=torch.long), persistent=False)
        n_values, n_fields = int(sum(cardinalities)), len(cardinalities)
        fan_in = n_fields * emb_dim

        def uniform(*shape, bound):
            return nn.Parameter((torch.rand(*shape, generator=generator) * 2 - 1) * bound)

        self.table = nn.Parameter(torch.randn(n_models, n_values, emb_dim, generator=generator) * 0.1)
        self.w1 = uniform(n_models, fan_in, hidden, bound=1 / math.sqrt(fan_in))
        self.b1 = uniform(n_models, 1, hidden, bound=1 / math.sqrt(fan_in))
        self.w2 = uniform(n_models, hidden, out, bound=1 / math.sqrt(hidden))
        self.b2 = uniform(n_models, 1, out, bound=1 / math.sqrt(hidden))

    def forward(self, fields: Tensor, masked: Tensor | None = None, models: Tensor | None = None) -> Tensor:
        """``fields (M, N, F)`` int64 values per field, ``masked (M, N, F)`` bool (True = replace by zeros)
        → ``(M, N, out)`` unit vectors. ``models (M',)`` runs only those models (then ``fields`` is ``(M', N, F)``)."""
        n_models, n, _ = fields.shape
        table, w1, b1, w2, b2 = self.table, self.w1, self.b1, self.w2, self.b2
        if models is not None:
            table, w1, b1, w2, b2 = (t[models] for t in (table, w1, b1, w2, b2))
        rows = torch.arange(n_models, device=fields.device).view(-1, 1, 1)
        emb = table[rows, fields + self.offsets]  # (M, N, F, d)
        if masked is not None:
            emb = emb * (~masked).unsqueeze(-1).to(emb.dtype)
        h = torch.relu(torch.baddbmm(b1, emb.reshape(n_models, n, -1), w1))  # (M, N, hidden)
        return nn.functional.normalize(torch.baddbmm(b2, h, w2), dim=-1)  # (M, N, out)


class TwoTower(nn.Module):
    """M stacked two-tower models: a query (user) tower q(x) and an item tower g(y), both unit-norm."""

    def __init__(self, user_cards, item_cards, n_models: int, emb_dim=16, hidden=64, out=32, generator=None):
        super().__init__()
        self.query = StackedTower(user_cards, n_models, emb_dim, hidden, out, generator)
        self.item = StackedTower(item_cards, n_models, emb_dim, hidden, out, generator)


def log_sampling_probability(counts: np.ndarray, smoothing: float = 1.0) -> np.ndarray:
    """log p_j, the probability that a training draw is item j, from training counts (add-``smoothing`` so that an
    item never seen in training has a finite log p; it never appears as an in-batch candidate anyway)."""
    counts = counts.astype(np.float64) + smoothing
    return np.log(counts / counts.sum())


def in_batch_softmax_loss(query: Tensor, items: Tensor, log_q: Tensor, tau: float) -> Tensor:
    """The retrieval loss with in-batch negatives and the sampling-bias (logQ) correction (Yi et al., RecSys 2019).

    ``query, items (..., B, d)`` (row i of each is the logged pair i), ``log_q (..., B)`` the log sampling
    probability of each in-batch item; returns the mean over the batch, shape ``(...)``."""
    # s(x_i, y_j) = ⟨q(x_i), g(y_j)⟩/τ − log p_j                                                   (..., B, B)
    logits = query @ items.transpose(-1, -2) / tau - log_q.unsqueeze(-2)
    # L = −(1/B)·Σ_i log softmax_j(s(x_i, y_j))[j = i]: the positive is the diagonal                  (...)
    return -torch.diagonal(logits.log_softmax(-1), dim1=-2, dim2=-1).mean(-1)
