"""TempNet's figures: pure functions from a run's Result to plotly figures (plotly is imported inside the functions,
by labkit.viz and here)."""

from __future__ import annotations

import numpy as np

from labkit import viz


def make_figures(result) -> dict:
    """τ on factual vs creative contexts (histogram, and against τ*), the DRO loss and the tempered NLL over training
    per arm, TempNet's median τ over training, the loss of every single τ (the U-curve), the DRO weights on a batch,
    two tempered next-token distributions, and the ρ sweep and joint variant when they ran."""
    hist, x = result.history, result.extras
    data = x["figure_data"]
    temps = x["temperatures"]
    figs = {
        "tau_hist": tau_histogram(data),
        "tau_scatter": tau_scatter(data),
        "robust_loss": viz.curves(
            hist, "robust_loss", title="Held-out DRO loss over training (mean ± std over seeds)", ylabel="E L_DRO"
        ),
        "nll_excess": viz.curves(
            hist,
            "nll_excess",
            title="Held-out excess NLL of the tempered model softmax(h/τ): the DRO τ is not a calibration τ",
            ylabel="KL(p ‖ softmax(h/τ)) (nats)",
        ),
        "median_tau": median_tau_figure(hist, temps),
        "u_curve": u_curve(data, temps[0]),
        "dro_weights": dro_weights_figure(data),
        "tempered": tempered_figure(data),
    }
    if x["sweep"]:
        figs["rho_sweep"] = rho_sweep_figure(x["sweep"])
    if x["joint"]:
        figs["joint"] = viz.curves(
            hist,
            "lm_nll_excess",
            title="Joint variant: held-out excess NLL of the LM over training",
            ylabel="KL(p ‖ model) (nats)",
        )
    return figs


def tau_histogram(data):
    """Predicted τ on held-out factual and creative contexts (filled), the oracle τ* (outlined)."""
    import plotly.graph_objects as go

    factual = np.asarray(data.factual)
    net, star = np.asarray(data.tau_tempnet), np.asarray(data.tau_oracle)
    fig = go.Figure()
    colours = {"factual": viz.PALETTE[0], "creative": viz.PALETTE[1]}
    for kind, mask in (("factual", factual), ("creative", ~factual)):
        fig.add_trace(
            go.Histogram(x=net[mask], name=f"TempNet τ, {kind}", marker_color=colours[kind], opacity=0.6, nbinsx=40)
        )
        fig.add_trace(
            go.Histogram(
                x=star[mask],
                name=f"oracle τ*, {kind}",
                marker={"color": "rgba(0,0,0,0)", "line": {"color": colours[kind], "width": 1.5}},
                nbinsx=40,
            )
        )
    fig.update_layout(
        barmode="overlay",
        title="τ on held-out contexts, first seed: TempNet (filled) and the oracle τ* (outlined)",
        xaxis_title="τ",
        yaxis_title="contexts",
        template="plotly_white",
        height=380,
    )
    return fig


def tau_scatter(data):
    """τ_TempNet against τ* per held-out context, with the diagonal."""
    factual = np.asarray(data.factual)
    net, star = np.asarray(data.tau_tempnet), np.asarray(data.tau_oracle)
    fig = viz.lines([], {}, title="TempNet's τ against the per-input optimum τ* (first seed)", xlabel="τ*", ylabel="τ")
    import plotly.graph_objects as go

    for kind, mask, colour in (("factual", factual, viz.PALETTE[0]), ("creative", ~factual, viz.PALETTE[1])):
        fig.add_trace(
            go.Scatter(x=star[mask], y=net[mask], mode="markers", name=kind, marker={"color": colour, "size": 4})
        )
    lo, hi = float(min(net.min(), star.min())), float(max(net.max(), star.max()))
    fig.add_trace(
        go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", name="τ = τ*", line={"dash": "dot", "color": "gray"})
    )
    return fig


def median_tau_figure(hist, temps):
    """TempNet's median τ on factual and creative held-out contexts over training; the oracle's as dotted lines."""
    fig = viz.curves(
        hist, "median_tau", title="TempNet's median τ over training (dotted: the oracle τ*)", ylabel="median τ"
    )
    colours = viz.color_map(["TempNet, factual", "TempNet, creative"])
    fig.add_hline(
        y=float(np.mean([t.oracle_median_factual for t in temps])),
        line_dash="dot",
        line_color=colours["TempNet, factual"],
        annotation_text="τ* factual",
    )
    fig.add_hline(
        y=float(np.mean([t.oracle_median_creative for t in temps])),
        line_dash="dot",
        line_color=colours["TempNet, creative"],
        annotation_text="τ* creative",
    )
    return fig


