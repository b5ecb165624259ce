"""TLOB's figures: pure functions from a run's Result to plotly figures (plotly is imported inside the functions,
by labkit.viz and here)."""

from __future__ import annotations

import numpy as np

from labkit import viz

CLASS_NAMES = ("down", "stationary", "up")


def make_figures(result) -> dict:
    """One input window, label shares and the horizon-bias probe, macro-F1 against h, TLOB's confusion matrix,
    its attention by regime, the validation curves."""
    x = result.extras
    figs = {}
    if x.get("example") is not None:
        figs["window"] = window_figure(x["example"])
    figs["label_shares"] = label_shares_figure(x["probe"])
    figs["probe"] = probe_figure(x["probe"])
    figs["f1_vs_horizon"] = f1_figure(x["scores"], x["spread"])
    figs["confusion"] = confusion_figure(x["scores"], x["spread"].horizon)
    if x.get("attention") is not None:
        figs["attention"] = attention_figure(x["attention"])
    figs["val_f1"] = viz.curves(result.history, "val_macro_f1", title="Validation macro-F1 per epoch", xlabel="epoch")
    return figs


def window_figure(example):
    """The mid-price over the window and the horizon (top) above the window's standardised features (bottom)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from labkit.substrates.lob import feature_names

    t = np.arange(len(example.mid)) - (example.seq_len - 1)
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.3, 0.7], vertical_spacing=0.04)
    fig.add_trace(go.Scatter(x=t, y=example.mid, mode="lines", name="mid-price (ticks)"), row=1, col=1)
    fig.add_vline(x=0, line_dash="dot")
    fig.add_trace(
        go.Heatmap(
            z=example.window.T,
            x=t[: example.seq_len],
            y=feature_names(),
            colorscale="RdBu",
            zmid=0,
            colorbar={"title": "z"},
        ),
        row=2,
        col=1,
    )
    fig.update_layout(
        title=f"One window (T = {example.seq_len}) and the next h = {example.horizon} events; label: "
        f"{CLASS_NAMES[example.label]}",
        template="plotly_white",
        height=620,
        showlegend=False,
    )
    fig.update_xaxes(title_text="event (0 = the window's last)", row=2, col=1)
    return fig


def label_shares_figure(probe):
    """Share of stationary labels against h: classic labels, TLOB's, and TLOB's with θ = average spread."""
    hs = [r.horizon for r in probe]
    return viz.lines(
        hs,
        {
            "classic (θ = mean|ℓ|/2)": [r.shares_classic[1] for r in probe],
            "TLOB (θ = mean|ℓ|/2)": [r.shares_tlob[1] for r in probe],
            "TLOB (θ = spread)": [r.shares_spread[1] for r in probe],
        },
        mode="lines+markers",
        title="Share of 'stationary' labels on the training split (mean over seeds)",
        xlabel="horizon h (events)",
        ylabel="share stationary",
    )


def probe_figure(probe):
    """Agreement of each labelling's sign with the late move m(t+h) − m(t+h/4), against h."""
    hs = [r.horizon for r in probe]
    return viz.lines(
        hs,
        {"classic labels": [np.mean(r.classic) for r in probe], "TLOB labels": [np.mean(r.tlob) for r in probe]},
        mode="lines+markers",
        title="Horizon-bias probe: does the label describe the move at the horizon?",
        xlabel="horizon h (events)",
        ylabel="agreement with sign of m(t+h) − m(t+h/4)",
    )


def f1_figure(scores, spread):
    """Test macro-F1 (mean over seeds) against h for every model, and the spread-threshold arm."""
    models = list(dict.fromkeys(s.model for s in scores))
    hs = sorted({s.horizon for s in scores})
    by = {(s.model, s.horizon): np.mean(s.f1) for s in scores}
    fig = viz.lines(
        hs,
        {m: [by[m, h] for h in hs] for m in models},
        mode="lines+markers",
        title="Test macro-F1 against the horizon (mean over seeds)",
        xlabel="horizon h (events)",
        ylabel="macro-F1",
    )
    import plotly.graph_objects as go

    fig.add_trace(
        go.Scatter(
            x=[spread.horizon],
            y=[np.mean(spread.f1_spread)],
            mode="markers",
            marker_symbol="x",
            marker_size=12,
            name=f"{spread.model}, θ = spread",
        )
    )
    return fig


def confusion_figure(scores, horizon):
    """TLOB's test confusion matrix at the claim horizon, summed over seeds, normalised by row."""
    import plotly.graph_objects as go

    s = next(s for s in scores if s.model == "TLOB" and s.horizon == horizon)
    m = np.asarray(s.confusion, float)
    rows = m / np.maximum(m.sum(1, keepdims=True), 1)
    fig = go.Figure(
        go.Heatmap(
            z=rows,
            x=list(CLASS_NAMES),
            y=list(CLASS_NAMES),
            colorscale="Blues",
            zmin=0,
            zmax=1,
            text=np.round(rows, 2),
            texttemplate="%{text}",
        )
    )
    fig.update_layout(
        title=f"TLOB, h = {horizon}: share of each true class (rows) predicted as each class",
        xaxis_title="predicted",
        yaxis_title="true",
        template="plotly_white",
        height=380,
    )
    return fig


def attention_figure(maps):
    """First temporal attention (T × T) and first feature attention (D × D) of TLOB, per regime."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    titles = ("temporal, regime 0", "temporal, regime 1 (mean-reverting)", "feature, regime 0", "feature, regime 1")
    fig = make_subplots(rows=2, cols=2, subplot_titles=titles, vertical_spacing=0.12)
    for col, r in enumerate((0, 1), start=1):
        fig.add_trace(go.Heatmap(z=maps.temporal[r], coloraxis="coloraxis"), row=1, col=col)
        fig.add_trace(go.Heatmap(z=maps.feature[r], coloraxis="coloraxis2"), row=2, col=col)
    fig.update_layout(
        title="TLOB attention (first pair, first seed), averaged over heads and test windows; rows = queries",
        template="plotly_white",
        height=720,
        coloraxis={"colorscale": "Viridis", "colorbar": {"y": 0.78, "len": 0.4}},
        coloraxis2={"colorscale": "Viridis", "colorbar": {"y": 0.22, "len": 0.4}},
    )
    for i in range(1, 5):
        fig.update_yaxes(autorange="reversed", row=(i - 1) // 2 + 1, col=(i - 1) % 2 + 1)
    return fig
