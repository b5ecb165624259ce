"""Dual RL — Sikchi, Zheng, Zhang, Niekum, "Dual RL: Unification and New Methods for Reinforcement and Imitation
Learning", arXiv 2302.08560 (ICLR 2024). Official f-DVL code: github.com/hari-sikchi/DVL.

RL is a linear program over the visitation distribution d(s, a), here regularised towards a data distribution:

    max_{d ≥ 0}  E_d[r] − α·D_f(d ‖ d^O)   s.t.   Σ_a d(s,a) = (1−γ)ρ0(s) + γ Σ_{s',a'} P(s|s',a') d(s',a')

Its Lagrange dual is an unconstrained problem over value functions ("dual RL"). Many offline RL and imitation
methods are this dual for one f and one constraint set (IQ-Learn, XQL, CQL, SMODICE, ...). Two new methods follow.

ReCOIL (offline imitation, "dual-Q"). Match MIXTURES, so the expert need not be covered by the data:
d_mix^{π,S} = β d^π + (1−β) d^S against d_mix^{E,S} = β d^E + (1−β) d^S, under the flow constraint on d^π. With the
multiplier Q(s, a) and V(s) = E_π Q(s, ·) (here the soft maximum τ·logsumexp(Q/τ)):

    min_Q  β(1−γ) E_ρ0[V(s0)] + E_{d_mix^{E,S}}[ f*(y) ] − (1−β) E_{d^S}[ y ],      y(s,a,s') = γ V(s') − Q(s,a)
         = β(1−γ) V(s0) + β E_E[ f*(y) ] + (1−β) E_S[ f*(y) − y ]                   (χ²: f*(y) = y + y²/4)

On the data (1−β)(f*(y) − y) = (1−β)y²/4 asks Bellman consistency with zero reward; on the expert f*(y) is
smallest at y = −2, an implicit reward Q − γV' = 2. β = 1 is offline IQ-Learn (expert data only). (Re-derived: the
Lagrangian of the flow constraint with multiplier Q, minimised over d^π through the conjugate of D_f, gives this form
with the multiplier rescaled by β and its sign flipped, both free for an equality constraint, when V = E_π Q.)
Policy: greedy in Q over the actions that the data contains at each state.

f-DVL (offline RL, "dual-V"). With x = Q(s,a) − V(s) on the data and a temperature λ ∈ (0, 1),

    L_V = E_{d^O}[ λ·g_f(x) − (1 − λ)·x ],     χ²: g(x) = max(x + x²/4, 0),   total variation: g(x) = max(x, 0)
    L_Q = E_{d^O}[ huber_20( Q(s,a) − r − γ(1 − done) V(s') ) ]

next to XQL's Gumbel regression L_V = E[e^{x/α} − x/α − 1] (f = reverse KL) and IQL's expectile regression
L_V = E[|τ − 1(x < 0)|·x²]: all four are implicit maximisers (V climbs towards max_a Q over the data's actions),
but e^{x/α} explodes on large residuals. Policy: advantage-weighted regression,
max_π E_{d^O}[min(e^{β(Q − V)}, 100)·log π(a|s)].

Shapes: K independent problems (arm × seed) are trained as one batch; tables are Q (K, S, A) and V (K, S); the data
are transitions weighted by their empirical frequency, padded to N rows, ``(K, N)`` (see :class:`Transitions`).
Both loops take full-batch Adam steps on these expectations (on a tabular toy that is the exact objective), with the
learning rate annealed to 0 so that the tables settle at the fixed point.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

# --- data --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Transitions:
    """D data sets of transitions padded to N rows, each field ``(D, N)``: states ``s``, actions ``a``, next states
    ``s_next`` (long), ``reward``, ``done`` (1.0 when s' is absorbing: V(s') = 0) and ``weight`` (the empirical
    distribution over the rows: each row sums to 1, padding has weight 0)."""

    s: Tensor
    a: Tensor
    s_next: Tensor
    reward: Tensor
    done: Tensor
    weight: Tensor

    def select(self, rows: Tensor) -> Transitions:
        """The data set of each problem: ``rows (K,)`` indexes the D data sets → fields ``(K, N)``."""
        return Transitions(*(getattr(self, f).index_select(0, rows) for f in self.__dataclass_fields__))


def q_at(q: Tensor, s: Tensor, a: Tensor) -> Tensor:
    """Q(s, a) for tables ``q (K, S, A)`` at ``s, a (K, N)`` → ``(K, N)``."""
    return q.flatten(1).gather(1, s * q.shape[2] + a)


# --- ReCOIL: the dual-Q objective of mixture matching ------------------------------------------------------


def chi2_conjugate(y: Tensor) -> Tensor:
    """f*(y) of the χ² divergence f(t) = (t − 1)²: sup_t [t·y − (t − 1)²], reached at t = 1 + y/2. (With t ≥ 0
    imposed it would be −1 below y = −2; the unconstrained form is the card's, and the expert's optimum is y = −2.)"""
    # f*(y) = y + y²/4
    return y + y**2 / 4


def soft_value(q: Tensor, tau: float, valid: Tensor | None = None) -> Tensor:
    """V(s) = τ·log Σ_a exp(Q(s,a)/τ) over the ``valid (…, S, A)`` actions (all where a state has none);
    ``q (…, S, A)`` → ``(…, S)``. τ → 0 is the hard max."""
    if valid is not None:
        valid = valid | ~valid.any(-1, keepdim=True)
        q = q.masked_fill(~valid, float("-inf"))
    # V(s) = τ logsumexp_a(Q(s,a)/τ)
    return tau * torch.logsumexp(q / tau, dim=-1)


def bellman_residual(q_sa: Tensor, v_next: Tensor, done: Tensor, gamma: float) -> Tensor:
    """The dual's residual ``(K, N)``; absorbing next states have V = 0."""
    # y(s,a,s') = γ (1 − done) V(s') − Q(s,a)
    return gamma * (1.0 - done) * v_next - q_sa


