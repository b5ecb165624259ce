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

    def to(self, device) -> "GoldBandit":
        return GoldBandit(self.features.to(device), self.gold.to(device), self.ref_logp.to(device),
                          self.w_star.to(device), self.seeds)


@dataclass
class PreferencePairs:
    """Index pairs (chosen y_w, rejected y_l) into the K responses; ``mask`` is False for dropped ties."""

    chosen: torch.Tensor
    rejected: torch.Tensor
    mask: torch.Tensor

    def to(self, device) -> "PreferencePairs":
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


def make_gold_bandit(n_responses: int = 200, dim: int = 8, seeds=(0,), ref_width: float = 1.0,
                     w_norm: float | None = None) -> GoldBandit:
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
    return GoldBandit(features, concave_gold_reward(features, w_star),
                      gaussian_reference_logp(features, ref_width), w_star, tuple(int(s) for s in seeds))


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
