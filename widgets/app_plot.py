"""The app's curves: rows gathered while a run goes, and the figure drawn from them.

A method logs tidy history rows (seed, step, series, metric, value). :class:`LiveRows` keeps the rows of the
plotted metric while the run goes (from the training thread) and carries the page's Stop flag: once it is set,
the next logged row raises :class:`Stopped`, which ends the run between two logged steps (the runner records a
run only when its body returns, so a stopped run leaves nothing in the store).

:func:`curve_figure` draws one metric from such rows as a fresh ``go.Figure`` each time (no figure is changed in
place, so a redraw never depends on what an earlier redraw sent): per series the mean over seeds with a ±1 sd
band, each series with its own dash so that two arms drawing the same line both stay visible (the legend says
which is the same as which), the individual seeds on demand, and the page's previous run overlaid faintly.
Every trace carries ``meta`` (``mean``, ``band``, ``seed``, ``previous``) so a test can count what is drawn.

:func:`x_axis_label` names the x-axis by what it counts (round, iteration, epoch, episode, step).
"""

from __future__ import annotations

import math
import re
import threading
import time

import pandas as pd

from labkit.viz import PALETTE, _rgba

DASHES = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")
PREVIOUS_COLOUR = "#8c959f"
ROW_COLUMNS = ["seed", "step", "series", "value"]
# a knob that sets a loop's length, by what its name says → what one step of the history counts
LOOP_UNITS = (("round", "round"), ("iter", "iteration"), ("epoch", "epoch"), ("episode", "episode"), ("step", "step"))


class Stopped(Exception):
    """Raised inside a run (from its history callback) when the learner pressed Stop."""


