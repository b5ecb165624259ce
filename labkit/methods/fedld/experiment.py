"""FedLD's experiment: the knobs, the digits federation, the arms (FedAvg, margin-only, FedLD, ± FedProx and
principal-only), the claim checks and :func:`run`. The paper's pieces are in :mod:`.method`."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from labkit.core import Arm as CoreArm
from labkit.core import ClaimCheck, Outcome, RunContext, accuracy, knob, method_run, params_of
from labkit.data.federated import (
    client_arrays,
    dirichlet_split,
    label_proportions,
    load_digits_split,
    random_feature_shifts,
)
from labkit.models import MLP
from labkit.substrates.federated import (
    Client,
    LocalSGD,
    RoundResult,
    aggregate,
    cross_evaluate,
    fedavg,
    federated_round,
    flatten_update,
    model_state,
    plain_mean,
)

from .figures import make_figures
from .method import (
    EPS,
    cosine,
    gram_spectrum,
    loss_decomposition,
    margin_control_loss,
    principal_aggregate,
    softmax_sq_norm,
)

MAIN_METRIC = "test_acc"

#: scikit-learn digits: 8×8 images, 10 classes
IMAGE_SIDE = 8
N_CLASSES = 10
#: the tensor whose eigenvalue spectrum is kept: the first weight matrix (the MLP's largest tensor)
SPECTRUM_TENSOR_INDEX = 0


@dataclass(frozen=True)
class Knobs:
    n_clients: int = knob(5, 10, 20, low=2, high=50, help="number of clients m")
    alpha: float = knob(
        0.5, 0.1, 0.5, low=0.01, high=1000.0, log=True, help="Dirichlet α of the label skew (small = few classes each)"
    )
    feature_shift: bool = knob(
        False,
        False,
        True,
        help="give every client its own translation + contrast/brightness shift (as hospitals' scanners)",
    )
    rounds: int = knob(25, 50, 200, low=1, high=1000, help="communication rounds")
    local_epochs: int = knob(1, low=1, high=20, help="local epochs per round")
    lam: float = knob(0.1, low=0.0, high=10.0, help="FedLD's margin-control weight λ")
    k_proportion: float = knob(
        0.8, low=0.05, high=1.0, help="share of principal directions kept, k = max(1, ⌊k_proportion·m⌋)"
    )
    lam_margin: float = knob(
        1.0, low=0.0, high=10.0, main=False, help="λ of the margin-only arm (the mechanism check uses λ = 1)"
    )
    mu: float = knob(0.01, low=0.0, high=10.0, main=False, help="FedProx proximal weight μ")
    extra_arms: bool = knob(False, True, True, main=False, help="also train FedProx and principal-only (λ = 0)")
    norm_match: bool = knob(
        False,
        main=False,
        help="diagnostic, not in the paper: stretch each tensor's principal update to the FedAvg update's length",
    )
    model: str = knob(
        "mlp", full="cnn", choices=("mlp", "cnn"), main=False, help="MLP 64→hidden→10, or a small CNN on the 8×8 images"
    )
    hidden: int = knob(64, low=4, high=1024, main=False, help="MLP hidden width")
    lr: float = knob(0.05, low=1e-5, high=1.0, log=True, main=False, help="local SGD learning rate")
    momentum: float = knob(0.5, low=0.0, high=0.99, main=False, help="local SGD momentum")
    weight_decay: float = knob(5e-4, low=0.0, high=0.1, main=False, help="local SGD weight decay")
    batch_size: int = knob(
        32,
        low=1,
        high=1024,
        main=False,
        help="local batch size (the margin term's strength depends on it: ‖P‖_F is over the batch)",
    )
    n_seeds: int = knob(
        3,
        3,
        3,
        low=1,
        high=20,
        main=False,
        help="seeds ctx.seed + k: each draws its own split, shifts and initial model",
    )


PARAMS = params_of(Knobs)


# ---------------------------------------------------------------- models and data


class SmallCNN(nn.Sequential):
    """x (B, side²) → 1×side×side → conv(16) → ReLU → conv(32) → ReLU → maxpool 2 → linear(C)."""

    def __init__(self, side: int = IMAGE_SIDE, n_classes: int = N_CLASSES):
        super().__init__(
            nn.Unflatten(1, (1, side, side)),
            nn.Conv2d(1, 16, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(32 * (side // 2) ** 2, n_classes),
        )


def build_model(*, model: str, hidden: int, side: int = IMAGE_SIDE, n_classes: int = N_CLASSES) -> nn.Module:
    """The MLP side²→hidden→C of the card, or :class:`SmallCNN` (``model="cnn"``)."""
    if model == "cnn":
        return SmallCNN(side, n_classes)
    return MLP(side * side, [hidden], n_classes)


@dataclass
class Federation:
    """One seed's federation on the device: clients, their union (with owner ids), the test set, and
    each client's view of the test set (its feature shift) and label mix for per-client accuracy."""

    clients: list[Client]
    x: torch.Tensor
    y: torch.Tensor
    owner: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    client_tests: list[torch.Tensor]
    label_mix: np.ndarray

    @property
    def sizes(self) -> torch.Tensor:
        return torch.tensor([c.n for c in self.clients], dtype=torch.float32)


