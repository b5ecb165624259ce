"""BANG at teaching scale: the knobs, MultiColorDigits splits, θ_0 / θ_ft / θ_ft^B per seed, the α paths, the
claims and ``run``.

Per seed: pre-train θ_0 (group-A colours tied to the label), fine-tune two copies from θ_0 on ID data (group-B colours
tied) on the same batches, plainly (θ_ft) and with BANG's label smoothing + MixUp (θ_ft^B); then WiSE-FT, BANG and
the output-space ensemble along α ∈ {0, 0.1, …, 1}, on the ID test and on an OOD test that breaks both groups.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from labkit.core import Arm, ClaimCheck, Outcome, RunContext, knob, method_run, params_of
from labkit.data import colored_digits as cd
from labkit.models import MLP

from .figures import make_figures
from .method import (
    N_CLASSES,
    expected_calibration_error,
    false_false_true,
    fine_tune,
    head_keys,
    interpolate_weights,
    mean_confidence,
    output_ensemble,
    scale_head,
    weight_mass,
)

MAIN_METRIC = "ood_acc"

#: images per split; the OOD test takes what is left of the 1,797 digits (597), and the ID test reuses those images
SPLIT_SIZES = {"pretrain": 600, "finetune": 600, "ood": -1}
#: offset of the fine-tuning stream from the seed (batches and MixUp draws; pre-training uses the seed itself)
FINETUNE_STREAM = 1000
#: α grid of the paths: {0, 0.1, …, 1}
ALPHA_STEPS = 10
#: printed decimals of the claims, per quantity; chosen from benchmarks/spread/bang.json
ACC_DECIMALS = 1  # points of accuracy
CONF_DECIMALS = 2  # mean max-probability and ECE
FFT_DECIMALS = 1  # FalseFalseTrue samples per seed

# the models and averages the claims compare (keys are what code branches on; labels are for display)
PRE, FT, FTB = Arm("pre", "θ_0"), Arm("ft", "θ_ft"), Arm("ftB", "θ_ft^B")
ENDPOINTS = (PRE, FT, FTB)
WISE, BANG, OSE = Arm("wise", "WiSE-FT"), Arm("bang", "BANG"), Arm("ose", "OSE")
AVERAGES = (WISE, BANG, OSE)


@dataclass(frozen=True)
class Knobs:
    """BANG's knobs; ``Knobs()`` is the quick preset."""

    alpha: float = knob(
        0.5, low=0.0, high=1.0, help="mixing weight α of θ_ft (or θ_ft^B) for the reported numbers and the claim checks"
    )
    label_smoothing: float = knob(0.1, low=0.0, high=0.9, help="BANG's label smoothing ε")
    mixup_a: float = knob(0.4, low=0.0, high=10.0, help="BANG's MixUp λ ~ Beta(a, a); 0 turns MixUp off")
    pre_a: float = knob(0.8, low=0.0, high=1.0, help="pre-training data: P(group-A patch shows its label colour)")
    ft_b: float = knob(0.9, low=0.0, high=1.0, help="fine-tuning (ID) data: P(group-B patch shows its label colour)")
    ood_a: float = knob(0.4, low=0.0, high=1.0, help="OOD test: P(group-A patch shows its label colour)")
    ood_b: float = knob(0.3, low=0.0, high=1.0, help="OOD test: P(group-B patch shows its label colour)")
    ood_b_wrong: float = knob(
        0.3,
        low=0.0,
        high=1.0,
        help="OOD test: P(group-B patch shows a consistently wrong colour); raise it to hurt θ_ft OOD",
    )
    pre_b: float = knob(
        0.1, low=0.0, high=1.0, main=False, help="pre-training data: P(group-B patch shows its label colour)"
    )
    ft_a: float = knob(
        0.1, low=0.0, high=1.0, main=False, help="fine-tuning (ID) data: P(group-A patch shows its label colour)"
    )
    noise: float = knob(
        0.8,
        low=0.0,
        high=5.0,
        main=False,
        help="σ of the Gaussian noise on the 4×4 pooled digit (the weak invariant feature)",
    )
    n_patches: int = knob(
        12,
        standard=24,
        full=24,
        low=2,
        high=24,
        main=False,
        help="colour patches (even; first half group A, second half group B)",
    )
    pre_epochs: int = knob(15, full=30, low=1, high=1000, main=False, help="pre-training epochs for θ_0")
    ft_epochs: int = knob(
        100,
        full=200,
        low=1,
        high=5000,
        main=False,
        help="fine-tuning epochs (every fine-tuned arm, so MixUp is compared at equal epochs)",
    )
    lr: float = knob(1e-3, low=1e-5, high=1.0, log=True, main=False, help="AdamW learning rate")
    pre_weight_decay: float = knob(
        1e-3, low=0.0, high=1.0, main=False, help="AdamW weight decay while pre-training (fine-tuning uses none)"
    )
    batch_size: int = knob(64, low=2, high=600, main=False, help="batch size")
    hidden: int = knob(64, low=2, high=4096, main=False, help="MLP hidden width")
    model: str = knob(
        "mlp",
        full="cnn",
        choices=("mlp", "cnn"),
        main=False,
        help="MLP on vectors (16 + 10·patches), or a small CNN on the same features rendered as 3×28×28 images",
    )
    ablation: bool = knob(
        False, standard=True, full=True, main=False, help="also fine-tune with label smoothing only and MixUp only"
    )
    ft_scale: float = knob(
        1.0,
        low=0.01,
        high=1.0,
        main=False,
        help="exploration (post-hoc variant, inferred): also average θ_0 with θ_ft whose head is ×s; 1 = off",
    )
    n_seeds: int = knob(
        3,
        standard=10,
        full=5,
        low=1,
        high=50,
        main=False,
        help="seeds ctx.seed + k: each draws its own split, colour maps, noise, init and batches",
    )


