"""RFFL's figures: reputations against the removal threshold, reward vs contribution, each participant's
accuracy, and robust accuracy per attack."""

from __future__ import annotations

import numpy as np

from labkit import viz

#: honest participants in shades of blue (and a few others), adversaries in red
HONEST_COLOURS = ["#08306b", "#2171b5", "#4292c6", "#6baed6", "#9ecae1", "#2ca02c", "#17becf", "#9467bd"]
ADVERSARY_COLOUR = "#d62728"


def recolour(fig, colours: dict[str, str]):
    """Set the line colour (and the ±std band's fill) of every trace whose legend group is in ``colours``."""
    for trace in fig.data:
        colour = colours.get(trace.legendgroup)
        if colour is None:
            continue
        if trace.fill == "toself":
            trace.fillcolor = viz._rgba(colour, 0.12)
        else:
            trace.line.color = colour
    return fig


def reputation_figure(history, sc):
    """Reputation r_i per participant over rounds (adversaries red) with the threshold β/|R| dashed;
    ``sc`` is an :class:`~labkit.methods.rffl.experiment.Scenario`."""
    names = [f"{lab}{sc.tag}" for lab in sc.labels]
    fig = viz.curves(
        history,
        "reputation",
        series=names,
        xlabel="round",
        ylabel="reputation r_i",
        title=f"Reputations over rounds ({sc.name}; mean ± std over seeds)",
    )
    honest = [n for n, k in zip(names, sc.kinds) if k == "honest"]
    colours = {n: HONEST_COLOURS[i % len(HONEST_COLOURS)] for i, n in enumerate(honest)}
    colours.update({n: ADVERSARY_COLOUR for n in names if n not in colours})
    for trace in viz.curves(history, "threshold", series=[f"β/|R|{sc.tag}"], band=False).data:
        trace.line.dash, trace.line.color, trace.name = "dash", "black", "removal threshold β/|R|"
        fig.add_trace(trace)
    return recolour(fig, colours)


def fairness_figure(standalone: list[list[float]], sc):
    """Standalone accuracy (x) vs final federated accuracy (y) per honest participant, all seeds, with ρ."""
    x = [a for per_seed in standalone for a in per_seed]
    rffl = [a for o in sc.rffl for a in o.acc]
    fedavg = [o.acc for o, per_seed in zip(sc.fedavg, standalone) for _ in per_seed]
    fig = viz.lines(
        x,
        {
            f"RFFL (ρ = {np.mean(sc.rho):.2f} ± {np.std(sc.rho):.2f})": rffl,
            "FedAvg (one model: ρ undefined)": fedavg,
        },
        mode="markers",
        xlabel="standalone accuracy",
        ylabel="final federated accuracy",
        title=f"Reward vs contribution per honest participant ({sc.name}, all seeds)",
    )
    fig.update_traces(marker={"size": 9})
    return fig


def make_figures(result) -> dict:
    """Test accuracy, reputations, fairness scatter, per-participant accuracy, robust accuracy per attack."""
    h, ex = result.history, result.extras
    runs, primary = ex["scenarios"], ex["primary"]
    main = runs[primary]
    figs = {
        "test_acc": viz.curves(
            h,
            "test_acc",
            xlabel="round",
            ylabel="test accuracy",
            title="Test accuracy (best / mean honest participant; FedAvg's global model)",
        ),
        "reputation": reputation_figure(h, main),
        "fairness": fairness_figure(ex["standalone"], main),
    }
    tag = main.tag
    series = [
        s for s in dict.fromkeys(h[h.metric == "participant_acc"].series) if s.startswith("RFFL") and s.endswith(tag)
    ] + [f"FedAvg{tag}"]
    rows = h[(h.metric == "participant_acc") | ((h.metric == "test_acc") & (h.series == f"FedAvg{tag}"))]
    figs["participant_acc"] = viz.curves(
        rows.assign(metric="acc"),
        "acc",
        series=series,
        xlabel="round",
        ylabel="test accuracy",
        band=False,
        title=f"Each honest participant's model under RFFL vs FedAvg ({main.name}; mean over seeds)",
    )
    bars = {}
    for sc in runs.values():
        bars[f"{sc.name} · RFFL best"] = [o.best for o in sc.rffl]
        bars[f"{sc.name} · FedAvg"] = [o.acc for o in sc.fedavg]
    figs["robust_acc"] = viz.bars(
        bars, ylabel="final test accuracy", title="Robust accuracy: best honest RFFL participant vs FedAvg, per attack"
    )
    for a, sc in runs.items():
        if a != primary and a != "none":
            figs[f"reputation_{a}"] = reputation_figure(h, sc)
    return figs
