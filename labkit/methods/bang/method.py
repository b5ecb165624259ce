"""BANG — Spurious Feature Diversification Improves Out-of-distribution Generalization (arXiv 2309.17230).

θ_0 pre-trained weights, θ_ft the weights after fine-tuning θ_0 on in-distribution (ID) data, f_θ(x) ∈ R^C logits.

    WiSE-FT (weight-space ensemble):   θ_α = (1 − α) θ_0 + α θ_ft,         ŷ = argmax_c f_{θ_α}(x)_c
    output-space ensemble (OSE):       p_α = (1 − α) softmax f_{θ_0}(x) + α softmax f_{θ_ft}(x)
    FalseFalseTrue rate:               (1/N) Σ_n 1[θ_0 wrong] 1[θ_ft wrong] 1[θ_α right]

The paper's explanation of WiSE-FT's robustness out of distribution (OOD): θ_0 and θ_ft lean on *different*
spurious features; the average uses more of them, each with a smaller weight, so no single broken cue flips the
prediction ("spurious feature diversification"), and through the network's nonlinearity it does so better than
an output ensemble. An over-confident θ_ft dominates the average; BANG (BAlaNced averaGing) fine-tunes with
over-confidence reduction, then averages as WiSE-FT does:

    label smoothing:   t = (1 − ε) onehot(y) + ε / C
    MixUp:             λ ~ Beta(a, a),  x̃_i = λ x_i + (1 − λ) x_j,  t̃_i = λ t_i + (1 − λ) t_j   (j = perm(i))
    loss:              −(1/B) Σ_b Σ_c t̃_bc log softmax(f(x̃_b))_c

Calibration: ECE = Σ_bins (n_b / N) |acc_b − conf_b| with conf = max_c p_c.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from labkit.core import check_finite, iterate_minibatches

#: classes of the digits
N_CLASSES = 10
#: equal-width confidence bins of the ECE
N_BINS = 15


# --- the weight-space and output-space ensembles ----------------------------------------------------------------


def interpolate_weights(theta_0: dict, theta_1: dict, alpha: float) -> dict:
    """WiSE-FT: θ_α[k] = (1 − α) θ_0[k] + α θ_1[k] for EVERY floating entry of the state dicts (weights, biases,
    the head; float buffers too). Non-float buffers (e.g. a BatchNorm step counter) are taken from θ_1."""
    if set(theta_0) != set(theta_1):
        raise ValueError(f"the state dicts differ: {sorted(set(theta_0) ^ set(theta_1))}")
    # θ_α[k] = (1 − α) θ_0[k] + α θ_1[k], each entry keeps its own shape
    return {
        k: (1 - alpha) * theta_0[k] + alpha * theta_1[k] if theta_0[k].is_floating_point() else theta_1[k]
        for k in theta_0
    }


def output_ensemble(logits_0: torch.Tensor, logits_1: torch.Tensor, alpha: float) -> torch.Tensor:
    """Output-space ensemble of logits (N, C) and (N, C): probabilities (N, C), rows sum to 1."""
    # p = (1 − α) softmax(z_0) + α softmax(z_1)
    return (1 - alpha) * torch.softmax(logits_0, -1) + alpha * torch.softmax(logits_1, -1)


def false_false_true(correct_0: torch.Tensor, correct_1: torch.Tensor, correct_avg: torch.Tensor) -> float:
    """FalseFalseTrue rate from three (N,) boolean "right" masks."""
    # (1/N) Σ_n 1[θ_0 wrong] · 1[θ_ft wrong] · 1[θ_α right]
    return float((~correct_0 & ~correct_1 & correct_avg).float().mean())


def smooth_targets(y: torch.Tensor, n_classes: int, eps: float) -> torch.Tensor:
    """Label smoothing of labels y: (B,) → targets (B, C)."""
    # t = (1 − ε) onehot(y) + ε / C
    return (1 - eps) * F.one_hot(y, n_classes).float() + eps / n_classes


def mixup(x: torch.Tensor, targets: torch.Tensor, lam: float, perm: torch.Tensor):
    """MixUp with partner j = perm[i]; x: (B, …), targets: (B, C), perm: (B,)."""
    # x̃_i = λ x_i + (1 − λ) x_j,  t̃_i = λ t_i + (1 − λ) t_j
    return lam * x + (1 - lam) * x[perm], lam * targets + (1 - lam) * targets[perm]


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Soft-target cross-entropy of logits (B, C) against targets (B, C)."""
    # −(1/B) Σ_b Σ_c t_bc log softmax(z_b)_c
    return -(targets * torch.log_softmax(logits, -1)).sum(-1).mean()


