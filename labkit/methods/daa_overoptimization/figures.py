"""DAA over-optimisation's figures: the law (gain vs √KL with fits), gold and KL against epochs, final/peak per β,
length drift, one prompt's policies. Pure functions of a :class:`labkit.core.Result` of this method."""

from __future__ import annotations

import math

import numpy as np

SYMBOLS = {"DPO": "circle", "IPO": "square", "SLiC": "diamond"}
DASHES = {"DPO": "solid", "IPO": "dash", "SLiC": "dot"}


def _style(fig, runs):
    """Colour each run's trace (in the order of ``runs``) by its β; dash / mark it by its objective."""
    from labkit import viz

    colours = viz.color_map(f"β={b:g}" for b in sorted({o.spec.beta for o in runs}))
    for trace, o in zip(fig.data, runs):
        colour = colours[f"β={o.spec.beta:g}"]
        trace.update(
            line={"color": colour, "dash": DASHES[o.spec.objective]},
            marker={"color": colour, "symbol": SYMBOLS[o.spec.objective]},
        )
    return fig


def checkpoint_frame(result):
    """One row per (seed, step, run): √KL, KL, gold, mean length and the gain R = gold − gold(π_ref)."""
    hist = result.history
    wide = hist.pivot_table(index=["seed", "step", "series"], columns="metric", values="value").reset_index()
    ref = dict(zip(result.extras["seeds"], result.extras["gold_reference"]))
    wide["gain"] = wide["gold_reward"] - wide["seed"].map(ref)
    return wide


def law_figure(result):
    """Gain R against √KL for every checkpoint (colour β, marker objective) and each objective's fitted law."""
    import plotly.graph_objects as go

    from labkit import viz

    from .method import scaling_law

    x, wide = result.extras, checkpoint_frame(result)
    fig = viz.lines(
        [],
        {},
        title="Gold gain over π_ref against √KL(π‖π_ref), every checkpoint of every seed, with "
        "R(d) = d(α − β_s log d) fitted per objective",
        xlabel="d = √KL",
        ylabel="R = gold − gold(π_ref)",
    )
    for o in x["runs"]:
        sub = wide[wide["series"] == o.spec.arm.label]
        fig.add_trace(go.Scatter(x=sub["sqrt_kl"], y=sub["gain"], mode="markers", name=o.spec.arm.label, opacity=0.6))
    _style(fig, x["runs"])
    grid = np.linspace(1e-3, max(float(wide["sqrt_kl"].max()), 0.1) * 1.05, 200)
    for label, fit in x["fits"].items():
        if math.isfinite(fit.alpha):
            fig.add_trace(
                go.Scatter(
                    x=grid,
                    y=scaling_law(grid, fit.alpha, fit.beta_s),
                    mode="lines",
                    line={"color": "black", "dash": DASHES[label], "width": 2},
                    name=f"{label} fit: α={fit.alpha:.2f}, β_s={fit.beta_s:.2f}, R²={fit.r2:.2f}",
                )
            )
    return fig


def progress_figure(result, metric, title, ylabel):
    """``metric`` (mean over seeds) against training progress in epochs, one line per run; epoch 1 marked."""
    from labkit import viz

    x = result.extras
    fig = viz.lines(
        x["epochs_at"],
        {o.spec.arm.label: o.curves[metric] for o in x["runs"]},
        mode="lines+markers",
        title=title,
        xlabel="epochs of the preference data",
        ylabel=ylabel,
    )
    fig.add_vline(x=1.0, line_dash="dot", annotation_text="end of epoch 1")
    return _style(fig, x["runs"])


def per_beta_figure(result, which):
    """Final (solid) and peak (dotted, gold only) value per β, mean over seeds, one line per objective."""
    from labkit import viz

    runs = result.extras["runs"]
    betas = sorted({o.spec.beta for o in runs})
    ys = {}
    for label in dict.fromkeys(o.spec.objective for o in runs):
        by_beta = {o.spec.beta: o for o in runs if o.spec.objective == label}
        if which == "gold":
            ys[f"{label} final"] = [by_beta[b].final_gold for b in betas]
            ys[f"{label} peak"] = [by_beta[b].peak_gold for b in betas]
        else:
            ys[label] = [by_beta[b].final_kl for b in betas]
    title = (
        "Gold reward per β: peak over checkpoints (dotted) and final (solid), mean over seeds"
        if which == "gold"
        else "Final KL(π‖π_ref) per β: small β, large KL budget"
    )
    fig = viz.lines(
        betas, ys, mode="lines+markers", title=title, xlabel="β", ylabel="E_π[r*]" if which == "gold" else "KL (nats)"
    )
    for trace in fig.data:
        if trace.name.endswith(" peak"):
            trace.line.dash = "dot"
    if which == "gold":
        fig.add_hline(y=float(np.mean(result.extras["gold_reference"])), line_dash="dash", annotation_text="π_ref")
    fig.update_xaxes(type="log")
    return fig


def length_figure(result):
    """Mean response length E_π[ℓ] against KL along training, one line per run (mean over seeds)."""
    import plotly.graph_objects as go

    from labkit import viz

    runs = result.extras["runs"]
    fig = viz.lines(
        [],
        {},
        title="Length exploitation: mean response length against KL along training",
        xlabel="KL(π‖π_ref) (nats)",
        ylabel="E_π[ℓ]",
    )
    for o in runs:
        fig.add_trace(
            go.Scatter(x=o.curves["kl"], y=o.curves["mean_length"], mode="lines+markers", name=o.spec.arm.label)
        )
    fig.add_hline(y=result.params["gold_peak"], line_dash="dot", annotation_text="gold peaks here")
    return _style(fig, runs)


def prompt_figure(result):
    """π_ref and the final π_θ of each objective at the smallest β over the candidates of prompt 0 (first seed)."""
    from labkit import viz

    x = result.extras["prompt0"]
    low = min(o.spec.beta for o in result.extras["runs"])
    probs = {n: v for n, v in x["probs"].items() if n == "π_ref" or n.endswith(f"β={low:g}")}
    return viz.lines(
        x["length"],
        probs,
        mode="markers",
        title=f"Prompt 0: π over its candidates, final policies at β={low:g}",
        xlabel="candidate length ℓ",
        ylabel="probability",
    )


def make_figures(result) -> dict:
    """The law (gain vs √KL with fits), gold and KL against epochs, final/peak per β, length drift, one prompt."""
    return {
        "law": law_figure(result),
        "gold_progress": progress_figure(result, "gold_reward", "Gold reward E_π[r*] during training", "E_π[r*]"),
        "kl_progress": progress_figure(result, "kl", "KL(π‖π_ref) during training", "KL (nats)"),
        "gold_per_beta": per_beta_figure(result, "gold"),
        "kl_per_beta": per_beta_figure(result, "kl"),
        "length": length_figure(result),
        "prompt": prompt_figure(result),
    }