def recoil_loss(
    y_expert: Tensor,
    w_expert: Tensor,
    y_replay: Tensor,
    w_replay: Tensor,
    v_start: Tensor,
    beta: Tensor | float,
    gamma: float,
    conjugate: Callable[[Tensor], Tensor] = chi2_conjugate,
) -> Tensor:
    """ReCOIL's dual objective per problem ``(K,)``. ``y_*`` residuals ``(K, N_*)`` with their empirical weights
    ``w_*`` (rows sum to 1), ``v_start (K,)`` = V(s0) (ρ0 is one cell here), ``beta`` a float or ``(K,)``."""
    # β(1−γ) E_ρ0[V(s0)]
    start = beta * (1 - gamma) * v_start
    # β E_{d^E}[f*(y)]: the expert half of E_{d_mix^{E,S}}[f*(y)]
    expert = beta * (w_expert * conjugate(y_expert)).sum(-1)
    # (1−β) E_{d^S}[f*(y) − y]: the data half of the mixture, minus (1−β) E_{d^S}[y]
    replay = (1 - beta) * (w_replay * (conjugate(y_replay) - y_replay)).sum(-1)
    return start + expert + replay


def train_recoil(
    q: Tensor,
    expert: Transitions,
    replay: Transitions,
    start: int,
    beta: Tensor,
    *,
    gamma: float,
    tau: float,
    valid: Tensor,
    n_steps: int,
    lr: float,
    on_step: Callable[[int, Tensor, Tensor], None] | None = None,
) -> Tensor:
    """ReCOIL (β < 1) or offline IQ-Learn (β = 1) on K problems at once: full-batch Adam on the dual over Q tables.

    ``q (K, S, A)`` the initial tables; ``expert``, ``replay`` the problems' data ``(K, N)`` (``Transitions.select``);
    ``beta (K,)``; ``valid (K, S, A)`` the actions the soft V may take (those the data contains at each state).
    ``on_step(step, losses (K,), q)`` after each update (the runner checks losses and weights there).
    Returns the trained ``(K, S, A)`` tables."""
    q = q.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([q], lr=lr, fused=True)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(n_steps, 1))  # lr annealed to 0
    for step in range(n_steps):
        # V(s) = τ logsumexp over the data's actions at s
        v = soft_value(q, tau, valid)  # (K, S)
        y_e = bellman_residual(q_at(q, expert.s, expert.a), v.gather(1, expert.s_next), expert.done, gamma)
        y_s = bellman_residual(q_at(q, replay.s, replay.a), v.gather(1, replay.s_next), replay.done, gamma)
        loss = recoil_loss(y_e, expert.weight, y_s, replay.weight, v[:, start], beta, gamma)  # (K,)
        opt.zero_grad()
        loss.sum().backward()  # the problems are independent: each gets its own gradient
        opt.step()
        schedule.step()
        if on_step is not None:
            on_step(step, loss.detach(), q.detach())
    return q.detach()


