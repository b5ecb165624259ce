"""BANG — Spurious Feature Diversification Improves Out-of-distribution Generalization (arXiv 2309.17230).

WiSE-FT averages the *weights* of a pre-trained model θ_0 and its fine-tuned copy θ_ft,

    θ_α = (1 − α) θ_0 + α θ_ft,        predict argmax f_{θ_α}(x),

and is more robust out of distribution (OOD) than either end. The paper's explanation: the two models lean on
*different* spurious features; the average uses more of them, each with a smaller weight, so no single broken
cue flips the prediction. Symptom: "FalseFalseTrue" samples, wrong for θ_0 and θ_ft, right for θ_α. Because
θ_ft is over-confident it dominates the average; BANG (BAlaNced averaGing) fine-tunes with label smoothing
and MixUp (soft-target cross-entropy) to temper it, then averages as WiSE-FT does. The baseline output-space
ensemble (OSE) averages probabilities instead: (1 − α) softmax f_{θ_0} + α softmax f_{θ_ft}.

The toy: MultiColorDigits (:mod:`labkit.data.colored_digits`), where pre-training data tie group-A colour
patches to the label and fine-tuning data tie group-B patches, and the OOD test breaks both.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from labkit import viz
from labkit.core import ClaimCheck, Outcome, Param, RunContext, iterate_minibatches, method_run
from labkit.data import colored_digits as cd
from labkit.models import MLP

N_CLASSES = 10
N_BINS = 15

MAIN_METRIC = "ood_acc"
PARAMS = [
    Param(
        "alpha",
        float,
        quick=0.5,
        low=0.0,
        high=1.0,
        help="mixing weight α of θ_ft (or θ_ft^B) for the reported numbers and the claim checks",
    ),
    Param("label_smoothing", float, quick=0.1, low=0.0, high=0.9, help="BANG's label smoothing ε"),
    Param("mixup_a", float, quick=0.4, low=0.0, high=10.0, help="BANG's MixUp λ ~ Beta(a, a); 0 turns MixUp off"),
    Param(
        "pre_a", float, quick=0.8, low=0.0, high=1.0, help="pre-training data: P(group-A patch shows its label colour)"
    ),
    Param(
        "ft_b",
        float,
        quick=0.9,
        low=0.0,
        high=1.0,
        help="fine-tuning (ID) data: P(group-B patch shows its label colour)",
    ),
    Param("ood_a", float, quick=0.4, low=0.0, high=1.0, help="OOD test: P(group-A patch shows its label colour)"),
    Param("ood_b", float, quick=0.3, low=0.0, high=1.0, help="OOD test: P(group-B patch shows its label colour)"),
    Param(
        "ood_b_wrong",
        float,
        quick=0.3,
        low=0.0,
        high=1.0,
        help="OOD test: P(group-B patch shows a consistently wrong colour); raise it to hurt θ_ft OOD",
    ),
    Param(
        "pre_b",
        float,
        quick=0.1,
        low=0.0,
        high=1.0,
        main=False,
        help="pre-training data: P(group-B patch shows its label colour)",
    ),
    Param(
        "ft_a",
        float,
        quick=0.1,
        low=0.0,
        high=1.0,
        main=False,
        help="fine-tuning (ID) data: P(group-A patch shows its label colour)",
    ),
    Param(
        "noise",
        float,
        quick=0.8,
        low=0.0,
        high=5.0,
        main=False,
        help="σ of the Gaussian noise on the 4×4 pooled digit (the weak invariant feature)",
    ),
    Param(
        "n_patches",
        int,
        quick=12,
        standard=24,
        full=24,
        low=2,
        high=24,
        main=False,
        help="colour patches (even; first half group A, second half group B)",
    ),
    Param("pre_epochs", int, quick=15, full=30, low=1, high=1000, main=False, help="pre-training epochs for θ_0"),
    Param(
        "ft_epochs",
        int,
        quick=100,
        full=200,
        low=1,
        high=5000,
        main=False,
        help="fine-tuning epochs (every fine-tuned arm, so MixUp is compared at equal epochs)",
    ),
    Param("lr", float, quick=1e-3, low=1e-5, high=1.0, log=True, main=False, help="AdamW learning rate"),
    Param(
        "pre_weight_decay",
        float,
        quick=1e-3,
        low=0.0,
        high=1.0,
        main=False,
        help="AdamW weight decay while pre-training (fine-tuning uses none)",
    ),
    Param("batch_size", int, quick=64, low=2, high=600, main=False, help="batch size"),
    Param("hidden", int, quick=64, low=2, high=4096, main=False, help="MLP hidden width"),
    Param(
        "model",
        str,
        quick="mlp",
        full="cnn",
        choices=("mlp", "cnn"),
        main=False,
        help="MLP on vectors (16 + 10·patches), or a small CNN on the same features rendered as 3×28×28 images",
    ),
    Param(
        "ablation",
        bool,
        quick=False,
        standard=True,
        full=True,
        main=False,
        help="also fine-tune with label smoothing only and MixUp only",
    ),
    Param(
        "ft_scale",
        float,
        quick=1.0,
        low=0.01,
        high=1.0,
        main=False,
        help="exploration (post-hoc variant, inferred): also average θ_0 with θ_ft whose head is ×s; 1 = off",
    ),
    Param(
        "n_seeds",
        int,
        quick=3,
        standard=10,
        full=5,
        low=1,
        high=50,
        main=False,
        help="seeds ctx.seed + k: each draws its own split, colour maps, noise, init and batches",
    ),
]


# --------------------------------------------------------------------------- the paper's pieces


def interpolate_weights(theta_0: dict, theta_1: dict, alpha: float) -> dict:
    """WiSE-FT: θ_α[k] = (1 − α) θ_0[k] + α θ_1[k] for EVERY floating entry of the state dicts (weights, biases,
    the head; float buffers too). Non-float buffers (e.g. a BatchNorm step counter) are taken from θ_1."""
    if set(theta_0) != set(theta_1):
        raise ValueError(f"the state dicts differ: {sorted(set(theta_0) ^ set(theta_1))}")
    return {
        k: (1 - alpha) * theta_0[k] + alpha * theta_1[k] if theta_0[k].is_floating_point() else theta_1[k]
        for k in theta_0
    }


def output_ensemble(logits_0: torch.Tensor, logits_1: torch.Tensor, alpha: float) -> torch.Tensor:
    """Output-space ensemble: p = (1 − α) softmax(z_0) + α softmax(z_1) (probabilities, rows sum to 1)."""
    return (1 - alpha) * torch.softmax(logits_0, -1) + alpha * torch.softmax(logits_1, -1)


def false_false_true(correct_0: torch.Tensor, correct_1: torch.Tensor, correct_avg: torch.Tensor) -> float:
    """FalseFalseTrue rate: (1/N) Σ_n 1[θ_0 wrong] · 1[θ_ft wrong] · 1[θ_α right]."""
    return float((~correct_0 & ~correct_1 & correct_avg).float().mean())


def smooth_targets(y: torch.Tensor, n_classes: int, eps: float) -> torch.Tensor:
    """Label smoothing: t = (1 − ε) onehot(y) + ε / C."""
    return (1 - eps) * F.one_hot(y, n_classes).float() + eps / n_classes


def mixup(x: torch.Tensor, targets: torch.Tensor, lam: float, perm: torch.Tensor):
    """MixUp with partner j = perm[i]: x̃_i = λ x_i + (1 − λ) x_j, t̃_i = λ t_i + (1 − λ) t_j."""
    return lam * x + (1 - lam) * x[perm], lam * targets + (1 - lam) * targets[perm]


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Soft-target cross-entropy: −(1/B) Σ_b Σ_c t_bc log softmax(z_b)_c."""
    return -(targets * torch.log_softmax(logits, -1)).sum(-1).mean()


