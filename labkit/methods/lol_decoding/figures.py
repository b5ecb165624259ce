"""LOL's figures: pure functions from a run's Result to plotly figures (plotly is imported inside the functions)."""

from __future__ import annotations

import numpy as np

from labkit import viz
from labkit.core.claims import Interval

SPLIT_DASH = {"validation": "dot", "test": None}


def make_figures(result) -> dict:
    """MC1 per decoder (rare vs all test entities, 95% intervals over seeds), the next-token distributions on one
    rare entity, accuracy against ω, α and β_apc, accuracy against n(e), early-exit accuracy per layer, and the
    training losses."""
    x = result.extras
    figs = {
        "mc1": mc1_figure(x["arms"]),
        "distributions": distributions_figure(x["example"]),
        "sensitivity": sensitivity_figure(x["sensitivity"]),
        "frequency": frequency_figure(x["frequency"], [o.arm.label for o in x["arms"]]),
        "layers": layers_figure(x["layers"]),
        "nll": viz.curves(result.history, "nll", title="Training NLL of the answer token (mean ± std over seeds)"),
    }
    return figs


def mc1_figure(arms):
    """Grouped bars: MC1 on the rare and on all test entities per decoder, error bars = 95% t-interval of the mean."""
    import plotly.graph_objects as go

    names = [o.arm.label for o in arms]
    fig = go.Figure()
    for group, attr, colour in (("rare entities (n(e) ≤ 2)", "mc1_rare", "#d62728"), ("all", "mc1_all", "#1f77b4")):
        ivs = [Interval.of(getattr(o, attr)) for o in arms]
        fig.add_trace(
            go.Bar(
                x=names,
                y=[iv.mean for iv in ivs],
                name=group,
                marker_color=colour,
                error_y={
                    "type": "data",
                    "symmetric": False,
                    "array": [iv.high - iv.mean for iv in ivs],
                    "arrayminus": [iv.mean - iv.low for iv in ivs],
                },
                text=[f"{iv.mean:.2f}" for iv in ivs],
                textposition="outside",
            )
        )
    n = len(arms[0].mc1_rare) if arms else 0
    fig.update_layout(
        barmode="group",
        title=f"MC1 on the test entities per decoder (mean and 95% interval over {n} seeds)",
        yaxis_title="MC1",
        yaxis_range=[0, 1.1],
        template="plotly_white",
        height=420,
        margin={"l": 60, "r": 20, "t": 50, "b": 80},
    )
    return fig


def distributions_figure(example):
    """A row of bar charts over the value tokens: t(e) green, m(e) red, the rest grey."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    labels = [label for label, _ in example.panels]
    fig = make_subplots(rows=1, cols=len(labels), subplot_titles=labels, shared_yaxes=True)
    for c, (_, probs) in enumerate(example.panels, start=1):
        colours = [
            "#2ca02c" if v == example.true_value else "#d62728" if v == example.misconception else "#bbbbbb"
            for v in range(len(probs))
        ]
        fig.add_trace(go.Bar(x=list(range(len(probs))), y=list(probs), marker_color=colours, showlegend=False), 1, c)
    fig.update_layout(
        title=(
            f"Entity e{example.entity} (truth stated n(e) = {example.count}×): next-token distribution over the "
            f"values; green t(e) = v{example.true_value}, red m(e) = v{example.misconception}"
        ),
        template="plotly_white",
        height=340,
        margin={"l": 50, "r": 20, "t": 80, "b": 40},
    )
    fig.update_annotations(font_size=11)
    return fig


def sensitivity_figure(frame):
    """MC1 on rare entities against ω (LOL), α (LOL, ICD) and β_apc (LOL, ICD), the other knobs at the values the
    validation entities chose; validation dotted, test solid; mean over seeds."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    knobs = [("omega", "ω (LOL's fusion weight)"), ("alpha", "α (contrast strength)"), ("beta_apc", "β_apc")]
    fig = make_subplots(rows=1, cols=3, subplot_titles=[t for _, t in knobs], shared_yaxes=True)
    colours = viz.color_map(frame["arm"].unique()) if len(frame) else {}
    shown = set()
    for c, (name, _) in enumerate(knobs, start=1):
        sub = frame[frame["knob"] == name]
        for (arm, split), rows in sub.groupby(["arm", "split"], sort=False):
            mean = rows.groupby("value")["mc1_rare"].mean()
            key = f"{arm} · {split}"
            fig.add_trace(
                go.Scatter(
                    x=[float(v) for v in mean.index],
                    y=mean.values,
                    mode="lines+markers",
                    name=key,
                    legendgroup=key,
                    showlegend=key not in shown,
                    line={"color": colours[arm], "dash": SPLIT_DASH[split]},
                ),
                1,
                c,
            )
            shown.add(key)
    fig.update_yaxes(title_text="MC1, rare entities", row=1, col=1)
    fig.update_layout(
        title="Sensitivity: one knob moves, the others stay where validation put them (validation dotted, test solid)",
        template="plotly_white",
        height=380,
        margin={"l": 60, "r": 20, "t": 70, "b": 50},
    )
    return fig


def frequency_figure(frame, order):
    """MC1 on the test entities against how often the truth was stated, n(e), per decoder (mean over seeds)."""
    buckets = list(dict.fromkeys(frame["bucket"]))
    table = frame.groupby(["arm", "bucket"])["mc1"].mean()
    ys = {arm: [float(table.get((arm, b), np.nan)) for b in buckets] for arm in order}
    return viz.lines(
        buckets,
        ys,
        mode="lines+markers",
        title="MC1 against n(e), the number of times the truth is stated in the corpus (test entities)",
        xlabel="n(e)",
        ylabel="MC1",
    )


def layers_figure(frame):
    """Early-exit MC1 of each layer (0 = embeddings) of the original, refocused and amateur models: rare entities
    solid, all dotted."""
    import plotly.graph_objects as go

    means = frame.groupby(["model", "layer"])[["mc1_rare", "mc1_all"]].mean().reset_index()
    fig = viz.lines(
        [], {}, title="Where does the truth appear? Early-exit MC1 per layer", xlabel="layer j", ylabel="MC1"
    )
    colours = viz.color_map(means["model"].unique())
    for model, rows in means.groupby("model", sort=False):
        for col, dash, what in (("mc1_rare", None, "rare"), ("mc1_all", "dot", "all")):
            fig.add_trace(
                go.Scatter(
                    x=rows["layer"],
                    y=rows[col],
                    mode="lines+markers",
                    name=f"{model} · {what}",
                    line={"color": colours[model], "dash": dash},
                )
            )
    return fig
