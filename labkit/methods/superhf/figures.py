"""SuperHF's figures: rewards, KL, the exploit and METEOR per sampled completion, the trade-off, example outputs."""

from __future__ import annotations

import numpy as np

from labkit import viz


def make_figures(result) -> dict:
    hist, x = result.history, result.extras
    series = [pl.arm.label for pl in x["plans"]]
    budget = "completions sampled (per method)"
    figs = {
        "proxy": viz.curves(
            hist,
            "proxy_reward",
            series=series,
            xlabel=budget,
            title='Proxy reward R (what is optimised; pays 0.5 per "!")',
        ),
        "gold": viz.curves(
            hist,
            "gold_reward",
            series=series,
            xlabel=budget,
            title="Gold reward (relevant words, −0.5 per repeat; evaluation only)",
        ),
        "kl": viz.curves(
            hist,
            "kl_from_init",
            series=series,
            xlabel=budget,
            ylabel="nats per sequence",
            title="KL(π_θ ‖ π_0) on fresh samples (k1 estimate)",
        ),
        "bang": viz.curves(
            hist,
            "bang_frac",
            series=series,
            xlabel=budget,
            ylabel='share of "!" tokens',
            title='The exploit: share of "!" tokens',
        ),
        "meteor": viz.curves(
            hist,
            "meteor",
            series=series,
            xlabel=budget,
            title="Cross-prompt METEOR similarity (high = same answer to every topic)",
        ),
    }
    outcomes = x["outcomes"]
    figs["hacking"] = viz.bars(
        {o.arm.label: o.values("bang_frac") for o in outcomes},
        ylabel='share of "!"',
        title='Reward hacking at the end: share of "!" tokens (dots: seeds)',
    )
    figs["tradeoff"] = point_figure(
        outcomes,
        "proxy_reward",
        "meteor",
        "final proxy reward",
        "cross-prompt METEOR",
        "Reward against reward hacking (one point per arm)",
    )
    figs["gold_vs_kl"] = trajectory_figure(hist, series)
    figs["examples"] = examples_figure(outcomes)
    return figs


def point_figure(outcomes, xm, ym, xlabel, ylabel, title):
    import plotly.graph_objects as go

    colours = viz.color_map(o.arm.label for o in outcomes)
    fig = go.Figure()
    for o in outcomes:
        name = o.arm.label
        fig.add_trace(
            go.Scatter(
                x=[o.mean(xm)],
                y=[o.mean(ym)],
                mode="markers+text",
                name=name,
                text=[name],
                textposition="top center",
                marker={"size": 11, "color": colours[name]},
            )
        )
    fig.update_layout(
        title=title, xaxis_title=xlabel, yaxis_title=ylabel, template="plotly_white", height=420, showlegend=False
    )
    return fig


def trajectory_figure(hist, series):
    """Gold reward against KL(π_θ‖π_0) along training (means over seeds): compare methods at matched KL."""
    import plotly.graph_objects as go

    means = hist.groupby(["series", "metric", "step"])["value"].mean()
    colours = viz.color_map(series)
    fig = go.Figure()
    for name in series:
        fig.add_trace(
            go.Scatter(
                x=np.asarray(means[name]["kl_from_init"].values),
                y=np.asarray(means[name]["gold_reward"].values),
                mode="lines+markers",
                name=name,
                line={"color": colours[name]},
            )
        )
    fig.update_layout(
        title="Gold reward against KL(π_θ ‖ π_0): the methods at matched KL",
        xaxis_title="KL(π_θ ‖ π_0), nats per sequence",
        yaxis_title="gold reward",
        template="plotly_white",
        height=400,
    )
    return fig


def examples_figure(outcomes):
    import plotly.graph_objects as go

    n = len(outcomes[0].examples)
    fig = go.Figure(
        go.Table(
            header={"values": ["topic"] + [o.arm.label for o in outcomes]},
            cells={"values": [list(range(n))] + [o.examples for o in outcomes], "align": "left"},
        )
    )
    fig.update_layout(title="One sampled completion per topic at the end (first seed; W = relevant word)", height=420)
    return fig
