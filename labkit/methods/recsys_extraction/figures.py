"""Figures of the extraction experiment: pure functions from a run's Result to plotly figures (plotly is imported
inside the functions, by labkit.viz and here)."""

from __future__ import annotations

import numpy as np

from labkit import viz


def make_figures(result) -> dict:
    """Agreement over training, the arms at the claims' fraction, Agreement@10 against the few-shot fraction (and
    the budget when swept), the item popularity of real vs synthetic sequences, one victim-vs-surrogate example."""
    x = result.extras
    rows = x["results"]
    figs = {
        "curves": viz.curves(
            result.history,
            "agreement_at_10",
            title="Agreement@10 with the victim on real test prefixes, over distillation epochs",
            xlabel="epoch",
            ylabel="Agreement@10",
        )
    }
    fraction = result.params["few_shot_frac"]
    at_claim = {}
    for r in rows:
        if r.budget == 1.0 and (r.arm.key == "data_free" or np.isclose(r.fraction, fraction)):
            at_claim.setdefault(r.arm.label, []).append(r.score.agreement_k)
    figs["arms"] = viz.bars(
        at_claim, title=f"Agreement@10 per arm ({fraction:.1%} real data, equal budget; dots: seeds)", ylabel="Agr@10"
    )
    figs["fractions"] = sweep_figure(rows, "fraction", ("proposed", "few_shot"), "share of real data held")
    if len({r.budget for r in rows}) > 1:
        figs["budgets"] = sweep_figure(rows, "budget", ("proposed", "data_free"), "query budget (× budget_seqs)")
    if x.get("popularity") is not None:
        figs["popularity"] = popularity_figure(x["popularity"])
    if x.get("example") is not None:
        figs["example"] = example_figure(x["example"])
    return figs


def sweep_figure(rows, axis: str, keys, xlabel: str):
    """Agreement@1 (dashed) and @10 (solid) against ``axis`` for the arms ``keys``, mean over seeds; data-free's
    level as a dotted line when it is not on the axis."""
    import plotly.graph_objects as go

    fig = go.Figure()
    colours = viz.color_map(keys)
    for key in keys:
        sub = [r for r in rows if r.arm.key == key and (axis == "budget" or r.budget == 1.0)]
        if axis == "budget":
            sub = [r for r in sub if r.fraction == max(s.fraction for s in sub)]
        xs = sorted({getattr(r, axis) for r in sub})
        for metric, dash in (("agreement_k", "solid"), ("agreement_1", "dash")):
            ys = [np.mean([getattr(r.score, metric) for r in sub if getattr(r, axis) == v]) for v in xs]
            name = f"{sub[0].arm.label} · Agr@{'10' if metric == 'agreement_k' else '1'}" if sub else key
            fig.add_trace(
                go.Scatter(x=xs, y=ys, name=name, mode="lines+markers", line={"color": colours[key], "dash": dash})
            )
    if axis == "fraction":
        free = [r.score.agreement_k for r in rows if r.arm.key == "data_free" and r.budget == 1.0]
        if free:
            fig.add_hline(y=float(np.mean(free)), line_dash="dot", annotation_text="data-free Agr@10 (same budget)")
        fig.update_xaxes(tickformat=".1%")
    fig.update_layout(
        title=f"Agreement with the victim on real test prefixes against the {axis}",
        xaxis_title=xlabel,
        yaxis_title="agreement",
        template="plotly_white",
        height=400,
    )
    return fig


def popularity_figure(pop):
    """Item frequency, items in the world's popularity order (log y): the distribution gap of synthetic data."""
    ranks = list(range(1, len(pop.real) + 1))
    fig = viz.lines(
        ranks,
        {"real (few-shot)": pop.real, "data-free synthetic": pop.data_free, "proposed synthetic": pop.proposed},
        title="How often each item appears: real vs synthetic sequences (items by true popularity, seed 0)",
        xlabel="item popularity rank in the world",
        ylabel="share of interactions",
    )
    fig.update_yaxes(type="log")
    return fig


def example_figure(ex):
    """Victim top-K and surrogate top-K side by side; missed items (victim only) and intruders (surrogate only)."""
    import plotly.graph_objects as go

    victim, surrogate = list(ex.victim_top), list(ex.surrogate_top)
    both = set(victim) & set(surrogate)
    colour_v = ["#c7e9c0" if i in both else "#fdae6b" for i in victim]
    colour_s = ["#c7e9c0" if i in both else "#fc9272" for i in surrogate]
    fig = go.Figure(
        go.Table(
            header={"values": ["rank", "victim top-K (orange: missed)", "surrogate top-K (red: intruder)"]},
            cells={
                "values": [list(range(1, len(victim) + 1)), victim, surrogate],
                "fill_color": [["white"] * len(victim), colour_v, colour_s],
            },
        )
    )
    fig.update_layout(
        title=f"One real test prefix (last items {list(ex.prefix[-5:])}, next item {ex.next_item}): "
        f"{len(both)}/{len(victim)} shared",
        height=420,
    )
    return fig
