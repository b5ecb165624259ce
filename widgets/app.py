"""The labkit Panel app: ``panel serve widgets/app.py``.

Two pages, picked by the URL query:

* ``/app``: a gallery of all thirty methods, cards grouped by family (id, short name, paper title,
  arXiv link, and whether the method is available yet);
* ``/app?method=<slug>``: one available method: a form built from its ``PARAMS`` (same rules as the
  notebook widgets), a preset select, a Train button, a live plot of one metric, the claim checks,
  an error alert, and the method's recent runs from the run store (every app run is recorded).

Everything from the URL, the form or the run store is shown as text (escaped; see ``widgets.forms.markdown_text``).
Number boxes and the seed are checked as they are typed; Train refuses, naming each refused box, and starts
nothing while one holds a text that is not a valid value. Picking the full preset without a GPU shows a warning
(the full preset is sized for one GPU) and blocks nothing.

Training runs in a worker thread (``run_in_executor``) so the page stays responsive; the Train
button's async callback wakes every ``REDRAW_EVERY_S`` seconds on the server's event loop to redraw
the plot from the rows the run's ``callback`` gathered. Only that event-loop coroutine touches the
widgets, so no Bokeh document is changed from the worker thread.
"""

from __future__ import annotations

import asyncio

import panel as pn

from labkit.core.registry import FAMILIES, METHODS, get_method
from widgets.forms import (
    REDRAW_EVERY_S,
    LiveCurves,
    changed_values,
    claims_text,
    draw_lines,
    html_text,
    markdown_text,
    method_name,
    missing_metric_note,
    new_live_figure,
    preset_warning,
    resolve_method,
)
from widgets.panel_forms import labelled, panel_controls, panel_preset_select, seed_box

pn.extension("plotly")

RECENT_RUNS = 10
METRICS_SHOWN = 4  # metrics per run in the recent-runs table
CARD_CSS = """
.labkit-card { width: 250px; min-height: 150px; padding: 10px 14px; border-radius: 8px;
  border: 1px solid #d0d7de; background: #fff; font-family: system-ui, sans-serif; }
.labkit-card.available { border-left: 4px solid #2da44e; }
.labkit-card.missing { background: #f6f8fa; color: #57606a; }
.labkit-card .id { font-size: 12px; color: #57606a; }
.labkit-card h3 { margin: 2px 0 6px 0; font-size: 18px; }
.labkit-card .title { font-size: 13px; line-height: 1.3; margin: 0 0 8px 0; }
.labkit-card .links { font-size: 13px; display: flex; justify-content: space-between; white-space: nowrap; }
.labkit-card .soon { font-style: italic; }
"""

# Panel's table style right-aligns the header cells while the body cells are left-aligned: line them up
TABLE_CSS = "table.panel-df thead th, table.panel-df tbody td { text-align: left; }"

# --------------------------------------------------------------------------- gallery


def method_card(info) -> pn.pane.HTML:
    """One registry entry as a card: id, short name, title, arXiv link, open link or 'not yet'."""
    available = info.available
    slug, e = html_text(info.slug), html_text
    action = f'<a class="open" href="?method={slug}">open →</a>' if available else '<span class="soon">not yet</span>'
    body = (
        f'<div class="labkit-card {"available" if available else "missing"}" data-slug="{slug}">'
        f'<div class="id">#{info.id:02d} · {e(info.family)}</div><h3>{e(info.short)}</h3>'
        f'<p class="title">{e(info.title)}</p>'
        f'<div class="links"><a href="{e(info.arxiv_url)}" target="_blank">arXiv {e(info.arxiv)}</a>'
        f"{action}</div></div>"
    )
    return pn.pane.HTML(body, stylesheets=[CARD_CSS], margin=6)


def gallery(note: str = "") -> pn.Column:
    """All registry methods as cards, one section per family; ``note`` shows as a warning on top."""
    n_available = sum(m.available for m in METHODS)
    parts = [
        pn.pane.Markdown(
            f"# Methods\n{len(METHODS)} methods, {n_available} available. "
            "Open an available one to train it and its baseline here."
        )
    ]
    if note:
        parts.append(pn.pane.Alert(markdown_text(note), alert_type="warning"))
    for family in FAMILIES:
        members = [m for m in METHODS if m.family == family]
        parts.append(pn.pane.Markdown(f"## {family} ({len(members)})"))
        parts.append(pn.FlexBox(*[method_card(m) for m in members]))
    return pn.Column(*parts, sizing_mode="stretch_width")


# --------------------------------------------------------------------------- recent runs


