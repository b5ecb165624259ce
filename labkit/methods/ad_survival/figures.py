"""Ad survival's figures: pure functions from a run's Result to plotly figures (plotly is imported inside the
functions, by labkit.viz and here)."""

from __future__ import annotations

import numpy as np

from labkit import viz


def kaplan_meier(time, event, days: int) -> np.ndarray:
    """The Kaplan–Meier estimate Ŝ(d) for d = 1..days: Π_{t ≤ d} (1 − stops on day t / at risk on day t)."""
    time, event = np.asarray(time), np.asarray(event, bool)
    surv, s = np.empty(days), 1.0
    for d in range(1, days + 1):
        at_risk = np.sum(time >= d)
        if at_risk:
            s *= 1.0 - np.sum((time == d) & event) / at_risk
        surv[d - 1] = s
    return surv


def make_figures(result) -> dict:
    """KM curves against the predicted mean survival per mechanism, example hazards, c-index bars per arm and
    per evaluation, c-index by CTR quartile with and without weighting, and the validation c-index over epochs."""
    arms, z = result.extras["arms"], result.extras["seed0"]
    figs = {"survival": survival_figure(z)}
    figs["hazards"] = hazard_figure(z, result.params["short_days"], result.params["long_bin_days"])
    figs["c_overall"] = viz.bars(
        {o.arm.label: list(o.c_overall) for o in arms},
        title="Overall test c-index per arm (dots: seeds; 0.5 = Kaplan–Meier, no features)",
        ylabel="c-index",
    )
    figs["c_overall"].add_hline(y=0.5, line_dash="dot")
    figs["c_by_term"] = term_figure(arms)
    figs["c_by_ctr"] = ctr_figure(arms)
    figs["val_c"] = viz.curves(
        result.history,
        "val_c_overall",
        title="Validation c-index (overall) per epoch",
        xlabel="epoch",
        ylabel="c-index",
    )
    return figs


def survival_figure(z):
    """Ground-truth KM (solid) per mechanism on seed 0's test creatives, and each hazard arm's mean S(d) (dashed)."""
    import plotly.graph_objects as go

    days = len(next(iter(next(iter(z.mean_survival.values())).values())))
    x = np.arange(1, days + 1)
    colours = {"cut-out": "#d62728", "wear-out": "#1f77b4"}
    fig = viz.lines(
        [],
        {},
        title="Survival of creatives: Kaplan–Meier (solid) vs predicted mean S(d) (dashed, dotted)",
        xlabel="days since launch",
        ylabel="S(d) = P(still running)",
    )
    for m, name in enumerate(("cut-out", "wear-out")):
        sel = z.mechanism == m
        fig.add_trace(
            go.Scatter(
                x=x,
                y=kaplan_meier(z.time[sel], z.event[sel], days),
                name=f"KM {name}",
                line={"color": colours[name], "shape": "hv"},
            )
        )
    for dash, (label, curves) in zip(("dash", "dot"), z.mean_survival.items()):
        for name, s in curves.items():
            fig.add_trace(go.Scatter(x=x, y=s, name=f"{label}: {name}", line={"color": colours[name], "dash": dash}))
    return fig


def hazard_figure(z, short_days: int, long_bin_days: int):
    """Predicted hazards of a few test creatives: short head per day (solid), long head per bin (dashed, drawn
    at the bin's last day and divided by the bin's days for a per-day scale)."""
    import plotly.graph_objects as go

    fig = viz.lines(
        [],
        {},
        title="Two-term model: hazards of example creatives (short head solid, long head dashed, per day)",
        xlabel="days since launch",
        ylabel="hazard h",
    )
    colours = viz.color_map(z.example_labels)
    long_x = long_bin_days * np.arange(1, z.example_long_hazard.shape[1] + 1)
    for k, label in enumerate(z.example_labels):
        fig.add_trace(
            go.Scatter(
                x=np.arange(1, short_days + 1),
                y=z.example_short_hazard[k],
                name=label,
                line={"color": colours[label]},
                legendgroup=label,
            )
        )
        per_day = 1 - (1 - z.example_long_hazard[k]) ** (1 / long_bin_days)
        fig.add_trace(
            go.Scatter(
                x=long_x,
                y=per_day,
                name=f"{label} (long)",
                showlegend=False,
                line={"color": colours[label], "dash": "dash"},
                legendgroup=label,
            )
        )
    return fig


def term_figure(arms):
    """Mean test c-index per arm for the short term, the long term and overall (grouped bars)."""
    import plotly.graph_objects as go

    fig = viz.lines(
        [],
        {},
        title="Test c-index: short term (first L_s days), long term (running after L_s), overall",
        ylabel="c-index",
    )
    for o, colour in zip(arms, viz.PALETTE):
        means = [float(np.mean(v)) for v in (o.c_short, o.c_long, o.c_overall)]
        fig.add_trace(go.Bar(x=["short", "long", "overall"], y=means, name=o.arm.label, marker_color=colour))
    fig.update_layout(barmode="group")
    fig.update_yaxes(range=[0.4, 1.0])
    return fig


def ctr_figure(arms):
    """Overall test c-index within each CTR quartile, mean over seeds, for the two-term arms and the baseline."""
    quartiles = ["Q1 (low CTR)", "Q2", "Q3", "Q4 (top CTR)"]
    keep = [o for o in arms if o.arm.key in ("two_term", "two_term_plain", "mse")]
    return viz.lines(
        quartiles,
        {o.arm.label: np.mean(np.array(o.c_by_ctr_quartile), 0) for o in keep},
        mode="lines+markers",
        title="Test c-index by CTR quartile: with vs without CTR weighting",
        xlabel="CTR quartile",
        ylabel="c-index",
    )
