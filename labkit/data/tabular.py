"""Tabular binary-classification data: a label-noisy simulator and small shipped sets, plus a split helper.

All arrays are NumPy (``X`` float32 of shape (n, d), ``y`` int64 in {0, 1}); move them to torch where needed.
Nothing is downloaded: the simulator is synthetic and breast-cancer / digits ship with scikit-learn.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import numpy as np


@dataclass
class Split:
    """A standardised train/(validation/)test split (features scaled with the TRAIN mean and std only).
    Without a validation part, ``X_val`` and ``y_val`` have zero rows."""

    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    X_val: np.ndarray | None = None
    y_val: np.ndarray | None = None

    def __post_init__(self):
        if self.X_val is None:
            self.X_val = self.X_train[:0]
            self.y_val = self.y_train[:0]


def sigmoid(x: np.ndarray) -> np.ndarray:
    """σ(x) = 1 / (1 + e^{−x})."""
    return 1.0 / (1.0 + np.exp(-x))


def relu_sum_score(X: np.ndarray, scale: float = 2.0, clip: float = 5.0) -> np.ndarray:
    """s(x) = clip(scale · standardise(Σ_j relu(x_j)), −clip, clip); standardised over the rows of ``X``."""
    raw = np.maximum(X, 0.0).sum(axis=1)
    return np.clip(scale * (raw - raw.mean()) / raw.std(), -clip, clip)


def relu_sum_classification(n: int, d: int, seed: int, scale: float = 2.0, clip: float = 5.0):
    """The EnsLoss repository's simulator: x ~ N(0, I_d), y ~ Bernoulli(σ(s(x))) with s from ``relu_sum_score``.

    ``scale`` sets the label noise (smaller → noisier; 2 gives a Bayes accuracy near 0.8).
    Returns ``(X, y, p)`` with ``p = P(y = 1 | x)``, so ``mean(max(p, 1 − p))`` is the Bayes accuracy.
    """
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)).astype(np.float32)
    p = sigmoid(relu_sum_score(X, scale, clip))
    y = (rng.random(n) < p).astype(np.int64)
    return X, y, p


def bayes_accuracy(p: np.ndarray) -> float:
    """Accuracy of the Bayes rule 1[p > 1/2] in expectation: mean_i max(p_i, 1 − p_i)."""
    return float(np.mean(np.maximum(p, 1.0 - p)))


def flip_labels(y: np.ndarray, rate: float, seed: int) -> np.ndarray:
    """A copy of {0,1} labels ``y`` with a random ``rate`` fraction (exactly round(rate·n) of them) flipped."""
    rng = np.random.default_rng(seed)
    out = y.copy()
    idx = rng.choice(len(y), size=int(round(rate * len(y))), replace=False)
    out[idx] = 1 - out[idx]
    return out


def standardize_split(
    X: np.ndarray, y: np.ndarray, seed: int, test_size: float = 0.3, stratify: bool = True, val_size: float = 0.0
) -> Split:
    """Shuffle, split (default 70/30, stratified on ``y``), and standardise x ← (x − μ_train) / σ_train.

    ``val_size`` > 0 holds out that fraction of the TRAINING part as a validation set (stratified too), e.g. for
    choosing an epoch; μ and σ then come from the remaining training rows only."""
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    X_tr, X_te, y_tr, y_te = train_test_split(
        X, y, test_size=test_size, random_state=seed, stratify=y if stratify else None
    )
    X_va, y_va = X_tr[:0], y_tr[:0]
    if val_size > 0:
        X_tr, X_va, y_tr, y_va = train_test_split(
            X_tr, y_tr, test_size=val_size, random_state=seed, stratify=y_tr if stratify else None
        )
    scaler = StandardScaler().fit(X_tr)
    cast = lambda a: scaler.transform(a).astype(np.float32) if len(a) else a.astype(np.float32)  # noqa: E731
    return Split(cast(X_tr), np.asarray(y_tr), cast(X_te), np.asarray(y_te), cast(X_va), np.asarray(y_va))


def breast_cancer() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's Wisconsin breast-cancer set: 569 rows, 30 features, y = 1 for benign."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    return data.data.astype(np.float32), data.target.astype(np.int64)


def digit_pairs() -> list[tuple[int, int]]:
    """All 45 unordered pairs (a, b), a < b, of the ten digit classes."""
    return list(combinations(range(10), 2))


def digits_pair(a: int, b: int) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8×8 digits restricted to classes ``a`` and ``b``: images (n, 8, 8) scaled to [0, 1],
    y = 1 for ``b`` and 0 for ``a``."""
    from sklearn.datasets import load_digits

    data = load_digits()
    keep = np.isin(data.target, (a, b))
    return (data.images[keep] / 16.0).astype(np.float32), (data.target[keep] == b).astype(np.int64)
