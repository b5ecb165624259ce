"""DAA overoptimization (arXiv 2406.02900): DPO, IPO and SLiC over-optimise, and gold vs √KL follows d(α − β log d).

The direct alignment algorithms (DAAs) minimise L(θ) = E_D[g(β·h_θ)] over preference pairs, with the
implicit-reward margin (sequence log-probs are SUMS over tokens)
    h_θ = log π_θ(y_w|x)/π_ref(y_w|x) − log π_θ(y_l|x)/π_ref(y_l|x)
and  DPO g(z) = −log σ(z),  IPO g(z) = (z − 1)²,  SLiC g(z) = max(0, 1 − z).
Small β ⇒ a large KL budget. The paper measures gold quality at many checkpoints against d = √KL(π_θ‖π_ref) and
fits Gao et al.'s law R(d) = d·(α − β_s·log d), R = gold − gold(π_ref). Here the "language" is the length toy of
:func:`labkit.data.preferences.make_length_candidates` (32 prompts × 40 candidates, gold peaks at length 5, π_ref
writes short answers), the policy is π_θ ∝ π_ref·exp(f_θ(ℓ/ℓ_max, q)), and KL and gold are exact sums.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from labkit import viz
from labkit.core import ClaimCheck, Outcome, Param, RunContext, method_run
from labkit.data import preferences as prefs
from labkit.substrates.preference import logratio_margin

OBJECTIVES = ("dpo", "ipo", "slic")
LABELS = {"dpo": "DPO", "ipo": "IPO", "slic": "SLiC"}
HEADS = ("linear", "quadratic", "mlp")
GOLD_QUADRATIC = 0.06  # c₂ of r* = q + c₁ℓ − c₂ℓ²; c₁ = 2·c₂·ℓ* puts the peak at ℓ*
METRICS = ("gold_reward", "kl", "sqrt_kl", "mean_length")

PARAMS = [
    Param(
        "objective",
        str,
        quick="all",
        choices=("all",) + OBJECTIVES,
        help="which DAA losses to train: all three, or one",
    ),
    Param(
        "betas",
        str,
        quick="0.01,0.1,1",
        standard="0.01,0.05,0.1,0.5,1",
        full="0.01,0.05,0.1,0.5,1",
        help="comma-separated β values (each in [1e-4, 100]); small β = large KL budget",
    ),
    Param("lr", float, quick=0.05, standard=0.01, full=0.01, low=1e-5, high=1.0, log=True, help="Adam learning rate"),
    Param(
        "n_pairs",
        int,
        quick=4000,
        standard=1500,
        full=4000,
        low=32,
        high=200_000,
        help="preference pairs y₁, y₂ ~ π_ref drawn over all prompts (ties dropped)",
    ),
    Param(
        "gold_peak",
        float,
        quick=5.0,
        low=1.0,
        high=20.0,
        help="length ℓ* at which the gold reward peaks (r* = q + 2c₂ℓ*·ℓ − c₂ℓ², c₂ = 0.06)",
    ),
    Param(
        "head",
        str,
        quick="linear",
        standard="mlp",
        full="mlp",
        choices=HEADS,
        main=False,
        help="f_θ: linear in (ℓ/20, q); quadratic adds (ℓ/20)²; mlp is 2→hidden→1 ReLU",
    ),
    Param("hidden", int, quick=32, low=1, high=1024, main=False, help="hidden units of the mlp head"),
    Param("epochs", int, quick=2, standard=20, full=20, low=1, high=1000, main=False, help="passes over the pairs"),
    Param("batch_size", int, quick=64, low=1, high=100_000, main=False, help="pairs per Adam step"),
    Param(
        "log_every",
        int,
        quick=5,
        low=1,
        high=100_000,
        main=False,
        help="exact KL and gold every this many steps (and at every epoch end)",
    ),
    Param(
        "n_seeds",
        int,
        quick=1,
        standard=3,
        full=10,
        low=1,
        high=1000,
        main=False,
        help="data seeds (seed, seed+1, …): new candidates, pairs, labels and batch order",
    ),
    Param("n_prompts", int, quick=32, low=1, high=10_000, main=False, help="prompts P"),
    Param("n_candidates", int, quick=40, low=2, high=10_000, main=False, help="candidate responses M per prompt"),
]

MAIN_METRIC = "gold_reward"


# --- the unified loss -------------------------------------------------------------------------------------


def daa_g(kind: str, z: torch.Tensor) -> torch.Tensor:
    """The DAA paper's g, elementwise: DPO −log σ(z); IPO (z − 1)²; SLiC max(0, 1 − z)."""
    if kind == "dpo":
        return -F.logsigmoid(z)
    if kind == "ipo":
        return (z - 1.0) ** 2
    if kind == "slic":
        return torch.relu(1.0 - z)
    raise ValueError(f"unknown direct-alignment loss {kind!r}: choose one of {list(OBJECTIVES)}")


