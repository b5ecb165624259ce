"""TempNet — "To Cool or not to Cool? Temperature Network Meets Large Foundation Models via DRO"
(Qiu, Guo, Xu, Zhao, Zhang, Yang; ICML 2024), arXiv 2404.04575. Official code: github.com/zhqiu/TempNet.

One input with logits h ∈ R^m (m = vocabulary size), label y, u the uniform distribution over the m entries and a
KL budget ρ > 0. The KL-constrained DRO loss puts the worst distribution p (close to u) on the logit gaps:

    L_DRO(h, y) = max_{p ∈ Δ_m, KL(p‖u) ≤ ρ}  Σ_k p_k (h_k − h_y)
                = min_{τ > 0}  τ · log( (1/m) Σ_k exp((h_k − h_y)/τ) ) + τρ          (Lagrange dual)

The temperature τ is the dual variable of the KL budget. At the minimiser τ*(h) the worst case is
p* = softmax(h/τ*) with KL(p*‖u) = ρ exactly (entropy log m − ρ; if k top logits tie with log(m/k) < ρ the ball
is out of reach and τ* → 0), and the −h_y term does not involve τ, so τ* depends on the logits only. Between the
limits, τ → ∞ gives the mean gap (1/m)Σ_k (h_k − h_y) (plus τρ) and τ → 0 the largest gap max_k (h_k − h_y).

TempNet T_w replaces the inner minimisation by a prediction τ = T_w(h) (one τ per input), and the loss is
written in the language-model form of the code, identical to the dual above:

    L(θ, w) = E[ τ · CE(h_θ/τ, y) + τ · (ρ − log m) ],   τ = T_w(stop_grad(h_θ))

TempNet (the code's LLM version): x = h/‖h‖₂; z = W₂·dropout(σ(W₁x)) (width H); weights a = softmax(z/e^s) with a
learned scale s (init 0); τ = τ_min + (τ_max − τ_min)·σ(v·((a − 1/H) ⊙ z) + c) with v initialised to ones and
c = 0. Trained on top of a frozen model (only w), or jointly with the model (θ and w, TempNet's rate ≪ θ's).
:func:`train_tempnet` is the training loop; a constant τ ≡ 1 in the same loop is plain cross-entropy.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# --- the DRO loss, its dual form and the LLM form ---------------------------------------------------------


def dro_loss(logits: Tensor, labels: Tensor, tau, rho: float) -> Tensor:
    """The dual KL-DRO loss per input ``(B,)``; ``logits (B, m)``, ``labels (B,)`` int64, ``tau`` a number or a
    ``(B,)``/``(B, 1)`` tensor of positive temperatures."""
    tau = torch.as_tensor(tau, dtype=logits.dtype, device=logits.device).reshape(-1, 1)  # (B, 1) or (1, 1)
    # the logit gaps h_k − h_y                                                                     (B, m)
    gaps = logits - logits.gather(1, labels[:, None])
    # τ · log( (1/m) Σ_k exp((h_k − h_y)/τ) ) + τρ                                                  (B,)
    return (tau * (torch.logsumexp(gaps / tau, dim=1, keepdim=True) - math.log(logits.shape[1])) + tau * rho)[:, 0]


def tempnet_loss(logits: Tensor, labels: Tensor, tau: Tensor, rho: float) -> Tensor:
    """The same loss in the code's language-model form, per input ``(B,)``; ``tau (B, 1)``."""
    m = logits.shape[1]
    # CE(h/τ, y) = −log softmax(h/τ)_y                                                              (B,)
    ce = F.cross_entropy(logits / tau, labels, reduction="none")
    # τ·CE(h/τ, y) + τ·(ρ − log m)                                                                  (B,)
    return tau[:, 0] * ce + tau[:, 0] * (rho - math.log(m))


def robust_objective(logits: Tensor, tau, rho: float) -> Tensor:
    """The part of :func:`dro_loss` that depends on τ: τ·log mean_k exp(h_k/τ) + τρ, per input ``(B,)``.
    ``dro_loss = robust_objective − h_y``; it is convex in τ."""
    tau = torch.as_tensor(tau, dtype=logits.dtype, device=logits.device).reshape(-1, 1)
    # τ·log((1/m)·Σ_k exp(h_k/τ)) + τρ                                                              (B,)
    return (tau * (torch.logsumexp(logits / tau, dim=1, keepdim=True) - math.log(logits.shape[1])) + tau * rho)[:, 0]


