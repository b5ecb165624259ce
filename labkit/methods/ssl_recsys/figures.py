"""SSL recsys's figures: pure functions from a run's Result to plotly figures (plotly is imported inside the functions,
by labkit.viz and here)."""

from __future__ import annotations

import numpy as np

from labkit import viz


def make_figures(result) -> dict:
    """Recall@K against K, the relative gain per popularity bucket, the validation recall during training, the
    popularity histogram with the bucket boundaries, the MI matrix and the CFM masks, and a PCA of tail items."""
    x = result.extras
    arms, data = x["arms"], x["data"]
    figs = {"recall_at_k": recall_curve_figure(arms, data.curve_ks)}
    figs["bucket_gain"] = bucket_gain_figure(arms)
    figs["val_recall"] = viz.curves(
        result.history, "val_recall", title="Validation recall@k during training (mean ± std over seeds)"
    )
    figs["popularity"] = popularity_figure(data.train_counts_seed0)
    figs["mutual_information"] = heatmap(
        np.array(data.mi_seed0), data.fields, data.fields, "Mutual information between item fields (nats, seed 0)"
    )
    figs["cfm_masks"] = heatmap(
        np.array(data.cfm_table_seed0, dtype=float),
        data.fields,
        [f"seed {f}" for f in data.fields],
        "CFM: the fields masked in view 1 for each seed field (view 2 masks the rest)",
    )
    figs["tail_pca"] = tail_pca_figure(arms, data.tail_categories_seed0)
    return figs


def recall_curve_figure(arms, ks):
    """Test recall@K against K (log axis), mean over seeds, one line per arm."""
    fig = viz.lines(
        list(ks),
        {o.arm.label: np.mean(np.array(o.curve), axis=0) for o in arms},
        mode="lines+markers",
        title="Test recall@K over the whole catalogue (mean over seeds)",
        xlabel="K",
        ylabel="recall@K",
    )
    fig.update_xaxes(type="log")
    return fig


def bucket_gain_figure(arms):
    """Relative recall@k gain of each +SSL arm over the two-tower per popularity bucket, one bar group per arm."""
    import plotly.graph_objects as go

    base = arms[0]
    fig = go.Figure()
    colours = viz.color_map([o.arm.label for o in arms])
    for o in arms[1:]:
        gains = []
        for name in ("tail", "mid", "head", "recall"):
            b, s = np.asarray(getattr(base, name)), np.asarray(getattr(o, name))
            with np.errstate(divide="ignore", invalid="ignore"):
                gains.append(float(np.nanmean(np.where(b > 0, s / b - 1, np.nan))))
        fig.add_trace(
            go.Bar(
                x=["tail (≤ 3)", "mid (4–30)", "head (> 30)", "all"],
                y=gains,
                name=o.arm.label,
                marker_color=colours[o.arm.label],
                text=[f"{g:+.1%}" for g in gains],
                textposition="outside",
            )
        )
    fig.update_layout(
        title="Relative recall@k gain over the two-tower, by training frequency of the test item (mean over seeds)",
        yaxis_title="recall(+SSL) / recall(two-tower) − 1",
        yaxis_tickformat="+.0%",
        template="plotly_white",
        height=400,
        barmode="group",
    )
    return fig


def popularity_figure(counts):
    """How many items have each training count (log-log), with the tail / head boundaries."""
    counts = np.asarray(counts)
    values, n_items = np.unique(counts[counts > 0], return_counts=True)
    fig = viz.lines(
        values.tolist(),
        {"items": n_items.tolist()},
        mode="markers",
        title=f"Item popularity in the training log (seed 0; {int((counts == 0).sum())} items never seen)",
        xlabel="training interactions of an item",
        ylabel="number of items",
    )
    fig.update_xaxes(type="log")
    fig.update_yaxes(type="log")
    fig.add_vline(x=3.5, line_dash="dot", annotation_text="tail ≤ 3")
    fig.add_vline(x=30.5, line_dash="dot", annotation_text="head > 30")
    return fig


def heatmap(values, columns, rows, title):
    import plotly.graph_objects as go

    fig = go.Figure(go.Heatmap(z=values, x=list(columns), y=list(rows), colorscale="Blues"))
    fig.update_layout(title=title, template="plotly_white", height=420, yaxis_autorange="reversed")
    return fig


def tail_pca_figure(arms, categories):
    """2-D PCA of the tail items' embeddings (seed 0), coloured by category, one panel per arm."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=len(arms), subplot_titles=[o.arm.label for o in arms])
    for i, o in enumerate(arms):
        xy = np.asarray(o.tail_pca).reshape(-1, 2)
        fig.add_trace(
            go.Scatter(
                x=xy[:, 0],
                y=xy[:, 1],
                mode="markers",
                marker={"color": list(categories), "colorscale": "Turbo", "size": 5},
                showlegend=False,
                name=o.arm.label,
            ),
            row=1,
            col=i + 1,
        )
    fig.update_layout(
        title="Tail items' embeddings (seed 0), first two principal components, coloured by category",
        template="plotly_white",
        height=400,
    )
    return fig