def u_curve(data, first):
    """Held-out DRO loss of every single τ (U-shaped, convex), with TempNet and the oracle as horizontal lines."""
    fig = viz.lines(
        list(data.grid),
        {"one τ for every context": list(data.grid_loss)},
        mode="lines+markers",
        title="Held-out DRO loss of a single global τ (first seed)",
        xlabel="τ (log axis)",
        ylabel="E L_DRO",
    )
    grid, loss = np.asarray(data.grid), np.asarray(data.grid_loss)
    low, best = first.loss["oracle"], float(loss.min())
    top = max(float(loss[0]), best + 1.0)  # the right arm climbs steeply: keep the bottom of the U readable
    fig.update_xaxes(type="log", range=[np.log10(grid[0]), np.log10(grid[-1])])
    fig.update_yaxes(range=[low - 0.1 * (top - low), top])
    fig.add_hline(
        y=first.loss["tempnet"],
        line_dash="dash",
        line_color=viz.PALETTE[1],
        annotation_text="TempNet",
        annotation_position="top left",
    )
    fig.add_hline(
        y=low, line_dash="dot", line_color="black", annotation_text="oracle τ*(x)", annotation_position="bottom right"
    )
    fig.add_vline(x=data.tau_grid, line_dash="dot", line_color="gray", annotation_text="best single τ (training)")
    return fig


def dro_weights_figure(data):
    """The worst-case distribution p = softmax(h/τ) over the vocabulary for a batch of held-out contexts (factual
    on top, creative below), at τ = 1 and at TempNet's τ."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    rows = [f"({a},{b}) τ={t:.2f}" for (a, b), t in zip(data.batch_contexts, data.batch_tau)]
    fig = make_subplots(rows=1, cols=2, subplot_titles=("softmax(h), τ = 1", "softmax(h/τ), TempNet's τ"))
    for col, weights in ((1, data.batch_weights_tau1), (2, data.batch_weights)):
        fig.add_trace(
            go.Heatmap(z=np.asarray(weights), y=rows, colorscale="Viridis", zmin=0, zmax=1, showscale=col == 2),
            row=1,
            col=col,
        )
    fig.update_yaxes(autorange="reversed")
    fig.update_xaxes(title_text="next token")
    fig.update_layout(
        title="DRO weights on a batch (first half factual, second half creative contexts)",
        template="plotly_white",
        height=460,
    )
    return fig


def tempered_figure(data):
    """The true next-token distribution, the frozen model's and TempNet's tempered one, for the batch's first
    factual and first creative context."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    n = len(data.batch_contexts) // 2
    picks = (0, n)
    titles = [f"{kind} context {data.batch_contexts[i]}" for kind, i in zip(("factual", "creative"), picks)]
    fig = make_subplots(rows=1, cols=2, subplot_titles=titles)
    colours = viz.color_map(["true p", "softmax(h)", "softmax(h/τ)"])
    for col, i in enumerate(picks, start=1):
        series = {
            "true p": data.true_probs[i],
            "softmax(h)": data.batch_weights_tau1[i],
            "softmax(h/τ)": data.batch_weights[i],
        }
        for name, y in series.items():
            fig.add_trace(
                go.Scatter(
                    y=list(y),
                    mode="lines",
                    name=name if col == 1 else None,
                    showlegend=col == 1,
                    line={"color": colours[name], "dash": "dot" if name == "true p" else None},
                ),
                row=1,
                col=col,
            )
    fig.update_xaxes(title_text="next token")
    fig.update_layout(title="Tempered next-token distributions (τ from TempNet)", template="plotly_white", height=380)
    return fig


def rho_sweep_figure(sweep):
    """Median τ on factual and creative contexts against ρ, TempNet (solid) and the oracle (dotted)."""
    rhos = sorted({t.rho for t in sweep})

    def mean_of(name):
        return [float(np.mean([getattr(t, name) for t in sweep if t.rho == r])) for r in rhos]

    fig = viz.lines(
        rhos,
        {
            "TempNet, factual": mean_of("median_factual"),
            "TempNet, creative": mean_of("median_creative"),
            "τ*, factual": mean_of("oracle_median_factual"),
            "τ*, creative": mean_of("oracle_median_creative"),
        },
        mode="lines+markers",
        title="Median τ against the KL budget ρ (mean over seeds): a larger ρ allows a sharper worst case",
        xlabel="ρ",
        ylabel="median τ",
    )
    for trace in fig.data:
        if trace.name.startswith("τ*"):
            trace.line.dash = "dot"
    return fig
