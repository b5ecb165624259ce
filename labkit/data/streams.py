"""Continual-learning streams: a sequence of tasks, each with its own train/test split.

Two kinds, both generic (any images and labels) and both with a ready-made digits version:

- **domain-incremental** (:func:`domain_incremental`): the same label set in every task, each task's images passed
  through its own transform (rotation, inversion, noise, blur, ...). With ``disjoint=True`` every task draws its
  images from its own share of the data, so no underlying image appears in two tasks.
- **class-incremental** (:func:`class_incremental`): the same images, a new group of classes in each task
  (e.g. digits 0–4, then 5–9).

Images are NumPy float32 arrays (n, side, side) in [0, 1]; tasks store them flattened to (n, side²) with int64
labels. A transform is ``f(images, rng) -> images`` (same shape), given a NumPy generator for anything random.
Everything ships with scikit-learn or is generated; nothing is downloaded.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np

Transform = Callable[[np.ndarray, np.random.Generator], np.ndarray]


@dataclass
class Task:
    """One stage of a stream: a name, flattened float32 images and int64 labels, and the classes it holds."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: tuple[int, ...]


@dataclass
class Stream:
    """The tasks in arrival order; ``kind`` is "domain" or "class"; images are ``side × side``."""

    tasks: list[Task]
    kind: str
    side: int
    n_classes: int

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.tasks]


# ---------------------------------------------------------------- transforms: images (n, s, s) → (n, s, s)