PARAMS = params_of(Knobs)


# --- data and models ----------------------------------------------------------------------------------------------


@dataclass
class Data:
    """One seed's splits on the device: name → (X, y); ``raw`` keeps the NumPy splits."""

    tensors: dict[str, tuple[torch.Tensor, torch.Tensor]]
    raw: dict[str, cd.ColouredSplit]


def colour_rules(p: Knobs) -> dict[str, cd.ColourRule]:
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


def make_data(p: Knobs, seed: int, device) -> Data:
    """600 pre-training, 600 fine-tuning and the remaining 597 images as OOD test (and, recoloured, ID test)."""
    raw = cd.multicolor_digits(seed, colour_rules(p), SPLIT_SIZES, noise=p.noise, reuse={"id_test": "ood"})
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


def build_model(*, model: str, n_patches: int, hidden: int) -> nn.Module:
    """The card's MLP (16 + 10·n_patches) → hidden → 10, or :class:`SmallCNN`."""
    if model == "cnn":
        return SmallCNN()
    return MLP(16 + 10 * n_patches, [hidden], N_CLASSES)


# --- training -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recipe:
    """One fine-tuning recipe: label smoothing ε and MixUp a (0, 0 = standard fine-tuning)."""

    arm: Arm
    eps: float = 0.0
    mixup_a: float = 0.0


