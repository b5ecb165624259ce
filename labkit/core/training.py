"""The small training helpers every method shares: progress bars, divergence checks, loops."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable


class DivergenceError(RuntimeError):
    """A loss became NaN or infinite, or the weights grew past :data:`WEIGHT_LIMIT`; the message says which
    series and at which step. The run stops there and nothing is recorded (see the README, "Divergence")."""


#: |weight| beyond this is a diverged run even if every loss is still finite: float32 keeps ~7 digits, so at
#: 1e6 a step of 0.05 (a typical learning rate) rounds away, and log-softmax/sigmoid losses saturate into a
#: finite but meaningless number (DPO's loss at 1e12 logits is 0, not NaN). Sane runs here stay below ~1e3.
WEIGHT_LIMIT = 1e6


def progress(
    iterable: Iterable | None = None,
    *,
    total: int | None = None,
    desc: str = "",
    enabled: bool = True,
    leave: bool = False,
):
    """A ``tqdm.auto`` bar (a widget in Jupyter, text in a terminal). Off when ``enabled`` is False
    or ``LABKIT_PROGRESS=0`` (batch runs that log to files)."""
    from tqdm.auto import tqdm

    off = not enabled or os.environ.get("LABKIT_PROGRESS", "1") == "0"
    return tqdm(iterable, total=total, desc=desc, disable=off, leave=leave, mininterval=0.5)


def check_finite(value, step: int, series: str = "") -> float:
    """Return ``float(value)``; raise ``DivergenceError`` naming the step when it is NaN/inf."""
    number = float(value.detach() if hasattr(value, "detach") else value)
    if not math.isfinite(number):
        where = f" in {series!r}" if series else ""
        raise DivergenceError(
            f"the loss became {number} at step {step}{where}: the run diverged (try a smaller learning rate)"
        )
    return number


def check_weights(modules, step: int, series: str = "", limit: float = WEIGHT_LIMIT) -> float:
    """Largest |weight| over ``modules`` (an ``nn.Module``, a tensor, or an iterable of either); raise
    ``DivergenceError`` naming the step when a weight is NaN/inf or larger than ``limit``. One device sync."""
    import torch

    if isinstance(modules, (torch.Tensor, torch.nn.Module)):
        modules = [modules]
    tensors = []
    for m in modules:
        tensors.extend([m] if isinstance(m, torch.Tensor) else [p for p in m.parameters()])
    if not tensors:
        return 0.0
    with torch.no_grad():
        largest = float(torch.stack([t.detach().abs().max() for t in tensors if t.numel()]).max())
    if not math.isfinite(largest) or largest > limit:
        where = f" in {series!r}" if series else ""
        raise DivergenceError(
            f"the weights became {largest:.3g} at step {step}{where} (limit {limit:g}): "
            "the run diverged (try a smaller learning rate)"
        )
    return largest


def check_arms(losses, step: int, names, weights=(), limit: float = WEIGHT_LIMIT) -> None:
    """Arms trained as one batch: ``losses`` and every tensor in ``weights`` have the arm first, ``(A, ...)``, and
    ``names`` has the A labels. With one device sync, raise ``DivergenceError`` naming the first arm whose loss is
    NaN/inf or whose weights are NaN/inf or beyond ``limit`` (see :func:`check_weights`)."""
    import torch

    n = len(names)
    with torch.no_grad():
        loss = losses.detach().reshape(n, -1).sum(1)  # (A,)
        largest = [w.detach().abs().reshape(n, -1).amax(1) for w in weights]  # (A,) each
        worst = torch.stack(largest).amax(0) if largest else torch.zeros_like(loss)
        rows = torch.stack([loss, worst.to(loss.dtype)]).tolist()
    for name, arm_loss, arm_weight in zip(names, *rows):
        check_finite(arm_loss, step, name)
        if not math.isfinite(arm_weight) or arm_weight > limit:
            raise DivergenceError(
                f"the weights became {arm_weight:.3g} at step {step} in {name!r} (limit {limit:g}): "
                "the run diverged (try a smaller learning rate)"
            )


def iterate_minibatches(n: int, batch_size: int, generator, drop_last: bool = False):
    """Shuffled index batches over ``range(n)`` (torch ``generator`` for reproducibility)."""
    import torch

    order = torch.randperm(n, generator=generator)
    stop = n - (n % batch_size) if drop_last else n
    for start in range(0, stop, batch_size):
        yield order[start : start + batch_size]


def endless_minibatches(n: int, batch_size: int, generator):
    """Index batches forever: a fresh shuffle of ``range(n)`` each epoch (``generator``), the last short batch
    dropped; for step-budgeted loops (``next(batches)`` once per step)."""
    import torch

    while True:
        order = torch.randperm(n, generator=generator)
        for start in range(0, n - batch_size + 1, batch_size):
            yield order[start : start + batch_size]


def accuracy(model, x, y, batch_size: int = 4096) -> float:
    """Share of rows of ``x`` whose arg-max prediction equals ``y`` (eval mode, no grad, in batches).

    ``model(x)`` returns logits ``(N, C)``; ``y`` holds class indices ``(N,)``. The model's train/eval mode
    is restored afterwards. The one accuracy helper of the kit: methods and substrates call this."""
    import torch

    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            logits = model(x[start : start + batch_size])
            correct += int((logits.argmax(-1) == y[start : start + batch_size]).sum())
    if was_training:
        model.train()
    return correct / max(1, len(x))
