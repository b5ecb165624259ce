"""Regret-loss — arXiv 2403.16843 (Park, Liu, Ozdaglar, Zhang; ICLR 2025). Training a no-regret agent without labels.

Online learning with full information: at round t the agent plays π_t ∈ Δ_d from the past losses ℓ_1..ℓ_{t−1}
only, then sees ℓ_t ∈ [0, 1]^d and pays ⟨ℓ_t, π_t⟩. External regret against the best fixed action in hindsight:

    Regret_T(π; ℓ) = Σ_t ⟨ℓ_t, π_t⟩ − min_i Σ_t ℓ_{t,i}

The regret-loss (unsupervised: simulated loss sequences, no optimal-action labels) draws N sequences, computes each
one's regret R_j under the model M_θ, and takes a soft maximum over them:

    L(θ; k, N) = E[ Σ_j h(R_j)·f(R_j, k) / Σ_j f(R_j, k) ],   f(x, k) = exp(k·x),  h(x) = x (or max(x, 0)²)

k → ∞ trains against the worst of the N sequences, k → 0 against their average. The reference algorithms:

    FTRL/Hedge:  π_t ∝ exp(−η Σ_{s<t} ℓ_s),  η* = √(8 ln d / T)  (Regret_T ≤ √(T ln d / 2))
    FTL:         π_t = uniform over argmin_i Σ_{s<t} ℓ_{s,i}   (Hedge with η → ∞)
    FTPL:        π_t = e_{argmin_i (Σ_{s<t} ℓ_{s,i} − ε_{t,i}/η)},  ε_{t,i} ~ Exp(1) fresh every round

The paper proves that a single-layer linear self-attention model at a global minimiser of the regret-loss
implements an FTRL rule (its value matrix ≈ −η·I up to a constant shift); :class:`LinearSelfAttentionAgent`.
The exact h, f and model sizes of the paper are reconstructed from its text (no official code was found).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# --- regret ---------------------------------------------------------------------------------------------------


def cumulative_regret(policy: Tensor, losses: Tensor) -> Tensor:
    """Regret of every prefix: ``policy`` and ``losses`` are ``(..., T, d)``; returns ``(..., T)``, entry t−1 is
    Regret_t = Σ_{s≤t} ⟨ℓ_s, π_s⟩ − min_i Σ_{s≤t} ℓ_{s,i}."""
    # Σ_{s≤t} ⟨ℓ_s, π_s⟩: (..., T)
    paid = (policy * losses).sum(-1).cumsum(-1)
    # min_i Σ_{s≤t} ℓ_{s,i}: (..., T)
    best = losses.cumsum(-2).min(-1).values
    return paid - best


def regret(policy: Tensor, losses: Tensor) -> Tensor:
    """Regret_T of each sequence, ``(...,)``."""
    return cumulative_regret(policy, losses)[..., -1]


def regret_loss(regrets: Tensor, k: float, h: str = "linear") -> Tensor:
    """The regret-loss of ``regrets`` ``(G, N)``: G groups of N sequences; the soft max is taken within a group.
    The weights f(R_j, k)/Σ f stay in the graph (the loss as written)."""
    # h(R_j): identity, or max(R_j, 0)² (then sequences with negative regret give no gradient)
    hr = regrets if h == "linear" else regrets.clamp(min=0.0) ** 2
    # f(R_j, k) / Σ_j f(R_j, k) = softmax_j(k·R_j), per group: (G, N)
    weights = torch.softmax(k * regrets, dim=-1)
    # L = mean over groups of Σ_j h(R_j)·w_j
    return (hr * weights).sum(-1).mean()


def supervised_loss(policy: Tensor, losses: Tensor) -> Tensor:
    """The supervised alternative: predict the best action in hindsight i* = argmin_i Σ_t ℓ_{t,i} at every round;
    ``policy``, ``losses`` are ``(B, T, d)``."""
    # i* per sequence: (B,)
    label = losses.sum(-2).argmin(-1)
    # −(1/T) Σ_t log π_t(i*)
    logp = policy.clamp_min(1e-12).log().gather(-1, label[:, None, None].expand(-1, policy.shape[-2], 1))
    return -logp.mean()


# --- the reference algorithms (closed form, all rounds at once) -------------------------------------------------


def past_cumulative(losses: Tensor) -> Tensor:
    """L_{t−1} = Σ_{s<t} ℓ_s for every round (zero at t = 1): ``(..., T, d)``."""
    return losses.cumsum(-2) - losses


def hedge_eta(horizon: int, d: int) -> float:
    """The worst-case-tuned learning rate η* = √(8 ln d / T)."""
    return math.sqrt(8 * math.log(d) / horizon)


def hedge(losses: Tensor, eta: float) -> Tensor:
    """FTRL with the entropy regulariser: π_t ∝ exp(−η L_{t−1}), ``(..., T, d)``."""
    # π_t = softmax(−η Σ_{s<t} ℓ_s)
    return torch.softmax(-eta * past_cumulative(losses), dim=-1)


def follow_the_leader(losses: Tensor) -> Tensor:
    """FTL: all mass on argmin_i L_{t−1,i}, ties split evenly, ``(..., T, d)``."""
    past = past_cumulative(losses)
    # the leaders: L_{t−1,i} = min_j L_{t−1,j} (up to float noise)
    leaders = (past <= past.min(-1, keepdim=True).values + 1e-9).float()
    return leaders / leaders.sum(-1, keepdim=True)


def follow_the_perturbed_leader(losses: Tensor, eta: float, generator: torch.Generator) -> Tensor:
    """FTPL with exponential noise: one draw per round, returned as a one-hot π_t, ``(..., T, d)``."""
    noise = torch.empty(losses.shape).exponential_(generator=generator).to(losses.device)
    # a_t = argmin_i (L_{t−1,i} − ε_{t,i}/η)
    action = (past_cumulative(losses) - noise / eta).argmin(-1)
    return F.one_hot(action, losses.shape[-1]).to(losses.dtype)


# --- the agents ---------------------------------------------------------------------------------------------------


def shift_right(losses: Tensor) -> Tensor:
    """The agent's inputs: token t is ℓ_{t−1} (zeros at t = 1, where a learned start token is added), so π_t
    can only depend on ℓ_1..ℓ_{t−1}. ``(B, T, d)`` → ``(B, T, d)``."""
    return F.pad(losses, (0, 0, 1, 0))[:, :-1]


def causal_mask(horizon: int, device=None) -> Tensor:
    """``(T, T)`` boolean mask, True where attention is forbidden: position t sees positions ≤ t only."""
    return torch.triu(torch.ones(horizon, horizon, dtype=torch.bool, device=device), diagonal=1)


class TransformerAgent(nn.Module):
    """A causal transformer encoder (pre-norm, no dropout) mapping ℓ_1..ℓ_{t−1} to π_t for every t at once."""

    def __init__(self, d: int, max_horizon: int, d_model: int = 32, n_heads: int = 4, n_layers: int = 2):
        super().__init__()
        self.embed = nn.Linear(d, d_model)
        self.start = nn.Parameter(torch.zeros(d_model))
        self.position = nn.Parameter(0.02 * torch.randn(max_horizon, d_model))
        layer = nn.TransformerEncoderLayer(
            d_model, n_heads, 4 * d_model, dropout=0.0, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, d)

    def forward(self, losses: Tensor) -> Tensor:
        """``losses`` ``(B, T, d)`` → policies ``(B, T, d)``; π_t never sees ℓ_t."""
        horizon = losses.shape[1]
        x = self.embed(shift_right(losses))
        # round 1 has no past: its token is the learned start token
        x = torch.cat([self.start.expand(len(x), 1, -1), x[:, 1:]], 1) + self.position[:horizon]
        x = self.encoder(x, mask=causal_mask(horizon, losses.device), is_causal=True)
        return torch.softmax(self.head(self.norm(x)), dim=-1)


class LinearSelfAttentionAgent(nn.Module):
    """One layer of linear self-attention with a softmax output, the model of the paper's FTRL result:

        z_s = (ℓ_s, 1),   π_t = softmax( Σ_{s<t} V z_s · (wᵀ z_s) )

    A constant attention score (w = e_{d+1}) and V = [−η·I | 0] give exactly Hedge, π_t ∝ exp(−η L_{t−1})."""

    def __init__(self, d: int):
        super().__init__()
        self.value = nn.Parameter(torch.zeros(d, d + 1))
        self.score = nn.Parameter(F.one_hot(torch.tensor(d), d + 1).float())

    def forward(self, losses: Tensor) -> Tensor:
        """``losses`` ``(B, T, d)`` → policies ``(B, T, d)``."""
        z = F.pad(losses, (0, 1), value=1.0)
        # V z_s · (wᵀ z_s): (B, T, d); summed over s < t by a shifted cumulative sum (linear attention is causal)
        contrib = (z @ self.value.T) * (z @ self.score)[..., None]
        logits = contrib.cumsum(1) - contrib
        return torch.softmax(logits, dim=-1)


# --- training ---------------------------------------------------------------------------------------------------


def agent_regret_loss(agent: nn.Module, losses: Tensor, k: float, h: str, n_per_group: int) -> tuple[Tensor, Tensor]:
    """One batch ``(G·N, T, d)``: the agent plays every sequence causally in one forward pass; returns the
    regret-loss and the per-sequence regrets ``(G·N,)``."""
    regrets = regret(agent(losses), losses)
    return regret_loss(regrets.view(-1, n_per_group), k, h), regrets


def train_agent(
    agent: nn.Module,
    sample: Callable[[int], Tensor],
    *,
    objective: str,
    n_steps: int,
    lr: float,
    n_groups: int,
    n_per_group: int,
    k: float,
    h: str = "linear",
    on_step: Callable[[int, Tensor, Tensor, nn.Module], None] | None = None,
) -> nn.Module:
    """The training loop: every step draws G groups × N fresh loss sequences from ``sample(n)``, plays them with
    the agent, and takes one Adam step on the regret-loss (``objective="regret"``) or on the supervised loss
    (``"supervised"``). ``on_step(step, loss, regrets, agent)`` sees every step (logging, divergence checks)."""
    opt = torch.optim.Adam(agent.parameters(), lr=lr)
    for step in range(1, n_steps + 1):
        losses = sample(n_groups * n_per_group)
        if objective == "regret":
            loss, regrets = agent_regret_loss(agent, losses, k, h, n_per_group)
        else:
            policy = agent(losses)
            loss, regrets = supervised_loss(policy, losses), regret(policy, losses)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if on_step is not None:
            on_step(step, loss.detach(), regrets.detach(), agent)
    return agent


# --- repeated games ------------------------------------------------------------------------------------------------


def self_play(row_agent: Callable[[Tensor], Tensor], col_agent: Callable[[Tensor], Tensor], game, horizon: int):
    """Two online learners repeat a matrix game for T rounds; each sees the expected loss vector its opponent's
    mixed strategy induces (full information): ℓ_t^row = L·π_t^col, ℓ_t^col = (1 − L)ᵀ·π_t^row. The agents are
    functions of a ``(1, t, d)`` loss history returning ``(1, t, d)`` policies (the last row is π_t).
    Returns the two strategy paths ``(T, d)``; their running means approach a Nash equilibrium if both are
    no-regret (two-player constant-sum game)."""
    d = game.loss.shape[0]
    seen_row, seen_col = torch.zeros(1, 0, d), torch.zeros(1, 0, d)
    path_row, path_col = [], []
    for _ in range(horizon):
        # π_t from ℓ_1..ℓ_{t−1}: feed the history plus a dummy round t (its loss is never looked at)
        pad = torch.zeros(1, 1, d)
        pi_row = row_agent(torch.cat([seen_row, pad], 1))[0, -1]
        pi_col = col_agent(torch.cat([seen_col, pad], 1))[0, -1]
        path_row.append(pi_row)
        path_col.append(pi_col)
        seen_row = torch.cat([seen_row, game.row_losses(pi_col)[None, None]], 1)
        seen_col = torch.cat([seen_col, game.col_losses(pi_row)[None, None]], 1)
    return torch.stack(path_row), torch.stack(path_col)
