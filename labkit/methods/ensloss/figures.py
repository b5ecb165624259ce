"""EnsLoss figures: accuracy curves per loss, final and early-stopped test accuracy, the random derivatives and the
losses they imply, and (with several tasks) EnsLoss − BCE per task."""

from __future__ import annotations

import numpy as np

from labkit import viz

#: the task the claims are checked on (kept equal to experiment.CLAIM_TASK; figures do not import the experiment)
CLAIM_TASK = "sim"


def accuracy_figure(history, series: list[str]):
    """Test accuracy (solid) and running train accuracy (dotted) per epoch per loss, mean ± std over seeds."""
    fig = viz.curves(
        history,
        "test_acc",
        series=series,
        xlabel="epoch",
        ylabel="accuracy",
        title="Train (dotted) and test (solid) accuracy: the overfitting gap",
    )
    for trace in viz.curves(history, "train_acc", series=series, band=False).data:
        trace.update(line={"dash": "dot", "color": trace.line.color}, name=f"{trace.name} (train)")
        fig.add_trace(trace)
    return fig


def derivative_figures(d: dict) -> dict:
    """g vs z for the recorded draws with BCE's −σ(−z); and their implied losses φ(z) with BCE's log(1 + e^{−z})."""
    ys = {f"EnsLoss draw {k + 1}": g for k, g in enumerate(d["draws"])}
    deriv = viz.lines(
        d["z"],
        {**ys, "BCE: −σ(−z)": d["bce_derivative"]},
        mode="lines+markers",
        title="Assigned derivative g vs margin z (one batch, three draws)",
        xlabel="margin z",
        ylabel="g = φ'(z)",
    )
    implied = viz.lines(
        d["z"],
        {**{f"EnsLoss draw {k + 1}": v for k, v in enumerate(d["implied"])}, "BCE log(1+e^{−z})": d["bce_loss"]},
        title="Implied convex losses φ(z) = ∫_z^{z_max} −g (anchored at 0 on the right)",
        xlabel="margin z",
        ylabel="φ(z) − φ(z_max)",
    )
    return {"derivatives": deriv, "implied_loss": implied}


def gain_per_task(table, base: str = "bce") -> dict[str, np.ndarray]:
    """Per task, 100 · (final test acc of EnsLoss − that of ``base``) for each seed (paired by seed)."""

    def col(rows, arm):
        return rows[rows["arm"] == arm].sort_values("seed")["final_test_acc"].to_numpy(dtype=float)

    return {t: 100 * (col(rows, "ensloss") - col(rows, base)) for t, rows in table.groupby("task", sort=False)}


def make_figures(result) -> dict:
    """Accuracy curves, final and early-stopped test accuracy per arm, EnsLoss derivatives and implied losses,
    and (with several tasks) EnsLoss − BCE per task. A diverged arm's bar is missing its NaN seeds (the claim
    text and the table say which)."""
    arms, table = result.extras["arms"], result.extras["per_seed"]
    sim = table[table["task"] == CLAIM_TASK]
    figs = {"accuracy": accuracy_figure(result.history, [a.key for a in arms])}
    for m, title in (
        ("final_test_acc", "Final test accuracy"),
        ("early_stop_test_acc", "Test accuracy at the epoch chosen on validation"),
    ):
        values = {}
        for a in arms:
            vals = sim[sim["arm"] == a.key][m].to_numpy(dtype=float)
            label = a.label + (" (diverged runs left out)" if np.isnan(vals).any() else "")
            values[label] = vals[np.isfinite(vals)].tolist() or [float("nan")]
        figs[m] = viz.bars(values, title=f"{title} (dots: seeds)", ylabel="accuracy")
        finite = [v for vs in values.values() for v in vs if np.isfinite(v)]
        if finite:
            figs[m].update_yaxes(range=[max(0.0, min(finite) - 0.03), min(1.0, max(finite) + 0.02)])
    if result.extras.get("derivatives"):
        figs.update(derivative_figures(result.extras["derivatives"]))
    if table["task"].nunique() > 1:
        figs["tasks"] = viz.bars(
            gain_per_task(table),
            ylabel="points",
            title="EnsLoss − BCE final test accuracy per task (points; dots: seeds)",
        )
    return figs
