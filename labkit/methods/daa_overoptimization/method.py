"""Scaling Laws for Reward Model Overoptimization in Direct Alignment Algorithms — Rafailov, Chittepu, Park,
Sikchi, Hejna, Knox, Finn, Niekum (arXiv 2406.02900, NeurIPS 2024).

Direct alignment algorithms (DAAs) train the policy on preference pairs (x, y_w ≻ y_l) without a reward model.
With the implicit-reward margin (sequence log-probs SUMMED over tokens)

    h_θ = log π_θ(y_w|x)/π_ref(y_w|x) − log π_θ(y_l|x)/π_ref(y_l|x)

the paper writes the three DAAs as one loss

    L(θ) = E_D[ g(β·h_θ) ],   DPO g(z) = −log σ(z),   IPO g(z) = (z − 1)²,   SLiC g(z) = max(0, 1 − z).

Small β is a weak regulariser, i.e. a large KL budget. The paper measures, at many checkpoints, the gold quality
against the distance d = √KL(π_θ‖π_ref) and fits the law Gao et al. found for RLHF,

    R(d) = d·(α − β_s·log d),   R = gold(π_θ) − gold(π_ref),

a hump with its top at d* = e^(α/β_s − 1). Here π_θ ∝ π_ref·exp(f_θ(features)) over a finite set of M candidate
responses per prompt, so KL (under the POLICY) and gold are exact sums; :func:`train_daa` is the training loop.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from labkit.data import preferences as prefs
from labkit.substrates.preference import logratio_margin

OBJECTIVES = ("dpo", "ipo", "slic")
METRICS = ("gold_reward", "kl", "sqrt_kl", "mean_length")
#: the fit drops checkpoints with d = √KL below this (R(d) is ill-conditioned near 0)
MIN_FIT_D = 0.05
#: the MLP head's first layer of seed s is drawn from Generator(s + MLP_INIT_SALT), apart from the data seeds
MLP_INIT_SALT = 7


# --- the unified loss -------------------------------------------------------------------------------------


def daa_g(kind: str, z: torch.Tensor) -> torch.Tensor:
    """The DAA paper's g, elementwise on z = β·h (any shape)."""
    if kind == "dpo":
        # DPO: g(z) = −log σ(z)
        return -F.logsigmoid(z)
    if kind == "ipo":
        # IPO: g(z) = (z − 1)²
        return (z - 1.0) ** 2
    if kind == "slic":
        # SLiC: g(z) = max(0, 1 − z)
        return torch.relu(1.0 - z)
    raise ValueError(f"unknown direct-alignment loss {kind!r}: choose one of {list(OBJECTIVES)}")


