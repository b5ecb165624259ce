"""16 · Few-shot model extraction of sequential recommenders — arXiv 2411.11677 (Zhang & Liu, 2024).

An attacker queries a black-box sequential recommender V (a prefix x in, a ranked list L_V(x) = [v_1 … v_k] out)
and wants a surrogate S_θ that ranks like it. It holds a few real sequences (≤ 10 % of the raw data).

(A) Autoregressive augmentation generation (the concrete reading is a **reconstruction**: the paper's code is
not public). A probabilistic interaction sampler P_φ(i | x) (a small SASRec) is fitted on the few-shot sequences,
with a synthesis determinant gate ρ(x) = σ(wᵀ h_φ(x) + b) trained to predict whether the real next item is in
L_V(x). A synthetic sequence grows from a real first item: at every step query L_V(x); with probability ρ(x)
draw the next item from P_φ restricted to L_V(x) (renormalised), else from P_φ over all items.
Data-free reference (Yue et al., RecSys 2021): a uniformly random first item, then uniform in L_V(x).

(B) Distillation on every stored (prefix, list):
    L_rank = mean_j max(0, s(v_{j+1}) − s(v_j) + m_1) + mean_j max(0, s(n_j) − s(v_j) + m_2)   (Yue et al.)
    L_up   = Σ_{i ∈ V_K \\ S_K} max(0, s_(K) − s(i) + m)      missed items pulled above the surrogate's K-th score
    L_down = Σ_{i ∈ S_K \\ V_K} max(0, s(i) − s(v_K) + m)     intruders pushed below the victim's K-th item
    L      = L_rank + λ (L_up + L_down) / K                   (bidirectional repair, a **reconstruction**)
n_j are uniform negatives outside the list; s_(K) and s(v_K) are thresholds (no gradient through them).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from labkit.substrates.sequential_recsys import BlackBox, SASRec, next_item_loss

# --- (B) the distillation losses ---------------------------------------------------------------------------


def sample_negatives(victim_list: Tensor, n_items: int, generator: torch.Generator) -> Tensor:
    """k items per row drawn uniformly (with replacement) from the items NOT in the row's list: ``[B, k]``."""
    allowed = torch.ones(victim_list.shape[0], n_items, device=victim_list.device)
    allowed.scatter_(1, victim_list, 0.0)
    return torch.multinomial(allowed, victim_list.shape[1], replacement=True, generator=generator)


def ranking_loss(scores: Tensor, victim_list: Tensor, negatives: Tensor, m1: float = 0.5, m2: float = 0.5) -> Tensor:
    """Yue et al.'s ranking loss. ``scores [B, I]``, ``victim_list [B, k]`` (best first), ``negatives [B, k]``.

    Means over all pairs, as torch's ``MarginRankingLoss`` in their code (the card writes sums)."""
    s_list = scores.gather(1, victim_list)  # s(v_1) … s(v_k)        [B, k]
    s_neg = scores.gather(1, negatives)  # s(n_1) … s(n_k)           [B, k]
    # max(0, s(v_{j+1}) − s(v_j) + m_1): keep the victim's order inside the list
    order = (s_list[:, 1:] - s_list[:, :-1] + m1).clamp_min(0).mean()
    # max(0, s(n_j) − s(v_j) + m_2): every listed item above a sampled non-listed one
    above = (s_neg - s_list + m2).clamp_min(0).mean()
    return order + above


def top_k_mask(scores: Tensor, k: int) -> Tensor:
    """Boolean ``[B, I]``: the k highest scores of each row."""
    top = scores.topk(k, dim=1).indices
    return torch.zeros_like(scores, dtype=torch.bool).scatter_(1, top, True)