def identity(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """x' = x."""
    return images.copy()


def rotate90(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each image turned 90° counter-clockwise: x'[i, j] = x[j, s−1−i]."""
    return np.rot90(images, k=1, axes=(1, 2)).copy()


def invert(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """x' = 1 − x (dark digits on a bright background)."""
    return 1.0 - images


def shift_images(images: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    """Translate image b by the integer (dy, dx) = shifts[b], filling with 0 (no wrap-around)."""
    out = np.zeros_like(images)
    s = images.shape[1]
    for b, (dy, dx) in enumerate(shifts):
        src = images[b, max(0, -dy) : s - max(0, dy), max(0, -dx) : s - max(0, dx)]
        out[b, max(0, dy) : max(0, dy) + src.shape[0], max(0, dx) : max(0, dx) + src.shape[1]] = src
    return out


def noise_and_shift(
    images: np.ndarray, rng: np.random.Generator, sigma: float = 0.3, max_shift: int | None = None
) -> np.ndarray:
    """x' = clip(shift(x) + ε, 0, 1), ε ~ N(0, σ²) per pixel, each image moved by (dy, dx) uniform in
    {−m..m}², m = ``max_shift`` (default max(1, side // 8))."""
    m = max(1, images.shape[1] // 8) if max_shift is None else max_shift
    shifts = rng.integers(-m, m + 1, size=(len(images), 2))
    return np.clip(shift_images(images, shifts) + rng.normal(0.0, sigma, images.shape), 0.0, 1.0)


def blur(images: np.ndarray, rng: np.random.Generator, sigma: float | None = None) -> np.ndarray:
    """Gaussian blur of each image, σ = ``sigma`` pixels (default side / 8)."""
    from scipy.ndimage import gaussian_filter

    s = images.shape[1] / 8 if sigma is None else sigma
    return gaussian_filter(images, sigma=(0, s, s), mode="constant")


def contrast_jitter(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """x' = clip(a·x + b, 0, 1) with a ~ U(0.3, 0.6), b ~ U(0.2, 0.4) per image: washed-out, low-contrast
    images (the grey-scale stand-in for a colour jitter)."""
    a = rng.uniform(0.3, 0.6, size=(len(images), 1, 1))
    b = rng.uniform(0.2, 0.4, size=(len(images), 1, 1))
    return np.clip(a * images + b, 0.0, 1.0)


def elastic(
    images: np.ndarray, rng: np.random.Generator, alpha: float | None = None, smooth: float | None = None
) -> np.ndarray:
    """Elastic warp (Simard et al. 2003): x'(p) = x(p + α·G_σ * u(p)), u uniform in [−1, 1]² per pixel,
    smoothed by a Gaussian of width σ = ``smooth`` (default side / 7) and scaled by α (default side / 2)."""
    from scipy.ndimage import gaussian_filter, map_coordinates

    n, s, _ = images.shape
    alpha = s / 2 if alpha is None else alpha
    smooth = s / 7 if smooth is None else smooth
    grid = np.stack(np.meshgrid(np.arange(s), np.arange(s), indexing="ij")).astype(np.float64)
    out = np.empty_like(images)
    for b in range(n):
        field = gaussian_filter(rng.uniform(-1, 1, (2, s, s)), sigma=(0, smooth, smooth)) * alpha
        out[b] = map_coordinates(images[b], grid + field, order=1, mode="constant")
    return out


DOMAIN_TRANSFORMS: dict[str, Transform] = {
    "original": identity,
    "rot90": rotate90,
    "invert": invert,
    "noise": noise_and_shift,
    "blur": blur,
    "contrast": contrast_jitter,
    "elastic": elastic,
}
#: the card's domain-incremental stream, then the three extra domains of the full preset
DIGITS_DOMAINS = ("original", "rot90", "invert", "noise", "blur", "contrast", "elastic")


# ---------------------------------------------------------------- building streams


def digits_images(side: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits: 1797 images (n, side, side) in [0, 1] (pixels / 16), bilinearly resized from 8×8
    when ``side`` ≠ 8, and their labels 0–9."""
    from scipy.ndimage import zoom
    from sklearn.datasets import load_digits

    data = load_digits()
    images = data.images / 16.0
    if side != 8:
        images = np.clip(zoom(images, (1, side / 8, side / 8), order=1), 0.0, 1.0)
    return images.astype(np.float32), data.target.astype(np.int64)


def split_task(
    name: str, images: np.ndarray, labels: np.ndarray, classes: Sequence[int], test_size: float, seed: int
) -> Task:
    """A stratified train/test split of one task's images, flattened to float32 (n, side²)."""
    from sklearn.model_selection import train_test_split

    flat = images.reshape(len(images), -1).astype(np.float32)
    x_tr, x_te, y_tr, y_te = train_test_split(flat, labels, test_size=test_size, stratify=labels, random_state=seed)
    return Task(name, x_tr, y_tr.astype(np.int64), x_te, y_te.astype(np.int64), tuple(int(c) for c in classes))


def disjoint_parts(labels: np.ndarray, n_parts: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Indices dealt into ``n_parts`` disjoint, class-balanced shares (each class shuffled, cut in equal parts)."""
    parts: list[list[np.ndarray]] = [[] for _ in range(n_parts)]
    for c in np.unique(labels):
        for k, chunk in enumerate(np.array_split(rng.permutation(np.flatnonzero(labels == c)), n_parts)):
            parts[k].append(chunk)
    return [np.sort(np.concatenate(p)) for p in parts]


def domain_incremental(
    images: np.ndarray,
    labels: np.ndarray,
    transforms: dict[str, Transform],
    seed: int = 0,
    test_size: float = 0.3,
    disjoint: bool = True,
) -> Stream:
    """One task per named transform, in the given order, each with its own stratified split.

    ``disjoint=True`` gives every task its own class-balanced share of the images; otherwise every task
    transforms all of them (with its own split). Transform k draws its randomness from ``seed`` and k.
    """
    rng = np.random.default_rng(seed)
    n = len(transforms)
    parts = disjoint_parts(labels, n, rng) if disjoint else [np.arange(len(labels))] * n
    classes = tuple(int(c) for c in np.unique(labels))
    tasks = []
    for k, ((name, fn), idx) in enumerate(zip(transforms.items(), parts)):
        x = fn(images[idx], np.random.default_rng([seed, k])).astype(np.float32)
        tasks.append(split_task(name, x, labels[idx], classes, test_size, seed + k))
    return Stream(tasks, "domain", images.shape[1], len(classes))


def class_incremental(
    images: np.ndarray, labels: np.ndarray, groups: Sequence[Sequence[int]], seed: int = 0, test_size: float = 0.3
) -> Stream:
    """One task per group of classes (labels keep their original values), each with its own split."""
    tasks = []
    for k, group in enumerate(groups):
        keep = np.isin(labels, group)
        name = "classes " + ",".join(str(c) for c in group)
        tasks.append(split_task(name, images[keep], labels[keep], group, test_size, seed + k))
    return Stream(tasks, "class", images.shape[1], int(labels.max()) + 1)


def digits_domain_stream(
    domains: Sequence[str] = DIGITS_DOMAINS[:4],
    seed: int = 0,
    side: int = 8,
    noise_sigma: float = 0.3,
    test_size: float = 0.3,
    disjoint: bool = True,
) -> Stream:
    """Digits seen through a sequence of domains (names from :data:`DOMAIN_TRANSFORMS`), by default the card's
    original → rotated 90° → inverted → noise σ = 0.3 with random shifts."""
    unknown = [d for d in domains if d not in DOMAIN_TRANSFORMS]
    if unknown:
        raise ValueError(f"unknown domains {unknown}: choose from {list(DOMAIN_TRANSFORMS)}")
    images, labels = digits_images(side)
    fns = {d: partial(noise_and_shift, sigma=noise_sigma) if d == "noise" else DOMAIN_TRANSFORMS[d] for d in domains}
    return domain_incremental(images, labels, fns, seed, test_size, disjoint)


def digits_class_stream(
    groups: Sequence[Sequence[int]] = ((0, 1, 2, 3, 4), (5, 6, 7, 8, 9)),
    seed: int = 0,
    side: int = 8,
    test_size: float = 0.3,
) -> Stream:
    """Digits split into groups of classes, by default 0–4 then 5–9."""
    images, labels = digits_images(side)
    return class_incremental(images, labels, groups, seed, test_size)
