"""TLOB — "TLOB: A Novel Transformer Model with Dual Attention for Stock Price Trend Prediction with Limit Order
Book Data" (Berti & Kasneci, 2025), arXiv 2502.15757.

A sample is a window X ∈ R^{T×F} of the last T order-book snapshots; the target is the mid-price trend h events
ahead (down / stationary / up, labelled in :mod:`labkit.substrates.lob`). TLOB:

    1. BiN: z-score along time and along features, each with a learnable scale and shift, mixed by two
       non-negative learnable weights                                               (B, T, F) → (B, T, F)
    2. Linear(F → D) + positional encoding over time                                (B, T, F) → (B, T, D)
    3. L pairs of blocks: a TEMPORAL block (tokens = the T time steps, width D, attention T × T), then a
       FEATURE block on the transpose (tokens = the D channels, width T, attention D × D). A block is
           a = W_0·MHA(Q, K, V) with Q, K, V = Linear(width → width·H)(x);  x = LayerNorm(x + a)
           y = W_2·GELU(W_1·x)  (width → 4·width → out);  y = GELU(LayerNorm(y + x if out = width else y))
       The last pair shrinks the widths to D/4 and T/4.
    4. Flatten (D/4 · T/4) → [Linear(n → n/4) + GELU while n > 128] → Linear(n → 3)

MLPLOB (the paper's all-MLP twin) keeps the skeleton with the attention removed: Linear(F → D) + GELU, then
feature-MLP blocks (width D) and time-MLP blocks (width T) alternate (MLP-Mixer-like); its last pair uses 2·width
hidden units and shrinks to D/4, T/4. Both train with cross-entropy and Adam; after each epoch the learning rate is
halved unless the validation loss improved by ≥ 0.002, an exponential moving average (EMA) of the weights is what
validation and test see, and the epoch with the best validation loss is kept (:func:`train_trend_model`).

Read against the official code (github.com/LeonardoBerti00/TLOB, models/tlob.py, mlplob.py, bin.py): the block
order (temporal then feature, post-LayerNorm, the MLP's residual only when shapes match) follows it. Two
differences: the official block projects Q, K, V with its own linears and then again inside
``nn.MultiheadAttention``; here there is one projection per Q, K, V. The official BiN replaces a negative mixing
weight by a new CUDA tensor inside ``forward``; here the weights are clamped at 0 (device-safe, same intent).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from labkit.substrates.lob import gather_windows

N_CLASSES = 3


# --- the blocks ----------------------------------------------------------------------------------------------


class BiN(nn.Module):
    """Bilinear normalisation (BiN-CTABL) of a window ``(B, T, F)``; a std below 1e-4 counts as 1."""

    def __init__(self, n_features: int, seq_len: int):
        super().__init__()
        self.scale_time = nn.Parameter(torch.ones(n_features))  # per feature, for the z-score along time
        self.shift_time = nn.Parameter(torch.zeros(n_features))
        self.scale_feat = nn.Parameter(torch.ones(seq_len))  # per time step, for the z-score along features
        self.shift_feat = nn.Parameter(torch.zeros(seq_len))
        self.mix = nn.Parameter(torch.full((2,), 0.5))

    @staticmethod
    def _zscore(x: Tensor, dim: int) -> Tensor:
        std = x.std(dim=dim, keepdim=True)
        return (x - x.mean(dim=dim, keepdim=True)) / torch.where(std < 1e-4, torch.ones_like(std), std)

    def forward(self, x: Tensor) -> Tensor:
        # z_time = (x − mean_t x)/std_t x, each feature over the T steps, then γ_f·z + β_f           (B, T, F)
        z_time = self._zscore(x, dim=1) * self.scale_time + self.shift_time
        # z_feat = (x − mean_f x)/std_f x, each step over the F features, then γ_t·z + β_t           (B, T, F)
        z_feat = self._zscore(x, dim=2) * self.scale_feat[:, None] + self.shift_feat[:, None]
        # BiN(x) = y_1·z_time + y_2·z_feat, with y ≥ 0
        y = self.mix.clamp(min=0.0)
        return y[0] * z_time + y[1] * z_feat


def sinusoidal_encoding(seq_len: int, dim: int) -> Tensor:
    """PE[t, 2i] = sin(t / 10000^{2i/D}), PE[t, 2i+1] = cos(t / 10000^{2i/D}), ``(T, D)``; D must be even."""
    if dim % 2:
        raise ValueError(f"a sinusoidal encoding needs an even width, got {dim}")
    t = torch.arange(seq_len, dtype=torch.float32)[:, None]
    freq = torch.pow(10_000.0, torch.arange(0, dim, 2, dtype=torch.float32) / dim)
    pe = torch.zeros(seq_len, dim)
    pe[:, 0::2], pe[:, 1::2] = torch.sin(t / freq), torch.cos(t / freq)
    return pe


class MLPBlock(nn.Module):
    """x ↦ GELU(LayerNorm(W_2·GELU(W_1·x) [+ x when out = width])) along the last axis: ``(B, N, width) → (B, N,
    out)``."""

    def __init__(self, width: int, hidden: int, out: int):
        super().__init__()
        self.fc1, self.fc2, self.norm = nn.Linear(width, hidden), nn.Linear(hidden, out), nn.LayerNorm(out)

    def forward(self, x: Tensor) -> Tensor:
        # y = W_2·GELU(W_1·x)                                                                        (B, N, out)
        y = self.fc2(F.gelu(self.fc1(x)))
        # residual only when the width is kept (the last pair shrinks it)
        if y.shape[-1] == x.shape[-1]:
            y = y + x
        return F.gelu(self.norm(y))


class AttentionBlock(nn.Module):
    """Self-attention over the tokens of ``(B, N, width)``, then an :class:`MLPBlock` to ``out``: ``(B, N, out)``
    and the attention weights ``(B, H, N, N)``."""

    def __init__(self, width: int, heads: int, out: int):
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v = (nn.Linear(width, width * heads) for _ in range(3))
        self.w0 = nn.Linear(width * heads, width)
        self.norm = nn.LayerNorm(width)
        self.mlp = MLPBlock(width, 4 * width, out)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        b, n, width = x.shape
        # Q, K, V = x·W_Q, x·W_K, x·W_V, split into H heads of size `width`                          (B, H, N, width)
        q, k, v = (lin(x).view(b, n, self.heads, width).transpose(1, 2) for lin in (self.q, self.k, self.v))
        # A = softmax(Q·Kᵀ/√width)                                                                    (B, H, N, N)
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(width), dim=-1)
        # heads concatenated and projected back: W_0·[A_1·V_1, …, A_H·V_H]                           (B, N, width)
        a = self.w0((att @ v).transpose(1, 2).reshape(b, n, self.heads * width))
        # x = LayerNorm(x + a), then the MLP sub-block                                               (B, N, out)
        return self.mlp(self.norm(x + a)), att


def classifier_head(n: int) -> nn.Sequential:
    """[Linear(n → n/4) + GELU while n > 128] → Linear(n → 3)."""
    layers: list[nn.Module] = []
    while n > 128:
        layers += [nn.Linear(n, n // 4), nn.GELU()]
        n //= 4
    return nn.Sequential(*layers, nn.Linear(n, N_CLASSES))


# --- the two models -------------------------------------------------------------------------------------------


class TLOB(nn.Module):
    """TLOB: ``(B, T, F)`` windows → ``(B, 3)`` logits. ``forward(x, keep_attention=True)`` also stores each
    block's attention weights in ``self.attention`` (temporal blocks ``(B, H, T, T)``, feature ``(B, H, D, D)``)."""

    def __init__(self, n_features: int, seq_len: int, dim: int, n_layers: int, heads: int = 1, sinusoidal=True):
        super().__init__()
        if dim % 4 or seq_len % 4:
            raise ValueError(f"TLOB's last pair shrinks by 4: dim={dim} and seq_len={seq_len} must be multiples of 4")
        self.norm = BiN(n_features, seq_len)
        self.embed = nn.Linear(n_features, dim)
        if sinusoidal:
            self.register_buffer("pos", sinusoidal_encoding(seq_len, dim))
        else:
            self.pos = nn.Parameter(0.02 * torch.randn(seq_len, dim))
        self.blocks = nn.ModuleList()
        for i in range(n_layers):
            last = i == n_layers - 1
            self.blocks.append(AttentionBlock(dim, heads, dim // 4 if last else dim))  # temporal: T tokens
            self.blocks.append(AttentionBlock(seq_len, heads, seq_len // 4 if last else seq_len))  # feature: D
        self.head = classifier_head((dim // 4) * (seq_len // 4))
        self.attention: list[Tensor] = []

    def forward(self, x: Tensor, keep_attention: bool = False) -> Tensor:
        # BiN, then Linear(F → D) + PE                                                               (B, T, D)
        z = self.embed(self.norm(x)) + self.pos
        self.attention = []
        for block in self.blocks:
            # temporal block on (B, T, D), feature block on (B, D, T); transpose after each
            z, att = block(z)
            z = z.transpose(1, 2)
            if keep_attention:
                self.attention.append(att.detach())
        # after the last pair z is (B, T/4, D/4) again: flatten and classify                        (B, 3)
        return self.head(z.flatten(1))


class MLPLOB(nn.Module):
    """MLPLOB: ``(B, T, F)`` windows → ``(B, 3)`` logits; feature-MLP (width D) and time-MLP (width T) alternate."""

    def __init__(self, n_features: int, seq_len: int, dim: int, n_layers: int):
        super().__init__()
        if dim % 4 or seq_len % 4:
            raise ValueError(f"MLPLOB's last pair shrinks by 4: dim={dim}, seq_len={seq_len} must be multiples of 4")
        self.norm = BiN(n_features, seq_len)
        self.embed = nn.Linear(n_features, dim)
        self.blocks = nn.ModuleList()
        for i in range(n_layers):
            last = i == n_layers - 1
            grow = 2 if last else 4
            self.blocks.append(MLPBlock(dim, grow * dim, dim // 4 if last else dim))  # mixes features
            self.blocks.append(MLPBlock(seq_len, grow * seq_len, seq_len // 4 if last else seq_len))  # mixes time
        self.head = classifier_head((dim // 4) * (seq_len // 4))

    def forward(self, x: Tensor) -> Tensor:
        # BiN, then GELU(Linear(F → D))                                                              (B, T, D)
        z = F.gelu(self.embed(self.norm(x)))
        for block in self.blocks:
            # (B, T, D) mixes along D, then (B, D, T) along T; transpose after each
            z = block(z).transpose(1, 2)
        return self.head(z.flatten(1))


# --- the metric -------------------------------------------------------------------------------------------------


def macro_f1(y_true, y_pred, n_classes: int = N_CLASSES) -> float:
    """Macro-F1 = (1/C)·Σ_c 2·TP_c / (2·TP_c + FP_c + FN_c), a class with an empty denominator scoring 0."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    scores = []
    for c in range(n_classes):
        tp = np.sum((y_pred == c) & (y_true == c))
        fp = np.sum((y_pred == c) & (y_true != c))
        fn = np.sum((y_pred != c) & (y_true == c))
        # F1_c = 2·TP / (2·TP + FP + FN)
        scores.append(2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) > 0 else 0.0)
    return float(np.mean(scores))


# --- training ---------------------------------------------------------------------------------------------------


class WeightEMA:
    """θ_EMA ← d·θ_EMA + (1 − d)·θ after each step (d = 0: the EMA is the current weights)."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.shadow = copy.deepcopy(model).eval()
        for p in self.shadow.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for s, p in zip(self.shadow.parameters(), model.parameters()):
            # θ_EMA = d·θ_EMA + (1 − d)·θ
            s.mul_(self.decay).add_(p.detach(), alpha=1.0 - self.decay)


@dataclass(frozen=True)
class EpochLog:
    """One epoch: the mean training loss, and the EMA model's validation loss and macro-F1."""

    epoch: int
    train_loss: float
    val_loss: float
    val_f1: float
    lr: float


@torch.no_grad()
def predict(model: nn.Module, x: Tensor, ends: np.ndarray, seq_len: int, batch: int = 512) -> Tensor:
    """Logits ``(N, 3)`` for the windows ending at ``ends``."""
    model.eval()
    out = [model(gather_windows(x, ends[i : i + batch], seq_len)) for i in range(0, len(ends), batch)]
    return torch.cat(out) if out else torch.zeros(0, N_CLASSES)


def train_trend_model(
    model: nn.Module,
    x: Tensor,
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    *,
    seq_len: int,
    epochs: int,
    lr: float,
    batch: int,
    ema_decay: float,
    seed: int,
    on_step: Callable[[int, Tensor], None] | None = None,
    on_epoch: Callable[[EpochLog, nn.Module], None] | None = None,
) -> tuple[nn.Module, list[EpochLog]]:
    """Cross-entropy training with Adam (ε = 1e-8) on the windows ``train = (ends, labels)`` of the features
    ``x (n, F)``. Training windows are shuffled among themselves only (each lies inside the training split).
    After each epoch the EMA weights are scored on ``val``; the lr is halved unless the validation loss improved by
    ≥ 0.002; the EMA weights of the best validation epoch are returned (the test split is never looked at)."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr, eps=1e-8)
    ema = WeightEMA(model, ema_decay)
    y_train, y_val = torch.as_tensor(train[1]), torch.as_tensor(val[1])
    best, best_loss, logs, step = copy.deepcopy(ema.shadow), math.inf, [], 0
    for epoch in range(1, epochs + 1):
        model.train()
        order = torch.randperm(len(train[0]), generator=gen).numpy()
        total = 0.0
        for i in range(0, len(order), batch):
            idx = order[i : i + batch]
            logits = model(gather_windows(x, train[0][idx], seq_len))
            # L = −(1/B)·Σ log softmax(logits)[y]
            loss = F.cross_entropy(logits, y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            ema.update(model)
            step += 1
            if on_step is not None:
                on_step(step, loss.detach())
            total += float(loss.detach()) * len(idx)
        logits = predict(ema.shadow, x, val[0], seq_len)
        val_loss = float(F.cross_entropy(logits, y_val)) if len(y_val) else math.inf
        log = EpochLog(
            epoch, total / len(order), val_loss, macro_f1(val[1], logits.argmax(-1).numpy()), opt.param_groups[0]["lr"]
        )
        logs.append(log)
        if on_epoch is not None:
            on_epoch(log, model)
        # halve the lr unless the validation loss improved by at least 0.002
        if val_loss - best_loss > -0.002:
            for group in opt.param_groups:
                group["lr"] /= 2
        if val_loss < best_loss:
            best_loss, best = val_loss, copy.deepcopy(ema.shadow)
    return best, logs
