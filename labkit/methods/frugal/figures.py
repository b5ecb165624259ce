"""FRUGAL's figures: pure functions from a run's Result to plotly figures (plotly is imported inside the functions,
by labkit.viz and here)."""

from __future__ import annotations

import numpy as np

from labkit import viz


def make_figures(result) -> dict:
    """Validation loss per arm; measured optimizer state next to the formula; the share of the gradient in the
    state-full subspace over training (refreshes marked); with the sweep, every arm's curve and the Pareto of
    final loss against state memory."""
    hist, x = result.history, result.extras
    runs = x["arms"]
    main = [r for r in runs if r.spec.main]
    floor = float(np.mean(x["floor"]))
    figs = {
        "val_loss": loss_figure(hist, [r.arm.label for r in main], floor, "Validation loss (mean ± std over seeds)")
    }
    figs["state_memory"] = state_figure(runs)
    figs["subspace_share"] = share_figure(main, x["update_gap"])
    if len(runs) > len(main):
        figs["val_loss_all"] = loss_figure(hist, [r.arm.label for r in runs], floor, "Validation loss, every arm")
        figs["pareto"] = pareto_figure(runs)
    return figs


def loss_figure(hist, names, floor: float, title: str):
    fig = viz.curves(hist, "val_loss", series=names, title=title, ylabel="cross-entropy (nats/token)")
    fig.add_hline(y=floor, line_dash="dot", annotation_text="the chain's floor")
    return fig


def state_figure(runs):
    """Measured bytes of each optimizer's state tensors (peak over training, mean over seeds) and the formula."""
    import plotly.graph_objects as go

    names = [r.arm.label for r in runs]
    measured = [float(np.mean(r.state_bytes)) / 1e3 for r in runs]
    formula = [r.formula.bytes / 1e3 for r in runs]
    fig = go.Figure(
        [
            go.Bar(
                x=names, y=measured, name="measured (sum of the state tensors)", text=[f"{m:.1f}" for m in measured]
            ),
            go.Bar(x=names, y=formula, name="formula (2N floats; moments + projectors)", opacity=0.6),
        ]
    )
    fig.update_layout(
        title="Optimizer state each arm really holds (kB, fp32)",
        yaxis_title="kB",
        barmode="group",
        template="plotly_white",
        height=400,
        margin={"l": 60, "r": 20, "t": 50, "b": 80},
    )
    return fig


def share_figure(runs, update_gap: int):
    """‖down(G)‖/‖G‖ over the projectable weights at every step, mean over seeds, refreshes dotted."""
    with_share = [r for r in runs if r.share is not None]
    n_steps = with_share[0].share.shape[1] if with_share else 0
    steps = np.arange(1, n_steps + 1)
    fig = viz.lines(
        steps,
        {r.arm.label: r.share.mean(0) for r in with_share},
        title=f"Share of the gradient norm in the state-full subspace (a new subspace every T = {update_gap} steps)",
        xlabel="step",
        ylabel="‖down(G)‖ / ‖G‖",
    )
    for k in range(0, n_steps, update_gap):
        fig.add_vline(x=k + 1, line_dash="dot", line_color="grey", opacity=0.5)
    return fig


def pareto_figure(runs):
    """Final validation loss against measured state (kB): the FRUGAL and GaLore-style curves over ρ (svd), and
    AdamW, signSGD and the other variants as points."""
    import plotly.graph_objects as go

    def point(r):
        return float(np.mean(r.state_bytes)) / 1e3, float(np.mean(r.val_loss))

    fig = go.Figure()
    colours = viz.color_map(["frugal", "galore", "other"])
    for curve, name in (("frugal", "FRUGAL"), ("galore", "GaLore-style")):
        members = sorted((r for r in runs if r.spec.curve == curve), key=lambda r: r.spec.rho)
        xy = [point(r) for r in members]
        fig.add_trace(
            go.Scatter(
                x=[a for a, _ in xy],
                y=[b for _, b in xy],
                mode="lines+markers+text",
                text=[f"ρ={r.spec.rho:g}" for r in members],
                textposition="top center",
                name=f"{name} over ρ",
                line={"color": colours[curve]},
            )
        )
    others = [r for r in runs if not r.spec.curve]
    xy = [point(r) for r in others]
    fig.add_trace(
        go.Scatter(
            x=[a for a, _ in xy],
            y=[b for _, b in xy],
            mode="markers+text",
            text=[r.arm.label for r in others],
            textposition="bottom center",
            name="other arms",
            marker={"color": colours["other"], "size": 9},
        )
    )
    fig.update_layout(
        title="Final validation loss against optimizer state (lower left is better)",
        xaxis_title="measured state (kB)",
        yaxis_title="val loss (nats/token)",
        template="plotly_white",
        height=420,
        margin={"l": 60, "r": 20, "t": 50, "b": 50},
    )
    return fig
