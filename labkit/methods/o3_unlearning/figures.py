"""O3's figures: pure functions from a run's Result to plotly figures (plotly is imported inside the functions,
by labkit.viz and here)."""

from __future__ import annotations

import numpy as np

from labkit import viz


def make_figures(result) -> dict:
    """Forget and retained accuracy after each request per arm, the accuracy of each forgotten class under O3,
    histograms of w(x), the weight curve w(u) of the first detector, and the adapters' overlap ‖A_i A_jᵀ‖_F."""
    hist, x = result.history, result.extras
    figs = {
        "forget_acc": accuracy_figure(
            hist, "forget_acc", "Accuracy on the forgotten classes (test), after each request"
        ),
        "retained_acc": accuracy_figure(hist, "retained_acc", "Accuracy on the retained classes (test)"),
        "forget_per_class": per_class_figure(x["seeds"]),
        "weights": weight_histograms(x["seeds"]),
        "weight_curve": weight_curve(x["seeds"][0].detectors[0]),
        "overlap": overlap_figure(x["seeds"][0]),
    }
    return figs


def accuracy_figure(hist, metric: str, title: str):
    fig = viz.curves(hist, metric, title=title + " — mean ± std over seeds", xlabel="request", ylabel="accuracy")
    for trace in fig.data:  # with few points plotly draws markers on the band's outline too: lines only
        trace.mode = "lines+markers" if trace.fill is None else "lines"
    fig.update_xaxes(dtick=1)
    fig.update_yaxes(range=[0, 1.02])
    return fig


def per_class_figure(seeds):
    """O3's accuracy on each forgotten class after each request (mean over seeds): does a later adapter undo an
    earlier one?"""
    import plotly.graph_objects as go

    evals = [e for s in seeds for e in s.evals if e.arm == "o3"]
    n_req = max(e.request for e in evals)
    fig = viz.lines([], {}, title="O3: accuracy on each forgotten class after each request (mean over seeds)",
                    xlabel="request", ylabel="accuracy")  # fmt: skip
    for c in range(n_req):
        steps = list(range(c + 1, n_req + 1))
        means = [float(np.mean([e.forget_class_acc[c] for e in evals if e.request == t])) for t in steps]
        fig.add_trace(go.Scatter(x=steps, y=means, mode="lines+markers", name=f"class {c}",
                                 line={"color": viz.PALETTE[c % len(viz.PALETTE)]}))  # fmt: skip
    fig.update_xaxes(dtick=1)
    fig.update_yaxes(range=[0, 1.02])
    return fig


def weight_histograms(seeds):
    """w(x) = max_t w_t(x) after the last request on the test images, forgotten vs retained classes (all seeds)."""
    import plotly.graph_objects as go

    fig = go.Figure()
    groups = {
        "forgotten classes": np.concatenate([s.w_forget for s in seeds]),
        "retained classes": np.concatenate([s.w_retained for s in seeds]),
    }
    for i, (name, w) in enumerate(groups.items()):
        fig.add_trace(go.Histogram(x=w, name=name, histnorm="probability", xbins={"start": 0, "end": 1.0, "size": 0.02},
                                   marker_color=viz.PALETTE[i], opacity=0.6))  # fmt: skip
    fig.update_layout(
        barmode="overlay",
        title="Soft weight w(x) after the last request (test images, all seeds)",
        xaxis_title="w(x)",
        yaxis_title="share of images",
        template="plotly_white",
        height=380,
    )
    return fig


def weight_curve(report):
    """The first detector's w(u) with the two fitted Gaussians, over histograms of u (test images), on a window
    around the forget scores (retained images further left all get the floor weight)."""
    import plotly.graph_objects as go
    from scipy.stats import norm

    wf = report.weight
    u_f, u_r = np.asarray(report.u_forget), np.asarray(report.u_retained)
    lo = min(float(np.percentile(u_f, 2)), wf.m2 - 5 * wf.sigma)
    hi = max(float(u_f.max()), wf.m1 + 3 * wf.sigma)
    grid = np.linspace(lo, hi, 400)
    left = float(np.mean(u_r < lo))
    fig = go.Figure()
    bins = {"start": lo, "end": hi, "size": (hi - lo) / 60}
    for i, (name, u) in enumerate({"u, forget class (test)": u_f, "u, retained classes (test)": u_r}.items()):
        fig.add_trace(go.Histogram(x=u[(u >= lo) & (u <= hi)], name=name, xbins=bins, opacity=0.45,
                                   marker_color=viz.PALETTE[i], yaxis="y2"))  # fmt: skip
    fig.add_trace(go.Scatter(x=grid, y=wf(grid), mode="lines", name="w(u)", line={"color": "black", "width": 3}))
    for name, mean, dash in (("N(m1, σ2): forget-train", wf.m1, "dash"), ("N(m2, σ2): forget-held-out", wf.m2, "dot")):
        dens = norm.pdf(grid, mean, wf.sigma)
        fig.add_trace(go.Scatter(x=grid, y=dens / dens.max(), mode="lines", name=name,
                                 line={"color": "gray", "dash": dash}))  # fmt: skip
    fig.update_layout(
        title=f"Detector {report.request}: w(u) and the two Gaussians (peaks scaled to 1), AUROC {report.auroc:.3f}"
        f"<br><sup>{left:.0%} of the retained test images score left of this window (w at its floor)</sup>",
        xaxis={"title": "similarity score u(x)", "range": [lo, hi]},
        yaxis={"title": "w(u)", "range": [0, 1.05]},
        yaxis2={"overlaying": "y", "side": "right", "showgrid": False, "title": "images per bin"},
        legend={"orientation": "h", "y": -0.25},
        barmode="overlay",
        template="plotly_white",
        height=460,
    )
    return fig


def overlap_figure(seed):
    """Heat maps of sqrt(Σ_layers ‖A_i A_jᵀ‖_F²) between the adapters, with and without the orthogonal term."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    mats = {"with the orthogonal term (O3)": seed.overlap, "without it (λ_o = 0)": seed.overlap_free}
    fig = make_subplots(rows=1, cols=2, subplot_titles=list(mats))
    top = max(float(np.max(m)) for m in mats.values())
    names = [f"A_{i + 1}" for i in range(len(seed.overlap))]
    for col, m in enumerate(mats.values(), start=1):
        fig.add_trace(go.Heatmap(z=m, x=names, y=names, zmin=0, zmax=top, colorscale="Viridis",
                                 text=np.round(m, 2), texttemplate="%{text}", showscale=col == 2), 1, col)  # fmt: skip
        fig.update_yaxes(autorange="reversed", row=1, col=col)
    fig.update_layout(title=f"‖A_i A_jᵀ‖_F between the adapters (seed {seed.seed})", template="plotly_white",
                      height=380)  # fmt: skip
    return fig
