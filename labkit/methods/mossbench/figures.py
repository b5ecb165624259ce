"""MOSSBench figures: refusal per group against safety strength, the safety–oversensitivity trade-off, the
per-stimulus breakdown, the judge's confusion matrix, the judge-noise study and the paper's leaderboard.

Pure functions of a :class:`labkit.core.Result`; plotly is imported inside the functions."""

from __future__ import annotations

import numpy as np

from labkit import viz

GROUP_LABELS = {
    "ER": "Exaggerated Risk",
    "NH": "Negated Harm",
    "CI": "Counterintuitive",
    "benign": "ALL benign",
    "plain": "plain control",
    "harmful": "harmful set",
}

PAPER_LEADERBOARD = {  # refusal rate (%) on MOSSBench: ALL, ER, NH, CI (official README leaderboard, 2024-06-22)
    "Claude 3 Opus (web)": (70.67, 41, 93, 78),
    "Gemini Advanced (web)": (61.0, 41, 67, 75),
    "Claude 3 Sonnet": (55.0, 39, 65, 61),
    "Claude 3 Haiku": (49.33, 27, 58, 63),
    "Claude 3 Opus": (34.67, 11, 43, 55),
    "Gemini Pro 1.5": (29.33, 25, 28, 35),
    "Qwen-VL-Chat": (21.67, 16, 13, 36),
    "InternLM-XComposer2-7b": (17.67, 14, 11, 28),
    "Gemini Pro Vision": (17.0, 20, 9, 22),
    "Reka": (16.67, 11, 21, 18),
    "InstructBLIP-Vicuna-7b": (15.67, 21, 23, 3),
    "IDEFICS-9b-Instruct": (13.67, 17, 9, 15),
    "MiniCPM-V 2.0": (12.33, 16, 11, 10),
    "LLaVA-1.5-7b": (12.33, 18, 10, 9),
    "mPLUG-Owl2": (10.0, 11, 7, 12),
    "LLaVA-1.5-13b": (9.67, 9, 9, 11),
    "GPT-4o": (6.33, 6, 8, 5),
    "MiniCPM-Llama3-V 2.5": (6.0, 8, 5, 5),
    "GPT-4o (web)": (4.0, 6, 2, 4),
}


def make_figures(result) -> dict:
    """Refusal per stimulus against strength (one figure per model), the trade-off curve, the per-stimulus
    breakdown at the operating point, the judge's confusion matrix, the judge-noise study, the paper's leaderboard."""
    from .experiment import ARMS, CONTEXT, KEYWORD, MODELS, TRANSFORMER

    x = result.extras
    figs = {f"by_strength_{arm.key}": strength_figure(result.history, arm.label) for arm in (KEYWORD, CONTEXT)}
    if TRANSFORMER.label in set(result.history["series"]):
        figs["by_strength_transformer"] = strength_figure(result.history, TRANSFORMER.label)
    figs["tradeoff"] = tradeoff_figure(
        result.history,
        {ARMS[k].label: v for k, v in x["anchors"].items()},
        {ARMS[k].label: v for k, v in x["operating"].items()},
        [a.label for a in (*MODELS, TRANSFORMER)],
    )
    figs["per_stimulus"] = breakdown_figure(
        {ARMS[k].label: v for k, v in x["breakdown"].items()},
        f"Refusal rates at each model's operating point (set to refuse ≥ {x['target_harmful']:.0%} of validation"
        " harmful items), 95% bootstrap CI over the pooled items",
    )
    figs["judge_confusion"] = confusion_figure(x["judge"], x["judge_mode"])
    if x.get("judge_noise"):
        figs["judge_noise"] = breakdown_figure(
            x["judge_noise"],
            f"Keyword filter, operating point: clean judge vs {x['judge_noise_rate']:.0%} of labels flipped, 95% CI",
        )
    figs["leaderboard"] = leaderboard_figure()
    return figs


def mean_curve(hist, series: str, metric: str) -> np.ndarray:
    """Mean over seeds of ``metric`` of ``series``, by step (strength)."""
    rows = hist[(hist["series"] == series) & (hist["metric"] == metric)]
    return rows.groupby("step")["value"].mean().to_numpy()


def strength_figure(hist, model: str):
    """RR of each group against safety strength for one model (mean over seeds, ±1 std band)."""
    from .experiment import RATE_METRICS

    rows = hist[(hist["series"] == model) & hist["metric"].isin(list(RATE_METRICS.values()))].copy()
    names = {m: GROUP_LABELS[g] for g, m in RATE_METRICS.items()}
    rows["series"], rows["metric"] = rows["metric"].map(names), "refusal"
    order = [GROUP_LABELS[g] for g in ("ER", "NH", "CI", "plain", "harmful", "benign")]
    fig = viz.curves(
        rows,
        "refusal",
        series=order,
        title=f"{model}: refusal rate per group as safety strength grows",
        xlabel="safety strength s (%) — refuse iff risk ≥ 1 − s",
        ylabel="refusal rate",
    )
    fig.update_yaxes(range=[-0.02, 1.02])
    return fig


