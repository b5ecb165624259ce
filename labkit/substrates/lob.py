"""A limit-order-book (LOB) world for price-trend prediction: a seeded simulator, feature windows, chronological
splits, normalisation with training statistics, and trend labels (TLOB's and the classic ones).

The simulator (numpy, one seed = one market) follows card 27:

    s^f_t = 0.9·s^f_{t−1} + √(1 − 0.9²)·η_t          fast signal (AR(1), unit stationary variance)
    s^s_t = 0.99·s^s_{t−1} + √(1 − 0.99²)·η'_t       slow signal
    r_t ∈ {0, 1}, switches with probability p per event  (regime 1: mean-reverting, spread 2 ticks instead of 1)
    v_{t+1} = v_t + 0.5·tick·(a_f·sign(r)·s^f_t + a_s·s^s_t + ε_t),   sign(0) = +1, sign(1) = −1,  ε ~ N(0, 1)

The best bid is v rounded to the tick grid (minus half the spread), ten levels each side at one-tick spacing, and
volumes Poisson(λ_l·e^{∓c_l}) with λ_l = 200·e^{−0.1·l} (ask −, bid +): c = 0.5·s^f on levels 1–2 (the fast signal
shows at the top of the book) and c = 0.4·s^s on levels 6–10 (the slow signal hides deep in the book).

A snapshot has F = 40 columns in the official code's order, per level l: ask price, ask volume, bid price, bid
volume. Prices are in ticks. :func:`lob_features` turns prices into tick offsets from the mid-price.

Labels (``h`` the horizon, ``w`` the smoothing window, ``m`` the mid-price), with t the LAST event of a window:

    TLOB      m⁻_t = mean(m_{t−w+1..t}),  m⁺_t = mean(m_{t+h−w+1..t+h}),  w = min(w, h)
    classic   m⁻_t = mean(m_{t−h+1..t}),  m⁺_t = mean(m_{t+1..t+h})       (the smoothing grows with h)
    ℓ_t = (m⁺_t − m⁻_t)/m⁻_t;  up if ℓ_t > θ, down if ℓ_t < −θ, stationary otherwise

with θ = mean_t |ℓ_t| / 2 over the TRAINING split (the official code computes θ per split; labkit uses the
training split's θ for every split, so the test labels use no test statistic), or θ = the average spread relative
to the mid-price (a transaction-cost threshold). Labels are computed inside each split only, so no window and no
label reaches across a split boundary.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: class ids (the official code uses 0 = up, 1 = stationary, 2 = down; labkit orders them by the move)
DOWN, STATIONARY, UP = 0, 1, 2
CLASS_NAMES = ("down", "stationary", "up")
N_LEVELS = 10
#: columns per level: ask price, ask volume, bid price, bid volume
LEVEL_COLUMNS = ("ask price", "ask volume", "bid price", "bid volume")


def feature_names(n_levels: int = N_LEVELS) -> list[str]:
    """``["ask price 1", "ask volume 1", "bid price 1", "bid volume 1", "ask price 2", …]``."""
    return [f"{c} {lvl}" for lvl in range(1, n_levels + 1) for c in LEVEL_COLUMNS]


@dataclass(frozen=True)
class LOB:
    """One simulated market of ``n`` events: snapshots ``book (n, 4·levels)`` (prices in ticks), the mid-price
    ``mid (n,)``, the spread ``spread (n,)`` in ticks, the regime ``regime (n,)`` and the two latent signals."""

    book: np.ndarray
    mid: np.ndarray
    spread: np.ndarray
    regime: np.ndarray
    fast: np.ndarray
    slow: np.ndarray


def ar1(n: int, phi: float, rng: np.random.Generator) -> np.ndarray:
    """s_t = φ·s_{t−1} + √(1 − φ²)·η_t from the stationary law (unit variance), ``(n,)``."""
    eta = rng.standard_normal(n)
    s = np.empty(n)
    s[0] = eta[0]
    scale = np.sqrt(1.0 - phi**2)
    for t in range(1, n):
        s[t] = phi * s[t - 1] + scale * eta[t]
    return s


def regimes(n: int, switch_prob: float, rng: np.random.Generator) -> np.ndarray:
    """r_t ∈ {0, 1}: starts at 0 and flips with probability ``switch_prob`` at each event, ``(n,)`` int."""
    flips = rng.random(n) < switch_prob
    flips[0] = False
    return (np.cumsum(flips) % 2).astype(np.int64)


def simulate_lob(
    n: int,
    seed: int,
    *,
    fast_weight: float = 0.6,
    slow_weight: float = 0.4,
    switch_prob: float = 0.005,
    phi_fast: float = 0.9,
    phi_slow: float = 0.99,
    base_volume: float = 200.0,
    start_price: float = 10_000.0,
    n_levels: int = N_LEVELS,
) -> LOB:
    """Simulate ``n`` events of the card's LOB (see the module docstring); everything is drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    fast, slow = ar1(n, phi_fast, rng), ar1(n, phi_slow, rng)
    regime = regimes(n, switch_prob, rng)
    sign = 1.0 - 2.0 * regime
    # v_{t+1} = v_t + 0.5·tick·(a_f·sign(r_t)·s^f_t + a_s·s^s_t + ε_t)            (prices in ticks: tick = 1)
    steps = 0.5 * (fast_weight * sign * fast + slow_weight * slow + rng.standard_normal(n))
    value = start_price + np.concatenate([[0.0], np.cumsum(steps[:-1])])
    spread = 1.0 + regime  # 1 tick, 2 in the mean-reverting regime
    best_bid = np.round(value - spread / 2.0)
    best_ask = best_bid + spread
    offsets = np.arange(n_levels)
    ask_prices = best_ask[:, None] + offsets  # (n, L)
    bid_prices = best_bid[:, None] - offsets
    # c_l = 0.5·s^f on levels 1–2, 0.4·s^s on levels 6–10, 0 elsewhere                                  (n, L)
    c = np.zeros((n, n_levels))
    c[:, :2] = 0.5 * fast[:, None]
    c[:, 5:] = 0.4 * slow[:, None]
    lam = base_volume * np.exp(-0.1 * (offsets + 1))  # λ_l = 200·e^{−0.1·l}, l = 1..L
    ask_volumes = rng.poisson(lam * np.exp(-c))
    bid_volumes = rng.poisson(lam * np.exp(c))
    book = np.stack([ask_prices, ask_volumes, bid_prices, bid_volumes], axis=-1).reshape(n, 4 * n_levels)
    return LOB(
        book=book.astype(np.float64),
        mid=(best_ask + best_bid) / 2.0,
        spread=spread,
        regime=regime,
        fast=fast,
        slow=slow,
    )