def dro_weights(logits: Tensor, tau) -> Tensor:
    """The worst-case distribution p = softmax(h/τ) over the m entries, ``(B, m)``: the weights the DRO loss puts
    on each logit gap (at the optimal τ* it sits exactly on the KL ball's surface)."""
    tau = torch.as_tensor(tau, dtype=logits.dtype, device=logits.device).reshape(-1, 1)
    # p_k = exp(h_k/τ) / Σ_j exp(h_j/τ)                                                             (B, m)
    return torch.softmax(logits / tau, dim=1)


def kl_to_uniform(logits: Tensor, tau) -> Tensor:
    """KL(softmax(h/τ) ‖ u) = log m − H(softmax(h/τ)), per input ``(B,)``."""
    tau = torch.as_tensor(tau, dtype=logits.dtype, device=logits.device).reshape(-1, 1)
    logp = torch.log_softmax(logits / tau, dim=1)
    # Σ_k p_k log p_k + log m                                                                       (B,)
    return (logp.exp() * logp).sum(1) + math.log(logits.shape[1])


def optimal_tau(logits: Tensor, rho: float, tau_min: float, tau_max: float, n_iter: int = 60) -> Tensor:
    """The per-input oracle τ*(h) ``(B,)``: the minimiser of :func:`robust_objective` over [τ_min, τ_max].

    dL/dτ = log mean exp(h/τ) + ρ − E_{softmax(h/τ)}[h]/τ = ρ − KL(softmax(h/τ)‖u), which grows with τ (the
    tempered distribution flattens), so τ* is where KL = ρ: bisection on log τ, clamped to the range."""
    lo = torch.full(logits.shape[:1], math.log(tau_min), dtype=logits.dtype, device=logits.device)
    hi = torch.full_like(lo, math.log(tau_max))
    for _ in range(n_iter):
        mid = (lo + hi) / 2
        # dL/dτ > 0: the minimiser is to the left
        right_of_min = kl_to_uniform(logits, mid.exp()) < rho
        hi = torch.where(right_of_min, mid, hi)
        lo = torch.where(right_of_min, lo, mid)
    return ((lo + hi) / 2).exp()


# --- the temperature network and the single-temperature baselines ------------------------------------------


class TempNet(nn.Module):
    """τ = T_w(h) ∈ [τ_min, τ_max] for each row of logits ``(B, m)`` → ``(B, 1)`` (the code's LLM TempNet)."""

    def __init__(self, vocab_size: int, hidden: int = 256, tau_min: float = 0.5, tau_max: float = 5.0, dropout=0.5):
        super().__init__()
        if not 0.0 < tau_min < tau_max:
            raise ValueError(f"need 0 < tau_min < tau_max, got {tau_min}, {tau_max}")
        self.tau_min, self.tau_max, self.hidden = tau_min, tau_max, hidden
        self.proj = nn.Sequential(
            nn.Linear(vocab_size, hidden), nn.Sigmoid(), nn.Dropout(dropout), nn.Linear(hidden, hidden)
        )
        self.log_scale = nn.Parameter(torch.zeros(()))  # s: the softmax over the H features has temperature e^s
        self.head = nn.Linear(hidden, 1)
        with torch.no_grad():  # v = 1, c = 0: at init τ sits near the middle of its range
            self.head.weight.fill_(1.0)
            self.head.bias.zero_()

    def forward(self, logits: Tensor) -> Tensor:
        # x = h/‖h‖₂: only the logits' shape matters, not their scale                                 (B, m)
        x = F.normalize(logits, dim=-1)
        # z = W₂·dropout(σ(W₁x + b₁)) + b₂                                                              (B, H)
        z = self.proj(x)
        # a = softmax(z / e^s)                                                                         (B, H)
        a = torch.softmax(z / self.log_scale.exp(), dim=-1)
        # score = v·((a − 1/H) ⊙ z) + c: centring a at 1/H keeps the score near 0 at init              (B, 1)
        score = self.head((a - 1.0 / self.hidden) * z)
        # τ = τ_min + (τ_max − τ_min)·σ(score)                                                         (B, 1)
        return self.tau_min + (self.tau_max - self.tau_min) * torch.sigmoid(score)