def greedy_in_support(q: Tensor, valid: Tensor) -> Tensor:
    """Policy extraction ``(K, S, A)``: one-hot argmax of Q over the ``valid`` actions; uniform where a state has
    none (no data there: the dual leaves those entries unconstrained, their argmax would be arbitrary)."""
    masked = q.masked_fill(~valid, float("-inf"))
    onehot = torch.nn.functional.one_hot(masked.argmax(-1), q.shape[-1]).to(q.dtype)
    uniform = torch.full_like(q, 1.0 / q.shape[-1])
    return torch.where(valid.any(-1, keepdim=True), onehot, uniform)


# --- f-DVL: value losses (all minimised over V with Q frozen) ----------------------------------------------


def chi2_value_loss(x: Tensor, lam: float) -> Tensor:
    """f-DVL with χ², per sample; ``x = Q(s,a) − V(s)``."""
    # λ·max(x + x²/4, 0) − (1 − λ)·x
    return lam * torch.clamp(x + x**2 / 4, min=0.0) - (1 - lam) * x


def tv_value_loss(x: Tensor, lam: float) -> Tensor:
    """f-DVL with total variation, per sample: V becomes the (1−λ)/λ upper quantile of Q over the data's actions."""
    # λ·max(x, 0) − (1 − λ)·x
    return lam * torch.clamp(x, min=0.0) - (1 - lam) * x


def gumbel_value_loss(x: Tensor, alpha: float, clip: float | None = None) -> Tensor:
    """XQL's Gumbel regression (f = reverse KL), per sample, as the XQL paper writes it: in float32 e^z overflows
    to inf beyond z ≈ 88.7. ``clip`` caps z as the official code does (max_clip = 7); None keeps the plain loss."""
    z = x / alpha
    if clip is not None:
        z = torch.clamp(z, max=clip)
    # e^{x/α} − x/α − 1
    return torch.exp(z) - z - 1


def expectile_value_loss(x: Tensor, tau: float) -> Tensor:
    """IQL's expectile regression, per sample."""
    # |τ − 1(x < 0)|·x²
    return torch.where(x < 0, 1 - tau, tau) * x**2


VALUE_LOSSES = {
    "chi2": chi2_value_loss,
    "tv": tv_value_loss,
    "gumbel": gumbel_value_loss,
    "expectile": expectile_value_loss,
}


@dataclass(frozen=True)
class ValueLoss:
    """One arm's value loss: ``kind`` in VALUE_LOSSES and its temperature (λ, α or τ)."""

    kind: str
    temp: float

    def __post_init__(self):
        if self.kind not in VALUE_LOSSES:
            raise ValueError(f"unknown value loss {self.kind!r}; known: {sorted(VALUE_LOSSES)}")

    def __call__(self, x: Tensor) -> Tensor:
        return VALUE_LOSSES[self.kind](x, self.temp)

    @property
    def may_overflow(self) -> bool:
        """The Gumbel loss overflows by design on large residuals: that is XQL's instability, a result to record."""
        return self.kind == "gumbel"


def huber(x: Tensor, delta: float = 20.0) -> Tensor:
    """The Q loss of the official code (δ = 20): quadratic near 0, linear beyond δ."""
    # ½x² for |x| ≤ δ,  δ(|x| − ½δ) beyond
    return torch.nn.functional.huber_loss(x, torch.zeros_like(x), reduction="none", delta=delta)


# --- policy extraction: advantage-weighted regression -----------------------------------------------------


def awr_weights(q_sa: Tensor, v_s: Tensor, beta: float, clip: float = 100.0) -> Tensor:
    """AWR's per-sample weights (exp overflowing to inf is clipped too)."""
    # w = min(e^{β (Q(s,a) − V(s))}, 100)
    return torch.clamp(torch.exp(beta * (q_sa - v_s)), max=clip)


def awr_loss(logits: Tensor, s: Tensor, a: Tensor, w: Tensor) -> Tensor:
    """AWR's loss for a policy table ``logits (S, A)`` on samples ``s, a, w (N,)``."""
    # −E[w · log π(a|s)]
    return -(w * logits.log_softmax(-1)[s, a]).mean()


def awr_policy(s: Tensor, a: Tensor, w: Tensor, n_states: int, n_actions: int) -> Tensor:
    """The tabular policy that minimises :func:`awr_loss` exactly, ``(K, S, A)`` from ``s, a, w (K, N)``:
    π(a|s) = Σ_{i: s_i=s, a_i=a} w_i / Σ_{i: s_i=s} w_i (the weighted counts); uniform at states without data or
    whose weights all underflowed (there every π is a minimiser)."""
    flat = torch.zeros(s.shape[0], n_states * n_actions, dtype=w.dtype, device=w.device)
    mass = flat.scatter_add(1, s * n_actions + a, w).view(-1, n_states, n_actions)
    total = mass.sum(-1, keepdim=True)
    seen = total > 1e-30  # a sum of underflowed weights cannot be normalised
    return torch.where(seen, mass / torch.where(seen, total, 1.0), torch.full_like(mass, 1.0 / n_actions))


