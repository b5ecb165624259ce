"""MultiColorDigits: scikit-learn's 8×8 digits with many colour patches spuriously tied to the label.

A toy version of the MultiColorMNIST of Lin et al. (arXiv 2309.17230), built from the digits that ship with
scikit-learn (1,797 images, 10 classes), so nothing is downloaded. Each sample has

- an **invariant** feature: the 8×8 image (scaled to [0, 1]) average-pooled to 4×4 (16 values) plus Gaussian
  noise N(0, σ²), weak on purpose so that the colours matter;
- ``n_patches`` **colour patches**, each showing one of ``n_colours`` colours. Patch j has its own random
  label→colour map ``right[j]`` (a permutation) and a second map ``wrong[j]`` with ``wrong[j][y] ≠ right[j][y]``
  for every y. A :class:`ColourRule` says, per patch, how often the patch shows ``right[j][y]`` (correlated with
  the label), how often ``wrong[j][y]`` (consistently wrong: a *different* spurious rule), and otherwise a
  colour drawn uniformly at random (which may happen to be the right one).

The first half of the patches is group A, the second half group B (:func:`group_rule` builds the common
"one probability per group" rule). :func:`multicolor_digits` deals the images into named splits, each with its
own rule; :func:`encode` turns a split into vectors (invariant ‖ one-hot colours) and :func:`render` into RGB
images (the noisy 4×4 feature upsampled in the middle, the patches as coloured squares around it), so an MLP
and a CNN see exactly the same information. Everything here is NumPy; methods move arrays to torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: RGB in [0, 1] of the colours a patch can show (matplotlib's "tab10")
PALETTE = (
    np.array(
        [
            (31, 119, 180),
            (255, 127, 14),
            (44, 160, 44),
            (214, 39, 40),
            (148, 103, 189),
            (140, 86, 75),
            (227, 119, 194),
            (127, 127, 127),
            (188, 189, 34),
            (23, 190, 207),
        ],
        dtype=np.float32,
    )
    / 255.0
)


@dataclass(frozen=True)
class ColourRule:
    """Per patch j: P(show right[j][y]) = ``right[j]``, P(show wrong[j][y]) = ``wrong[j]``, else uniform."""

    right: tuple[float, ...]
    wrong: tuple[float, ...]

    def __post_init__(self):
        r, w = np.asarray(self.right, float), np.asarray(self.wrong, float)
        if r.shape != w.shape or (r < 0).any() or (w < 0).any() or (r + w > 1 + 1e-12).any():
            raise ValueError("ColourRule needs right[j], wrong[j] ≥ 0 and right[j] + wrong[j] ≤ 1 for every patch")


def group_rule(
    n_patches: int, right_a: float, right_b: float, wrong_a: float = 0.0, wrong_b: float = 0.0
) -> ColourRule:
    """One probability per group: patches 0 … n/2 − 1 are group A, n/2 … n − 1 group B."""
    half = n_patches // 2
    if n_patches < 2 or n_patches % 2:
        raise ValueError(f"n_patches={n_patches} must be even and ≥ 2 (two groups of equal size)")
    return ColourRule((right_a,) * half + (right_b,) * half, (wrong_a,) * half + (wrong_b,) * half)


@dataclass(frozen=True)
class ColourMaps:
    """``right[j, y]`` and ``wrong[j, y]``: the colour patch j shows for label y under each rule."""

    right: np.ndarray
    wrong: np.ndarray


def colour_maps(n_patches: int, n_classes: int, n_colours: int, rng: np.random.Generator) -> ColourMaps:
    """right[j] = the first ``n_classes`` entries of a random permutation of the colours (distinct colours per
    label); wrong[j][y] = right[j][(y + s_j) mod C] with s_j ∈ {1, …, C − 1}: a different label's colour."""
    if n_colours < n_classes:
        raise ValueError(f"n_colours={n_colours} must be ≥ n_classes={n_classes}")
    right = np.stack([rng.permutation(n_colours)[:n_classes] for _ in range(n_patches)])
    shifts = rng.integers(1, n_classes, size=n_patches)
    wrong = np.stack([np.roll(right[j], -shifts[j]) for j in range(n_patches)])
    return ColourMaps(right, wrong)


def draw_colours(
    y: np.ndarray, maps: ColourMaps, rule: ColourRule, n_colours: int, rng: np.random.Generator
) -> np.ndarray:
    """Colour index of every (sample, patch): right[j][y] w.p. rule.right[j], wrong[j][y] w.p. rule.wrong[j],
    otherwise uniform over the ``n_colours``. Shape (n, n_patches), int64."""
    n, n_patches = len(y), maps.right.shape[0]
    u = rng.random((n, n_patches))
    right_p, wrong_p = np.asarray(rule.right)[None, :], np.asarray(rule.wrong)[None, :]
    if right_p.shape[1] != n_patches:
        raise ValueError(f"the rule has {right_p.shape[1]} patches, the maps {n_patches}")
    uniform = rng.integers(0, n_colours, size=(n, n_patches))
    out = np.where(u < right_p, maps.right[:, y].T, uniform)
    return np.where((u >= right_p) & (u < right_p + wrong_p), maps.wrong[:, y].T, out).astype(np.int64)


def load_digit_images() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as (1797, 8, 8) float32 images in [0, 1] (pixel / 16) and int64 labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    return (digits.images / 16.0).astype(np.float32), digits.target.astype(np.int64)


