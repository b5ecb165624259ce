"""Ad survival — "Ad Creative Discontinuation Prediction with Multi-Modal Multi-Task Neural Survival Networks"
(Kitada, Iyatomi and Seki, Applied Sciences 2022), arXiv 2204.11588.

A creative i, launched and later stopped ("discontinued") by its operator, is a time-to-event record (T_i, δ_i):
T_i the stop day (δ_i = 1) or the last day it was seen running (censored, δ_i = 0). Time is discrete (bins
l = 1..L) and the network predicts the hazard of each bin:

    h_l(x) = σ(f_l(x)) = P(stopped in bin l | running at the start of bin l)
    S(l) = Π_{j≤l} (1 − h_j),        p(l) = h_l · Π_{j<l} (1 − h_j)
    ℓ_i = −[δ_i log p(T_i) + (1 − δ_i) log S(T_i)]                         (discrete-time hazard likelihood)

Two-term estimation: one shared multi-modal encoder (text, advertiser, image, numeric), a short head over
daily bins 1..L_s (cut-out) and a long head over coarser bins (wear-out); each creative's (T, δ) is clipped to
each head's horizon, and CTR weighting makes high-CTR creatives count more:

    L = Σ_i w_i (ℓ_i^short + ℓ_i^long),      w_i ∝ (CTR_i / mean CTR)^γ

Only the abstract of the paper was retrievable (no official code): the discrete-time likelihood (as in DRSA,
Ren et al. 2019, and pycox's LogisticHazard), the clipping, the weight formula and the heads' horizons are the
card's reading, marked "inferred" there. :func:`train_network` is the training loop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

#: hazards are clamped to [EPS, 1 − EPS] before the logs (the card's pitfall: work in log space)
EPS = 1e-6

# --- time bins ----------------------------------------------------------------------------------------------


def discretize(time: Tensor, event: Tensor, bin_days: int, n_bins: int) -> tuple[Tensor, Tensor]:
    """(T days, δ) → (bin index, δ within the horizon) for a head with ``n_bins`` bins of ``bin_days`` days.

    An event on day T falls in bin ⌈T/w⌉ (0-based index ⌈T/w⌉ − 1). A creative censored on day T survived
    ⌊T/w⌋ whole bins (index ⌊T/w⌋ − 1; −1 when it was seen for less than one bin, which then adds nothing).
    Anything beyond the horizon n_bins·w (an event or not) is censored having survived every bin. With w = 1
    both rules give index T − 1. ``time, event (N,)`` → ``index (N,) long, event (N,) bool``."""
    t = time.long()
    ev_index = (t + bin_days - 1) // bin_days - 1
    cens_index = t // bin_days - 1
    beyond = t > n_bins * bin_days
    index = torch.where(beyond, torch.full_like(t, n_bins - 1), torch.where(event, ev_index, cens_index))
    return index, event & ~beyond


# --- the loss -----------------------------------------------------------------------------------------------


def log_hazards(logits: Tensor) -> tuple[Tensor, Tensor]:
    """(log h, log(1 − h)) from logits ``(N, L)``, with h clamped to [EPS, 1 − EPS]."""
    h = torch.sigmoid(logits).clamp(EPS, 1 - EPS)
    return h.log(), (1 - h).log()


def hazard_nll(logits: Tensor, index: Tensor, event: Tensor) -> Tensor:
    """ℓ_i, the negative discrete-time log-likelihood per creative ``(N,)``; ``logits (N, L)``, ``index (N,)``
    (bin of the event, or the last bin survived; −1 = none), ``event (N,)``."""
    log_h, log_1mh = log_hazards(logits)
    bins = torch.arange(logits.shape[1], device=logits.device)
    before = (bins[None, :] < index[:, None]).to(logits.dtype)  # bins j < T_i                 (N, L)
    # log S(T_i − 1) = Σ_{j<T_i} log(1 − h_j)                                                       (N,)
    log_surv_before = (before * log_1mh).sum(1)
    at = index.clamp(min=0)
    # log h_{T_i} and log(1 − h_{T_i}); zero when index = −1 (nothing observed)                    (N,)
    seen = (index >= 0).to(logits.dtype)
    log_h_at = log_h.gather(1, at[:, None]).squeeze(1) * seen
    log_1mh_at = log_1mh.gather(1, at[:, None]).squeeze(1) * seen
    # ℓ_i = −[δ_i (log h_{T_i} + log S(T_i − 1)) + (1 − δ_i) (log S(T_i − 1) + log(1 − h_{T_i}))]
    d = event.to(logits.dtype)
    return -(log_surv_before + d * log_h_at + (1 - d) * log_1mh_at)


def event_rank_term(logits: Tensor, index: Tensor, event: Tensor) -> Tensor:
    """DRSA's extra term for events, −δ_i log(1 − S(T_i)) per creative ``(N,)`` (0 for censored ones)."""
    _, log_1mh = log_hazards(logits)
    bins = torch.arange(logits.shape[1], device=logits.device)
    upto = (bins[None, :] <= index[:, None]).to(logits.dtype)
    # log S(T_i) = Σ_{j≤T_i} log(1 − h_j);  log(1 − S) = log(−expm1(log S)), clamped away from log 0
    log_surv = (upto * log_1mh).sum(1).clamp(max=-EPS)
    return -event.to(logits.dtype) * torch.log(-torch.expm1(log_surv))


