"""VaGraM — arXiv 2204.01464 (Voelcker, Liao, Garg, Farahmand, ICLR 2022): Value-Gradient weighted Model loss.

A dynamics model f_θ(s, a) = s + Δ_θ(s, a) (and a reward head r̂_θ) is fitted on real transitions (s, a, r, s'),
then used to plan. With the prediction error e = f_θ(s, a) − s' ∈ R^n and the value gradient at the observed next
state g = ∇_s V(s)|_{s = s'} (held fixed, no gradient into V):

    maximum likelihood (MSE):  L_MSE    = (1/N) Σ_i ‖e_i‖²                      + (1/N) Σ_i (r̂_i − r_i)²
    IterVAML:                  L_VAML   = (1/N) Σ_i (V(f_θ(s_i, a_i)) − V(s'_i))²
    Taylor (rank-1) VAML:      L_Taylor = (1/N) Σ_i (g_iᵀ e_i)²                  ≈ L_VAML to first order, but flat ⟂ g
    VaGraM (diagonal bound):   L_VaGraM = (1/N) Σ_i Σ_j (g_ij · e_ij)²            + (1/N) Σ_i (r̂_i − r_i)²

using (gᵀe)² ≤ n·Σ_j g_j² e_j² and dropping n. Gradient conditioning (the official code): per batch, each ‖g_i‖ is
clipped at the batch's 95th percentile of norms, and g is divided by a running (EMA, decay 0.999) mean norm.

The model then supports a policy: here one-step lookahead through the model with the known reward and V,
a_t = argmax_u r(s_t, u) + γ·V(f_θ(s_t, u)), run on the true system (:func:`model_based_control`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

# --------------------------------------------------------------------------------------------- the losses


def mse_loss(pred_s2: Tensor, pred_r: Tensor, s2: Tensor, r: Tensor) -> Tensor:
    """Maximum-likelihood (deterministic, unit-variance Gaussian) model loss. pred_s2, s2: (..., N, n); pred_r, r:
    (..., N). Returns (...,): one loss per model."""
    # e = f_θ(s, a) − s'
    e = pred_s2 - s2
    # L_MSE = (1/N) Σ_i ‖e_i‖² + (1/N) Σ_i (r̂_i − r_i)²
    return (e**2).sum(-1).mean(-1) + ((pred_r - r) ** 2).mean(-1)


def vagram_loss(pred_s2: Tensor, pred_r: Tensor, s2: Tensor, r: Tensor, g: Tensor) -> Tensor:
    """VaGraM: each coordinate's squared error weighted by the squared value gradient at the observed s'.
    pred_s2, s2, g: (..., N, n) (g detached); pred_r, r: (..., N). Returns (...,)."""
    e = pred_s2 - s2
    # L_VaGraM = (1/N) Σ_i Σ_j (g_ij · e_ij)² + (1/N) Σ_i (r̂_i − r_i)²
    return ((g.detach() * e) ** 2).sum(-1).mean(-1) + ((pred_r - r) ** 2).mean(-1)


def taylor_vaml_loss(pred_s2: Tensor, s2: Tensor, g: Tensor) -> Tensor:
    """The rank-1 first-order value-aware loss VaGraM replaces (an ablation): (..., N, n) → (...,)."""
    # L_Taylor = (1/N) Σ_i (g_iᵀ e_i)²   — zero for every e_i ⟂ g_i
    return ((g.detach() * (pred_s2 - s2)).sum(-1) ** 2).mean(-1)


def itervaml_loss(value_fn: Callable[[Tensor], Tensor], pred_s2: Tensor, s2: Tensor) -> Tensor:
    """IterVAML, the squared value difference; also the held-out *value error* VE the claims measure.
    (..., N, n) → (...,), in squared value units."""
    # L_VAML = (1/N) Σ_i (V(f_θ(s_i, a_i)) − V(s'_i))²
    return ((value_fn(pred_s2) - value_fn(s2).detach()) ** 2).mean(-1)


# --------------------------------------------------------------------------------------------- the value gradient


def value_gradient(value_fn: Callable[[Tensor], Tensor], s2: Tensor) -> Tensor:
    """g = ∇_s V(s) at s = s' (the observed next state), detached: (..., n) → (..., n)."""
    s = s2.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        (g,) = torch.autograd.grad(value_fn(s).sum(), s)
    return g.detach()