def daa_objective(kind, policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta):
    """g(β·h) per pair; every log-prob argument is a ``(B,)`` tensor of SUMMED log-probs.

    IPO here is the paper's (β·h − 1)² = β²·(h − 1/β)²: target 1/β, not TRL's 1/(2β); under Adam the factor β²
    hardly matters, so this IPO at β trains like TRL's (summed log-probs) at β/2."""
    # h = [log π_θ(y_w) − log π_ref(y_w)] − [log π_θ(y_l) − log π_ref(y_l)]      (B,)
    h = logratio_margin(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    # L = g(β·h)                                                                (B,)
    return daa_g(kind, beta * h)


def mixed_daa_loss(kind_mask: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Runs of different objectives in one tensor: Σ_k mask_k·g_k(z). ``kind_mask (3, A)`` is one-hot over
    :data:`OBJECTIVES`; ``z (A, ...)`` holds β·h of each run A."""
    shape = (-1,) + (1,) * (z.dim() - 1)
    return sum(kind_mask[k].view(shape) * daa_g(kind, z) for k, kind in enumerate(OBJECTIVES))


# --- the scaling law --------------------------------------------------------------------------------------


def scaling_law(d, alpha: float, beta_s: float):
    """R(d) = d·(α − β_s·log d) (Gao et al.), with d = √KL; R(0) = 0. Any shape."""
    d = np.asarray(d, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        # R(d) = d·(α − β_s·log d) for d > 0, and its limit 0 at d = 0
        return np.where(d > 0, d * (alpha - beta_s * np.log(np.where(d > 0, d, 1.0))), 0.0)


@dataclass(frozen=True)
class LawFit:
    """The least-squares fit of R(d) = d(α − β_s log d): parameters, R², points used, the hump's top d*."""

    alpha: float
    beta_s: float
    r2: float
    n_points: int
    peak_d: float


def fit_scaling_law(d, gain, min_d: float = MIN_FIT_D) -> LawFit:
    """Least squares for R = α·d − β_s·d·log d over points with d ≥ ``min_d``. R² = 1 − SS_res/SS_tot."""
    d, gain = np.asarray(d, float).ravel(), np.asarray(gain, float).ravel()
    keep = d >= min_d
    d, gain = d[keep], gain[keep]
    if len(d) < 2:
        nan = float("nan")
        return LawFit(nan, nan, nan, int(len(d)), nan)
    # linear in (α, β_s): design [d, −d·log d]                                  (n, 2)
    design = np.stack([d, -d * np.log(d)], axis=1)
    (alpha, beta_s), *_ = np.linalg.lstsq(design, gain, rcond=None)
    resid = gain - design @ np.array([alpha, beta_s])
    ss_tot = float(((gain - gain.mean()) ** 2).sum())
    r2 = 1.0 - float((resid**2).sum()) / ss_tot if ss_tot > 0 else float("nan")
    # dR/dd = α − β_s·(log d + 1) = 0  ⇒  d* = e^(α/β_s − 1)
    peak = float(math.exp(min(alpha / beta_s - 1.0, 700.0))) if beta_s > 0 else float("inf")
    return LawFit(float(alpha), float(beta_s), r2, int(len(d)), peak)


# --- the policy: π_θ ∝ π_ref · exp(f_θ), one parameter set per (run, seed) ---------------------------------


def init_head(head: str, n_runs: int, seeds: Sequence[int], n_in: int, hidden: int) -> dict[str, torch.Tensor]:
    """Zero output layer, so π_θ = π_ref at step 0. linear/quadratic: w ``(A, S, F)`` = 0. mlp: W1 ``(A, S, F, H)``
    and b1 ``(A, S, H)`` ~ U(±1/√F) from ``Generator(seed + MLP_INIT_SALT)`` (the same for every run of a seed),
    w2 ``(A, S, H)`` = 0."""
    if head != "mlp":
        return {"w": torch.zeros(n_runs, len(seeds), n_in)}
    bound = 1.0 / math.sqrt(n_in)
    w1, b1 = [], []
    for s in seeds:
        gen = torch.Generator().manual_seed(int(s) + MLP_INIT_SALT)
        w1.append((2 * torch.rand(n_in, hidden, generator=gen) - 1) * bound)
        b1.append((2 * torch.rand(hidden, generator=gen) - 1) * bound)

    def per_run(t: list[torch.Tensor]) -> torch.Tensor:
        stacked = torch.stack(t).unsqueeze(0)
        return stacked.repeat(n_runs, *([1] * (stacked.dim() - 1))).contiguous()

    return {"W1": per_run(w1), "b1": per_run(b1), "w2": torch.zeros(n_runs, len(seeds), hidden)}


def head_logits(params: dict, x: torch.Tensor) -> torch.Tensor:
    """f_θ(x) for every run: ``x (S, P, M, F)`` → ``(A, S, P, M)``; linear w·x, or w2·ReLU(x W1 + b1)."""
    if "w" in params:
        # f = w·x
        return torch.einsum("spmi,asi->aspm", x, params["w"])
    # f = w2·ReLU(x·W1 + b1)
    hid = torch.relu(torch.einsum("spmi,asih->aspmh", x, params["W1"]) + params["b1"][:, :, None, None, :])
    return torch.einsum("aspmh,ash->aspm", hid, params["w2"])


def policy_logp(params: dict, x: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """log π_θ(y|x), exact over the M candidates. ``ref_logp (S, P, M)`` → ``(A, S, P, M)``."""
    # log π_θ(y|x) = log softmax_y(log π_ref(y|x) + f_θ(y))
    return torch.log_softmax(ref_logp + head_logits(params, x), dim=-1)


def policy_metrics(logp, gold, ref_logp, length) -> dict[str, torch.Tensor]:
    """Means over prompts (last dim P after the exact sums over candidates) of E_π[r*], KL, √KL and E_π[ℓ]."""
    # KL(π_θ‖π_ref) = Σ_y π_θ(y)·(log π_θ(y) − log π_ref(y)), under the POLICY, per prompt, then mean over prompts
    kl = prefs.kl_divergence(logp, ref_logp).mean(-1)
    return {
        # gold = E_{y∼π_θ}[r*(x, y)]
        "gold_reward": prefs.expectation(logp, gold).mean(-1),
        "kl": kl,
        # d = √KL
        "sqrt_kl": kl.clamp_min(0).sqrt(),
        "mean_length": prefs.expectation(logp, length).mean(-1),
    }


# --- the training loop ------------------------------------------------------------------------------------


def epoch_order(masks: torch.Tensor, gens) -> tuple[torch.Tensor, torch.Tensor]:
    """One epoch's order per seed (each its own CPU generator): the kept pairs shuffled, then padding up to the
    largest count. ``masks (S, N)`` → (indices ``(S, N_max)``, valid ``(S, N_max)``)."""
    kept = [torch.nonzero(m).squeeze(-1) for m in masks.cpu()]
    n_max = max(len(k) for k in kept)
    order = torch.zeros(len(kept), n_max, dtype=torch.long)
    valid = torch.zeros(len(kept), n_max, dtype=torch.bool)
    for s, k in enumerate(kept):
        order[s, : len(k)] = k[torch.randperm(len(k), generator=gens[s])]
        valid[s, : len(k)] = True
    return order.to(masks.device), valid.to(masks.device)


def steps_per_epoch(masks: torch.Tensor, batch_size: int) -> int:
    """⌈(most kept pairs of any seed) / batch⌉."""
    return math.ceil(int(masks.sum(-1).max()) / batch_size)


def train_daa(
    data: dict,
    kinds: Sequence[str],
    betas: Sequence[float],
    params: dict,
    *,
    lr: float,
    epochs: int,
    batch_size: int,
    log_steps,
    gens,
    on_step: Callable | None = None,
    on_log: Callable | None = None,
):
    """Minibatch Adam on L = E_D[g(β·h_θ)] for every (run, seed) at once; exact KL and gold at ``log_steps``.

    ``data``: x ``(S, P, M, F)``; ref_logp, gold, length ``(S, P, M)``; chosen, rejected, mask ``(S, N)`` (pair
    indices flattened over prompt × candidate). Every run of a seed sees the same batches; the summed loss
    separates, so each (run, seed) gets exactly the Adam update of its own training — except that all seeds take
    the same number of steps per epoch (that of the seed with the most kept pairs): a seed with fewer pairs ends
    its epoch with a padded batch, a zero-gradient step on which Adam's momentum still moves it a little.
    Returns the metrics at ``log_steps`` as ``(T, A, S)`` numpy arrays and the final log-probs ``(A, S, P, M)``."""
    S, P, M = data["ref_logp"].shape
    dev = data["ref_logp"].device
    kind_mask = torch.tensor([[k == o for k in kinds] for o in OBJECTIVES], dtype=torch.float32, device=dev)
    beta = torch.tensor(list(betas), dtype=torch.float32, device=dev).view(-1, 1, 1)  # (A, 1, 1)
    ref_flat = data["ref_logp"].reshape(S, P * M)
    opt = torch.optim.Adam([t.requires_grad_() for t in params.values()], lr=lr)
    per_epoch = steps_per_epoch(data["mask"], batch_size)
    wanted, logged, step = set(log_steps), [], 0
    for _ in range(epochs):
        order, valid = epoch_order(data["mask"], gens)
        for start in range(0, per_epoch * batch_size, batch_size):
            logp = policy_logp(params, data["x"], data["ref_logp"])  # (A, S, P, M)
            if step in wanted:
                logged.append(_measure(logp, data, step, on_log))
            idx, ok = order[:, start : start + batch_size], valid[:, start : start + batch_size]  # (S, B)
            chosen, rejected = data["chosen"].gather(1, idx), data["rejected"].gather(1, idx)
            flat = logp.reshape(*logp.shape[:2], P * M)  # (A, S, P·M)
            lp_w = flat.gather(-1, chosen.expand(len(kinds), -1, -1))  # log π_θ(y_w|x)   (A, S, B)
            lp_l = flat.gather(-1, rejected.expand(len(kinds), -1, -1))  # log π_θ(y_l|x)   (A, S, B)
            # h_θ = [log π_θ(y_w) − log π_ref(y_w)] − [log π_θ(y_l) − log π_ref(y_l)]   (A, S, B)
            h = logratio_margin(lp_w, lp_l, ref_flat.gather(-1, chosen), ref_flat.gather(-1, rejected))
            # L(θ) = E_D[g(β·h_θ)], the mean over the kept pairs of the batch       (A, S)
            losses = prefs.masked_mean(mixed_daa_loss(kind_mask, beta * h), ok)
            opt.zero_grad(set_to_none=True)
            losses.sum().backward()
            opt.step()
            step += 1
            if on_step is not None:
                on_step(step, losses.detach(), list(params.values()))
    logp = policy_logp(params, data["x"], data["ref_logp"]).detach()
    if step in wanted:
        logged.append(_measure(logp, data, step, on_log))
    series = {k: np.stack([m[k] for m in logged]).astype(np.float64) for k in METRICS}
    return series, logp


def _measure(logp, data, step, on_log):
    with torch.no_grad():
        m = policy_metrics(logp, data["gold"], data["ref_logp"], data["length"])
        m = {k: v.cpu().numpy() for k, v in m.items()}
    if on_log is not None:
        on_log(step, m)
    return m


# --- the hump of one run ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hump:
    """One run's gold curve in one seed: the best checkpoint (by gold), how far gold falls after it, the KL at
    both ends, and where the peak sits in epochs of the preference data."""

    peak_index: int
    peak_gold: float
    final_gold: float
    kl_peak: float
    kl_final: float
    peak_epoch: float

    @property
    def drop(self) -> float:
        """gold(peak) − gold(final) ≥ 0."""
        return self.peak_gold - self.final_gold

    @property
    def kl_growth(self) -> float:
        """KL(final) − KL(peak): positive when the policy kept moving away from π_ref after its best point."""
        return self.kl_final - self.kl_peak


def hump(gold: np.ndarray, kl: np.ndarray, epochs_at: Sequence[float] | None = None) -> Hump:
    """One run's curve (``(T,)`` each, over its checkpoints): peak = argmax gold. ``epochs_at`` (T,) places the
    checkpoints in epochs (default: the checkpoint index)."""
    peak = int(np.argmax(gold))
    at = float(epochs_at[peak]) if epochs_at is not None else float(peak)
    return Hump(peak, float(gold[peak]), float(gold[-1]), float(kl[peak]), float(kl[-1]), at)
