"""BANG figures: training curves, the α paths (OOD, ID, confidence, ECE), reliability on OOD, the θ_0 vs θ_ft
agreement table, FalseFalseTrue per class and the first-layer weight mass."""

from __future__ import annotations

import numpy as np

from labkit import viz

from .method import N_BINS


def path_figure(path, metric: str, title: str, ylabel: str):
    """``metric`` against α per arm (mean ± std over seeds) from the path table (one line per arm label)."""
    frame = path.rename(columns={"alpha": "step", "label": "series"}).melt(
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