class GradientConditioner:
    """Clip each ‖g_i‖ at the batch's ``quantile`` of norms, then divide by a running average m of the batch mean
    norm (EMA). Works per group: g is (G, B, n) (one group per data set), m is (G,). The official code starts m
    at 1 (``init=1.0``); a short fit then sees its loss scale drift by ‖g‖² while Adam's second moment lags, so the
    default here starts m at the first batch's mean norm (``init=None``)."""

    def __init__(self, quantile: float = 0.95, decay: float = 0.999, init: float | None = None):
        self.quantile, self.decay, self.init, self.running = quantile, decay, init, None

    def __call__(self, g: Tensor) -> Tensor:
        norm = g.norm(dim=-1, keepdim=True)  # (G, B, 1)
        batch_mean = norm.mean((-1, -2))  # (G,): the norms before clipping, as in the official code
        if self.running is None:  # the official code starts m at 1; None starts it at the first batch's mean
            self.running = batch_mean if self.init is None else torch.full_like(batch_mean, self.init)
        # m ← decay·m + (1 − decay)·mean_i ‖g_i‖
        self.running = self.decay * self.running + (1 - self.decay) * batch_mean
        # ‖g_i‖ ← min(‖g_i‖, q_0.95({‖g_k‖}_batch));  g ← g / m
        cap = torch.quantile(norm, self.quantile, dim=-2, keepdim=True)  # (G, 1, 1)
        g = g * torch.where(norm > cap, cap / norm.clamp_min(1e-12), torch.ones_like(norm))
        return g / self.running.clamp_min(1e-12)[:, None, None]


# --------------------------------------------------------------------------------------------- the model


class DynamicsEnsemble(nn.Module):
    """K independent models, trained as one tensor (each gets exactly its own gradient). Input [s, a] with fixed
    input scales. The state model is a one-hidden-layer MLP, f(s, a) = s + Δ(s, a) (K, N, n) — the capacity under
    test; the reward r̂(s, a) (K, N) has its own hidden layer of the same width, so that fitting the reward does not
    take the state model's units (with one shared layer of width 8, the reward's squared error takes it over)."""

    def __init__(self, k: int, n_state: int, n_action: int, width: int, in_scale: Tensor, generator=None):
        super().__init__()
        n_in = n_state + n_action

        def init(*shape, fan_in):
            return nn.Parameter((torch.rand(*shape, generator=generator) * 2 - 1) / fan_in**0.5)

        self.w1, self.b1 = init(k, n_in, width, fan_in=n_in), init(k, 1, width, fan_in=n_in)
        self.w2, self.b2 = init(k, width, n_state, fan_in=width), init(k, 1, n_state, fan_in=width)
        self.r1, self.rb1 = init(k, n_in, width, fan_in=n_in), init(k, 1, width, fan_in=n_in)
        self.r2, self.rb2 = init(k, width, 1, fan_in=width), init(k, 1, 1, fan_in=width)
        self.register_buffer("in_scale", in_scale)  # (n_in,)

    def forward(self, s: Tensor, a: Tensor) -> tuple[Tensor, Tensor]:
        """s: (K, N, n), a: (K, N, m) → (s + Δ, r̂): (K, N, n), (K, N)."""
        x = torch.cat([s, a], -1) / self.in_scale
        h = torch.nn.functional.silu(torch.baddbmm(self.b1, x, self.w1))
        h_r = torch.nn.functional.silu(torch.baddbmm(self.rb1, x, self.r1))
        return s + torch.baddbmm(self.b2, h, self.w2), torch.baddbmm(self.rb2, h_r, self.r2)[..., 0]