def bang_loss(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    mixup_a: float,
    rng: np.random.Generator,
    gen: torch.Generator,
) -> torch.Tensor:
    """One BANG fine-tuning loss: λ ~ Beta(a, a) (``rng``) and partners perm (``gen``) → mix the batch →
    smooth the mixed targets (ε) → soft CE. ``eps = 0, mixup_a = 0`` is plain cross-entropy."""
    targets = smooth_targets(y, N_CLASSES, eps)
    if mixup_a > 0:
        lam = float(rng.beta(mixup_a, mixup_a))
        x, targets = mixup(x, targets, lam, torch.randperm(len(y), generator=gen).to(x.device))
    return soft_cross_entropy(model(x), targets)


def expected_calibration_error(probs: torch.Tensor, y: torch.Tensor, n_bins: int = N_BINS) -> float:
    """ECE = Σ_b (n_b / N) |acc_b − conf_b| over ``n_bins`` equal-width bins [k/B, (k+1)/B) of the confidence
    conf = max_c p_c (1.0 goes to the last bin); acc_b and conf_b are the bin's accuracy and mean confidence."""
    conf, pred = probs.max(-1)
    correct = (pred == y).float()
    bins = torch.clamp((conf * n_bins).floor().long(), max=n_bins - 1)
    count = torch.bincount(bins, minlength=n_bins).float()
    gap = torch.bincount(bins, weights=correct - conf, minlength=n_bins).abs()  # n_b |acc_b − conf_b|
    return float(gap.sum() / count.sum())


def mean_confidence(probs: torch.Tensor) -> float:
    """Mean max-probability (1/N) Σ_n max_c p_nc."""
    return float(probs.max(-1).values.mean())


