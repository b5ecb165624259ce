"""Synthetic ad creatives for survival analysis (method 06): text tokens, an advertiser id, an image-like pixel
vector and numeric features, a click-through rate, two discontinuation mechanisms and administrative censoring.

Each creative has a latent quality q ~ N(0, 1), which the features reveal only partly and noisily:

- CTR = σ(−4 + 0.8·q + 0.3·ε)                                  (≈ 1–3 %)
- text: ``seq_len`` tokens from a vocabulary of ``vocab`` (ids 0..9 are the 10 "bad" tokens, drawn more often by
  low-quality creatives; ids 10..29 are "fatiguing" tokens that speed up wear-out)
- advertiser: one of ``n_advertisers`` ids, each with a random effect on wear-out speed
- image: an 8×8 pixel vector whose mean brightness encodes q plus noise
- numeric: bid (correlated with q) and log-budget (speeds up wear-out: more impressions, sooner fatigue)

Two mechanisms (``mechanism``: 0 = cut-out, 1 = wear-out):

- cut-out creatives (a low "cut score": low q, bad tokens, a noisy term) are stopped early by the operator: a
  constant hazard ``CUT_HAZARD`` = 0.3 on days 1–7, and the wear-out hazard after that;
- every creative wears out with hazard σ(−6 + fatigue·l) on day l, fatigue = 0.07·exp(advertiser effect
  + 0.25·fatiguing tokens + 0.3·log-budget − 0.3·q + 0.5·[high CTR]·log-budget).

Launch days are uniform over the ``window``-day collection window and observation ends on day ``window``: a creative
launched on day a is seen for at most ``window − a`` days (administrative censoring, ≈ 30–40 %). The launch day
is NOT a feature (censoring depends on it; the durations must not leak it). With ``launch_shift`` s > 0 the
censoring depends on a feature: advertiser a joins on day j_a = s·window·u_a (u_a ~ U(0, 1)) and launches its
creatives uniformly over [j_a, window), so late-joining advertisers' creatives are censored early (the card's
setting is s = 0).

Observed: ``time`` T ≥ 1 (the stop day if ``event``, else the last day seen) and ``event`` δ.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

#: token ids 0..N_BAD-1 are "bad" (raise the early cut-out risk); the next N_FATIGUE ids speed up wear-out
N_BAD = 10
N_FATIGUE = 20
IMAGE_PIXELS = 64
#: cut-out creatives stop with a constant hazard during these first days
CUT_DAYS = 7
#: the cut-out creatives' daily hazard on days 1..CUT_DAYS
CUT_HAZARD = 0.3
#: days simulated after launch; a creative still running then is censored anyway (window ≤ this)
MAX_DAYS = 200


@dataclass
class AdCreatives:
    """N creatives: the features (tokens, advertiser, image, numeric), CTR, observed (time, event), and the
    ground truth a real data set would not have (quality, mechanism, true stop day, launch day)."""

    tokens: torch.Tensor  # (N, seq_len) long
    advertiser: torch.Tensor  # (N,) long
    image: torch.Tensor  # (N, 64) float
    numeric: torch.Tensor  # (N, 2) float: bid, log-budget (standardised)
    ctr: torch.Tensor  # (N,) float
    time: torch.Tensor  # (N,) long, days ≥ 1
    event: torch.Tensor  # (N,) bool
    quality: torch.Tensor  # (N,) float
    mechanism: torch.Tensor  # (N,) long: 0 cut-out, 1 wear-out
    true_time: torch.Tensor  # (N,) long: the stop day without censoring (MAX_DAYS + 1 = not within MAX_DAYS)
    fatigue: torch.Tensor  # (N,) float: the wear-out speed
    launch: torch.Tensor  # (N,) long

    def __len__(self) -> int:
        return len(self.time)

    def subset(self, index) -> AdCreatives:
        return AdCreatives(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    def to(self, device) -> AdCreatives:
        return AdCreatives(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    @property
    def censored_share(self) -> float:
        return float((~self.event).float().mean())


def make_ads(
    n: int,
    seed: int,
    window: int = 90,
    vocab: int = 200,
    seq_len: int = 12,
    n_advertisers: int = 50,
    cut_share: float = 0.3,
    launch_shift: float = 0.0,
) -> AdCreatives:
    """``n`` creatives from one generator seeded with ``seed`` (see the module docstring)."""
    if vocab < N_BAD + N_FATIGUE + 1:
        raise ValueError(f"vocab={vocab} needs more than {N_BAD + N_FATIGUE} tokens")
    if not 1 <= window <= MAX_DAYS:
        raise ValueError(f"window={window} must be in [1, {MAX_DAYS}]")
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(n, generator=g)
    ctr = torch.sigmoid(-4.0 + 0.8 * q + 0.3 * torch.randn(n, generator=g))
    # text: each token is "bad" with probability σ(−2.5 − 1.2·q), else uniform over the other ids
    bad = torch.rand(n, seq_len, generator=g) < torch.sigmoid(-2.5 - 1.2 * q)[:, None]
    tokens = torch.where(
        bad,
        torch.randint(0, N_BAD, (n, seq_len), generator=g),
        torch.randint(N_BAD, vocab, (n, seq_len), generator=g),
    )
    n_bad = bad.float().sum(1)
    n_fatigue = ((tokens >= N_BAD) & (tokens < N_BAD + N_FATIGUE)).float().sum(1)
    advertiser = torch.randint(0, n_advertisers, (n,), generator=g)
    adv_effect = 0.4 * torch.randn(n_advertisers, generator=g)
    image = 0.5 * q[:, None] + torch.randn(n, IMAGE_PIXELS, generator=g)
    bid = 0.6 * q + 0.8 * torch.randn(n, generator=g)
    budget = torch.randn(n, generator=g)
    numeric = torch.stack([bid, budget], 1)
    # cut-out: the operator stops the worst-looking creatives early
    cut_score = -1.2 * q + 0.5 * n_bad + 0.6 * torch.randn(n, generator=g)
    is_cut = cut_score > torch.quantile(cut_score, 1.0 - cut_share)
    high_ctr = (ctr > torch.quantile(ctr, 0.75)).float()
    fatigue = 0.07 * torch.exp(
        adv_effect[advertiser] + 0.25 * n_fatigue + 0.3 * budget - 0.3 * q + 0.5 * high_ctr * budget
    )
    hazard = true_hazard(fatigue, (~is_cut).long(), MAX_DAYS)
    stops = torch.rand(n, MAX_DAYS, generator=g) < hazard
    first = torch.where(stops.any(1), stops.float().argmax(1) + 1, torch.full((n,), MAX_DAYS + 1))
    # advertiser a joins on day j_a = launch_shift·window·u_a and launches uniformly over [j_a, window)
    joined = (launch_shift * window * torch.rand(n_advertisers, generator=g)).long()[advertiser]
    launch = joined + (torch.rand(n, generator=g) * (window - joined)).long()
    seen = window - launch  # days observed, 1..window
    event = first <= seen
    time = torch.where(event, first, seen)
    return AdCreatives(
        tokens=tokens,
        advertiser=advertiser,
        image=image,
        numeric=numeric,
        ctr=ctr,
        time=time.long(),
        event=event,
        quality=q,
        mechanism=(~is_cut).long(),
        true_time=first.long(),
        fatigue=fatigue,
        launch=launch.long(),
    )


def true_hazard(fatigue: torch.Tensor, mechanism: torch.Tensor, days: int) -> torch.Tensor:
    """The generator's daily hazards ``(N, days)``: σ(−6 + fatigue·l) on day l, and CUT_HAZARD on days
    1..CUT_DAYS for cut-out creatives (``mechanism`` 0)."""
    day = torch.arange(1, days + 1, dtype=fatigue.dtype, device=fatigue.device)
    hazard = torch.sigmoid(-6.0 + fatigue[:, None] * day[None, :])
    early = (mechanism == 0)[:, None] & (day[None, :] <= CUT_DAYS)
    return torch.where(early, torch.full_like(hazard, CUT_HAZARD), hazard)


def true_survival(ads: AdCreatives, days: int) -> torch.Tensor:
    """The true S(d) = Π_{l≤d} (1 − h_l) of each creative for d = 1..days ``(N, days)``: what an oracle knows."""
    return (1 - true_hazard(ads.fatigue, ads.mechanism, days)).cumprod(1)


def split(ads: AdCreatives, fractions: tuple[float, float], seed: int) -> tuple[AdCreatives, ...]:
    """Random train / validation / test split: ``fractions`` = (validation, test) shares."""
    n = len(ads)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 10_007))
    n_val, n_test = int(round(fractions[0] * n)), int(round(fractions[1] * n))
    test, val, train = order[:n_test], order[n_test : n_test + n_val], order[n_test + n_val :]
    return ads.subset(train), ads.subset(val), ads.subset(test)