def repair_loss(scores: Tensor, victim_list: Tensor, k: int, margin: float = 0.5) -> Tensor:
    """Bidirectional repair (reconstruction): ``(L_up + L_down) / K`` per row, averaged over the batch.

    ``scores [B, I]`` of the surrogate, ``victim_list [B, ≥K]`` best first, ``k`` = K the list length compared."""
    in_victim = torch.zeros_like(scores, dtype=torch.bool).scatter_(1, victim_list[:, :k], True)  # V_K  [B, I]
    in_surrogate = top_k_mask(scores.detach(), k)  # S_K                                                [B, I]
    # s_(K): the surrogate's K-th highest score; s(v_K): its score of the victim's K-th item   (thresholds) [B, 1]
    kth_surrogate = scores.detach().topk(k, dim=1).values[:, -1:]
    kth_victim = scores.detach().gather(1, victim_list[:, k - 1 : k])
    # L_up = Σ_{i ∈ V_K \ S_K} max(0, s_(K) − s(i) + m)
    up = ((kth_surrogate - scores + margin).clamp_min(0) * (in_victim & ~in_surrogate)).sum(1)
    # L_down = Σ_{i ∈ S_K \ V_K} max(0, s(i) − s(v_K) + m)
    down = ((scores - kth_victim + margin).clamp_min(0) * (in_surrogate & ~in_victim)).sum(1)
    return ((up + down) / k).mean()


def extraction_loss(
    scores: Tensor,
    victim_list: Tensor,
    negatives: Tensor,
    *,
    lam: float,
    repair_k: int,
    margin: float = 0.5,
    m1: float = 0.5,
    m2: float = 0.5,
) -> Tensor:
    """L = L_rank + λ·L_BR (λ = 0 is plain ranking distillation)."""
    loss = ranking_loss(scores, victim_list, negatives, m1, m2)
    if lam > 0:
        loss = loss + lam * repair_loss(scores, victim_list, repair_k, margin)
    return loss


# --- (A) the sampler with its gate, and the generators -------------------------------------------------------


class GatedSampler(nn.Module):
    """P_φ(i | x) (a SASRec next-item model) and the gate ρ(x) = σ(wᵀ h_φ(x) + b) on the same prefix state."""

    def __init__(self, n_items: int, dim: int, max_len: int, n_blocks: int = 1):
        super().__init__()
        self.n_items = n_items
        self.net = SASRec(n_items, dim, max_len, n_blocks=n_blocks)
        self.gate = nn.Linear(dim, 1)

    def forward(self, seqs: Tensor) -> tuple[Tensor, Tensor]:
        """``seqs [B, L]`` → next-item logits ``[B, L, I]`` and gate logits ``[B, L]``."""
        h = self.net.encode(seqs)  # [B, L, d]
        return h @ self.net.emb.weight[: self.n_items].T, self.gate(h).squeeze(-1)


def gate_targets(sequences: Tensor, victim_lists: Tensor) -> Tensor:
    """1 where the real next item x_{t+1} is in L_V(x[:t+1]), else 0: ``sequences [N, T]``, lists ``[N, T−1, k]``
    → ``[N, T−1]`` float."""
    return (victim_lists == sequences[:, 1:].unsqueeze(-1)).any(-1).float()


def sampler_loss(sampler: GatedSampler, sequences: Tensor, in_list: Tensor) -> Tensor:
    """Next-item cross-entropy of P_φ + binary cross-entropy of ρ against ``in_list [N, T−1]``."""
    logits, gate = sampler(sequences)
    # −log P_φ(x_{t+1} | x[:t+1]) + BCE(ρ(x[:t+1]), 1[x_{t+1} ∈ L_V(x[:t+1])])
    return next_item_loss(logits, sequences) + F.binary_cross_entropy_with_logits(gate[:, :-1], in_list)


