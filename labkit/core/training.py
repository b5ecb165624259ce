"""The small training helpers every method shares: progress bars, divergence checks, loops."""
from __future__ import annotations

import math
import os
from typing import Callable, Iterable


class DivergenceError(RuntimeError):
    """A loss became NaN or infinite; the message says which series and at which step."""


def progress(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "",
             enabled: bool = True, leave: bool = False):
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
            f"the loss became {number} at step {step}{where}: the run diverged "
            "(try a smaller learning rate)"
        )
    return number


def train_steps(step_fn: Callable[[int], float], n_steps: int, *, series: str = "", log_every: int = 1,
                on_log: Callable[[int, float], None] | None = None, bar=None) -> list[float]:
    """Call ``step_fn(step)`` for ``step = 1..n_steps``; each returns the loss of that step.

    Every loss is checked for NaN/inf; every ``log_every`` steps (and the last) ``on_log(step, loss)``
    is called. ``bar`` is an optional progress bar advanced once per step. Returns the losses.
    """
    losses = []
    for step in range(1, n_steps + 1):
        loss = check_finite(step_fn(step), step, series)
        losses.append(loss)
        if on_log is not None and (step % log_every == 0 or step == n_steps):
            on_log(step, loss)
        if bar is not None:
            bar.update(1)
    return losses


def iterate_minibatches(n: int, batch_size: int, generator, drop_last: bool = False):
    """Shuffled index batches over ``range(n)`` (torch ``generator`` for reproducibility)."""
    import torch

    order = torch.randperm(n, generator=generator)
    stop = n - (n % batch_size) if drop_last else n
    for start in range(0, stop, batch_size):
        yield order[start:start + batch_size]
