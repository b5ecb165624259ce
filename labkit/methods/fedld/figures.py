"""FedLD's figures: the loss decomposition per round, test accuracy, confidence, per-client accuracy and the
inside of the principal aggregation (update cosine and length vs FedAvg, eigenvalue spectrum)."""

from __future__ import annotations

import numpy as np

from labkit import viz


def decomposition_figure(history, arms: list[str]):
    """Four stacked panels (rows share the round axis): L(w_glob) and its three terms, one line per arm."""
    from plotly.subplots import make_subplots

    panels = [
        ("loss_global", "L(w_glob)"),
        ("loss_local", "local Σ p_i L_i(w_i)"),
        ("loss_shift", "distribution shift"),
        ("loss_agg", "aggregation"),
    ]
    fig = make_subplots(rows=4, cols=1, shared_xaxes=True, subplot_titles=[t for _, t in panels], vertical_spacing=0.06)
    for row, (metric, _) in enumerate(panels, start=1):
        for trace in viz.curves(history, metric, series=arms).data:
            trace.showlegend = row == 1 and trace.showlegend is not False
            fig.add_trace(trace, row=row, col=1)
    fig.update_layout(
        title="Loss decomposition per round (mean ± std over seeds)",
        template="plotly_white",
        height=900,
        margin={"l": 60, "r": 20, "t": 70, "b": 50},
    )
    fig.update_xaxes(title_text="round", row=4, col=1)
    return fig


def make_figures(result) -> dict:
    """Decomposition, test accuracy, confidence, per-client accuracy, spectrum and update cosine / length."""
    h, ex = result.history, result.extras
    arms = ex["arms"]
    labels = [a.label for a in arms]
    per_client = {a.label: np.mean([o.per_client for o in ex["outcomes"][a.key]], axis=0).tolist() for a in arms}
    figs = {
        "decomposition": decomposition_figure(h, labels),
        "test_acc": viz.curves(
            h, "test_acc", series=labels, title="Global test accuracy", xlabel="round", ylabel="accuracy"
        ),
        "confidence": viz.curves(
            h,
            "confidence",
            series=labels,
            xlabel="round",
            ylabel="mean ‖softmax‖²",
            title="Confidence of local models on their own data",
        ),
        "per_client_acc": viz.lines(
            list(range(len(per_client[labels[0]]))),
            per_client,
            mode="lines+markers",
            xlabel="client",
            ylabel="accuracy",
            title="Final global model, accuracy seen by each client (mean over seeds)",
        ),
    }
    principal = [a.label for a in arms if a.principal]
    if principal:
        figs["update_cosine"] = viz.curves(
            h,
            "cos_fedavg",
            series=principal,
            xlabel="round",
            ylabel="cosine",
            title="cos(principal update, FedAvg update) on the same client updates",
        )
        figs["update_norm_ratio"] = viz.curves(
            h,
            "norm_ratio",
            series=principal,
            xlabel="round",
            ylabel="‖principal‖ / ‖FedAvg‖",
            title="Update length vs FedAvg",
        )
    spec = ex.get("spectrum", {})
    if spec:
        n = len(next(iter(spec.values())))
        figs["spectrum"] = viz.lines(
            list(range(1, n + 1)),
            {f"round {r}": v for r, v in spec.items()},
            mode="lines+markers",
            xlabel="j",
            ylabel="s_j / Σ s",
            title=f"Eigenvalue shares of H = GGᵀ/m for {ex['spectrum_tensor']} (FedLD, first seed)",
        )
    return figs