def head_keys(model: nn.Module) -> list[str]:
    """State-dict keys of the model's last ``nn.Linear`` (its weight and bias)."""
    name = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)][-1]
    return [f"{name}.weight", f"{name}.bias"]


def scale_head(theta: dict, keys: list[str], s: float) -> dict:
    """Post-hoc confidence balancing (inferred from the paper's description, not its code): the head's weight
    and bias ×s, so every logit is ×s (temperature 1/s) and the argmax is unchanged."""
    return {k: v * s if k in keys else v for k, v in theta.items()}


def weight_mass(first_weight: torch.Tensor, groups: dict[str, np.ndarray]) -> dict[str, float]:
    """Share of the first layer's squared weight on each input group g: Σ_{i∈g} ‖W[:, i]‖² / Σ_i ‖W[:, i]‖²."""
    col = (first_weight.detach().float() ** 2).sum(0).cpu().numpy()
    return {g: float(col[idx].sum() / col.sum()) for g, idx in groups.items()}


# --------------------------------------------------------------------------- data and models


@dataclass
class Data:
    """One seed's splits on the device: name → (X, y); ``raw`` keeps the NumPy splits."""

    tensors: dict[str, tuple[torch.Tensor, torch.Tensor]]
    raw: dict[str, cd.ColouredSplit]


def colour_rules(p) -> dict[str, cd.ColourRule]:
    """The card's splits: pre-training (A correlated), fine-tuning = ID (B correlated), OOD (both broken,
    B partly consistently wrong), and ID test (the held-out images with the ID rule, fresh noise and colours)."""
    if p.ood_b + p.ood_b_wrong > 1:
        raise ValueError(f"ood_b + ood_b_wrong = {p.ood_b + p.ood_b_wrong:g} must be ≤ 1")
    n = p.n_patches
    ft = cd.group_rule(n, p.ft_a, p.ft_b)
    return {
        "pretrain": cd.group_rule(n, p.pre_a, p.pre_b),
        "finetune": ft,
        "ood": cd.group_rule(n, p.ood_a, p.ood_b, 0.0, p.ood_b_wrong),
        "id_test": ft,
    }


def make_data(p, seed: int, device) -> Data:
    """600 pre-training, 600 fine-tuning and the remaining 597 images as OOD test (and, recoloured, ID test)."""
    raw = cd.multicolor_digits(
        seed, colour_rules(p), {"pretrain": 600, "finetune": 600, "ood": -1}, noise=p.noise, reuse={"id_test": "ood"}
    )
    features = cd.render if p.model == "cnn" else cd.encode
    tensors = {
        k: (torch.as_tensor(features(s), device=device), torch.as_tensor(s.y, device=device)) for k, s in raw.items()
    }
    return Data(tensors, raw)