@torch.no_grad()
def generate_augmented(
    sampler: GatedSampler | None,
    victim: BlackBox,
    starts: Tensor,
    length: int,
    generator: torch.Generator,
    *,
    use_gate: bool = True,
) -> tuple[Tensor, Tensor]:
    """Grow ``len(starts)`` sequences of ``length`` items from the given first items: ``(sequences [N, T],
    lists [N, T−1, k])``; N·(T−1) queries. ``sampler=None`` draws uniformly in L_V(x) (the "without sampler"
    ablation); ``use_gate=False`` always draws from P_φ restricted to L_V(x) (ρ ≡ 1)."""
    seqs, lists = starts.view(-1, 1), []
    for _ in range(length - 1):
        top = victim.query(seqs)  # L_V(x)                                                   [N, k]
        lists.append(top)
        if sampler is None:
            pick = top.gather(1, torch.randint(0, top.shape[1], (len(seqs), 1), generator=generator))
        else:
            logits, gate = sampler(seqs)
            logits, gate = logits[:, -1], gate[:, -1]  # [N, I], [N]
            listed = torch.zeros_like(logits, dtype=torch.bool).scatter_(1, top, True)
            # P_φ(i | x) restricted to L_V(x) and renormalised, or P_φ(i | x) over all items
            restricted = logits.masked_fill(~listed, float("-inf")).softmax(-1)
            free = logits.softmax(-1)
            # with probability ρ(x) = σ(gate) the restricted draw, else the free one
            rho = torch.sigmoid(gate) if use_gate else torch.ones_like(gate)
            use_list = torch.rand(len(seqs), generator=generator) < rho
            probs = torch.where(use_list.unsqueeze(1), restricted, free)
            pick = torch.multinomial(probs, 1, generator=generator)
        seqs = torch.cat([seqs, pick], 1)
    return seqs, torch.stack(lists, 1)


@torch.no_grad()
def generate_data_free(victim: BlackBox, n: int, length: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Yue et al.'s data-free generator: a uniformly random first item, then uniform in L_V(x) at every step."""
    starts = torch.randint(0, victim.n_items, (n,), generator=generator)
    return generate_augmented(None, victim, starts, length, generator)


# --- the training loops --------------------------------------------------------------------------------------


def train_sampler(
    sampler: GatedSampler,
    sequences: Tensor,
    victim_lists: Tensor,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    generator: torch.Generator,
    on_step: Callable[[int, Tensor, nn.Module], None] | None = None,
) -> GatedSampler:
    """Fit P_φ and ρ on the few-shot sequences (their victim lists already bought: no new queries)."""
    in_list = gate_targets(sequences, victim_lists)
    opt = torch.optim.Adam(sampler.parameters(), lr=lr, foreach=True)
    sampler.train()
    step = 0
    for _ in range(epochs):
        for idx in torch.randperm(len(sequences), generator=generator).split(batch_size):
            loss = sampler_loss(sampler, sequences[idx], in_list[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            if on_step is not None:
                on_step(step, loss.detach(), sampler)
    sampler.eval()
    return sampler


def distill(
    surrogate: nn.Module,
    sequences: Tensor,
    victim_lists: Tensor,
    *,
    lam: float,
    repair_k: int,
    margin: float,
    epochs: int,
    lr: float,
    batch_size: int,
    generator: torch.Generator,
    on_step: Callable[[int, Tensor, nn.Module], None] | None = None,
    on_epoch: Callable[[int, nn.Module], None] | None = None,
) -> nn.Module:
    """Distil the victim's lists into the surrogate: Adam on L_rank + λ·L_BR over every stored (prefix, list).

    ``sequences [N, T]``, ``victim_lists [N, T−1, k]``: a causal surrogate scores all T−1 prefixes of a sequence
    in one pass, so a batch of ``batch_size`` sequences holds ``batch_size·(T−1)`` (prefix, list) pairs."""
    opt = torch.optim.Adam(surrogate.parameters(), lr=lr, foreach=True)
    n_items = surrogate.n_items
    step = 0
    for epoch in range(epochs):
        surrogate.train()
        for idx in torch.randperm(len(sequences), generator=generator).split(batch_size):
            scores = surrogate(sequences[idx])[:, :-1].reshape(-1, n_items)  # s_θ(x[:t+1], ·)   [B·(T−1), I]
            lists = victim_lists[idx].reshape(len(scores), -1)  # L_V(x[:t+1])                   [B·(T−1), k]
            negatives = sample_negatives(lists, n_items, generator)
            loss = extraction_loss(scores, lists, negatives, lam=lam, repair_k=repair_k, margin=margin)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            if on_step is not None:
                on_step(step, loss.detach(), surrogate)
        surrogate.eval()
        if on_epoch is not None:
            on_epoch(epoch + 1, surrogate)
    return surrogate
