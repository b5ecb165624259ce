"""A-LoL — Improving Language Models with Advantage-based Offline Policy Gradients ("Leftover Lunch" RL).

Baheti, Lu, Brahman, Le Bras, Sap, Riedl, arXiv 2305.14718 (ICLR 2024).

The whole response y to a prompt x is ONE action with a sequence-level reward R(x, y), and learning is offline
on a fixed data set D = {(x, y, R)}: no new generations. With π_ref the SFT model (NLL on all of D):

    1. value of π_ref:  V(x) ≈ E_{y ~ π_ref(·|x)} R(x, y), fitted on π_ref's OWN greedy outputs for held-out prompts
    2. advantage:       A = R(x, y) − V(x),      A⁺ = max(A, 0)        (negative-advantage data gets weight 0)
    3. sampling:        uniform over D, or "priority" with P(i) ∝ A⁺_i
    4. loss (π_θ starts at π_ref; every weight is detached, only the NLL carries a gradient):

        L_A-LoL = mean_b  A⁺_b · clip(r_b, 1−ε, 1+ε) · (−log π_θ(y_b|x_b)),   r_b = π_θ(y_b|x_b) / π_ref(y_b|x_b)

       with log π(y|x) = Σ_t log π(y_t|x, y_<t), a SUM over response tokens. Its gradient
       −A⁺·clip(r)·∇log π_θ(y|x) is an offline policy gradient with the whole sequence as the action.

Variants: ref-free (no ratio), seq (a per-token ratio inside the sum), KL (no clip, + β_KL·(log π_θ − log π_ref)).
Baselines: NLL, reward-weighted BC (wBC: R·NLL), R-LoL (R in place of A⁺), R-GOLD (floored token weights).
Every loss below returns the per-example value, shape (B,); the training step takes the mean.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from labkit.models.tiny_lm import TinyLM, token_logprobs
from labkit.substrates.rlhf import ValueHead

# --- 2. the advantage filter -------------------------------------------------------------------------------


def positive_advantage(reward: Tensor, value: Tensor) -> Tensor:
    """A⁺ for every example; ``reward (N,)``, ``value (N,)`` or a scalar → ``(N,)``."""
    # A⁺ = max(R(x, y) − V(x), 0)
    return (reward - value).clamp_min(0.0)


def positive_fraction(adv: Tensor) -> float:
    """Share of examples with A > 0: the "leftovers" A-LoL learns from."""
    return float((adv > 0).float().mean())


# --- 4. the losses; log-probs are sums over response tokens, ``(B,)`` -------------------------------------


def clipped_ratio(logp: Tensor, ref_logp: Tensor, eps: float) -> Tensor:
    """The detached importance weight; ``(B,)`` or per token ``(B, L)``. ε = 0 pins it to 1."""
    # clip(r, 1−ε, 1+ε),  r = exp(log π_θ − log π_ref), no gradient
    return torch.exp(logp - ref_logp).detach().clamp(1.0 - eps, 1.0 + eps)


def nll_loss(logp: Tensor) -> Tensor:
    """Plain fine-tuning / behaviour cloning on everything."""
    # NLL = −log π_θ(y|x)
    return -logp


def wbc_loss(logp: Tensor, reward: Tensor) -> Tensor:
    """Reward-weighted behaviour cloning."""
    # wBC = R · (−log π_θ(y|x))
    return reward * -logp


def a_lol_loss(logp: Tensor, ref_logp: Tensor, adv_plus: Tensor, eps: float) -> Tensor:
    """A-LoL; the gradient with respect to log π_θ is −A⁺·clip(r)."""
    # L = A⁺ · clip(π_θ/π_ref, 1−ε, 1+ε) · (−log π_θ(y|x))
    return adv_plus * clipped_ratio(logp, ref_logp, eps) * -logp


def a_lol_ref_free_loss(logp: Tensor, adv_plus: Tensor) -> Tensor:
    """A-LoL ref-free: no importance weight, no π_ref forward at train time."""
    # L = A⁺ · (−log π_θ(y|x))
    return adv_plus * -logp


def a_lol_seq_loss(token_logp: Tensor, ref_token_logp: Tensor, adv_plus: Tensor, eps: float) -> Tensor:
    """A-LoL seq: a per-token ratio r_t, clipped inside the sum. ``token_logp, ref_token_logp (B, L)``."""
    # L = A⁺ · Σ_t clip(r_t, 1−ε, 1+ε) · (−log π_θ(y_t|x, y_<t)),  r_t = π_θ(y_t|·)/π_ref(y_t|·)
    return adv_plus * (clipped_ratio(token_logp, ref_token_logp, eps) * -token_logp).sum(-1)


def a_lol_kl_loss(logp: Tensor, ref_logp: Tensor, adv_plus: Tensor, beta: float) -> Tensor:
    """A-LoL KL: no clip (the official code asserts ε = 0 here), a KL-like penalty instead."""
    # L = A⁺ · (−log π_θ(y|x)) + β_KL · (log π_θ(y|x) − log π_ref(y|x))
    return adv_plus * -logp + beta * (logp - ref_logp)


#: R-GOLD's floor u on the detached per-token probability weights (the GOLD paper's 0.1)
GOLD_FLOOR = 0.1


def r_gold_loss(token_logp: Tensor, reward: Tensor, floor: float = GOLD_FLOOR) -> Tensor:
    """R-GOLD (reward-based GOLD). ``token_logp (B, L)``."""
    # L = R · Σ_t max(π_θ(y_t|·), u)_detached · (−log π_θ(y_t|·))
    return reward * (token_logp.detach().exp().clamp_min(floor) * -token_logp).sum(-1)


def r_lol_loss(logp: Tensor, ref_logp: Tensor, reward: Tensor, eps: float) -> Tensor:
    """R-LoL: A-LoL with the reward in place of the advantage."""
    # L = R · clip(π_θ/π_ref, 1−ε, 1+ε) · (−log π_θ(y|x))
    return a_lol_loss(logp, ref_logp, reward, eps)


# --- 1. the value of π_ref --------------------------------------------------------------------------------

#: the value head: hidden width, Adam lr, share of prompts held out to pick the step, and the output cap
#: (the official code caps V at max_value = 1, the top of the reward's range)
VALUE_HIDDEN, VALUE_LR, VALUE_HOLDOUT, VALUE_MAX = 64, 1e-3, 0.2, 1.0


def fit_value_head(
    features: Tensor,
    targets: Tensor,
    steps: int,
    generator: torch.Generator,
    *,
    hidden: int = VALUE_HIDDEN,
    lr: float = VALUE_LR,
    max_value: float = VALUE_MAX,
    holdout: float = VALUE_HOLDOUT,
):
    """Fit V(x) = max_value·σ(MLP(φ(x))) by full-batch Adam on the MSE to ``targets`` = R of π_ref's own greedy
    outputs; ``features (N, d)`` are π_ref's frozen prompt features φ(x). Keeps the step with the lowest MSE on
    a held-out share of the prompts (the official code keeps the best epoch). Returns (V, that MSE)."""
    n = features.shape[0]
    order = torch.randperm(n, generator=generator)
    n_hold = max(1, int(holdout * n))
    hold, fit = order[:n_hold], order[n_hold:]
    head = ValueHead(features.shape[1], hidden)

    def value(f: Tensor) -> Tensor:
        # V(x) = V_max · σ(MLP(φ(x))),  (N, d) → (N,)
        return max_value * torch.sigmoid(head(f))

    opt = torch.optim.Adam(head.parameters(), lr=lr)
    best, best_state = math.inf, None
    for _ in range(steps):
        # MSE = mean_i (V(x_i) − R(x_i, ŷ_ref,i))²
        loss = (value(features[fit]) - targets[fit]).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            mse = float((value(features[hold]) - targets[hold]).pow(2).mean())
        if mse < best:
            best, best_state = mse, {k: v.clone() for k, v in head.state_dict().items()}
    head.load_state_dict(best_state)
    head.requires_grad_(False)
    return value, best


# --- 3. which rows a step sees ------------------------------------------------------------------------------


def priority_probs(adv_plus: Tensor) -> Tensor:
    """The official "good_priority" sampling: P(i) = A⁺_i / Σ_j A⁺_j (uniform if no row is positive). ``(N,)``."""
    total = adv_plus.sum()
    if float(total) <= 0:
        return torch.full_like(adv_plus, 1.0 / len(adv_plus))
    # P(i) ∝ A⁺_i: zero-advantage rows are never drawn
    return adv_plus / total


def draw_rows(n: int, batch_size: int, generator: torch.Generator, probs: Tensor | None = None) -> Tensor:
    """``batch_size`` row indices in [0, n): uniform, or from ``probs`` (with replacement). ``(B,)``."""
    if probs is None:
        return torch.randint(n, (batch_size,), generator=generator)
    return torch.multinomial(probs, batch_size, replacement=True, generator=generator)


# --- the algorithm: offline training of π_θ from π_ref on the fixed data ------------------------------------


def a_lol_step(policy: TinyLM, opt, prompts, responses, ref_token_logp, adv_plus, *, eps: float, grad_clip: float):
    """One A-LoL update on a batch: ``prompts (B, P)``, ``responses (B, L)``, ``ref_token_logp (B, L)``
    (π_ref's, precomputed), ``adv_plus (B,)``. Returns the loss and the batch's ratios r ``(B,)``."""
    # log π_θ(y|x) = Σ_t log π_θ(y_t|x, y_<t),  (B,)
    logp = token_logprobs(policy, prompts, responses).sum(-1)
    ref_logp = ref_token_logp.sum(-1)
    # L = mean_b A⁺_b · clip(r_b, 1−ε, 1+ε) · (−log π_θ(y_b|x_b))
    loss = a_lol_loss(logp, ref_logp, adv_plus, eps).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(policy.parameters(), grad_clip)
    opt.step()
    return loss.detach(), torch.exp(logp - ref_logp).detach()


def a_lol_train(
    ref: TinyLM,
    prompts: Tensor,
    responses: Tensor,
    adv_plus: Tensor,
    *,
    eps: float,
    lr: float,
    n_steps: int,
    batch_size: int,
    grad_clip: float,
    priority: bool,
    generator: torch.Generator,
) -> TinyLM:
    """A-LoL on the offline set (``prompts (N, P)``, ``responses (N, L)``, precomputed ``adv_plus (N,)``):
    π_θ starts as a copy of π_ref and takes ``n_steps`` AdamW steps of :func:`a_lol_step`."""
    import copy

    policy = copy.deepcopy(ref).train().requires_grad_(True)
    with torch.no_grad():  # π_ref is fixed: its token log-probs once, (N, L)
        ref_tok = token_logprobs(ref, prompts, responses)
    probs = priority_probs(adv_plus) if priority else None
    opt = torch.optim.AdamW(policy.parameters(), lr=lr, weight_decay=0.0)
    for _ in range(n_steps):
        idx = draw_rows(len(adv_plus), batch_size, generator, probs)
        a_lol_step(policy, opt, prompts[idx], responses[idx], ref_tok[idx], adv_plus[idx], eps=eps, grad_clip=grad_clip)
    return policy.eval()
