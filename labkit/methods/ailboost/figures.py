"""AILBoost's figures: pure functions from a run's Result to plotly figures (plotly is imported inside the
functions, by labkit.viz and here)."""

from __future__ import annotations

import numpy as np

from labkit import viz


def make_figures(result) -> dict:
    """Normalised return and TV per round (bands over seeds), discriminator loss, the ensemble weights, heat maps
    of the state distributions on the grid, the learned reward, and the demo sweep when it ran."""
    hist, x = result.history, result.extras
    # the three arms the paper compares (the crossed recipes get their own bar charts)
    main = [o.arm.label for o in x["arms"] if o.arm.key in ("ailboost", "dac", "bc")]
    figs = {
        "return": viz.curves(
            hist,
            "normalised_return",
            series=main,
            title="Normalised return per boosting round (AILBoost: the ensemble; DAC-style: the last learner)",
            xlabel="boosting round",
            ylabel="normalised return (0 random, 1 expert)",
        ),
        "tv": viz.curves(
            hist,
            "tv_to_expert",
            series=main,
            title="Distance to the expert's state-action distribution, TV(ρ, ρ^E)",
            xlabel="boosting round",
            ylabel="total variation",
        ),
        "disc_loss": viz.curves(
            hist,
            "disc_loss",
            title="Discriminator loss, mean over each round's K_D steps (rkl for AILBoost, BCE for DAC-style)",
            xlabel="boosting round",
            ylabel="L_D",
        ),
    }
    figs["return"].add_hline(y=1.0, line_dash="dot", annotation_text="expert")
    arms = x["arms"]
    figs["final_return"] = viz.bars(
        {o.arm.label: list(o.returns) for o in arms},
        title="Final normalised return per recipe (dots: seeds); the two crossed recipes swap loss and buffer",
        ylabel="normalised return",
    )
    figs["final_tv"] = viz.bars(
        {o.arm.label: list(o.tv) for o in arms},
        title="Final TV(ρ, ρ^E) per recipe (dots: seeds)",
        ylabel="total variation",
    )
    figs["weights"] = weights_figure(x["weights_seed0"], x["eta"])
    figs["weights_over_rounds"] = weights_heatmap(x["weights_seed0"])
    maps = x["maps"]
    last = max(maps.ailboost)
    figs["occupancy"] = grid_heatmaps(
        maps.layout,
        {
            "expert (exact)": maps.expert,
            "demonstrations (visits)": maps.demo_counts,
            f"AILBoost ensemble, round {last}": maps.ailboost[last],
            f"DAC-style last learner, round {last}": maps.dac[last],
        },
        title=f"Where each policy goes: state distribution on the grid (seed {result.seed})",
    )
    figs["occupancy_rounds"] = grid_heatmaps(
        maps.layout,
        {f"AILBoost ensemble, round {t}": d for t, d in sorted(maps.ailboost.items())},
        title="The AILBoost ensemble's state distribution as learners join",
    )
    figs["reward"] = grid_heatmaps(
        maps.layout,
        {"max_a D(s, a), AILBoost's final discriminator": maps.reward},
        title="The learned reward: D ≈ log(ρ^E / ρ^mix), clamped in the loss",
        share_scale=False,
    )
    if "demo_sweep" in x:
        figs["demo_sweep"] = demo_sweep_figure(x["demo_sweep"])
    return figs


def weights_figure(weights: list[np.ndarray], eta: float):
    """The ensemble's weights after the last round (bars) against the closed form η(1 − η)^{T−j}."""
    import plotly.graph_objects as go

    final = np.asarray(weights[-1])
    T = len(final)
    j = np.arange(1, T + 1)
    closed = eta * (1 - eta) ** (T - j)
    closed[0] = (1 - eta) ** (T - 1)
    fig = go.Figure(go.Bar(x=j, y=final, name="w_j after the last round", marker_color=viz.PALETTE[0]))
    fig.add_trace(go.Scatter(x=j, y=closed, mode="markers", name="η(1 − η)^{T−j}; w_1 = (1 − η)^{T−1}"))
    fig.update_layout(
        title=f"Ensemble weights after {T} rounds (η = {eta:g}): the newest learners dominate",
        xaxis_title="learner j (round it joined)",
        yaxis_title="w_j",
        template="plotly_white",
        height=380,
        margin={"l": 60, "r": 20, "t": 50, "b": 50},
    )
    return fig


def weights_heatmap(weights: list[np.ndarray]):
    """w_j^t for every round t (rows) and learner j (columns); blank where learner j has not joined yet."""
    import plotly.graph_objects as go

    T = len(weights)
    z = np.full((T, T), np.nan)
    for t, w in enumerate(weights):
        z[t, : len(w)] = w
    fig = go.Figure(
        go.Heatmap(
            z=np.where(np.isnan(z), None, z).tolist(),
            x=list(range(1, T + 1)),
            y=list(range(1, T + 1)),
            colorscale="Blues",
            colorbar={"title": "w_j"},
            hoverongaps=False,
        )
    )
    fig.update_layout(
        title="The mixture weights over rounds (each row sums to 1)",
        xaxis_title="learner j",
        yaxis_title="round t",
        template="plotly_white",
        height=420,
        margin={"l": 60, "r": 20, "t": 50, "b": 50},
    )
    return fig


def grid_heatmaps(layout, panels: dict[str, np.ndarray], *, title: str, share_scale: bool = True):
    """One heat map per panel of ``(S,)`` values on the n×n grid; holes and the goal are blank (they end the
    episode). Each panel is normalised to its maximum unless ``share_scale`` is False."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    n = len(layout)
    blank = np.array([[ch in "GH" for ch in row] for row in layout])
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=list(panels), horizontal_spacing=0.04)
    for i, values in enumerate(panels.values(), start=1):
        z = np.asarray(values, float).reshape(n, n)
        if share_scale and z.max() > 0:
            z = z / z.max()
        text = [[ch if ch in "SGH" else "" for ch in row] for row in layout]
        fig.add_trace(
            go.Heatmap(
                z=np.where(blank, None, z).tolist(),
                text=text,
                texttemplate="%{text}",
                colorscale="Viridis" if share_scale else "RdBu",
                zmid=None if share_scale else 0.0,
                showscale=i == len(panels),
                hoverongaps=False,
            ),
            row=1,
            col=i,
        )
        fig.update_yaxes(autorange="reversed", scaleanchor=f"x{i if i > 1 else ''}", showticklabels=False, row=1, col=i)
        fig.update_xaxes(showticklabels=False, row=1, col=i)
    fig.update_layout(
        title=title + (" (each panel scaled to its maximum)" if share_scale else ""),
        template="plotly_white",
        height=330,
        width=max(420, 300 * len(panels)),
        margin={"l": 20, "r": 20, "t": 80, "b": 20},
    )
    return fig


def demo_sweep_figure(frame):
    """Final normalised return against the number of demonstrations, mean over seeds per arm."""
    means = frame.groupby(["label", "n_demos"], sort=False)["normalised_return"].mean().unstack("label")
    fig = viz.lines(
        list(means.index),
        {arm: means[arm].tolist() for arm in means.columns},
        mode="lines+markers",
        title="Final normalised return against the number of expert demonstrations (mean over seeds)",
        xlabel="expert demonstrations",
        ylabel="normalised return",
    )
    fig.update_xaxes(type="log")
    return fig
