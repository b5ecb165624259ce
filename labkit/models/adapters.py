"""Parameter-efficient adapters, written out for teaching: LoRA and DoRA on a frozen linear layer.

A frozen linear map ``y = W x + b`` with ``W (d_out, d_in)`` gets a trainable low-rank addition:

    LoRA (Hu et al. 2021):   y = W x + b + (α/r) · B A · Dropout(x),   A (r, d_in) random, B (d_out, r) zeros
    DoRA (Liu et al. 2024):  y = m ⊙ (W + (α/r) B A) x / ‖W + (α/r) B A‖_row + b,   m (d_out,) = ‖W‖_row at init

(PEFT's conventions: Kaiming-uniform A, zero B, DoRA's row norm detached from the graph, dropout on the adapter's
input only.) ``alpha=None`` means no α/r factor (scale 1), as ALLoRA uses it. :func:`inject_lora` swaps named
``nn.Linear`` modules of any model for :class:`LoRALinear` wrappers and freezes everything else.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable

import torch
from torch import nn


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus a trainable low-rank update ``(α/r)·B A`` (``use_dora=True``: DoRA).

    >>> layer = LoRALinear(nn.Linear(6, 4), r=2, alpha=4)
    >>> layer(torch.ones(3, 6)).shape, layer.lora_A.shape, layer.lora_B.shape
    (torch.Size([3, 4]), torch.Size([2, 6]), torch.Size([4, 2]))
    """

    def __init__(
        self,
        base: nn.Linear,
        r: int,
        alpha: float | None = None,
        dropout: float = 0.0,
        use_dora: bool = False,
    ):
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise TypeError(f"LoRALinear wraps an nn.Linear, got {type(base).__name__}")
        if r < 1:
            raise ValueError(f"rank r must be ≥ 1, got {r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)
        d_out, d_in = base.weight.shape
        self.r = r
        # the fixed scale s = α/r (1 when alpha is None: no scale factor)
        self.scaling = 1.0 if alpha is None else alpha / r
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        factory = {"device": base.weight.device, "dtype": base.weight.dtype}
        # A (r, d_in): Kaiming-uniform as nn.Linear's default; B (d_out, r): zeros, so B A = 0 at the start
        self.lora_A = nn.Parameter(torch.empty(r, d_in, **factory))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.lora_B = nn.Parameter(torch.zeros(d_out, r, **factory))
        self.use_dora = use_dora
        if use_dora:
            # m (d_out,) = ‖W‖ per output row, so that W' = W at the start
            self.magnitude = nn.Parameter(base.weight.detach().norm(dim=1).clone())

    def delta_weight(self) -> torch.Tensor:
        """ΔW = (α/r) · B A, shape ``(d_out, d_in)``."""
        return self.scaling * self.lora_B @ self.lora_A

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)  # W x + b   (..., d_out)
        x_d = self.dropout(x)
        # (α/r) · B A x   (..., d_out)
        lora = self.scaling * (x_d @ self.lora_A.T) @ self.lora_B.T
        if not self.use_dora:
            return y + lora
        # DoRA: s = m / ‖W + ΔW‖_row (norm detached); y' = b + s ⊙ (W x + ΔW x) = y + (s − 1) W x + s ΔW x
        row_norm = (self.base.weight + self.delta_weight()).norm(dim=1).detach()
        s = self.magnitude / row_norm
        return y + (s - 1) * (x_d @ self.base.weight.T) + s * lora

    def extra_repr(self) -> str:
        return f"r={self.r}, scaling={self.scaling:g}, dora={self.use_dora}"


def inject_lora(
    model: nn.Module,
    targets: str | Iterable[str],
    r: int,
    alpha: float | None = None,
    dropout: float = 0.0,
    use_dora: bool = False,
) -> list[LoRALinear]:
    """Replace every ``nn.Linear`` whose qualified name matches ``targets`` (regexes, full match) with a
    :class:`LoRALinear`; freeze all other parameters. Returns the new layers in module order.

    >>> net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
    >>> [type(m).__name__ for m in inject_lora(net, r"\\d+", r=2)]
    ['LoRALinear', 'LoRALinear']
    """
    patterns = [re.compile(t) for t in ([targets] if isinstance(targets, str) else targets)]
    for p in model.parameters():
        p.requires_grad_(False)
    chosen = [
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and any(p.fullmatch(name) for p in patterns)
    ]
    if not chosen:
        raise ValueError(f"no nn.Linear in the model matches {[p.pattern for p in patterns]}")
    layers = []
    for name in chosen:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        layer = LoRALinear(getattr(parent, child), r=r, alpha=alpha, dropout=dropout, use_dora=use_dora)
        setattr(parent, child, layer)
        layers.append(layer)
    return layers


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
