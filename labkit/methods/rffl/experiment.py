"""RFFL — A Reputation Mechanism Is All You Need: Collaborative Fairness and Adversarial Robustness in
Federated Learning (arXiv 2011.10464).

Every participant i keeps its OWN model θ_i (there is no global model). One round over the admitted set R:

    Δ_i = clip_Γ(LocalSGD(θ_i) − θ_i)                 upload; an honest participant also sets θ_i ← θ_i + Δ_i
    u   = Σ_{i∈R} w_i Δ_i                             w_i = |D_i|/Σ_j|D_j| in round 1, w_i = r_i afterwards
    φ_i = cos(Δ_i, u)                                 contribution
    r_i ← α r_i + (1 − α) φ_i,  r ← r / Σ_{j∈R} r_j    reputation (r starts at 0)
    R   ← R \\ {i : r_i < β/|R|},  r_i = 0 for them    permanent removal, then r renormalised
    q_i = r_i / max_j r_j,  θ_i ← θ_i + top-⌈q_i n_ℓ⌉ entries of every layer ℓ of u    reward

The baselines on the same data, initial model, batch order and clipping: FedAvg (one global model, size
weights, everyone gets all of u) and standalone training (the contribution proxy of the fairness measure
ρ = Pearson(standalone accuracy, final federated accuracy) over the honest participants).
The simulator's generic pieces (local SGD, clipping, attacks) are in :mod:`labkit.substrates.federated`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from labkit import viz
from labkit.core import ClaimCheck, Outcome, Param, RunContext, method_run
from labkit.data.federated import load_digits_split
from labkit.models import MLP
from labkit.substrates.federated import (
    Client,
    LocalSGD,
    accuracy,
    aggregate,
    clip_to_norm,
    corrupt_update,
    flatten_update,
    flip_labels,
    invert_values,
    local_train,
    model_state,
    randomize_signs,
    rescale_values,
    size_weights,
    uniform_noise_like,
    update_norm,
)

State = dict[str, torch.Tensor]

ATTACK_LABELS = {
    "none": "no attack",
    "free_rider": "free-rider",
    "label_flip": "label flip 1→7",
    "sign_flip": "sign randomising",
    "value_invert": "value inverting",
    "rescale": "re-scaling",
}
ATTACK_SETS = (
    "free_rider",
    "label_flip",
    "sign_flip",
    "value_invert",
    "rescale",
    "none",
    "label_flip,sign_flip",
    "free_rider,label_flip,sign_flip",
    "none,free_rider,label_flip,sign_flip",
    "free_rider,label_flip,sign_flip,value_invert,rescale",
)
ENTRYWISE_ATTACKS = {"sign_flip": randomize_signs, "value_invert": invert_values, "rescale": rescale_values}
#: attacks the reputation should expel; label flipping is judged by its attack success rate instead
EXPELLED_ATTACKS = ("free_rider", "sign_flip", "value_invert", "rescale")

MAIN_METRIC = "test_acc"
PARAMS = [
    Param(
        "n_honest",
        int,
        quick=5,
        standard=10,
        full=10,
        low=2,
        high=50,
        help="honest participants N (shard sizes ∝ 1:2:…:N with the power-law split)",
    ),
    Param(
        "n_adversaries",
        int,
        quick=1,
        standard=2,
        full=2,
        low=0,
        high=20,
        help="adversaries A per attack scenario, each with a copy of the median honest shard",
    ),
    Param(
        "attacks",
        str,
        quick="free_rider",
        standard="none,free_rider,label_flip,sign_flip",
        full="none,free_rider,label_flip,sign_flip",
        choices=ATTACK_SETS,
        help="attack scenarios, each trained with RFFL and FedAvg ('none' = no adversaries)",
    ),
    Param(
        "split",
        str,
        quick="powerlaw",
        choices=("powerlaw", "classimbalance", "uniform"),
        help="honest data: sizes ∝ 1..N, or participant i sees only the first c_i classes, or equal",
    ),
    Param("alpha", float, quick=0.95, low=0.0, high=1.0, help="reputation smoothing α"),
    Param("beta", float, quick=1 / 3, low=0.0, high=1.0, help="removal threshold coefficient β (threshold β/|R|)"),
    Param(
        "gamma_scale",
        float,
        quick=0.5,
        low=0.01,
        high=100.0,
        log=True,
        help="clip norm Γ in units of the median honest update norm of round 1",
    ),
    Param("rounds", int, quick=30, standard=60, full=100, low=1, high=1000, help="communication rounds"),
    Param("local_epochs", int, quick=1, full=3, low=1, high=20, help="local epochs E per round"),
    Param(
        "grace_rounds",
        int,
        quick=0,
        low=0,
        high=1000,
        main=False,
        help="removal starts after this many rounds (0 as in the paper; the official code's last version: 10)",
    ),
    Param(
        "model",
        str,
        quick="softmax",
        standard="mlp",
        full="cnn",
        choices=("softmax", "mlp", "cnn"),
        main=False,
        help="softmax regression 64→10, MLP 64→hidden→10, or the paper's MNIST CNN on upsampled 28×28 digits",
    ),
    Param("hidden", int, quick=32, low=4, high=1024, main=False, help="MLP hidden width"),
    Param("lr", float, quick=0.1, low=1e-5, high=1.0, log=True, main=False, help="local SGD learning rate"),
    Param("lr_decay", float, quick=0.977, low=0.5, high=1.0, main=False, help="lr × lr_decay after every local epoch"),
    Param("batch_size", int, quick=32, low=1, high=1024, main=False, help="local batch size"),
    Param(
        "data_fraction",
        float,
        quick=0.6,
        low=0.05,
        high=1.0,
        main=False,
        help="share of the training split dealt to the honest participants",
    ),
    Param(
        "n_seeds",
        int,
        quick=3,
        low=1,
        high=20,
        main=False,
        help="seeds ctx.seed + k: each draws its own split, shards and initial model",
    ),
]


# ---------------------------------------------------------------- the paper's pieces


def weighted_update(updates: State, weights: torch.Tensor) -> State:
    """u = Σ_i w_i Δ_i, tensor by tensor (``updates`` stacked: name → [m, *shape])."""
    return aggregate(updates, weights, lambda G, w: torch.tensordot(w.to(G), G, dims=1))


def stack_flat(updates: State) -> torch.Tensor:
    """The stacked updates as one row per participant: [m, d] (floating entries, state-dict order)."""
    return torch.cat([G.reshape(G.shape[0], -1) for G in updates.values() if G.is_floating_point()], dim=1)


def contributions(flat: torch.Tensor, u: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """φ_i = Δ_iᵀu / max(‖Δ_i‖‖u‖, ε) (``flat``: [m, d], ``u``: [d]); a zero upload has φ = 0."""
    return F.cosine_similarity(flat, u[None, :], dim=1, eps=eps)


def update_reputation(r: torch.Tensor, phi: torch.Tensor, alpha: float, active: torch.Tensor) -> torch.Tensor:
    """r_i ← α r_i + (1 − α) φ_i for i ∈ R (0 outside R), then r ← r / Σ_{j∈R} r_j."""
    r = torch.where(active, alpha * r + (1 - alpha) * phi, torch.zeros_like(r))
    return r / r.sum()


def remove_low_reputation(r: torch.Tensor, active: torch.Tensor, beta: float):
    """Drop every i ∈ R with r_i < β/|R| (|R| counted before this round's removals), set r_i = 0 and
    renormalise r over the new R. Returns (r, active, dropped, threshold)."""
    threshold = beta / int(active.sum())
    dropped = active & (r < threshold)
    active = active & ~dropped
    r = torch.where(active, r, torch.zeros_like(r))
    return r / r.sum(), active, dropped, threshold


def reward_fractions(r: torch.Tensor) -> torch.Tensor:
    """q_i = r_i / max_j r_j ∈ (0, 1] for admitted participants, 0 for removed ones."""
    return r / r.max()


def keep_count(q: float, n: int) -> int:
    """Entries of an n-entry layer a participant with fraction q receives: ⌈q·n⌉, but at most n − 1 when
    n > 1 (as the official code: q = 1 leaves out the smallest entry), and 0 when q ≤ 0."""
    k = math.ceil(max(q, 0.0) * n)
    return min(k, n - 1) if n > 1 else k


def sparsify_layer(t: torch.Tensor, q: float) -> torch.Tensor:
    """``t`` with all but its k = :func:`keep_count` largest-magnitude entries set to 0 (ties with the
    k-th largest are kept, as in the official code)."""
    k = keep_count(q, t.numel())
    if k == 0:
        return torch.zeros_like(t)
    kth = torch.topk(t.reshape(-1).abs(), k).values[-1]
    return torch.where(t.abs() >= kth, t, torch.zeros_like(t))


def sparsify_per_layer(update: State, q: float) -> State:
    """The reward: :func:`sparsify_layer` applied to every tensor (layer) of the aggregate u separately."""
    return {k: sparsify_layer(v, q) if v.is_floating_point() else v.clone() for k, v in update.items()}


@dataclass
class ServerStep:
    """What one RFFL server round produced (r, q, φ on the CPU; u on the updates' device)."""

    u: State
    phi: torch.Tensor
    r: torch.Tensor
    q: torch.Tensor
    dropped: torch.Tensor
    threshold: float

    def reward(self, i: int) -> State:
        """Participant i's download: u sparsified per layer with fraction q_i (zero once removed)."""
        return sparsify_per_layer(self.u, float(self.q[i]))


@dataclass
class ReputationServer:
    """RFFL's server state: reputations r, the admitted set R and the round counter. :meth:`step` takes
    the stacked uploads of ALL participants (removed ones carry zero weight) and returns a :class:`ServerStep`.
    Shared by labkit's simulator and the Flower strategy (:mod:`labkit.flower`)."""

    sizes: torch.Tensor
    alpha: float = 0.95
    beta: float = 1 / 3
    grace_rounds: int = 0
    round: int = 0
    r: torch.Tensor = field(init=False)
    active: torch.Tensor = field(init=False)
    removed_round: dict[int, int] = field(default_factory=dict)

    def __post_init__(self):
        self.sizes = torch.as_tensor(self.sizes, dtype=torch.float32).cpu()
        self.r = torch.zeros(len(self.sizes))
        self.active = torch.ones(len(self.sizes), dtype=torch.bool)

    def weights(self) -> torch.Tensor:
        """Aggregation weights: data shares in round 1, reputations afterwards."""
        return size_weights(self.sizes) if self.round == 0 else self.r

    def step(self, updates: State) -> ServerStep:
        device = next(iter(updates.values())).device
        u = weighted_update(updates, self.weights().to(device))
        phi = contributions(stack_flat(updates), flatten_update(u)).cpu()
        r = update_reputation(self.r, phi, self.alpha, self.active)
        threshold, dropped = self.beta / int(self.active.sum()), torch.zeros_like(self.active)
        if self.round >= self.grace_rounds:
            r, self.active, dropped, threshold = remove_low_reputation(r, self.active, self.beta)
        self.r, self.round = r, self.round + 1
        for i in torch.nonzero(dropped).flatten().tolist():
            self.removed_round[i] = self.round
        return ServerStep(u, phi, r.clone(), reward_fractions(r), dropped, threshold)


def fairness_rho(contribution, reward) -> float:
    """Pearson ρ between contribution proxies (standalone accuracies) and rewards (federated accuracies).
    Undefined when either side is constant (FedAvg gives everyone the same model): reported as 0."""
    x, y = np.asarray(contribution, float), np.asarray(reward, float)
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return 0.0
    from scipy.stats import pearsonr

    return float(pearsonr(x, y)[0])


# ---------------------------------------------------------------- data and models


def powerlaw_shards(n_items: int, n_parts: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffle range(n_items) and cut it into shards of sizes ∝ 1 : 2 : … : n_parts (floor)."""
    sizes = (np.arange(1, n_parts + 1) * n_items) // (n_parts * (n_parts + 1) // 2)
    order = rng.permutation(n_items)
    return [np.sort(s) for s in np.split(order[: sizes.sum()], np.cumsum(sizes)[:-1])]


def uniform_shards(n_items: int, n_parts: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffle range(n_items) into n_parts (almost) equal shards."""
    return [np.sort(s) for s in np.array_split(rng.permutation(n_items), n_parts)]


def class_imbalance_shards(
    labels: np.ndarray, n_parts: int, rng: np.random.Generator, n_classes: int = 10
) -> list[np.ndarray]:
    """Participant i sees only classes 0..c_i−1, c_i = linspace(1, C, N) (integers), with ⌊n/(N·c_i)⌋
    samples drawn per class with replacement — the official code's class-imbalanced split."""
    per_party = len(labels) // n_parts
    out = []
    for c in np.linspace(1, n_classes, n_parts, dtype=int):
        idx = [rng.choice(np.flatnonzero(labels == k), per_party // c, replace=True) for k in range(c)]
        out.append(np.sort(np.concatenate(idx)))
    return out


def upsample_digits(x: np.ndarray, rng: np.random.Generator, side: int = 28, jitter: int = 2) -> np.ndarray:
    """Synthetic 28×28 digits: each 8×8 image bilinearly upsampled to (side − 2·jitter)² and pasted at a
    random offset in [0, 2·jitter]² of a blank side × side canvas. Returns (n, side²)."""
    inner = side - 2 * jitter
    up = (
        F.interpolate(
            torch.as_tensor(x).reshape(-1, 1, 8, 8), size=(inner, inner), mode="bilinear", align_corners=False
        )
        .squeeze(1)
        .numpy()
    )
    out = np.zeros((len(x), side, side), dtype=np.float32)
    for b, (dy, dx) in enumerate(rng.integers(0, 2 * jitter + 1, size=(len(x), 2))):
        out[b, dy : dy + inner, dx : dx + inner] = up[b]
    return out.reshape(len(x), -1)


class DigitsCNN(nn.Sequential):
    """The official MNIST CNN for side × side inputs: conv3×3(64) → tanh → maxpool 2 → conv7×7(16) → tanh →
    maxpool 2 → linear(200) → tanh → linear(C)."""

    def __init__(self, side: int = 28, n_classes: int = 10):
        flat = ((side - 2) // 2 - 6) // 2
        super().__init__(
            nn.Unflatten(1, (1, side, side)),
            nn.Conv2d(1, 64, 3),
            nn.Tanh(),
            nn.MaxPool2d(2),
            nn.Conv2d(64, 16, 7),
            nn.Tanh(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(16 * flat * flat, 200),
            nn.Tanh(),
            nn.Linear(200, n_classes),
        )


def build_model(p, in_dim: int, n_classes: int = 10) -> nn.Module:
    """Softmax regression, the MLP in_dim→hidden→C, or :class:`DigitsCNN` (``p.model``)."""
    if p.model == "cnn":
        return DigitsCNN(int(round(math.sqrt(in_dim))), n_classes)
    if p.model == "mlp":
        return MLP(in_dim, [p.hidden], n_classes)
    return nn.Linear(in_dim, n_classes)


@dataclass
class Participant:
    """``kind`` is "honest" or an attack name; ``label`` names it in plots; ``client`` holds its data."""

    kind: str
    label: str
    client: Client

    @property
    def honest(self) -> bool:
        return self.kind == "honest"


@dataclass
class Federation:
    participants: list[Participant]
    x_test: torch.Tensor
    y_test: torch.Tensor

    @property
    def sizes(self) -> torch.Tensor:
        return torch.tensor([q.client.n for q in self.participants], dtype=torch.float32)

    @property
    def honest(self) -> list[int]:
        return [i for i, q in enumerate(self.participants) if q.honest]


def honest_shards(p, y: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    if p.split == "classimbalance":
        return class_imbalance_shards(y, p.n_honest, rng)
    return (powerlaw_shards if p.split == "powerlaw" else uniform_shards)(len(y), p.n_honest, rng)


def honest_federation(p, seed: int, device) -> Federation:
    """Digits (80/20 stratified split drawn with ``seed``), a random ``data_fraction`` of the training split
    dealt to the N honest participants by ``split``; 28×28 upsampled images for the CNN."""
    data, rng = load_digits_split(test_size=0.2, seed=seed), np.random.default_rng(seed)
    x_tr, x_te = data.x_train, data.x_test
    if p.model == "cnn":
        x_tr, x_te = upsample_digits(x_tr, rng), upsample_digits(x_te, rng)
    pool = rng.permutation(len(data.y_train))[: int(p.data_fraction * len(data.y_train))]
    shards = [pool[s] for s in honest_shards(p, data.y_train[pool], rng)]

    def t(a):
        return torch.as_tensor(a, device=device)

    parts = [
        Participant("honest", f"P{i + 1} (n={len(s)})", Client(t(x_tr[s]), t(data.y_train[s])))
        for i, s in enumerate(shards)
    ]
    return Federation(parts, t(x_te), t(data.y_test))


def with_adversaries(fed: Federation, attack: str, n_adv: int) -> Federation:
    """The honest federation plus ``n_adv`` adversaries of kind ``attack``, each holding a copy of the
    median-sized honest shard (labels 1 → 7 for label flipping)."""
    if attack == "none" or n_adv == 0:
        return fed
    median = sorted(fed.honest, key=lambda i: fed.participants[i].client.n)[len(fed.honest) // 2]
    src = fed.participants[median].client
    y = flip_labels(src.y) if attack == "label_flip" else src.y
    advs = [Participant(attack, f"{ATTACK_LABELS[attack]} {k + 1}", Client(src.x, y)) for k in range(n_adv)]
    return Federation(fed.participants + advs, fed.x_test, fed.y_test)


def scenarios(p) -> list[str]:
    """The attack scenarios to train (all become 'none' when there are no adversaries)."""
    attacks = p.attacks.split(",") if p.n_adversaries > 0 else ["none"]
    return list(dict.fromkeys(attacks))


# ---------------------------------------------------------------- one participant, one round


@dataclass(frozen=True)
class RoundConfig:
    """Local training of one round: E epochs, lr_e = lr·decay^(round·E + e), plain SGD; clip norm Γ."""

    round: int
    epochs: int
    lr: float
    lr_decay: float
    batch_size: int
    gamma: float = math.inf

    def optimiser(self, epoch: int) -> LocalSGD:
        lr = self.lr * self.lr_decay ** (self.round * self.epochs + epoch)
        return LocalSGD(epochs=1, batch_size=self.batch_size, lr=lr, momentum=0.0, weight_decay=0.0)


def add_states(a: State, b: State) -> State:
    return {k: a[k] + b[k].to(a[k].dtype) for k in a}


def local_delta(
    worker: nn.Module, state: State, client: Client, cfg: RoundConfig, gen: torch.Generator
) -> tuple[State, torch.Tensor]:
    """Δ = LocalSGD(θ) − θ after cfg.epochs epochs of cross-entropy SGD; also the mean batch loss."""
    worker.load_state_dict(state)
    losses = [local_train(worker, client, F.cross_entropy, cfg.optimiser(e), gen) for e in range(cfg.epochs)]
    new = model_state(worker)
    return {k: new[k] - state[k] for k in state}, torch.stack(losses).mean()


def participant_upload(
    part: Participant, state: State, worker: nn.Module, cfg: RoundConfig, gen: torch.Generator
) -> tuple[State, State | None, torch.Tensor]:
    """(upload, own step, loss). Honest: upload = own step = clip_Γ(Δ). Free-rider: U[−1, 1] noise, no
    training. Label flipping trains on its flipped labels; sign randomising, value inverting and re-scaling
    corrupt their honest Δ entry by entry. Every upload is clipped to Γ; adversaries that train keep
    their own clipped honest step (they never report accuracy)."""
    if part.kind == "free_rider":
        noise = corrupt_update({k: torch.zeros_like(v) for k, v in state.items()}, uniform_noise_like, gen)
        return clip_to_norm(noise, cfg.gamma), None, torch.zeros(())
    delta, loss = local_delta(worker, state, part.client, cfg, gen)
    own = clip_to_norm(delta, cfg.gamma)
    if part.kind in ENTRYWISE_ATTACKS:
        return clip_to_norm(corrupt_update(delta, ENTRYWISE_ATTACKS[part.kind], gen), cfg.gamma), own, loss
    return own, own, loss


def stack_states(states: list[State]) -> State:
    return {k: torch.stack([s[k] for s in states]) for k in states[0]}


def rffl_round(
    states: list[State],
    parts: list[Participant],
    server: ReputationServer,
    worker: nn.Module,
    cfg: RoundConfig,
    gens: list[torch.Generator],
) -> tuple[ServerStep, torch.Tensor]:
    """One RFFL round, in place on ``states``: every participant uploads (an honest one also steps its own
    model), the server updates reputations and R, each admitted participant adds its reward."""
    uploads, losses = [], []
    for i, part in enumerate(parts):
        up, own, loss = participant_upload(part, states[i], worker, cfg, gens[i])
        if own is not None:
            states[i] = add_states(states[i], own)
        uploads.append(up)
        losses.append(loss)
    step = server.step(stack_states(uploads))
    for i in torch.nonzero(server.active).flatten().tolist():
        states[i] = add_states(states[i], step.reward(i))
    return step, torch.stack(losses)


def fedavg_round(
    state: State, parts: list[Participant], worker: nn.Module, cfg: RoundConfig, gens: list[torch.Generator]
) -> tuple[State, torch.Tensor]:
    """FedAvg with the same uploads (clipped, attacks included): θ ← θ + Σ_i (|D_i|/Σ|D|) Δ_i."""
    outs = [participant_upload(part, state, worker, cfg, gens[i]) for i, part in enumerate(parts)]
    sizes = torch.tensor([q.client.n for q in parts], dtype=torch.float32)
    device = next(iter(state.values())).device
    u = weighted_update(stack_states([o[0] for o in outs]), size_weights(sizes).to(device))
    return add_states(state, u), torch.stack([o[2] for o in outs])


def participant_generators(seed: int, n: int) -> list[torch.Generator]:
    """One CPU generator per participant (batch order, noise), the same in every arm of a seed."""
    return [torch.Generator().manual_seed(10_000 * seed + i) for i in range(n)]


def accuracy_of(worker: nn.Module, state: State, x: torch.Tensor, y: torch.Tensor) -> float:
    """Test accuracy of ``state`` loaded into the shared ``worker`` network."""
    worker.load_state_dict(state)
    return accuracy(worker, x, y)


@torch.no_grad()
def attack_success(
    worker: nn.Module, state: State, x: torch.Tensor, y: torch.Tensor, source: int = 1, target: int = 7
) -> float:
    """Fraction of true-``source`` test images the model predicts as ``target``."""
    worker.load_state_dict(state)
    worker.eval()
    mask = y == source
    return float((worker(x[mask]).argmax(1) == target).float().mean())


def median_honest_norm(fed: Federation, init: State, worker: nn.Module, cfg: RoundConfig, seed: int) -> float:
    """The median ‖Δ_i‖ of the honest participants' first-round updates (same generators as round 1)."""
    gens = participant_generators(seed, len(fed.participants))
    norms = [
        float(update_norm(local_delta(worker, init, fed.participants[i].client, cfg, gens[i])[0])) for i in fed.honest
    ]
    return float(np.median(norms))


# ---------------------------------------------------------------- the three arms


def round_config(p, t: int, gamma: float = math.inf) -> RoundConfig:
    return RoundConfig(t, p.local_epochs, p.lr, p.lr_decay, p.batch_size, gamma)


def train_standalone(ctx: RunContext, fed: Federation, init: State, worker, seed: int, bar) -> list[float]:
    """Each honest participant alone: rounds × E epochs of local SGD on its own shard, no clipping."""
    p, parts = ctx.p, fed.participants
    gens, states = participant_generators(seed, len(parts)), {i: dict(init) for i in fed.honest}
    for t in range(p.rounds):
        cfg = round_config(p, t)
        for i in fed.honest:
            delta, loss = local_delta(worker, states[i], parts[i].client, cfg, gens[i])
            ctx.check(loss, t + 1, "standalone")
            states[i] = add_states(states[i], delta)
        accs = [accuracy_of(worker, states[i], fed.x_test, fed.y_test) for i in fed.honest]
        ctx.history.log(t + 1, "standalone (best)", "test_acc", max(accs), seed=seed)
        for i, a in zip(fed.honest, accs):
            ctx.history.log(t + 1, f"standalone · {parts[i].label}", "participant_acc", a, seed=seed)
        bar.update(1)
    return accs


def train_rffl(ctx: RunContext, fed: Federation, init: State, worker, gamma: float, seed: int, tag: str, bar) -> dict:
    """RFFL on ``fed``; logs reputations, threshold, |R| and every honest participant's test accuracy."""
    p, parts = ctx.p, fed.participants
    server = ReputationServer(fed.sizes, p.alpha, p.beta, p.grace_rounds)
    gens, states = participant_generators(seed, len(parts)), [dict(init) for _ in parts]
    for t in range(p.rounds):
        step, losses = rffl_round(states, parts, server, worker, round_config(p, t, gamma), gens)
        ctx.check(losses.mean(), t + 1, f"RFFL{tag}")
        accs = [accuracy_of(worker, states[i], fed.x_test, fed.y_test) for i in fed.honest]
        log = ctx.history.log
        log(t + 1, f"RFFL (best honest){tag}", "test_acc", max(accs), seed=seed)
        log(t + 1, f"RFFL (mean honest){tag}", "test_acc", float(np.mean(accs)), seed=seed)
        log(t + 1, f"β/|R|{tag}", "threshold", step.threshold, seed=seed)
        log(t + 1, f"RFFL{tag}", "n_admitted", float(server.active.sum()), seed=seed)
        for i, part in enumerate(parts):
            log(t + 1, f"{part.label}{tag}", "reputation", float(step.r[i]), seed=seed)
        for i, a in zip(fed.honest, accs):
            log(t + 1, f"RFFL · {parts[i].label}{tag}", "participant_acc", a, seed=seed)
        bar.update(1)
    return {
        "acc": accs,
        "removed": {parts[i].label: r for i, r in server.removed_round.items()},
        "adversaries": [q.label for q in parts if not q.honest],
        "reputation": server.r.tolist(),
        "asr": float(np.mean([attack_success(worker, states[i], fed.x_test, fed.y_test) for i in fed.honest])),
    }


def train_fedavg(ctx: RunContext, fed: Federation, init: State, worker, gamma: float, seed: int, tag: str, bar) -> dict:
    """FedAvg on ``fed`` with the same uploads and clipping; every honest participant holds the global model."""
    p = ctx.p
    gens, state = participant_generators(seed, len(fed.participants)), dict(init)
    for t in range(p.rounds):
        state, losses = fedavg_round(state, fed.participants, worker, round_config(p, t, gamma), gens)
        ctx.check(losses.mean(), t + 1, f"FedAvg{tag}")
        acc = accuracy_of(worker, state, fed.x_test, fed.y_test)
        ctx.history.log(t + 1, f"FedAvg{tag}", "test_acc", acc, seed=seed)
        bar.update(1)
    return {"acc": [acc] * len(fed.honest), "asr": attack_success(worker, state, fed.x_test, fed.y_test)}


# ---------------------------------------------------------------- claims


def scenario_tag(attack: str, several: bool) -> str:
    return f" · {ATTACK_LABELS[attack]}" if several else ""


def claim_fairness(rho: dict, seeds: list[int], threshold: float = 0.7) -> ClaimCheck:
    """ρ_RFFL ≥ threshold in every seed and scenario; FedAvg's ρ is undefined (one model) and reported as 0."""
    numbers = {f"{a}_seed{s}_rho": v for a, vs in rho.items() for s, v in zip(seeds, vs)}
    worst = min(v for vs in rho.values() for v in vs)
    numbers.update({"min_rho_rffl": worst, "rho_fedavg": 0.0})
    return ClaimCheck(
        claim=f"fairness: ρ(standalone acc, final RFFL acc) over honest participants ≥ {threshold} in every seed",
        passed=worst >= threshold,
        numbers=numbers,
        detail="FedAvg gives every participant the same model, so its ρ is undefined: reported as 0",
    )


def last_removal(rounds: dict, adversaries: list[str]) -> int:
    """The round (1-based) in which the last of ``adversaries`` left R, or −1 if one never did."""
    got = [rounds.get(a) for a in adversaries]
    return -1 if any(g is None for g in got) else max(got)


def claim_removal(removed: dict, seeds: list[int], within: int = 5) -> ClaimCheck | None:
    """Every adversary of an expelled kind leaves R by round ``within`` in every seed (−1 = never removed)."""
    numbers = {
        f"{attack}_seed{s}_round": last_removal(rounds, advs)
        for attack, per_seed in removed.items()
        for s, (rounds, advs) in zip(seeds, per_seed)
    }
    if not numbers:
        return None
    passed = all(0 < v <= within for v in numbers.values())
    return ClaimCheck(
        claim=f"robustness: every free-rider / corrupting adversary is removed from R by round {within} in every seed",
        passed=passed,
        numbers=numbers,
        detail="round of the last adversary's removal, 1-based (−1 = never removed)",
    )


def claim_accuracy(best: dict, fedavg: dict, seeds: list[int], tol: float = 0.02) -> ClaimCheck:
    """The best honest participant under RFFL ≥ FedAvg − tol, in every seed and scenario."""
    numbers, ok = {}, True
    for attack in best:
        for s, b, f in zip(seeds, best[attack], fedavg[attack]):
            numbers[f"{attack}_seed{s}_rffl_best"], numbers[f"{attack}_seed{s}_fedavg"] = b, f
            ok = ok and b >= f - tol
    return ClaimCheck(
        claim=f"accuracy: the best honest RFFL participant's final test accuracy ≥ FedAvg's − {tol}"
        " (same adversaries) in every seed",
        passed=ok,
        numbers=numbers,
        detail="means are not compared: small contributors are deliberately paid less",
    )


def claim_label_flip(asr_rffl: list[float], asr_fedavg: list[float]) -> ClaimCheck:
    """Reported: under label flipping, RFFL's honest mean attack success (1 → 7) ≤ FedAvg's (mean over seeds)."""
    a, b = float(np.mean(asr_rffl)), float(np.mean(asr_fedavg))
    return ClaimCheck(
        claim="label flipping: RFFL's attack success rate (true 1 predicted 7) ≤ FedAvg's",
        passed=a <= b,
        numbers={"asr_rffl": a, "asr_fedavg": b},
        asserted=False,
        detail="mean over honest participants and seeds; a design target of the card, reported only",
    )


# ---------------------------------------------------------------- figures


def recolour(fig, colours: dict[str, str]):
    """Set the line colour (and the ±std band's fill) of every trace whose legend group is in ``colours``."""
    for trace in fig.data:
        colour = colours.get(trace.legendgroup)
        if colour is None:
            continue
        if trace.fill == "toself":
            trace.fillcolor = viz._rgba(colour, 0.12)
        else:
            trace.line.color = colour
    return fig


def reputation_figure(history, ex: dict, attack: str):
    """Reputation r_i per participant over rounds (adversaries red) with the threshold β/|R| dashed."""
    tag, labels = ex["tags"][attack], ex["labels"][attack]
    names = [f"{lab}{tag}" for lab in labels]
    fig = viz.curves(
        history,
        "reputation",
        series=names,
        xlabel="round",
        ylabel="reputation r_i",
        title=f"Reputations over rounds ({ATTACK_LABELS[attack]}; mean ± std over seeds)",
    )
    honest = [n for n, k in zip(names, ex["kinds"][attack]) if k == "honest"]
    blues = ["#08306b", "#2171b5", "#4292c6", "#6baed6", "#9ecae1", "#2ca02c", "#17becf", "#9467bd"]
    colours = {n: blues[i % len(blues)] for i, n in enumerate(honest)}
    colours.update({n: "#d62728" for n in names if n not in colours})
    thr = viz.curves(history, "threshold", series=[f"β/|R|{tag}"], band=False).data
    for trace in thr:
        trace.line.dash, trace.line.color, trace.name = "dash", "black", "removal threshold β/|R|"
        fig.add_trace(trace)
    return recolour(fig, colours)


def fairness_figure(ex: dict, attack: str):
    """Standalone accuracy (x) vs final federated accuracy (y) per honest participant, all seeds, with ρ."""
    x = [a for per_seed in ex["standalone"] for a in per_seed]
    rffl = [a for per_seed in ex["final"][attack]["rffl"] for a in per_seed]
    fedavg = [a for per_seed in ex["final"][attack]["fedavg"] for a in per_seed]
    rho = ex["rho"][attack]
    fig = viz.lines(
        x,
        {f"RFFL (ρ = {np.mean(rho):.2f} ± {np.std(rho):.2f})": rffl, "FedAvg (one model: ρ undefined)": fedavg},
        mode="markers",
        xlabel="standalone accuracy",
        ylabel="final federated accuracy",
        title=f"Reward vs contribution per honest participant ({ATTACK_LABELS[attack]}, all seeds)",
    )
    fig.update_traces(marker={"size": 9})
    return fig


def make_figures(result) -> dict:
    """Test accuracy, reputations, fairness scatter, per-participant accuracy, robust accuracy per attack."""
    h, ex = result.history, result.extras
    attacks, primary = ex["attacks"], ex["primary"]
    figs = {
        "test_acc": viz.curves(
            h,
            "test_acc",
            xlabel="round",
            ylabel="test accuracy",
            title="Test accuracy (best / mean honest participant; FedAvg's global model)",
        ),
        "reputation": reputation_figure(h, ex, primary),
        "fairness": fairness_figure(ex, primary),
    }
    tag = ex["tags"][primary]
    series = [
        s for s in dict.fromkeys(h[h.metric == "participant_acc"].series) if s.startswith("RFFL") and s.endswith(tag)
    ] + [f"FedAvg{tag}"]
    rows = h[(h.metric == "participant_acc") | ((h.metric == "test_acc") & (h.series == f"FedAvg{tag}"))]
    figs["participant_acc"] = viz.curves(
        rows.assign(metric="acc"),
        "acc",
        series=series,
        xlabel="round",
        ylabel="test accuracy",
        band=False,
        title=f"Each honest participant's model under RFFL vs FedAvg ({ATTACK_LABELS[primary]}; mean over seeds)",
    )
    bars = {}
    for a in attacks:
        bars[f"{ATTACK_LABELS[a]} · RFFL best"] = [max(v) for v in ex["final"][a]["rffl"]]
        bars[f"{ATTACK_LABELS[a]} · FedAvg"] = [v[0] for v in ex["final"][a]["fedavg"]]
    figs["robust_acc"] = viz.bars(
        bars, ylabel="final test accuracy", title="Robust accuracy: best honest RFFL participant vs FedAvg, per attack"
    )
    for a in attacks:
        if a != primary and a != "none":
            figs[f"reputation_{a}"] = reputation_figure(h, ex, a)
    return figs


# ---------------------------------------------------------------- run


@method_run(PARAMS, figures=make_figures, threads={"quick": 1, "standard": 1})
def run(ctx: RunContext) -> Outcome:
    """Standalone, then RFFL and FedAvg under every attack scenario, on the same data, for n_seeds seeds."""
    p = ctx.p
    seeds, attacks = [ctx.seed + k for k in range(p.n_seeds)], scenarios(p)
    several = len(attacks) > 1
    tags = {a: scenario_tag(a, several) for a in attacks}
    final = {a: {"rffl": [], "fedavg": []} for a in attacks}
    keep = {a: {"removed": [], "asr_rffl": [], "asr_fedavg": [], "rho": []} for a in attacks}
    standalone, gammas, labels, kinds = [], [], {}, {}
    bar = ctx.bar(len(seeds) * (1 + 2 * len(attacks)) * p.rounds, "RFFL rounds")
    for s in seeds:
        fed = honest_federation(p, s, ctx.device)
        torch.manual_seed(s)
        worker = build_model(p, fed.x_test.shape[1]).to(ctx.device)
        init = model_state(worker)
        gamma = p.gamma_scale * median_honest_norm(fed, init, worker, round_config(p, 0), s)
        gammas.append(gamma)
        standalone.append(train_standalone(ctx, fed, init, worker, s, bar))
        for a in attacks:
            f = with_adversaries(fed, a, p.n_adversaries)
            labels[a], kinds[a] = [q.label for q in f.participants], [q.kind for q in f.participants]
            r = train_rffl(ctx, f, init, worker, gamma, s, tags[a], bar)
            g = train_fedavg(ctx, f, init, worker, gamma, s, tags[a], bar)
            final[a]["rffl"].append(r["acc"])
            final[a]["fedavg"].append(g["acc"])
            keep[a]["removed"].append((r["removed"], r["adversaries"]))
            keep[a]["asr_rffl"].append(r["asr"])
            keep[a]["asr_fedavg"].append(g["asr"])
            keep[a]["rho"].append(fairness_rho(standalone[-1], r["acc"]))
    bar.close()
    rho = {a: keep[a]["rho"] for a in attacks}
    best = {a: [max(v) for v in final[a]["rffl"]] for a in attacks}
    fedavg = {a: [v[0] for v in final[a]["fedavg"]] for a in attacks}
    claims = [claim_fairness(rho, seeds)]
    removal = claim_removal({a: keep[a]["removed"] for a in attacks if a in EXPELLED_ATTACKS}, seeds)
    if removal is not None:
        claims.append(removal)
    claims.append(claim_accuracy(best, fedavg, seeds))
    if "label_flip" in attacks:
        claims.append(claim_label_flip(keep["label_flip"]["asr_rffl"], keep["label_flip"]["asr_fedavg"]))
    primary = next((a for a in attacks if a != "none"), attacks[0])
    metrics = {
        "rho_rffl": float(np.mean(rho[primary])),
        "acc_rffl_best": float(np.mean(best[primary])),
        "acc_rffl_mean": float(np.mean([np.mean(v) for v in final[primary]["rffl"]])),
        "acc_fedavg": float(np.mean(fedavg[primary])),
        "acc_standalone_best": float(np.mean([max(v) for v in standalone])),
        "gamma": float(np.mean(gammas)),
    }
    extras = {
        "seeds": seeds,
        "attacks": attacks,
        "primary": primary,
        "tags": tags,
        "labels": labels,
        "kinds": kinds,
        "final": final,
        "standalone": standalone,
        "rho": rho,
        "gammas": gammas,
        "removed": {a: [r for r, _ in keep[a]["removed"]] for a in attacks},
        "asr": {a: {"rffl": keep[a]["asr_rffl"], "fedavg": keep[a]["asr_fedavg"]} for a in attacks},
    }
    return Outcome(metrics=metrics, claims=claims, extras=extras)