def lob_features(book: np.ndarray, mid: np.ndarray) -> np.ndarray:
    """Snapshots as model inputs ``(n, F)``: prices as tick offsets from the mid-price, volumes as they are."""
    x = book.copy()
    x[:, 0::2] -= mid[:, None]  # columns 0, 2, 4, …: the prices (ask, bid of each level)
    return x


# --- splits and normalisation --------------------------------------------------------------------------------


def chronological_splits(n: int, fractions=(0.7, 0.15, 0.15)) -> list[tuple[int, int]]:
    """``[(start, end), …]``: consecutive, non-overlapping event ranges in time order (train, validation, test)."""
    if abs(sum(fractions) - 1.0) > 1e-9 or min(fractions) <= 0:
        raise ValueError(f"split fractions {fractions} must be positive and sum to 1")
    edges = np.round(np.cumsum((0.0, *fractions)) * n).astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


@dataclass(frozen=True)
class Standardizer:
    """z-score with the TRAINING split's per-feature mean and standard deviation (a constant column keeps std 1)."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray) -> Standardizer:
        std = x.std(axis=0)
        return cls(mean=x.mean(axis=0), std=np.where(std > 1e-12, std, 1.0))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return (x - self.mean) / self.std


# --- labels ----------------------------------------------------------------------------------------------------


def _window_means(mid: np.ndarray, w: int) -> np.ndarray:
    """mean(m_{t−w+1..t}) for t = w−1..n−1, ``(n − w + 1,)``."""
    c = np.concatenate([[0.0], np.cumsum(mid)])
    return (c[w:] - c[:-w]) / w


def tlob_returns(mid: np.ndarray, h: int, w: int = 10) -> np.ndarray:
    """ℓ_t = (m⁺_t − m⁻_t)/m⁻_t with TLOB's fixed smoothing w' = min(w, h), ``(n,)``; NaN where t − w' + 1 < 0 or
    t + h ≥ n (the label would need events outside the array)."""
    w = min(w, h)
    means = _window_means(mid, w)  # means[k] = mean(m_{k..k+w−1}), the window ending at t = k + w − 1
    out = np.full(len(mid), np.nan)
    n_valid = len(means) - h
    if n_valid > 0:
        past, future = means[:n_valid], means[h:]  # m⁻ ending at t, m⁺ ending at t + h
        # ℓ_t = (m⁺_t − m⁻_t)/m⁻_t
        out[w - 1 : w - 1 + n_valid] = (future - past) / past
    return out


def classic_returns(mid: np.ndarray, h: int) -> np.ndarray:
    """FI-2010 / DeepLOB: ℓ_t = (mean(m_{t+1..t+h}) − mean(m_{t−h+1..t}))/mean(m_{t−h+1..t}), ``(n,)``, NaN where
    undefined. The smoothing length is h: the label at horizon h is partly about the near future."""
    means = _window_means(mid, h)
    out = np.full(len(mid), np.nan)
    n_valid = len(means) - h
    if n_valid > 0:
        past, future = means[:n_valid], means[h:]  # window ending at t, and the one ending at t + h (= m_{t+1..t+h})
        out[h - 1 : h - 1 + n_valid] = (future - past) / past
    return out


def mean_abs_threshold(returns: np.ndarray) -> float:
    """TLOB's data-driven threshold θ = mean_t |ℓ_t| / 2 over the defined returns."""
    return float(np.nanmean(np.abs(returns)) / 2.0)


