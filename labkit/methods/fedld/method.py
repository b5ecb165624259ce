"""FedLD — Tackling Data Heterogeneity in Federated Learning via Loss Decomposition.
Zeng et al., MICCAI 2024, arXiv 2408.12300 (official code: github.com/Zeng-Shuang/FedLD).

Clients i = 1..m hold n_i samples, p_i = n_i / Σ_j n_j; L_i is the loss on client i's data, L = Σ_i p_i L_i the
loss on the union; w_i are the local models after a round, w_glob the server's combination of them.

1. The decomposition (a telescoping identity, exact for any models):

       L(w_glob) = Σ_i p_i L_i(w_i)                   local
                 + Σ_i p_i (L(w_i) − L_i(w_i))        distribution shift
                 + (L(w_glob) − Σ_i p_i L(w_i))       aggregation

2. On the clients, margin control against over-confident local models (the shift term); for a batch of
   logits Z ∈ R^{B×C} and P = softmax(Z) row-wise, with the Frobenius norm over the WHOLE batch:

       ℓ = CE(Z, y) + λ · log(1 + ‖P‖_F²)

3. On the server, principal-gradient aggregation (the aggregation term), for every parameter tensor separately,
   with G ∈ R^{m×d} the stacked client updates g_i = w_i − w:

       H = G Gᵀ / m = E diag(s) Eᵀ,  s descending          v_j = Gᵀ e_j,  j ≤ k = max(1, ⌊k_proportion · m⌋)
       v_j ← −v_j  if fewer clients have g_i·v_j ≥ 0 than < 0           (majority-sign calibration)
       ĝ_i = Σ_{j≤k} sign(g_i·v_j) · (s_j / Σ_l s_l) · ‖g_i‖ · v_j/‖v_j‖
       w  ← w + (1/m) Σ_i ĝ_i                                          (round 1: the plain mean of the g_i)

The simulator's generic pieces (local SGD, stacking updates, applying a rule per tensor) are
:mod:`labkit.substrates.federated`; :func:`fedld_round` is one round of FedLD on top of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
from torch import nn
from torch.nn import functional as F

from labkit.substrates.federated import Client, LocalSGD, RoundResult, federated_round, plain_mean

#: guards ‖v_j‖ against division by zero (the official code divides by the projection's norm)
EPS = 1e-12

# ---------------------------------------------------------------- 2. margin control (the clients)


def margin_control_loss(logits: torch.Tensor, y: torch.Tensor, lam: float) -> torch.Tensor:
    """CE(Z, y) + λ·log(1 + ‖P‖_F²); ``logits`` Z: (B, C), ``y``: (B,) class indices; returns a scalar.

    This is the batch reading of the official code (``torch.norm(softmax(Z), p=2)`` on the matrix);
    ‖P‖_F² lies in [B/C, B], so the penalty's strength depends on the batch size B.
    """
    # CE(Z, y) = mean_b −log softmax(z_b)[y_b]
    ce = F.cross_entropy(logits, y)
    if lam == 0:
        return ce
    # P = softmax(Z) row-wise: (B, C)
    p = torch.softmax(logits, dim=1)
    # ℓ = CE + λ·log(1 + Σ_{b,c} P_bc²)
    return ce + lam * torch.log1p((p**2).sum())


def softmax_sq_norm(logits: torch.Tensor) -> torch.Tensor:
    """Per-sample confidence ‖p_b‖² = Σ_c softmax(z_b)_c², from 1/C (uniform) to 1 (one-hot); (B, C) → (B,)."""
    return (torch.softmax(logits, dim=1) ** 2).sum(dim=1)


# ---------------------------------------------------------------- 3. principal-gradient aggregation (the server)


def gram_spectrum(G: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """H = G Gᵀ / m = E diag(s) Eᵀ with s descending; G: (m, d) → s: (m,) clamped ≥ 0, E: (m, m)."""
    # H = G Gᵀ / m: (m, m), symmetric positive semi-definite
    H = G @ G.T / G.shape[0]
    s, E = torch.linalg.eigh(H)  # ascending
    return s.flip(0).clamp_min(0.0), E.flip(1)


def principal_directions(G: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Steps 1–2: the spectrum s (m,) of H and the first k directions v_j = Gᵀ e_j as rows of V: (k, d)."""
    s, E = gram_spectrum(G)
    # v_j = Gᵀ e_j: (d, m) @ (m, k) → (d, k), transposed to rows
    return s, (G.T @ E[:, :k]).T


