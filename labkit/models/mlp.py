"""A plain multi-layer perceptron, optionally with BatchNorm."""

from __future__ import annotations

from torch import nn


class MLP(nn.Sequential):
    """``in_dim → hidden[0] → … → hidden[-1] → out_dim`` with ReLU (and BatchNorm if ``batch_norm``).

    >>> MLP(4, [8, 8], 2)(torch.zeros(3, 4)).shape
    torch.Size([3, 2])
    """

    def __init__(self, in_dim: int, hidden: list[int] | tuple[int, ...], out_dim: int, batch_norm: bool = False):
        layers: list[nn.Module] = []
        width = in_dim
        for h in hidden:
            layers.append(nn.Linear(width, h))
            if batch_norm:
                layers.append(nn.BatchNorm1d(h))
            layers.append(nn.ReLU())
            width = h
        layers.append(nn.Linear(width, out_dim))
        super().__init__(*layers)
