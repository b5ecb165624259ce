"""EnsLoss — Stochastic Calibrated Loss Ensembles for Preventing Overfitting in Classification (arXiv 2409.00908).

Labels y ∈ {−1, +1}, a score f(x), the margin z = y·f(x). A margin loss φ is trained by SGD on

    L(θ) = (1/B) Σ_b φ(z_b),        ∇L = (1/B) Σ_b φ'(z_b) ∇z_b,

so SGD only ever needs the derivatives φ'(z_b) at the batch's margins. For a convex φ:

    convex        ⇔  φ' non-decreasing in z
    calibrated    ⇔  φ'(0) < 0           (minimising φ also minimises the 0-1 error)
    bounded below ⇐  φ'(z) → 0 fast enough as z → ∞

EnsLoss draws those derivatives at random at every step, under exactly these conditions (official code, Box-Cox
λ = 0 by default):

    ξ_b ~ N(0, 1),   u_b = −BCinv_λ(ξ_b),   BCinv_0(ξ) = e^ξ,   BCinv_λ(ξ) = max(1 + λξ, 0)^{1/λ}
    u ← clip(sort(u), min = −1)                            (ascending: most negative first)
    g[rank_k(z)] = u_k                                      (k-th smallest u to the k-th smallest margin)
    g_b ← g_b / z_b where z_b > 1;   g ← g − 10⁻⁶         (vanishing tail; strictly negative)
    J = (1/B) Σ_b stopgrad(g_b) · z_b,   ∇J = (1/B) Σ_b g_b ∇z_b

A fresh random calibrated convex loss per step ("doubly stochastic" gradient: random batch and random loss), an
ensemble of losses in one run, as Dropout is an ensemble of networks. The baselines are fixed margin losses
(logistic/BCE, hinge, exponential, focal) on the same network, data, batches and schedule.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from labkit.core import iterate_minibatches

#: subtracted from every drawn derivative so that φ'(z) < 0 everywhere, φ'(0) included (the official code's 1e-6)
TAIL_EPS = 1e-6
#: the key of the EnsLoss arm; every other arm is a key of FIXED_LOSSES
ENSLOSS = "ensloss"


# --- the fixed margin losses (baselines), all means over the batch of margins z: (B,) ----------------------------


def bce_margin_loss(margins: torch.Tensor) -> torch.Tensor:
    """Logistic loss; equals BCE-with-logits for targets t = (y + 1)/2."""
    # φ(z) = log(1 + e^{−z}) = softplus(−z)
    return F.softplus(-margins).mean()


def hinge_loss(margins: torch.Tensor) -> torch.Tensor:
    """Hinge loss."""
    # φ(z) = max(0, 1 − z)
    return torch.relu(1.0 - margins).mean()


def exponential_loss(margins: torch.Tensor) -> torch.Tensor:
    """Exponential loss (AdaBoost's); its gradient grows without bound for negative margins."""
    # φ(z) = e^{−z}
    return torch.exp(-margins).mean()


def focal_loss(margins: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """Binary focal loss without α, with p_t = σ(z)."""
    # φ(z) = −(1 − p_t)^γ log p_t = σ(−z)^γ · softplus(−z)
    return (torch.sigmoid(-margins) ** gamma * F.softplus(-margins)).mean()


FIXED_LOSSES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "bce": bce_margin_loss,
    "hinge": hinge_loss,
    "exponential": exponential_loss,
    "focal": focal_loss,
}


# --- EnsLoss: random calibrated convex derivatives ------------------------------------------------------------


def boxcox_inverse(xi: torch.Tensor, lam: float) -> torch.Tensor:
    """Inverse Box-Cox transform, elementwise on ξ: (B,) → (B,)."""
    if lam == 0.0:
        # BCinv_0(ξ) = e^ξ
        return torch.exp(xi)
    # BCinv_λ(ξ) = max(1 + λξ, 0)^{1/λ}
    return torch.clamp(1.0 + lam * xi, min=0.0) ** (1.0 / lam)


def ensloss_derivatives(
    margins: torch.Tensor, generator: torch.Generator, boxcox_lambda: float = 0.0, clip: float = -1.0
) -> torch.Tensor:
    """One random calibrated convex loss derivative g_b = φ'(z_b) per sample, detached.

    ``margins`` z: (B,); the normal draws come from ``generator``. Returns g: (B,), with g < 0 and g
    non-decreasing in z, i.e. the derivatives of a convex, calibrated φ on this batch."""
    z = margins.detach()
    # ξ_b ~ N(0, 1): (B,)
    xi = torch.randn(z.shape[0], generator=generator, device=generator.device).to(z.device, z.dtype)
    # u = clip(sort(−BCinv_λ(ξ)), min = clip): (B,), ascending
    u = torch.sort(-boxcox_inverse(xi, boxcox_lambda)).values.clamp(min=clip)
    # g[rank_k(z)] = u_k: the k-th smallest derivative goes to the k-th smallest margin (convexity)
    g = torch.empty_like(z)
    g[torch.argsort(z)] = u
    # g_b ← g_b / z_b where z_b > 1 (the tail vanishes: φ bounded below)
    g = torch.where(z > 1.0, g / z.clamp(min=1.0), g)
    # g ← g − 10⁻⁶ (strictly negative: φ'(0) < 0, calibrated)
    return g - TAIL_EPS


def ensloss_surrogate(margins: torch.Tensor, derivatives: torch.Tensor) -> torch.Tensor:
    """The surrogate whose gradient is the EnsLoss gradient; ``margins`` and ``derivatives``: (B,)."""
    # J = (1/B) Σ_b stopgrad(g_b) · z_b,  so  ∇J = (1/B) Σ_b g_b ∇z_b
    return (derivatives.detach() * margins).mean()


def implied_loss(z_sorted: np.ndarray, g_sorted: np.ndarray) -> np.ndarray:
    """The loss one draw implies on its batch (z ascending, g its derivatives), anchored at φ(z_max) = 0."""
    # φ(z) = ∫_z^{z_max} −g(t) dt, by the trapezoid rule between consecutive margins
    steps = 0.5 * (g_sorted[1:] + g_sorted[:-1]) * np.diff(z_sorted)
    from_left = np.concatenate([[0.0], np.cumsum(steps)])  # ∫_{z_min}^{z} g
    return -(from_left[-1] - from_left)


def margin_objective(
    loss: str, margins: torch.Tensor, draws: torch.Generator, *, boxcox_lambda: float, clip: float
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The training objective of ``loss`` (``ENSLOSS`` or a key of ``FIXED_LOSSES``) on margins (B,), and the
    EnsLoss derivatives it drew (None for a fixed loss)."""
    if loss == ENSLOSS:
        g = ensloss_derivatives(margins, draws, boxcox_lambda, clip)
        return ensloss_surrogate(margins, g), g
    return FIXED_LOSSES[loss](margins), None


# --- the algorithm: one epoch of doubly stochastic SGD --------------------------------------------------------


@dataclass
class EpochStats:
    """What one epoch did: steps taken, running train accuracy (NaN if no step), whether a non-finite objective
    stopped it, and the first batch's margins and EnsLoss derivatives (None for a fixed loss)."""

    steps: int
    train_acc: float
    diverged: bool
    first_draw: tuple[np.ndarray, np.ndarray] | None


def sgd_epoch(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    X: torch.Tensor,
    y: torch.Tensor,
    *,
    loss: str,
    batch_size: int,
    order: torch.Generator,
    draws: torch.Generator,
    boxcox_lambda: float = 0.0,
    clip: float = -1.0,
) -> EpochStats:
    """One pass over (X, y ∈ {0, 1}) in shuffled batches (``order``; last incomplete batch dropped, BatchNorm
    needs B > 1). For EnsLoss each step draws a new loss (``draws``): random batch × random loss. A non-finite
    objective stops the epoch before its update (the weights stay those of the last good step)."""
    model.train()
    correct, seen, steps, first = torch.zeros((), device=X.device), 0, 0, None
    for idx in iterate_minibatches(len(y), batch_size, order, drop_last=True):
        idx = idx.to(X.device)
        # z_b = y_b · f(x_b) with y_b = 2t_b − 1 ∈ {−1, +1}: (B,)
        margins = (2.0 * y[idx] - 1.0) * model(X[idx]).squeeze(-1)
        objective, g = margin_objective(loss, margins, draws, boxcox_lambda=boxcox_lambda, clip=clip)
        if first is None and g is not None:
            first = (margins.detach().cpu().numpy(), g.cpu().numpy())
        if not torch.isfinite(objective.detach()):
            return EpochStats(steps, float(correct) / seen if seen else float("nan"), True, first)
        opt.zero_grad()
        objective.backward()
        opt.step()
        steps += 1
        correct += (margins.detach() > 0).sum()
        seen += len(idx)
    return EpochStats(steps, float(correct) / seen if seen else float("nan"), False, first)
