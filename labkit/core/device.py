"""Device choice, seeding and thread count."""

from __future__ import annotations

import contextlib
import os
import random


def pick_device(device: str = "auto"):
    """``"auto"`` → CUDA if available, then Apple MPS, then CPU; otherwise the named device.

    An unavailable explicit choice raises ``ValueError`` instead of failing later inside torch.
    """
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"unknown device {device!r}: use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")
    if dev.type == "cuda" and dev.index is not None and torch.cuda.is_available():
        if dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but CUDA is not available here: use 'auto' or 'cpu'")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError("device 'mps' was asked for but MPS is not available here: use 'auto' or 'cpu'")
    return dev


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextlib.contextmanager
def torch_threads(n: int | None):
    """Run the block with ``n`` intra-op threads (``None`` or 0 leaves torch's setting alone).

    Tiny tensors on a 2-core CPU are often much faster on one thread than on two, so the quick
    preset of each method picks the count that measured fastest. ``LABKIT_THREADS`` overrides it.
    """
    import torch

    env = os.environ.get("LABKIT_THREADS")
    if env:
        n = int(env)
    if not n:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
