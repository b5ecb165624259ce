"""VaGraM's figures: pure functions from a run's Result to plotly figures."""

from __future__ import annotations

import numpy as np

from labkit import viz


def make_figures(result) -> dict:
    """Return against D per loss, held-out model error split into pendulum vs distractor coordinates, the value
    function on the (θ, θ̇) grid, and the held-out value error along training."""
    x = result.extras
    figs = {"return_vs_d": return_figure(x["arms"], x["counts"], float(np.mean(x["oracle"])))}
    figs["error_split"] = error_split_figure(x["arms"], result.params["n_distractors"])
    figs["value"] = value_figure(x["value"].grid)
    figs["value_error"] = viz.curves(result.history, "value_error", title="Held-out value error (V(f̂) − V(s'))²")
    figs["value_error"].update_yaxes(type="log")
    return figs


def return_figure(arms, counts, oracle: float):
    """Mean return (over seeds, with per-seed dots) against the number of distractors, one line per loss."""
    import plotly.graph_objects as go

    labels = list(dict.fromkeys(a.arm.label for a in arms))
    colours = viz.color_map(labels)
    fig = viz.lines(
        [], {}, title="Return of the policy each model supports", xlabel="distractor dims D", ylabel="return"
    )
    for label in labels:
        rows = sorted((a for a in arms if a.arm.label == label), key=lambda a: a.n_distractors)
        fig.add_trace(
            go.Scatter(
                x=[a.n_distractors for a in rows],
                y=[float(np.mean(a.returns)) for a in rows],
                mode="lines+markers",
                name=label,
                line={"color": colours[label]},
            )
        )
        fig.add_trace(
            go.Scatter(
                x=[a.n_distractors for a in rows for _ in a.returns],
                y=[v for a in rows for v in a.returns],
                mode="markers",
                marker={"color": colours[label], "size": 5, "opacity": 0.5},
                showlegend=False,
                name=f"{label} per seed",
            )
        )
    fig.add_hline(y=oracle, line_dash="dot", annotation_text="true model")
    fig.update_xaxes(tickvals=list(counts))
    return fig


def error_split_figure(arms, n_distractors: int):
    """Held-out squared error per coordinate, pendulum coordinates vs distractor coordinates, at the main D."""
    import plotly.graph_objects as go

    rows = [a for a in arms if a.n_distractors == n_distractors]
    fig = go.Figure()
    for part, attr in (("pendulum dims (value-relevant)", "mse_pendulum"), ("distractor dims", "mse_distractor")):
        fig.add_trace(
            go.Bar(x=[a.arm.label for a in rows], y=[float(np.mean(getattr(a, attr))) for a in rows], name=part)
        )
    fig.update_layout(
        title=f"Held-out squared error per coordinate (D={n_distractors})",
        yaxis_title="mean e_j²",
        yaxis_type="log",
        barmode="group",
        template="plotly_white",
        height=380,
    )
    return fig


def value_figure(grid):
    """V(θ, θ̇) from value iteration."""
    import plotly.graph_objects as go

    fig = go.Figure(go.Heatmap(x=grid.theta, y=grid.theta_dot, z=grid.values.T, colorscale="Viridis"))
    fig.update_layout(
        title=f"Value function from value iteration (γ={grid.gamma:g})",
        xaxis_title="θ (0 = upright)",
        yaxis_title="θ̇",
        template="plotly_white",
        height=380,
    )
    return fig