def fit_models(
    model: DynamicsEnsemble,
    data,
    use_vagram: Tensor,
    value_fn: Callable[[Tensor], Tensor],
    *,
    steps: int,
    lr: float,
    batch: int,
    quantile: float,
    generator: torch.Generator,
    on_step: Callable[[int, Tensor], None] | None = None,
) -> DynamicsEnsemble:
    """Fit the K models by Adam on minibatches: model k minimises L_VaGraM if ``use_vagram[k]`` else L_MSE.

    ``data`` holds G data sets (s, a, r, s2 with a leading (G, N, ·)); model k trains on set k mod G (so K = L·G,
    one block of G models per loss). ``on_step(step, losses)`` gets the (K,) losses (for the divergence checks)."""
    k_models, n_sets, n = model.w1.shape[0], data.s.shape[0], data.s.shape[1]
    sets = torch.arange(k_models) % n_sets
    vagram = use_vagram.to(torch.bool)  # (K,)
    conditioner = GradientConditioner(quantile)
    # g = ∇_s V(s)|_{s = s'} for every stored transition, once: V is fixed here (the official code caches it too,
    # and recomputes it when the critic changes)
    grads = value_gradient(value_fn, data.s2)  # (G, N, n)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for step in range(steps):
        idx = torch.randint(0, n, (n_sets, batch), generator=generator)  # (G, B): one batch per data set
        s, a, r, s2, g = (
            torch.gather(x, 1, idx.view(n_sets, batch, *[1] * (x.dim() - 2)).expand(n_sets, batch, *x.shape[2:]))
            for x in (data.s, data.a, data.r, data.s2, grads)
        )
        # the batch's gradients, conditioned per data set, then handed to the models of that set
        g = conditioner(g)[sets]  # (K, B, n)
        pred_s2, pred_r = model(s[sets], a[sets])
        losses = torch.where(
            vagram, vagram_loss(pred_s2, pred_r, s2[sets], r[sets], g), mse_loss(pred_s2, pred_r, s2[sets], r[sets])
        )  # (K,)
        opt.zero_grad()
        losses.sum().backward()  # the K losses are independent: each model gets its own gradient
        opt.step()
        if on_step is not None:
            on_step(step, losses.detach())
    return model


# --------------------------------------------------------------------------------------------- planning


def plan_action(
    model: DynamicsEnsemble,
    value_fn: Callable[[Tensor], Tensor],
    reward_fn: Callable[[Tensor, Tensor], Tensor],
    s: Tensor,
    torques: Tensor,
    gamma: float,
) -> Tensor:
    """One-step lookahead through each model: s (K, E, n), torques (U,) → actions (K, E, 1)."""
    k, e, n = s.shape
    u = torques.view(1, 1, -1, 1).expand(k, e, len(torques), 1)  # (K, E, U, 1)
    s_rep = s[:, :, None, :].expand(k, e, len(torques), n)
    pred_s2, _ = model(s_rep.reshape(k, -1, n), u.reshape(k, -1, 1))
    # Q̂(s, u) = r(s, u) + γ·V(f_θ(s, u));   a = argmax_u Q̂(s, u)
    q = reward_fn(s_rep, u[..., 0]) + gamma * value_fn(pred_s2).view(k, e, -1)
    return torques[q.argmax(-1)][..., None]


@torch.no_grad()
def model_based_control(
    model: DynamicsEnsemble,
    value_fn: Callable[[Tensor], Tensor],
    reward_fn: Callable[[Tensor, Tensor], Tensor],
    env_step: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]],
    s0: Tensor,
    torques: Tensor,
    gamma: float,
    horizon: int,
) -> tuple[Tensor, Tensor]:
    """Run the policy each model supports on the *true* system for ``horizon`` steps.

    s0 (K, E, n) start states; ``env_step(s, a) → (s', r)`` is the real dynamics. Returns the undiscounted
    returns (K, E) and the visited states (T + 1, K, E, n)."""
    s, total, path = s0, torch.zeros(s0.shape[:2]), [s0]
    for _ in range(horizon):
        a = plan_action(model, value_fn, reward_fn, s, torques, gamma)
        s, r = env_step(s, a)
        total = total + r
        path.append(s)
    return total, torch.stack(path)
