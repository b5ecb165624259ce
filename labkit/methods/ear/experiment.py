"""EAR's experiment: typed knobs, the digits domain stream, the encoder, baselines, claims and ``run``.

Per seed: an encoder is trained on the source domain and frozen; the stream's new domains arrive one by one.
Arms (each an :class:`~labkit.core.Arm`):

- **EAR** grows an adaptor only when its HDC detector flags a window (the paper's loop, ``EARLearner.observe``);
- **EAR, boundaries known** grows the same adaptor at every boundary and routes by HDC (detection taken out);
- **oracle routing** uses those adaptors with the true domain of every input (the upper bound for routing);
- **single adaptor**: one adaptor + head on the frozen encoder, trained on each domain in turn;
- **fine-tuning**: the pretrained encoder + head, every weight trained on each new domain in turn.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from labkit.core import (
    Arm,
    ClaimCheck,
    Outcome,
    RunContext,
    accuracy,
    check_finite,
    check_weights,
    iterate_minibatches,
    knob,
    method_run,
    params_of,
)
from labkit.data import streams

from .figures import make_figures
from .method import (
    PROXIES,
    Adaptor,
    Arch,
    EARLearner,
    HDCMemory,
    candidate_space,
    cosine_matrix,
    feature_means,
    n_params,
    projection_matrices,
    zero_shot_nas,
)

MAIN_METRIC = "acc_seen"

ARM_EAR = Arm("ear", "EAR")
ARM_KNOWN = Arm("ear_known", "EAR, boundaries known")
ARM_ORACLE = Arm("oracle", "oracle routing")
ARM_SINGLE = Arm("single", "single adaptor")
ARM_FT = Arm("fine_tuning", "fine-tuning")
ARMS = (ARM_EAR, ARM_KNOWN, ARM_ORACLE, ARM_SINGLE, ARM_FT)
#: the two EAR learners (both route by HDC; only the first detects)
LEARNERS = (ARM_EAR, ARM_KNOWN)

# ---- the claims' margins, fixed before any run (from the card; see the claim functions)
#: "minimises forgetting": EAR's final mean accuracy over all domains ≥ sequential fine-tuning + this
FORGETTING_MARGIN = 0.20
#: HDC detects each new domain: AUROC (source test vs the new domain) of the worst new domain ≥ this
AUROC_LEVEL = 0.9
#: HDC is at least as good as MSP, up to this slack: min over new domains of AUROC_HDC − AUROC_MSP ≥ −0.02
MSP_SLACK = -0.02
#: routing: share of test inputs sent to their own domain's adaptor ≥ this
ROUTING_LEVEL = 0.9

# ---- printed precision of the claims, from the measured cross-CPU spread (benchmarks/spread/ear.json)
#: accuracies after fine-tuning / growth move by up to 0.013 across CPU kernels and thread counts: 1 decimal
ACC_DECIMALS = 1
#: the source-model-only numbers (AUROC, routing, the class stream) moved by ≤ 3e-5: 2 decimals
DECIMALS = 2


class Salt:
    """Seed salts: each random stream of a seed gets ``child_seed(seed, SALT, …)`` so pieces never share one."""

    SOURCE_INIT = 1  # the source model's initial weights
    SOURCE_BATCHES = 2  # its minibatch order
    HDC_SPLIT = 3  # descriptor / θ split of a task (with the task index)
    GROW = 4  # zero-shot NAS of a task (with the task index)
    ADAPTOR_BATCHES = 5  # minibatch order of the grown adaptors
    PROJECTIONS = 7  # the HDC projection matrices
    SINGLE_INIT = 11  # the single-adaptor baseline's weights
    SINGLE_BATCHES = 12  # its minibatch order (with the task index)
    FT_BATCHES = 13  # fine-tuning's minibatch order (with the task index)
    CLASS_SOURCE = 20  # class stream: the source model
    CLASS_EAR = 21  # class stream: EAR's learners
    CLASS_FT_INIT = 23  # class stream: fine-tuning's weights
    CLASS_FT_SOURCE = 24  # class stream: fine-tuning's first task
    CLASS_FT_STAGES = 25  # class stream: fine-tuning's later tasks
    PROXY_RNG = 99  # the ``random`` proxy's draws


@dataclass(frozen=True)
class Knobs:
    hd_dim: int = knob(2048, full=10_000, low=64, high=50_000, log=True, help="hypervector dimension D")
    window: int = knob(64, low=4, high=512, help="W: inputs per stream window for the shift test")
    kappa: float = knob(
        0.5, low=0.0, high=0.99, help="κ: a window with more than this share of OOD inputs declares a new domain"
    )
    proxy: str = knob("naswot", choices=PROXIES, help="zero-cost proxy that picks each adaptor")
    budget: int = knob(
        3000, full=20_000, low=50, high=1_000_000, log=True, help="B: most parameters an adaptor + head may have"
    )
    tpr: float = knob(
        0.95, low=0.5, high=0.999, main=False, help="θ lets this share of in-distribution validation inputs pass"
    )
    binarize: bool = knob(False, main=False, help="sign-binarise hypervectors (bipolar ±1)")
    centring: str = knob(
        "unit",
        choices=("unit", "layer", "none"),
        main=False,
        help="subtract the source mean per unit (card), one scalar per layer (HDFF's code), or nothing",
    )
    routing: str = knob(
        "class",
        choices=("class", "domain"),
        main=False,
        help="route by the nearest class descriptor of each domain, or by one bundled descriptor per domain",
    )
    steps: int = knob(
        200, standard=300, full=1000, low=1, high=100_000, main=False, help="Adam steps per adaptor (and per stage)"
    )
    encoder_steps: int = knob(
        300,
        standard=500,
        full=2000,
        low=1,
        high=100_000,
        main=False,
        help="Adam steps that pretrain the encoder on the source domain",
    )
    lr: float = knob(0.01, low=1e-5, high=1.0, log=True, main=False, help="Adam learning rate")
    batch_size: int = knob(64, low=1, high=4096, main=False, help="minibatch size")
    max_depth: int = knob(2, full=3, low=1, high=4, main=False, help="adaptor depths 1..max_depth")
    max_width: int = knob(64, full=128, low=8, high=1024, main=False, help="adaptor widths 8, 16, … up to this")
    train_candidates: bool = knob(
        True, main=False, help="also train every candidate to measure each proxy's rank correlation (Kendall τ)"
    )
    class_incremental: bool = knob(
        True, main=False, help="also run the class-incremental stream (digits 0–4, then 5–9)"
    )
    n_domains: int = knob(
        4,
        full=7,
        low=2,
        high=7,
        main=False,
        help="domains in the stream: original, rot90, invert, noise, blur, contrast, elastic (first n)",
    )
    noise_sigma: float = knob(0.3, low=0.0, high=2.0, main=False, help="σ of the noise domain")
    encoder: str = knob(
        "mlp",
        full="cnn",
        choices=("mlp", "cnn"),
        main=False,
        help="MLP 64→64→32 on 8×8 digits, or a 3-block CNN (taps after each block, global average pooled)",
    )
    side: int = knob(8, full=28, low=8, high=64, main=False, help="image side (digits resized from 8×8)")
    disjoint: bool = knob(
        True,
        full=False,
        main=False,
        help="each domain its own share of the digits (no image in two domains); False: all images per domain",
    )
    n_seeds: int = knob(
        1,
        standard=3,
        full=3,
        low=1,
        high=20,
        main=False,
        help="seeds ctx.seed + k: each draws its own streams, encoder and projections",
    )

    def __post_init__(self):
        # the smallest candidate (depth 1, width 8, no skip) on the encoder's last tap, for the most classes a task
        # has: a budget below it could never grow an adaptor, so it is refused with the other knobs, before work
        smallest = n_params(Arch(1, 8, False), ENCODER_FEATURES[self.encoder], MOST_CLASSES)
        if self.budget < smallest:
            raise ValueError(
                f"budget={self.budget} is too small: the smallest adaptor on the {self.encoder} encoder needs "
                f"{smallest} parameters, so no adaptor could grow (give budget >= {smallest})"
            )


#: width of each encoder's last tap, the input of an adaptor (MLPEncoder and CNNEncoder below; a test checks it)
ENCODER_FEATURES = {"mlp": 32, "cnn": 64}
#: the most classes one task of a stream has: the ten digits of a domain-incremental task
MOST_CLASSES = 10

PARAMS = params_of(Knobs)


# ================================================================= OOD baselines and measures


def auroc(id_scores, ood_scores) -> float:
    """P(s_in > s_out) + ½·P(s_in = s_out) over all (in, out) pairs (Mann–Whitney U / (n_in·n_out))."""
    a = np.asarray(id_scores, dtype=np.float64)[:, None]
    b = np.asarray(ood_scores, dtype=np.float64)[None, :]
    return float(((a > b).sum() + 0.5 * (a == b).sum()) / (a.size * b.size))


def msp_score(logits: torch.Tensor) -> torch.Tensor:
    """Maximum softmax probability (Hendrycks & Gimpel): max_k softmax(z)_k."""
    return torch.softmax(logits, dim=1).max(dim=1).values


def energy_score(logits: torch.Tensor) -> torch.Tensor:
    """Negative free energy (Liu et al. 2020): log Σ_k e^{z_k} (high = in-distribution)."""
    return torch.logsumexp(logits, dim=1)


def mahalanobis_fit(f: torch.Tensor, y: torch.Tensor, classes, ridge: float = 1e-3):
    """Class means μ_k and the shared precision (Σ + ridge·I)⁻¹, Σ = within-class covariance (Lee et al. 2018)."""
    mus = torch.stack([f[y == k].mean(0) for k in classes])
    centred = torch.cat([f[y == k] - mu for k, mu in zip(classes, mus)])
    cov = centred.T @ centred / len(centred)
    return mus, torch.linalg.inv(cov + ridge * torch.eye(f.shape[1], device=f.device))


def mahalanobis_score(f: torch.Tensor, mus: torch.Tensor, precision: torch.Tensor) -> torch.Tensor:
    """−min_k (f − μ_k)ᵀ Σ⁻¹ (f − μ_k) (high = in-distribution)."""
    diff = f[:, None, :] - mus[None]
    return -torch.einsum("nkc,cd,nkd->nk", diff, precision, diff).min(dim=1).values


def kendall_tau(x, y) -> float:
    """Kendall's τ-b rank correlation (scipy), 0 when undefined (a constant input)."""
    from scipy.stats import kendalltau

    tau = kendalltau(x, y).statistic
    return 0.0 if tau is None or not np.isfinite(tau) else float(tau)