def recent_runs_frame(store, slug: str, params, limit: int = RECENT_RUNS):
    """The newest runs of ``slug`` in ``store``: the params changed from the run's preset, the first
    few metrics, the headline claim's verdict."""
    import pandas as pd

    runs = store.runs(slug).head(limit)
    changed = [_changed(values, preset, params) for values, preset in zip(runs["params"], runs["preset"])]
    return pd.DataFrame(
        {
            "id": runs["id"],
            "when (UTC)": pd.to_datetime(runs["created_at"], unit="s").dt.strftime("%Y-%m-%d %H:%M:%S"),
            "preset": runs["preset"],
            "seed": runs["seed"],
            "changed params": changed,
            "metrics": runs["metrics"].map(lambda m: _short_dict(dict(list(m.items())[:METRICS_SHOWN]))),
            "headline claim": runs["verdict"].fillna("—"),
            "seconds": runs["duration_s"].round(1),
        }
    )


def _changed(values: dict, preset: str, params) -> str:
    """The params of a recorded run that differ from its preset's values ('—' when none)."""
    known = {p.name for p in params}
    return _short_dict(changed_values(params, {k: v for k, v in values.items() if k in known}, preset)) or "—"


def _short_dict(values: dict) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())


# --------------------------------------------------------------------------- method page


