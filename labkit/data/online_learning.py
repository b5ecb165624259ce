"""Online-learning environments: loss sequences ℓ_1..ℓ_T ∈ [0, 1]^d (full information) and repeated matrix games.

Families (each call draws ``n`` independent sequences, shape ``(n, T, d)``, from a CPU ``torch.Generator``):

- ``stochastic``: per-sequence means μ ~ U[0,1]^d, ℓ_t = clip(μ + 0.3·N(0, I), 0, 1);
- ``alternating``: two random actions i ≠ j; ℓ_1 = (i: ½, j: 0), then (i: 0, j: 1), (i: 1, j: 0), … and every other
  action ½ + 0.05·N(0, 1): Follow-The-Leader switches to the action about to lose at every round (linear regret);
- ``trend``: a linear drift from a ~ U[0,1]^d to b ~ U[0,1]^d over the horizon, + 0.1·N(0, I), clipped;
- ``sinusoidal`` (held out from training): ℓ_{t,i} = ½ + ½·sin(2π t / P + φ_i), period P ~ U[3, 8], phases U[0, 2π).

Games (loss matrices in [0, 1], the row player's loss; the column player's loss is 1 − it, a constant-sum game):
:func:`biased_rps` (rock-paper-scissors where paper over rock pays double; Nash (¼, ¼, ½)).

>>> g = torch.Generator().manual_seed(0)
>>> sample_family("alternating", 2, 6, 3, g).shape
torch.Size([2, 6, 3])
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

#: the families a model trains on (equally likely), and the held-out one it never sees
TRAIN_FAMILIES = ("stochastic", "alternating", "trend")
HELD_OUT_FAMILIES = ("sinusoidal",)
FAMILIES = TRAIN_FAMILIES + HELD_OUT_FAMILIES


def stochastic(n: int, horizon: int, d: int, gen: torch.Generator) -> torch.Tensor:
    """i.i.d. noisy losses around a per-sequence mean: ℓ_t = clip(μ + 0.3·ε_t, 0, 1), μ ~ U[0,1]^d."""
    mu = torch.rand(n, 1, d, generator=gen)
    return (mu + 0.3 * torch.randn(n, horizon, d, generator=gen)).clamp(0.0, 1.0)


def alternating(n: int, horizon: int, d: int, gen: torch.Generator) -> torch.Tensor:
    """The FTL killer on two random actions i ≠ j; the other actions hover at ½."""
    if d < 2:
        raise ValueError(f"the alternating family needs at least 2 actions, got d={d}")
    losses = (0.5 + 0.05 * torch.randn(n, horizon, d, generator=gen)).clamp(0.0, 1.0)
    perm = torch.argsort(torch.rand(n, d, generator=gen), dim=1)
    i, j = perm[:, 0], perm[:, 1]
    t = torch.arange(horizon)
    # round 1: (i: ½, j: 0); then i loses on odd rounds t = 3, 5, … and j on even rounds t = 2, 4, … (1-based)
    li = torch.where(t % 2 == 0, 1.0, 0.0)
    lj = 1.0 - li
    li[0], lj[0] = 0.5, 0.0
    rows = torch.arange(n)
    losses[rows, :, i] = li.expand(n, horizon)
    losses[rows, :, j] = lj.expand(n, horizon)
    return losses


def trend(n: int, horizon: int, d: int, gen: torch.Generator) -> torch.Tensor:
    """ℓ_t = clip(a + (b − a)·(t − 1)/(T − 1) + 0.1·ε_t, 0, 1) with a, b ~ U[0,1]^d."""
    a, b = torch.rand(n, 1, d, generator=gen), torch.rand(n, 1, d, generator=gen)
    frac = torch.linspace(0.0, 1.0, horizon).view(1, horizon, 1)
    return (a + (b - a) * frac + 0.1 * torch.randn(n, horizon, d, generator=gen)).clamp(0.0, 1.0)


def sinusoidal(n: int, horizon: int, d: int, gen: torch.Generator) -> torch.Tensor:
    """ℓ_{t,i} = ½ + ½·sin(2π t/P + φ_i): periodic losses, a family the trained model never sees."""
    period = 3.0 + 5.0 * torch.rand(n, 1, 1, generator=gen)
    phase = 2 * math.pi * torch.rand(n, 1, d, generator=gen)
    t = torch.arange(1, horizon + 1, dtype=torch.float32).view(1, horizon, 1)
    return 0.5 + 0.5 * torch.sin(2 * math.pi * t / period + phase)


_MAKERS = {"stochastic": stochastic, "alternating": alternating, "trend": trend, "sinusoidal": sinusoidal}


def sample_family(name: str, n: int, horizon: int, d: int, gen: torch.Generator) -> torch.Tensor:
    """``n`` sequences ``(n, T, d)`` of one family."""
    if name not in _MAKERS:
        raise ValueError(f"unknown family {name!r}; choose from {sorted(_MAKERS)}")
    return _MAKERS[name](n, horizon, d, gen)


def sample_mixture(
    n: int, horizon: int, d: int, gen: torch.Generator, families: tuple[str, ...] = TRAIN_FAMILIES
) -> torch.Tensor:
    """``n`` sequences, each from a family drawn uniformly from ``families``, in random order: ``(n, T, d)``."""
    which = torch.randint(len(families), (n,), generator=gen)
    out = torch.empty(n, horizon, d)
    for f, name in enumerate(families):
        idx = (which == f).nonzero().flatten()
        if len(idx):
            out[idx] = sample_family(name, len(idx), horizon, d, gen)
    return out


# --- repeated games ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MatrixGame:
    """A two-player constant-sum game: ``loss[a, b]`` ∈ [0, 1] is the row player's loss when the row player plays
    a and the column player b; the column player's loss is ``1 − loss[a, b]``. ``nash`` is each player's Nash
    strategy (the game is symmetric, so both play the same)."""

    name: str
    loss: torch.Tensor
    nash: torch.Tensor

    def row_losses(self, col_strategy: torch.Tensor) -> torch.Tensor:
        """The row player's expected loss vector against a mixed column strategy: L·π_col, ``(..., d)``."""
        return col_strategy @ self.loss.T

    def col_losses(self, row_strategy: torch.Tensor) -> torch.Tensor:
        """The column player's expected loss vector against a mixed row strategy: (1 − L)ᵀ·π_row."""
        return row_strategy @ (1.0 - self.loss)


def biased_rps() -> MatrixGame:
    """Rock-paper-scissors where paper beating rock pays double (the other wins pay 1, a tie 0).

    Row payoff A (skew-symmetric, rows/columns rock, paper, scissors); the Nash strategy p solves pᵀA = 0:
    2·p_paper = p_scissors, 2·p_rock = p_scissors, p_rock = p_paper, so p = (¼, ¼, ½): scissors, which beats the
    favoured paper, is played most. Losses L = ½ − A/4 ∈ [0, 1]."""
    # actions: 0 rock, 1 paper, 2 scissors; A[a, b] = row's payoff
    payoff = torch.tensor([[0.0, -2.0, 1.0], [2.0, 0.0, -1.0], [-1.0, 1.0, 0.0]])
    return MatrixGame("biased rock-paper-scissors", 0.5 - payoff / 4.0, torch.tensor([0.25, 0.25, 0.5]))