# ================================================================= encoders


class MLPEncoder(nn.Module):
    """side² → 64 → 32 with ReLU; the taps are both hidden layers (the card's encoder)."""

    def __init__(self, side: int = 8, hidden: tuple[int, ...] = (64, 32)):
        super().__init__()
        dims = [side * side, *hidden]
        self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(a, b), nn.ReLU()) for a, b in zip(dims, dims[1:]))
        self.tap_dims = list(hidden)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        taps = []
        for block in self.blocks:
            x = block(x)
            taps.append(x)
        return taps


class CNNEncoder(nn.Module):
    """1×side×side → three conv3×3 blocks (16, 32, 64 channels, ReLU, 2×2 max-pool after the first two);
    taps = each block's output, global-average-pooled (HDFF's pooled feature maps). No batch-norm, so nothing
    drifts when it is frozen."""

    def __init__(self, side: int = 28, channels: tuple[int, ...] = (16, 32, 64)):
        super().__init__()
        self.side = side
        ins = (1, *channels[:-1])
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Conv2d(a, b, 3, padding=1), nn.ReLU(), *([nn.MaxPool2d(2)] if k < 2 else []))
            for k, (a, b) in enumerate(zip(ins, channels))
        )
        self.tap_dims = list(channels)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = x.view(-1, 1, self.side, self.side)
        taps = []
        for block in self.blocks:
            x = block(x)
            taps.append(x.mean(dim=(2, 3)))
        return taps


