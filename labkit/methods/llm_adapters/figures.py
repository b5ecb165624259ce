"""LLM-Adapters' figures: pure functions from a run's Result to plotly figures (plotly is imported inside the
functions, by labkit.viz and here)."""

from __future__ import annotations

import numpy as np

from labkit import viz

FAMILY_ROWS = (("series", "Series"), ("parallel", "Parallel"), ("lora", "LoRA"))
PLACEMENT_COLUMNS = (("attention", "attention"), ("mlp", "MLP"), ("both", "attention + MLP"))


def make_figures(result) -> dict:
    """Accuracy vs trainable parameters, the placement heat map, test accuracy and training loss vs step, and the
    diagram of one decoder block with the insertion points."""
    arms = result.extras["arms"]
    labels = [o.arm.label for o in arms]  # the same order, hence the same colours, in every figure
    figs = {
        "params": params_figure(arms),
        "placement": placement_figure(arms, result.preset),
        "curves": viz.curves(
            result.history,
            "test_acc",
            series=labels,
            title="Test exact match against step (mean ± std over seeds)",
            ylabel="exact match",
        ),
        "loss": viz.curves(
            result.history,
            "train_loss",
            series=labels,
            title="Training loss (answer tokens) between evaluations, mean over seeds",
            ylabel="cross-entropy (nats / token)",
            band=False,
        ),
        "diagram": block_diagram(),
    }
    figs["curves"].update_yaxes(range=[0, 1])
    figs["loss"].update_yaxes(type="log")
    return figs


def params_figure(arms):
    """Final exact match (mean, ±1 std over seeds) against trainable parameters on a log axis; full fine-tuning is
    a star, the frozen base a dashed line (0 trainable parameters), the grid's extra cells hollow markers."""
    import plotly.graph_objects as go

    colours = viz.color_map([o.arm.label for o in arms])
    fig = go.Figure()
    for o in arms:
        if o.n_trainable == 0:
            fig.add_hline(
                y=o.mean, line_dash="dash", line_color="grey", annotation_text=f"{o.arm.label} ({o.mean:.2f})"
            )
            continue
        std = float(np.std(o.accuracy, ddof=1)) if len(o.accuracy) > 1 else 0.0
        symbol = "star" if o.arm.key == "full" else ("circle" if o.spec.main else "circle-open")
        fig.add_trace(
            go.Scatter(
                x=[o.n_trainable],
                y=[o.mean],
                error_y={"type": "data", "array": [std], "visible": True},
                mode="markers",
                marker={"size": 16 if o.arm.key == "full" else 11, "symbol": symbol, "color": colours[o.arm.label]},
                name=f"{o.arm.label}: {o.share:.1%}",
                hovertemplate=f"{o.arm.label}<br>%{{x:,}} trainable ({o.share:.2%})"
                "<br>exact match %{y:.3f}<extra></extra>",
            )
        )
    fig.update_layout(
        title="Test exact match against trainable parameters (legend: % of the base model)",
        xaxis_title="trainable parameters (log scale)",
        yaxis_title="exact match",
        template="plotly_white",
        height=420,
        margin={"l": 60, "r": 20, "t": 50, "b": 50},
    )
    fig.update_xaxes(type="log")
    fig.update_yaxes(range=[0, 1.02])
    return fig


def placement_grid(arms) -> np.ndarray:
    """Mean exact match per (family, placement), NaN for a cell that did not run. ``(3, 3)``."""
    by_key = {o.arm.key: o for o in arms}
    return np.array(
        [
            [by_key[f"{f}_{pl}"].mean if f"{f}_{pl}" in by_key else np.nan for pl, _ in PLACEMENT_COLUMNS]
            for f, _ in FAMILY_ROWS
        ]
    )


def placement_figure(arms, preset: str):
    """The placement heat map: method × {attention, MLP, both}; cells that did not run are blank and say so."""
    import plotly.graph_objects as go

    z = placement_grid(arms)
    text = [[f"{v:.3f}" if np.isfinite(v) else "not run" for v in row] for row in z]
    missing = int(np.isnan(z).sum())
    note = f" — {missing} cells not run at {preset} (grid=False)" if missing else ""
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=[name for _, name in PLACEMENT_COLUMNS],
            y=[name for _, name in FAMILY_ROWS],
            text=text,
            texttemplate="%{text}",
            colorscale="Viridis",
            colorbar={"title": "exact match"},
            hoverongaps=False,
        )
    )
    fig.update_layout(
        title=f"Where the module sits: mean test exact match{note}",
        xaxis_title="placement",
        template="plotly_white",
        height=360,
        margin={"l": 80, "r": 20, "t": 50, "b": 50},
    )
    return fig