def build_federation(*, n_clients: int, alpha: float, feature_shift: bool, seed: int, device) -> Federation:
    """Dirichlet(α) label skew over the digits train split, plus per-client feature shifts if asked.
    Under feature shift every test sample is shown through a randomly chosen client's shift."""
    data, rng = load_digits_split(), np.random.default_rng(seed)
    parts = dirichlet_split(data.y_train, n_clients, alpha, rng)
    shifts = random_feature_shifts(n_clients, rng) if feature_shift else None
    arrays = client_arrays(data.x_train, data.y_train, parts, shifts, data.side)
    x_test = data.x_test
    views = [x_test] * n_clients
    if shifts is not None:
        views = [s(x_test, data.side) for s in shifts]
        pick = rng.integers(0, n_clients, size=len(x_test))
        x_test = np.stack([views[c][b] for b, c in enumerate(pick)])

    def t(a):
        return torch.as_tensor(a, device=device)

    clients = [Client(t(xi), t(yi)) for xi, yi in arrays]
    owner = torch.cat([torch.full((c.n,), i, dtype=torch.long, device=device) for i, c in enumerate(clients)])
    return Federation(
        clients,
        torch.cat([c.x for c in clients]),
        torch.cat([c.y for c in clients]),
        owner,
        t(x_test),
        t(data.y_test),
        [t(v) for v in views],
        label_proportions(data.y_train, parts, data.n_classes),
    )


def make_federation(p, seed: int, device) -> Federation:
    """:func:`build_federation` from a knobs object (``Knobs`` or a namespace with the same names)."""
    return build_federation(
        n_clients=p.n_clients, alpha=p.alpha, feature_shift=p.feature_shift, seed=seed, device=device
    )


# ---------------------------------------------------------------- arms


@dataclass(frozen=True)
class Arm(CoreArm):
    """One training recipe (a :class:`labkit.core.Arm`): local margin weight λ, FedProx μ, and whether the
    server uses the principal rule (plain mean in round 1) instead of FedAvg's size-weighted mean."""

    lam: float = 0.0
    mu: float = 0.0
    principal: bool = False


FEDAVG, MARGIN, FEDLD, FEDPROX, PRINCIPAL = "fedavg", "margin", "fedld", "fedprox", "principal"


def arms_for(*, lam: float, lam_margin: float, mu: float, extra_arms: bool, norm_match: bool) -> list[Arm]:
    """FedAvg, margin-only and FedLD; with ``extra_arms`` also FedProx and principal-only."""
    stretched = " (norm-matched)" if norm_match else ""
    arms = [
        Arm(FEDAVG, "FedAvg"),
        Arm(MARGIN, f"margin-only λ={lam_margin:g}", lam=lam_margin),
        Arm(FEDLD, f"FedLD λ={lam:g} + principal{stretched}", lam=lam, principal=True),
    ]
    if extra_arms:
        arms += [
            Arm(FEDPROX, f"FedProx μ={mu:g}", mu=mu),
            Arm(PRINCIPAL, f"principal-only{stretched}", principal=True),
        ]
    return arms


