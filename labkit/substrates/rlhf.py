"""Best-of-n sampling and a minimal PPO for language models, written to be read.

Best-of-n: draw n responses from π_ref, keep the one with the highest (proxy) score. Its KL from π_ref
is known in closed form, KL_bon(n) = log n − (n − 1)/n, and its expected gold reward can be estimated
without bias from one pool of N ≥ n samples (:func:`unbiased_best_of_n`).

PPO here is the sequence-level ("bandit") version: the whole response y is ONE action, so
    ρ(θ)  = π_θ(y|x) / π_old(y|x)                   (summed token log-probs; π_old = the sampling policy)
    R̃     = R(x, y) − β_KL · (log π_old(y|x) − log π_ref(y|x))          the KL-penalised reward
    A     = R̃ − V(x)                                the per-sequence advantage (no GAE, no discounting)
    L_clip = −min(ρ·A, clip(ρ, 1 − ε, 1 + ε)·A)     the clipped surrogate
    L_V    = ½ (V(x) − R̃)²                           the value head's regression loss
This is what TRL's RLOO trainer optimises per sequence (with a leave-one-out baseline instead of V(x)).
A token-level PPO would instead give every token a reward (the KL term per token, R at the end) and use
:func:`gae_advantages`; it is here for completeness and tested, but :func:`ppo_step` does not use it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from labkit.models.mlp import MLP
from labkit.models.tiny_lm import prompt_features, sample, sequence_logprobs

# --------------------------------------------------------------------------------------------- best-of-n


def best_of_n(samples: torch.Tensor, scores: torch.Tensor, n: int):
    """Keep the highest-scoring of the first ``n`` candidates of each group (the pool is i.i.d., so the first n
    are a draw of n). ``scores (..., N)``, ``samples (..., N, *rest)`` → (samples ``(..., *rest)``, scores
    ``(...)``, index ``(...)``)."""
    if not 1 <= n <= scores.shape[-1]:
        raise ValueError(f"n must be in [1, {scores.shape[-1]}] (the pool size), got {n}")
    best = scores[..., :n].argmax(-1)
    lead = scores.dim() - 1
    idx = best.view(*best.shape, 1, *([1] * (samples.dim() - lead - 1)))
    picked = samples.gather(lead, idx.expand(*best.shape, 1, *samples.shape[lead + 1 :])).squeeze(lead)
    return picked, scores.gather(-1, best.unsqueeze(-1)).squeeze(-1), best


def best_of_n_kl(n) -> float | torch.Tensor:
    """KL(π_bon ‖ π_ref) = log n − (n − 1)/n (continuous scores, no ties): 0 at n = 1, grows like log n."""
    if isinstance(n, torch.Tensor):
        return torch.log(n.to(torch.float64)) - (n - 1) / n
    return math.log(n) - (n - 1) / n


def unbiased_best_of_n(gold: torch.Tensor, proxy: torch.Tensor, ns: Sequence[int]) -> torch.Tensor:
    """E[gold of the best-of-n by proxy] from one pool of N samples, for every n in ``ns``.

    Sort the pool by proxy ascending (gold g_(1) … g_(N) in that order). Of the C(N, n) equally likely n-subsets,
    C(i−1, n−1) have the i-th as their proxy-best, so
        E_n = Σ_{i=n}^{N} C(i−1, n−1)/C(N, n) · g_(i)          (binomials in log space via lgamma)
    ``gold``, ``proxy`` ``(..., N)`` → ``(len(ns), ...)`` float64. Ties in proxy are broken by pool order.
    """
    N = proxy.shape[-1]
    g = gold.double().gather(-1, torch.sort(proxy, dim=-1, stable=True).indices)
    i = torch.arange(1, N + 1, dtype=torch.float64, device=g.device)
    out = []
    for n in ns:
        if not 1 <= n <= N:
            raise ValueError(f"every n must be in [1, {N}], got {n}")
        log_w = _log_binom(i - 1, n - 1) - _log_binom(torch.tensor(float(N), dtype=torch.float64), n)
        w = torch.where(i >= n, log_w.exp(), torch.zeros_like(i))
        out.append((g * w).sum(-1))
    return torch.stack(out)


def _log_binom(a: torch.Tensor, b: float) -> torch.Tensor:
    """log C(a, b) = lgamma(a + 1) − lgamma(b + 1) − lgamma(a − b + 1) (−inf where a < b)."""
    b = torch.as_tensor(float(b), dtype=torch.float64)
    valid = a >= b
    safe = torch.where(valid, a, b)
    return torch.where(
        valid,
        torch.lgamma(safe + 1) - torch.lgamma(b + 1) - torch.lgamma(safe - b + 1),
        torch.full_like(safe, -math.inf),
    )


# --------------------------------------------------------------------------------------------- PPO pieces


class ValueHead(nn.Module):
    """V(x) = MLP(φ(x)) on prompt features φ (e.g. :func:`labkit.models.tiny_lm.prompt_features` of the frozen
    reference: mean-pooled final hidden states). ``(B, d)`` → ``(B,)``."""

    def __init__(self, in_dim: int, hidden: int = 64):
        super().__init__()
        self.net = MLP(in_dim, [hidden], 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features).squeeze(-1)


def kl_penalised_reward(reward, logps, ref_logps, kl_coef):
    """R̃ = R − β_KL·(log π(y|x) − log π_ref(y|x)): the reward minus the single-sample (k1) KL estimate."""
    return reward - kl_coef * (logps - ref_logps)


def sequence_advantages(rewards, values, normalise: bool = False):
    """A = R̃ − V(x) per sequence (detached); ``normalise`` whitens over the batch: (A − mean)/(std + 1e-8)."""
    adv = (rewards - values).detach()
    return whiten(adv) if normalise else adv


def whiten(x: torch.Tensor) -> torch.Tensor:
    """(x − mean)/(std + 1e-8) over all entries."""
    return (x - x.mean()) / (x.std() + 1e-8) if x.numel() > 1 else x - x.mean()


def gae_advantages(rewards: torch.Tensor, values: torch.Tensor, gamma: float = 1.0, lam: float = 0.95) -> torch.Tensor:
    """Generalised advantage estimation over the token dim, V after the last token = 0:
        δ_t = r_t + γ·V_{t+1} − V_t,        A_t = δ_t + γλ·A_{t+1}          (``(B, T)`` → ``(B, T)``)
    λ = 1 gives the Monte-Carlo return minus V; λ = 0 the one-step TD error."""
    T = rewards.shape[-1]
    next_v = torch.cat([values[..., 1:], torch.zeros_like(values[..., :1])], -1)
    delta = rewards + gamma * next_v - values
    adv, running = torch.zeros_like(rewards), torch.zeros_like(rewards[..., 0])
    for t in reversed(range(T)):
        running = delta[..., t] + gamma * lam * running
        adv[..., t] = running
    return adv


def clipped_surrogate_loss(logps, old_logps, advantages, clip_eps: float = 0.2):
    """L = −min(ρ·A, clip(ρ, 1 − ε, 1 + ε)·A) with ρ = exp(log π_θ − log π_old), per example.

    The min makes it pessimistic: once ρ leaves [1 − ε, 1 + ε] in the direction the advantage favours, the
    gradient is zero, so one batch cannot move the policy far.
    """
    ratio = torch.exp(logps - old_logps)
    return -torch.min(ratio * advantages, ratio.clamp(1 - clip_eps, 1 + clip_eps) * advantages)


def value_loss(values, returns):
    """L_V = ½ (V − R̃)², per example."""
    return 0.5 * (values - returns) ** 2


# --------------------------------------------------------------------------------------------- one PPO iteration


@dataclass
class Rollout:
    """One batch of on-policy experience: prompts ``(B, P)``, responses ``(B, L)``, the reward R, the sampling
    policy's and the reference's log π(y|x), the KL-penalised reward R̃ and the value features φ(x)."""

    prompts: torch.Tensor
    responses: torch.Tensor
    reward: torch.Tensor
    old_logps: torch.Tensor
    ref_logps: torch.Tensor
    shaped_reward: torch.Tensor
    features: torch.Tensor

    @property
    def kl(self) -> torch.Tensor:
        """The batch's k1 estimate of KL(π_old‖π_ref) (valid at temperature 1)."""
        return (self.old_logps - self.ref_logps).mean()


