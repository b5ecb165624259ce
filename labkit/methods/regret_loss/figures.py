"""Regret-loss's figures: pure functions from a run's Result to plotly figures."""

from __future__ import annotations

import numpy as np

from labkit import viz


def make_figures(result) -> dict:
    """Regret vs t per family (bands over seeds), training curves, π_t on an alternating sequence, self-play
    distance to Nash, and the linear-attention value matrix when those ran."""
    x, hist = result.extras, result.history
    names = [a.label for a in x["arms"]]
    figs = {}
    for family in x["families"]:
        held = " (held out: never trained on)" if family == "sinusoidal" else ""
        figs[f"regret_{family}"] = viz.curves(
            hist,
            f"regret_{family}",
            series=names,
            title=f"Regret_t on {family} losses{held}, mean over sequences (band: ±1 std over seeds)",
            xlabel="round t",
            ylabel="Regret_t",
        )
    trained = [n for n in names if n in set(hist[hist["metric"] == "train_regret"]["series"])]
    figs["training"] = viz.curves(
        hist, "train_worst_regret", series=trained, title="Worst regret in the training batch", ylabel="max_j R_j"
    )
    if x.get("demo"):
        figs["alternating_policy"] = alternating_figure(x["demo"], {a.key: a.label for a in x["arms"]})
    if "self_play" in x:
        figs["self_play"] = self_play_figure(x["self_play"])
    if "lsa_value" in x:
        figs["lsa_value"] = value_figure(x["lsa_value"], x["eta"])
    return figs


def alternating_figure(demo: dict, labels: dict[str, str]):
    """π_t of the action that loses first on an alternating sequence, per algorithm (FTL flip-flops)."""
    losses = demo["losses"]
    first = int(np.flatnonzero(np.isclose(losses[0], 0.5) & np.isclose(losses[1], 0.0))[0])
    t = list(range(1, len(losses) + 1))
    ys = {labels[k]: v[:, first].tolist() for k, v in demo.items() if k != "losses"}
    ys["its loss ℓ_t"] = losses[:, first].tolist()
    fig = viz.lines(
        t,
        ys,
        mode="lines+markers",
        title="Alternating losses: probability on one of the two alternating actions",
        xlabel="round t",
        ylabel="π_t(i)",
    )
    fig.data[-1].line.dash = "dot"
    return fig


def self_play_figure(sp):
    mean = sp.model_distance.mean(0)
    t = list(range(1, len(mean) + 1))
    fig = viz.lines(
        t,
        {"transformer vs itself (mean over seeds)": mean.tolist(), "Hedge (η*) vs itself": sp.hedge_distance.tolist()},
        title=f"Self-play on {sp.game}: distance of the time-averaged strategies to Nash {sp.nash}",
        xlabel="round t",
        ylabel="½ Σ players ‖π̄_t − p*‖₁",
    )
    return fig


def value_figure(value: np.ndarray, eta: float):
    """The LSA value block V[:, :d] after centring its columns (softmax ignores a shift common to all actions),
    beside −η*·(I − 11ᵀ/d): Hedge's."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    d = value.shape[0]
    centred = value - value.mean(0, keepdims=True)
    target = -eta * (np.eye(d) - 1.0 / d)
    fig = make_subplots(1, 2, subplot_titles=("learned V (columns centred)", "Hedge: −η*(I − 11ᵀ/d)"))
    lim = float(max(np.abs(centred).max(), np.abs(target).max()))
    for c, m in enumerate((centred, target), start=1):
        fig.add_trace(go.Heatmap(z=m, zmin=-lim, zmax=lim, colorscale="RdBu", showscale=c == 2), 1, c)
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(title="Linear self-attention value matrix vs FTRL", template="plotly_white", height=360)
    return fig
