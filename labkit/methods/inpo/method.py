"""INPO — "Iterative Nash Policy Optimization: Aligning LLMs with General Preferences via No-Regret Learning"
(Zhang et al., ICLR 2025), arXiv 2407.00617.

A general preference oracle P(y ≻ y' | x) ∈ [0, 1], P(y ≻ y') + P(y' ≻ y) = 1, possibly intransitive (no
Bradley–Terry reward reproduces it); P(y ≻ π) = E_{y'~π} P(y ≻ y'). The target is the Nash policy of the
symmetric game "whose response is preferred", regularised towards π_ref:

    max_π min_π'  P(π ≻ π') − τ·KL(π‖π_ref) + τ·KL(π'‖π_ref)                     (its solution: π*_τ)

INPO plays online mirror descent (OMD, entropy mirror map, step η) against its own previous iterate π_t:

    π_{t+1}(y) ∝ π_t(y)^{1−ητ} · π_ref(y)^{ητ} · exp(η·P(y ≻ π_t))                 (the OMD step)

and learns that step from ordinary (winner, loser) pairs y, y' ~ π_t ordered by the oracle's Bernoulli label:

    Δ_π = log π(y_w) − log π(y_l)                                                 (sequence log-prob SUMS)
    h_t = Δ_{π_θ} − ητ·Δ_{π_ref} − (1 − ητ)·Δ_{π_t}
    L̂_t(θ) = mean over pairs of (h_t − η/2)²

whose population minimiser is exactly π_{t+1} (replacing η·[P(y ≻ π_t) − P(y' ≻ π_t)] by a label changes the
expected loss only by a constant). The original code writes ``ratio`` = ητ and ``eta`` = 1/η (target 1/(2·eta)).

This file is the paper on the card's tabular "LLM" (M prompts × K responses, π_θ = softmax of a logit table):
the loss, the exact OMD step and the regularised Nash for comparison, on-policy pair sampling, and one
iteration (:func:`inpo_iteration`), which also fits the iterative-DPO baseline on the same kind of pairs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from labkit.data import preferences as prefs
from labkit.substrates.preference import dpo_loss

#: the regularised Nash is found by OMD with this step (times 1/max(τ, 1)), so that ητ ≤ 1/2
NASH_SOLVER_STEP = 0.5

# --- the INPO loss (per pair: each returns a tensor shaped like its inputs; take the mean yourself) ---------


def inpo_logits(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    prev_chosen_logps: Tensor,
    prev_rejected_logps: Tensor,
    eta,
    tau,
) -> Tensor:
    """h_t per pair ``(B,)``: every argument is a ``(B,)`` tensor of summed log-probs; π_t ("prev") is frozen."""
    ratio = eta * tau  # the original code's `ratio`
    # h_t = Δ_{π_θ} − ητ·Δ_{π_ref} − (1 − ητ)·Δ_{π_t},   Δ_π = log π(y_w) − log π(y_l)       (B,)
    return (
        (policy_chosen_logps - policy_rejected_logps)
        - ratio * (ref_chosen_logps - ref_rejected_logps)
        - (1.0 - ratio) * (prev_chosen_logps - prev_rejected_logps)
    )


def inpo_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    prev_chosen_logps: Tensor,
    prev_rejected_logps: Tensor,
    eta,
    tau,
) -> Tensor:
    """L̂_t per pair ``(B,)`` (y_w ≻ y_l as the oracle said); see :func:`inpo_logits`.
    With ητ = 1 it is IPO with β = 1/η against π_ref; with τ = 0, IPO against π_t."""
    h = inpo_logits(
        policy_chosen_logps,
        policy_rejected_logps,
        ref_chosen_logps,
        ref_rejected_logps,
        prev_chosen_logps,
        prev_rejected_logps,
        eta,
        tau,
    )
    # L̂_t = (h_t − η/2)²                                                                       (B,)
    return (h - eta / 2.0) ** 2


def paper_knobs(ratio: float, eta_code: float) -> tuple[float, float]:
    """The original code's (ratio, eta) → the paper's (η, τ): η = 1/eta_code, τ = ratio·eta_code
    (the code's target 1/(2·eta_code) is η/2 and its ratio is ητ)."""
    return 1.0 / eta_code, ratio * eta_code


# --- the exact game: the OMD step in closed form and the regularised Nash -----------------------------------


def omd_step(logp_t: Tensor, ref_logp: Tensor, P: Tensor, eta, tau) -> Tensor:
    """The exact OMD step. ``logp_t, ref_logp (..., K)``, ``P (..., K, K)`` → log π_{t+1} ``(..., K)``."""
    # P(y ≻ π_t) = Σ_j P[y, j]·π_t(j)                                                            (..., K)
    win = prefs.win_rate_vs_policy(P, logp_t.exp())
    # log π_{t+1} = (1 − ητ)·log π_t + ητ·log π_ref + η·P(y ≻ π_t) − log Z                      (..., K)
    return torch.log_softmax((1 - eta * tau) * logp_t + eta * tau * ref_logp + eta * win, dim=-1)


def regularised_nash(P: Tensor, ref_logp: Tensor, tau: float, n_iter: int = 5000, tol: float = 1e-9):
    """π*_τ, the fixed point π ∝ π_ref·exp(P(y ≻ π)/τ) of the OMD step, by OMD with a small step until
    max |log π_{k+1} − log π_k| < ``tol``. Returns (log π*_τ ``(..., K)``, that last change)."""
    if tau <= 0:
        raise ValueError("the regularised Nash needs τ > 0 (at τ = 0 use prefs.nash_policy)")
    eta = NASH_SOLVER_STEP / max(tau, 1.0)
    logp = ref_logp.clone()
    for _ in range(n_iter):
        new = omd_step(logp, ref_logp, P, eta, tau)
        change, logp = (new - logp).abs().max().item(), new
        if change < tol:
            break
    return logp, change


def worst_case_win_rate(P: Tensor, probs: Tensor) -> Tensor:
    """min_y P(π ≻ y) ``(...)``; equals 1/2 − e(π) because P(π ≻ y) = 1 − P(y ≻ π)."""
    # P(π ≻ y) = Σ_i π(i)·P[i, y], then the worst y                                              (...)
    return (probs.unsqueeze(-1) * P).sum(-2).min(-1).values


# --- one iteration: on-policy pairs from π_t, labelled by the oracle, then fit π_{t+1} -------------------------


def sample_pairs(probs: Tensor, P: Tensor, n_pairs: int, gen: torch.Generator):
    """n pairs y, y' ~ π per (arm, prompt) of one seed, labelled by the oracle (y ≻ y' w.p. P[y, y']).
    ``probs (A, M, K)``, ``P (M, K, K)`` → (chosen, rejected, mask) each ``(A, M, n)``; mask drops y = y'."""
    A, M, K = probs.shape
    draws = torch.multinomial(probs.reshape(A * M, K).cpu(), 2 * n_pairs, replacement=True, generator=gen)
    a, b = draws.view(A, M, 2 * n_pairs).to(probs.device).chunk(2, dim=-1)
    a_wins = prefs.sample_preference_labels(P.expand(A, M, K, K), a, b, gen)
    return torch.where(a_wins, a, b), torch.where(a_wins, b, a), a != b


def iteration_losses(logp, prev_logp, ref_logp, pairs, *, eta: float, tau: float, beta: float) -> Tensor:
    """Mean loss over each (arm, seed, prompt)'s kept pairs ``(2, S, M)``: arm 0 is INPO's L̂_t, arm 1 the
    iterative-DPO baseline −log σ(β·[Δ_{π_θ} − Δ_{π_t}]) (DPO with reference π_t).
    ``logp, prev_logp (2, S, M, K)``, ``ref_logp (S, M, K)``, pairs ``(2, S, M, n)``."""
    chosen, rejected, mask = pairs
    # log π(y_w), log π(y_l) for the policy, π_t and π_ref                                       (2, S, M, n)
    pol = logp.gather(-1, chosen), logp.gather(-1, rejected)
    prev = prev_logp.gather(-1, chosen), prev_logp.gather(-1, rejected)
    ref = ref_logp.expand_as(logp).gather(-1, chosen), ref_logp.expand_as(logp).gather(-1, rejected)
    # arm 0: (h_t − η/2)²                                                                        (S, M, n)
    inpo = inpo_loss(pol[0][0], pol[1][0], ref[0][0], ref[1][0], prev[0][0], prev[1][0], eta, tau)
    # arm 1: the baseline, DPO against the previous iterate                                       (S, M, n)
    dpo = dpo_loss(pol[0][1], pol[1][1], prev[0][1], prev[1][1], beta)
    return prefs.masked_mean(torch.stack([inpo, dpo]), mask)


def fit_iteration(
    theta: Tensor,
    ref_logp: Tensor,
    pairs,
    *,
    eta: float,
    tau: float,
    beta: float,
    n_steps: int,
    lr: float,
    on_step: Callable[[int, Tensor, Tensor], None] | None = None,
):
    """Fit π_{t+1} for both arms: θ ← θ_t (``(2, S, M, K)`` logits), ``n_steps`` of Adam (fresh state) on the
    summed per-(arm, seed, prompt) mean losses; they separate, so each table gets its own update.
    Returns the new θ and the last losses ``(2, S, M)``."""
    # π_t is frozen for this iteration: the second reference of the INPO loss, the reference of DPO's
    prev_logp = torch.log_softmax(theta, -1).detach()
    theta = theta.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([theta], lr=lr)
    for step in range(n_steps):
        losses = iteration_losses(torch.log_softmax(theta, -1), prev_logp, ref_logp, pairs, eta=eta, tau=tau, beta=beta)
        if on_step is not None:
            on_step(step, losses.detach(), theta.detach())
        opt.zero_grad(set_to_none=True)
        losses.sum().backward()
        opt.step()
    return theta.detach(), losses.detach()


def inpo_iteration(
    theta: Tensor,
    ref_logp: Tensor,
    P: Tensor,
    generators: Sequence[torch.Generator],
    *,
    n_pairs: int,
    eta: float,
    tau: float,
    beta: float,
    n_steps: int,
    lr: float,
    on_step: Callable[[int, Tensor, Tensor], None] | None = None,
):
    """One INPO iteration t → t+1 (and the baseline's): sample ``n_pairs`` pairs per prompt from the current
    π_t (on-policy), label them by the oracle P, drop y = y', then fit π_{t+1} by :func:`fit_iteration`.
    ``theta (2, S, M, K)`` logits of π_t, ``P (S, M, K, K)``, one generator per seed."""
    probs = torch.log_softmax(theta, -1).exp()  # π_t                                          (2, S, M, K)
    # per seed: y, y' ~ π_t, y_w / y_l by a Bernoulli(P[y, y']) label                      (2, M, n) each
    per_seed = [sample_pairs(probs[:, s], P[s], n_pairs, gen) for s, gen in enumerate(generators)]
    # stacked over seeds                                                                       (2, S, M, n)
    pairs = tuple(torch.stack([q[i] for q in per_seed], dim=1) for i in range(3))
    return fit_iteration(theta, ref_logp, pairs, eta=eta, tau=tau, beta=beta, n_steps=n_steps, lr=lr, on_step=on_step)
