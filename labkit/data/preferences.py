"""Preference data with a known "gold" reward: a K-armed bandit of responses, a reference policy,
Bradley–Terry-labelled pairs, and the log-linear tilted policy that DPO-family losses train on it.

Everything is exact: a policy is a distribution over all K responses (a log-softmax), so the gold
reward, KL and probability mass are computed by enumeration, with no sampling noise.

Shapes: any leading batch dims (``...``) are independent problems, e.g. one per seed (``S``) or per
prompt. ``features`` is ``(..., K, d)``, ``gold`` and ``ref_logp`` are ``(..., K)``, pairs are index
tensors ``(..., N)`` into the K responses with a boolean ``mask`` that marks the pairs that count.

>>> bandit = make_gold_bandit(n_responses=5, dim=2, seeds=[0, 1])
>>> bandit.features.shape, [round(t, 6) for t in bandit.ref_logp.exp().sum(-1).tolist()]
(torch.Size([2, 5, 2]), [1.0, 1.0])
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class GoldBandit:
    """K responses per problem: features φ(a), gold reward r*(a), reference log-probs log π_ref(a).

    ``w_star`` is the gold reward's linear direction (``(..., d)``); ``seeds`` the generator seed of
    each problem along the first dim.
    """

    features: torch.Tensor
    gold: torch.Tensor
    ref_logp: torch.Tensor
    w_star: torch.Tensor
    seeds: tuple[int, ...] = ()

    def to(self, device) -> GoldBandit:
        return GoldBandit(
            self.features.to(device), self.gold.to(device), self.ref_logp.to(device), self.w_star.to(device), self.seeds
        )


@dataclass
class PreferencePairs:
    """Index pairs (chosen y_w, rejected y_l) into the K responses; ``mask`` is False for dropped ties."""

    chosen: torch.Tensor
    rejected: torch.Tensor
    mask: torch.Tensor

    def to(self, device) -> PreferencePairs:
        return PreferencePairs(self.chosen.to(device), self.rejected.to(device), self.mask.to(device))

    @property
    def counts(self) -> torch.Tensor:
        """Number of kept pairs per problem, ``(...)``."""
        return self.mask.sum(-1)


def random_features(n_responses: int, dim: int, generator: torch.Generator) -> torch.Tensor:
    """φ(a) = z·u with z ~ N(0, I_d) and u ~ U(0, 2): directions at random, norms varied. ``(K, d)``."""
    z = torch.randn(n_responses, dim, generator=generator)
    u = 2.0 * torch.rand(n_responses, 1, generator=generator)
    return z * u


def concave_gold_reward(features: torch.Tensor, w_star: torch.Tensor) -> torch.Tensor:
    """r*(a) = w*·φ(a) − ½‖φ(a)‖²: rewards a direction, punishes far-out responses. ``(..., K)``."""
    return (features * w_star.unsqueeze(-2)).sum(-1) - 0.5 * features.pow(2).sum(-1)


def gaussian_reference_logp(features: torch.Tensor, width: float = 1.0) -> torch.Tensor:
    """log π_ref(a) = −‖φ(a)‖²/width − log Σ_b exp(−‖φ(b)‖²/width): covers small-norm responses.

    ``width`` is the coverage: larger puts more reference mass on far-out responses.
    """
    return torch.log_softmax(-features.pow(2).sum(-1) / width, dim=-1)


def make_gold_bandit(
    n_responses: int = 200, dim: int = 8, seeds=(0,), ref_width: float = 1.0, w_norm: float | None = None
) -> GoldBandit:
    """One bandit per seed, stacked on a first dim (each from its own ``torch.Generator(seed)``, on CPU,
    so seed s gives the same problem whatever the other seeds). ``w* ~ N(0, I_d)``, rescaled to norm
    ``w_norm`` if given; features, gold reward and reference as in :func:`random_features`,
    :func:`concave_gold_reward` and :func:`gaussian_reference_logp`."""
    feats, ws = [], []
    for s in seeds:
        gen = torch.Generator().manual_seed(int(s))
        feats.append(random_features(n_responses, dim, gen))
        w = torch.randn(dim, generator=gen)
        ws.append(w if w_norm is None else w_norm * w / w.norm())
    features, w_star = torch.stack(feats), torch.stack(ws)
    return GoldBandit(
        features,
        concave_gold_reward(features, w_star),
        gaussian_reference_logp(features, ref_width),
        w_star,
        tuple(int(s) for s in seeds),
    )


def bradley_terry_prob(reward_a: torch.Tensor, reward_b: torch.Tensor) -> torch.Tensor:
    """P(a ≻ b) = σ(r(a) − r(b))."""
    return torch.sigmoid(reward_a - reward_b)


def sample_bt_pairs(gold: torch.Tensor, ref_logp: torch.Tensor, n_pairs: int, seeds) -> PreferencePairs:
    """N pairs (a, b) ~ π_ref × π_ref per problem; a wins with P = σ(r*(a) − r*(b)); ties (a = b) dropped
    via ``mask``. Problem i draws from ``torch.Generator(seeds[i] + 10**6)`` on CPU."""
    gold, ref_logp = gold.cpu(), ref_logp.cpu()
    chosen, rejected = [], []
    for i, s in enumerate(seeds):
        gen = torch.Generator().manual_seed(int(s) + 10**6)
        probs = ref_logp[i].exp()
        a = torch.multinomial(probs, n_pairs, replacement=True, generator=gen)
        b = torch.multinomial(probs, n_pairs, replacement=True, generator=gen)
        a_wins = torch.rand(n_pairs, generator=gen) < bradley_terry_prob(gold[i][a], gold[i][b])
        chosen.append(torch.where(a_wins, a, b))
        rejected.append(torch.where(a_wins, b, a))
    chosen, rejected = torch.stack(chosen), torch.stack(rejected)
    return PreferencePairs(chosen, rejected, chosen != rejected)


def tilted_log_probs(theta: torch.Tensor, features: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """log π_θ(a) = log π_ref(a) + θ·φ(a) − log Σ_b π_ref(b) exp(θ·φ(b)), the log-linear tilt of π_ref.

    ``theta`` is ``(*A, ..., d)`` for extra leading dims ``A`` (e.g. arms) over ``features (..., K, d)``;
    returns ``(*A, ..., K)``. At θ = 0 it is π_ref; the implicit DPO reward is β·θ·φ(a) + const.
    """
    return torch.log_softmax(ref_logp + torch.einsum("...kd,...d->...k", features, theta), dim=-1)


def gather_pairs(logp: torch.Tensor, pairs: PreferencePairs) -> tuple[torch.Tensor, torch.Tensor]:
    """(log π(y_w), log π(y_l)) for every pair: ``logp (*A, ..., K)`` → two ``(*A, ..., N)``."""
    shape = logp.shape[:-1] + pairs.chosen.shape[-1:]
    return (logp.gather(-1, pairs.chosen.expand(shape)), logp.gather(-1, pairs.rejected.expand(shape)))


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Σ_n mask_n·v_n / Σ_n mask_n over the last dim (the kept pairs)."""
    mask = mask.to(values.dtype)
    return (values * mask).sum(-1) / mask.sum(-1).clamp_min(1.0)