def survival_loss(logits: Tensor, index: Tensor, event: Tensor, rank_weight: float = 0.0) -> Tensor:
    """One head's loss per creative ``(N,)``: ℓ_i + α·(−δ_i log(1 − S(T_i))) (α = 0: the likelihood alone)."""
    loss = hazard_nll(logits, index, event)
    return loss + rank_weight * event_rank_term(logits, index, event) if rank_weight else loss


def ctr_weights(ctr: Tensor, power: float, reference: float) -> Tensor:
    """w_i = (CTR_i / reference)^γ ``(N,)``; ``reference`` is the training set's mean CTR (γ = 0: all ones)."""
    # w_i = (CTR_i / mean CTR)^γ
    return (ctr / reference) ** power


def two_term_loss(short_logits, long_logits, short_target, long_target, weights, rank_weight: float = 0.0):
    """L = (1/N) Σ_i w_i (ℓ_i^short + ℓ_i^long); targets are (index, event) pairs from :func:`discretize`."""
    per_ad = survival_loss(short_logits, *short_target, rank_weight) + survival_loss(
        long_logits, *long_target, rank_weight
    )
    return (weights * per_ad).mean()


# --- from hazards to survival curves and risk scores ---------------------------------------------------------


def survival_curve(logits: Tensor) -> Tensor:
    """S(l) = Π_{j≤l} (1 − h_j) for every bin, in log space ``(N, L)``."""
    return log_hazards(logits)[1].cumsum(1).exp()


def stitched_daily_survival(short_logits: Tensor, long_logits: Tensor, long_bin_days: int) -> Tensor:
    """The two heads as one daily curve ``(N, n_long·w)``: the short head for days 1..L_s, then the long head
    conditioned on surviving to L_s, S(d) = S_s(L_s) · S_l(d)/S_l(L_s), with S_l read at whole bins (a step
    function in days). L_s must be a whole number of long bins."""
    s_short = survival_curve(short_logits)  # (N, L_s)
    l_s = s_short.shape[1]
    if l_s % long_bin_days:
        raise ValueError(f"L_s={l_s} is not a whole number of long bins of {long_bin_days} days")
    s_long = survival_curve(long_logits).repeat_interleave(long_bin_days, dim=1)  # (N, days)
    tail = s_short[:, -1:] * s_long[:, l_s:] / s_long[:, l_s - 1 : l_s].clamp(min=EPS)
    return torch.cat([s_short, tail], 1)


def restricted_mean(survival: Tensor, bin_days: int = 1) -> Tensor:
    """Restricted mean survival time Σ_l w·S(l) ``(N,)``; risk scores are its negative."""
    return bin_days * survival.sum(1)


# --- the multi-modal network ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Batch:
    """The features of N creatives: ``tokens (N, len)``, ``advertiser (N,)``, ``image (N, 64)``, ``numeric (N, 2)``."""

    tokens: Tensor
    advertiser: Tensor
    image: Tensor
    numeric: Tensor

    def take(self, index) -> Batch:
        return Batch(self.tokens[index], self.advertiser[index], self.image[index], self.numeric[index])


