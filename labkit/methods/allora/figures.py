"""ALLoRA's figures: pure functions from a run's Result to plotly figures (plotly is imported inside the functions,
by labkit.viz and here)."""

from __future__ import annotations

import numpy as np

from labkit import viz

#: the η values of the multiplier figure (the run's η is added)
ETAS = (0.5, 1.0, 2.0, 4.0, 8.0)


def make_figures(result) -> dict:
    """Test MSE at the matched lr, the lr grid (one panel per lr), ‖A‖ and ‖B‖ per layer, Σ‖ΔW‖_F, and c(θ)."""
    hist, arms = result.history, result.extras["arms"]
    matched = [arms[k].arm.label for k in ("lora", "lora_nodrop", "dora", "allora")]
    pair = [arms["lora"].arm.label, arms["allora"].arm.label]
    figs = {
        "test_mse": log_y(
            viz.curves(hist, "test_mse", series=matched, title="Test MSE at the same lr (log y; mean ± std over seeds)")
        ),
        "lr_grid": lr_grid_figure(hist, arms),
        "adapter_norms": norms_figure(hist, pair, result.extras["n_layers"]),
        "delta_norm": viz.curves(
            hist,
            "delta_norm",
            series=matched,
            title="Σ over layers of ‖ΔW‖_F: how far the adapters have left zero",
            ylabel="Σ ‖ΔW‖_F",
        ),
        "multiplier": multiplier_figure(sorted({*ETAS, float(result.extras["eta"])})),
    }
    return figs


def log_y(fig):
    fig.update_yaxes(type="log")
    return fig


def lr_grid_figure(hist, arms):
    """One panel per lr of the grid: LoRA and ALLoRA test MSE vs step (log y)."""
    from plotly.subplots import make_subplots

    pairs = [(arms["lora" + s], arms["allora" + s]) for s in ("_lo", "", "_hi")]
    fig = make_subplots(rows=1, cols=3, shared_yaxes=True, subplot_titles=[f"lr = {a.spec.lr:.2g}" for a, _ in pairs])
    colours = {"LoRA": viz.PALETTE[0], "ALLoRA": viz.PALETTE[3]}
    for col, (lora, allora) in enumerate(pairs, start=1):
        for name, arm in (("LoRA", lora), ("ALLoRA", allora)):
            rows = hist[(hist["metric"] == "test_mse") & (hist["series"] == arm.arm.label)]
            mean = rows.groupby("step")["value"].mean()
            fig.add_trace(
                {
                    "type": "scatter",
                    "x": list(mean.index),
                    "y": list(mean.values),
                    "mode": "lines",
                    "name": name,
                    "line": {"color": colours[name]},
                    "legendgroup": name,
                    "showlegend": col == 1,
                },
                row=1,
                col=col,
            )
    fig.update_yaxes(type="log")
    fig.update_layout(
        title="LoRA vs ALLoRA on the lr grid: test MSE (log y, mean over seeds)",
        template="plotly_white",
        height=380,
        margin={"l": 60, "r": 20, "t": 70, "b": 50},
    )
    return fig


def norms_figure(hist, labels, n_layers: int):
    """‖A‖_F (top) and ‖B‖_F (bottom) of each layer vs step, for LoRA and ALLoRA at the same lr."""
    from plotly.subplots import make_subplots

    fig = make_subplots(
        rows=2,
        cols=n_layers,
        shared_xaxes=True,
        subplot_titles=[f"‖{m}‖_F, layer {i + 1}" for m in "AB" for i in range(n_layers)],
    )
    colours = viz.color_map(labels)
    for r, m in enumerate("AB", start=1):
        for i in range(n_layers):
            for label in labels:
                rows = hist[(hist["metric"] == f"norm_{m}_{i}") & (hist["series"] == label)]
                mean = rows.groupby("step")["value"].mean()
                fig.add_trace(
                    {
                        "type": "scatter",
                        "x": list(mean.index),
                        "y": list(mean.values),
                        "mode": "lines",
                        "name": label,
                        "line": {"color": colours[label]},
                        "legendgroup": label,
                        "showlegend": r == 1 and i == 0,
                    },
                    row=r,
                    col=i + 1,
                )
    fig.update_layout(
        title="Adapter norms per layer (B starts at 0; mean over seeds)",
        template="plotly_white",
        height=520,
        margin={"l": 60, "r": 20, "t": 70, "b": 50},
    )
    return fig


def multiplier_figure(etas):
    """c(θ) = 1/sqrt(‖θ‖² + 1/η²) against ‖θ‖ (log–log), with the 1/‖θ‖ asymptote."""
    norm = np.logspace(-3, 2, 200)
    ys = {f"η = {eta:g}": 1.0 / np.sqrt(norm**2 + 1.0 / eta**2) for eta in etas}
    ys["1/‖θ‖"] = 1.0 / norm
    fig = viz.lines(
        norm.tolist(),
        {k: v.tolist() for k, v in ys.items()},
        title="ALLoRA's multiplier c(θ): η while θ is small, 1/‖θ‖ once it has grown",
        xlabel="‖θ‖₂",
        ylabel="c(θ)",
    )
    fig.update_traces(line={"dash": "dot", "color": "grey"}, selector={"name": "1/‖θ‖"})
    fig.update_xaxes(type="log")
    fig.update_yaxes(type="log", range=[-2.2, 1.2])
    return fig