def match_length(update: torch.Tensor, reference: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """update · ‖reference‖ / ‖update‖: the update's direction with the reference's length."""
    return update * (reference.norm() / (update.norm() + eps))


def server_rule(arm: Arm, round_idx: int, k_proportion: float, norm_match: bool = False):
    """FedAvg's size-weighted mean; principal arms: the plain mean in round 1, then the principal rule
    (with ``norm_match``, stretched per tensor to the length of FedAvg's update — a diagnostic)."""
    if not arm.principal:
        return fedavg
    if round_idx == 0:
        return plain_mean
    if norm_match:
        return lambda G, sizes: match_length(principal_aggregate(G, k_proportion), fedavg(G, sizes))
    return lambda G, sizes: principal_aggregate(G, k_proportion)


# ---------------------------------------------------------------- per-round measurements


def loss_and_confidence(logits: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-sample CE (the decomposition's loss, for every arm) and ‖softmax‖² (the confidence)."""
    return {"loss": F.cross_entropy(logits, y, reduction="none"), "conf": softmax_sq_norm(logits)}


def client_view_accuracy(model: nn.Module, fed: Federation, n_classes: int = N_CLASSES) -> list[float]:
    """acc_i = Σ_c π_ic · acc_c(test set seen through client i's shift): the accuracy client i would
    measure on test data that has its own label mix and its own feature shift."""
    model.eval()
    out = []
    with torch.no_grad():
        for i, x_view in enumerate(fed.client_tests):
            hit = (model(x_view).argmax(1) == fed.y_test).float()
            per_class = torch.zeros(n_classes, device=hit.device).index_add_(0, fed.y_test, hit)
            per_class = per_class / torch.bincount(fed.y_test, minlength=n_classes).clamp_min(1)
            out.append(float(torch.as_tensor(fed.label_mix[i], dtype=torch.float32) @ per_class.cpu()))
    return out


def round_diagnostics(arm: Arm, rr: RoundResult, sizes) -> dict[str, float]:
    """For principal arms: cosine and norm ratio between this round's principal update and the FedAvg
    update of the same client updates."""
    if not arm.principal:
        return {}
    avg = flatten_update(aggregate(rr.updates, sizes, fedavg))
    new = flatten_update(rr.update)
    return {"cos_fedavg": cosine(avg, new), "norm_ratio": float(new.norm() / (avg.norm() + EPS))}


def round_metrics(model: nn.Module, worker: nn.Module, rr: RoundResult, fed: Federation) -> dict[str, float]:
    """After a round: the decomposition terms, L(w_glob) measured by its own forward pass on the union,
    their gap, the size-weighted confidence Σ_i p_i·mean‖softmax‖² of local model i on its own data,
    and the global test accuracy."""
    m = len(fed.clients)
    stats = cross_evaluate(
        rr.local_states + [model_state(model)], worker, fed.x, fed.y, fed.owner, m, loss_and_confidence
    )
    terms = loss_decomposition(stats["loss"][:m], stats["loss"][m], fed.sizes)
    with torch.no_grad():
        model.eval()
        measured = float(F.cross_entropy(model(fed.x), fed.y))
    own_conf = torch.diagonal(stats["conf"][:m]).cpu()
    return {
        "loss_global": measured,
        "loss_local": terms.local,
        "loss_shift": terms.shift,
        "loss_agg": terms.aggregation,
        "decomp_gap": abs(terms.total - measured),
        "confidence": float(fed.sizes @ own_conf / fed.sizes.sum()),
        "test_acc": accuracy(model, fed.x_test, fed.y_test),
    }


def update_spectrum(rr: RoundResult, index: int = SPECTRUM_TENSOR_INDEX) -> list[float]:
    """Eigenvalue shares s_j / Σ s of H = GGᵀ/m for one tensor's client updates this round."""
    G = list(rr.updates.values())[index]
    s, _ = gram_spectrum(G.reshape(G.shape[0], -1))
    return (s / s.sum()).cpu().tolist()


def spectrum_rounds(rounds: int) -> list[int]:
    """Rounds at which the eigenvalue spectrum is kept: round 2 (the first principal round), middle, last."""
    return sorted({min(2, rounds), max(1, rounds // 2), rounds})


# ---------------------------------------------------------------- one arm, one seed


@dataclass
class ArmOutcome:
    """One arm on one seed, at the final round: global test accuracy, confidence of the local models on their
    own data, the largest |terms − L(w_glob)| over the rounds, the kept spectra and per-client accuracy."""

    seed: int
    acc: float
    conf: float
    max_gap: float
    per_client: list[float]
    spectra: dict[int, list[float]] = field(default_factory=dict)


def train_arm(ctx: RunContext[Knobs], arm: Arm, fed: Federation, seed: int, bar) -> ArmOutcome:
    """All rounds of one arm on one seed's federation; logs the history and returns the final numbers."""
    p = ctx.p
    torch.manual_seed(seed)  # the same initial model in every arm of a seed
    model = build_model(model=p.model, hidden=p.hidden).to(ctx.device)
    worker = build_model(model=p.model, hidden=p.hidden).to(ctx.device)
    gen = torch.Generator().manual_seed(seed)  # the same batch order in every arm of a seed
    opt = LocalSGD(p.local_epochs, p.batch_size, p.lr, p.momentum, p.weight_decay, arm.mu)

    def loss_fn(logits, y):
        return margin_control_loss(logits, y, arm.lam)

    spectra, gaps = {}, []
    for r in range(p.rounds):
        rule = server_rule(arm, r, p.k_proportion, p.norm_match)
        rr = federated_round(model, fed.clients, loss_fn, opt, rule, gen, worker)
        ctx.check(rr.train_loss.mean(), r + 1, arm.label)
        row = {**round_metrics(model, worker, rr, fed), **round_diagnostics(arm, rr, fed.sizes)}
        ctx.history.log_many(r + 1, arm.label, row, seed=seed)
        gaps.append(row["decomp_gap"])
        if arm.principal and r + 1 in spectrum_rounds(p.rounds):
            spectra[r + 1] = update_spectrum(rr)
        bar.update(1)
    return ArmOutcome(seed, row["test_acc"], row["confidence"], max(gaps), client_view_accuracy(model, fed), spectra)


# ---------------------------------------------------------------- claims (pure functions of per-seed numbers)

#: printed precision, from the cross-CPU spread (benchmarks/spread/fedld.json: default, AVX2, AVX-512 kernels and
#: 1 or 2 threads): final accuracies do not move at all (the principal rule runs in float64), the confidence cut
#: moves by ~1e-7; accuracies are multiples of 1/540 (the test set), so 3 decimals
ACC_DECIMALS = 3
CONF_DECIMALS = 3


def setting_name(feature_shift: bool) -> str:
    return "label skew + feature shift" if feature_shift else "label skew"


def accuracy_claim(acc_fedavg, acc_fedld, *, setting: str) -> ClaimCheck:
    """Headline (the paper's): FedLD's final global test accuracy is higher than FedAvg's under heterogeneity.
    One value per seed: acc(FedLD) − acc(FedAvg), margin 0 ("more accurate than")."""
    diffs = [b - a for a, b in zip(acc_fedavg, acc_fedld)]
    return ClaimCheck(
        claim=f"FedLD is more accurate than FedAvg under data heterogeneity ({setting})",
        quantity="final global test acc(FedLD) − acc(FedAvg), per seed",
        values=diffs,
        margin=0.0,
        headline=True,
        numbers={"acc_fedavg": float(np.mean(acc_fedavg)), "acc_fedld": float(np.mean(acc_fedld))},
        detail="the paper fine-tunes a pretrained ResNet-50 on retinal / chest images; here a small model from scratch",
        decimals=ACC_DECIMALS,
    )


def confidence_claim(conf_fedavg, conf_margin, *, lam_margin: float) -> ClaimCheck:
    """Mechanism: margin control lowers the local models' confidence on their own data (the driver of the
    distribution-shift term). One value per seed: 1 − conf(margin-only)/conf(FedAvg), margin 0."""
    cuts = [1 - m / a for a, m in zip(conf_fedavg, conf_margin)]
    return ClaimCheck(
        claim=f"mechanism: margin control (λ = {lam_margin:g}) lowers local models' confidence on their own data",
        quantity="1 − mean‖softmax‖²(margin-only) / mean‖softmax‖²(FedAvg), final round, per seed",
        values=cuts,
        margin=0.0,
        numbers={"conf_fedavg": float(np.mean(conf_fedavg)), "conf_margin": float(np.mean(conf_margin))},
        decimals=CONF_DECIMALS,
    )


def margin_ablation_claim(acc_fedavg, acc_margin, *, lam_margin: float) -> ClaimCheck:
    """Ablation (the paper credits each component): margin control alone is more accurate than FedAvg.
    One value per seed: acc(margin-only) − acc(FedAvg), margin 0."""
    diffs = [m - a for a, m in zip(acc_fedavg, acc_margin)]
    return ClaimCheck(
        claim=f"ablation: margin control alone (λ = {lam_margin:g}, FedAvg server) is more accurate than FedAvg",
        quantity="final global test acc(margin-only) − acc(FedAvg), per seed",
        values=diffs,
        margin=0.0,
        numbers={"acc_fedavg": float(np.mean(acc_fedavg)), "acc_margin": float(np.mean(acc_margin))},
        decimals=ACC_DECIMALS,
    )


# ---------------------------------------------------------------- run


@method_run(Knobs, figures=make_figures, threads={"quick": 1, "standard": 1})
def run(ctx: RunContext[Knobs]) -> Outcome:
    """FedAvg, margin-only and FedLD (± FedProx, principal-only) on the same federations, n_seeds seeds."""
    p = ctx.p
    seeds = ctx.seeds(p.n_seeds)
    arms = arms_for(lam=p.lam, lam_margin=p.lam_margin, mu=p.mu, extra_arms=p.extra_arms, norm_match=p.norm_match)
    outcomes: dict[str, list[ArmOutcome]] = {a.key: [] for a in arms}
    bar = ctx.bar(len(seeds) * len(arms) * p.rounds, "FedLD rounds")
    for s in seeds:
        fed = make_federation(p, s, ctx.device)
        for arm in arms:
            outcomes[arm.key].append(train_arm(ctx, arm, fed, s, bar))
    bar.close()

    def per_seed(key: str, what: str) -> list[float]:
        return [getattr(o, what) for o in outcomes[key]]

    claims = [
        accuracy_claim(per_seed(FEDAVG, "acc"), per_seed(FEDLD, "acc"), setting=setting_name(p.feature_shift)),
        confidence_claim(per_seed(FEDAVG, "conf"), per_seed(MARGIN, "conf"), lam_margin=p.lam_margin),
        margin_ablation_claim(per_seed(FEDAVG, "acc"), per_seed(MARGIN, "acc"), lam_margin=p.lam_margin),
    ]
    metrics = {f"acc_{k}": float(np.mean(per_seed(k, "acc"))) for k in outcomes}
    metrics.update({f"conf_{k}": float(np.mean(per_seed(k, "conf"))) for k in outcomes})
    metrics["max_decomp_gap"] = max(o.max_gap for os_ in outcomes.values() for o in os_)
    tensor_name = list(build_model(model=p.model, hidden=p.hidden).state_dict())[SPECTRUM_TENSOR_INDEX]
    extras = {
        "arms": arms,
        "seeds": seeds,
        "setting": setting_name(p.feature_shift),
        "outcomes": outcomes,
        "spectrum": outcomes[FEDLD][0].spectra,
        "spectrum_tensor": tensor_name,
    }
    return Outcome(metrics=metrics, claims=claims, extras=extras)
