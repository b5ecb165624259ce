"""28 · ALLoRA — arXiv 2410.09692 (Huang & Balestriero, 2024): Adaptive Learning Rate Mitigates LoRA Fatal Flaws.

A frozen linear map ``y = W x + b`` (``W (d_out, d_in)``) is fine-tuned through a low-rank addition
(:class:`labkit.models.adapters.LoRALinear`, PEFT's conventions):

    LoRA:    y = W x + b + (α/r) · B A · Dropout_p(x),    A (r, d_in) Kaiming-uniform,  B (d_out, r) = 0

The paper names three flaws of that recipe in *short* fine-tuning runs: dropout only regularises in the long run;
B = 0 makes the first steps slow (A and B must grow each other out of zero); the fixed α/r couples the effective
step sizes of different layers short-sightedly. ALLoRA drops dropout and α/r,

    ALLoRA:  y = W x + b + B A x

and gives every LoRA parameter vector θ its own learning rate, large while θ is small, shrinking like 1/‖θ‖:

    c(θ) = 1 / sqrt(‖θ‖₂² + 1/η²)          (= η at θ = 0,  ≈ 1/‖θ‖ once ‖θ‖ ≫ 1/η)
    θ ← θ − lr · c(θ) · u(θ)               u: the optimiser's step direction (SGD: the gradient; Adam: m̂/(√v̂+ε))

Inferred here (no official code was found; see the notebook): θ is one **row** of A or of B (``grouping="row"``;
``"matrix"`` takes the whole matrix); the paper's "per-sample" scaling equals scaling the mini-batch gradient
because c depends on θ only; η is the one hyper-parameter left (the name is ours). The multiplier scales the
optimiser's *step*, not the raw gradient: Adam divides any slowly varying per-coordinate gradient scale away.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from labkit.core.training import endless_minibatches
from labkit.models.adapters import LoRALinear, inject_lora

GROUPINGS = ("row", "matrix")


# --- the adapter: no dropout, no α/r -------------------------------------------------------------------------


def inject_allora(model: nn.Module, targets: str | Iterable[str], r: int) -> list[LoRALinear]:
    """ALLoRA's adapter on every matching ``nn.Linear``: ``y = W x + b + B A x`` (scale 1, no dropout)."""
    # alpha=None: no α/r factor; dropout=0: the adapter sees x itself
    return inject_lora(model, targets, r=r, alpha=None, dropout=0.0)


def lora_factors(layers: Sequence[LoRALinear]) -> list[Tensor]:
    """The tensors ALLoRA rescales: ``A (r, d_in)`` and ``B (d_out, r)`` of every layer (DoRA's m is not one)."""
    return [t for layer in layers for t in (layer.lora_A, layer.lora_B)]


# --- the adaptive learning rate ------------------------------------------------------------------------------


def allora_multiplier(theta: Tensor, eta: float, grouping: str = "row") -> Tensor:
    """c(θ) for each parameter vector of a 2-D ``theta (n, m)``: shape ``(n, 1)`` per row, ``(1, 1)`` per matrix,
    so that ``c * step`` broadcasts over ``theta``."""
    if grouping not in GROUPINGS:
        raise ValueError(f"grouping={grouping!r}: expected one of {GROUPINGS}")
    # ‖θ‖₂² per row of theta (n, 1), or of the whole matrix (1, 1)
    sq_norm = theta.pow(2).sum(dim=1, keepdim=True)
    if grouping == "matrix":
        sq_norm = sq_norm.sum(dim=0, keepdim=True)
    # c(θ) = 1 / sqrt(‖θ‖² + 1/η²)
    return torch.rsqrt(sq_norm + 1.0 / eta**2)


@torch.no_grad()
def allora_step(optimizer: torch.optim.Optimizer, factors: Sequence[Tensor], eta: float, grouping: str = "row"):
    """One ALLoRA update: let ``optimizer`` take its plain step, then rescale the step of each tensor in
    ``factors`` by c(θ) of its value *before* the step. Parameters not in ``factors`` keep the plain step.

    Equivalent to ``θ ← θ − lr·c(θ)·u(θ)`` for any optimiser whose step is ``−lr·u`` (SGD, Adam, ...). The
    optimiser's own state (Adam's moments) is left untouched: only where θ lands is changed."""
    before = [theta.detach().clone() for theta in factors]
    optimizer.step()
    for theta, old in zip(factors, before):
        # the optimiser's step: θ_opt − θ = −lr·u(θ)
        step = theta - old
        # θ ← θ − lr·c(θ)·u(θ), c from θ before the step
        theta.copy_(old + allora_multiplier(old, eta, grouping) * step)


# --- the short fine-tuning loop ------------------------------------------------------------------------------


def finetune(
    model: nn.Module,
    layers: Sequence[LoRALinear],
    x: Tensor,
    y: Tensor,
    *,
    n_steps: int,
    lr: float,
    batch_size: int,
    generator: torch.Generator,
    eta: float | None = None,
    grouping: str = "row",
    log_steps: Iterable[int] = (),
    on_step: Callable[[int, Tensor], None] | None = None,
    on_log: Callable[[int], None] | None = None,
) -> nn.Module:
    """Fine-tune the trainable parameters of ``model`` (the adapters' A, B, and DoRA's m) by Adam on the mean
    squared error over mini-batches of ``(x (N, d_in), y (N, d_out))``.

    ``eta=None``: plain Adam (LoRA, DoRA). ``eta`` given: ALLoRA, every step of the layers' A and B rescaled by
    c(θ) (:func:`allora_step`). ``on_step(step, loss)`` sees each update's loss (step 1 … n_steps);
    ``on_log(step)`` is called at each step in ``log_steps`` (0 = before training) with the weights of that step.
    """
    trainable = [p for p in model.parameters() if p.requires_grad]
    factors = lora_factors(layers)
    optimizer = torch.optim.Adam(trainable, lr=lr)
    batches = endless_minibatches(len(x), batch_size, generator)
    wanted = set(log_steps)
    for step in range(n_steps + 1):
        if step in wanted and on_log is not None:
            on_log(step)
        if step == n_steps:
            break
        idx = next(batches)
        model.train()  # dropout on (LoRA, DoRA); ALLoRA has none
        # L = (1/(B·d_out)) Σ ‖f(x) − y‖²   over the mini-batch
        loss = F.mse_loss(model(x[idx]), y[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if eta is None:
            optimizer.step()
        else:
            allora_step(optimizer, factors, eta, grouping)
        if on_step is not None:
            on_step(step + 1, loss.detach())
    return model
