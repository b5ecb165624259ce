"""Reward Model Ensembles Help Mitigate Overoptimization — Coste, Anwar, Kirk, Krueger (arXiv 2310.02743, ICLR 2024).

k proxy reward models R_1 … R_k (same preference data, different seeds), each standardised over the SFT policy's
samples, are combined into one conservative score:

    mean:  R_mean(y) = (1/k) Σ_i R_i(y)
    WCO:   R_WCO(y)  = min_i R_i(y)                              worst-case optimisation
    UWO:   R_UWO(y)  = R_mean(y) − λ·Var_i R_i(y)                 uncertainty-weighted optimisation

(population variance in the paper's best-of-n code, unbiased in its PPO code). The policy is optimised against the
score by best-of-n — estimated without bias from one pool of N samples sorted by the score,

    E[gold of best-of-n] = Σ_{i=n}^{N} C(i−1, n−1)/C(N, n) · g_(i),     KL_bon(n) = log n − (n − 1)/n,

(:func:`evaluate_best_of_n`) — or by PPO with a KL penalty to the SFT policy (:func:`train_gaussian_ppo`, on a
Gaussian policy whose gold reward and KL are exact). Where the members disagree, typically off the training
distribution, the conservative score is low, so the optimiser does not exploit one member's errors there.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields

import numpy as np
import torch

from labkit.models.reward import (
    RewardEnsemble,
    mean_objective,
    standardise,
    uncertainty_weighted_objective,
    worst_case_objective,
)
from labkit.substrates.rlhf import clipped_surrogate_loss, unbiased_best_of_n

#: PPO's clipping range ε
CLIP_EPS = 0.2


# --------------------------------------------------------------------------------------------- the objectives


def objective_scores(S: torch.Tensor, lam: float, unbiased: bool = False) -> dict[str, torch.Tensor]:
    """Standardised member scores ``S (k, N)`` → one ``(N,)`` score per objective: "single" (member 1 alone),
    "mean", "wco", "uwo"."""
    return {
        # a single RM: R_1(y)
        "single": S[0],
        # R_mean(y) = (1/k) Σ_i R_i(y)
        "mean": mean_objective(S),
        # R_WCO(y) = min_i R_i(y)
        "wco": worst_case_objective(S),
        # R_UWO(y) = R_mean(y) − λ·Var_i R_i(y)   (population variance unless ``unbiased``)
        "uwo": uncertainty_weighted_objective(S, lam, unbiased),
    }


# --------------------------------------------------------------------------------------------- best-of-n


def powers_of_two(max_n: int) -> list[int]:
    """n = 1, 2, 4, …, up to max_n (and max_n itself if it is not a power of two)."""
    ns = [2**i for i in range(int(math.log2(max_n)) + 1)]
    return ns if ns[-1] == max_n else ns + [max_n]


def zscore(x: torch.Tensor) -> torch.Tensor:
    """(x − mean x)/std x over the pool (the last dim)."""
    return (x - x.mean(-1, keepdim=True)) / x.std(-1, keepdim=True).clamp_min(1e-12)


@dataclass
class BonCurves:
    """Best-of-n by one score, per n (arrays of len(ns)): E[gold], E[proxy_z], E[gold_z] and the gap."""

    gold_reward: np.ndarray
    proxy_z: np.ndarray
    gold_z: np.ndarray
    gap: np.ndarray

    def items(self):
        """(metric name, array) pairs, the names the history rows use."""
        return [(f.name, getattr(self, f.name)) for f in fields(self)]

    @staticmethod
    def mean_of(curves: Sequence[BonCurves]) -> BonCurves:
        """The curves averaged (e.g. the k single-RM curves)."""
        return BonCurves(*(np.mean([getattr(c, f.name) for c in curves], 0) for f in fields(BonCurves)))


def bon_curves(gold: torch.Tensor, score: torch.Tensor, ns) -> BonCurves:
    """Best-of-n by ``score`` over one pool ``(N,)``, for each n in ``ns``.

    proxy_z and gold_z are the score and the gold reward z-scored over the pool, so both are 0 at n = 1 and the
    over-optimisation gap = E[proxy_z] − E[gold_z] is in pool-standard-deviation units."""
    # E_n[v] = Σ_{i≥n} C(i−1, n−1)/C(N, n) · v_(i), the pool sorted by the score; for v = gold, proxy_z, gold_z
    est = unbiased_best_of_n(torch.stack([gold, zscore(score), zscore(gold)]), score.expand(3, -1), ns).numpy()
    return BonCurves(est[:, 0], est[:, 1], est[:, 2], est[:, 1] - est[:, 2])


def evaluate_best_of_n(
    ensemble: RewardEnsemble, pool: torch.Tensor, gold_pool: torch.Tensor, ns: Sequence[int], lam: float
) -> dict[str, BonCurves]:
    """One best-of-n evaluation of every objective on one pool of the SFT policy's samples ``pool (N, d)``.

    Keys: "single", "mean", "wco", "uwo" (:func:`objective_scores`) and "single_mean_of_k": the single-RM curves
    of all k members, averaged (the paper's single-RM baseline)."""
    # S[i, j] = standardise(R_i(y_j)) with each member's mean and std over the pool      (k, N)
    S = standardise(ensemble.member_scores(pool), ensemble.mean, ensemble.std)
    # score = {single: S[0], mean: S.mean(0), wco: S.min(0), uwo: S.mean(0) − λ·S.var(0)}; best-of-n by each
    out = {name: bon_curves(gold_pool, score, ns) for name, score in objective_scores(S, lam).items()}
    out["single_mean_of_k"] = BonCurves.mean_of([bon_curves(gold_pool, S[i], ns) for i in range(len(S))])
    return out


# --------------------------------------------------------------------------------------------- PPO on a Gaussian policy


def gaussian_logp(y: torch.Tensor, mu: torch.Tensor, log_sigma: torch.Tensor) -> torch.Tensor:
    """log N(y; μ, diag σ²). ``y (B, d)`` → ``(B,)``."""
    # log π(y) = −Σ_j [(y_j − μ_j)²/(2σ_j²) + log σ_j + ½ log 2π]
    return -(((y - mu) / log_sigma.exp()) ** 2 / 2 + log_sigma + 0.5 * math.log(2 * math.pi)).sum(-1)


def gaussian_kl(mu: torch.Tensor, log_sigma: torch.Tensor) -> torch.Tensor:
    """KL(π ‖ π_SFT) with π = N(μ, diag σ²) and π_SFT = N(0, I), exact."""
    # KL = ½ Σ_j (σ_j² + μ_j² − 1 − 2 log σ_j)
    return 0.5 * ((2 * log_sigma).exp() + mu**2 - 1 - 2 * log_sigma).sum(-1)


def gaussian_gold(mu: torch.Tensor, log_sigma: torch.Tensor, w: torch.Tensor, curvature: float) -> torch.Tensor:
    """The gold reward of the policy, exact for r*(y) = wᵀy − c‖y‖²."""
    # E_{y∼N(μ, diag σ²)}[wᵀy − c‖y‖²] = wᵀμ − c(‖μ‖² + Σ_j σ_j²)
    return mu @ w - curvature * (mu.pow(2).sum(-1) + (2 * log_sigma).exp().sum(-1))


def gaussian_ppo_loss(y, old_logp, advantages, mu, log_sigma, beta_kl: float, clip_eps: float = CLIP_EPS):
    """PPO-clip with the analytic KL penalty; ``y (B, d)``, ``old_logp``, ``advantages`` ``(B,)`` → a scalar."""
    # L = mean_b −min(ρ_b A_b, clip(ρ_b, 1 ± ε) A_b) + β_KL·KL(π_θ ‖ π_SFT),   ρ_b = π_θ(y_b)/π_old(y_b)
    surrogate = clipped_surrogate_loss(gaussian_logp(y, mu, log_sigma), old_logp, advantages, clip_eps).mean()
    return surrogate + beta_kl * gaussian_kl(mu, log_sigma)


def train_gaussian_ppo(
    reward_fn: Callable[[torch.Tensor], torch.Tensor],
    w: torch.Tensor,
    *,
    beta_kl: float,
    steps: int,
    batch: int,
    epochs: int,
    lr: float,
    curvature: float,
    seed: int,
    on_log: Callable | None = None,
    log_every: int = 10,
) -> tuple[float, float, float]:
    """PPO on π = N(μ, diag σ²) from π_SFT = N(0, I) against the (combined) proxy score ``reward_fn``.

    Each iteration samples ``batch`` responses, takes A = R(y) − mean R (the batch mean as baseline, reward units so
    β_KL keeps its meaning), then ``epochs`` Adam steps on :func:`gaussian_ppo_loss`. ``on_log(step, gold, proxy,
    kl, (μ, log σ))`` every ``log_every`` iterations and at the end; returns the last (gold, proxy, kl). Sampling uses
    ``Generator(seed)``."""
    gen = torch.Generator().manual_seed(int(seed))
    mu = torch.zeros(len(w), requires_grad=True)
    log_sigma = torch.zeros(len(w), requires_grad=True)
    opt = torch.optim.Adam([mu, log_sigma], lr=lr)
    for step in range(steps + 1):
        with torch.no_grad():
            # y ~ π_old = N(μ, diag σ²)                                                    (B, d)
            y = mu + log_sigma.exp() * torch.randn(batch, len(w), generator=gen)
            reward = reward_fn(y)
            old_logp = gaussian_logp(y, mu, log_sigma)
            stats = (
                float(gaussian_gold(mu, log_sigma, w, curvature)),
                float(reward.mean()),
                float(gaussian_kl(mu, log_sigma)),
            )
        if on_log is not None and (step % log_every == 0 or step == steps):
            on_log(step, *stats, (mu.detach(), log_sigma.detach()))
        if step == steps:
            break
        # A_b = R(y_b) − mean_b R(y_b)
        adv = reward - reward.mean()
        for _ in range(epochs):
            loss = gaussian_ppo_loss(y, old_logp, adv, mu, log_sigma, beta_kl)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return stats


def ppo_rewards(ens: RewardEnsemble, lam: float) -> dict[str, Callable]:
    """Reward functions y → score for PPO: single (member 1 alone), mean, WCO, UWO (unbiased variance, as the
    paper's PPO code)."""
    single = RewardEnsemble(ens.members[:1], ens.mean[:1], ens.std[:1])
    return {
        "single": lambda y: single.score(y, "mean"),
        "mean": lambda y: ens.score(y, "mean"),
        "wco": lambda y: ens.score(y, "wco"),
        "uwo": lambda y: ens.score(y, "uwo", lam, unbiased=True),
    }
