"""Dual RL's figures: pure functions from a run's Result to plotly figures (plotly is imported inside the functions,
by labkit.viz and here)."""

from __future__ import annotations

import numpy as np

from labkit import viz
from labkit.core import Interval


def make_figures(result) -> dict:
    """Normalised returns with 95% intervals (part A, part B), the largest value loss per method under the stress
    test (log y) and its trace over training, the learned V over the grid, the data over the grid, return curves."""
    arms, world = result.extras["arms"], result.extras["world"]
    part_a = [r for r in arms if r.part == "recoil"]
    part_b = [r for r in arms if r.part == "dvl"]
    stress = [r for r in arms if r.part == "stress"]
    figs = {
        "returns_imitation": returns_figure(
            part_a, "Part A · imitation from 1 expert episode + random data: normalised return (95% interval)"
        ),
        "returns_offline_rl": returns_figure(
            part_b, "Part B · offline RL from ε-noisy expert data: normalised return (95% interval)"
        ),
    }
    figs["returns_offline_rl"].add_hline(
        y=float(np.mean(world.behaviour_returns)), line_dash="dot", annotation_text="behaviour policy"
    )
    figs["stress_max_loss"] = max_loss_figure(part_b, stress)
    hist = result.history
    trace = hist[(hist["metric"] == "log10_max_value_loss") & hist["series"].isin([r.arm.label for r in stress])]
    figs["stress_trace"] = viz.curves(
        trace,
        "log10_max_value_loss",
        title="Stress test: log10 of the largest value loss so far (38.5 = float32 overflow)",
        ylabel="log10 max value loss",
    )
    by = {r.arm.key: r for r in arms}
    figs["value_heatmap"] = heatmaps(
        world.layout,
        {by[k].arm.label: by[k].v_first_seed for k in ("recoil", "iq_learn", "chi2") if k in by},
        title=f"Learned V over the grid (seed {result.seed}); H holes, G goal",
    )
    figs["data_heatmap"] = heatmaps(
        world.layout,
        {"expert episode (D_E) visits": world.expert_visits, "random data (D_S) visits": world.replay_visits},
        title=f"Part A's data over the grid (seed {result.seed}): the expert's path and the random data's coverage",
        log=True,
    )
    figs["return_curves"] = viz.curves(
        hist[hist["metric"] == "normalised_return"], "normalised_return", title="Normalised return during training"
    )
    return figs


def returns_figure(results, title: str):
    """A bar per arm at the mean normalised return over seeds, its 95% t-interval, and the seeds as dots."""
    fig = viz.bars({r.arm.label: list(r.returns) for r in results}, title=title, ylabel="normalised return")
    intervals = [Interval.of(r.returns) for r in results]
    fig.data[0].error_y = {
        "type": "data",
        "symmetric": False,
        "array": [iv.high - iv.mean for iv in intervals],
        "arrayminus": [iv.mean - iv.low for iv in intervals],
    }
    fig.add_hline(y=1.0, line_dash="dash", annotation_text="expert")
    return fig


def max_loss_figure(normal, stress):
    """The largest batch value loss over training, per method and seed (log y): from zero-initialised tables and
    under the stress test. An overflow (inf) is drawn at float32's largest number with an ×."""
    import plotly.graph_objects as go

    cap = float(np.finfo(np.float32).max)
    fig = go.Figure()
    for results, name, colour in (
        (normal, "Q = 0 at the start", "#1f77b4"),
        (stress, "stress: Q ~ N(0, σ²)", "#d62728"),
    ):
        for r in results:
            values = np.asarray(r.max_value_loss, dtype=float)
            label = r.arm.label.replace(" · stress", "")
            over = ~np.isfinite(values)
            fig.add_trace(
                go.Scatter(
                    x=[label] * len(values),
                    y=np.where(over, cap, values).tolist(),
                    mode="markers",
                    name=name,
                    legendgroup=name,
                    offsetgroup=name,
                    showlegend=r is results[0],
                    marker={"color": colour, "size": 9, "symbol": ["x" if o else "circle" for o in over]},
                )
            )
    fig.add_hline(y=cap, line_dash="dot", annotation_text="float32 overflow")
    fig.update_yaxes(type="log", title="largest batch value loss")
    fig.update_layout(
        title="Largest value loss over training, per seed (× = overflowed to inf)",
        scattermode="group",
        template="plotly_white",
        height=420,
        margin={"l": 60, "r": 20, "t": 50, "b": 50},
    )
    return fig


def heatmaps(layout, panels: dict, title: str, log: bool = False):
    """One heat map per panel of a ``(S,)`` vector over the grid; holes and goal blank and labelled."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    n = len(layout)
    cells = np.array([list(row) for row in layout])
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=list(panels), horizontal_spacing=0.06)
    for i, (name, values) in enumerate(panels.items(), start=1):
        z = np.asarray(values, dtype=float).reshape(n, n).copy()
        z[np.isin(cells, ["H", "G"])] = np.nan
        if log:
            z = np.log10(1.0 + z)
        fig.add_trace(
            go.Heatmap(z=z.tolist(), colorscale="Viridis", showscale=i == len(panels), name=name, hoverongaps=False),
            row=1,
            col=i,
        )
        for r in range(n):
            for c in range(n):
                if cells[r, c] in ("H", "G"):
                    fig.add_annotation(x=c, y=r, text=cells[r, c], showarrow=False, row=1, col=i)
        fig.update_yaxes(autorange="reversed", scaleanchor=f"x{i if i > 1 else ''}", row=1, col=i)
    fig.update_layout(title=title, template="plotly_white", height=380, margin={"l": 40, "r": 20, "t": 70, "b": 40})
    return fig


def loss_shapes_figure(lam: float, alpha: float, expectile: float, x_max: float = 12.0):
    """The four value losses g(x), x = Q − V, on one axis (log y): Gumbel grows like e^{x/α}, χ² like x², TV like x."""
    import torch

    from .method import VALUE_LOSSES

    x = torch.linspace(-x_max, x_max, 241)
    curves = {
        f"XQL Gumbel (α={alpha:g})": VALUE_LOSSES["gumbel"](x, alpha),
        f"χ²-DVL (λ={lam:g})": VALUE_LOSSES["chi2"](x, lam),
        f"TV-DVL (λ={lam:g})": VALUE_LOSSES["tv"](x, lam),
        f"IQL expectile (τ={expectile:g})": VALUE_LOSSES["expectile"](x, expectile),
    }
    fig = viz.lines(
        x.tolist(),
        {k: v.clamp(min=1e-3).tolist() for k, v in curves.items()},
        title="Value losses against the residual x = Q(s,a) − V(s) (log y)",
        xlabel="x = Q − V",
        ylabel="loss (clipped below at 1e-3)",
    )
    fig.update_yaxes(type="log")
    return fig