def avg_pool(images: np.ndarray, k: int = 2) -> np.ndarray:
    """Non-overlapping k×k average pooling: (n, H, W) → (n, H/k, W/k)."""
    n, h, w = images.shape
    return images.reshape(n, h // k, k, w // k, k).mean(axis=(2, 4))


@dataclass
class ColouredSplit:
    """One split: ``invariant`` (n, 4, 4) noisy pooled digits, ``colours`` (n, n_patches), labels ``y``, the
    indices of its images in scikit-learn's digits (``index``) and the colour ``maps`` it was drawn with."""

    invariant: np.ndarray
    colours: np.ndarray
    y: np.ndarray
    index: np.ndarray
    maps: ColourMaps

    def __len__(self) -> int:
        return len(self.y)


def colour_agreement(split: ColouredSplit) -> tuple[np.ndarray, np.ndarray]:
    """Per patch, the share of samples showing the label's colour right[j][y] and the wrong map's wrong[j][y]."""
    right = split.colours == split.maps.right[:, split.y].T
    wrong = split.colours == split.maps.wrong[:, split.y].T
    return right.mean(0), wrong.mean(0)


def make_split(
    images: np.ndarray,
    y: np.ndarray,
    index: np.ndarray,
    maps: ColourMaps,
    rule: ColourRule,
    noise: float,
    n_colours: int,
    rng: np.random.Generator,
) -> ColouredSplit:
    """The images ``images[index]``: pooled to 4×4 plus N(0, noise²), coloured by ``rule``."""
    pooled = avg_pool(images[index])
    invariant = (pooled + noise * rng.standard_normal(pooled.shape)).astype(np.float32)
    return ColouredSplit(invariant, draw_colours(y[index], maps, rule, n_colours, rng), y[index], index, maps)


def multicolor_digits(
    seed: int,
    rules: dict[str, ColourRule],
    sizes: dict[str, int],
    noise: float = 0.8,
    n_colours: int = 10,
    reuse: dict[str, str] | None = None,
) -> dict[str, ColouredSplit]:
    """Deal the shuffled 1,797 images into splits of ``sizes`` (in order; a size of −1 takes all that is left),
    colour each split by its rule, with one set of colour maps per ``seed``.

    ``reuse`` names splits that take the *images* of another split with fresh noise and colours (e.g.
    ``{"id_test": "ood"}``: the held-out images coloured by the in-distribution rule).
    """
    images, y = load_digit_images()
    rng = np.random.default_rng(seed)
    n_patches = len(next(iter(rules.values())).right)
    maps = colour_maps(n_patches, int(y.max()) + 1, n_colours, rng)
    order, start, index = rng.permutation(len(y)), 0, {}
    for name, size in sizes.items():
        stop = len(y) if size == -1 else start + size
        if stop > len(y):
            raise ValueError(f"the split sizes {sizes} ask for more than the {len(y)} digits")
        index[name], start = np.sort(order[start:stop]), stop
    for name, source in (reuse or {}).items():
        index[name] = index[source]
    return {name: make_split(images, y, idx, maps, rules[name], noise, n_colours, rng) for name, idx in index.items()}


def encode(split: ColouredSplit, n_colours: int = 10) -> np.ndarray:
    """Vectors x = [invariant (16) ‖ one-hot colour of patch 0 ‖ … ‖ of patch P−1], float32, width 16 + P·K."""
    n = len(split)
    onehot = np.zeros((n, split.colours.shape[1], n_colours), dtype=np.float32)
    np.put_along_axis(onehot, split.colours[..., None], 1.0, axis=2)
    return np.concatenate([split.invariant.reshape(n, -1), onehot.reshape(n, -1)], axis=1)


def feature_groups(n_patches: int, n_colours: int = 10, n_invariant: int = 16) -> dict[str, np.ndarray]:
    """Column indices of the invariant feature, group A's patches and group B's patches in :func:`encode`."""
    half = n_patches // 2 * n_colours
    return {
        "invariant": np.arange(n_invariant),
        "group A": n_invariant + np.arange(half),
        "group B": n_invariant + half + np.arange(half),
    }


#: top-left corners of the 4×4 patch squares in a 28×28 image, around the 16×16 centre (at most 24)
PATCH_SLOTS = (
    [(0, 4 * c) for c in range(7)]
    + [(24, 4 * c) for c in range(7)]
    + [(4 + 4 * r, 0) for r in range(5)]
    + [(4 + 4 * r, 24) for r in range(5)]
)


def render(split: ColouredSplit, clip: bool = False) -> np.ndarray:
    """RGB images (n, 3, 28, 28): the noisy 4×4 invariant feature upsampled ×4 (grey, all channels) in the
    centre rows/cols 6–21, and patch j a 4×4 square of its colour at ``PATCH_SLOTS[j]`` (at most 24 patches).
    ``clip=True`` clips to [0, 1] for display; the model sees the unclipped values."""
    n, n_patches = split.colours.shape
    if n_patches > len(PATCH_SLOTS):
        raise ValueError(f"render fits at most {len(PATCH_SLOTS)} patches, got {n_patches}")
    out = np.zeros((n, 3, 28, 28), dtype=np.float32)
    centre = np.kron(split.invariant, np.ones((4, 4), dtype=np.float32))
    out[:, :, 6:22, 6:22] = centre[:, None]
    for j, (r, c) in enumerate(PATCH_SLOTS[:n_patches]):
        out[:, :, r : r + 4, c : c + 4] = PALETTE[split.colours[:, j]][:, :, None, None]
    return np.clip(out, 0.0, 1.0) if clip else out