class MethodPage:
    """The page of one method: form, Train button, live plot, claims, errors, recent runs.

    ``method`` is a slug or a module with ``PARAMS`` and ``run``; ``store`` a ``RunStore`` (default:
    ``$LABKIT_STORE`` or ``~/.labkit/runs.sqlite``), where every run made here is recorded.
    """

    def __init__(self, method, metric: str | None = None, store=None, device: str = "auto"):
        from labkit.core.store import RunStore

        self.module = resolve_method(method)
        self.slug = method_name(self.module)
        self.params = list(self.module.PARAMS)
        self.metric = metric or getattr(self.module, "MAIN_METRIC", None)
        self.device = device
        self.store = store if store is not None else RunStore()
        self.result = None
        self.curves = LiveCurves(self.metric)
        self.controls = panel_controls(self.params)
        self.preset = panel_preset_select(self.controls, self.params)
        self.warning = pn.pane.Alert("", alert_type="warning", visible=False, css_classes=["labkit-warning"])
        self.preset.param.watch(lambda event: self.show_warning(), "value")
        self.seed = seed_box(0)
        self.train_button = pn.widgets.Button(label="Train", color="primary", width=300)
        self.train_button.on_click(self._on_train)
        self.status = pn.pane.Markdown("Set the knobs, then **Train**.")
        self.error = pn.pane.Alert("", alert_type="danger", visible=False, css_classes=["labkit-error"])
        self.claims = pn.pane.HTML("", css_classes=["labkit-claims"], sizing_mode="stretch_width")
        self.figure = new_live_figure(widget=False)
        self.plot = pn.pane.Plotly(self.figure, sizing_mode="stretch_width", height=380)
        self.runs_table = pn.pane.DataFrame(
            index=False,
            escape=True,
            justify="left",
            text_align="start",
            stylesheets=[TABLE_CSS],
            sizing_mode="stretch_width",
        )
        self.refresh_runs()
        self.view = self._layout()

    def _layout(self) -> pn.Column:
        by_name = {p.name: p for p in self.params}
        form = pn.Column(
            self.preset,
            self.warning,
            *[labelled(c, by_name[n]) for n, c in self.controls.items()],
            self.seed,
            self.train_button,
            width=360,
        )
        results = pn.Column(self.status, self.error, self.plot, self.claims, sizing_mode="stretch_width")
        return pn.Column(
            self._header(),
            pn.Row(form, results, sizing_mode="stretch_width"),
            pn.pane.Markdown("### Recent runs (from the run store)"),
            self.runs_table,
            sizing_mode="stretch_width",
        )

    def _header(self) -> pn.pane.Markdown:
        try:
            info = get_method(self.slug)
        except ValueError:  # a module outside the registry (tests)
            return pn.pane.Markdown(f"[← all methods](?)\n# {markdown_text(self.slug)}")
        return pn.pane.Markdown(
            f"[← all methods](?)\n# {info.id:02d} · {markdown_text(info.short)}\n{markdown_text(info.title)} · "
            f"[arXiv {info.arxiv}]({info.arxiv_url}) · {markdown_text(info.family)} · notebook `{info.notebook}`"
        )

    def show_warning(self) -> str:
        """Show (or hide) the warning for the picked preset (the full preset without a GPU); returns its text."""
        text = preset_warning(self.preset.value, self.device)
        self.warning.object = markdown_text(text)
        self.warning.visible = bool(text)
        return text

    # -- training -----------------------------------------------------------------------------

    def form_errors(self) -> list[str]:
        """Why the form cannot train as it is: one line per refused box (number boxes and the seed)."""
        boxes = [*self.controls.values(), self.seed]
        return [box.error for box in boxes if getattr(box, "error", "")]

    def run_kwargs(self) -> dict:
        """What ``run`` gets: the preset, seed, and the form values that differ from the preset's.
        Raises ``ValueError`` (listing every refused box) when a box holds a text that is not a valid value."""
        errors = self.form_errors()
        if errors:
            raise ValueError("; ".join(errors))
        values = {name: c.value for name, c in self.controls.items()}
        overrides = changed_values(self.params, values, self.preset.value)
        return dict(preset=self.preset.value, seed=self.seed.value, device=self.device, **overrides)

    def _start(self) -> dict | None:
        """Prepare a run: fresh curves and plot, busy button; returns the run's kwargs, or ``None`` (and
        shows why, starting nothing) when the form holds a refused value."""
        try:
            kwargs = self.run_kwargs()
        except ValueError as err:
            self._finish(error=err, started=False)
            return None
        self.curves = LiveCurves(self.metric)
        self.figure.data = []
        self.error.visible = False
        self.claims.object = ""
        self.train_button.disabled = True
        self.train_button.label = "Training…"
        self.status.object = f"Training at preset **{markdown_text(kwargs['preset'])}** …"
        self.show_warning()
        return kwargs

    def _run(self, kwargs: dict):
        """The run itself (in the worker thread): rows go to ``self.curves``, the record to the store."""
        return self.module.run(callback=self.curves.add, progress=False, record=True, **kwargs)

    def redraw(self) -> None:
        """Redraw the live plot from the rows gathered so far."""
        draw_lines(self.figure, self.curves)
        self.plot.param.trigger("object")

    def _finish(self, result=None, error: Exception | None = None, started: bool = True) -> None:
        """Show the claims (or the error), re-enable Train, refresh the recent runs. ``started=False``: the
        form was refused before any run began."""
        self.redraw()
        self.train_button.disabled = False
        self.train_button.label = "Train"
        if error is not None:
            self.status.object = (
                "The run stopped; nothing was recorded." if started else "Not trained: fix the marked values first."
            )
            self.error.object = f"**{type(error).__name__}**: {markdown_text(str(error))}"
            self.error.visible = True
            return
        self.result = result
        note = missing_metric_note(result, self.metric)
        self.status.object = markdown_text(
            f"Done in {result.duration_s:.1f} s (seed {result.seed}, preset {result.preset})."
        )
        text = claims_text(result) + (f"\n\n{note}" if note else "")
        self.claims.object = f'<pre style="white-space:pre-wrap;font-size:14px">{html_text(text)}</pre>'
        self.refresh_runs()

    def train_now(self):
        """Train in this thread and update the page (tests, scripts); returns the Result or None."""
        kwargs = self._start()
        if kwargs is None:
            return None
        try:
            result = self._run(kwargs)
        except Exception as err:  # shown on the page
            self._finish(error=err)
            return None
        self._finish(result)
        return result

    async def _on_train(self, _event=None) -> None:
        """The Train button: run in a worker thread, redraw every ``REDRAW_EVERY_S`` until it ends."""
        kwargs = self._start()
        if kwargs is None:
            return
        future = asyncio.get_running_loop().run_in_executor(None, self._run, kwargs)
        while not future.done():
            await asyncio.wait({future}, timeout=REDRAW_EVERY_S)
            self.redraw()
        error = future.exception()
        self._finish(None if error else future.result(), error)

    def refresh_runs(self) -> None:
        """Reload the method's recent runs from the store."""
        self.runs_table.object = recent_runs_frame(self.store, self.slug, self.params)


# --------------------------------------------------------------------------- the app


def query_method() -> str:
    """The ``method`` of the URL query (``?method=rpo``), or '' outside a server session."""
    args = pn.state.session_args or {}
    values = args.get("method") or [b""]
    return values[0].decode() if isinstance(values[0], bytes) else str(values[0])


def create_app(method: str = "") -> pn.Column:
    """The page for ``method`` (a slug), or the gallery when it is empty, unknown or not available."""
    if not method:
        return gallery()
    try:
        module = get_method(method).load()
    except ValueError as err:  # unknown, or listed but not written yet
        return gallery(note=str(err))
    return MethodPage(module).view


if __name__.startswith("bokeh"):  # `panel serve widgets/app.py`
    pn.template.FastListTemplate(
        title="labkit", main=[create_app(query_method())], header_background="#24292f"
    ).servable()
