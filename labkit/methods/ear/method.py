"""EAR — Efficient Model Adaptation for Continual Learning at the Edge (Daniels et al., arXiv 2308.02084).

A frozen encoder E with tapped layers ℓ gives features f_ℓ(x) ∈ R^{c_ℓ}. Hyperdimensional computing (HDC, after
HDFF, Wilson et al. 2023) turns them into one hypervector and scores how familiar an input is:

    H(x) = Σ_ℓ P_ℓ (f_ℓ(x) − μ_ℓ)               P_ℓ ∈ R^{D×c_ℓ} random, P_ℓᵀP_ℓ = I;  μ_ℓ = source training mean
    C_{d,k} = Σ_{i ∈ domain d, y_i = k} H(x_i)   class descriptors (bundling = addition)
    s(x) = max_{d,k} cos(H(x), C_{d,k})          OOD if s(x) < θ (θ: a share TPR of in-distribution validation passes)

The learner's loop over a stream (EARLearner below):

    detect   a new domain when more than κ of a window of W arriving inputs have s(x) < θ
    grow     zero-shot NAS: score candidate adaptors a ∈ A with |a| ≤ B *at initialisation* on one batch,
             e.g. NASWOT  K_ij = N_A − Hamming(c_i, c_j),  score = log|det K|;  train argmax a + head g on the new
             domain (E frozen); bundle the domain's class descriptors C_{d,k}; old adaptors are never touched
    route    d̂(x) = argmax_d max_k cos(H(x), C_{d,k});   predict g_d̂(a_d̂(E(x)))

No official EAR code is public: the formulas come from HDFF and the zero-cost-proxy papers, and how EAR composes
them is inferred (see the card and the notebook).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

#: the zero-cost proxies (``random`` is a N(0, 1) draw per candidate: the no-information baseline)
PROXIES = ("naswot", "synflow", "grad_norm", "random")
#: share of a domain's training inputs held out to set θ (the rest is bundled into descriptors)
VAL_SHARE = 0.2
#: ridge added to the NASWOT kernel so log|det K| stays finite when codes repeat
NASWOT_RIDGE = 1e-3


# ================================================================= 1. HDC: encoding, descriptors, OOD score


def projection_matrices(dims: list[int], hd_dim: int, generator: torch.Generator) -> list[Tensor]:
    """One P_ℓ (D, c_ℓ) per tapped layer: the Q of a QR decomposition of a Gaussian matrix (P_ℓᵀP_ℓ = I),
    HDFF's (semi-)orthogonal projection. Needs D ≥ c_ℓ."""
    if min(hd_dim - c for c in dims) < 0:
        raise ValueError(f"hd_dim={hd_dim} must be at least the widest tapped layer ({max(dims)})")
    return [torch.linalg.qr(torch.randn(hd_dim, c, generator=generator))[0] for c in dims]


def feature_means(features: list[Tensor], centring: str = "unit") -> list[Tensor]:
    """μ_ℓ: per unit (mean over samples, (c_ℓ,)), one scalar per layer (HDFF's code), or zeros (``"none"``)."""
    if centring == "unit":
        return [f.mean(0) for f in features]
    if centring == "layer":
        return [f.mean().reshape(1) for f in features]
    return [torch.zeros(1, device=f.device) for f in features]


def hdc_encode(
    features: list[Tensor], projections: list[Tensor], means: list[Tensor], binarize: bool = False
) -> Tensor:
    """H(x), one row per input: features[ℓ] is (n, c_ℓ), the result (n, D); with ``binarize`` the bipolar
    hypervector, +1 where H > 0 and −1 elsewhere (torchhd's MAP normalisation)."""
    # H(x) = Σ_ℓ P_ℓ (f_ℓ(x) − μ_ℓ):  (n, c_ℓ) @ (c_ℓ, D) summed over ℓ → (n, D)
    H = sum((f - mu) @ P.T for f, P, mu in zip(features, projections, means))
    return torch.where(H > 0, 1.0, -1.0) if binarize else H


def bundle_by_class(H: Tensor, y: Tensor, classes) -> Tensor:
    """Class descriptors (len(classes), D) from hypervectors H (n, D) with labels y (n,)."""
    # C_k = Σ_{i: y_i = k} H(x_i)   (bundling is addition)
    return torch.stack([H[y == k].sum(0) for k in classes])


def cosine_matrix(A: Tensor, B: Tensor, eps: float = 1e-12) -> Tensor:
    """(len(A), len(B)) cosines; a zero vector has cosine 0."""
    # cos(a_i, b_j) = a_i·b_j / (‖a_i‖‖b_j‖)
    return (A @ B.T) / (A.norm(dim=1, keepdim=True) * B.norm(dim=1)[None, :] + eps)