def bang_loss(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    mixup_a: float,
    rng: np.random.Generator,
    gen: torch.Generator,
) -> torch.Tensor:
    """One BANG fine-tuning loss: λ ~ Beta(a, a) (``rng``) and partners perm (``gen``) → mix the batch →
    smooth the mixed targets (ε) → soft CE. ``eps = 0, mixup_a = 0`` is plain cross-entropy."""
    targets = smooth_targets(y, N_CLASSES, eps)
    if mixup_a > 0:
        lam = float(rng.beta(mixup_a, mixup_a))
        x, targets = mixup(x, targets, lam, torch.randperm(len(y), generator=gen).to(x.device))
    return soft_cross_entropy(model(x), targets)


def expected_calibration_error(probs: torch.Tensor, y: torch.Tensor, n_bins: int = N_BINS) -> float:
    """ECE = Σ_b (n_b / N) |acc_b − conf_b| over ``n_bins`` equal-width bins [k/B, (k+1)/B) of the confidence
    conf = max_c p_c (1.0 goes to the last bin); acc_b and conf_b are the bin's accuracy and mean confidence."""
    conf, pred = probs.max(-1)
    correct = (pred == y).float()
    bins = torch.clamp((conf * n_bins).floor().long(), max=n_bins - 1)
    count = torch.bincount(bins, minlength=n_bins).float()
    gap = torch.bincount(bins, weights=correct - conf, minlength=n_bins).abs()  # n_b |acc_b − conf_b|
    return float(gap.sum() / count.sum())


def mean_confidence(probs: torch.Tensor) -> float:
    """Mean max-probability (1/N) Σ_n max_c p_nc."""
    return float(probs.max(-1).values.mean())


def head_keys(model: nn.Module) -> list[str]:
    """State-dict keys of the model's last ``nn.Linear`` (its weight and bias)."""
    name = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)][-1]
    return [f"{name}.weight", f"{name}.bias"]


def scale_head(theta: dict, keys: list[str], s: float) -> dict:
    """Post-hoc confidence balancing (inferred from the paper's description, not its code): the head's weight
    and bias ×s, so every logit is ×s (temperature 1/s) and the argmax is unchanged."""
    return {k: v * s if k in keys else v for k, v in theta.items()}


def weight_mass(first_weight: torch.Tensor, groups: dict[str, np.ndarray]) -> dict[str, float]:
    """Share of the first layer's squared weight on each input group g: Σ_{i∈g} ‖W[:, i]‖² / Σ_i ‖W[:, i]‖²."""
    col = (first_weight.detach().float() ** 2).sum(0).cpu().numpy()
    return {g: float(col[idx].sum() / col.sum()) for g, idx in groups.items()}


# --- the algorithm: fine-tune θ_0 (plain, or BANG's tempered loss), then average --------------------------------


def fine_tune(
    model: nn.Module,
    X: torch.Tensor,
    y: torch.Tensor,
    *,
    epochs: int,
    lr: float,
    weight_decay: float,
    batch_size: int,
    eps: float,
    mixup_a: float,
    stream: int,
    series: str = "",
    on_epoch: Callable[[int], None] | None = None,
) -> nn.Module:
    """AdamW on (X, y) for ``epochs`` epochs with the BANG loss (``eps = mixup_a = 0``: plain cross-entropy).

    Batch order, MixUp partners and λ come from generators seeded by ``stream`` only, so two recipes given the same
    stream see the same batches. ``on_epoch(epoch)`` runs after each epoch (logging); a non-finite loss raises
    ``DivergenceError`` naming the step and ``series``."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    order, mix_gen = torch.Generator().manual_seed(stream), torch.Generator().manual_seed(stream + 1)
    rng = np.random.default_rng(stream + 2)
    step = 0
    for epoch in range(1, epochs + 1):
        model.train()
        for idx in iterate_minibatches(len(y), batch_size, order):
            step += 1
            idx = idx.to(X.device)
            loss = bang_loss(model, X[idx], y[idx], eps, mixup_a, rng, mix_gen)
            check_finite(loss.detach(), step, series)
            opt.zero_grad()
            loss.backward()
            opt.step()
        if on_epoch is not None:
            on_epoch(epoch)
    return model


def wise_ft(model: nn.Module, theta_0: dict, theta_ft: dict, alpha: float) -> nn.Module:
    """Load θ_α = (1 − α) θ_0 + α θ_ft into ``model`` (same architecture) and return it: the weight average."""
    model.load_state_dict(interpolate_weights(theta_0, theta_ft, alpha))
    return model