def calibrate_signs(G: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
    """Step 3: flip v_j when fewer clients have g_i·v_j ≥ 0 than < 0 (the majority sign wins).
    G: (m, d), V: (k, d) → V: (k, d)."""
    # proj[i, j] = g_i · v_j: (m, k)
    proj = G @ V.T
    flip = (proj >= 0).sum(0) < (proj < 0).sum(0)
    return torch.where(flip[:, None], -V, V)


def revise_updates(G: torch.Tensor, V: torch.Tensor, shares: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Step 4: the revised updates ĝ_i as rows; G: (m, d), V: (k, d), shares s_j/Σ_l s_l: (k,) → (m, d).

    A zero projection has sign 0 and is skipped (the official code divides by the projection's norm there).
    """
    # v_j / ‖v_j‖: (k, d)
    unit = V / (V.norm(dim=1, keepdim=True) + eps)
    # coef[i, j] = sign(g_i·v_j) · (s_j/Σ_l s_l) · ‖g_i‖: (m, k)
    coef = torch.sign(G @ unit.T) * shares[None, :] * G.norm(dim=1, keepdim=True)
    # ĝ_i = Σ_j coef[i, j] · v_j/‖v_j‖
    return coef @ unit


def principal_aggregate(G: torch.Tensor, k_proportion: float = 0.8, eps: float = EPS) -> torch.Tensor:
    """FedLD's server rule for ONE tensor; G = stack of client updates g_i, shape (m, *shape) → (*shape).

    Steps 1–5 of the module docstring; tensors with one entry per client (scalars) are averaged.
    """
    m, shape = G.shape[0], G.shape[1:]
    if G[0].numel() == 1:
        return G.mean(0)
    # (m, d), in float64: the signs sign(g_i·v_j) and near-equal eigenvalues make the rule sensitive to rounding,
    # and float32 sums differ between CPU kernels (AVX2 vs AVX-512); float64 keeps the run the same on every CPU
    # (Apple's MPS has no float64: it stays in float32 there)
    flat = G.reshape(m, -1).to(torch.float32 if G.device.type == "mps" else torch.float64)
    # k = max(1, ⌊k_proportion · m⌋)
    k = max(1, int(k_proportion * m))
    s, V = principal_directions(flat, k)
    total = s.sum()
    if total <= 0:  # every client update is zero
        return torch.zeros(shape, dtype=G.dtype, device=G.device)
    V = calibrate_signs(flat, V)
    # w ← w + (1/m) Σ_i ĝ_i, with eigenvalue shares s_j / Σ_l s_l
    return revise_updates(flat, V, s[:k] / total, eps).mean(0).reshape(shape).to(G.dtype)


def fedld_server_rule(round_idx: int, k_proportion: float):
    """The server's rule for round ``round_idx`` (0-based), as ``rule(G, sizes)`` for one tensor: the plain
    mean in the first round (no history yet, as the official code), the principal aggregation afterwards."""
    if round_idx == 0:
        return plain_mean
    return lambda G, sizes: principal_aggregate(G, k_proportion)


# ---------------------------------------------------------------- the algorithm: one round


def fedld_round(
    model: nn.Module,
    clients: list[Client],
    *,
    round_idx: int,
    lam: float,
    k_proportion: float,
    opt: LocalSGD,
    generator: torch.Generator,
    worker: nn.Module | None = None,
) -> RoundResult:
    """One FedLD round, in place on the global ``model``:

    for client i: w_i = LocalSGD(w, CE + λ·log(1 + ‖softmax‖_F²)); g_i = w_i − w
    for each tensor: G = stack(g_i); update = mean(G) if round_idx == 0 else principal_aggregate(G)
    w ← w + update
    """
    # the clients' loss: margin control with weight λ
    loss_fn = partial(margin_control_loss, lam=lam)
    # the server's rule, tensor by tensor
    rule = fedld_server_rule(round_idx, k_proportion)
    return federated_round(model, clients, loss_fn, opt, rule, generator, worker)


# ---------------------------------------------------------------- 1. the decomposition


@dataclass(frozen=True)
class LossTerms:
    """The three terms of L(w_glob); ``total`` telescopes to L(w_glob) = Σ_j p_j L_j(w_glob)."""

    local: float
    shift: float
    aggregation: float

    @property
    def total(self) -> float:
        return self.local + self.shift + self.aggregation


def loss_decomposition(cross_loss: torch.Tensor, global_loss: torch.Tensor, sizes) -> LossTerms:
    """The three terms from per-client losses. ``cross_loss`` C: (m, m) with C[i, j] = L_j(w_i) (local model i on
    client j's data); ``global_loss`` g: (m,) with g[j] = L_j(w_glob); ``sizes`` n: (m,). Computed in float64."""
    C = torch.as_tensor(cross_loss).detach().cpu().double()
    g = torch.as_tensor(global_loss).detach().cpu().double()
    p = torch.as_tensor(sizes).detach().cpu().double()
    # p_i = n_i / Σ_j n_j
    p = p / p.sum()
    # L_i(w_i): (m,)
    own = torch.diagonal(C)
    # L(w_i) = Σ_j p_j L_j(w_i): (m,)
    on_union = C @ p
    return LossTerms(
        # Σ_i p_i L_i(w_i)
        local=float(p @ own),
        # Σ_i p_i (L(w_i) − L_i(w_i))
        shift=float(p @ (on_union - own)),
        # L(w_glob) − Σ_i p_i L(w_i)
        aggregation=float(p @ g - p @ on_union),
    )


def cosine(a: torch.Tensor, b: torch.Tensor, eps: float = EPS) -> float:
    """cos(a, b) = a·b / (‖a‖‖b‖) for two flat vectors (d,)."""
    return float(a @ b / (a.norm() * b.norm() + eps))