# --- the f-DVL / XQL / IQL training loop -------------------------------------------------------------------


@dataclass(frozen=True)
class DVLTables:
    """What :func:`train_dvl` returns: ``q (K, S, A)``, ``v (K, S)``; per problem the largest value loss seen
    (``max_value_loss (K,)``, inf once it overflowed) and the step it overflowed at (``overflow_step``, −1 if never)."""

    q: Tensor
    v: Tensor
    max_value_loss: Tensor
    overflow_step: Tensor


def train_dvl(
    q: Tensor,
    v: Tensor,
    data: Transitions,
    losses: Sequence[ValueLoss],
    *,
    gamma: float,
    n_steps: int,
    lr: float,
    on_step: Callable[[int, Tensor, Tensor, Tensor, Tensor], None] | None = None,
) -> DVLTables:
    """f-DVL, XQL and IQL (one loop, one value loss per problem) on K problems: per step one Adam step on V with Q
    frozen, then one on Q towards r + γ(1 − done)V(s'), both on the whole data set (``data (K, N)``, weighted).

    A problem whose value loss may overflow (Gumbel) and does is stopped there and frozen at its last finite
    tables: its overflow is recorded as a result (``overflow_step``), not raised. Every other non-finite loss is
    left to ``on_step(step, value_losses (K,), q_losses (K,), q, v)``, which the runner uses to stop the run."""
    K = q.shape[0]
    q = q.detach().clone().requires_grad_(True)
    v = v.detach().clone().requires_grad_(True)
    opt_v, opt_q = torch.optim.Adam([v], lr=lr, fused=True), torch.optim.Adam([q], lr=lr, fused=True)
    # the learning rate is annealed to 0 (cosine): the tables settle at their losses' fixed point instead of
    # oscillating around it at the constant rate
    schedules = [torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(n_steps, 1)) for opt in (opt_v, opt_q)]
    kinds = sorted(set(losses), key=lambda loss: (loss.kind, loss.temp))
    rows = [torch.tensor([k for k in range(K) if losses[k] == kind], device=q.device) for kind in kinds]
    order = torch.cat(rows).argsort()  # the concatenated group losses back to problem order
    may_overflow = torch.tensor([loss.may_overflow for loss in losses], device=q.device)
    alive = torch.ones(K, dtype=torch.bool, device=q.device)
    overflow_step = torch.full((K,), -1, dtype=torch.long, device=q.device)
    max_loss = torch.zeros(K, device=q.device)
    kept_q, kept_v = q.detach().clone(), v.detach().clone()
    real = data.weight > 0  # (K, N): padding rows get x = 0, where every value loss is 0
    for step in range(n_steps):
        # value step, Q frozen: x = Q(s,a) − V(s)
        x = torch.where(real, q_at(q.detach(), data.s, data.a) - v.gather(1, data.s), 0.0)
        per_sample = torch.cat([kind(x[r]) for kind, r in zip(kinds, rows)])[order]  # (K, N)
        value_loss = (data.weight * per_sample).sum(-1)  # (K,) E_{d^O}[loss]
        with torch.no_grad():
            burst = alive & may_overflow & ~torch.isfinite(value_loss)
            overflow_step[burst] = step
            kept_q[burst], kept_v[burst] = q[burst], v[burst]
            max_loss = torch.where(alive, torch.maximum(max_loss, value_loss), max_loss)
            alive &= ~burst
        opt_v.zero_grad()
        value_loss.sum().backward()
        v.grad = torch.where(alive[:, None], v.grad, 0.0)  # a frozen problem gets no (inf/NaN) gradient
        opt_v.step()
        # Q step: regress Q(s,a) to r + γ (1 − done) V(s')
        target = data.reward + gamma * (1.0 - data.done) * v.detach().gather(1, data.s_next)
        q_loss = (data.weight * huber(q_at(q, data.s, data.a) - target)).sum(-1)  # (K,)
        opt_q.zero_grad()
        q_loss.sum().backward()
        opt_q.step()
        with torch.no_grad():  # frozen problems keep their last finite tables
            q[~alive], v[~alive] = kept_q[~alive], kept_v[~alive]
        for schedule in schedules:
            schedule.step()
        if on_step is not None:
            on_step(step, value_loss.detach(), q_loss.detach(), q.detach(), v.detach())
    return DVLTables(q.detach(), v.detach(), max_loss, overflow_step)
