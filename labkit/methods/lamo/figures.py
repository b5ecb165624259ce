"""LaMo's figures: pure functions from a run's Result to plotly figures (plotly is imported inside the functions)."""

from __future__ import annotations

import numpy as np

from labkit import viz


def make_figures(result) -> dict:
    """Normalised return per arm with 95% intervals, the loss curves (action loss, held-out LM loss), trainable
    parameters, a rollout of LaMo vs DT on the grid, and return against data size when the sweep ran."""
    x = result.extras
    arms = x["arms"]
    figs = {"return": return_figure(arms, float(np.mean(x["behaviour"])))}
    figs["action_loss"] = viz.curves(
        result.history, "action_loss", title="DT action loss (cross-entropy) during training", ylabel="L_act"
    )
    figs["lm_loss"] = viz.curves(
        result.history,
        "lm_held_out",
        title="The LM's held-out arithmetic loss during DT training (nats/token)",
        ylabel="L_LM held out",
    )
    figs["trainable"] = viz.bars(
        {o.arm.label: [o.trainable] for o in arms}, title="Trainable parameters per arm", ylabel="parameters"
    )
    figs["rollout"] = rollout_figure(x["layout"], [o for o in arms if o.arm.key in ("lamo", "dt")])
    if len(x["sweep"]) > 1:
        figs["data_sizes"] = sweep_figure(x["sweep"])
    return figs


def _interval(values):
    from labkit.core import Interval

    iv = Interval.of(values)
    return iv.mean, iv.high - iv.mean, iv.mean - iv.low


def return_figure(arms, behaviour: float):
    """Mean normalised return per arm with its 95% t-interval over seeds, the seeds as dots."""
    import plotly.graph_objects as go

    names = [o.arm.label for o in arms]
    colours = viz.color_map(names)
    stats = [_interval(o.normalised_return) for o in arms]
    fig = go.Figure(
        go.Bar(
            x=names,
            y=[s[0] for s in stats],
            error_y={"type": "data", "array": [s[1] for s in stats], "arrayminus": [s[2] for s in stats]},
            marker_color=[colours[n] for n in names],
            showlegend=False,
        )
    )
    for o in arms:
        fig.add_trace(
            go.Scatter(
                x=[o.arm.label] * len(o.normalised_return),
                y=list(o.normalised_return),
                mode="markers",
                marker={"color": "black", "size": 6, "opacity": 0.6},
                showlegend=False,
            )
        )
    fig.add_hline(y=behaviour, line_dash="dot", annotation_text="behaviour data")
    fig.update_layout(
        title="Normalised return (0 = random, 100 = expert), mean with 95% interval over seeds",
        yaxis_title="normalised return",
        template="plotly_white",
        height=400,
    )
    return fig


def rollout_figure(layout, arms):
    """The first evaluation episodes of the first seed, LaMo and DT, drawn on the grid (jittered per arm)."""
    import plotly.graph_objects as go

    n = len(layout)
    fig = go.Figure()
    marks = {"S": ("start", "green"), "G": ("goal", "gold"), "H": ("hole", "black")}
    for ch, (name, colour) in marks.items():
        cells = [(r, c) for r in range(n) for c in range(n) if layout[r][c] == ch]
        fig.add_trace(
            go.Scatter(
                x=[c for _, c in cells],
                y=[r for r, _ in cells],
                mode="markers",
                marker={"symbol": "square", "size": 28, "color": colour, "opacity": 0.5},
                name=name,
            )
        )
    colours = viz.color_map([o.arm.label for o in arms])
    for k, o in enumerate(arms):
        for e, path in enumerate(o.paths_seed0):
            shift = (k - 0.5) * 0.2 + (e - 1) * 0.06
            fig.add_trace(
                go.Scatter(
                    x=[s % n + shift for s in path],
                    y=[s // n + shift for s in path],
                    mode="lines+markers",
                    line={"color": colours[o.arm.label]},
                    marker={"size": 4},
                    name=o.arm.label,
                    legendgroup=o.arm.label,
                    showlegend=e == 0,
                )
            )
    fig.update_yaxes(autorange="reversed", dtick=1, title="row")
    fig.update_xaxes(dtick=1, title="column")
    fig.update_layout(
        title="Return-conditioned rollouts (R̂₁ = target), first seed: LaMo vs DT",
        template="plotly_white",
        height=460,
        width=560,
    )
    return fig


def sweep_figure(points):
    """LaMo and DT normalised return against the number of offline episodes (mean ± 95% interval)."""
    import plotly.graph_objects as go

    fig = go.Figure()
    colours = viz.color_map(["LaMo", "DT (scratch)"])
    for name, attr in (("LaMo", "lamo"), ("DT (scratch)", "dt")):
        stats = [_interval(getattr(pt, attr)) for pt in points]
        fig.add_trace(
            go.Scatter(
                x=[pt.n_episodes for pt in points],
                y=[s[0] for s in stats],
                error_y={"type": "data", "array": [s[1] for s in stats], "arrayminus": [s[2] for s in stats]},
                mode="lines+markers",
                name=name,
                line={"color": colours[name]},
            )
        )
    fig.update_xaxes(type="log", title="offline episodes")
    fig.update_layout(
        title="Return against data size", yaxis_title="normalised return", template="plotly_white", height=380
    )
    return fig
