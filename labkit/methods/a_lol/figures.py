"""A-LoL's figures: test reward per step, the advantage histogram by source, output styles, importance ratios."""

from __future__ import annotations

from labkit import viz
from labkit.data import language as lang


def make_figures(result) -> dict:
    """``{"test_reward", "advantage", "styles", "ratios", "final"}`` from a run's history and extras."""
    from .experiment import STYLES

    x = result.extras
    arms, ref, stats = x["arms"], x["reference"], x["advantage"]
    labels = [o.arm.label for o in arms]
    figs = {
        "test_reward": viz.curves(
            result.history,
            "test_reward",
            series=labels,
            xlabel="step after SFT",
            ylabel="mean R of greedy outputs",
            title="Test reward (greedy) per step; step 0 is π_ref",
        )
    }
    for name, val in (("expert data", stats.source_reward[0]), ("mediocre data", stats.source_reward[1])):
        figs["test_reward"].add_hline(y=val, line_dash="dot", annotation_text=name)
    figs["advantage"] = advantage_figure(stats, result.seed)
    figs["styles"] = styles_figure([ref] + list(arms), STYLES)
    figs["ratios"] = ratio_figure(x["ratios"], x["eps"], result.seed)
    figs["final"] = viz.bars(
        {o.arm.label: o.final_reward for o in arms}, title="Final greedy test reward per arm", ylabel="mean R"
    )
    return figs


def advantage_figure(stats, seed: int):
    import plotly.graph_objects as go

    fig = go.Figure()
    for k, name in enumerate(lang.SOURCE_NAMES):
        fig.add_trace(
            go.Histogram(x=stats.by_source[name], name=name, nbinsx=60, opacity=0.75, marker_color=viz.PALETTE[k])
        )
    lows = [min(v) for v in stats.by_source.values() if v]
    fig.add_vrect(
        x0=min(lows) - 0.02 if lows else -1.0,
        x1=0.0,
        fillcolor="grey",
        opacity=0.15,
        line_width=0,
        annotation_text="filtered (A ≤ 0)",
    )
    fig.add_vline(x=0.0, line_dash="dash")
    fig.update_layout(
        barmode="stack",
        title=f"Advantage A = R − V(x) on the training set, seed {seed} (positive: {stats.positive_frac[0]:.2f})",
        xaxis_title="A",
        yaxis_title="examples",
        template="plotly_white",
        height=380,
    )
    return fig


def styles_figure(outcomes, styles):
    import plotly.graph_objects as go

    fig = go.Figure()
    for k, name in enumerate(styles):
        fig.add_trace(
            go.Bar(
                x=[o.arm.label for o in outcomes],
                y=[o.styles[k] for o in outcomes],
                name=name,
                marker_color=viz.PALETTE[k],
            )
        )
    fig.update_layout(
        barmode="stack",
        title="Which data source the greedy test outputs imitate (rule = expert, copy = mediocre), mean over seeds",
        yaxis_title="share of test prompts",
        template="plotly_white",
        height=380,
    )
    return fig


def ratio_figure(ratios: dict, eps: float, seed: int):
    import plotly.graph_objects as go

    fig = go.Figure(
        go.Scatter(
            x=ratios["step"],
            y=ratios["ratio"],
            mode="markers",
            marker={"size": 3, "opacity": 0.5},
            name="r = π_θ/π_ref",
        )
    )
    fig.add_hrect(
        y0=max(1 - eps, 1e-3),
        y1=1 + eps,
        fillcolor="green",
        opacity=0.1,
        line_width=0,
        annotation_text=f"clip band [1−ε, 1+ε], ε = {eps:g}",
    )
    fig.update_yaxes(type="log")
    fig.update_layout(
        title=f"A-LoL's sequence importance ratios on its batches (seed {seed}, A⁺ > 0 rows)",
        xaxis_title="step",
        yaxis_title="r (log axis)",
        template="plotly_white",
        height=380,
    )
    return fig