def expectation(logp: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """E_π[v] = Σ_a π(a)·v(a), exact over all K."""
    return (logp.exp() * values).sum(-1)


def kl_divergence(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """KL(π‖π_ref) = Σ_a π(a)·(log π(a) − log π_ref(a)), exact over all K."""
    return (logp.exp() * (logp - ref_logp)).sum(-1)


def support_mask(ref_logp: torch.Tensor, mass: float = 0.99) -> torch.Tensor:
    """The reference's support: the fewest responses that together hold ≥ ``mass`` of π_ref
    (sorted by π_ref, most probable first). Boolean ``(..., K)``."""
    probs = ref_logp.exp()
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    before = sorted_probs.cumsum(-1) - sorted_probs  # mass strictly above each response
    keep_sorted = before < mass
    return torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)


# --- more gold-reward problems: vector responses (RM ensembles), length-vs-quality candidates (DAA) -----------


def quadratic_gold_reward(responses: torch.Tensor, w: torch.Tensor, curvature: float = 0.15) -> torch.Tensor:
    """r*(y) = w·y − c·‖y‖²: rewards a direction, punishes extreme responses (c = 0.15 in the RM-ensembles card).
    ``responses (..., d)`` → ``(...)``."""
    return responses @ w - curvature * responses.pow(2).sum(-1)


def unit_direction(dim: int, generator: torch.Generator) -> torch.Tensor:
    """w ~ N(0, I_d) rescaled to ‖w‖ = 1."""
    w = torch.randn(dim, generator=generator)
    return w / w.norm()


def bt_labels(gold_a: torch.Tensor, gold_b: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Bradley–Terry labels from a known reward: True where a ≻ b, drawn with P = σ(r*(a) − r*(b)).
    ``generator`` is a CPU generator (labels are drawn on the CPU and moved to ``gold_a``'s device)."""
    u = torch.rand(gold_a.shape, generator=generator).to(gold_a.device)
    return u < bradley_terry_prob(gold_a, gold_b)


def order_pairs(a: torch.Tensor, b: torch.Tensor, a_wins: torch.Tensor):
    """(chosen, rejected) = (a, b) where ``a_wins``, else (b, a); works for indices ``(N,)`` or vectors ``(N, d)``."""
    win = a_wins.view(-1, *([1] * (a.dim() - 1)))
    return torch.where(win, a, b), torch.where(win, b, a)


@dataclass
class LengthCandidates:
    """P prompts × M candidate responses described by length ℓ and content quality q (the DAA toy).

    ``features`` = (ℓ/ℓ_max, q) ``(P, M, 2)``; ``gold`` r*(x, y) ``(P, M)``; ``ref_logp`` log π_ref ``(P, M)``.
    """

    length: torch.Tensor
    quality: torch.Tensor
    features: torch.Tensor
    gold: torch.Tensor
    ref_logp: torch.Tensor

    def to(self, device) -> LengthCandidates:
        return LengthCandidates(
            *(t.to(device) for t in (self.length, self.quality, self.features, self.gold, self.ref_logp))
        )


def make_length_candidates(
    n_prompts: int = 32,
    n_candidates: int = 40,
    generator: torch.Generator | None = None,
    max_length: int = 20,
    ref_length_coef: float = -0.6,
    ref_quality_coef: float = 0.3,
    gold_linear: float = 0.6,
    gold_quadratic: float = 0.06,
) -> LengthCandidates:
    """Candidates with ℓ ~ U{1 … ℓ_max} and q ~ N(0, 1) per (prompt, candidate);
        π_ref(y|x) ∝ exp(a·ℓ + b·q)       (a = −0.6: the reference rarely writes long responses)
        r*(x, y) = q + c₁·ℓ − c₂·ℓ²       (peaks at ℓ = c₁/(2c₂) = 5 with the defaults)
    so a policy that exploits length beyond the covered range loses gold reward."""
    length = torch.randint(1, max_length + 1, (n_prompts, n_candidates), generator=generator).float()
    quality = torch.randn(n_prompts, n_candidates, generator=generator)
    features = torch.stack([length / max_length, quality], dim=-1)
    gold = quality + gold_linear * length - gold_quadratic * length**2
    ref_logp = torch.log_softmax(ref_length_coef * length + ref_quality_coef * quality, dim=-1)
    return LengthCandidates(length, quality, features, gold, ref_logp)


# --- general (possibly intransitive) preferences: a preference matrix per prompt ----------------------------
#
# P[..., i, j] = P(y_i ≻ y_j | x) with P[i, j] + P[j, i] = 1 and P[i, i] = 1/2. Bradley–Terry is the special
# case P[i, j] = σ(r_i − r_j), which is always transitive; a rock-paper-scissors cycle is not.


def bt_preference_matrix(rewards: torch.Tensor) -> torch.Tensor:
    """P[i, j] = σ(r_i − r_j) from rewards ``(..., K)`` → ``(..., K, K)``."""
    return torch.sigmoid(rewards.unsqueeze(-1) - rewards.unsqueeze(-2))


def check_preference_matrix(P: torch.Tensor, atol: float = 1e-6) -> torch.Tensor:
    """Raise ``ValueError`` unless 0 ≤ P ≤ 1, P + Pᵀ = 1 (so the diagonal is 1/2). Returns ``P``."""
    if (P < 0).any() or (P > 1).any():
        raise ValueError("preference probabilities must lie in [0, 1]")
    if not torch.allclose(P + P.transpose(-1, -2), torch.ones_like(P), atol=atol):
        raise ValueError("a preference matrix needs P[i, j] + P[j, i] = 1 (and P[i, i] = 1/2)")
    return P


def cyclic_preference_matrix(
    cycle: tuple[float, float, float] = (0.9, 0.6, 0.7),
    n_extra: int = 2,
    extra_lose: float = 0.75,
    permutation: torch.Tensor | None = None,
) -> torch.Tensor:
    """An intransitive K = 3 + n_extra game (the INPO card's toy):
        responses 0, 1, 2 form a cycle  P(0≻1) = c₀, P(1≻2) = c₁, P(2≻0) = c₂  (all > 1/2: no best response);
        responses 3 … lose to each of 0–2 with P = ``extra_lose`` and tie one another (1/2).
    ``permutation`` (a ``(K,)`` index tensor) relabels the responses: P'[i, j] = P[perm[i], perm[j]]."""
    K = 3 + n_extra
    P = torch.full((K, K), 0.5)
    for (i, j), p in zip(((0, 1), (1, 2), (2, 0)), cycle):
        P[i, j], P[j, i] = p, 1 - p
    P[:3, 3:], P[3:, :3] = extra_lose, 1 - extra_lose
    if permutation is not None:
        P = P[permutation][:, permutation]
    return check_preference_matrix(P)


def sample_preference_labels(
    P: torch.Tensor, a: torch.Tensor, b: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """The oracle: True where y_a ≻ y_b, each label ~ Bernoulli(P[a, b]). ``P (..., K, K)``, ``a, b (..., N)``
    index tensors; ``generator`` a CPU generator. Ties a = b are labelled by a fair coin (drop them yourself)."""
    p = P.gather(-2, a.unsqueeze(-1).expand(*a.shape, P.shape[-1])).gather(-1, b.unsqueeze(-1)).squeeze(-1)
    return torch.rand(p.shape, generator=generator).to(p.device) < p


def win_rate_vs_policy(P: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    """P(y ≻ π) = Σ_j P[y, j] π(j) for every response y. ``P (..., K, K)``, ``probs (..., K)`` → ``(..., K)``."""
    return (P * probs.unsqueeze(-2)).sum(-1)


def policy_win_rate(P: torch.Tensor, probs_a: torch.Tensor, probs_b: torch.Tensor) -> torch.Tensor:
    """P(π_a ≻ π_b) = Σ_ij π_a(i) P[i, j] π_b(j). ``(...)``."""
    return (probs_a * win_rate_vs_policy(P, probs_b)).sum(-1)


def exploitability(P: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    """e(π) = max_y P(y ≻ π) − 1/2 ≥ 0, zero exactly at a Nash policy of the (unregularised) game. ``(...)``."""
    return win_rate_vs_policy(P, probs).max(-1).values - 0.5


def nash_policy(P: torch.Tensor) -> torch.Tensor:
    """A Nash policy of the symmetric game with payoff A = P − 1/2 (one ``(K, K)`` matrix), by linear programming:
        minimise v  subject to  Σ_j A[y, j] π(j) ≤ v for every y,  π ≥ 0,  Σ π = 1      (the value is v = 0).
    Returns π ``(K,)`` (float64 → P's dtype). Uses ``scipy.optimize.linprog``."""
    import numpy as np
    from scipy.optimize import linprog

    A = P.detach().cpu().double().numpy() - 0.5
    K = A.shape[0]
    cost = np.r_[np.zeros(K), 1.0]  # variables (π, v)
    upper = np.c_[A, -np.ones(K)]  # A π − v ≤ 0
    equal = np.r_[np.ones(K), 0.0][None]  # Σ π = 1
    res = linprog(
        cost,
        A_ub=upper,
        b_ub=np.zeros(K),
        A_eq=equal,
        b_eq=[1.0],
        bounds=[(0, None)] * K + [(None, None)],
        method="highs",
    )
    if not res.success:
        raise RuntimeError(f"linprog failed: {res.message}")
    pi = np.clip(res.x[:K], 0, None)
    return torch.tensor(pi / pi.sum(), dtype=P.dtype)
