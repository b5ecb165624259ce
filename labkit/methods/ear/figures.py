"""EAR's figures: ``make_figures(result) -> dict[str, go.Figure]``, from the typed records in
``result.extras["run"]`` (an :class:`~labkit.methods.ear.experiment.EARRun`). Plotly is imported inside functions."""

from __future__ import annotations

import numpy as np

from labkit import viz


def heatmap(matrix, x: list[str], y: list[str], title: str, zmax: float = 1.0):
    """A matrix with its values written in the cells (NaN left blank)."""
    import plotly.graph_objects as go

    text = [["" if not np.isfinite(v) else f"{v:.2f}" for v in row] for row in matrix]
    fig = go.Figure(
        go.Heatmap(
            z=matrix,
            x=x,
            y=y,
            zmin=0,
            zmax=zmax,
            colorscale="Viridis",
            text=text,
            texttemplate="%{text}",
            hoverongaps=False,
        )
    )
    fig.update_layout(
        title=title,
        template="plotly_white",
        height=360,
        yaxis_autorange="reversed",
        margin={"l": 120, "r": 20, "t": 50, "b": 50},
    )
    return fig


def accuracy_matrices(run, arms):
    """Accuracy matrices side by side: rows = after stage t, columns = test domain (mean over seeds)."""
    from plotly.subplots import make_subplots

    names = run.names
    fig = make_subplots(rows=1, cols=len(arms), subplot_titles=[a.label for a in arms], horizontal_spacing=0.08)
    for col, arm in enumerate(arms, start=1):
        trace = heatmap(run.matrix(arm), names, [f"after {n}" for n in names], "").data[0]
        trace.showscale = col == len(arms)
        fig.add_trace(trace, row=1, col=col)
        fig.update_yaxes(showticklabels=col == 1, row=1, col=col)
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(
        title="Test accuracy: rows = after that stage of the stream, columns = test domain",
        template="plotly_white",
        height=380,
        margin={"l": 110, "r": 20, "t": 70, "b": 50},
    )
    return fig


def score_histograms(run):
    """HDC score s(x) of source test inputs and of each new domain's, with θ (first seed)."""
    import plotly.graph_objects as go

    ood, fig = run.first.ood, go.Figure()
    colours = viz.color_map(ood.raw)
    for name, s in ood.raw.items():
        fig.add_trace(go.Histogram(x=s.hdc, name=name, opacity=0.6, nbinsx=40, marker_color=colours[name]))
    fig.add_vline(x=ood.theta_source, line_dash="dash", annotation_text="θ (95% of source validation pass)")
    fig.update_layout(
        barmode="overlay",
        title="HDC score s(x) = max_k cos(H(x), C_k), source descriptors only",
        xaxis_title="s(x)",
        yaxis_title="inputs",
        template="plotly_white",
        height=380,
    )
    return fig


def roc_figure(run):
    """ROC curves (source test = positive) of HDC (solid) and MSP (dashed) per new domain (first seed)."""
    import plotly.graph_objects as go
    from sklearn.metrics import roc_curve

    raw, fig = run.first.ood.raw, go.Figure()
    source, *others = list(raw)
    colours = viz.color_map(others)
    for name in others:
        for kind, dash in (("hdc", None), ("msp", "dash")):
            inside, outside = getattr(raw[source], kind), getattr(raw[name], kind)
            y = np.r_[np.ones(len(inside)), np.zeros(len(outside))]
            fpr, tpr, _ = roc_curve(y, np.r_[inside, outside])
            fig.add_trace(
                go.Scatter(
                    x=fpr,
                    y=tpr,
                    mode="lines",
                    name=f"{name} · {kind.upper()}",
                    line={"color": colours[name], "dash": dash},
                )
            )
    fig.update_layout(
        title="ROC: source test (in) vs each new domain (out); HDC solid, MSP dashed",
        xaxis_title="false positive rate",
        yaxis_title="true positive rate",
        template="plotly_white",
        height=400,
    )
    return fig