def recipes(*, label_smoothing: float, mixup_a: float, ablation: bool) -> list[Recipe]:
    """Standard fine-tuning and BANG (LS + MixUp); with ``ablation`` also LS only and MixUp only."""
    out = [
        Recipe(Arm(FT.key, "fine-tune θ_ft")),
        Recipe(Arm(FTB.key, f"BANG fine-tune θ_ft^B (ε={label_smoothing:g}, a={mixup_a:g})"), label_smoothing, mixup_a),
    ]
    if ablation:
        out += [
            Recipe(Arm("ls", f"LS only (ε={label_smoothing:g})"), label_smoothing, 0.0),
            Recipe(Arm("mixup", f"MixUp only (a={mixup_a:g})"), 0.0, mixup_a),
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


def snapshot(model: nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def train_seed(ctx: RunContext[Knobs], data: Data, seed: int, bar) -> dict[str, dict]:
    """θ_0 on the pre-training split, then every recipe fine-tuned from θ_0 on the ID split; state dicts by key."""
    p = ctx.p
    torch.manual_seed(seed)
    model = build_model(model=p.model, n_patches=p.n_patches, hidden=p.hidden).to(ctx.device)

    def logger(series: str, step0: int):
        def log(epoch: int) -> None:
            ctx.history.log_many(step0 + epoch, series, eval_metrics(model, data), seed=seed)
            bar.update(1)

        return log

    common = dict(lr=p.lr, batch_size=p.batch_size)
    X, y = data.tensors["pretrain"]
    fine_tune(model, X, y, epochs=p.pre_epochs, weight_decay=p.pre_weight_decay, eps=0.0, mixup_a=0.0, stream=seed,
              series="pre-train θ_0", on_epoch=logger("pre-train θ_0", 0), **common)  # fmt: skip
    states = {PRE.key: snapshot(model)}
    X, y = data.tensors["finetune"]
    for r in recipes(label_smoothing=p.label_smoothing, mixup_a=p.mixup_a, ablation=p.ablation):
        model.load_state_dict(states[PRE.key])  # every fine-tuned copy starts from θ_0 (same basin)
        fine_tune(model, X, y, epochs=p.ft_epochs, weight_decay=0.0, eps=r.eps, mixup_a=r.mixup_a,
                  stream=seed + FINETUNE_STREAM, series=r.arm.label, on_epoch=logger(r.arm.label, p.pre_epochs),
                  **common)  # fmt: skip
        states[r.arm.key] = snapshot(model)
    return states


# --- evaluation along α ----------------------------------------------------------------------------------------------


def alpha_grid(alpha: float) -> list[float]:
    """{0, 0.1, …, 1} plus the reported α."""
    return sorted({round(a, 10) for a in [k / ALPHA_STEPS for k in range(ALPHA_STEPS + 1)] + [alpha]})


def path_row(probs: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """Accuracy, mean confidence and ECE of probabilities ``probs`` on labels ``y``."""
    return {
        "acc": float((probs.argmax(-1) == y).float().mean()),
        "conf": mean_confidence(probs),
        "ece": expected_calibration_error(probs, y),
    }


def weight_paths(*, ablation: bool, ft_scale: float) -> list[tuple[Arm, str]]:
    """Weight-space paths from θ_0: (the path's arm, the key of the fine-tuned state it interpolates towards)."""
    out = [(WISE, FT.key), (BANG, FTB.key)]
    if ablation:
        out += [(Arm("wise_ls", "WiSE LS only"), "ls"), (Arm("wise_mixup", "WiSE MixUp only"), "mixup")]
    if ft_scale < 1:
        out.append((Arm("wise_scaled", f"WiSE θ_ft head ×{ft_scale:g}"), "ft_scaled"))
    return out


def evaluate_paths(p: Knobs, model: nn.Module, states: dict, data: Data, seed: int) -> tuple[list[dict], dict]:
    """Every weight path and the OSE at every α of the grid, on the ID and OOD tests (one row per arm and α:
    accuracy, confidence, ECE), and each arm's OOD probabilities at the reported α (keyed by arm key)."""
    if p.ft_scale < 1:
        states = {**states, "ft_scaled": scale_head(states[FT.key], head_keys(model), p.ft_scale)}
    rows, kept, ends = [], {}, {}
    for key in (PRE.key, FT.key):
        model.load_state_dict(states[key])
        ends[key] = {s: logits_on(model, data.tensors[s][0]) for s in ("id_test", "ood")}
    paths = weight_paths(ablation=p.ablation, ft_scale=p.ft_scale)
    for alpha in alpha_grid(p.alpha):
        probs = {}
        for arm, key in paths:
            model.load_state_dict(interpolate_weights(states[PRE.key], states[key], alpha))
            probs[arm] = {s: torch.softmax(logits_on(model, data.tensors[s][0]), -1) for s in ("id_test", "ood")}
        probs[OSE] = {s: output_ensemble(ends[PRE.key][s], ends[FT.key][s], alpha) for s in ("id_test", "ood")}
        for arm, pr in probs.items():
            row = {"seed": seed, "arm": arm.key, "label": arm.label, "alpha": alpha}
            for s, tag in (("id_test", "id"), ("ood", "ood")):
                row.update({f"{tag}_{k}": v for k, v in path_row(pr[s], data.tensors[s][1]).items()})
            rows.append(row)
            if abs(alpha - p.alpha) < 1e-9:
                kept[arm.key] = pr["ood"]
    return rows, kept


def endpoint_probs(model: nn.Module, states: dict, data: Data) -> dict[str, torch.Tensor]:
    """OOD probabilities of every trained model (θ_0 and each fine-tuned recipe), by key."""
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
                "label": best["label"],
                "alpha": float(best["alpha"]),
                "id_acc": float(best["id_acc"]),
                "ood_acc": float(best["ood_acc"]),
            }
        )
    return out


def mass_rows(states: dict, *, n_patches: int, alpha: float, seed: int) -> list[dict]:
    """First-layer weight mass of θ_0, θ_ft, WiSE-FT(α), θ_ft^B and BANG(α) (MLP only)."""
    groups = cd.feature_groups(n_patches)
    pre = states[PRE.key]
    models = {
        PRE.label: pre,
        FT.label: states[FT.key],
        f"{WISE.label} α={alpha:g}": interpolate_weights(pre, states[FT.key], alpha),
        FTB.label: states[FTB.key],
        f"{BANG.label} α={alpha:g}": interpolate_weights(pre, states[FTB.key], alpha),
    }
    return [{"seed": seed, "model": name, **weight_mass(theta["0.weight"], groups)} for name, theta in models.items()]


@dataclass
class SeedOutcome:
    """What one seed contributes. ``acc`` / ``conf`` / ``ece`` are OOD numbers keyed by arm key (end points:
    pre, ft, ftB; averages at the reported α: wise, bang, ose); ``fft`` is WiSE-FT(α)'s FalseFalseTrue rate."""

    seed: int
    path: list[dict]
    chosen: list[dict]
    acc: dict[str, float]
    conf: dict[str, float]
    ece: dict[str, float]
    fft: float
    fft_class: list[float]
    agreement: list[dict]
    mass: list[dict]
    pooled: dict[str, tuple[np.ndarray, np.ndarray]]  # end point label → (OOD confidence, right?) per sample
    n_ood: int


def analyse_seed(p: Knobs, model: nn.Module, states: dict, data: Data, seed: int) -> SeedOutcome:
    """Everything one seed contributes: the α paths, OOD accuracy / confidence / ECE of the end points, accuracy of
    the averages at the reported α, FalseFalseTrue, the 2×2 table, the chosen α, weight mass."""
    import pandas as pd

    rows, at_alpha = evaluate_paths(p, model, states, data, seed)
    ends = endpoint_probs(model, states, data)
    y = data.tensors["ood"][1]
    right = {k: v.argmax(-1) == y for k, v in {**ends, **at_alpha}.items()}
    c0, c1, avg = right[PRE.key], right[FT.key], right[WISE.key]
    return SeedOutcome(
        seed=seed,
        path=rows,
        chosen=choose_alpha(pd.DataFrame(rows), seed),
        acc={a.key: float(right[a.key].float().mean()) for a in ENDPOINTS + AVERAGES},
        conf={a.key: mean_confidence(ends[a.key]) for a in ENDPOINTS},
        ece={a.key: expected_calibration_error(ends[a.key], y) for a in ENDPOINTS},
        fft=false_false_true(c0, c1, avg),
        fft_class=per_class_fft(c0, c1, avg, y),
        agreement=agreement(c0, c1, avg, seed),
        mass=mass_rows(states, n_patches=p.n_patches, alpha=p.alpha, seed=seed) if p.model == "mlp" else [],
        pooled={a.label: (ends[a.key].max(-1).values.cpu().numpy(), right[a.key].cpu().numpy()) for a in ENDPOINTS},
        n_ood=int(len(y)),
    )


# --- the claims: pure functions of per-seed numbers ------------------------------------------------------------------


def points(values) -> list[float]:
    return [100.0 * float(v) for v in values]


def diff(a, b) -> list[float]:
    return [float(x) - float(y) for x, y in zip(a, b, strict=True)]


def claim_diversification(pre, ft, wise, *, alpha: float) -> ClaimCheck:
    """Headline (the paper's title): the weight average beats BOTH of its ends OOD. Per seed, OOD accuracy of
    WiSE-FT(α) minus the better of θ_0 and θ_ft, in points; margin 0."""
    best_end = [max(float(a), float(b)) for a, b in zip(pre, ft, strict=True)]
    return ClaimCheck(
        claim=f"averaging θ_0 and θ_ft (WiSE-FT, α={alpha:g}) is more robust OOD than both of them",
        quantity=f"OOD accuracy, WiSE-FT(α={alpha:g}) − max(θ_0, θ_ft) (points, per seed)",
        values=points(diff(wise, best_end)),
        margin=0.0,
        headline=True,
        decimals=ACC_DECIMALS,
    )


def claim_weight_vs_output(wise, ose, *, alpha: float) -> ClaimCheck:
    """The theory: the weight-space average diversifies better than the output-space ensemble (per seed, points)."""
    return ClaimCheck(
        claim=f"the weight-space average beats the output-space ensemble OOD (α={alpha:g})",
        quantity=f"OOD accuracy, WiSE-FT(α={alpha:g}) − OSE(α={alpha:g}) (points, per seed)",
        values=points(diff(wise, ose)),
        margin=0.0,
        decimals=ACC_DECIMALS,
    )


def claim_false_false_true(fft_counts) -> ClaimCheck:
    """FalseFalseTrue: the average gets right some OOD samples that θ_0 and θ_ft both get wrong. Per seed, the
    number of such samples; "some" is at least one (margin 1), since a count of 0 would meet a margin of 0."""
    return ClaimCheck(
        claim="FalseFalseTrue: the average gets right some OOD samples that θ_0 and θ_ft both get wrong",
        quantity="OOD samples wrong for θ_0 and θ_ft, right for WiSE-FT (count per seed)",
        values=[float(c) for c in fft_counts],
        margin=1.0,
        decimals=FFT_DECIMALS,
    )


def claim_over_confident(conf_pre, conf_ft) -> ClaimCheck:
    """θ_ft is more confident OOD than θ_0 (mean max-probability, per seed)."""
    return ClaimCheck(
        claim="fine-tuning makes the model over-confident OOD: θ_ft more confident than θ_0",
        quantity="OOD mean max-probability, θ_ft − θ_0 (per seed)",
        values=diff(conf_ft, conf_pre),
        margin=0.0,
        decimals=CONF_DECIMALS,
    )


def claim_tempered(conf_ft, conf_ftb) -> ClaimCheck:
    """BANG's fine-tuning (LS + MixUp) lowers θ_ft's OOD confidence (per seed)."""
    return ClaimCheck(
        claim="label smoothing + MixUp reduce the over-confidence: θ_ft^B less confident OOD than θ_ft",
        quantity="OOD mean max-probability, θ_ft − θ_ft^B (per seed)",
        values=diff(conf_ft, conf_ftb),
        margin=0.0,
        decimals=CONF_DECIMALS,
    )


def claim_bang_beats_wise(bang, wise, *, alpha: float) -> ClaimCheck:
    """The paper's method claim: BANG improves WiSE-FT's OOD accuracy (per seed, points; margin 0)."""
    return ClaimCheck(
        claim=f"BANG beats WiSE-FT OOD (both at α={alpha:g})",
        quantity=f"OOD accuracy, BANG(α={alpha:g}) − WiSE-FT(α={alpha:g}) (points, per seed)",
        values=points(diff(bang, wise)),
        margin=0.0,
        decimals=ACC_DECIMALS,
    )


def claim_calibration(ece_ft, ece_ftb) -> ClaimCheck:
    """BANG's fine-tuning gives a better-calibrated fine-tuned model OOD: ECE(θ_ft^B) − ECE(θ_ft) < 0."""
    return ClaimCheck(
        claim="θ_ft^B is better calibrated OOD than θ_ft (lower ECE)",
        quantity="OOD ECE, θ_ft^B − θ_ft (per seed)",
        values=diff(ece_ftb, ece_ft),
        margin=0.0,
        higher_is_better=False,
        detail="an under-confident θ_ft^B has a high ECE too: lower confidence is not better calibration",
        decimals=CONF_DECIMALS,
    )


def claims_of(outcomes: list[SeedOutcome], alpha: float) -> list[ClaimCheck]:
    """All claims, headline first, from the per-seed outcomes."""

    def acc(a: Arm) -> list[float]:
        return [o.acc[a.key] for o in outcomes]

    def conf(a: Arm) -> list[float]:
        return [o.conf[a.key] for o in outcomes]

    return [
        claim_diversification(acc(PRE), acc(FT), acc(WISE), alpha=alpha),
        claim_weight_vs_output(acc(WISE), acc(OSE), alpha=alpha),
        claim_false_false_true([round(o.fft * o.n_ood) for o in outcomes]),
        claim_over_confident(conf(PRE), conf(FT)),
        claim_tempered(conf(FT), conf(FTB)),
        claim_bang_beats_wise(acc(BANG), acc(WISE), alpha=alpha),
        claim_calibration([o.ece[FT.key] for o in outcomes], [o.ece[FTB.key] for o in outcomes]),
    ]


# --- the run -------------------------------------------------------------------------------------------------------


def summary_metrics(outcomes: list[SeedOutcome], path, chosen, alpha: float) -> dict[str, float]:
    """Final metrics: OOD accuracy / confidence / ECE (means over seeds), FFT rate, ID accuracy at the ends and
    at α, and the OOD accuracy at the α chosen on ID data."""

    def mean(values) -> float:
        return float(np.mean(list(values)))

    def at(arm: Arm, a: float, column: str) -> float:
        rows = path[(path["arm"] == arm.key) & np.isclose(path["alpha"], a)]
        return float(rows[column].mean())

    return {
        **{f"ood_acc_{a.key}": mean(o.acc[a.key] for o in outcomes) for a in ENDPOINTS + AVERAGES},
        **{f"ood_conf_{a.key}": mean(o.conf[a.key] for o in outcomes) for a in ENDPOINTS},
        **{f"ood_ece_{a.key}": mean(o.ece[a.key] for o in outcomes) for a in ENDPOINTS},
        "fft_rate": mean(o.fft for o in outcomes),
        "id_acc_pre": at(WISE, 0.0, "id_acc"),
        "id_acc_ft": at(WISE, 1.0, "id_acc"),
        "id_acc_wise": at(WISE, alpha, "id_acc"),
        "id_acc_bang": at(BANG, alpha, "id_acc"),
        **{f"ood_acc_{a}_chosen_alpha": float(g["ood_acc"].mean()) for a, g in chosen.groupby("arm", sort=False)},
    }


@method_run(Knobs, figures=make_figures, threads={"quick": 1, "standard": 1})
def run(ctx: RunContext[Knobs]) -> Outcome:
    """θ_0, θ_ft, θ_ft^B (and the ablations) for n_seeds seeds; WiSE-FT, BANG and OSE along α; the claims."""
    import pandas as pd

    p = ctx.p
    colour_rules(p)  # validate the colour probabilities before any training
    seeds = ctx.seeds(p.n_seeds)
    n_recipes = len(recipes(label_smoothing=p.label_smoothing, mixup_a=p.mixup_a, ablation=p.ablation))
    bar = ctx.bar(len(seeds) * (p.pre_epochs + n_recipes * p.ft_epochs), "epochs (all models, seeds)")
    outcomes = []
    for seed in seeds:
        data = make_data(p, seed, ctx.device)
        states = train_seed(ctx, data, seed, bar)
        model = build_model(model=p.model, n_patches=p.n_patches, hidden=p.hidden).to(ctx.device)
        outcomes.append(analyse_seed(p, model, states, data, seed))
    bar.close()
    path = pd.DataFrame([r for o in outcomes for r in o.path])
    chosen = pd.DataFrame([r for o in outcomes for r in o.chosen])
    masses = [r for o in outcomes for r in o.mass]
    extras = {
        "seeds": seeds,
        "outcomes": outcomes,
        "path": path,
        "chosen_alpha": chosen,
        "n_ood": outcomes[0].n_ood,
        "agreement": pd.DataFrame([r for o in outcomes for r in o.agreement]),
        "fft_per_class": [o.fft_class for o in outcomes],
        "pooled_confidence": {
            a.label: tuple(np.concatenate([o.pooled[a.label][i] for o in outcomes]) for i in (0, 1)) for a in ENDPOINTS
        },
        "weight_mass": pd.DataFrame(masses) if masses else None,
    }
    return Outcome(
        metrics=summary_metrics(outcomes, path, chosen, p.alpha), claims=claims_of(outcomes, p.alpha), extras=extras
    )