def tradeoff_figure(hist, anchors: dict, operating: dict, models: list[str]):
    """Safety (x: RR on harmful) against oversensitivity (y: RR on benign stimuli), one curve per model, points
    labelled by strength; the anchors, each model's operating point and the ideal corner (1, 0)."""
    import plotly.graph_objects as go

    models = [m for m in models if m in set(hist["series"])]
    colours = viz.color_map(models)
    fig = viz.lines(
        [],
        {},
        title="Safety vs oversensitivity as safety strength grows (mean over seeds)",
        xlabel="refusal rate on harmful items (safety)",
        ylabel="refusal rate on benign stimuli (ER+NH+CI)",
    )
    for model in models:
        steps = sorted(set(hist[hist["series"] == model]["step"]))
        fig.add_trace(
            go.Scatter(
                x=mean_curve(hist, model, "harmful_refusal"),
                y=mean_curve(hist, model, "benign_refusal"),
                mode="lines+markers+text",
                name=model,
                text=[f"{s / 100:.2f}" for s in steps],
                textposition="top left",
                textfont={"size": 9},
                line={"color": colours[model]},
            )
        )
    for model, point in operating.items():
        fig.add_trace(
            go.Scatter(
                x=[point["harmful"]],
                y=[point["benign"]],
                mode="markers",
                showlegend=False,
                name=f"{model} operating point",
                marker={"symbol": "diamond", "size": 13, "color": colours.get(model, "black")},
            )
        )
    corner = ["top right" if a["harmful"] < 0.5 else "bottom left" for a in anchors.values()]
    fig.add_trace(
        go.Scatter(
            x=[a["harmful"] for a in anchors.values()],
            y=[a["benign"] for a in anchors.values()],
            mode="markers+text",
            text=list(anchors),
            name="anchors",
            textposition=corner,
            marker={"color": "grey", "size": 9},
        )
    )
    fig.add_trace(
        go.Scatter(
            x=[1],
            y=[0],
            mode="markers+text",
            text=["ideal"],
            textposition="top left",
            name="ideal",
            marker={"symbol": "star", "size": 18, "color": "gold", "line": {"color": "black", "width": 1}},
        )
    )
    fig.update_xaxes(range=[-0.05, 1.08])
    fig.update_yaxes(range=[-0.05, 1.08])
    return fig


def breakdown_figure(tables: dict, title: str):
    """Grouped bars: RR per group (x) for each named table (one bar colour each), with bootstrap error bars."""
    import plotly.graph_objects as go

    colours = viz.color_map(tables)
    fig = viz.lines([], {}, title=title, xlabel="group", ylabel="refusal rate")
    for name, table in tables.items():
        groups = [g for g in GROUP_LABELS if g in table]
        rates = [table[g]["refusal_rate"] for g in groups]
        fig.add_trace(
            go.Bar(
                x=[GROUP_LABELS[g] for g in groups],
                y=rates,
                name=name,
                marker_color=colours[name],
                text=[f"{r:.2f}" for r in rates],
                textposition="outside",
                error_y={
                    "type": "data",
                    "symmetric": False,
                    "array": [table[g]["ci_high"] - table[g]["refusal_rate"] for g in groups],
                    "arrayminus": [table[g]["refusal_rate"] - table[g]["ci_low"] for g in groups],
                },
            )
        )
    fig.update_layout(barmode="group")
    fig.update_yaxes(range=[0, 1.15])
    return fig


def confusion_figure(judge, mode: str):
    """The judge against the hand labels of the canned replies, as a 2×2 heatmap of counts."""
    import plotly.graph_objects as go

    fig = viz.lines(
        [],
        {},
        title=f"Judge ({mode}) vs hand labels: {judge.agree}/{judge.n} agree",
        xlabel="judge says",
        ylabel="hand label",
    )
    labels = ["comply (0)", "refuse (1)"]
    fig.add_trace(
        go.Heatmap(
            z=judge.confusion,
            x=labels,
            y=labels,
            colorscale="Blues",
            showscale=False,
            text=judge.confusion,
            texttemplate="%{text}",
            textfont={"size": 18},
        )
    )
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(height=360, width=520)
    return fig


def leaderboard_figure():
    """The paper's leaderboard (official README): refusal rate per stimulus type of each model, a static reference."""
    import plotly.graph_objects as go

    names = list(PAPER_LEADERBOARD)
    fig = viz.lines(
        [],
        {},
        title="MOSSBench leaderboard from the paper (reference numbers, not computed here)",
        ylabel="refusal rate (%)",
    )
    colours = viz.color_map(["ALL", "ER", "NH", "CI"])
    for k, col in enumerate(["ALL", "ER", "NH", "CI"]):
        fig.add_trace(go.Bar(x=names, y=[PAPER_LEADERBOARD[n][k] for n in names], name=col, marker_color=colours[col]))
    fig.update_layout(barmode="group", height=420)
    fig.update_xaxes(tickangle=-40)
    return fig