def block_diagram():
    """One pre-LN decoder block, left to right, with the four insertion points of the paper: prefix vectors into
    attention's keys and values, LoRA on the linear layers, a series adapter after the MLP, a parallel one beside it."""
    import plotly.graph_objects as go

    fig = go.Figure()
    grey, blue = "#dddddd", "#cfe2ff"
    boxes = [  # (x0, x1, y0, y1, text, fill)
        (0.0, 0.6, 1.6, 2.4, "LN", grey),
        (1.0, 2.8, 1.4, 2.6, "Attention<br>qkv · softmax · out", blue),
        (3.9, 4.5, 1.6, 2.4, "LN", grey),
        (4.9, 6.9, 1.4, 2.6, "MLP<br>fc1 · GELU · fc2", blue),
    ]
    for x0, x1, y0, y1, text, fill in boxes:
        fig.add_shape(type="rect", x0=x0, x1=x1, y0=y0, y1=y1, fillcolor=fill, line={"color": "black"})
        fig.add_annotation(x=(x0 + x1) / 2, y=(y0 + y1) / 2, text=text, showarrow=False)
    for x in (3.35, 8.45):  # the residual additions
        fig.add_shape(type="circle", x0=x - 0.2, x1=x + 0.2, y0=1.8, y1=2.2, line={"color": "black"})
        fig.add_annotation(x=x, y=2.0, text="+", showarrow=False, font={"size": 16})
    for x0, x1 in ((-0.6, 0.0), (0.6, 1.0), (2.8, 3.15), (3.55, 3.9), (4.5, 4.9), (6.9, 7.3), (8.1, 8.25), (8.65, 9.2)):
        _arrow(fig, x0, 2.0, x1, 2.0)
    for x0, x1 in ((-0.3, 3.35), (3.7, 8.45)):  # residual paths over the top
        fig.add_shape(type="path", path=f"M {x0} 2 L {x0} 3.4 L {x1} 3.4 L {x1} 2.2", line={"color": "grey"})
    # series adapter: after the MLP, h' = h + U tanh(D h)
    fig.add_shape(type="rect", x0=7.3, x1=8.1, y0=1.6, y1=2.4, fillcolor="#ffd6a5", line={"color": "#d9480f"})
    fig.add_annotation(x=7.7, y=2.0, text="Series", showarrow=False, font={"color": "#d9480f"})
    fig.add_annotation(x=7.7, y=1.35, text="h + U tanh(D h)", showarrow=False, font={"size": 10, "color": "#d9480f"})
    # parallel adapter: beside the MLP, from its input to its output
    fig.add_shape(type="rect", x0=5.3, x1=6.5, y0=0.2, y1=0.8, fillcolor="#d3f9d8", line={"color": "#2b8a3e"})
    fig.add_annotation(x=5.9, y=0.5, text="Parallel U tanh(D x)", showarrow=False, font={"color": "#2b8a3e"})
    fig.add_shape(type="path", path="M 4.7 2 L 4.7 0.5 L 5.3 0.5", line={"color": "#2b8a3e", "dash": "dot"})
    fig.add_shape(type="path", path="M 6.5 0.5 L 7.1 0.5 L 7.1 2", line={"color": "#2b8a3e", "dash": "dot"})
    # LoRA: on the linear layers of attention (label below) and of the MLP (label above)
    lora = {"showarrow": True, "ax": 0, "font": {"color": "#5f3dc4"}, "arrowcolor": "#5f3dc4"}
    fig.add_annotation(x=1.9, y=1.4, text="LoRA: W + (α/r) B A", ay=28, **lora)
    fig.add_annotation(x=5.9, y=2.6, text="LoRA: W + (α/r) B A", ay=-28, **lora)
    prefix = {"font": {"color": "#c2255c"}, "arrowcolor": "#c2255c"}
    fig.add_annotation(x=1.9, y=2.6, text="Prefix: K = [P_k; K], V = [P_v; V]", showarrow=True, ax=0, ay=-28, **prefix)
    fig.add_annotation(x=-0.55, y=2.25, text="h", showarrow=False)
    fig.update_layout(
        title="One decoder block (pre-LN) and the insertion points (the grid also puts Series/Parallel at attention)",
        template="plotly_white",
        height=330,
        showlegend=False,
        margin={"l": 20, "r": 20, "t": 50, "b": 20},
        xaxis={"visible": False, "range": [-0.8, 9.4]},
        yaxis={"visible": False, "range": [0.0, 3.6]},
    )
    return fig


def _arrow(fig, x0, y0, x1, y1):
    fig.add_annotation(x=x1, y=y1, ax=x0, ay=y0, xref="x", yref="y", axref="x", ayref="y", showarrow=True, arrowhead=2)
