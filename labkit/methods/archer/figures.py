"""ArCHer's figures: pure functions from a run's Result to plotly figures (plotly is imported inside the functions,
by labkit.viz and here)."""

from __future__ import annotations

from labkit import viz


def make_figures(result) -> dict:
    """Evaluation return and success rate against games played (mean ± std over seeds), the critic along the example
    dialogue, and the advantage of every first utterance."""
    hist, x = result.history, result.extras
    figs = {
        "return": viz.curves(
            hist, "eval_return", title="Return on fresh secrets (sampled play)", xlabel="games played", ylabel="return"
        ),
        "success": viz.curves(
            hist,
            "success_rate",
            title="Success rate (won within the turn limit)",
            xlabel="games played",
            ylabel="success rate",
        ),  # fmt: skip
    }
    opt = result.metrics.get("optimal_return")
    if opt is not None:
        figs["return"].add_hline(y=opt, line_dash="dot", annotation_text="optimal (binary search)")
    ex = x.get("example")
    if ex is not None:
        figs["critic_values"] = critic_figure(ex)
        figs["advantage_map"] = advantage_figure(ex)
    return figs


def critic_figure(ex):
    """min_k V(s_t) before each turn and min_k Q(s_t, a_t) of the utterance spoken, along the example dialogue."""
    turns = [f"{t + 1}: {line}" for t, line in enumerate(ex.lines[: len(ex.v)])]
    fig = viz.lines(
        turns,
        {"V(s_t)": list(ex.v), "Q(s_t, a_t)": list(ex.q)},
        mode="lines+markers",
        title=f"The critic along a dialogue of ArCHer (secret {ex.secret})",
        xlabel="turn: utterance and answer",
        ylabel="value (min over the two heads)",
    )
    return fig


def advantage_figure(ex):
    """A(s_0, (op, n)) for every first utterance: a heat map over op × n."""
    import plotly.graph_objects as go

    n = list(range(1, len(ex.adv_grid[0]) + 1))
    fig = go.Figure(go.Heatmap(z=[list(r) for r in ex.adv_grid], x=n, y=["<", "="], colorscale="RdBu", zmid=0))
    fig.update_layout(
        title="Advantage min Q(s₀, a) − min V(s₀) of each opening utterance", xaxis_title="n", yaxis_title="op"
    )
    return fig