class SourceModel(nn.Module):
    """Encoder + linear head on the last tap: the pretrained model (and the fine-tuning baseline)."""

    def __init__(self, encoder: nn.Module, n_classes: int):
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.tap_dims[-1], n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x)[-1])


def build_encoder(kind: str, side: int) -> nn.Module:
    return CNNEncoder(side) if kind == "cnn" else MLPEncoder(side)


# ================================================================= training and data


def child_seed(*parts: int) -> int:
    """A reproducible seed from integers (e.g. seed, Salt.GROW, task)."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0])


def minibatches(n: int, batch_size: int, steps: int, seed: int):
    """``steps`` index batches from shuffled epochs (order from ``seed``), each epoch's short last batch dropped
    (kept when n < batch_size: then every batch is the whole set)."""
    gen = torch.Generator().manual_seed(seed)
    made = 0
    while made < steps:
        for idx in iterate_minibatches(n, batch_size, gen, drop_last=n >= batch_size):
            if made == steps:
                return
            yield idx
            made += 1


def train_classifier(
    models: nn.Module | list[nn.Module],
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    steps: int,
    lr: float,
    batch_size: int,
    seed: int,
    series: str | list[str],
    bar=None,
    label_map: torch.Tensor | None = None,
) -> np.ndarray:
    """``steps`` Adam steps of cross-entropy on minibatches of (x, y); ``label_map`` turns labels into output
    indices. A list of models is trained side by side on the same batches with ONE Adam over the summed loss:
    the sum separates and Adam is element-wise, so each model gets exactly its own training, at a fraction of
    the per-step overhead. A NaN/inf loss or a weight beyond ``WEIGHT_LIMIT`` raises ``DivergenceError`` naming
    the model's series and the step.
    Returns the losses, shape (steps, n_models)."""
    models = [models] if isinstance(models, nn.Module) else list(models)
    names = [series] if isinstance(series, str) else list(series)
    opt = torch.optim.Adam([q for m in models for q in m.parameters()], lr=lr)
    targets = y if label_map is None else label_map[y]
    losses = []
    for step, idx in enumerate(minibatches(len(x), batch_size, steps, seed), start=1):
        idx = idx.to(x.device)
        each = torch.stack([F.cross_entropy(m(x[idx]), targets[idx]) for m in models])
        opt.zero_grad(set_to_none=True)
        each.sum().backward()
        opt.step()
        losses.append(each.detach())
        if not torch.isfinite(losses[-1]).all():
            bad = int((~torch.isfinite(losses[-1])).nonzero()[0])
            check_finite(losses[-1][bad], step, names[bad])
        for model, name in zip(models, names):
            check_weights(model, step, name)
        if bar is not None:
            bar.update(len(models))
    return torch.stack(losses).cpu().numpy()


def accuracy_of(pred: torch.Tensor, y: torch.Tensor) -> float:
    """Share of predicted labels equal to y, for predictions already in hand (EAR's routed heads)."""
    return float((pred == y).float().mean())


@dataclass
class DomainData:
    """One task of a stream on the device, with its frozen-encoder taps computed once."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: torch.Tensor
    taps_train: list[torch.Tensor] = field(default_factory=list)
    taps_test: list[torch.Tensor] = field(default_factory=list)

    @property
    def train(self) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """What a learner grows from: taps, labels, label set."""
        return self.taps_train, self.y_train, self.classes


def to_device(stream: streams.Stream, device) -> list[DomainData]:
    def t(a):
        return torch.as_tensor(a, device=device)

    return [
        DomainData(k.name, t(k.x_train), t(k.y_train), t(k.x_test), t(k.y_test), t(np.array(k.classes)))
        for k in stream.tasks
    ]


def class_index(classes: torch.Tensor) -> torch.Tensor:
    """label → output index of a head over ``classes`` (−1 for labels not in it)."""
    out = torch.full((int(classes.max()) + 1,), -1, dtype=torch.long, device=classes.device)
    out[classes] = torch.arange(len(classes), device=classes.device)
    return out


def pretrain_source(
    d: DomainData,
    *,
    encoder: str,
    side: int,
    n_out: int,
    steps: int,
    lr: float,
    batch_size: int,
    seed: int,
    device,
    bar=None,
    label_map=None,
) -> SourceModel:
    """Train encoder + head on the source task (Adam, ``steps``)."""
    torch.manual_seed(child_seed(seed, Salt.SOURCE_INIT))
    model = SourceModel(build_encoder(encoder, side), n_out).to(device)
    train_classifier(
        model,
        d.x_train,
        d.y_train,
        steps=steps,
        lr=lr,
        batch_size=batch_size,
        seed=child_seed(seed, Salt.SOURCE_BATCHES),
        series="encoder",
        bar=bar,
        label_map=label_map,
    )
    return model


def freeze(model: SourceModel, tasks: list[DomainData]) -> None:
    """Eval mode, no gradients, and every task's taps computed once with the frozen encoder."""
    model.eval()
    model.requires_grad_(False)
    with torch.no_grad():
        for d in tasks:
            d.taps_train, d.taps_test = model.encoder(d.x_train), model.encoder(d.x_test)


def new_memory(taps_source: list[torch.Tensor], *, hd_dim: int, centring: str, binarize: bool, seed: int) -> HDCMemory:
    gen = torch.Generator().manual_seed(child_seed(seed, Salt.PROJECTIONS))
    dims = [t.shape[1] for t in taps_source]
    projections = [P.to(taps_source[0].device) for P in projection_matrices(dims, hd_dim, gen)]
    return HDCMemory(projections, feature_means(taps_source, centring), binarize)


def new_learner(p: Knobs, source_task: DomainData, source: SourceModel, seed: int) -> EARLearner:
    """The learner before any growth: the source head and the source task's descriptors."""
    memory = new_memory(source_task.taps_train, hd_dim=p.hd_dim, centring=p.centring, binarize=p.binarize, seed=seed)
    taps, y, classes = source_task.train
    memory.add_domain(taps, y, classes.tolist(), split_seed=child_seed(seed, Salt.HDC_SPLIT, 0), tpr=p.tpr)
    return EARLearner(memory, [source.head], [classes], [0])


# ================================================================= typed records


@dataclass
class NASRecord:
    """Zero-shot NAS for one grown task: candidates, sizes, proxy scores, the pick, and (when every candidate
    was trained) their test accuracies, the pick's rank (1 = best) and each proxy's Kendall τ with accuracy."""

    task: int
    archs: list[Arch]
    sizes: list[int]
    scores: dict[str, list[float]]
    pick: int
    acc: list[float | None]
    pick_rank: int | None = None
    best_acc: float | None = None
    tau: dict[str, float] | None = None

    @property
    def labels(self) -> list[str]:
        return [a.label for a in self.archs]

    @property
    def pick_arch(self) -> Arch:
        return self.archs[self.pick]

    @property
    def pick_label(self) -> str:
        return self.pick_arch.label

    @property
    def pick_size(self) -> int:
        return self.sizes[self.pick]

    @property
    def pick_acc(self) -> float:
        return self.acc[self.pick]


@dataclass
class Detection:
    """The detector on one task's arriving inputs: OOD share per window before growth, the first window over κ
    (−1: none, so EAR did not grow), and the shares of the same windows after growth."""

    name: str
    before: list[float]
    first_flag: int
    after: list[float]

    @property
    def grown(self) -> bool:
        return self.first_flag >= 0


@dataclass
class LearnerTrace:
    """One EAR learner over the stream: accuracy rows (after stage t, per test task), routing accuracy per
    stage (its own rule and the other one), the final routing confusion and which task owns each adaptor."""

    rows: list[list[float]] = field(default_factory=list)
    routing: list[float] = field(default_factory=list)
    routing_other: list[float] = field(default_factory=list)
    confusion: np.ndarray | None = None
    owners: list[int] = field(default_factory=list)


@dataclass
class StreamRun:
    """The EAR learners over one stream: per learner arm key its trace, oracle routing's rows, detection,
    the stage AUROC (known domains vs the next) and the NAS record of every grown task."""

    traces: dict[str, LearnerTrace]
    oracle_rows: list[list[float]]
    detection: list[Detection]
    stage_auroc: list[float]
    nas: list[NASRecord]


@dataclass
class AUROCRow:
    """OOD AUROC of one new domain (source test = in), source model only, per score."""

    hdc: float
    msp: float
    energy: float
    mahalanobis: float
    hdc_last_layer: float
    hdc_first_layer: float
    hdc_centring_unit: float
    hdc_centring_layer: float
    hdc_centring_none: float


@dataclass
class RawScores:
    """One domain's test scores (HDC, MSP) and how many inputs have each class descriptor as their nearest."""

    hdc: np.ndarray
    msp: np.ndarray
    nearest: list[int]


@dataclass
class OODTable:
    auroc: dict[str, AUROCRow]  # new domain's name → its row
    raw: dict[str, RawScores]  # every domain's name (source first) → its scores
    theta_source: float


@dataclass
class DomainSeed:
    """One seed of the domain-incremental stream: accuracy matrices per arm key (rows: after stage t, columns:
    test domain), the source-only OOD table, the EAR learners' run and the single adaptor's shape."""

    seed: int
    names: list[str]
    matrices: dict[str, np.ndarray]
    ood: OODTable
    ear: StreamRun
    single_arch: str

    def final(self, arm: Arm) -> float:
        """Mean test accuracy over all domains after the last stage."""
        return float(np.mean(self.matrices[arm.key][-1]))


@dataclass
class ClassSeed:
    """One seed of the class-incremental stream (0–4 then 5–9)."""

    names: list[str]
    matrices: dict[str, np.ndarray]
    routing_known: float
    auroc: float
    detected: bool
    picks: list[str]

    def final(self, arm: Arm) -> float:
        return float(np.mean(self.matrices[arm.key][-1]))


@dataclass
class EARRun:
    """Everything the figures and the notebook read (``result.extras["run"]``)."""

    names: list[str]
    seeds: list[DomainSeed]
    class_seeds: list[ClassSeed]
    proxy: str

    @property
    def first(self) -> DomainSeed:
        return self.seeds[0]

    def matrix(self, arm: Arm) -> np.ndarray:
        """Element-wise mean over seeds; NaN where no seed has a value (oracle routing to a task without adaptor)."""
        stack = np.stack([s.matrices[arm.key] for s in self.seeds])
        counts = np.isfinite(stack).sum(0)
        return np.where(counts > 0, np.nansum(stack, 0) / np.maximum(counts, 1), np.nan)

    def auroc_table(self) -> dict[str, dict[str, float]]:
        """New domain → score → AUROC, mean over seeds."""
        return {
            n: {k: float(np.mean([asdict(s.ood.auroc[n])[k] for s in self.seeds])) for k in asdict(row)}
            for n, row in self.first.ood.auroc.items()
        }


# ================================================================= one EAR stream: detect → grow → route


@dataclass
class Grown:
    adaptor: Adaptor
    record: NASRecord


def grow_adaptor(p: Knobs, d: DomainData, task: int, seed: int, bar) -> Grown:
    """Zero-shot NAS for a new task on its first W training inputs, then train the pick with the encoder frozen
    (with ``train_candidates``, every candidate too, side by side, to measure the proxies)."""
    f, y = d.taps_train[-1], d.y_train
    in_dim, n_out, label_map = f.shape[1], len(d.classes), class_index(d.classes)
    archs = candidate_space(in_dim, n_out, p.max_depth, p.max_width, p.budget)
    if not archs:
        raise ValueError(
            f"no adaptor fits the budget B={p.budget}: the smallest needs "
            f"{n_params(Arch(1, 8, False), in_dim, n_out)} parameters"
        )
    batch = slice(0, min(p.window, len(y)))
    search = zero_shot_nas(
        archs,
        f[batch],
        label_map[y[batch]],
        n_out=n_out,
        proxy=p.proxy,
        init_seed=lambda a: child_seed(seed, a.depth, a.width),  # the skip variant shares the body's weights
        rng=np.random.default_rng(child_seed(seed, Salt.PROXY_RNG)),
    )
    trained = list(range(len(archs))) if p.train_candidates else [search.pick]
    train_classifier(
        [search.models[i] for i in trained],
        f,
        y,
        steps=p.steps,
        lr=p.lr,
        batch_size=p.batch_size,
        seed=child_seed(seed, Salt.ADAPTOR_BATCHES),
        series=[f"adaptor {d.name} {archs[i].label}" for i in trained],
        bar=bar,
        label_map=label_map,
    )
    acc = {i: accuracy(search.models[i], d.taps_test[-1], label_map[d.y_test]) for i in trained}
    record = NASRecord(
        task=task,
        archs=archs,
        sizes=search.sizes,
        scores={k: [s[k] for s in search.scores] for k in PROXIES},
        pick=search.pick,
        acc=[acc.get(i) for i in range(len(archs))],
    )
    if len(acc) == len(archs):
        accs = np.array(record.acc)
        record.pick_rank = int(1 + np.sum(accs > accs[search.pick]))
        record.best_acc = float(accs.max())
        record.tau = {k: kendall_tau(record.scores[k], accs) for k in PROXIES}
    return Grown(search.adaptor, record)


@dataclass
class StageEval:
    acc: list[float]
    route: dict[str, list[float]]  # rule ("class" / "domain") → routing accuracy per task 0..upto
    confusion: np.ndarray


def evaluate_stage(learner: EARLearner, tasks: list[DomainData], rule: str, upto: int, oracle: bool = False):
    """Accuracy on every test task (routes by HDC, or by the true task with ``oracle``: NaN for a task without
    an adaptor); routing accuracy over tasks 0..``upto`` for both rules (a task with no adaptor of its own
    counts as misrouted); and the routing confusion (rows: test task, columns: adaptor)."""
    ev = StageEval([], {"class": [], "domain": []}, np.zeros((len(tasks), len(learner.heads))))
    owners = torch.as_tensor(learner.owners)
    for j, d in enumerate(tasks):
        routes = {r: learner.route(d.taps_test, r) for r in ("class", "domain")}
        ev.confusion[j] = np.bincount(routes[rule].cpu().numpy(), minlength=len(learner.heads)) / len(d.y_test)
        if oracle:
            own = learner.owners.index(j) if j in learner.owners else None
            ev.acc.append(
                float("nan")
                if own is None
                else accuracy_of(learner.predict(d.taps_test, torch.full_like(routes[rule], own)), d.y_test)
            )
        else:
            ev.acc.append(accuracy_of(learner.predict(d.taps_test, routes[rule]), d.y_test))
        if j <= upto:
            for r in ("class", "domain"):
                ev.route[r].append(float((owners[routes[r].cpu()] == j).double().mean()))
    return ev


def run_ear(p: Knobs, tasks: list[DomainData], source: SourceModel, seed: int, bar) -> StreamRun:
    """EAR over the stream. Each new task's (unlabelled) test inputs arrive in windows of W; EAR's learner
    observes them (detect → grow if flagged). The same adaptor is grown in any case for "EAR, boundaries known"
    (told when a task starts; still routes by HDC) and for oracle routing (told the task of every test input).
    Task 0's adaptor is the source head."""
    learners = {a.key: new_learner(p, tasks[0], source, seed) for a in LEARNERS}
    ear, known = learners[ARM_EAR.key], learners[ARM_KNOWN.key]
    traces = {a.key: LearnerTrace() for a in LEARNERS}
    run = StreamRun(traces, [], [Detection(tasks[0].name, ear.detect(tasks[0].taps_test, p.window), -1, [])], [], [])
    other = "domain" if p.routing == "class" else "class"
    for t, d in enumerate(tasks):
        if t > 0:
            seen = torch.cat([known.memory.encode(tasks[j].taps_test) for j in range(t)])
            new = known.memory.encode(d.taps_test)
            run.stage_auroc.append(auroc(known.memory.score(seen).cpu(), known.memory.score(new).cpu()))
            grown = grow_adaptor(p, d, t, child_seed(seed, Salt.GROW, t), bar)
            run.nas.append(grown.record)
            fit = {"split_seed": child_seed(seed, Salt.HDC_SPLIT, t), "tpr": p.tpr}
            shares, flag = ear.observe(
                d.taps_test, d.train, t, window=p.window, kappa=p.kappa, make_adaptor=lambda a=grown.adaptor: a, **fit
            )
            known.grow(grown.adaptor, *d.train, t, **fit)
            after = ear.detect(d.taps_test, p.window) if flag >= 0 else []
            run.detection.append(Detection(d.name, shares, flag, after))
        for arm in LEARNERS:
            ev, trace = evaluate_stage(learners[arm.key], tasks, p.routing, t), traces[arm.key]
            trace.rows.append(ev.acc)
            trace.routing.append(float(np.mean(ev.route[p.routing])))
            trace.routing_other.append(float(np.mean(ev.route[other])))
            trace.confusion = ev.confusion
        run.oracle_rows.append(evaluate_stage(known, tasks, p.routing, t, oracle=True).acc)
    for arm in LEARNERS:
        traces[arm.key].owners = list(learners[arm.key].owners)
    return run


# ================================================================= the domain-incremental stream and baselines


def hdc_variant(memory: HDCMemory, src: DomainData, taps: list[int], centring: str, split_seed: int, tpr: float):
    """The same projections on a subset of the taps and/or another centring, with source descriptors."""
    feats = [src.taps_train[i] for i in taps]
    out = HDCMemory([memory.projections[i] for i in taps], feature_means(feats, centring), memory.binarize)
    out.add_domain(feats, src.y_train, src.classes.tolist(), split_seed=split_seed, tpr=tpr)
    return out


def source_ood_table(
    model: SourceModel, memory: HDCMemory, tasks: list[DomainData], *, centring: str, split_seed: int, tpr: float
) -> OODTable:
    """AUROC of source test vs each new domain's test inputs, from the source model alone (before any growth):
    HDC over all taps, on the last or first tap only, with each centring; MSP, energy, Mahalanobis."""
    src = tasks[0]
    last = len(src.taps_train) - 1
    variants = {
        "hdc_last_layer": ([last], centring),
        "hdc_first_layer": ([0], centring),
        **{f"hdc_centring_{c}": (list(range(last + 1)), c) for c in ("unit", "layer", "none")},
    }
    memories = {k: hdc_variant(memory, src, taps, c, split_seed, tpr) for k, (taps, c) in variants.items()}
    mus, prec = mahalanobis_fit(src.taps_train[-1], src.y_train, src.classes.tolist())

    def scores(d: DomainData) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            logits = model.head(d.taps_test[-1])
        out = {
            "hdc": memory.score(memory.encode(d.taps_test)),
            "msp": msp_score(logits),
            "energy": energy_score(logits),
            "mahalanobis": mahalanobis_score(d.taps_test[-1], mus, prec),
        }
        return out | {k: m.score(m.encode([d.taps_test[i] for i in variants[k][0]])) for k, m in memories.items()}

    def raw(d: DomainData, s: dict) -> RawScores:
        """Scores, and how many test inputs have each class descriptor as their nearest."""
        best = cosine_matrix(memory.encode(d.taps_test), torch.cat(memory.class_desc)).argmax(1)
        nearest = np.bincount(best.cpu().numpy(), minlength=len(src.classes)).tolist()
        return RawScores(s["hdc"].cpu().numpy(), s["msp"].cpu().numpy(), nearest)

    base = scores(src)
    table, raws = {}, {src.name: raw(src, base)}
    for d in tasks[1:]:
        s = scores(d)
        table[d.name] = AUROCRow(**{k: auroc(base[k].cpu(), s[k].cpu()) for k in base})
        raws[d.name] = raw(d, s)
    return OODTable(table, raws, memory.theta)


def single_adaptor_rows(p: Knobs, tasks: list[DomainData], arch: Arch, seed: int, bar, device) -> list[list[float]]:
    """Baseline: ONE adaptor + head on the frozen encoder, trained on each domain in turn (source first)."""
    torch.manual_seed(child_seed(seed, Salt.SINGLE_INIT))
    adaptor = Adaptor(arch, tasks[0].taps_train[-1].shape[1], len(tasks[0].classes)).to(device)
    rows = []
    for t, d in enumerate(tasks):
        train_classifier(
            adaptor,
            d.taps_train[-1],
            d.y_train,
            steps=p.steps,
            lr=p.lr,
            batch_size=p.batch_size,
            seed=child_seed(seed, Salt.SINGLE_BATCHES, t),
            series=f"single adaptor {d.name}",
            bar=bar,
        )
        rows.append([accuracy(adaptor, e.taps_test[-1], e.y_test) for e in tasks])
    return rows


def fine_tuning_rows(
    model: SourceModel, tasks: list[DomainData], *, steps: int, lr: float, batch_size: int, seed: int, bar, first=1
) -> list[list[float]]:
    """Baseline: the model, EVERY weight trained on each task from ``first`` on in turn; test accuracy on all
    tasks after each stage (the row before any of it is the model as given)."""
    rows = [[accuracy(model, d.x_test, d.y_test) for d in tasks]]
    for t, d in enumerate(tasks[first:], start=first):
        model.train()
        train_classifier(
            model,
            d.x_train,
            d.y_train,
            steps=steps,
            lr=lr,
            batch_size=batch_size,
            seed=child_seed(seed, Salt.FT_BATCHES, t),
            series=f"fine-tuning {d.name}",
            bar=bar,
        )
        rows.append([accuracy(model, e.x_test, e.y_test) for e in tasks])
    return rows


def run_domain_stream(ctx: RunContext[Knobs], seed: int, bar) -> DomainSeed:
    """One seed of the domain-incremental stream: EAR, oracle routing, a single adaptor and fine-tuning."""
    p = ctx.p
    stream = streams.digits_domain_stream(
        streams.DIGITS_DOMAINS[: p.n_domains], seed, p.side, p.noise_sigma, disjoint=p.disjoint
    )
    tasks = to_device(stream, ctx.device)
    train = {"steps": p.encoder_steps, "lr": p.lr, "batch_size": p.batch_size}
    source = pretrain_source(
        tasks[0], encoder=p.encoder, side=p.side, n_out=stream.n_classes, seed=seed, device=ctx.device, bar=bar, **train
    )
    ft_model = copy.deepcopy(source)
    freeze(source, tasks)
    ear = run_ear(p, tasks, source, seed, bar)
    ood = source_ood_table(
        source,
        new_learner(p, tasks[0], source, seed).memory,
        tasks,
        centring=p.centring,
        split_seed=child_seed(seed, Salt.HDC_SPLIT, 0),
        tpr=p.tpr,
    )
    single_arch = ear.nas[0].pick_arch  # the baseline's single adaptor has the first NAS pick's shape
    matrices = {
        ARM_EAR.key: ear.traces[ARM_EAR.key].rows,
        ARM_KNOWN.key: ear.traces[ARM_KNOWN.key].rows,
        ARM_ORACLE.key: ear.oracle_rows,
        ARM_SINGLE.key: single_adaptor_rows(p, tasks, single_arch, seed, bar, ctx.device),
        ARM_FT.key: fine_tuning_rows(
            ft_model, tasks, steps=p.steps, lr=p.lr, batch_size=p.batch_size, seed=seed, bar=bar
        ),
    }
    matrices = {k: np.array(m, dtype=float) for k, m in matrices.items()}
    out = DomainSeed(seed, stream.names, matrices, ood, ear, single_arch.label)
    log_stages(ctx, out)
    return out


def log_stages(ctx: RunContext, r: DomainSeed) -> None:
    """History rows per stage t: each arm's mean accuracy over tasks 0..t and per task; the EAR learners'
    routing accuracy and (t ≥ 1) the stage AUROC."""
    for t in range(len(r.names)):
        for arm in ARMS:
            m = r.matrices[arm.key]
            ctx.history.log(t, arm.label, "acc_seen", float(np.nanmean(m[t, : t + 1])), seed=r.seed)
            for j, name in enumerate(r.names):
                ctx.history.log(t, arm.label, f"acc {name}", float(m[t, j]), seed=r.seed)
        for arm in LEARNERS:
            ctx.history.log(t, arm.label, "routing_acc", r.ear.traces[arm.key].routing[t], seed=r.seed)
        if t > 0:
            ctx.history.log(t, ARM_EAR.label, "stage_auroc", r.ear.stage_auroc[t - 1], seed=r.seed)


# ================================================================= the class-incremental stream


def run_class_stream(ctx: RunContext[Knobs], seed: int, bar) -> ClassSeed:
    """Digits 0–4, then 5–9. EAR: encoder + 5-way head trained on 0–4 and frozen; HDC flags the new classes,
    an adaptor + 5-way head over 5–9 is grown, routing picks the head (task inference). Fine-tuning: encoder +
    one 10-way head trained on each task in turn."""
    p = ctx.p
    stream = streams.digits_class_stream(seed=seed, side=p.side)
    tasks = to_device(stream, ctx.device)
    first = tasks[0]
    train = {"steps": p.encoder_steps, "lr": p.lr, "batch_size": p.batch_size}
    source = pretrain_source(
        first,
        encoder=p.encoder,
        side=p.side,
        n_out=len(first.classes),
        seed=child_seed(seed, Salt.CLASS_SOURCE),
        device=ctx.device,
        bar=bar,
        label_map=class_index(first.classes),
        **train,
    )
    freeze(source, tasks)
    ear = run_ear(p, tasks, source, child_seed(seed, Salt.CLASS_EAR), bar)
    torch.manual_seed(child_seed(seed, Salt.CLASS_FT_INIT))
    ft = SourceModel(build_encoder(p.encoder, p.side), stream.n_classes).to(ctx.device)
    train_classifier(
        ft,
        first.x_train,
        first.y_train,
        seed=child_seed(seed, Salt.CLASS_FT_SOURCE),
        series="fine-tuning classes 0-4",
        bar=bar,
        **train,
    )
    ft_rows = fine_tuning_rows(
        ft, tasks, steps=p.steps, lr=p.lr, batch_size=p.batch_size, seed=child_seed(seed, Salt.CLASS_FT_STAGES), bar=bar
    )
    rows = {
        ARM_EAR.key: ear.traces[ARM_EAR.key].rows,
        ARM_KNOWN.key: ear.traces[ARM_KNOWN.key].rows,
        ARM_ORACLE.key: ear.oracle_rows,
        ARM_FT.key: ft_rows,
    }
    return ClassSeed(
        names=stream.names,
        matrices={k: np.array(m, dtype=float) for k, m in rows.items()},
        routing_known=ear.traces[ARM_KNOWN.key].routing[-1],
        auroc=ear.stage_auroc[0],
        detected=ear.detection[1].grown,
        picks=[r.pick_label for r in ear.nas],
    )


# ================================================================= claims: pure functions of per-seed numbers


def forgetting(matrix: np.ndarray) -> float:
    """Mean over domains j < T−1 of max_{t ≥ j} acc[t, j] − acc[T−1, j]: accuracy lost since its best."""
    T = matrix.shape[0]
    return float(np.mean([np.nanmax(matrix[j:, j]) - matrix[-1, j] for j in range(T - 1)]))


def _seeds_text(n: int) -> str:
    return f"{n} seed{'s' if n > 1 else ''}"


def claim_forgetting(
    ear: Sequence[float], ft: Sequence[float], *, grown: int, new_domains: int, decimals: int = ACC_DECIMALS
) -> ClaimCheck:
    """Headline (the paper's "minimises forgetting by progressive growth and routing"): after the whole stream,
    EAR's mean accuracy over all domains minus sequential fine-tuning's, per seed, ≥ FORGETTING_MARGIN.
    ``grown`` of ``new_domains`` (summed over seeds) is how often EAR's detector let it grow."""
    return ClaimCheck.paired(
        claim="EAR (detect → grow → route) keeps accuracy on every domain seen, while sequential fine-tuning forgets",
        quantity="final mean accuracy over all domains, EAR − fine-tuning",
        method=ear,
        baseline=ft,
        margin=FORGETTING_MARGIN,
        headline=True,
        labels=("EAR", "fine-tuning"),
        detail=f"EAR grows only when a window is flagged: it grew for {grown} of {new_domains} new domains "
        f"(over {_seeds_text(len(ear))}); margin {FORGETTING_MARGIN:.2f} from the card",
        decimals=decimals,
    )


def claim_detection(worst_auroc: Sequence[float], *, decimals: int = DECIMALS) -> ClaimCheck:
    """HDC flags each new domain: per seed, the smallest AUROC over new domains (source test = in) ≥ AUROC_LEVEL."""
    return ClaimCheck(
        claim=f"HDC descriptors detect every new domain (AUROC ≥ {AUROC_LEVEL:g} on each)",
        quantity="worst new domain's HDC AUROC, source test vs that domain",
        values=worst_auroc,
        margin=AUROC_LEVEL,
        detail="source model only, before any growth; the card's level",
        decimals=decimals,
    )


def claim_hdc_vs_msp(worst_gap: Sequence[float], *, decimals: int = DECIMALS) -> ClaimCheck:
    """HDC is not worse than MSP: per seed, min over new domains of AUROC_HDC − AUROC_MSP ≥ MSP_SLACK."""
    return ClaimCheck(
        claim="HDC detects distribution shift at least as well as max-softmax probability (within 0.02 AUROC)",
        quantity="min over new domains of AUROC(HDC) − AUROC(MSP)",
        values=worst_gap,
        margin=MSP_SLACK,
        detail="source model only; the card's slack",
        decimals=decimals,
    )


def claim_routing(routing: Sequence[float], *, who: str, decimals: int = DECIMALS) -> ClaimCheck:
    """Share of test inputs routed to their own domain's adaptor after the stream (mean over domains; a domain
    with no adaptor of its own counts as misrouted) ≥ ROUTING_LEVEL."""
    return ClaimCheck(
        claim=f"{who}: HDC routing sends test inputs to their own domain's adaptor (≥ {ROUTING_LEVEL:g})",
        quantity="share routed to the true domain after the stream",
        values=routing,
        margin=ROUTING_LEVEL,
        detail="a domain without an adaptor of its own counts as misrouted",
        decimals=decimals,
    )


def claim_growth_known(known: Sequence[float], ft: Sequence[float], *, decimals: int = ACC_DECIMALS) -> ClaimCheck:
    """Growth + HDC routing alone (an adaptor at every boundary, detection taken out) vs fine-tuning."""
    return ClaimCheck.paired(
        claim="with every domain boundary given, growth + HDC routing keep accuracy where fine-tuning forgets",
        quantity="final mean accuracy over all domains, EAR (boundaries known) − fine-tuning",
        method=known,
        baseline=ft,
        margin=FORGETTING_MARGIN,
        labels=("EAR, boundaries known", "fine-tuning"),
        detail="the headline's mechanism with detection taken out",
        decimals=decimals,
    )


def claim_class_incremental(ear: Sequence[float], ft: Sequence[float], *, decimals: int = DECIMALS) -> ClaimCheck:
    """Class-incremental stream (0–4 then 5–9): EAR's final mean accuracy over both tasks − fine-tuning's."""
    return ClaimCheck.paired(
        claim="class-incremental (digits 0–4, then 5–9): EAR keeps both tasks where fine-tuning forgets",
        quantity="final mean accuracy over both tasks, EAR − fine-tuning",
        method=ear,
        baseline=ft,
        margin=FORGETTING_MARGIN,
        labels=("EAR", "fine-tuning"),
        detail="routing must tell the task from the input (task inference)",
        decimals=decimals,
    )


def claims_of(run: EARRun) -> list[ClaimCheck]:
    """Every claim of a run, from its per-seed numbers."""
    seeds, new = run.seeds, run.names[1:]
    claims = [
        claim_forgetting(
            [s.final(ARM_EAR) for s in seeds],
            [s.final(ARM_FT) for s in seeds],
            grown=sum(d.grown for s in seeds for d in s.ear.detection[1:]),
            new_domains=len(new) * len(seeds),
        ),
        claim_detection([min(s.ood.auroc[n].hdc for n in new) for s in seeds]),
        claim_hdc_vs_msp([min(s.ood.auroc[n].hdc - s.ood.auroc[n].msp for n in new) for s in seeds]),
        claim_routing([s.ear.traces[ARM_EAR.key].routing[-1] for s in seeds], who="EAR"),
        claim_growth_known([s.final(ARM_KNOWN) for s in seeds], [s.final(ARM_FT) for s in seeds]),
        claim_routing([s.ear.traces[ARM_KNOWN.key].routing[-1] for s in seeds], who="EAR, boundaries known"),
    ]
    if run.class_seeds:
        cs = run.class_seeds
        claims.append(claim_class_incremental([c.final(ARM_EAR) for c in cs], [c.final(ARM_FT) for c in cs]))
    return claims


# ================================================================= run


def final_metrics(run: EARRun) -> dict[str, float]:
    seeds, new = run.seeds, run.names[1:]
    out = {f"acc_{a.key}": float(np.mean([s.final(a) for s in seeds])) for a in ARMS}
    out["routing_acc"] = float(np.mean([s.ear.traces[ARM_EAR.key].routing[-1] for s in seeds]))
    out["min_hdc_auroc"] = float(np.mean([min(s.ood.auroc[n].hdc for n in new) for s in seeds]))
    out["detected_share"] = float(np.mean([d.grown for s in seeds for d in s.ear.detection[1:]]))
    return out


def total_steps(p: Knobs) -> int:
    """Training steps for the progress bar (an upper bound: candidates that miss the budget are not trained)."""
    n_cands = p.max_depth * 2 * (int(math.log2(p.max_width / 8)) + 1) if p.train_candidates else 1
    per_seed = p.encoder_steps + (p.n_domains - 1) * (n_cands + 1) * p.steps + p.n_domains * p.steps
    if p.class_incremental:
        per_seed += 2 * p.encoder_steps + (n_cands + 1) * p.steps
    return p.n_seeds * per_seed


@method_run(Knobs, figures=make_figures, threads={"quick": 1, "standard": 1})
def run(ctx: RunContext[Knobs]) -> Outcome:
    """EAR vs oracle routing, a single shared adaptor and sequential fine-tuning on the digits domain stream
    (and, if asked, the class-incremental stream), n_seeds seeds."""
    p = ctx.p
    seeds = ctx.seeds(p.n_seeds)
    bar = ctx.bar(total_steps(p), "EAR: encoder, adaptors, baselines")
    per_seed = [run_domain_stream(ctx, s, bar) for s in seeds]
    class_seeds = [run_class_stream(ctx, s, bar) for s in seeds] if p.class_incremental else []
    bar.close()
    result = EARRun(per_seed[0].names, per_seed, class_seeds, p.proxy)
    return Outcome(metrics=final_metrics(result), claims=claims_of(result), extras={"run": result})