def spread_threshold(spread: np.ndarray, mid: np.ndarray) -> float:
    """The transaction-cost threshold: the average spread relative to the average mid-price (the official code's
    commented-out alternative, mean(ask − bid)/mean(mid))."""
    return float(np.mean(spread) / np.mean(mid))


def classify(returns: np.ndarray, theta: float) -> np.ndarray:
    """up (2) if ℓ > θ, down (0) if ℓ < −θ, stationary (1) otherwise; −1 where ℓ is NaN. ``(n,)`` int."""
    labels = np.where(returns > theta, UP, np.where(returns < -theta, DOWN, STATIONARY))
    return np.where(np.isnan(returns), -1, labels).astype(np.int64)


def late_move_agreement(mid: np.ndarray, labels: np.ndarray, h: int) -> float:
    """The card's horizon-bias probe: among labelled non-stationary events t, the share whose label's sign agrees
    with sign(m_{t+h} − m_{t+⌊h/4⌋}) (the "late move"); events with no late move (equal prices) are left out."""
    n = len(mid)
    t = np.flatnonzero((labels == UP) | (labels == DOWN))
    t = t[t + h < n]
    late = np.sign(mid[t + h] - mid[t + h // 4])
    keep = late != 0
    if not keep.any():
        return float("nan")
    label_sign = np.where(labels[t] == UP, 1.0, -1.0)
    return float(np.mean(label_sign[keep] == late[keep]))


# --- windows ---------------------------------------------------------------------------------------------------


def window_ends(start: int, end: int, seq_len: int, labels: np.ndarray, stride: int = 1) -> np.ndarray:
    """Last events t of the windows m_{t−T+1..t} lying inside ``[start, end)`` whose label is defined (the labels
    of a split are computed on that split alone, so the last h events carry none), every ``stride``-th."""
    t = np.arange(start + seq_len - 1, end, stride)
    return t[labels[t] >= 0]


def gather_windows(x, ends, seq_len: int):
    """Windows ``(B, T, F)`` ending at ``ends (B,)`` from the event features ``x (n, F)`` (numpy or torch)."""
    offsets = np.arange(-seq_len + 1, 1)
    idx = np.asarray(ends)[:, None] + offsets[None, :]  # (B, T)
    return x[idx]


@dataclass(frozen=True)
class SplitData:
    """One split after labelling: its event range, the window ends and their labels."""

    start: int
    end: int
    ends: np.ndarray
    labels: np.ndarray


@dataclass(frozen=True)
class LabelledLOB:
    """A market ready for training: standardised features ``x (n, F)`` (training statistics), the three splits at
    one horizon, the threshold θ (from the training split) and the labelling's name."""

    x: np.ndarray
    train: SplitData
    val: SplitData
    test: SplitData
    theta: float
    horizon: int
    labelling: str


def returns_by_split(mid: np.ndarray, splits, h: int, w: int, labelling: str = "tlob") -> np.ndarray:
    """ℓ for every event, computed inside each split separately (NaN where a label would cross its split's end)."""
    out = np.full(len(mid), np.nan)
    for start, end in splits:
        seg = mid[start:end]
        out[start:end] = tlob_returns(seg, h, w) if labelling == "tlob" else classic_returns(seg, h)
    return out


def label_lob(
    lob: LOB,
    h: int,
    seq_len: int,
    *,
    w: int = 10,
    threshold: str = "mean_abs",
    fractions=(0.7, 0.15, 0.15),
    train_stride: int = 1,
) -> LabelledLOB:
    """Split ``lob`` chronologically, standardise with the training statistics, label each split with TLOB's
    labels and θ from the training split (``threshold``: "mean_abs" = mean|ℓ|/2, "spread" = average spread), and
    list the windows. ``train_stride`` keeps every k-th training window (they overlap by T − k events anyway)."""
    splits = chronological_splits(len(lob.mid), fractions)
    (a, b) = splits[0]
    feats = lob_features(lob.book, lob.mid)
    x = Standardizer.fit(feats[a:b])(feats).astype(np.float32)
    returns = returns_by_split(lob.mid, splits, h, w)
    if threshold == "mean_abs":
        theta = mean_abs_threshold(returns[a:b])
    elif threshold == "spread":
        theta = spread_threshold(lob.spread[a:b], lob.mid[a:b])
    else:
        raise ValueError(f"threshold={threshold!r}: expected 'mean_abs' or 'spread'")
    labels = classify(returns, theta)
    parts = []
    for k, (start, end) in enumerate(splits):
        ends = window_ends(start, end, seq_len, labels, stride=train_stride if k == 0 else 1)
        parts.append(SplitData(start, end, ends, labels[ends]))
    return LabelledLOB(x, *parts, theta=theta, horizon=h, labelling=threshold)