class SmallCNN(nn.Sequential):
    """3×28×28 → conv3×3 (16) → ReLU → maxpool 2 → conv3×3 (32) → ReLU → maxpool 2 → linear 64 → ReLU
    → linear C. No BatchNorm, so weight averaging needs no statistics."""

    def __init__(self, n_classes: int = N_CLASSES):
        super().__init__(
            nn.Conv2d(3, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(32 * 7 * 7, 64),
            nn.ReLU(),
            nn.Linear(64, n_classes),
        )


def build_model(p) -> nn.Module:
    """The card's MLP (16 + 10·n_patches) → hidden → 10, or :class:`SmallCNN`."""
    if p.model == "cnn":
        return SmallCNN()
    return MLP(16 + 10 * p.n_patches, [p.hidden], N_CLASSES)


# --------------------------------------------------------------------------- training and evaluation


@dataclass(frozen=True)
class Recipe:
    """One fine-tuning recipe: label smoothing ε and MixUp a (0, 0 = standard fine-tuning)."""

    key: str
    label: str
    eps: float = 0.0
    mixup_a: float = 0.0


def recipes(p) -> list[Recipe]:
    """Standard fine-tuning and BANG (LS + MixUp); with ``ablation`` also LS only and MixUp only."""
    out = [
        Recipe("ft", "fine-tune θ_ft"),
        Recipe(
            "ftB", f"BANG fine-tune θ_ft^B (ε={p.label_smoothing:g}, a={p.mixup_a:g})", p.label_smoothing, p.mixup_a
        ),
    ]
    if p.ablation:
        out += [
            Recipe("ls", f"LS only (ε={p.label_smoothing:g})", p.label_smoothing, 0.0),
            Recipe("mixup", f"MixUp only (a={p.mixup_a:g})", 0.0, p.mixup_a),
        ]
    return out


@torch.no_grad()
def logits_on(model: nn.Module, X: torch.Tensor) -> torch.Tensor:
    """Logits in eval mode."""
    model.eval()
    return model(X)


def eval_metrics(model: nn.Module, data: Data) -> dict[str, float]:
    """ID and OOD accuracy and OOD mean confidence (logged every epoch)."""
    out = {}
    for split, prefix in (("id_test", "id"), ("ood", "ood")):
        X, y = data.tensors[split]
        probs = torch.softmax(logits_on(model, X), -1)
        out[f"{prefix}_acc"] = float((probs.argmax(-1) == y).float().mean())
        if prefix == "ood":
            out["ood_conf"] = mean_confidence(probs)
    return out


def fit(
    ctx: RunContext,
    model: nn.Module,
    data: Data,
    split: str,
    *,
    epochs: int,
    weight_decay: float,
    recipe: Recipe,
    seed: int,
    stream: int,
    step0: int,
    series: str,
    bar,
) -> nn.Module:
    """AdamW on ``split`` for ``epochs`` epochs with the recipe's loss; logs ``eval_metrics`` at step0 + epoch
    under ``seed``. Batch order and MixUp draws depend only on ``stream``, so recipes given the same stream see
    the same batches."""
    X, y = data.tensors[split]
    opt = torch.optim.AdamW(model.parameters(), lr=ctx.p.lr, weight_decay=weight_decay)
    order, mix_gen, rng = (
        torch.Generator().manual_seed(stream),
        torch.Generator().manual_seed(stream + 1),
        np.random.default_rng(stream + 2),
    )
    step = 0
    for epoch in range(1, epochs + 1):
        model.train()
        for idx in iterate_minibatches(len(y), ctx.p.batch_size, order):
            step += 1
            idx = idx.to(X.device)
            loss = bang_loss(model, X[idx], y[idx], recipe.eps, recipe.mixup_a, rng, mix_gen)
            ctx.check(loss.detach(), step, series)
            opt.zero_grad()
            loss.backward()
            opt.step()
        ctx.history.log_many(step0 + epoch, series, eval_metrics(model, data), seed=seed)
        bar.update(1)
    return model


def train_seed(ctx: RunContext, data: Data, seed: int, bar) -> dict[str, dict]:
    """θ_0 on the pre-training split, then every recipe fine-tuned from θ_0 on the ID split; state dicts."""
    p = ctx.p
    torch.manual_seed(seed)
    model = build_model(p).to(ctx.device)
    fit(
        ctx,
        model,
        data,
        "pretrain",
        epochs=p.pre_epochs,
        weight_decay=p.pre_weight_decay,
        recipe=Recipe("pre", "pre-train"),
        seed=seed,
        stream=seed,
        step0=0,
        series="pre-train θ_0",
        bar=bar,
    )
    states = {"pre": {k: v.detach().clone() for k, v in model.state_dict().items()}}
    for r in recipes(p):
        model.load_state_dict(states["pre"])  # every fine-tuned copy starts from θ_0 (same basin)
        fit(
            ctx,
            model,
            data,
            "finetune",
            epochs=p.ft_epochs,
            weight_decay=0.0,
            recipe=r,
            seed=seed,
            stream=seed + 1000,
            step0=p.pre_epochs,
            series=r.label,
            bar=bar,
        )
        states[r.key] = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return states


def alpha_grid(alpha: float) -> list[float]:
    """{0, 0.1, …, 1} plus the reported α."""
    return sorted({round(a, 10) for a in [k / 10 for k in range(11)] + [alpha]})


def path_row(probs: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """Accuracy, mean confidence and ECE of probabilities ``probs`` on labels ``y``."""
    return {
        "acc": float((probs.argmax(-1) == y).float().mean()),
        "conf": mean_confidence(probs),
        "ece": expected_calibration_error(probs, y),
    }


def weight_paths(p, states: dict) -> dict[str, str]:
    """Weight-space paths: arm name → the fine-tuned state it interpolates towards (from θ_0)."""
    names = {"WiSE-FT": "ft", "BANG": "ftB"}
    if p.ablation:
        names.update({"WiSE LS only": "ls", "WiSE MixUp only": "mixup"})
    if p.ft_scale < 1:
        names[f"WiSE θ_ft head ×{p.ft_scale:g}"] = "ft_scaled"
    return names


def evaluate_paths(p, model: nn.Module, states: dict, data: Data, seed: int) -> tuple[list[dict], dict]:
    """Every weight path and the OSE at every α of the grid, on the ID and OOD tests (one row per arm and α:
    accuracy, confidence, ECE), and each arm's OOD probabilities at the reported α (keyed by arm)."""
    if p.ft_scale < 1:
        states = {**states, "ft_scaled": scale_head(states["ft"], head_keys(model), p.ft_scale)}
    rows, kept = [], {}
    ends = {}
    for key in ("pre", "ft"):
        model.load_state_dict(states[key])
        ends[key] = {s: logits_on(model, data.tensors[s][0]) for s in ("id_test", "ood")}
    for alpha in alpha_grid(p.alpha):
        probs = {}
        for arm, key in weight_paths(p, states).items():
            model.load_state_dict(interpolate_weights(states["pre"], states[key], alpha))
            probs[arm] = {s: torch.softmax(logits_on(model, data.tensors[s][0]), -1) for s in ("id_test", "ood")}
        probs["OSE"] = {s: output_ensemble(ends["pre"][s], ends["ft"][s], alpha) for s in ("id_test", "ood")}
        for arm, pr in probs.items():
            row = {"seed": seed, "arm": arm, "alpha": alpha}
            for s, tag in (("id_test", "id"), ("ood", "ood")):
                row.update({f"{tag}_{k}": v for k, v in path_row(pr[s], data.tensors[s][1]).items()})
            rows.append(row)
            if abs(alpha - p.alpha) < 1e-9:
                kept[arm] = pr["ood"]
    return rows, kept


def endpoint_probs(model: nn.Module, states: dict, data: Data) -> dict[str, torch.Tensor]:
    """OOD probabilities of every trained model (θ_0 and each fine-tuned recipe)."""
    out = {}
    for key, state in states.items():
        model.load_state_dict(state)
        out[key] = torch.softmax(logits_on(model, data.tensors["ood"][0]), -1)
    return out


def agreement(correct_0: torch.Tensor, correct_ft: torch.Tensor, correct_avg: torch.Tensor, seed: int) -> list[dict]:
    """The 2×2 table of θ_0 vs θ_ft (right/wrong) on OOD, with how many of each cell θ_α gets right."""
    rows = []
    for a in (True, False):
        for b in (True, False):
            cell = (correct_0 == a) & (correct_ft == b)
            rows.append(
                {
                    "seed": seed,
                    "θ_0": "right" if a else "wrong",
                    "θ_ft": "right" if b else "wrong",
                    "n": int(cell.sum()),
                    "θ_α right": int((cell & correct_avg).sum()),
                }
            )
    return rows


def per_class_fft(correct_0, correct_ft, correct_avg, y: torch.Tensor) -> list[float]:
    """FalseFalseTrue rate within each class."""
    return [false_false_true(correct_0[y == k], correct_ft[y == k], correct_avg[y == k]) for k in range(N_CLASSES)]


# --------------------------------------------------------------------------- claims


def mean(values) -> float:
    return float(np.mean(values))


def per_seed(values, seeds) -> str:
    return ", ".join(f"seed {s}: {v:.3f}" for s, v in zip(seeds, values))


def claim_wise(acc: dict, fft: list, alpha: float, seeds) -> ClaimCheck:
    """Claim 1: mean OOD acc of WiSE-FT(α) ≥ max(θ_0, θ_ft) + 1.5 points."""
    m = {k: mean(v) for k, v in acc.items()}
    gain = 100 * (m["wise"] - max(m["pre"], m["ft"]))
    return ClaimCheck(
        claim=f"WiSE-FT(α={alpha:g}) OOD accuracy ≥ max(θ_0, θ_ft) + 1.5 points (mean over seeds)",
        passed=bool(gain >= 1.5 - 1e-9),
        numbers={
            "ood θ_0": round(m["pre"], 4),
            "ood θ_ft": round(m["ft"], 4),
            "ood WiSE-FT": round(m["wise"], 4),
            "gain (pts)": round(gain, 2),
            "FalseFalseTrue rate": round(mean(fft), 4),
        },
        detail="WiSE-FT per seed — " + per_seed(acc["wise"], seeds),
    )


def claim_confidence(conf: dict, seeds) -> ClaimCheck:
    """Claim 2: conf(θ_ft) ≥ conf(θ_0) + 0.15 and conf(θ_ft^B) ≤ conf(θ_ft) − 0.2 (mean OOD max-probability,
    keys pre, ft, ftB)."""
    m = {k: mean(v) for k, v in conf.items()}
    over, tempered = m["ft"] - m["pre"], m["ft"] - m["ftB"]
    return ClaimCheck(
        claim="over-confidence: OOD mean max-prob of θ_ft ≥ θ_0 + 0.15, and of θ_ft^B ≤ θ_ft − 0.2",
        passed=bool(over >= 0.15 - 1e-9 and tempered >= 0.2 - 1e-9),
        numbers={
            "conf θ_0": round(m["pre"], 4),
            "conf θ_ft": round(m["ft"], 4),
            "conf θ_ft^B": round(m["ftB"], 4),
            "θ_ft − θ_0": round(over, 4),
            "θ_ft − θ_ft^B": round(tempered, 4),
        },
        detail="θ_ft per seed — " + per_seed(conf["ft"], seeds),
    )


def claim_bang(acc: dict, alpha: float, seeds) -> ClaimCheck:
    """Claim 3 (non-inferiority): mean OOD acc of BANG(α) ≥ WiSE-FT(α) − 1.0 point."""
    gap = 100 * (mean(acc["bang"]) - mean(acc["wise"]))
    return ClaimCheck(
        claim=f"BANG(α={alpha:g}) OOD accuracy ≥ WiSE-FT(α={alpha:g}) − 1.0 point (non-inferiority)",
        passed=bool(gap >= -1.0 - 1e-9),
        numbers={
            "ood BANG": round(mean(acc["bang"]), 4),
            "ood WiSE-FT": round(mean(acc["wise"]), 4),
            "BANG − WiSE (pts)": round(gap, 2),
        },
        detail="BANG per seed — " + per_seed(acc["bang"], seeds),
    )


def claim_paper_gain(acc: dict, alpha: float, seeds) -> ClaimCheck:
    """Reported, not asserted: the paper's BANG > WiSE-FT OOD gain."""
    gaps = [100 * (b - w) for b, w in zip(acc["bang"], acc["wise"])]
    return ClaimCheck(
        claim=f"paper: BANG(α={alpha:g}) beats WiSE-FT(α={alpha:g}) OOD",
        passed=bool(mean(gaps) > 0),
        numbers={"BANG − WiSE (pts)": round(mean(gaps), 2), "seeds where BANG wins": sum(g > 0 for g in gaps)},
        detail="per seed (pts) — " + per_seed(gaps, seeds),
        asserted=False,
    )


def claim_ece(ece: dict, seeds) -> ClaimCheck:
    """Reported, not asserted: BANG fine-tuning lowers the OOD ECE of θ_ft."""
    m = {k: mean(v) for k, v in ece.items()}
    return ClaimCheck(
        claim="OOD ECE of θ_ft^B below that of θ_ft",
        passed=bool(m["ftB"] < m["ft"]),
        numbers={"ECE θ_0": round(m["pre"], 4), "ECE θ_ft": round(m["ft"], 4), "ECE θ_ft^B": round(m["ftB"], 4)},
        detail=f"{N_BINS} equal-width bins; mean over seeds {list(seeds)}",
        asserted=False,
    )


# --------------------------------------------------------------------------- figures


def path_figure(path, metric: str, title: str, ylabel: str):
    """``metric`` against α per arm (mean ± std over seeds) from the path table."""
    frame = path.rename(columns={"alpha": "step", "arm": "series"}).melt(
        id_vars=["seed", "step", "series"], value_vars=[metric], var_name="metric", value_name="value"
    )
    return viz.curves(frame, metric, title=title, xlabel="α (0 = θ_0, 1 = fine-tuned)", ylabel=ylabel)


def reliability(conf: np.ndarray, correct: np.ndarray, n_bins: int = N_BINS) -> tuple[np.ndarray, np.ndarray]:
    """Per equal-width confidence bin: accuracy (NaN if empty) and the count."""
    bins = np.minimum((conf * n_bins).astype(int), n_bins - 1)
    count = np.bincount(bins, minlength=n_bins)
    hits = np.bincount(bins, weights=correct.astype(float), minlength=n_bins)
    return np.where(count > 0, hits / np.maximum(count, 1), np.nan), count


def calibration_figures(pooled: dict) -> dict:
    """Reliability diagram and confidence histogram on OOD, pooled over seeds."""
    centres = (np.arange(N_BINS) + 0.5) / N_BINS
    acc, hist = {}, {}
    for name, (conf, correct) in pooled.items():
        acc[name], count = reliability(conf, correct)
        hist[name] = count / count.sum()
    diagram = viz.lines(
        centres,
        {**acc, "perfect calibration": centres},
        mode="lines+markers",
        title="Reliability on OOD (pooled over seeds)",
        xlabel="confidence (bin centre)",
        ylabel="accuracy in the bin",
    )
    histogram = viz.lines(
        centres,
        hist,
        mode="lines+markers",
        title="OOD confidence histogram (pooled over seeds)",
        xlabel="max-probability (bin centre)",
        ylabel="share of samples",
    )
    return {"reliability": diagram, "confidence_hist": histogram}


def make_figures(result) -> dict:
    """Training curves, the α paths (OOD, ID, confidence, ECE), calibration, the 2×2 table, FFT per class and
    the first-layer weight mass."""
    h, ex = result.history, result.extras
    path = ex["path"]
    figs = {
        "training": viz.curves(
            h,
            "ood_acc",
            xlabel="epoch (fine-tuning starts after pre-training)",
            ylabel="OOD accuracy",
            title="OOD accuracy while training (mean ± std over seeds)",
        ),
        "training_id": viz.curves(
            h, "id_acc", xlabel="epoch", ylabel="ID accuracy", title="ID test accuracy while training"
        ),
        "ood_path": path_figure(path, "ood_acc", "OOD accuracy along the path θ_0 → fine-tuned", "OOD accuracy"),
        "id_path": path_figure(path, "id_acc", "ID accuracy along the path θ_0 → fine-tuned", "ID accuracy"),
        "confidence_path": path_figure(path, "ood_conf", "OOD mean max-probability along the path", "confidence"),
        "ece_path": path_figure(path, "ood_ece", "OOD ECE along the path", "ECE"),
    }
    figs.update(calibration_figures(ex["pooled_confidence"]))
    table = ex["agreement"]
    cells = {
        f"θ_0 {a}, θ_ft {b}": (g["n"] / ex["n_ood"]).tolist()
        for (a, b), g in table.groupby(["θ_0", "θ_ft"], sort=False)
    }
    wrong = table[(table["θ_0"] == "wrong") & (table["θ_ft"] == "wrong")]
    cells["…of which θ_α right (FalseFalseTrue)"] = (wrong["θ_α right"] / ex["n_ood"]).tolist()
    figs["agreement"] = viz.bars(
        cells,
        ylabel="share of OOD samples",
        title=f"θ_0 vs θ_ft on OOD, and what WiSE-FT(α={result.params['alpha']:g}) fixes",
    )
    figs["fft_per_class"] = viz.bars(
        {str(k): v for k, v in enumerate(np.array(ex["fft_per_class"]).T.tolist())},
        ylabel="FalseFalseTrue rate",
        title="FalseFalseTrue rate per class (dots: seeds)",
    )
    if ex.get("weight_mass") is not None:
        wm = ex["weight_mass"].groupby("model", sort=False)[["invariant", "group A", "group B"]].mean()
        figs["weight_mass"] = viz.lines(
            ["invariant", "group A", "group B"],
            {m: r.tolist() for m, r in wm.iterrows()},
            mode="lines+markers",
            xlabel="input group",
            ylabel="share of Σ W²",
            title="First-layer weight mass on each input group (mean over seeds)",
        )
    return figs


# --------------------------------------------------------------------------- run

ENDPOINTS = {"pre": "θ_0", "ft": "θ_ft", "ftB": "θ_ft^B"}
AVERAGES = {"wise": "WiSE-FT", "bang": "BANG", "ose": "OSE"}


def analyse_seed(p, model: nn.Module, states: dict, data: Data, seed: int) -> dict:
    """Everything one seed contributes: the α paths, OOD accuracy / confidence / ECE of the end points,
    accuracy of the averages at the reported α, FalseFalseTrue, the 2×2 table, the chosen α, weight mass."""
    import pandas as pd

    rows, at_alpha = evaluate_paths(p, model, states, data, seed)
    ends = endpoint_probs(model, states, data)
    y = data.tensors["ood"][1]
    right = {k: v.argmax(-1) == y for k, v in {**ends, **at_alpha}.items()}
    c0, c1, avg = right["pre"], right["ft"], right["WiSE-FT"]
    return {
        "path": rows,
        "chosen": choose_alpha(pd.DataFrame(rows), seed),
        "acc": {
            **{k: float(right[k].float().mean()) for k in ENDPOINTS},
            **{k: float(right[arm].float().mean()) for k, arm in AVERAGES.items()},
        },
        "conf": {k: mean_confidence(ends[k]) for k in ENDPOINTS},
        "ece": {k: expected_calibration_error(ends[k], y) for k in ENDPOINTS},
        "pooled": {
            name: (ends[k].max(-1).values.cpu().numpy(), right[k].cpu().numpy()) for k, name in ENDPOINTS.items()
        },
        "fft": false_false_true(c0, c1, avg),
        "fft_class": per_class_fft(c0, c1, avg, y),
        "agreement": agreement(c0, c1, avg, seed),
        "mass": mass_rows(p, states, seed) if p.model == "mlp" else [],
        "n_ood": int(len(y)),
    }


def collect(per_seed: list[dict], key: str) -> dict[str, list[float]]:
    """{name: [value of seed 1, seed 2, …]} from the per-seed dicts' ``key`` entry."""
    return {k: [s[key][k] for s in per_seed] for k in per_seed[0][key]}


def summary_metrics(acc, conf, ece, fft, path, chosen, alpha: float) -> dict[str, float]:
    """Final metrics: OOD accuracy / confidence / ECE (means over seeds), FFT rate, ID accuracy at the ends and
    at α, and the OOD accuracy at the α chosen on ID data."""
    return {
        **{f"ood_acc_{k}": mean(v) for k, v in acc.items()},
        **{f"ood_conf_{k}": mean(v) for k, v in conf.items()},
        **{f"ood_ece_{k}": mean(v) for k, v in ece.items()},
        "fft_rate": mean(fft),
        "id_acc_pre": _at(path, "WiSE-FT", 0.0, "id_acc"),
        "id_acc_ft": _at(path, "WiSE-FT", 1.0, "id_acc"),
        "id_acc_wise": _at(path, "WiSE-FT", alpha, "id_acc"),
        "id_acc_bang": _at(path, "BANG", alpha, "id_acc"),
        **{f"ood_acc_{a}_chosen_alpha": float(g["ood_acc"].mean()) for a, g in chosen.groupby("arm", sort=False)},
    }


@method_run(PARAMS, figures=make_figures, threads={"quick": 1, "standard": 1})
def run(ctx: RunContext) -> Outcome:
    """θ_0, θ_ft, θ_ft^B (and the ablations) for n_seeds seeds; WiSE-FT, BANG and OSE along α; the claims."""
    import pandas as pd

    p = ctx.p
    colour_rules(p)  # validate the colour probabilities before any training
    seeds = [ctx.seed + k for k in range(p.n_seeds)]
    bar = ctx.bar(len(seeds) * (p.pre_epochs + len(recipes(p)) * p.ft_epochs), "epochs (all models, seeds)")
    per_seed = []
    for seed in seeds:
        data = make_data(p, seed, ctx.device)
        states = train_seed(ctx, data, seed, bar)
        per_seed.append(analyse_seed(p, build_model(p).to(ctx.device), states, data, seed))
    bar.close()
    acc, conf, ece = (collect(per_seed, k) for k in ("acc", "conf", "ece"))
    fft = [s["fft"] for s in per_seed]
    path = pd.DataFrame([r for s in per_seed for r in s["path"]])
    chosen = pd.DataFrame([r for s in per_seed for r in s["chosen"]])
    claims = [
        claim_wise(acc, fft, p.alpha, seeds),
        claim_confidence(conf, seeds),
        claim_bang(acc, p.alpha, seeds),
        claim_paper_gain(acc, p.alpha, seeds),
        claim_ece(ece, seeds),
    ]
    masses = [r for s in per_seed for r in s["mass"]]
    extras = {
        "seeds": seeds,
        "path": path,
        "chosen_alpha": chosen,
        "n_ood": per_seed[0]["n_ood"],
        "agreement": pd.DataFrame([r for s in per_seed for r in s["agreement"]]),
        "fft_per_class": [s["fft_class"] for s in per_seed],
        "per_seed": {"acc": acc, "conf": conf, "ece": ece},
        "pooled_confidence": {
            name: tuple(np.concatenate([s["pooled"][name][i] for s in per_seed]) for i in (0, 1))
            for name in ENDPOINTS.values()
        },
        "weight_mass": pd.DataFrame(masses) if masses else None,
    }
    return Outcome(metrics=summary_metrics(acc, conf, ece, fft, path, chosen, p.alpha), claims=claims, extras=extras)


def _at(path, arm: str, alpha: float, column: str) -> float:
    """Mean over seeds of ``column`` for ``arm`` at ``alpha``."""
    rows = path[(path["arm"] == arm) & np.isclose(path["alpha"], alpha)]
    return float(rows[column].mean())


def choose_alpha(rows, seed: int) -> list[dict]:
    """Per arm, the α of the grid with the best ID test accuracy (ties → the smallest α) and its OOD accuracy.
    Chosen on ID data only: the OOD numbers are read after the choice."""
    out = []
    for arm, g in rows.groupby("arm", sort=False):
        g = g.sort_values("alpha")
        best = g.iloc[int(np.argmax(g["id_acc"].to_numpy()))]
        out.append(
            {
                "seed": seed,
                "arm": arm,
                "alpha": float(best["alpha"]),
                "id_acc": float(best["id_acc"]),
                "ood_acc": float(best["ood_acc"]),
            }
        )
    return out


def mass_rows(p, states: dict, seed: int) -> list[dict]:
    """First-layer weight mass of θ_0, θ_ft, WiSE-FT(α), θ_ft^B and BANG(α) (MLP only)."""
    groups = cd.feature_groups(p.n_patches)
    pre = states["pre"]
    models = {
        "θ_0": pre,
        "θ_ft": states["ft"],
        f"WiSE-FT α={p.alpha:g}": interpolate_weights(pre, states["ft"], p.alpha),
        "θ_ft^B": states["ftB"],
        f"BANG α={p.alpha:g}": interpolate_weights(pre, states["ftB"], p.alpha),
    }
    return [{"seed": seed, "model": name, **weight_mass(theta["0.weight"], groups)} for name, theta in models.items()]