class GlobalTemperature(nn.Module):
    """One learned τ for every input (the global-temperature baseline), in the same range parametrisation:
    τ = τ_min + (τ_max − τ_min)·σ(θ), θ = 0 at init."""

    def __init__(self, tau_min: float, tau_max: float):
        super().__init__()
        self.tau_min, self.tau_max = tau_min, tau_max
        self.theta = nn.Parameter(torch.zeros(()))

    def forward(self, logits: Tensor) -> Tensor:
        tau = self.tau_min + (self.tau_max - self.tau_min) * torch.sigmoid(self.theta)
        return tau.expand(logits.shape[0], 1)


class FixedTemperature(nn.Module):
    """A constant τ (no parameters). τ ≡ 1 in :func:`train_tempnet` is plain cross-entropy: the loss is
    CE(h, y) + (ρ − log m), a constant shift."""

    def __init__(self, tau: float = 1.0):
        super().__init__()
        self.tau = float(tau)

    def forward(self, logits: Tensor) -> Tensor:
        return logits.new_full((logits.shape[0], 1), self.tau)


# --- the training loop -------------------------------------------------------------------------------------


def train_tempnet(
    lm: nn.Module,
    temperature: nn.Module,
    contexts: Tensor,
    labels: Tensor,
    *,
    rho: float,
    n_steps: int,
    batch_size: int,
    tempnet_lr: float,
    lm_lr: float = 0.0,
    generator: torch.Generator,
    log_steps=(),
    on_step: Callable[[int, Tensor], None] | None = None,
    on_log: Callable[[int], None] | None = None,
) -> None:
    """Minimise E[τ·CE(h/τ, y) + τ(ρ − log m)] by Adam on minibatches of (context, next token) pairs.

    ``lm`` maps contexts ``(B, …)`` to logits ``(B, m)``; ``temperature`` maps logits to τ ``(B, 1)`` (a
    :class:`TempNet`, :class:`GlobalTemperature` or :class:`FixedTemperature`). ``lm_lr = 0`` keeps the model
    frozen (TempNet plugged onto it); ``lm_lr > 0`` trains both, the model on the loss through h and TempNet on
    its own input h detached, as in the code. ``on_step(step, loss)`` sees each update's loss,
    ``on_log(step)`` is called at ``log_steps`` (0 = before training) with both modules in eval mode."""
    groups = [{"params": [p for p in temperature.parameters() if p.requires_grad], "lr": tempnet_lr}]
    if lm_lr > 0:
        groups.append({"params": list(lm.parameters()), "lr": lm_lr})
    groups = [g for g in groups if g["params"]]
    opt = torch.optim.Adam(groups) if groups else None
    wanted = set(log_steps)
    for step in range(n_steps + 1):
        if step in wanted and on_log is not None:
            lm.eval()
            temperature.eval()
            on_log(step)
        if step == n_steps:
            break
        lm.train(lm_lr > 0)  # a frozen model stays in eval mode (no dropout, fixed logits)
        temperature.train()
        idx = torch.randint(len(labels), (batch_size,), generator=generator).to(labels.device)
        x, y = contexts[idx], labels[idx]
        # h = model(x): the logits, frozen unless the model trains too                                 (B, m)
        with torch.set_grad_enabled(lm_lr > 0):
            h = lm(x)
        # τ = T_w(stop_grad(h)): TempNet sees the logits but sends no gradient into the model          (B, 1)
        tau = temperature(h.detach())
        # L = mean_B [ τ·CE(h/τ, y) + τ·(ρ − log m) ]
        loss = tempnet_loss(h, y, tau, rho).mean()
        if opt is not None:
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if on_step is not None:
            on_step(step + 1, loss.detach())
    lm.eval()
    temperature.eval()