def nas_figure(rec, name: str, proxy: str):
    """Proxy score vs trained accuracy of every candidate, the pick highlighted."""
    import plotly.graph_objects as go

    x, acc = rec.scores[proxy], rec.acc
    fig = go.Figure(
        go.Scatter(
            x=x,
            y=acc,
            mode="markers+text",
            text=rec.labels,
            textposition="top center",
            marker={"size": [6 + 14 * s / max(rec.sizes) for s in rec.sizes]},
            name="candidates",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=[x[rec.pick]],
            y=[acc[rec.pick]],
            mode="markers",
            name="pick",
            marker={"size": 18, "symbol": "star", "color": "#d62728"},
        )
    )
    tau = (rec.tau or {}).get(proxy, float("nan"))
    fig.update_layout(
        title=f"{name}: {proxy} at initialisation vs test accuracy after training (τ = {tau:.2f};"
        " marker size ∝ parameters)",
        xaxis_title=f"{proxy} score",
        yaxis_title="accuracy",
        template="plotly_white",
        height=400,
    )
    return fig


def stream_figure(detection, kappa: float):
    """OOD share of each window of W test inputs as the stream arrives (before growing), and of the same windows
    once the task's adaptor and descriptors are added; dashed: κ."""
    x, before, after = [], [], []
    for d in detection:
        for i, v in enumerate(d.before):
            x.append(f"{d.name} #{i + 1}")
            before.append(v)
            after.append(d.after[i] if d.after else None)
    fig = viz.lines(
        x,
        {"on arrival": before, "after growth": after},
        mode="lines+markers",
        xlabel="window",
        ylabel="share with s(x) < θ",
        title="Shift detection over the stream (first seed); dashed: κ",
    )
    fig.add_hline(y=kappa, line_dash="dash")
    return fig


def make_figures(result) -> dict:
    from .experiment import ARM_EAR, ARM_FT, ARM_KNOWN, ARMS, LEARNERS

    run, h = result.extras["run"], result.history
    names, first = run.names, run.first
    figs = {
        "acc_seen": viz.curves(
            h,
            "acc_seen",
            series=[a.label for a in ARMS],
            xlabel="stage (domains learned − 1)",
            ylabel="mean accuracy",
            title="Mean test accuracy over the domains seen so far",
        ),
        "accuracy_matrix": accuracy_matrices(run, (ARM_EAR, ARM_KNOWN, ARM_FT)),
        "ood_scores": score_histograms(run),
        "roc": roc_figure(run),
    }
    kinds = ("hdc", "msp", "energy", "mahalanobis")
    figs["auroc"] = viz.bars(
        {f"{n} · {k}": [getattr(s.ood.auroc[n], k) for s in run.seeds] for n in names[1:] for k in kinds},
        title="OOD AUROC, source test vs each new domain (source model only)",
        ylabel="AUROC",
    )
    figs["stage_auroc"] = viz.curves(
        h,
        "stage_auroc",
        xlabel="stage",
        ylabel="AUROC",
        title="HDC AUROC at each stage: all known domains (in) vs the next one (out)",
    )
    for arm in LEARNERS:
        trace = first.ear.traces[arm.key]
        figs[f"routing {arm.key}"] = heatmap(
            trace.confusion,
            [f"→ {names[o]}" for o in trace.owners],
            names,
            f"{arm.label}: share of each test domain routed to each adaptor (after the stream, first seed)",
        )
    figs["stream"] = stream_figure(first.ear.detection, result.params["kappa"])
    nas = first.ear.nas
    figs["architecture"] = viz.bars(
        {f"{names[r.task]}: {r.pick_label}": [r.pick_size] for r in nas},
        title=f"Adaptor chosen by {run.proxy} per domain (parameters)",
        ylabel="parameters (adaptor + head)",
        show_points=False,
    )
    for r in nas:
        if r.tau is not None:
            figs[f"nas {names[r.task]}"] = nas_figure(r, names[r.task], run.proxy)
    ranked = [r for s in run.seeds for r in s.ear.nas if r.tau is not None]
    if ranked:
        figs["proxy_tau"] = viz.bars(
            {k: [r.tau[k] for r in ranked] for k in ranked[0].tau},
            title="Kendall τ of each proxy with trained accuracy (one dot per grown domain and seed)",
            ylabel="τ",
        )
    if run.class_seeds:
        arms = [a for a in ARMS if a.key in run.class_seeds[0].matrices]
        figs["class_incremental"] = viz.bars(
            {a.label: [c.final(a) for c in run.class_seeds] for a in arms},
            title="Class-incremental (0–4 then 5–9): mean accuracy over both tasks",
            ylabel="accuracy",
        )
    return figs