class LiveRows:
    """History rows of one metric gathered while a run goes (``add`` is the run's callback).

    Safe to call ``add`` from the training thread while the page reads ``frame()``. The metric is the one asked
    for, else the first one logged. ``stop()`` asks the run to end: the next row logged raises :class:`Stopped`.
    The app redraws on a timer; the notebook explorer redraws from ``add`` when :meth:`due`.
    """

    def __init__(self, metric: str | None = None, every: float = 0.5):
        self.metric = metric
        self.every = every
        self._rows: list[tuple[int, int, str, float]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._last_draw = -math.inf  # the first row is drawn at once

    def add(self, row: dict) -> None:
        if self._stop.is_set():
            raise Stopped(f"stopped by the learner at step {row['step']} of {row['series']!r}")
        with self._lock:
            if self.metric is None:
                self.metric = row["metric"]
            if row["metric"] == self.metric:
                self._rows.append((row["seed"], row["step"], row["series"], row["value"]))

    def due(self) -> bool:
        """True at most once every ``every`` seconds: time to redraw (for a caller that draws from ``add``)."""
        now = time.monotonic()
        if now - self._last_draw < self.every:
            return False
        self._last_draw = now
        return True

    def stop(self) -> None:
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def __len__(self) -> int:
        with self._lock:
            return len(self._rows)

    def frame(self) -> pd.DataFrame:
        """The rows so far: columns seed, step, series, value."""
        with self._lock:
            rows = list(self._rows)
        return pd.DataFrame(rows, columns=ROW_COLUMNS)


def metric_rows(history: pd.DataFrame, metric: str | None) -> pd.DataFrame:
    """The rows of ``metric`` in a tidy history (seed, step, series, value); the first metric when ``None``."""
    if history is None or history.empty:
        return pd.DataFrame(columns=ROW_COLUMNS)
    metric = metric if metric is not None else history["metric"].iloc[0]
    return history.loc[history["metric"] == metric, ROW_COLUMNS].reset_index(drop=True)


def series_means(rows: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """``{series: frame(step, mean, sd, n)}`` in the order the series were first logged."""
    out = {}
    for name in dict.fromkeys(rows["series"]):
        sub = rows[rows["series"] == name]
        stats = sub.groupby("step", sort=True)["value"].agg(["mean", "std", "count"]).reset_index()
        out[name] = stats.rename(columns={"std": "sd", "count": "n"}).fillna({"sd": 0.0})
    return out


def same_as(means: dict[str, pd.DataFrame]) -> dict[str, str]:
    """``{series: earlier series}`` for each series whose mean curve is identical to an earlier one's."""
    out: dict[str, str] = {}
    names = list(means)
    for i, name in enumerate(names):
        for other in names[:i]:
            a, b = means[name], means[other]
            same_steps = a["step"].tolist() == b["step"].tolist()
            if same_steps and a["mean"].tolist() == b["mean"].tolist():
                out[name] = other
                break
    return out


def mean_trace(stats: pd.DataFrame, name: str, line: dict, **extra):
    """One series' mean curve (``stats`` as from :func:`series_means`); ``meta`` says what it is (default "mean")."""
    import plotly.graph_objects as go

    return go.Scatter(
        x=stats["step"].tolist(),
        y=stats["mean"].tolist(),
        mode="lines",
        name=name,
        line=line,
        **{"meta": "mean", **extra},
    )


def curve_layout(title: str, x_label: str, metric: str | None, height: int = 380) -> dict:
    """The layout every curve plot of the front ends shares."""
    return dict(
        title=title,
        xaxis_title=x_label,
        yaxis_title=metric,
        template="plotly_white",
        autosize=True,
        height=height,
        margin={"l": 60, "r": 20, "t": 50, "b": 50},
        legend={"orientation": "h", "y": -0.2},
    )


def curve_figure(
    rows: pd.DataFrame,
    metric: str | None,
    x_label: str = "step",
    show_seeds: bool = False,
    previous: pd.DataFrame | None = None,
    title: str | None = None,
):
    """A fresh figure of one metric: mean ± 1 sd over seeds per series, distinct dashes, seeds on demand,
    the previous run's means faint. ``rows`` and ``previous`` have the columns of :data:`ROW_COLUMNS`."""
    import plotly.graph_objects as go

    fig = go.Figure()
    if previous is not None and not previous.empty:
        for name, stats in series_means(previous).items():
            line = {"color": PREVIOUS_COLOUR, "width": 1.5, "dash": "dot"}
            fig.add_trace(
                mean_trace(stats, f"previous run: {name}", line, opacity=0.6, meta="previous", legendgroup="previous")
            )
    means = series_means(rows)
    twins = same_as(means)
    for i, (name, stats) in enumerate(means.items()):
        colour, dash = PALETTE[i % len(PALETTE)], DASHES[i % len(DASHES)]
        steps = stats["step"].tolist()
        if stats["n"].max() > 1:
            fig.add_trace(
                go.Scatter(
                    x=steps + steps[::-1],
                    y=(stats["mean"] + stats["sd"]).tolist() + (stats["mean"] - stats["sd"]).tolist()[::-1],
                    fill="toself",
                    mode="lines",
                    fillcolor=_rgba(colour, 0.15),
                    line={"width": 0},
                    hoverinfo="skip",
                    showlegend=False,
                    legendgroup=name,
                    meta="band",
                )
            )
        if show_seeds:
            sub = rows[rows["series"] == name]
            for k, (seed, one) in enumerate(sub.groupby("seed", sort=True)):
                fig.add_trace(
                    go.Scatter(
                        x=one["step"].tolist(),
                        y=one["value"].tolist(),
                        mode="lines",
                        name=f"{name} · seeds",
                        line={"color": colour, "width": 1, "dash": dash},
                        opacity=0.35,
                        showlegend=k == 0,
                        legendgroup=name,
                        meta="seed",
                        hovertext=f"seed {seed}",
                    )
                )
        label = f"{name} (same curve as {twins[name]})" if name in twins else name
        fig.add_trace(mean_trace(stats, label, {"color": colour, "width": 2.5, "dash": dash}, legendgroup=name))
    n_seeds = rows["seed"].nunique() if not rows.empty else 0
    spread = f" · mean ± 1 sd over {n_seeds} seeds" if n_seeds > 1 else ""
    fig.update_layout(
        **curve_layout((title or metric or "waiting for the first logged value") + spread, x_label, metric)
    )
    return fig


def loop_unit(name: str) -> str | None:
    """What one step of a loop counts, from the name of the knob that sets its length (None if it says not)."""
    for pattern, unit in LOOP_UNITS:
        if re.search(pattern, name):
            return unit
    return None


def x_axis_label(module, values: dict, history: pd.DataFrame | None = None, metric: str | None = None) -> str:
    """The x-axis title of the live curve: what a history step counts.

    In order: the method's own ``STEP_LABEL`` if it has one; else, with a run's history, the unit of the loop knob
    whose value is the last logged step (``rounds=25`` and steps up to 25 → "round"); else the unit of the first
    loop knob, main knobs first and rounds before iterations, epochs, episodes and steps; else "step"."""
    own = getattr(module, "STEP_LABEL", None)
    if own:
        return str(own)
    loops = [(name, value) for name, value in values.items() if isinstance(value, int) and not isinstance(value, bool)]
    loops = [(name, value, loop_unit(name)) for name, value in loops if loop_unit(name)]
    if history is not None and not history.empty:
        rows = metric_rows(history, metric)
        if not rows.empty:
            last = int(rows["step"].max())
            for _name, value, unit in loops:
                if value in (last, last + 1):
                    return unit
    main = {p.name for p in getattr(module, "PARAMS", []) if p.main}
    ranked = sorted(loops, key=lambda item: (item[0] not in main, [u for _, u in LOOP_UNITS].index(item[2])))
    return ranked[0][2] if ranked else "step"
