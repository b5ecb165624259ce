"""Proxy reward models trained on (noisy) preference labels, and reward-model ensembles.

A reward model r_φ maps a response (a feature vector, or a prompt + response token sequence) to a scalar.
It is trained by Bradley–Terry maximum likelihood on pairs (y_w, y_l):

    L(φ) = mean_n −log σ(r_φ(y_w,n) − r_φ(y_l,n))         (:func:`labkit.substrates.preference.bradley_terry_loss`)

Label noise: :func:`flip_labels` swaps a fixed fraction of the pairs (25 % in the RM-ensemble card).

An ensemble of k members (same data, different seeds) scores S[i, n] = r_i(y_n); after standardising each
member (its own mean/std over a reference pool) the conservative objectives of Coste et al. are
    mean:  R_mean(y) = (1/k) Σ_i S[i, y]
    WCO:   R_WCO(y)  = min_i S[i, y]                                     (worst-case optimisation)
    UWO:   R_UWO(y)  = R_mean(y) − λ · Var_i S[i, y]                        (uncertainty-weighted optimisation)
with the POPULATION variance (1/k) Σ_i (S − mean)² by default (their best-of-n code, numpy); ``unbiased=True``
gives the 1/(k−1) version of their PPO code (torch).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from labkit.models.mlp import MLP
from labkit.substrates.preference import bradley_terry_loss

Inputs = torch.Tensor | tuple  # a tensor, or a tuple of tensors indexed together along dim 0 (prompts, responses)


# --------------------------------------------------------------------------------------------- models


class RewardMLP(nn.Module):
    """r(y) = MLP(y): ``in_dim → hidden … → 1`` with ReLU. ``(N, in_dim)`` → ``(N,)``."""

    def __init__(self, in_dim: int, hidden: Sequence[int] = (32, 32)):
        super().__init__()
        self.net = MLP(in_dim, list(hidden), 1)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.net(y).squeeze(-1)


class SequenceRewardModel(nn.Module):
    """r(x, y) = wᵀ mean_t h_t + b over the final hidden states of a small causal LM on [x; y].

    ``backbone`` is any model with ``hidden(tokens)`` (:class:`labkit.models.tiny_lm.TinyLM`), trained jointly.
    Call as ``model((prompts, responses))`` or ``model(prompts, responses)``. ``(N,)``.
    """

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.score = nn.Linear(backbone.d_model, 1)

    def forward(self, prompts, responses: torch.Tensor | None = None) -> torch.Tensor:
        if responses is None:
            prompts, responses = prompts
        h = self.backbone.hidden(torch.cat([prompts, responses], dim=1))
        return self.score(h.mean(1)).squeeze(-1)


# --------------------------------------------------------------------------------------------- labels and training


def flip_labels(labels: torch.Tensor, rate: float, generator: torch.Generator) -> torch.Tensor:
    """Label noise: a copy of the boolean ``labels`` with exactly round(rate·N) of them, chosen uniformly without
    replacement, negated (so the realised noise rate is ``rate`` up to rounding, not just in expectation)."""
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"rate must be in [0, 1], got {rate}")
    n = labels.numel()
    flip = torch.zeros(n, dtype=torch.bool)
    flip[torch.randperm(n, generator=generator)[: round(rate * n)]] = True
    return labels ^ flip.view(labels.shape).to(labels.device)


def flip_pairs(chosen: Inputs, rejected: Inputs, rate: float, generator: torch.Generator):
    """Swap chosen and rejected for round(rate·N) uniformly chosen pairs (:func:`flip_labels` on pairs).
    Returns (chosen, rejected, flipped) with ``flipped`` the boolean mask of swapped pairs."""
    n = _length(chosen)
    flipped = flip_labels(torch.zeros(n, dtype=torch.bool), rate, generator)

    def swap(a, b):
        f = flipped.to(a.device).view(-1, *([1] * (a.dim() - 1)))
        return torch.where(f, b, a), torch.where(f, a, b)

    if isinstance(chosen, tuple):
        pairs = [swap(a, b) for a, b in zip(chosen, rejected)]
        return tuple(p[0] for p in pairs), tuple(p[1] for p in pairs), flipped
    new_chosen, new_rejected = swap(chosen, rejected)
    return new_chosen, new_rejected, flipped


def _length(x: Inputs) -> int:
    return int((x[0] if isinstance(x, tuple) else x).shape[0])


def _take(x: Inputs, idx: torch.Tensor) -> Inputs:
    return tuple(t[idx.to(t.device)] for t in x) if isinstance(x, tuple) else x[idx.to(x.device)]


def _score(model: nn.Module, x: Inputs) -> torch.Tensor:
    return model(*x) if isinstance(x, tuple) else model(x)


def train_reward_model(
    model: nn.Module,
    chosen: Inputs,
    rejected: Inputs,
    steps: int = 300,
    lr: float = 3e-3,
    batch_size: int = 128,
    generator: torch.Generator | None = None,
    weight_decay: float = 0.0,
) -> list[float]:
    """Bradley–Terry training: ``steps`` Adam steps on mean −log σ(r(y_w) − r(y_l)) over shuffled mini-batches
    (``generator``: a CPU generator). ``chosen``/``rejected`` are tensors or tuples (prompts, responses).
    Trains ``model`` in place; returns the loss of every step. A NaN/inf loss or a weight beyond ``WEIGHT_LIMIT``
    raises ``DivergenceError`` naming the step."""
    from labkit.core.training import check_finite, check_weights

    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    model.train()
    n = _length(chosen)
    losses, order, pos = [], torch.randperm(n, generator=generator), 0
    for step in range(1, steps + 1):
        if pos + batch_size > n:
            order, pos = torch.randperm(n, generator=generator), 0
        idx = order[pos : pos + batch_size]
        pos += batch_size
        loss = bradley_terry_loss(_score(model, _take(chosen, idx)), _score(model, _take(rejected, idx))).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(check_finite(loss, step, "reward model"))
        check_weights(model, step, "reward model")
    model.eval()
    return losses


@torch.no_grad()
def preference_accuracy(model: nn.Module, chosen: Inputs, rejected: Inputs) -> float:
    """Fraction of pairs the model orders like the labels: mean [r(y_w) > r(y_l)]."""
    return float((_score(model, chosen) > _score(model, rejected)).float().mean())


# --------------------------------------------------------------------------------------------- ensembles


def standardise(
    scores: torch.Tensor, mean: torch.Tensor | None = None, std: torch.Tensor | None = None
) -> torch.Tensor:
    """(S[i, n] − μ_i)/σ_i per member (row), with μ, σ over the columns of ``scores`` unless given ``(k,)``.
    Without it the member with the largest scale dominates the min and the variance."""
    mean = scores.mean(-1) if mean is None else mean
    std = scores.std(-1) if std is None else std
    return (scores - mean.unsqueeze(-1)) / std.unsqueeze(-1).clamp_min(1e-8)


def mean_objective(scores: torch.Tensor) -> torch.Tensor:
    """R_mean = (1/k) Σ_i S[i] over the member dim 0. ``(k, ...)`` → ``(...)``."""
    return scores.mean(0)


def worst_case_objective(scores: torch.Tensor) -> torch.Tensor:
    """R_WCO = min_i S[i] (WCO). ``(k, ...)`` → ``(...)``."""
    return scores.min(0).values


def uncertainty_weighted_objective(scores: torch.Tensor, lam: float, unbiased: bool = False) -> torch.Tensor:
    """R_UWO = mean_i S[i] − λ·Var_i S[i] (UWO), population variance (1/k) unless ``unbiased`` (1/(k−1))."""
    return scores.mean(0) - lam * scores.var(0, correction=1 if unbiased else 0)


OBJECTIVES = ("mean", "wco", "uwo")


def combine(scores: torch.Tensor, objective: str, lam: float = 0.5, unbiased: bool = False) -> torch.Tensor:
    """The named ensemble objective of member scores ``(k, ...)``: "mean", "wco" or "uwo" (with λ = ``lam``)."""
    if objective == "mean":
        return mean_objective(scores)
    if objective == "wco":
        return worst_case_objective(scores)
    if objective == "uwo":
        return uncertainty_weighted_objective(scores, lam, unbiased)
    raise ValueError(f"unknown ensemble objective {objective!r}: choose one of {list(OBJECTIVES)}")


@dataclass
class RewardEnsemble:
    """k reward models. ``member_scores(x)`` → ``(k, N)``; ``fit_standardisation(x_ref)`` stores each member's
    mean/std over a reference pool (e.g. the SFT policy's samples); ``score(x, objective, lam)`` standardises
    (with the stored statistics, else over ``x`` itself) and combines."""

    members: list[nn.Module]
    mean: torch.Tensor | None = None
    std: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.members)

    @torch.no_grad()
    def member_scores(self, x: Inputs) -> torch.Tensor:
        return torch.stack([_score(m, x) for m in self.members])

    def fit_standardisation(self, x_ref: Inputs) -> RewardEnsemble:
        s = self.member_scores(x_ref)
        self.mean, self.std = s.mean(-1), s.std(-1)
        return self

    def score(
        self, x: Inputs, objective: str = "mean", lam: float = 0.5, unbiased: bool = False, standardised: bool = True
    ) -> torch.Tensor:
        s = self.member_scores(x)
        if standardised:
            s = standardise(s, self.mean, self.std)
        return combine(s, objective, lam, unbiased)


def train_ensemble(
    make_model: Callable[[], nn.Module], chosen: Inputs, rejected: Inputs, seeds: Sequence[int], **train_kwargs
) -> RewardEnsemble:
    """One member per seed: ``make_model()`` under ``torch.manual_seed(seed)`` (the initialisation; the global
    RNG is restored afterwards) and a ``torch.Generator(seed)`` for the mini-batch order; the same data for all,
    so members differ only by seed."""
    members = []
    for seed in seeds:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            model = make_model()
        train_reward_model(model, chosen, rejected, generator=torch.Generator().manual_seed(int(seed)), **train_kwargs)
        members.append(model)
    return RewardEnsemble(members)