class MultiModalEncoder(nn.Module):
    """Per-modality encoders (``dim`` each) → concatenation → MLP(hidden): text as a mean of token embeddings
    (or a GRU over the token sequence), advertiser as an embedding, image and numeric features as linear maps."""

    def __init__(self, vocab, n_advertisers, image_dim, numeric_dim, dim=16, hidden=64, text="bag"):
        super().__init__()
        self.text = text
        self.tokens = nn.Embedding(vocab, dim)
        self.gru = nn.GRU(dim, dim, batch_first=True) if text == "gru" else None
        self.advertiser = nn.Embedding(n_advertisers, dim)
        self.image = nn.Linear(image_dim, dim)
        self.numeric = nn.Linear(numeric_dim, dim)
        self.mlp = nn.Sequential(nn.Linear(4 * dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())

    def forward(self, x: Batch) -> Tensor:
        emb = self.tokens(x.tokens)  # (N, len, dim)
        text = self.gru(emb)[1][0] if self.gru is not None else emb.mean(1)  # (N, dim)
        parts = [text, self.advertiser(x.advertiser), self.image(x.image), self.numeric(x.numeric)]
        return self.mlp(torch.cat(parts, 1))  # (N, hidden)


class SurvivalNet(nn.Module):
    """A shared encoder and one linear head per output: ``heads = {"short": 14, "long": 12}`` (two-term),
    ``{"single": 84}`` (one hazard head) or ``{"regression": 1}`` (the conventional log-duration regression)."""

    def __init__(self, encoder: MultiModalEncoder, hidden: int, heads: dict[str, int]):
        super().__init__()
        self.encoder = encoder
        self.heads = nn.ModuleDict({name: nn.Linear(hidden, size) for name, size in heads.items()})

    def forward(self, x: Batch) -> dict[str, Tensor]:
        z = self.encoder(x)
        return {name: head(z) for name, head in self.heads.items()}


# --- the training loop ---------------------------------------------------------------------------------------


def train_network(
    net: nn.Module,
    x: Batch,
    loss_fn: Callable[[dict[str, Tensor], Tensor], Tensor],
    epochs: int,
    batch_size: int,
    lr: float,
    generator: torch.Generator,
    on_step: Callable[[int, Tensor], None] | None = None,
    on_epoch: Callable[[int, nn.Module], None] | None = None,
) -> nn.Module:
    """Adam over shuffled mini-batches for ``epochs`` epochs. ``loss_fn(outputs, index)`` is the mean loss of the
    creatives ``index`` (the targets and weights live in the closure). ``on_step(step, loss)`` sees each update
    (the divergence check), ``on_epoch(epoch, net)`` each finished epoch (validation, logging)."""
    opt = torch.optim.Adam(net.parameters(), lr=lr, foreach=True)
    n, step = len(x.advertiser), 0
    for epoch in range(1, epochs + 1):
        net.train()
        for index in torch.randperm(n, generator=generator).split(batch_size):
            index = index.to(x.advertiser.device)
            loss = loss_fn(net(x.take(index)), index)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            if on_step is not None:
                on_step(step, loss.detach())
        net.eval()
        if on_epoch is not None:
            on_epoch(epoch, net)
    return net


# --- the evaluation: Harrell's concordance index ------------------------------------------------------------


def concordance_index(time: Tensor, risk: Tensor, event: Tensor, chunk: int = 2048) -> float:
    """Harrell's C: over comparable pairs (i, j), T_i < T_j with δ_i = 1, or T_i = T_j with δ_i = 1 and
    δ_j = 0 (the censored one outlived the stop), the share where the model ranks i riskier (risk_i > risk_j),
    ties in risk counting ½. Higher risk = sooner stop (lifelines wants −risk). ``time, risk, event (N,)``."""
    time, risk, event = time.double(), risk.double(), event.bool()
    later_t, later_r, later_e = time[None, :], risk[None, :], event[None, :]
    pairs = concordant = tied = 0
    for rows in torch.nonzero(event).squeeze(1).split(chunk):
        t_i, r_i = time[rows, None], risk[rows, None]
        # comparable: T_i < T_j, or T_i = T_j and j censored                                    (chunk, N)
        comparable = (t_i < later_t) | ((t_i == later_t) & ~later_e)
        pairs += int(comparable.sum())
        # concordant: risk_i > risk_j; a tie in risk counts ½
        concordant += int((comparable & (r_i > later_r)).sum())
        tied += int((comparable & (r_i == later_r)).sum())
    return (concordant + 0.5 * tied) / pairs if pairs else float("nan")
