"""RPO's figures: pure functions from a run's Result to plotly figures (plotly is imported inside the functions,
by labkit.viz and here)."""

from __future__ import annotations

import numpy as np

from labkit import viz


def make_figures(result) -> dict:
    """Gold reward, log π(y_w)/log π(y_l), E‖φ‖², KL vs gold, mass outside support, the first seed's policies,
    and the β × η trade-off when the grid ran."""
    hist, x = result.history, result.extras
    arms, ref = x["arms"], x["reference"]
    names = [o.arm.label for o in arms]
    figs = {"gold_reward": curves_log_step(hist, "gold_reward", "Gold reward E_π[r*] (step on a log axis)")}
    figs["gold_reward"].add_hline(y=float(np.mean(ref.gold)), line_dash="dot", annotation_text="π_ref")
    figs["logp"] = chosen_rejected_figure(hist, names)
    figs["sq_norm"] = curves_log_step(hist, "sq_norm", "E_π‖φ‖²: how far out the policy goes")
    figs["kl_vs_gold"] = kl_gold_figure(hist, names)
    figs["support_mass"] = viz.bars(
        {"π_ref": list(ref.mass_out), **{o.arm.label: list(o.mass_out) for o in arms}},
        title=f"Mass outside π_ref's support ({ref.support_mass:g} of π_ref's mass; the rest is inside)",
        ylabel="π(a outside support)",
    )
    figs["policy_mass"] = viz.lines(
        list(ref.norm_seed0),
        {"π_ref": list(ref.probs_seed0), **{o.arm.label: list(o.probs_seed0) for o in arms}},
        mode="markers",
        title=f"Final π(a) against ‖φ(a)‖, seed {result.seed}",
        xlabel="‖φ(a)‖",
        ylabel="π(a)",
    )
    figs["policy_mass"].update_yaxes(type="log")
    if "sweep" in x:
        figs["tradeoff"] = tradeoff_figure(x["sweep"], float(np.mean(ref.gold)))
    return figs


def curves_log_step(hist, metric, title):
    fig = viz.curves(hist, metric, title=title)
    fig.update_xaxes(type="log")
    return fig


def chosen_rejected_figure(hist, names):
    """log π(y_w) (solid) and log π(y_l) (dashed) per arm, mean over seeds."""
    rows = hist[hist["metric"].isin(["logp_chosen", "logp_rejected"])].copy()
    rows["series"] = rows["series"] + np.where(rows["metric"] == "logp_chosen", " · y_w", " · y_l")
    rows["metric"] = "logp"
    order = [f"{n} · {w}" for n in names for w in ("y_w", "y_l")]
    fig = viz.curves(
        rows,
        "logp",
        series=order,
        title="Mean log π(y_w) (solid) and log π(y_l) (dashed), step on a log axis",
        ylabel="log-prob (nats)",
        band=False,
    )
    colours = viz.color_map(names)
    for trace in fig.data:
        arm, which = trace.name.rsplit(" · ", 1)
        trace.line.update(color=colours[arm], dash="dash" if which == "y_l" else None)
    fig.update_xaxes(type="log")
    return fig


def kl_gold_figure(hist, names):
    """The path of (KL(π‖π_ref), E_π[r*]) over training, mean over seeds, one line per arm."""
    import plotly.graph_objects as go

    means = hist[hist["metric"].isin(["kl", "gold_reward"])].groupby(["series", "metric", "step"])["value"].mean()
    colours = viz.color_map(names)
    fig = viz.lines(
        [], {}, title="Gold reward against KL(π‖π_ref) along training", xlabel="KL(π‖π_ref) (nats)", ylabel="E_π[r*]"
    )
    for name in names:
        fig.add_trace(
            go.Scatter(
                x=means[name]["kl"].values,
                y=means[name]["gold_reward"].values,
                mode="lines+markers",
                name=name,
                line={"color": colours[name]},
            )
        )
    fig.update_xaxes(type="log")
    return fig


def tradeoff_figure(sweep, gold_reference):
    """Final gold reward (mean over seeds) against η, one line per β."""
    table = sweep.groupby(["beta", "eta"])["gold_reward"].mean().unstack("beta")
    fig = viz.lines(
        [f"{e:g}" for e in table.index],
        {f"β={b:g}": table[b].values for b in table.columns},
        mode="lines+markers",
        title="Final gold reward against η (η = 0 is DPO)",
        xlabel="η",
        ylabel="E_π[r*]",
    )
    fig.add_hline(y=gold_reference, line_dash="dot", annotation_text="π_ref")
    return fig
