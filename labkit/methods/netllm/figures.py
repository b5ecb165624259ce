"""NetLLM's figures: QoE per policy on test and unseen traces (95% intervals over seeds), the QoE's three terms,
one streaming session of NetLLM against BBA, the training losses, and (when run) the return-conditioning sweep."""

from __future__ import annotations

import numpy as np

from labkit import viz
from labkit.core import Interval

SPLIT_NAMES = {"test": "test (training distribution)", "unseen": "unseen (2× variance)"}


def make_figures(result) -> dict:
    """``{"qoe", "qoe_terms", "episode", "loss", "parameters"[, "return_sweep"]}``."""
    x = result.extras
    figs = {
        "qoe": qoe_figure(x["outcomes"]),
        "qoe_terms": terms_figure(x["outcomes"]),
        "episode": episode_figure(x["episode"], result.seed),
        "loss": viz.curves(
            result.history,
            "train_loss",
            title="Training loss (cross-entropy on the pool's actions), mean ± std over seeds",
            ylabel="loss",
        ),
        "parameters": parameters_figure(x["outcomes"][0], x["arms"]),
    }
    if "return_sweep" in x:
        sweep = x["return_sweep"]
        figs["return_sweep"] = viz.lines(
            list(sweep),
            {"NetLLM": list(sweep.values())},
            mode="lines+markers",
            title=f"Return conditioning: test QoE against the target-return scale (seed {result.seed})",
            xlabel="target return / largest return in the pool",
            ylabel="QoE per chunk",
        )
    return figs


def _order(outcomes) -> list[tuple[str, str]]:
    """(key, label) of every policy, learned arms first."""
    scores = outcomes[0].scores
    first = [k for k in scores if k not in ("bba", "rate", "mpc", "pool")]
    return [(k, scores[k].arm.label) for k in first + ["mpc", "rate", "bba", "pool"]]


def qoe_figure(outcomes):
    import plotly.graph_objects as go

    fig = go.Figure()
    for j, split in enumerate(("test", "unseen")):
        names, means, lows, highs = [], [], [], []
        for key, label in _order(outcomes):
            iv = Interval.of([float(o.scores[key].split(split).mean()) for o in outcomes])
            names.append(label)
            means.append(iv.mean)
            lows.append(iv.mean - iv.low)
            highs.append(iv.high - iv.mean)
        fig.add_trace(
            go.Bar(
                x=names,
                y=means,
                name=SPLIT_NAMES[split],
                marker_color=viz.PALETTE[j],
                error_y={"type": "data", "symmetric": False, "array": highs, "arrayminus": lows, "visible": True},
            )
        )
    best = [o.best_rule for o in outcomes]
    fig.update_layout(
        barmode="group",
        title=f"QoE per chunk, mean over {len(outcomes)} seeds with 95% intervals (best rule on validation: "
        f"{', '.join(best)})",
        yaxis_title="QoE per chunk (Mbit/s − 4.3·stall − |Δ bitrate|)",
        template="plotly_white",
        height=420,
    )
    return fig


def terms_figure(outcomes):
    import plotly.graph_objects as go

    keys = [(k, label) for k, label in _order(outcomes) if k != "pool"]
    terms = {
        "bitrate": ("bitrate", 1.0),
        "−4.3 · stall": ("rebuffer_penalty", -1.0),
        "−|Δ bitrate|": ("smooth_penalty", -1.0),
    }
    fig = go.Figure()
    for j, (name, (field, sign)) in enumerate(terms.items()):
        values = [sign * float(np.mean([getattr(o.scores[k], field) for o in outcomes])) for k, _ in keys]
        fig.add_trace(go.Bar(x=[label for _, label in keys], y=values, name=name, marker_color=viz.PALETTE[j + 2]))
    fig.update_layout(
        barmode="relative",
        title="The QoE's three terms on test traces (mean per chunk over traces and seeds)",
        yaxis_title="Mbit/s",
        template="plotly_white",
        height=400,
    )
    return fig


def episode_figure(view, seed: int):
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(
        rows=3,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.07,
        subplot_titles=["throughput of the trace (Mbit/s)", "bitrate chosen (Mbit/s)", "buffer (s)"],
    )
    end = max(float(t[-1]) for t in view.time_s.values())
    n = int(np.ceil(end)) + 1
    fig.add_trace(
        go.Scatter(x=np.arange(n), y=view.throughput_mbps[:n], line={"color": "grey", "shape": "hv"}, name="trace"),
        row=1,
        col=1,
    )
    colours = {"netllm": viz.PALETTE[0], "bba": viz.PALETTE[1]}
    names = {"netllm": "NetLLM", "bba": "BBA"}
    for key, t in view.time_s.items():
        label = f"{names.get(key, key)} (QoE {view.qoe[key]:.2f})"
        style = {"color": colours.get(key), "shape": "hv"}
        fig.add_trace(go.Scatter(x=t, y=view.bitrate_mbps[key], line=style, name=label, legendgroup=key), row=2, col=1)
        fig.add_trace(
            go.Scatter(x=t, y=view.buffer_s[key], line={"color": colours.get(key)}, showlegend=False, legendgroup=key),
            row=3,
            col=1,
        )
    fig.update_xaxes(title_text="time in the session (s)", row=3, col=1)
    fig.update_layout(
        title=f"One test session (seed {seed}): NetLLM against BBA on the same trace",
        template="plotly_white",
        height=620,
    )
    return fig


def parameters_figure(outcome, arms):
    import plotly.graph_objects as go

    labels = [a.label for a in arms]
    fig = go.Figure(
        [
            go.Bar(x=labels, y=[outcome.total_params[a.key] for a in arms], name="all parameters"),
            go.Bar(x=labels, y=[outcome.trainable[a.key] for a in arms], name="trainable"),
        ]
    )
    fig.update_layout(
        barmode="group",
        title="Parameters: all vs trainable (LoRA + encoder + head; the LM itself is frozen)",
        template="plotly_white",
        height=380,
    )
    return fig
