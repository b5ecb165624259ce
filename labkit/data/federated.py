"""Federated data: scikit-learn's digits split among simulated clients.

Three generic pieces that any federated method (FedLD, RFFL, a Flower client) can reuse:

- :func:`load_digits_split`: the 8×8 digits, features scaled to [0, 1] (divided by 16), a 70/30
  stratified train/test split;
- :func:`dirichlet_split`: label skew. For every class c draw shares q_c ~ Dirichlet(α·1_m) and deal
  the class-c samples to the m clients in those shares; small α → each client sees few classes;
- :class:`FeatureShift`: per-client feature shift, an image translation then a contrast/brightness
  change x' = clip(a·x + b, 0, 1), the toy version of "each hospital has its own scanner".

Everything here is NumPy; the methods move arrays to torch on their device.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class DigitsSplit:
    """Train and test arrays (float32 features in [0, 1], int64 labels) and the image side."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    n_classes: int = 10
    side: int = 8


def load_digits_split(test_size: float = 0.3, seed: int = 0) -> DigitsSplit:
    """scikit-learn digits (1797 images 8×8, shipped with the package), x/16, stratified split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=test_size, stratify=y, random_state=seed)
    return DigitsSplit(x_tr, y_tr, x_te, y_te)


def dirichlet_shares(n_classes: int, n_clients: int, alpha: float, rng: np.random.Generator) -> np.ndarray:
    """Q ∈ R^{C×m}, row c ~ Dirichlet(α·1_m): the share of class c that each client receives."""
    return rng.dirichlet(np.full(n_clients, float(alpha)), size=n_classes)


def deal_by_shares(labels: np.ndarray, shares: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffle each class's indices and cut them at the cumulative shares: n_ic ≈ Q[c, i]·n_c."""
    n_clients = shares.shape[1]
    parts: list[list[np.ndarray]] = [[] for _ in range(n_clients)]
    for c, q in enumerate(shares):
        idx = rng.permutation(np.flatnonzero(labels == c))
        cuts = np.round(np.cumsum(q)[:-1] * len(idx)).astype(int)
        for i, chunk in enumerate(np.split(idx, cuts)):
            parts[i].append(chunk)
    return [np.sort(np.concatenate(p)).astype(np.int64) for p in parts]


def fill_empty_clients(parts: list[np.ndarray]) -> list[np.ndarray]:
    """Give each empty client one sample taken from the currently largest client."""
    parts = [p.copy() for p in parts]
    for i in range(len(parts)):
        if len(parts[i]) == 0:
            donor = int(np.argmax([len(p) for p in parts]))
            parts[i], parts[donor] = parts[donor][-1:], parts[donor][:-1]
    return parts


def dirichlet_split(
    labels, n_clients: int, alpha: float, rng: np.random.Generator, max_tries: int = 100
) -> list[np.ndarray]:
    """Label-skew partition of ``range(len(labels))`` into ``n_clients`` sorted index arrays.

    Class c is dealt to the clients in shares q_c ~ Dirichlet(α·1_m). Draws with an empty client are
    redrawn (up to ``max_tries``); if that still fails, empty clients take one sample from the largest.
    Every sample lands in exactly one client and every client is non-empty.
    """
    labels = np.asarray(labels)
    if n_clients < 1 or n_clients > len(labels):
        raise ValueError(f"n_clients={n_clients} must be in [1, {len(labels)}]")
    classes = int(labels.max()) + 1
    for _ in range(max_tries):
        parts = deal_by_shares(labels, dirichlet_shares(classes, n_clients, alpha, rng), rng)
        if min(len(p) for p in parts) > 0:
            return parts
    return fill_empty_clients(parts)


def label_proportions(labels, parts: list[np.ndarray], n_classes: int) -> np.ndarray:
    """π ∈ R^{m×C}: π_ic = fraction of client i's samples that have label c."""
    labels = np.asarray(labels)
    counts = np.stack([np.bincount(labels[p], minlength=n_classes) for p in parts]).astype(float)
    return counts / counts.sum(axis=1, keepdims=True)


@dataclass(frozen=True)
class FeatureShift:
    """One client's acquisition shift: translate the image by (dx, dy) pixels (zeros fill in),
    then x' = clip(contrast·x + brightness, 0, 1)."""

    dx: int = 0
    dy: int = 0
    contrast: float = 1.0
    brightness: float = 0.0

    def __call__(self, x: np.ndarray, side: int = 8) -> np.ndarray:
        img = translate(x.reshape(-1, side, side), self.dx, self.dy)
        out = np.clip(self.contrast * img + self.brightness, 0.0, 1.0)
        return out.reshape(x.shape).astype(np.float32)


def translate(images: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """Shift images (n, H, W) right by dx and down by dy pixels; vacated pixels become 0."""
    out = np.zeros_like(images)
    h, w = images.shape[1:]
    src_r, dst_r = slice(max(-dy, 0), h - max(dy, 0)), slice(max(dy, 0), h - max(-dy, 0))
    src_c, dst_c = slice(max(-dx, 0), w - max(dx, 0)), slice(max(dx, 0), w - max(-dx, 0))
    out[:, dst_r, dst_c] = images[:, src_r, src_c]
    return out


def random_feature_shifts(
    n_clients: int,
    rng: np.random.Generator,
    max_translate: int = 1,
    contrast: tuple[float, float] = (0.5, 1.5),
    brightness: tuple[float, float] = (0.0, 0.3),
) -> list[FeatureShift]:
    """One :class:`FeatureShift` per client: integer translation in [−t, t]², contrast and
    brightness drawn uniformly from the given ranges."""
    return [
        FeatureShift(
            int(rng.integers(-max_translate, max_translate + 1)),
            int(rng.integers(-max_translate, max_translate + 1)),
            float(rng.uniform(*contrast)),
            float(rng.uniform(*brightness)),
        )
        for _ in range(n_clients)
    ]


def client_arrays(
    x: np.ndarray, y: np.ndarray, parts: list[np.ndarray], shifts: list[FeatureShift] | None = None, side: int = 8
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(x_i, y_i) per client, with client i's feature shift applied when ``shifts`` is given."""
    out = []
    for i, idx in enumerate(parts):
        xi = x[idx] if shifts is None else shifts[i](x[idx], side)
        out.append((xi, y[idx]))
    return out
