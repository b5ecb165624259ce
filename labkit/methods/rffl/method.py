"""RFFL — A Reputation Mechanism Is All You Need: Collaborative Fairness and Adversarial Robustness in
Federated Learning. Xu & Lyu, FL-ICML'21 workshop, arXiv 2011.10464
(official code: github.com/XinyiYS/Robust-and-Fair-Federated-Learning).

Every participant i keeps its OWN model θ_i (there is no global model). One round over the admitted set R:

    Δ_i = clip_Γ(LocalSGD(θ_i) − θ_i)                 upload; an honest participant also sets θ_i ← θ_i + Δ_i
    u   = Σ_{i∈R} w_i Δ_i                             w_i = |D_i|/Σ_j|D_j| in round 1, w_i = r_i afterwards
    φ_i = cos(Δ_i, u)                                 contribution
    r_i ← α r_i + (1 − α) φ_i,  r ← r / Σ_{j∈R} r_j    reputation (r starts at 0)
    R   ← R \\ {i : r_i < β/|R|},  r_i = 0 for them    permanent removal, then r renormalised
    q_i = r_i / max_j r_j,  θ_i ← θ_i + top-⌈q_i n_ℓ⌉ entries of every layer ℓ of u    reward

Fairness (from CFFL) is ρ = Pearson(contribution, reward) over the honest participants, with the test accuracy of
a model trained standalone on the participant's own data as the contribution and its final federated test
accuracy as the reward. Adversaries (all uploads clipped to Γ): a free-rider uploads U[−1, 1] noise; label
flipping trains with 1 → 7; sign randomising, value inverting and re-scaling corrupt an honest Δ entry by entry
(the attacks themselves are generic and live in :mod:`labkit.substrates.federated`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from labkit.substrates.federated import (
    Client,
    LocalSGD,
    aggregate,
    clip_to_norm,
    corrupt_update,
    flatten_update,
    invert_values,
    local_train,
    model_state,
    randomize_signs,
    rescale_values,
    size_weights,
    uniform_noise_like,
)

State = dict[str, torch.Tensor]

#: the uploads of these adversaries are their honest Δ corrupted entry by entry
ENTRYWISE_ATTACKS = {"sign_flip": randomize_signs, "value_invert": invert_values, "rescale": rescale_values}
#: a zero upload has φ = 0 (the cosine's guard)
COSINE_EPS = 1e-10
#: participant i of seed s draws from a generator seeded GENERATOR_STRIDE·s + i (no overlap for < 10,000 of them)
GENERATOR_STRIDE = 10_000

# ---------------------------------------------------------------- the server: contribution, reputation, removal


def weighted_update(updates: State, weights: torch.Tensor) -> State:
    """u = Σ_i w_i Δ_i, tensor by tensor; ``updates`` stacked: name → (m, *shape), ``weights``: (m,)."""
    # u = Σ_i w_i Δ_i
    return aggregate(updates, weights, lambda G, w: torch.tensordot(w.to(G), G, dims=1))


def stack_flat(updates: State) -> torch.Tensor:
    """The stacked updates as one row per participant: (m, d) (floating entries, state-dict order)."""
    return torch.cat([G.reshape(G.shape[0], -1) for G in updates.values() if G.is_floating_point()], dim=1)


def contributions(flat: torch.Tensor, u: torch.Tensor, eps: float = COSINE_EPS) -> torch.Tensor:
    """φ_i = Δ_iᵀu / max(‖Δ_i‖‖u‖, ε); ``flat``: (m, d), ``u``: (d,) → (m,)."""
    # φ_i = cos(Δ_i, u)
    return F.cosine_similarity(flat, u[None, :], dim=1, eps=eps)


def update_reputation(r: torch.Tensor, phi: torch.Tensor, alpha: float, active: torch.Tensor) -> torch.Tensor:
    """r_i ← α r_i + (1 − α) φ_i for i ∈ R (0 outside R), then r ← r / Σ_{j∈R} r_j; all (m,)."""
    # r_i ← α r_i + (1 − α) φ_i on R
    r = torch.where(active, alpha * r + (1 - alpha) * phi, torch.zeros_like(r))
    # r ← r / Σ_{j∈R} r_j
    return r / r.sum()


def remove_low_reputation(r: torch.Tensor, active: torch.Tensor, beta: float):
    """Drop every i ∈ R with r_i < β/|R| (|R| counted before this round's removals), set r_i = 0 and
    renormalise r over the new R. Returns (r, active, dropped, threshold)."""
    # threshold β/|R|
    threshold = beta / int(active.sum())
    dropped = active & (r < threshold)
    active = active & ~dropped
    r = torch.where(active, r, torch.zeros_like(r))
    return r / r.sum(), active, dropped, threshold


# ---------------------------------------------------------------- the reward: per-layer sparsified aggregate


def reward_fractions(r: torch.Tensor) -> torch.Tensor:
    """q_i = r_i / max_j r_j ∈ (0, 1] for admitted participants, 0 for removed ones; (m,) → (m,)."""
    return r / r.max()


def keep_count(q: float, n: int) -> int:
    """Entries of an n-entry layer a participant with fraction q receives: ⌈q·n⌉, but at most n − 1 when
    n > 1 (as the official code: q = 1 leaves out the smallest entry), and 0 when q ≤ 0."""
    # k = ⌈q·n⌉
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
        self.r = torch.zeros(len(self.sizes))  # r starts at 0
        self.active = torch.ones(len(self.sizes), dtype=torch.bool)

    def weights(self) -> torch.Tensor:
        """Aggregation weights: data shares |D_i|/Σ_j|D_j| in round 1, reputations r afterwards."""
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
            self.removed_round[i] = self.round  # 1-based
        return ServerStep(u, phi, r.clone(), reward_fractions(r), dropped, threshold)


def fairness_rho(contribution, reward) -> float:
    """Pearson ρ between contribution proxies (standalone accuracies) and rewards (federated accuracies).
    Undefined when either side is constant (FedAvg gives everyone the same model): reported as 0."""
    x, y = np.asarray(contribution, float), np.asarray(reward, float)
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return 0.0
    from scipy.stats import pearsonr

    return float(pearsonr(x, y)[0])


# ---------------------------------------------------------------- the participants: local step and upload


@dataclass
class Participant:
    """``kind`` is "honest" or an attack name (the logic key); ``label`` names it in plots; ``client`` its data."""

    kind: str
    label: str
    client: Client

    @property
    def honest(self) -> bool:
        return self.kind == "honest"


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
        # lr_e = lr · decay^(round·E + e)
        lr = self.lr * self.lr_decay ** (self.round * self.epochs + epoch)
        return LocalSGD(epochs=1, batch_size=self.batch_size, lr=lr, momentum=0.0, weight_decay=0.0)


def add_states(a: State, b: State) -> State:
    """a + b, entry by entry."""
    return {k: a[k] + b[k].to(a[k].dtype) for k in a}


def stack_states(states: list[State]) -> State:
    """name → (m, *shape): the participants' states (or uploads) stacked."""
    return {k: torch.stack([s[k] for s in states]) for k in states[0]}


def local_delta(
    worker: nn.Module, state: State, client: Client, cfg: RoundConfig, gen: torch.Generator
) -> tuple[State, torch.Tensor]:
    """Δ = LocalSGD(θ) − θ after cfg.epochs epochs of cross-entropy SGD; also the mean batch loss."""
    worker.load_state_dict(state)
    losses = [local_train(worker, client, F.cross_entropy, cfg.optimiser(e), gen) for e in range(cfg.epochs)]
    new = model_state(worker)
    # Δ = θ_new − θ
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
    # Δ_i ← clip_Γ(Δ_i) = Δ_i · min(1, Γ/‖Δ_i‖)
    own = clip_to_norm(delta, cfg.gamma)
    if part.kind in ENTRYWISE_ATTACKS:
        return clip_to_norm(corrupt_update(delta, ENTRYWISE_ATTACKS[part.kind], gen), cfg.gamma), own, loss
    return own, own, loss


def participant_generators(seed: int, n: int) -> list[torch.Generator]:
    """One CPU generator per participant (batch order, noise), the same in every arm of a seed."""
    return [torch.Generator().manual_seed(GENERATOR_STRIDE * seed + i) for i in range(n)]


# ---------------------------------------------------------------- the algorithm: one round


def rffl_round(
    states: list[State],
    parts: list[Participant],
    server: ReputationServer,
    worker: nn.Module,
    cfg: RoundConfig,
    gens: list[torch.Generator],
) -> tuple[ServerStep, torch.Tensor]:
    """One RFFL round, in place on ``states`` (one model per participant):

    for i: Δ_i = clip_Γ(LocalSGD(θ_i) − θ_i) (or the adversary's upload); honest: θ_i ← θ_i + Δ_i
    server: u, φ, r, R, q from the uploads (:meth:`ReputationServer.step`)
    for i ∈ R: θ_i ← θ_i + u sparsified per layer to the fraction q_i
    """
    uploads, losses = [], []
    for i, part in enumerate(parts):
        up, own, loss = participant_upload(part, states[i], worker, cfg, gens[i])
        if own is not None:
            # θ_i ← θ_i + clip_Γ(Δ_i)
            states[i] = add_states(states[i], own)
        uploads.append(up)
        losses.append(loss)
    # u = Σ w_i Δ_i;  φ_i = cos(Δ_i, u);  r ← α r + (1 − α) φ;  R ← R \ {r_i < β/|R|};  q = r / max r
    step = server.step(stack_states(uploads))
    for i in torch.nonzero(server.active).flatten().tolist():
        # θ_i ← θ_i + top-⌈q_i n_ℓ⌉(u) per layer ℓ
        states[i] = add_states(states[i], step.reward(i))
    return step, torch.stack(losses)
