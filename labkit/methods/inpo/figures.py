"""INPO's figures: pure functions from a run's Result to plotly figures (plotly is imported inside the
functions, by labkit.viz and here)."""

from __future__ import annotations

import numpy as np

from labkit import viz


def make_figures(result) -> dict:
    """Exploitability (log y), win rate vs the previous iterate and vs iterative DPO, KL to the exact OMD step,
    the first seed's first prompt's mass on each cycle response against the Nash policy, and its simplex path."""
    hist, x = result.history, result.extras
    arms = x["arms"]  # INPO, iterative DPO, exact OMD
    labels = [o.arm.label for o in arms]
    inpo, exact = labels[0], labels[2]
    figs = {
        "exploitability": viz.curves(
            hist,
            "exploitability",
            series=labels,
            xlabel="iteration t",
            title="Exploitability max_y P(y ≻ π) − 1/2 (0 at Nash), log axis",
        )
    }
    figs["exploitability"].update_yaxes(type="log")
    if x.get("e_reg_nash") is not None:
        figs["exploitability"].add_hline(y=x["e_reg_nash"], line_dash="dot", annotation_text="τ-regularised Nash π*_τ")
    figs["win_vs_prev"] = viz.curves(
        hist,
        "win_vs_prev",
        series=labels,
        xlabel="iteration t",
        ylabel="P(π_t ≻ π_{t−1})",
        title="Win rate against the previous iterate",
    )
    figs["win_vs_dpo"] = viz.curves(
        hist,
        "win_vs_dpo",
        series=[inpo, exact],
        xlabel="iteration t",
        ylabel="P(π ≻ π_DPO,t)",
        title="Win rate against iterative DPO's iterate",
    )
    for key in ("win_vs_prev", "win_vs_dpo"):
        figs[key].add_hline(y=0.5, line_dash="dot")
    figs["omd_kl"] = viz.curves(
        hist,
        "omd_kl",
        series=[inpo],
        xlabel="iteration t",
        ylabel="KL(π_exact ‖ π_learned)",
        title="How far the learned iterate is from the closed-form OMD step, log axis",
    )
    figs["omd_kl"].update_yaxes(type="log")
    figs["tv_to_nash"] = viz.curves(
        hist,
        "tv_to_nash",
        series=labels,
        xlabel="iteration t",
        ylabel="½‖π − π_Nash‖₁",
        title="Total-variation distance to the Nash policy",
    )
    figs["cycle_mass"] = cycle_mass_figure(arms[:2], x["nash"])
    figs["simplex"] = simplex_figure(arms, x["nash"])
    return figs


def cycle_mass_figure(arms, nash):
    """π_t(y) of the first seed's first prompt on the canonical cycle responses 0–2 (solid: the first arm,
    dashed: the others), Nash dotted."""
    t = list(range(len(arms[0].path_seed0)))
    ys = {f"{o.arm.label} · y{k}": [row[k] for row in o.path_seed0] for o in arms for k in range(3)}
    fig = viz.lines(
        t,
        ys,
        title="Seed 0, prompt 0: mass on each cycle response (dotted: Nash)",
        xlabel="iteration t",
        ylabel="π_t(y)",
    )
    first = arms[0].arm.label
    for trace in fig.data:
        arm, resp = trace.name.split(" · ")
        trace.line.update(color=viz.PALETTE[int(resp[1])], dash="dash" if arm != first else None)
    for k in range(3):
        fig.add_hline(y=nash[k], line_dash="dot", line_color=viz.PALETTE[k], annotation_text=f"Nash y{k}")
    return fig


def simplex_figure(arms, nash):
    """The path of (π(0), π(1), π(2)) renormalised on the cycle, first seed / first prompt, on a ternary plot."""
    import plotly.graph_objects as go

    fig = go.Figure()
    colours = viz.color_map([o.arm.label for o in arms] + ["Nash"])
    for o in arms:
        rows = np.asarray(o.path_seed0)[:, :3]
        rows = rows / rows.sum(1, keepdims=True)
        fig.add_trace(
            go.Scatterternary(
                a=rows[:, 0],
                b=rows[:, 1],
                c=rows[:, 2],
                mode="lines+markers",
                name=o.arm.label,
                marker={"size": 4},
                line={"color": colours[o.arm.label]},
            )
        )
    fig.add_trace(
        go.Scatterternary(
            a=[nash[0]],
            b=[nash[1]],
            c=[nash[2]],
            mode="markers",
            name="Nash",
            marker={"size": 14, "symbol": "star", "color": "black"},
        )
    )
    fig.update_layout(
        title="Seed 0, prompt 0: the policy on the cycle simplex (mass renormalised to y0–y2)",
        ternary={"aaxis": {"title": "y0"}, "baxis": {"title": "y1"}, "caxis": {"title": "y2"}},
        template="plotly_white",
        height=460,
    )
    return fig
