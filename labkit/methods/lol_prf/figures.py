"""LoL's figures: pure functions from a run's Result to plotly figures (plotly is imported inside the functions,
by labkit.viz and here)."""

from __future__ import annotations

import numpy as np

from labkit import viz

#: (field of ArmNumbers, axis title) of the by-k figures
BY_K = (
    ("map", "MAP"),
    ("ndcg", "nDCG@10"),
    ("recall", "Recall@20"),
    ("loss", "mean reformulation loss ℓ"),
)


def make_figures(result) -> dict:
    """MAP / nDCG@10 / Recall@20 / ℓ against the number of feedback documents k, the violation rate per arm, the
    histogram of ℓ(K) − ℓ(1), the learned gates against relevance, and the held-out MAP along training."""
    x = result.extras
    arms, base = x["arms"], x["baseline"]
    figs = {}
    for field, title in BY_K:
        figs[f"by_k_{field}"] = by_k_figure(arms, field, title)
        if field != "loss":
            figs[f"by_k_{field}"].add_hline(
                y=float(getattr(base, field).mean()), line_dash="dot", annotation_text="no PRF"
            )
    figs["violation"] = viz.bars(
        {a.arm.label: list(a.violation) for a in arms},
        title="Violation rate V: share of pairs k_more > k_less with ℓ(k_more) > ℓ(k_less) (held out)",
        ylabel="V (lower is better)",
    )
    figs["drift_histogram"] = drift_histogram(arms, x["max_k"], result.seed)
    figs["gates"] = gates_figure(arms, base, x["max_k"], result.seed)
    figs["training_map"] = viz.curves(
        result.history, "map", title=f"Held-out MAP of the revision with k={x['max_k']} along training", ylabel="MAP"
    )
    figs["training_loss"] = viz.curves(result.history, "train_loss", title="Training loss L per arm", ylabel="L")
    return figs


def by_k_figure(arms, field: str, title: str):
    """One line per arm: mean over seeds against k, with a ±1 std band over seeds."""
    import pandas as pd

    rows = []
    for a in arms:
        table = getattr(a, field)  # [S, K+1]
        for s in range(table.shape[0]):
            for k in range(table.shape[1]):
                rows.append({"seed": s, "step": k, "series": a.arm.label, "metric": field, "value": table[s, k]})
    fig = viz.curves(
        pd.DataFrame(rows),
        field,
        title=f"{title} against the number of feedback documents k (held out; k = 0 is the query alone)",
        xlabel="feedback documents k",
        ylabel=title,
    )
    fig.update_traces(mode="lines+markers", selector={"fill": None})
    return fig


def drift_histogram(arms, max_k: int, seed: int):
    """ℓ(k=K) − ℓ(k=1) per held-out query (first seed): mass right of zero is a revision made worse by more feedback."""
    import plotly.graph_objects as go

    learned = [a for a in arms if a.arm.key != "rocchio"]
    colours = viz.color_map([a.arm.label for a in arms])
    fig = go.Figure()
    for a in learned:
        fig.add_trace(
            go.Histogram(x=list(a.drift_seed0), name=a.arm.label, opacity=0.55, marker_color=colours[a.arm.label])
        )
    fig.add_vline(x=0.0, line_dash="dot")
    fig.update_layout(
        barmode="overlay",
        title=f"ℓ(k={max_k}) − ℓ(k=1) per held-out query, seed {seed} (right of 0: more feedback made it worse)",
        xaxis_title="loss difference",
        yaxis_title="queries",
        template="plotly_white",
        height=380,
    )
    return fig


def gates_figure(arms, base, max_k: int, seed: int):
    """The learned gate g_j of each feedback document (revision with k = K) by whether it is relevant (first seed)."""
    import plotly.graph_objects as go

    relevant = np.array(base.feedback_relevant_seed0, bool)
    colours = viz.color_map([a.arm.label for a in arms])
    fig = go.Figure()
    for a in arms:
        if a.arm.key == "rocchio":
            continue
        g = np.array(a.gates_seed0)
        labels = np.where(relevant, "relevant feedback doc", "non-relevant feedback doc")
        fig.add_trace(go.Box(x=labels, y=g, name=a.arm.label, marker_color=colours[a.arm.label], boxpoints=False))
    fig.update_layout(
        boxmode="group",
        title=f"Learned gate g_j of each feedback document (k = {max_k}), by relevance, seed {seed}",
        yaxis_title="g_j",
        template="plotly_white",
        height=380,
    )
    return fig
