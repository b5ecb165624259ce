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
    """Plotly renderers for notebooks: live in JupyterLab, and kept in the saved ``.ipynb`` (a committed
    notebook keeps them as images instead: :func:`static_figures`).

    plotly's notebook renderers import nbformat, whose jsonschema format checks import ``rfc3987_syntax`` when it
    is installed: building its grammar costs about 3 s per kernel on a 2-core machine, for IRI checks that the
    notebook schema never uses, so it is skipped here as in :mod:`labkit.batch`."""
    from .batch import skip_slow_optional

    skip_slow_optional()
    import plotly.io as pio

    pio.renderers.default = "plotly_mimetype+notebook_connected"


PLOTLY_MIME = "application/vnd.plotly.v1+json"
#: the width of a committed figure's image when its layout sets none (about a JupyterLab cell's width)
STATIC_WIDTH = 800
STATIC_HEIGHT = 380


def static_figures(nb) -> int:
    """Turn every plotly figure among a notebook's outputs into a PNG image, in place; returns how many.

    A committed notebook keeps its figures as images. The plotly renderer of JupyterLab, on drawing a figure that
    has no ``image/png``, takes a screenshot of it and writes it into the output, and again whenever it is hovered:
    the notebook turns "modified" and autosave rewrites the file, so that scrolling through a notebook changed it
    (issue 15). An image also shows on GitHub and nbviewer, which draw no plotly figure. Running the cell draws the
    interactive figure again. The images are rendered by kaleido in Debian's Chromium, one browser for the
    notebook, offline (plotly.js from the plotly package, no MathJax), and kept with a 256-colour palette
    (:func:`_palette_png`).

    Each figure output becomes ``{"image/png", "text/plain"}``; plotly's loader for the CDN copy of plotly.js
    (a ``text/html`` output of the ``notebook_connected`` renderer with no figure in it) is dropped."""
    import asyncio
    import base64

    figures = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        kept = []
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if PLOTLY_MIME in data:
                figures.append((output, data[PLOTLY_MIME]))
            elif "cdn.plot.ly" in "".join(data.get("text/html", "")) and len(data) == 1:
                continue
            kept.append(output)
        cell["outputs"] = kept
    if not figures:
        return 0
    import kaleido

    async def render() -> list[bytes]:
        async with kaleido.Kaleido(n=1, mathjax=False) as browser:
            images = []
            for _, figure in figures:
                layout = figure.get("layout", {})
                size = {"width": layout.get("width") or STATIC_WIDTH, "height": layout.get("height") or STATIC_HEIGHT}
                images.append(await browser.calc_fig(figure, opts={"format": "png", **size}))
            return images

    for (output, figure), png in zip(figures, asyncio.run(render())):
        png = _palette_png(png)
        title = figure.get("layout", {}).get("title", {})
        text = title.get("text") if isinstance(title, dict) else title
        output["data"] = {
            "image/png": base64.b64encode(png).decode("ascii"),
            "text/plain": f"<figure: {text or 'untitled'}; run the cell for the interactive plotly figure>",
        }
        output["metadata"] = {}
    return len(figures)


def _palette_png(png: bytes) -> bytes:
    """A figure's PNG with a 256-colour palette: a quarter of the bytes of kaleido's RGBA image (13 kB against
    44 kB for a typical curve plot), the same to the eye (a white page, a few line colours and their blends)."""
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.open(io.BytesIO(png)).convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(
        out, format="PNG", optimize=True
    )
    return out.getvalue()