def daa_objective(kind, policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta):
    """g(β·h), per example, h = Δ(y_w) − Δ(y_l) from SUMMED log-probs. IPO here is the paper's (β·h − 1)²
    = β²·(h − 1/β)²: target 1/β, not TRL's 1/(2β); under Adam the factor β² hardly matters, so this IPO at β
    trains like TRL's (summed log-probs) at β/2."""
    h = logratio_margin(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    return daa_g(kind, beta * h)


def mixed_daa_loss(kind_mask: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Arms of different kinds in one tensor: Σ_k mask_k·g_k(z); ``kind_mask (3, A)`` one-hot over
    :data:`OBJECTIVES`, ``z (A, ...)``."""
    shape = (-1,) + (1,) * (z.dim() - 1)
    return sum(kind_mask[k].view(shape) * daa_g(kind, z) for k, kind in enumerate(OBJECTIVES))


# --- the scaling law --------------------------------------------------------------------------------------


def scaling_law(d, alpha: float, beta_s: float):
    """R(d) = d·(α − β_s·log d) (Gao et al.), with d = √KL; R(0) = 0."""
    d = np.asarray(d, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(d > 0, d * (alpha - beta_s * np.log(np.where(d > 0, d, 1.0))), 0.0)


def fit_scaling_law(d, gain, min_d: float = 0.05) -> dict:
    """Least squares for R = α·d − β_s·d·log d (linear in α, β_s; design [d, −d log d]) over points with
    d ≥ ``min_d`` (the fit is ill-conditioned near 0). R² = 1 − SS_res/SS_tot around the mean of R."""
    d, gain = np.asarray(d, float).ravel(), np.asarray(gain, float).ravel()
    keep = d >= min_d
    d, gain = d[keep], gain[keep]
    if len(d) < 2:
        return {
            "alpha": float("nan"),
            "beta_s": float("nan"),
            "r2": float("nan"),
            "n_points": int(len(d)),
            "peak_d": float("nan"),
        }
    design = np.stack([d, -d * np.log(d)], axis=1)
    (alpha, beta_s), *_ = np.linalg.lstsq(design, gain, rcond=None)
    resid = gain - design @ np.array([alpha, beta_s])
    ss_tot = float(((gain - gain.mean()) ** 2).sum())
    r2 = 1.0 - float((resid**2).sum()) / ss_tot if ss_tot > 0 else float("nan")
    return {
        "alpha": float(alpha),
        "beta_s": float(beta_s),
        "r2": r2,
        "n_points": int(len(d)),
        "peak_d": float(math.exp(min(alpha / beta_s - 1.0, 700.0))) if beta_s > 0 else float("inf"),
    }


# --- the toy "language" and its preference data ------------------------------------------------------------


def parse_betas(text: str) -> list[float]:
    """ "0.01, 0.1,1" → [0.01, 0.1, 1.0]; ``ValueError`` unless every entry is a number in [1e-4, 100], no repeats."""
    try:
        betas = [float(b) for b in str(text).split(",") if b.strip()]
    except ValueError:
        raise ValueError(
            f"betas={text!r} is not allowed: expected comma-separated numbers, e.g. '0.01,0.1,1'"
        ) from None
    if not betas or any(not 1e-4 <= b <= 100 for b in betas) or len(set(betas)) != len(betas):
        raise ValueError(
            f"betas={text!r} is not allowed: expected distinct numbers in [0.0001, 100], e.g. '0.01,0.1,1'"
        )
    return betas


def arm_list(objective: str, betas: list[float]) -> list[tuple[str, float]]:
    """(kind, β) for every trained run: each objective (``"all"`` = DPO, IPO, SLiC) × each β."""
    kinds = OBJECTIVES if objective == "all" else (objective,)
    return [(k, b) for k in kinds for b in betas]


def arm_name(kind: str, beta: float) -> str:
    return f"{LABELS[kind]} β={beta:g}"


def make_problem(seed: int, n_prompts: int, n_candidates: int, n_pairs: int, gold_peak: float):
    """One data seed: candidates from ``torch.Generator(seed)`` (r* = q + 2c₂ℓ*·ℓ − c₂ℓ²) and ⌈N/P⌉ pairs per
    prompt from π_ref × π_ref (prompt i uses pair seed seed·P + i; seed 0 → range(P)). The surplus over N is
    masked off (the last pair of the first prompts), as are ties. Returns (candidates, pairs) with pair indices
    flattened over prompt × candidate: ``prompt·M + candidate``, shape ``(P·⌈N/P⌉,)``."""
    gen = torch.Generator().manual_seed(int(seed))
    cands = prefs.make_length_candidates(
        n_prompts, n_candidates, gen, gold_linear=2 * GOLD_QUADRATIC * gold_peak, gold_quadratic=GOLD_QUADRATIC
    )
    per = math.ceil(n_pairs / n_prompts)
    pair_seeds = [seed * n_prompts + i for i in range(n_prompts)]
    pairs = prefs.sample_bt_pairs(cands.gold, cands.ref_logp, per, seeds=pair_seeds)
    surplus = per * n_prompts - n_pairs
    mask = pairs.mask.clone()
    mask[:surplus, -1] = False
    offset = (torch.arange(n_prompts) * n_candidates).unsqueeze(-1)
    flat = prefs.PreferencePairs(
        (pairs.chosen + offset).reshape(-1), (pairs.rejected + offset).reshape(-1), mask.reshape(-1)
    )
    return cands, flat


def head_inputs(cands, head: str) -> torch.Tensor:
    """f_θ's inputs per candidate: (ℓ/ℓ_max, q), plus (ℓ/ℓ_max)² for the quadratic head. ``(..., M, F)``."""
    x = cands.features
    return torch.cat([x, x[..., :1] ** 2], dim=-1) if head == "quadratic" else x


# --- the policy: π_θ ∝ π_ref · exp(f_θ), one parameter set per (arm, seed) ---------------------------------


def init_head(head: str, n_arms: int, seeds, n_in: int, hidden: int) -> dict[str, torch.Tensor]:
    """Zero output layer, so π_θ = π_ref at step 0. linear/quadratic: w ``(A, S, F)`` = 0. mlp: W1 ``(A, S, F, H)``
    and b1 ``(A, S, H)`` ~ U(±1/√F) from ``Generator(seed)`` (the same for every arm of a seed), w2 = 0."""
    if head != "mlp":
        return {"w": torch.zeros(n_arms, len(seeds), n_in)}
    bound = 1.0 / math.sqrt(n_in)
    w1, b1 = [], []
    for s in seeds:
        gen = torch.Generator().manual_seed(int(s) + 7)
        w1.append((2 * torch.rand(n_in, hidden, generator=gen) - 1) * bound)
        b1.append((2 * torch.rand(hidden, generator=gen) - 1) * bound)
    expand = lambda t: torch.stack(t).unsqueeze(0).repeat(n_arms, *([1] * (t[0].dim() + 1))).contiguous()  # noqa: E731
    return {"W1": expand(w1), "b1": expand(b1), "w2": torch.zeros(n_arms, len(seeds), hidden)}


def head_logits(params: dict, x: torch.Tensor) -> torch.Tensor:
    """f_θ(x) for every arm: ``x (S, P, M, F)`` → ``(A, S, P, M)``; linear w·x or w2·ReLU(x W1 + b1)."""
    if "w" in params:
        return torch.einsum("spmi,asi->aspm", x, params["w"])
    hid = torch.relu(torch.einsum("spmi,asih->aspmh", x, params["W1"]) + params["b1"][:, :, None, None, :])
    return torch.einsum("aspmh,ash->aspm", hid, params["w2"])


def policy_logp(params: dict, x: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """log π_θ(y|x) = log softmax_y(log π_ref(y|x) + f_θ(y)), exact over the M candidates. ``(A, S, P, M)``."""
    return torch.log_softmax(ref_logp + head_logits(params, x), dim=-1)


def policy_metrics(logp, gold, ref_logp, length) -> dict[str, torch.Tensor]:
    """Means over prompts of E_π[r*], KL(π‖π_ref) (exact, under the POLICY), √ of that mean, E_π[ℓ]; ``(A, S)``."""
    kl = prefs.kl_divergence(logp, ref_logp).mean(-1)
    return {
        "gold_reward": prefs.expectation(logp, gold).mean(-1),
        "kl": kl,
        "sqrt_kl": kl.clamp_min(0).sqrt(),
        "mean_length": prefs.expectation(logp, length).mean(-1),
    }


# --- training -------------------------------------------------------------------------------------------------


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


def checkpoints(n_steps: int, per_epoch: int, log_every: int) -> list[int]:
    """0, every ``log_every`` steps, every epoch end, and the last step."""
    return sorted(set(range(0, n_steps + 1, log_every)) | set(range(0, n_steps + 1, per_epoch)) | {n_steps})


def train_arms(
    data: dict,
    kinds,
    betas,
    params: dict,
    lr: float,
    epochs: int,
    batch_size: int,
    log_steps,
    gens,
    on_step=None,
    on_log=None,
):
    """Minibatch Adam on every (arm, seed) at once. ``data`` holds x ``(S, P, M, F)``, ref_logp, gold, length
    ``(S, P, M)``, chosen/rejected/mask ``(S, N)`` (flat indices). Every arm of a seed sees the same batches;
    the summed loss separates, so each (arm, seed) gets exactly the Adam update of its own run.
    Returns the metrics at ``log_steps`` as ``(T, A, S)`` numpy arrays and the final log-probs."""
    S, P, M = data["ref_logp"].shape
    dev = data["ref_logp"].device
    kind_mask = torch.tensor([[k == o for k in kinds] for o in OBJECTIVES], dtype=torch.float32, device=dev)
    beta = torch.tensor(betas, dtype=torch.float32, device=dev).view(-1, 1, 1)
    ref_flat = data["ref_logp"].reshape(S, P * M)
    leaves = [t.requires_grad_() for t in params.values()]
    opt = torch.optim.Adam(leaves, lr=lr)
    per_epoch = steps_per_epoch(data["mask"], batch_size)
    wanted, logged, step = set(log_steps), [], 0
    for _ in range(epochs):
        order, valid = epoch_order(data["mask"], gens)
        for start in range(0, per_epoch * batch_size, batch_size):
            logp = policy_logp(params, data["x"], data["ref_logp"])
            if step in wanted:
                logged.append(_log(logp, data, step, on_log))
            idx, ok = order[:, start : start + batch_size], valid[:, start : start + batch_size]
            chosen, rejected = data["chosen"].gather(1, idx), data["rejected"].gather(1, idx)
            flat = logp.reshape(*logp.shape[:2], P * M)
            lp_w = flat.gather(-1, chosen.expand(len(kinds), -1, -1))
            lp_l = flat.gather(-1, rejected.expand(len(kinds), -1, -1))
            h = logratio_margin(lp_w, lp_l, ref_flat.gather(-1, chosen), ref_flat.gather(-1, rejected))
            losses = prefs.masked_mean(mixed_daa_loss(kind_mask, beta * h), ok)
            opt.zero_grad(set_to_none=True)
            losses.sum().backward()
            opt.step()
            step += 1
            if on_step is not None:
                on_step(step, losses.detach())
    logp = policy_logp(params, data["x"], data["ref_logp"]).detach()
    if step in wanted:
        logged.append(_log(logp, data, step, on_log))
    series = {k: np.stack([m[k] for m in logged]).astype(np.float64) for k in METRICS}
    return series, logp


def _log(logp, data, step, on_log):
    with torch.no_grad():
        m = policy_metrics(logp, data["gold"], data["ref_logp"], data["length"])
        m = {k: v.cpu().numpy() for k, v in m.items()}
    if on_log is not None:
        on_log(step, m)
    return m


# --- the claim checks (pure functions of the logged curves) ------------------------------------------------


def hump(gold: np.ndarray, kl: np.ndarray) -> dict:
    """One run's curve (``(T,)`` each): peak = argmax gold; drop = gold[peak] − gold[final]; KL at both."""
    peak = int(np.argmax(gold))
    return {
        "peak_index": peak,
        "peak_gold": float(gold[peak]),
        "final_gold": float(gold[-1]),
        "drop": float(gold[peak] - gold[-1]),
        "kl_peak": float(kl[peak]),
        "kl_final": float(kl[-1]),
    }


def overoptimization_claim(humps: dict[str, list[dict]], beta: float, min_drop: float = 0.25) -> ClaimCheck:
    """For every objective at the smallest β and in every seed: peak gold − final gold ≥ ``min_drop`` and the
    final KL exceeds the KL at the peak. ``humps`` maps an objective's label to its per-seed :func:`hump`."""
    numbers, ok = {}, True
    for label, per_seed in humps.items():
        drops = [h["drop"] for h in per_seed]
        kl_up = all(h["kl_final"] > h["kl_peak"] for h in per_seed)
        ok = ok and min(drops) >= min_drop and kl_up
        numbers[f"{label}_drop"] = float(min(drops))
        numbers[f"{label}_kl_peak"] = float(np.mean([h["kl_peak"] for h in per_seed]))
        numbers[f"{label}_kl_final"] = float(np.mean([h["kl_final"] for h in per_seed]))
    return ClaimCheck(
        claim=f"overoptimization at β={beta:g}: for {', '.join(humps)}, peak gold − final gold ≥ "
        f"{min_drop:g} and KL(final) > KL(peak), in every seed (drop: worst seed)",
        passed=bool(ok and humps),
        numbers=numbers,
    )


def scaling_law_claim(fit: dict, label: str = "DPO", min_r2: float = 0.6) -> ClaimCheck:
    """The pooled fit of R(d) = d(α − β_s log d) over one objective's checkpoints: R² ≥ ``min_r2``, α, β_s > 0."""
    passed = fit["r2"] >= min_r2 and fit["alpha"] > 0 and fit["beta_s"] > 0  # NaN compares False
    return ClaimCheck(
        claim=f"scaling law: the pooled {label} fit of R(d) = d·(α − β_s·log d), d = √KL, has "
        f"R² ≥ {min_r2:g} with α > 0 and β_s > 0",
        passed=bool(passed),
        numbers={k: fit[k] for k in ("r2", "alpha", "beta_s", "n_points", "peak_d")},
        detail="peak_d = e^(α/β_s − 1), where the fitted hump tops out (reported, not asserted)",
    )


def intra_epoch_claim(peaks: dict[str, dict], min_drop: float = 0.05) -> ClaimCheck:
    """At least one run peaks inside epoch 1: its best checkpoint is after step 0 and before the end of the
    first epoch, and its gold then falls by ≥ ``min_drop`` (a hump, not a plateau). ``peaks`` maps a run name
    to {"epoch": fraction of an epoch at the peak, "drop": peak − final gold, ...} (other keys are reported)."""
    early = {n: v for n, v in peaks.items() if 0 < v["epoch"] < 1 and v["drop"] >= min_drop}
    best = min(early, key=lambda n: early[n]["epoch"]) if early else None
    numbers = {"runs_peaking_in_epoch_1": len(early), "runs": len(peaks)}
    if best is not None:
        numbers.update({"earliest": best, **{f"earliest_{k}": v for k, v in early[best].items()}})
    return ClaimCheck(
        claim=f"intra-epoch: at least one run peaks before the end of epoch 1 (then drops ≥ {min_drop:g})",
        passed=best is not None,
        numbers=numbers,
    )


# --- figures ----------------------------------------------------------------------------------------------

SYMBOLS = {"DPO": "circle", "IPO": "square", "SLiC": "diamond"}
DASHES = {"DPO": "solid", "IPO": "dash", "SLiC": "dot"}


def _style(fig, x):
    """Colour each run's trace by its β and dash / mark it by its objective."""
    colours = viz.color_map(f"β={b:g}" for b in sorted(set(x["betas"])))
    for trace, kind, beta in zip(fig.data, x["kinds"], x["betas"]):
        trace.update(
            line={"color": colours[f"β={beta:g}"], "dash": DASHES[kind]},
            marker={"color": colours[f"β={beta:g}"], "symbol": SYMBOLS[kind]},
        )
    return fig


def checkpoint_frame(result):
    """One row per (seed, step, run): √KL, KL, gold, mean length and the gain R = gold − gold(π_ref)."""
    hist = result.history
    wide = hist.pivot_table(index=["seed", "step", "series"], columns="metric", values="value").reset_index()
    ref = dict(zip(result.extras["seeds"], result.extras["gold_reference"]))
    wide["gain"] = wide["gold_reward"] - wide["seed"].map(ref)
    return wide


def law_figure(result):
    """Gain R against √KL for every checkpoint (colour β, marker objective) and each objective's fitted law."""
    import plotly.graph_objects as go

    x, wide = result.extras, checkpoint_frame(result)
    fig = viz.lines(
        [],
        {},
        title="Gold gain over π_ref against √KL(π‖π_ref), every checkpoint, with "
        "R(d) = d(α − β_s log d) fitted per objective",
        xlabel="d = √KL",
        ylabel="R = gold − gold(π_ref)",
    )
    for name in x["arms"]:
        sub = wide[wide["series"] == name]
        fig.add_trace(go.Scatter(x=sub["sqrt_kl"], y=sub["gain"], mode="markers", name=name, opacity=0.8))
    _style(fig, x)
    grid = np.linspace(1e-3, max(float(wide["sqrt_kl"].max()), 0.1) * 1.05, 200)
    for label, fit in x["fits"].items():
        if math.isfinite(fit["alpha"]):
            fig.add_trace(
                go.Scatter(
                    x=grid,
                    y=scaling_law(grid, fit["alpha"], fit["beta_s"]),
                    mode="lines",
                    line={"color": "black", "dash": DASHES[label], "width": 2},
                    name=f"{label} fit: α={fit['alpha']:.2f}, β_s={fit['beta_s']:.2f}, R²={fit['r2']:.2f}",
                )
            )
    return fig


def progress_figure(result, metric, title, ylabel):
    """``metric`` (mean over seeds) against training progress in epochs, one line per run; epoch 1 marked."""
    x = result.extras
    fig = viz.lines(
        x["epochs_at"],
        dict(zip(x["arms"], x["curves"][metric])),
        mode="lines+markers",
        title=title,
        xlabel="epochs of the preference data",
        ylabel=ylabel,
    )
    fig.add_vline(x=1.0, line_dash="dot", annotation_text="end of epoch 1")
    return _style(fig, x)


def per_beta_figure(result, which):
    """Final (solid) and peak (dotted, gold only) value per β, mean over seeds, one line per objective."""
    x, m = result.extras, result.metrics
    betas = sorted(set(x["betas"]))
    ys = {}
    for label in dict.fromkeys(x["kinds"]):
        key = lambda b: f"{label}_b{b:g}".lower()  # noqa: E731
        if which == "gold":
            ys[f"{label} final"] = [m[f"gold_{key(b)}"] for b in betas]
            ys[f"{label} peak"] = [m[f"peak_gold_{key(b)}"] for b in betas]
        else:
            ys[label] = [m[f"kl_{key(b)}"] for b in betas]
    title = (
        "Gold reward per β: peak over checkpoints (dotted) and final (solid)"
        if which == "gold"
        else "Final KL(π‖π_ref) per β: small β, large KL budget"
    )
    fig = viz.lines(
        betas, ys, mode="lines+markers", title=title, xlabel="β", ylabel="E_π[r*]" if which == "gold" else "KL (nats)"
    )
    for trace in fig.data:
        if trace.name.endswith(" peak"):
            trace.line.dash = "dot"
    if which == "gold":
        fig.add_hline(y=float(np.mean(x["gold_reference"])), line_dash="dash", annotation_text="π_ref")
    fig.update_xaxes(type="log")
    return fig


def length_figure(result):
    """Mean response length E_π[ℓ] against KL along training, one line per run (mean over seeds)."""
    x = result.extras
    fig = viz.lines(
        [],
        {},
        title="Length exploitation: mean response length against KL along training",
        xlabel="KL(π‖π_ref) (nats)",
        ylabel="E_π[ℓ]",
    )
    import plotly.graph_objects as go

    for name, kl, length in zip(x["arms"], x["curves"]["kl"], x["curves"]["mean_length"]):
        fig.add_trace(go.Scatter(x=kl, y=length, mode="lines+markers", name=name))
    fig.add_hline(y=result.params["gold_peak"], line_dash="dot", annotation_text="gold peaks here")
    return _style(fig, x)


def prompt_figure(result):
    """π_ref and the final π_θ of each objective at the smallest β over the candidates of prompt 0 (seed 0)."""
    x = result.extras["prompt0"]
    low = min(result.extras["betas"])
    probs = {n: v for n, v in x["probs"].items() if n == "π_ref" or n.endswith(f"β={low:g}")}
    fig = viz.lines(
        x["length"],
        probs,
        mode="markers",
        title=f"Prompt 0: π over its candidates, final policies at β={low:g}",
        xlabel="candidate length ℓ",
        ylabel="probability",
    )
    return fig


def make_figures(result) -> dict:
    """The law (gain vs √KL with fits), gold and KL against epochs, final/peak per β, length drift, one prompt."""
    return {
        "law": law_figure(result),
        "gold_progress": progress_figure(result, "gold_reward", "Gold reward E_π[r*] during training", "E_π[r*]"),
        "kl_progress": progress_figure(result, "kl", "KL(π‖π_ref) during training", "KL (nats)"),
        "gold_per_beta": per_beta_figure(result, "gold"),
        "kl_per_beta": per_beta_figure(result, "kl"),
        "length": length_figure(result),
        "prompt": prompt_figure(result),
    }


# --- the experiment ----------------------------------------------------------------------------------------


def check_arms(ctx, losses, step: int, names) -> None:
    """One sync per step: if the summed loss ``(A, S)`` is NaN/inf, ``DivergenceError`` names the first bad run."""
    if math.isfinite(float(losses.sum())):
        return
    for name, arm_loss in zip(names, losses):
        ctx.check(arm_loss.sum(), step, name)


def stack_problems(problems, head: str, device) -> dict[str, torch.Tensor]:
    """The seeds' candidates and pairs as ``(S, ...)`` tensors on ``device`` (see :func:`train_arms`)."""
    cands = [c for c, _ in problems]
    pairs = [q for _, q in problems]
    data = {
        "x": torch.stack([head_inputs(c, head) for c in cands]),
        "ref_logp": torch.stack([c.ref_logp for c in cands]),
        "gold": torch.stack([c.gold for c in cands]),
        "length": torch.stack([c.length for c in cands]),
        "chosen": torch.stack([q.chosen for q in pairs]),
        "rejected": torch.stack([q.rejected for q in pairs]),
        "mask": torch.stack([q.mask for q in pairs]),
    }
    return {k: v.to(device) for k, v in data.items()}


def analyse(series, arms, names, steps, per_epoch) -> dict:
    """Gains R = gold − gold(π_ref) per seed; the law fitted per objective over all its β, seeds and checkpoints;
    each run's hump (per seed) and its peak's position in epochs."""
    ref = series["gold_reward"][0, 0]  # (S,) every arm starts at π_ref
    gain = series["gold_reward"] - ref  # (T, A, S)
    fits = {}
    for kind in dict.fromkeys(k for k, _ in arms):
        cols = [a for a, (k, _) in enumerate(arms) if k == kind]
        fits[LABELS[kind]] = fit_scaling_law(series["sqrt_kl"][:, cols], gain[:, cols])
    humps = {
        n: [hump(series["gold_reward"][:, a, s], series["kl"][:, a, s]) for s in range(ref.shape[0])]
        for a, n in enumerate(names)
    }
    for per_seed in humps.values():
        for h in per_seed:
            h["peak_epoch"] = steps[h["peak_index"]] / per_epoch
    return {"gold_reference": ref, "fits": fits, "humps": humps}


def final_metrics(series, names, info) -> dict[str, float]:
    """Means over seeds: π_ref's gold, each run's final gold, KL, mean length and peak gold; the fits."""
    out = {"gold_reference": float(info["gold_reference"].mean())}
    for a, n in enumerate(names):
        key = n.replace(" β=", "_b").lower()
        out[f"gold_{key}"] = float(series["gold_reward"][-1, a].mean())
        out[f"peak_gold_{key}"] = float(np.mean([h["peak_gold"] for h in info["humps"][n]]))
        out[f"kl_{key}"] = float(series["kl"][-1, a].mean())
        out[f"length_{key}"] = float(series["mean_length"][-1, a].mean())
    for label, fit in info["fits"].items():
        out.update({f"fit_{label.lower()}_{k}": float(fit[k]) for k in ("alpha", "beta_s", "r2")})
    return out


@method_run(PARAMS, figures=make_figures, threads={"quick": 1})
def run(ctx: RunContext) -> Outcome:
    p = ctx.p
    betas = parse_betas(p.betas)
    arms = arm_list(p.objective, betas)
    names = [arm_name(*a) for a in arms]
    seeds = [ctx.seed + k for k in range(p.n_seeds)]
    problems = [make_problem(s, p.n_prompts, p.n_candidates, p.n_pairs, p.gold_peak) for s in seeds]
    data = stack_problems(problems, p.head, ctx.device)
    params = init_head(p.head, len(arms), seeds, data["x"].shape[-1], p.hidden)
    params = {k: v.to(ctx.device) for k, v in params.items()}
    per_epoch = steps_per_epoch(data["mask"], p.batch_size)
    steps = checkpoints(per_epoch * p.epochs, per_epoch, p.log_every)
    bar = ctx.bar(per_epoch * p.epochs, f"{len(arms)} runs × {len(seeds)} seeds")

    def on_step(step, losses):
        check_arms(ctx, losses, step, names)
        bar.update(1)

    def on_log(step, m):
        for a, name in enumerate(names):
            for s, seed in enumerate(seeds):
                for metric in METRICS:
                    ctx.history.log(step, name, metric, m[metric][a, s], seed=seed)

    gens = [torch.Generator().manual_seed(s + 2**20) for s in seeds]
    series, final_logp = train_arms(
        data,
        [k for k, _ in arms],
        [b for _, b in arms],
        params,
        p.lr,
        p.epochs,
        p.batch_size,
        steps,
        gens,
        on_step,
        on_log,
    )
    bar.close()
    info = analyse(series, arms, names, steps, per_epoch)
    low = min(betas)
    claims = [
        overoptimization_claim({LABELS[k]: info["humps"][arm_name(k, b)] for k, b in arms if b == low}, low),
        scaling_law_claim(
            *next(
                ((f, l) for l, f in info["fits"].items() if l == "DPO"), next(((f, l) for l, f in info["fits"].items()))
            )
        ),
        intra_epoch_claim(
            {
                f"{n} (seed {seeds[s]})": {
                    "epoch": h["peak_epoch"],
                    "drop": h["drop"],
                    "kl_peak": h["kl_peak"],
                    "kl_final": h["kl_final"],
                }
                for n, per_seed in info["humps"].items()
                for s, h in enumerate(per_seed)
            }
        ),
    ]
    extras = {
        "arms": names,
        "kinds": [LABELS[k] for k, _ in arms],
        "betas": [b for _, b in arms],
        "seeds": seeds,
        "steps": steps,
        "steps_per_epoch": per_epoch,
        "epochs_at": [s / per_epoch for s in steps],
        "gold_reference": info["gold_reference"].tolist(),
        "fits": info["fits"],
        "humps": info["humps"],
        "pairs_kept": data["mask"].sum(-1).tolist(),
        "curves": {m: series[m].mean(-1).T.tolist() for m in METRICS},
        "prompt0": {
            "length": data["length"][0, 0].cpu().tolist(),
            "quality": problems[0][0].quality[0].tolist(),
            "gold": data["gold"][0, 0].cpu().tolist(),
            "probs": {
                "π_ref": data["ref_logp"][0, 0].exp().cpu().tolist(),
                **{n: final_logp[a, 0, 0].exp().cpu().tolist() for a, n in enumerate(names)},
            },
        },
    }
    return Outcome(metrics=final_metrics(series, names, info), claims=claims, extras=extras)
