"""The app's compare page: ``/app?page=compare&method=<slug>``.

Pick recorded runs of one method (this user's by default; tick "all users' runs" for everyone's, the CLI's and
the notebooks' included), see their curves of one metric overlaid (the mean over seeds of each arm, one colour
per run and one dash per arm), a table of each run's parameters (those that differ between the picked runs) and
final metrics, and download that table as CSV.
"""

from __future__ import annotations

import io

import pandas as pd
import panel as pn

from labkit.core.store import RunStore
from labkit.viz import PALETTE
from widgets.app_plot import DASHES, curve_layout, mean_trace, metric_rows, series_means, x_axis_label
from widgets.app_store import AppRuns
from widgets.forms import markdown_text, method_name, resolve_method

PICKED_BY_DEFAULT = 2  # the newest runs picked when the page opens
TABLE_CSS = "table.panel-df thead th, table.panel-df tbody td { text-align: left; }"


def run_label(row) -> str:
    """How a run is named in the picker and the legend: ``#12 · quick · seed 0 · 2026-11-30 11:02 · holds``."""
    when = pd.to_datetime(row["created_at"], unit="s").strftime("%Y-%m-%d %H:%M")
    verdict = row["verdict"] if isinstance(row["verdict"], str) else "no verdict"
    return f"#{int(row['id'])} · {row['preset']} · seed {int(row['seed'])} · {when} · {verdict}"


def compare_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per run: id, preset, seed, the params that differ between the runs, the final metrics."""
    params = pd.DataFrame(list(runs["params"]), index=runs.index)
    varying = [c for c in params.columns if params[c].astype(str).nunique() > 1]
    metrics = pd.DataFrame(list(runs["metrics"]), index=runs.index)
    table = pd.concat(
        [
            runs[["id", "preset", "seed", "verdict"]].rename(columns={"verdict": "headline claim"}),
            params[varying],
            metrics,
            runs[["duration_s"]].round(1).rename(columns={"duration_s": "seconds"}),
        ],
        axis=1,
    )
    return table.reset_index(drop=True)


def overlay_figure(histories: dict[str, pd.DataFrame], metric: str | None, x_label: str):
    """Each run's per-arm mean curve of ``metric``: one colour per run, one dash per arm."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for i, (label, history) in enumerate(histories.items()):
        colour = PALETTE[i % len(PALETTE)]
        for j, (series, stats) in enumerate(series_means(metric_rows(history, metric)).items()):
            line = {"color": colour, "dash": DASHES[j % len(DASHES)]}
            fig.add_trace(mean_trace(stats, f"{label.split(' · ')[0]} {series}", line, legendgroup=label))
    fig.update_layout(**curve_layout(f"{metric} · mean over seeds per arm", x_label, metric, height=420))
    return fig


class ComparePage:
    """Pick runs of one method from the store; overlay their curves; table and CSV of params and metrics."""

    def __init__(self, method, store: RunStore | None = None, user: str = "local"):
        self.module = resolve_method(method)
        self.slug = method_name(self.module)
        self.store = store if store is not None else RunStore()
        self.runs = AppRuns(self.store)
        self.user = user
        self.all_users = pn.widgets.Checkbox(
            label="show all users' runs", value=False, css_classes=["labkit-all-users"]
        )
        self.picker = pn.widgets.MultiChoice(label="runs to compare", options={}, sizing_mode="stretch_width")
        main = getattr(self.module, "MAIN_METRIC", None)
        self.metric = pn.widgets.Select(label="metric", options=[main] if main else [], value=main, width=260)
        self.note = pn.pane.Markdown("", css_classes=["labkit-compare-note"])
        self.plot = pn.pane.Plotly(sizing_mode="stretch_width", min_width=280, height=440)
        self.table = pn.pane.DataFrame(index=False, escape=True, stylesheets=[TABLE_CSS], sizing_mode="stretch_width")
        self.download = pn.widgets.FileDownload(
            callback=self.csv, filename=f"labkit-{self.slug}-runs.csv", label="Download the table (CSV)", width=260
        )
        self.all_users.param.watch(lambda event: self.reload(), "value")
        self.picker.param.watch(lambda event: self.update(), "value")
        self.metric.param.watch(lambda event: self.update(), "value")
        self.frame = pd.DataFrame()
        self.reload()
        self.view = pn.Column(
            pn.pane.Markdown(
                f"[← all methods](?) · [back to {markdown_text(self.slug)}](?method={self.slug})\n"
                f"# Compare runs of {markdown_text(self.slug)}"
            ),
            self.all_users,
            self.picker,
            self.metric,
            self.note,
            self.plot,
            self.download,
            self.table,
            sizing_mode="stretch_width",
        )

    def reload(self) -> None:
        """Re-read the runs from the store (this user's, or everyone's) and pick the newest few."""
        self.frame = self.runs.runs(self.slug, None if self.all_users.value else self.user)
        options = {run_label(row): int(row["id"]) for _, row in self.frame.iterrows()}
        self.picker.param.update(options=options, value=list(options.values())[:PICKED_BY_DEFAULT])
        self.update()

    def picked(self) -> pd.DataFrame:
        return self.frame[self.frame["id"].isin(self.picker.value)]

    def update(self) -> None:
        """Redraw the overlay and the table for the picked runs."""
        picked = self.picked()
        if picked.empty:
            whose = "any user" if self.all_users.value else "you"
            self.note.object = f"No run of this method by {whose} is picked (train one on its page, or show all users)."
            self.plot.object = None
            self.table.object = pd.DataFrame()
            return
        histories = {run_label(row): self.store.history(int(row["id"])) for _, row in picked.iterrows()}
        logged = list(dict.fromkeys(m for h in histories.values() for m in h["metric"]))
        if logged and set(self.metric.options) != set(logged):
            current = self.metric.value if self.metric.value in logged else logged[0]
            main = getattr(self.module, "MAIN_METRIC", None)
            self.metric.param.update(options=logged, value=main if main in logged else current)
        metric = self.metric.value
        first = picked.iloc[0]
        x_label = x_axis_label(self.module, dict(first["params"]), next(iter(histories.values())), metric)
        self.plot.object = overlay_figure(histories, metric, x_label)
        self.table.object = compare_table(picked)
        self.note.object = f"{len(picked)} run(s) picked of {len(self.frame)}."

    def csv(self) -> io.StringIO:
        """The table of the picked runs as CSV (the download's content)."""
        buffer = io.StringIO()
        compare_table(self.picked()).to_csv(buffer, index=False)
        buffer.seek(0)
        return buffer