@torch.no_grad()
def collect_rollout(
    policy: nn.Module,
    ref: nn.Module,
    prompts: torch.Tensor,
    length: int,
    reward_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    kl_coef: float,
    generator: torch.Generator | None = None,
) -> Rollout:
    """Sample y ~ π(·|x) at temperature 1, score R = reward_fn(x, y), and precompute log π_old, log π_ref, R̃, φ(x)."""
    responses = sample(policy, prompts, length, 1.0, generator)
    reward = reward_fn(prompts, responses).float()
    old, ref_lp = sequence_logprobs(policy, prompts, responses), sequence_logprobs(ref, prompts, responses)
    return Rollout(
        prompts,
        responses,
        reward,
        old,
        ref_lp,
        kl_penalised_reward(reward, old, ref_lp, kl_coef),
        prompt_features(ref, prompts),
    )


def ppo_step(
    policy: nn.Module,
    value_head: nn.Module,
    optimizer: torch.optim.Optimizer,
    rollout: Rollout,
    clip_eps: float = 0.2,
    epochs: int = 4,
    value_coef: float = 0.5,
    max_grad_norm: float = 1.0,
    normalise_advantages: bool = True,
) -> dict[str, float]:
    """``epochs`` full-batch gradient steps on mean(L_clip) + c_V·mean(L_V) for one rollout.

    A = R̃ − V(x) is computed once, before the first step (then fixed); ``optimizer`` holds the policy's and
    the value head's parameters. Returns the last epoch's losses, the fraction of clipped ratios, and the batch's
    mean reward and KL."""
    with torch.no_grad():
        adv = sequence_advantages(rollout.shaped_reward, value_head(rollout.features), normalise_advantages)
    policy.train()
    for _ in range(epochs):
        logps = sequence_logprobs(policy, rollout.prompts, rollout.responses)
        pg = clipped_surrogate_loss(logps, rollout.old_logps, adv, clip_eps).mean()
        vf = value_loss(value_head(rollout.features), rollout.shaped_reward).mean()
        optimizer.zero_grad(set_to_none=True)
        (pg + value_coef * vf).backward()
        params = [p for group in optimizer.param_groups for p in group["params"]]
        nn.utils.clip_grad_norm_(params, max_grad_norm)
        optimizer.step()
    with torch.no_grad():
        clipped = ((logps - rollout.old_logps).exp() - 1).abs() > clip_eps
    return {
        "policy_loss": float(pg.detach()),
        "value_loss": float(vf.detach()),
        "clip_frac": float(clipped.float().mean()),
        "reward": float(rollout.reward.mean()),
        "kl": float(rollout.kl),
    }
