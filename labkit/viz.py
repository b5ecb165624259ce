"""Plotly figure builders: pure functions from a run's history or numbers to a ``go.Figure``.

Shared by every method; a method's ``figures(result)`` composes these. Colours follow the series
order so the same arm keeps its colour across figures.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]


def _rgba(hex_colour: str, alpha: float) -> str:
    r, g, b = (int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def color_map(series: Iterable[str]) -> dict[str, str]:
    return {s: PALETTE[i % len(PALETTE)] for i, s in enumerate(dict.fromkeys(series))}


def curves(
    history,
    metric: str,
    *,
    title: str | None = None,
    series: Sequence[str] | None = None,
    xlabel: str = "step",
    ylabel: str | None = None,
    band: bool = True,
):
    """One line per series of ``metric`` against step: the mean over seeds, with a ±1 std band.

    ``history`` is a tidy frame (seed, step, series, metric, value), as in ``Result.history``.
    """
    import plotly.graph_objects as go

    rows = history[history["metric"] == metric]
    order = list(series) if series is not None else list(dict.fromkeys(rows["series"]))
    colours = color_map(order)
    fig = go.Figure()
    for name in order:
        sub = rows[rows["series"] == name]
        if sub.empty:
            continue
        stats = sub.groupby("step")["value"].agg(["mean", "std", "count"]).reset_index()
        if band and stats["count"].max() > 1:
            std = stats["std"].fillna(0.0)
            fig.add_trace(
                go.Scatter(
                    x=list(stats["step"]) + list(stats["step"][::-1]),
                    y=list(stats["mean"] + std) + list((stats["mean"] - std)[::-1]),
                    fill="toself",
                    mode="lines",  # plotly draws markers on a short trace otherwise
                    fillcolor=_rgba(colours[name], 0.15),
                    line={"width": 0},
                    hoverinfo="skip",
                    showlegend=False,
                    legendgroup=name,
                )
            )
        fig.add_trace(
            go.Scatter(
                x=stats["step"],
                y=stats["mean"],
                mode="lines",
                name=name,
                line={"color": colours[name]},
                legendgroup=name,
            )
        )
    fig.update_layout(
        title=title or metric,
        xaxis_title=xlabel,
        yaxis_title=ylabel or metric,
        template="plotly_white",
        height=380,
        margin={"l": 60, "r": 20, "t": 50, "b": 50},
    )
    return fig


def bars(values: dict[str, Sequence[float]], *, title: str = "", ylabel: str = "", show_points: bool = True):
    """A bar per arm at the mean of its values (e.g. one per seed), with the values as dots."""
    import numpy as np
    import plotly.graph_objects as go

    names = list(values)
    colours = color_map(names)
    means = [float(np.mean(values[n])) for n in names]
    fig = go.Figure(
        go.Bar(
            x=names,
            y=means,
            marker_color=[colours[n] for n in names],
            name="mean",
            text=[f"{m:.3g}" for m in means],
            textposition="outside",
        )
    )
    if show_points:
        for n in names:
            fig.add_trace(
                go.Scatter(
                    x=[n] * len(values[n]),
                    y=list(values[n]),
                    mode="markers",
                    marker={"color": "black", "size": 6, "opacity": 0.6},
                    showlegend=False,
                    name=f"{n} per seed",
                )
            )
    fig.update_layout(
        title=title,
        yaxis_title=ylabel,
        template="plotly_white",
        height=380,
        showlegend=False,
        margin={"l": 60, "r": 20, "t": 50, "b": 50},
    )
    return fig


def lines(
    x: Sequence[float],
    ys: dict[str, Sequence[float]],
    *,
    title: str = "",
    xlabel: str = "",
    ylabel: str = "",
    mode: str = "lines",
):
    """Plain lines from arrays: ``ys`` maps a name to y-values over the shared ``x``."""
    import plotly.graph_objects as go

    colours = color_map(ys)
    fig = go.Figure()
    for name, y in ys.items():
        fig.add_trace(go.Scatter(x=list(x), y=list(y), mode=mode, name=name, line={"color": colours[name]}))
    fig.update_layout(
        title=title,
        xaxis_title=xlabel,
        yaxis_title=ylabel,
        template="plotly_white",
        height=380,
        margin={"l": 60, "r": 20, "t": 50, "b": 50},
    )
    return fig


def notebook_setup() -> None:
    """Plotly renderers for notebooks: live in JupyterLab, and kept in the saved ``.ipynb`` so that
    GitHub, Binder and the HTML report show the figures before anything runs.

    plotly's notebook renderers import nbformat, whose jsonschema format checks import ``rfc3987_syntax`` when it
    is installed: building its grammar costs about 3 s per kernel on a 2-core machine, for IRI checks that the
    notebook schema never uses, so it is skipped here as in :mod:`labkit.batch`."""
    from .batch import skip_slow_optional

    skip_slow_optional()
    import plotly.io as pio

    pio.renderers.default = "plotly_mimetype+notebook_connected"