def ood_score(H: Tensor, descriptors: Tensor) -> Tensor:
    """(n,) familiarity of each input: high = in-distribution, low = out-of-distribution."""
    # s(x) = max_k cos(H(x), C_k)
    return cosine_matrix(H, descriptors).max(dim=1).values


def tpr_threshold(id_scores: Tensor, tpr: float = 0.95) -> float:
    """θ such that a share ``tpr`` of in-distribution scores satisfy s ≥ θ: the (1 − tpr)-quantile."""
    return float(torch.quantile(id_scores.detach().cpu().double(), 1.0 - tpr))


def ood_fraction(scores: Tensor, theta: float) -> float:
    """Share of a window flagged OOD: mean(s(x) < θ). A new domain is declared when it exceeds κ."""
    return float((scores < theta).float().mean())


def hdc_fit_split(n: int, seed: int, val_share: float = VAL_SHARE) -> tuple[Tensor, Tensor]:
    """Indices of a domain's training set: descriptors are bundled from one part, θ is set on the other."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = max(1, int(round(val_share * n)))
    return order[n_val:], order[:n_val]


# ================================================================= 2. routing


def domain_similarity(H: Tensor, class_descriptors: list[Tensor]) -> Tensor:
    """(n, n_domains): for each known domain d, s_d(x) = max_k cos(H(x), C_{d,k})."""
    return torch.stack([ood_score(H, C) for C in class_descriptors], dim=1)


def route_by_class(H: Tensor, class_descriptors: list[Tensor]) -> Tensor:
    """(n,) domain index: the domain that owns the most similar class descriptor."""
    # d̂(x) = argmax_d max_k cos(H(x), C_{d,k})
    return domain_similarity(H, class_descriptors).argmax(dim=1)


def route_by_domain(H: Tensor, domain_descriptors: Tensor) -> Tensor:
    """(n,) domain index by one bundled descriptor per domain (the card's D_d). With features centred on the
    source mean, D_source = Σ P(f − μ) ≈ 0, so the source is rarely chosen."""
    # d̂(x) = argmax_d cos(H(x), D_d),  D_d = Σ_{i ∈ domain d} H(x_i)
    return cosine_matrix(H, domain_descriptors).argmax(dim=1)


# ================================================================= 3. adaptors and zero-shot NAS


@dataclass(frozen=True)
class Arch:
    """A candidate adaptor: ``depth`` blocks Linear(·, width) + ReLU; with ``skip`` the head also sees the input."""

    depth: int
    width: int
    skip: bool

    @property
    def label(self) -> str:
        return f"d{self.depth} w{self.width}" + (" skip" if self.skip else "")


def n_params(arch: Arch, in_dim: int, n_out: int) -> int:
    """Parameters of adaptor + head: (in·w + w) + (depth − 1)(w² + w) + ((w + skip·in)·n_out + n_out)."""
    body = in_dim * arch.width + arch.width + (arch.depth - 1) * (arch.width**2 + arch.width)
    return body + (arch.width + arch.skip * in_dim) * n_out + n_out


def candidate_space(in_dim: int, n_out: int, max_depth: int, max_width: int, budget: int) -> list[Arch]:
    """A = depth 1..max_depth × width 8, 16, …, max_width × skip off/on, keeping those with |a| ≤ B."""
    widths = [8 * 2**i for i in range(int(math.log2(max_width / 8)) + 1)]
    space = [Arch(d, w, s) for d in range(1, max_depth + 1) for w in widths for s in (False, True)]
    return [a for a in space if n_params(a, in_dim, n_out) <= budget]


class Adaptor(nn.Module):
    """a(f) = ReLU(W_depth … ReLU(W_1 f)); head g([a(f), f]) with skip, else g(a(f)). f (n, in) → logits (n, out)."""

    def __init__(self, arch: Arch, in_dim: int, n_out: int):
        super().__init__()
        layers: list[nn.Module] = []
        for k in range(arch.depth):
            layers += [nn.Linear(in_dim if k == 0 else arch.width, arch.width), nn.ReLU()]
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(arch.width + arch.skip * in_dim, n_out)
        self.arch = arch

    def forward(self, f: Tensor) -> Tensor:
        h = self.body(f)
        return self.head(torch.cat([h, f], dim=1) if self.arch.skip else h)


def relu_codes(module: nn.Module, x: Tensor) -> Tensor:
    """c_i ∈ {0, 1}^{N_A}, shape (n, N_A): which of the module's ReLU units are active (> 0) for each input
    (float64 on the CPU, where the log-determinant is taken)."""
    codes: list[Tensor] = []
    hooks = [
        m.register_forward_hook(lambda m, i, o: codes.append((o > 0).flatten(1)))
        for m in module.modules()
        if isinstance(m, nn.ReLU)
    ]
    try:
        with torch.no_grad():
            module(x)
    finally:
        for h in hooks:
            h.remove()
    return torch.cat(codes, dim=1).cpu().double()


def naswot_kernel(codes: Tensor) -> Tensor:
    """(n, n) count of agreeing units between every pair of codes (n, N_A)."""
    # K[i, j] = N_A − Hamming(c_i, c_j) = c_i·c_j + (1 − c_i)·(1 − c_j)
    return codes @ codes.T + (1 - codes) @ (1 - codes).T


def naswot_score(module: nn.Module, x: Tensor, ridge: float = NASWOT_RIDGE) -> float:
    """NASWOT (Mellor et al. 2021) on one batch x (n, in). The ridge keeps the score finite when K is singular
    (fewer distinct codes than inputs); the official code has no ridge."""
    K = naswot_kernel(relu_codes(module, x))
    # score = log|det(K + ridge·I)|
    return float(torch.linalg.slogdet(K + ridge * torch.eye(len(K), dtype=K.dtype, device=K.device)).logabsdet)


def synflow_score(module: nn.Module, in_dim: int) -> float:
    """SynFlow (Tanaka et al. 2020), the zero-cost-proxies convention: every parameter replaced by |θ| (float64),
    an all-ones input, R = Σ outputs; the module itself is left alone."""
    net = copy.deepcopy(module).cpu().double()
    with torch.no_grad():
        for p in net.parameters():
            p.abs_()
    net(torch.ones(1, in_dim, dtype=torch.float64)).sum().backward()
    # score = Σ over Linear weights of Σ |W ⊙ ∂R/∂W|
    return float(
        sum((m.weight.detach() * m.weight.grad).abs().sum() for m in net.modules() if isinstance(m, nn.Linear))
    )


def grad_norm_score(module: nn.Module, x: Tensor, y: Tensor) -> float:
    """grad-norm (Abdelfattah et al. 2021) on one batch x (n, in), y (n,): one norm per Linear weight, summed."""
    net = copy.deepcopy(module)
    F.cross_entropy(net(x), y).backward()
    # score = Σ_layers ‖∂CE(a(x), y)/∂W‖₂
    return float(sum(m.weight.grad.norm() for m in net.modules() if isinstance(m, nn.Linear)))


def proxy_scores(module: nn.Module, x: Tensor, y: Tensor, rng: np.random.Generator) -> dict[str, float]:
    """Every zero-cost proxy of one untrained candidate on one batch, keyed by the names in PROXIES."""
    return {
        "naswot": naswot_score(module, x),
        "synflow": synflow_score(module, x.shape[1]),
        "grad_norm": grad_norm_score(module, x, y),
        "random": float(rng.standard_normal()),
    }


def pick_candidate(scores: list[float], sizes: list[int]) -> int:
    """argmax score; ties go to the candidate with fewer parameters, then to the earlier one."""
    return min(range(len(scores)), key=lambda i: (-scores[i], sizes[i], i))


@dataclass
class Search:
    """What zero-shot NAS saw: every candidate at its initialisation, its size and proxy scores, and the pick."""

    archs: list[Arch]
    models: list[Adaptor]
    sizes: list[int]
    scores: list[dict[str, float]]
    pick: int

    @property
    def adaptor(self) -> Adaptor:
        return self.models[self.pick]


def zero_shot_nas(
    archs: list[Arch], f: Tensor, y: Tensor, *, n_out: int, proxy: str, init_seed: Callable[[Arch], int], rng
) -> Search:
    """Build every candidate at initialisation (torch seeded by ``init_seed(arch)``), score it with every proxy
    on one batch of encoder features f (n, in) and output indices y (n,), and pick argmax ``proxy`` (no training)."""
    models, scores = [], []
    for a in archs:
        torch.manual_seed(init_seed(a))
        m = Adaptor(a, f.shape[1], n_out).to(f.device)
        models.append(m)
        scores.append(proxy_scores(m, f, y, rng))
    sizes = [n_params(a, f.shape[1], n_out) for a in archs]
    # a* = argmax_{a ∈ A, |a| ≤ B} proxy(a)   (the budget is already applied to ``archs``)
    return Search(archs, models, sizes, scores, pick_candidate([s[proxy] for s in scores], sizes))


# ================================================================= 4. the learner: detect → grow → route


@dataclass
class HDCMemory:
    """What the edge device keeps: projections, source means, and per known domain its class descriptors
    (and bundled domain descriptor); θ is set over all known domains' held-out hypervectors."""

    projections: list[Tensor]
    means: list[Tensor]
    binarize: bool
    class_desc: list[Tensor] = field(default_factory=list)
    domain_desc: list[Tensor] = field(default_factory=list)
    val_H: list[Tensor] = field(default_factory=list)
    theta: float = float("nan")

    def encode(self, taps: list[Tensor]) -> Tensor:
        return hdc_encode(taps, self.projections, self.means, self.binarize)

    def add_domain(self, taps: list[Tensor], y: Tensor, classes, *, split_seed: int, tpr: float) -> None:
        """Bundle a new domain's descriptors from its fit part; reset θ on all known validation parts."""
        fit, val = hdc_fit_split(len(y), split_seed)
        H = self.encode(taps)
        self.class_desc.append(bundle_by_class(H[fit], y[fit], classes))
        self.domain_desc.append(H[fit].sum(0))
        self.val_H.append(H[val])
        self.theta = tpr_threshold(self.score(torch.cat(self.val_H)), tpr)

    def score(self, H: Tensor) -> Tensor:
        """s(x) over every known domain's class descriptors."""
        return ood_score(H, torch.cat(self.class_desc))

    def route(self, H: Tensor, rule: str = "class") -> Tensor:
        if rule == "domain":
            return route_by_domain(H, torch.stack(self.domain_desc))
        return route_by_class(H, self.class_desc)


def ear_predict(heads: list[nn.Module], classes: list[Tensor], routes: Tensor, f: Tensor) -> Tensor:
    """(n,) labels: for inputs routed to k, classes[k][argmax head_k(f)] (−1 where no head was routed)."""
    pred = torch.full((len(f),), -1, dtype=torch.long, device=f.device)
    with torch.no_grad():
        for k, head in enumerate(heads):
            rows = routes == k
            if rows.any():
                pred[rows] = classes[k][head(f[rows]).argmax(1)]
    return pred


@dataclass
class EARLearner:
    """An EAR learner: its HDC memory and, per adaptor, the adaptor + head, its label set and the stream task it
    was grown for (adaptor 0 is the source model's own head)."""

    memory: HDCMemory
    heads: list[nn.Module]
    classes: list[Tensor]
    owners: list[int]

    def detect(self, taps: list[Tensor], window: int) -> list[float]:
        """OOD share of each window of W arriving inputs (taps: the frozen encoder's features of the inputs)."""
        scores = self.memory.score(self.memory.encode(taps))
        w = min(window, len(scores))
        return [ood_fraction(scores[i : i + w], self.memory.theta) for i in range(0, len(scores) - w + 1, w)]

    def grow(self, adaptor: nn.Module, taps: list[Tensor], y: Tensor, classes: Tensor, task: int, **fit) -> None:
        """Keep a trained adaptor + head for ``task`` and bundle the task's class descriptors (θ is reset);
        ``fit`` = split_seed, tpr for :meth:`HDCMemory.add_domain`. Nothing already kept changes."""
        self.heads.append(adaptor)
        self.classes.append(classes)
        self.owners.append(task)
        self.memory.add_domain(taps, y, classes.tolist(), **fit)

    def route(self, taps: list[Tensor], rule: str = "class") -> Tensor:
        """(n,) index of the adaptor each input goes to."""
        return self.memory.route(self.memory.encode(taps), rule)

    def predict(self, taps: list[Tensor], routes: Tensor) -> Tensor:
        """(n,) labels from the routed adaptors, which read the last tapped layer."""
        return ear_predict(self.heads, self.classes, routes, taps[-1])

    def observe(
        self,
        arriving: list[Tensor],
        train: tuple[list[Tensor], Tensor, Tensor],
        task: int,
        *,
        window: int,
        kappa: float,
        make_adaptor: Callable[[], nn.Module],
        **fit,
    ) -> tuple[list[float], int]:
        """One new stretch of the stream. ``arriving``: encoder taps of its unlabelled inputs; ``train``: taps,
        labels and label set to grow from. Returns each window's OOD share and the first flagged window (−1)."""
        # detect: a window with mean(s(x) < θ) > κ declares a new domain
        shares = self.detect(arriving, window)
        flag = next((i for i, v in enumerate(shares) if v > kappa), -1)
        if flag >= 0:
            # grow: zero-shot NAS picks the adaptor, it is trained on the new domain (E frozen), descriptors added
            self.grow(make_adaptor(), *train, task, **fit)
        # route: from now on every input goes to argmax_d max_k cos(H(x), C_{d,k}) (see route / predict)
        return shares, flag
