"""The labkit Panel app: ``panel serve widgets/app.py`` (or ``labkit dashboard``, bound to 127.0.0.1).

Pages, picked by the URL query:

* ``/app``: the gallery: all thirty methods as cards grouped by family, a search box and a family filter; each
  card shows the headline verdict of the method's newest recorded run;
* ``/app?method=<slug>``: one method: what you will see, its key equation, a link that opens its notebook in
  JupyterLab, guided experiments, the form (built from ``PARAMS``, by the notebook widgets' rules), the preset
  with its estimated time, Train and Stop, the live curve, the claims as cards, and this user's recent runs;
* ``/app?page=compare&method=<slug>``: pick recorded runs of a method, overlay their curves, a table of their
  parameters and final metrics, a CSV download (see ``widgets/compare.py``).

Everything from the URL, the form or the run store is shown as text (escaped; see ``widgets.forms.markdown_text``).

Training, with several users at once: Train starts the run in a worker thread; only the page's own periodic
callback (``pn.state.add_periodic_callback``, run by Bokeh on that session's document, under its lock) touches
the page's widgets. It redraws at most every ``REDRAW_MS`` from the rows gathered so far, and once the run has
ended it draws the figure from the run's complete history, then shows the claims. Each redraw is a fresh
figure (nothing is patched in place). Runs take turns (one at a time per server, ``RUN_LOCK``): methods seed
torch's process-wide generator, so two runs at once in one process would draw from each other's streams and
record results a rerun could not reproduce; a waiting page says so. Stop ends a run at its next logged step; a
stopped run is not recorded.

Users: one browser is one user (a random id in a cookie). Runs made here are recorded in the run store, and the
app notes whose run is whose (``widgets/app_store.py``); the recent runs and the compare page list this user's
runs unless "all users' runs" is ticked.
"""

from __future__ import annotations

import os
import re
import threading
import time
import uuid
from dataclasses import dataclass

import panel as pn

from labkit.core.registry import FAMILIES, METHODS, get_method
from widgets.app_plot import LiveRows, Stopped, curve_figure, metric_rows, x_axis_label
from widgets.app_store import AppRuns, estimated_time, newest_verdicts
from widgets.forms import (
    changed_values,
    html_text,
    markdown_text,
    method_name,
    missing_metric_note,
    preset_warning,
    resolve_method,
    set_preset,
)
from widgets.panel_forms import labelled, panel_controls, panel_preset_select, seed_box

pn.extension("plotly", "katex")

RECENT_RUNS = 10
METRICS_SHOWN = 4  # metrics per run in the recent-runs table
REDRAW_MS = 500  # a page redraws its live curve at most this often
RUN_LOCK = threading.Lock()  # one run at a time per server (see the module docstring)
USER_COOKIE = "labkit_user"
PHONE_WIDTH = 700  # px: narrower screens start with the contents sidebar closed
LAB_URL = os.environ.get("LABKIT_LAB_URL", "http://127.0.0.1:8888")  # where JupyterLab serves the repository

VERDICT_COLOURS = {"holds": "#1a7f37", "does not hold": "#cf222e", "inconclusive": "#9a6700"}
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
.labkit-card .verdict, .labkit-claim .badge { display: inline-block; padding: 1px 8px; border-radius: 10px;
  color: #fff; font-size: 12px; font-weight: 600; margin-bottom: 6px; }
.labkit-card .verdict.none { background: #eaeef2; color: #57606a; font-weight: 400; }
"""
CLAIM_CSS = """
.labkit-claim { border: 1px solid #d0d7de; border-radius: 8px; padding: 8px 12px; margin: 6px 0;
  font-family: system-ui, sans-serif; background: #fff; }
.labkit-claim .badge { display: inline-block; padding: 1px 8px; border-radius: 10px; color: #fff;
  font-size: 12px; font-weight: 600; }
.labkit-claim .kind { font-size: 12px; color: #57606a; margin-left: 6px; }
.labkit-claim .claim { margin: 6px 0 4px 0; font-size: 15px; }
.labkit-claim .numbers { margin: 0; font-size: 13px; color: #24292f; font-family: ui-monospace, monospace; }
"""
# Panel's table style right-aligns the header cells while the body cells are left-aligned: line them up
TABLE_CSS = "table.panel-df thead th, table.panel-df tbody td { text-align: left; }"


def verdict_badge(verdict: str | None, css_class: str = "badge") -> str:
    """A coloured badge for a three-way verdict (grey 'no run yet' for None)."""
    if not verdict:
        return f'<span class="{css_class} none">no run yet</span>'
    colour = VERDICT_COLOURS.get(verdict, "#57606a")
    return f'<span class="{css_class}" style="background:{colour}">{html_text(verdict.upper())}</span>'


# --------------------------------------------------------------------------- users


def session_user() -> str:
    """This browser's user id: the ``labkit_user`` cookie, or a new random id that the page stores in that cookie
    once it has loaded; ``"local"`` outside a server session (tests, scripts)."""
    cookie = (pn.state.cookies or {}).get(USER_COOKIE, "")
    if re.fullmatch(r"[0-9a-f]{32}", cookie or ""):
        return cookie
    doc = pn.state.curdoc
    if doc is None or doc.session_context is None:
        return "local"
    from bokeh.models import CustomJS

    user = uuid.uuid4().hex
    code = f'document.cookie = "{USER_COOKIE}={user}; path=/; max-age=31536000; SameSite=Lax";'
    doc.js_on_event("document_ready", CustomJS(code=code))
    return user


# --------------------------------------------------------------------------- gallery


def method_card(info, verdict: str | None = None) -> pn.pane.HTML:
    """One registry entry as a card: id, family, short name, title, newest headline verdict, arXiv and open links."""
    available = info.available
    slug, e = html_text(info.slug), html_text
    action = f'<a class="open" href="?method={slug}">open →</a>' if available else '<span class="soon">not yet</span>'
    badge = verdict_badge(verdict, "verdict") if available else ""
    body = (
        f'<div class="labkit-card {"available" if available else "missing"}" data-slug="{slug}">'
        f'<div class="id">#{info.id:02d} · {e(info.family)}</div><h3>{e(info.short)}</h3>{badge}'
        f'<p class="title">{e(info.title)}</p>'
        f'<div class="links"><a href="{e(info.arxiv_url)}" target="_blank">arXiv {e(info.arxiv)}</a>'
        f"{action}</div></div>"
    )
    return pn.pane.HTML(body, stylesheets=[CARD_CSS], margin=6)


class Gallery:
    """All registry methods as cards, one section per family, filtered by a search box and a family select."""

    def __init__(self, note: str = "", store=None):
        verdicts = _verdicts(store)
        self.search = pn.widgets.TextInput(placeholder="search: name, title, arXiv id…", width=320)
        self.family = pn.widgets.Select(options=["all families", *FAMILIES], width=260)
        self.cards = {m.slug: method_card(m, verdicts.get(m.slug)) for m in METHODS}
        self.sections = {}
        for family in FAMILIES:
            members = [m for m in METHODS if m.family == family]
            heading = pn.pane.Markdown(f"## {markdown_text(family)} ({len(members)})")
            self.sections[family] = (heading, pn.FlexBox(*[self.cards[m.slug] for m in members]))
        self.count = pn.pane.Markdown("")
        self.search.param.watch(lambda event: self.filter(), "value_input")
        self.family.param.watch(lambda event: self.filter(), "value")
        n_available = sum(m.available for m in METHODS)
        parts = [
            pn.pane.Markdown(
                f"# Methods\n{len(METHODS)} methods, {n_available} available. Open one to train it and its "
                "baseline here; the badge is the headline claim's verdict in the newest recorded run."
            )
        ]
        if note:
            parts.append(pn.pane.Alert(markdown_text(note), alert_type="warning"))
        parts.append(pn.Row(self.search, self.family, self.count))
        for heading, box in self.sections.values():
            parts += [heading, box]
        self.view = pn.Column(*parts, sizing_mode="stretch_width")
        self.filter()

    def filter(self) -> list[str]:
        """Show the cards that match the search text and the family; returns the slugs shown."""
        words = (self.search.value_input or "").lower().split()
        family = self.family.value
        shown = []
        for m in METHODS:
            text = f"{m.id:02d} {m.slug} {m.short} {m.title} {m.arxiv} {m.family}".lower()
            visible = all(w in text for w in words) and family in ("all families", m.family)
            self.cards[m.slug].visible = visible
            if visible:
                shown.append(m.slug)
        for family_name, (heading, box) in self.sections.items():
            any_shown = any(self.cards[m.slug].visible for m in METHODS if m.family == family_name)
            heading.visible = box.visible = any_shown
        self.count.object = f"{len(shown)} of {len(METHODS)} shown"
        return shown


def gallery(note: str = "", store=None) -> pn.Column:
    """The gallery page (see :class:`Gallery`); ``note`` shows as a warning on top."""
    warm_up()
    return Gallery(note, store).view


_WARM = threading.Event()


def warm_up() -> None:
    """Import torch in the background, once per server, while the learner reads the gallery: the first method
    page then does not wait for it (it is most of that page's server time)."""
    if _WARM.is_set():
        return
    _WARM.set()

    def load() -> None:
        import torch  # noqa: F401

    threading.Thread(target=load, name="labkit-warm-up", daemon=True).start()


def _verdicts(store) -> dict[str, str]:
    """The newest headline verdicts for the cards; none when there is no store yet (looking creates none)."""
    from labkit.core.store import RunStore, default_path

    try:
        if store is None:
            if not default_path().is_file():
                return {}
            store = RunStore()
        return newest_verdicts(store)
    except Exception:  # a gallery without badges beats no gallery  # noqa: BLE001
        return {}


# --------------------------------------------------------------------------- claims and recent runs


def claim_cards(claims: list[dict]) -> str:
    """The claims (as stored: :meth:`ClaimCheck.to_dict`) as HTML cards: verdict badge, headline or
    supporting, the claim sentence, the measured interval against the margin, the numbers."""
    from labkit.core.claims import Interval, fmt, margin_bar

    if not claims:
        return '<div class="labkit-claim"><p class="claim">This method states no claim.</p></div>'
    cards = []
    for c in claims:
        dec = int(c.get("decimals", 3))
        iv = Interval(c["mean"], c["low"], c["high"], int(c["n"]), c.get("level", 0.95))
        bar = margin_bar(
            c["margin"],
            c.get("higher_is_better", True),
            dec if c.get("margin_decimals") is None else int(c["margin_decimals"]),
        )
        numbers = ", ".join(f"{k} = {fmt(v, dec)}" for k, v in c.get("numbers", {}).items())
        kind = "headline" if c.get("headline") else "supporting"
        cards.append(
            f'<div class="labkit-claim {kind}" data-verdict="{html_text(c["verdict"])}">'
            f'{verdict_badge(c["verdict"])}<span class="kind">{kind}</span>'
            f'<p class="claim">{html_text(c["claim"])}</p>'
            f'<p class="numbers">{html_text(c["quantity"])}: {html_text(iv.text(dec))}; claim: {html_text(bar)}</p>'
            + (f'<p class="numbers">{html_text(numbers)}</p>' if numbers else "")
            + (f'<p class="numbers">{html_text(c["detail"])}</p>' if c.get("detail") else "")
            + "</div>"
        )
    return "".join(cards)


def recent_runs_frame(runs, params, limit: int = RECENT_RUNS):
    """The newest ``runs`` (a store frame): the params changed from the run's preset, the first few metrics,
    the headline claim's verdict."""
    import pandas as pd

    runs = runs.head(limit)
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


# --------------------------------------------------------------------------- teaching parts


def guide_of(slug: str):
    """The method's guide from ``widgets.guides`` (what you will see, key equation, experiments), or None."""
    try:
        from widgets.guides import guide_for
    except ImportError:
        return None
    try:
        return guide_for(slug)
    except Exception:  # a broken guide must not take the page down  # noqa: BLE001
        return None


def lab_link(info) -> str:
    """The URL that opens the method's notebook in JupyterLab (``$LABKIT_LAB_URL``, default 127.0.0.1:8888)."""
    return f"{LAB_URL.rstrip('/')}/lab/tree/notebooks/{info.id:02d}_{info.slug}.ipynb"


def neighbours(slug: str) -> tuple:
    """The available methods before and after ``slug`` in the registry's order (None at either end)."""
    available = [m for m in METHODS if m.available]
    slugs = [m.slug for m in available]
    if slug not in slugs:
        return None, None
    i = slugs.index(slug)
    return (available[i - 1] if i > 0 else None), (available[i + 1] if i + 1 < len(available) else None)


@dataclass
class Job:
    """One run started from a page: its worker thread, and how it ended."""

    thread: threading.Thread
    result: object = None
    error: Exception | None = None
    started: bool = False  # its turn came (another run may have held the server)
    waited_s: float = 0.0


# --------------------------------------------------------------------------- method page


class MethodPage:
    """The page of one method: teaching parts, form, Train and Stop, live curve, claims, recent runs.

    ``method`` is a slug or a module with ``PARAMS`` and ``run``; ``store`` a ``RunStore`` (default:
    ``$LABKIT_STORE`` or ``~/.labkit/runs.sqlite``), where every run made here is recorded; ``user`` the browser's
    user id (default: :func:`session_user`).
    """

    def __init__(self, method, metric: str | None = None, store=None, device: str = "auto", user: str | None = None):
        from labkit.core.store import RunStore

        self.module = resolve_method(method)
        self.slug = method_name(self.module)
        try:
            self.info = get_method(self.slug)
        except ValueError:  # a module outside the registry (tests)
            self.info = None
        self.params = list(self.module.PARAMS)
        self.metric = metric or getattr(self.module, "MAIN_METRIC", None)
        self.device = device
        self.store = store if store is not None else RunStore()
        self.runs = AppRuns(self.store)
        self.user = user if user is not None else session_user()
        self.result = None
        self.job: Job | None = None
        self.poll = None
        self.live = LiveRows(self.metric)
        self.shown_rows = self.live.frame()  # what the plot shows when no run goes
        self.previous_rows = None  # the page's previous run, overlaid faintly
        self.extra_overrides: dict = {}  # a guided experiment's values for knobs the form does not show
        self.controls = panel_controls(self.params)
        self.preset = panel_preset_select(self.controls, self.params)
        self.estimate = pn.pane.Markdown("", css_classes=["labkit-estimate"], margin=(0, 10))
        self.warning = pn.pane.Alert("", alert_type="warning", visible=False, css_classes=["labkit-warning"])
        self.preset.param.watch(lambda event: self._on_preset(), "value")
        self.seed = seed_box(0)
        self.train_button = pn.widgets.Button(label="Train", color="primary", width=145)
        self.train_button.on_click(self._on_train)
        self.stop_button = pn.widgets.Button(label="Stop", color="warning", width=145, disabled=True)
        self.stop_button.on_click(lambda event: self.stop())
        self.status = pn.pane.Markdown("Set the knobs, then **Train**.", css_classes=["labkit-status"])
        self.expect = pn.pane.Alert("", alert_type="info", visible=False, css_classes=["labkit-expect"])
        self.error = pn.pane.Alert("", alert_type="danger", visible=False, css_classes=["labkit-error"])
        self.claims = pn.pane.HTML(
            "", css_classes=["labkit-claims"], stylesheets=[CLAIM_CSS], sizing_mode="stretch_width"
        )
        self.show_seeds = pn.widgets.Checkbox(label="show each seed", value=False, css_classes=["labkit-show-seeds"])
        self.show_seeds.param.watch(lambda event: self.redraw(), "value")
        self.x_label = x_axis_label(self.module, self.values_now())
        self.plot = pn.pane.Plotly(
            curve_figure(self.shown_rows, self.metric, self.x_label),
            sizing_mode="stretch_width",
            min_width=280,
            height=400,
            config={"responsive": True},
        )
        self.all_users = pn.widgets.Checkbox(
            label="show all users' runs", value=False, css_classes=["labkit-all-users"]
        )
        self.all_users.param.watch(lambda event: self.refresh_runs(), "value")
        self.runs_table = pn.pane.DataFrame(
            index=False,
            escape=True,
            justify="left",
            text_align="start",
            stylesheets=[TABLE_CSS],
            sizing_mode="stretch_width",
        )
        self.refresh_runs()
        self._on_preset()
        self.view = self._layout()
        if pn.state.curdoc is not None and pn.state.curdoc.session_context is not None:
            # a page closed mid-run stops its run (it would hold the server's turn for a page nobody sees)
            pn.state.on_session_destroyed(lambda context: self.live.stop())

    # -- layout -------------------------------------------------------------------------------

    def _layout(self) -> pn.Column:
        by_name = {p.name: p for p in self.params}
        form = pn.Column(
            pn.Row(self.preset, margin=0),
            self.estimate,
            self.warning,
            *[labelled(c, by_name[n]) for n, c in self.controls.items()],
            self.seed,
            pn.Row(self.train_button, self.stop_button, margin=0),
            width=360,
            styles={"flex": "0 0 360px"},
        )
        results = pn.Column(
            self.status,
            self.expect,
            self.error,
            self.show_seeds,
            self.plot,
            pn.pane.Markdown("### Claims"),
            self.claims,
            sizing_mode="stretch_width",
            min_width=280,
            styles={"flex": "1 1 340px", "min-width": "280px"},
        )
        return pn.Column(
            self._header(),
            *self._teaching(),
            pn.FlexBox(form, results, flex_wrap="wrap", sizing_mode="stretch_width"),
            pn.pane.Markdown("### Recent runs (from the run store)"),
            self.all_users,
            self.runs_table,
            sizing_mode="stretch_width",
        )

    def _header(self) -> pn.pane.Markdown:
        if self.info is None:
            return pn.pane.Markdown(f"[← all methods](?)\n# {markdown_text(self.slug)}")
        info = self.info
        before, after = neighbours(info.slug)
        nav = ["[← all methods](?)"]
        nav.append(f"[‹ {markdown_text(before.short)}](?method={before.slug})" if before else "")
        nav.append(f"[{markdown_text(after.short)} ›](?method={after.slug})" if after else "")
        nav.append(f"[compare runs](?page=compare&method={info.slug})")
        return pn.pane.Markdown(
            " · ".join(n for n in nav if n) + f"\n# {info.id:02d} · {markdown_text(info.short)}\n"
            f"{markdown_text(info.title)} · [arXiv {info.arxiv}]({info.arxiv_url}) · {markdown_text(info.family)} · "
            f'<a class="labkit-lab" href="{html_text(lab_link(info))}" target="_blank">open the notebook in '
            "JupyterLab</a>",
            css_classes=["labkit-header"],
        )

    def _teaching(self) -> list:
        """What you will see, the key equation, the guided experiments (nothing when the method has no guide)."""
        guide = guide_of(self.slug)
        if guide is None:
            return []
        parts = [pn.pane.Markdown(f"### What you will see\n{guide.what_you_see}", css_classes=["labkit-what"])]
        if guide.equation:
            parts.append(pn.pane.LaTeX(f"$${guide.equation}$$", renderer="katex", css_classes=["labkit-equation"]))
            if guide.equation_note:
                parts.append(pn.pane.Markdown(guide.equation_note))
        if guide.experiments:
            buttons = []
            for experiment in guide.experiments:
                button = pn.widgets.Button(label=experiment.title, color="light", css_classes=["labkit-exp"])
                button.on_click(lambda event, x=experiment: self.apply_experiment(x))
                buttons.append(button)
            parts += [pn.pane.Markdown("### Try this"), pn.FlexBox(*buttons)]
        return parts

    # -- form -----------------------------------------------------------------------------------

    def values_now(self) -> dict:
        """The knob values the next run would get (the preset's, changed by the form where it holds a value)."""
        values = {p.name: p.value_for(self.preset.value) for p in self.params}
        values.update({n: c.value for n, c in self.controls.items() if c.value is not None})
        values.update(self.extra_overrides)
        return values

    def _on_preset(self) -> None:
        self.extra_overrides = {}
        self.show_warning()
        self.show_estimate()

    def show_estimate(self) -> str:
        """Show how long the picked preset takes (from this store's runs, else BENCHMARKS.md); returns the text."""
        text = estimated_time(self.store, self.slug, self.info.id if self.info else None, self.preset.value)
        self.estimate.object = "estimated time: " + markdown_text(text)
        return text

    def show_warning(self) -> str:
        """Show (or hide) the warning for the picked preset (the full preset without a GPU); returns its text."""
        text = preset_warning(self.preset.value, self.device)
        self.warning.object = markdown_text(text)
        self.warning.visible = bool(text)
        return text

    def apply_experiment(self, experiment) -> None:
        """Fill the form with a guided experiment's values (from the quick preset) and say what to expect."""
        self.preset.value = "quick"
        set_preset(self.controls, self.params, "quick")
        hidden = {}
        for name, value in experiment.overrides.items():
            if name in self.controls:
                self.controls[name].value = value
            else:
                hidden[name] = value
        self.extra_overrides = hidden
        also = f" (also sets {_short_dict(hidden)}, not in the form)" if hidden else ""
        self.expect.object = (
            f"**{markdown_text(experiment.title)}**{markdown_text(also)}: press Train. What to expect: "
            f"{markdown_text(experiment.expect)}"
        )
        self.expect.visible = True

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
        overrides.update(self.extra_overrides)
        return dict(preset=self.preset.value, seed=self.seed.value, device=self.device, **overrides)

    # -- training -------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.job is not None and self.job.thread.is_alive()

    def _start(self) -> dict | None:
        """Prepare a run: fresh rows and plot, busy buttons; returns the run's kwargs, or ``None`` (and shows why,
        starting nothing) when the form holds a refused value or a run is going."""
        if self.running:
            return None
        try:
            kwargs = self.run_kwargs()
        except ValueError as err:
            self._show_error(err, started=False)
            return None
        if self.result is not None:
            self.previous_rows = metric_rows(self.result.history, self.metric)
        self.live = LiveRows(self.metric)
        self.shown_rows = self.live.frame()
        values = self.values_now()
        self.x_label = x_axis_label(self.module, values)
        self.error.visible = False
        self.claims.object = ""
        self.train_button.disabled = True
        self.train_button.label = "Training…"
        self.stop_button.disabled = False
        self.status.object = f"Training at preset **{markdown_text(kwargs['preset'])}** …"
        self.show_warning()
        self.redraw()
        return kwargs

    def _work(self, kwargs: dict, job: Job) -> None:
        """The run itself (in the worker thread): waits its turn, runs, records the result for this user."""
        live = self.live
        start = time.monotonic()
        try:
            while not RUN_LOCK.acquire(timeout=0.2):
                if live.stopping:
                    raise Stopped("stopped by the learner before it started")
            job.started, job.waited_s = True, time.monotonic() - start
            try:
                if live.stopping:
                    raise Stopped("stopped by the learner before it started")
                result = self.module.run(callback=live.add, progress=False, record=False, **kwargs)
            finally:
                RUN_LOCK.release()
            self.runs.save(result, self.user)
            job.result = result
        except Exception as err:  # shown on the page by _finish  # noqa: BLE001
            job.error = err

    def _on_train(self, _event=None) -> None:
        """The Train button: start the run in a worker thread; in a server session the page's periodic callback
        follows it (``_tick``); outside one, :meth:`join` finishes it."""
        kwargs = self._start()
        if kwargs is None:
            return
        job = Job(threading.Thread(target=lambda: self._work(kwargs, job), name=f"labkit-{self.slug}", daemon=True))
        self.job = job
        job.thread.start()
        doc = pn.state.curdoc
        if doc is not None and doc.session_context is not None:
            self.poll = pn.state.add_periodic_callback(self._tick, period=REDRAW_MS)

    def _tick(self) -> None:
        """Periodic, on this session's document: redraw from the rows so far; finish once the run has ended."""
        job = self.job
        if job is None:
            return
        if not job.thread.is_alive():
            if self.poll is not None:
                self.poll.stop()
                self.poll = None
            self._finish(job)
            return
        if self.live.stopping:
            pass  # "Stopping …" stays
        elif job.started:
            self.status.object = f"Training … {len(self.live)} points so far."
        else:
            self.status.object = "Waiting for another run on this server to finish (runs take turns) …"
        if len(self.live) != len(self.shown_rows):
            self.shown_rows = self.live.frame()
            self.redraw()

    def join(self, timeout: float = 300.0):
        """Wait for the run started by Train to end and finish the page (tests, scripts); returns the Result."""
        job = self.job
        if job is None:
            return None
        job.thread.join(timeout)
        if job.thread.is_alive():
            raise TimeoutError(f"the run did not end within {timeout} s")
        self._finish(job)
        return job.result

    def train_now(self):
        """Train in this thread and update the page (tests, scripts); returns the Result or None."""
        kwargs = self._start()
        if kwargs is None:
            return None
        job = Job(threading.current_thread())  # alive while it runs: a second Train is refused meanwhile
        self.job = job
        try:
            self._work(kwargs, job)
        finally:
            self.job = None
        self._finish(job)
        return job.result

    def stop(self) -> None:
        """Stop the run at its next logged step; it is not recorded."""
        if self.running:
            self.live.stop()
            self.stop_button.disabled = True
            self.status.object = "Stopping at the next logged step …"

    def redraw(self) -> None:
        """Draw the curve from ``shown_rows`` (a fresh figure: nothing patched in place)."""
        self.plot.object = curve_figure(
            self.shown_rows, self.live.metric or self.metric, self.x_label, self.show_seeds.value, self.previous_rows
        )

    def _show_error(self, error: Exception, started: bool = True) -> None:
        self.status.object = (
            "The run stopped; nothing was recorded." if started else "Not trained: fix the marked values first."
        )
        self.error.object = f"**{type(error).__name__}**: {markdown_text(str(error))}"
        self.error.visible = True

    def _finish(self, job: Job) -> None:
        """The run has ended: the complete figure, then the claims (or why it stopped), Train again, recent runs."""
        self.train_button.disabled = False
        self.train_button.label = "Train"
        self.stop_button.disabled = True
        if job.error is not None or job.result is None:
            self.shown_rows = self.live.frame()
            self.redraw()
            if isinstance(job.error, Stopped):
                self.status.object = f"Stopped ({markdown_text(str(job.error))}); nothing was recorded."
                return
            self._show_error(job.error or RuntimeError("the run returned nothing"))
            return
        result = self.result = job.result
        self.shown_rows = metric_rows(result.history, self.metric)  # the complete curve, whatever the live rows saw
        self.x_label = x_axis_label(self.module, dict(result.params), result.history, self.metric)
        self.redraw()
        waited = f", after waiting {job.waited_s:.0f} s for another run" if job.waited_s >= 1 else ""
        self.status.object = markdown_text(
            f"Done in {result.duration_s:.1f} s (seed {result.seed}, preset {result.preset}{waited}); recorded."
        )
        note = missing_metric_note(result, self.metric)
        self.claims.object = claim_cards([c.to_dict() for c in result.claims]) + (
            f'<p class="labkit-note">{html_text(note)}</p>' if note else ""
        )
        self.refresh_runs()
        self.show_estimate()

    def refresh_runs(self) -> None:
        """Reload the method's recent runs from the store: this user's, or everyone's when asked."""
        runs = self.runs.runs(self.slug, None if self.all_users.value else self.user)
        self.runs_table.object = recent_runs_frame(runs, self.params)


# --------------------------------------------------------------------------- the app


def query_arg(name: str) -> str:
    """The value of ``name`` in the URL query (``?method=rpo``), or '' outside a server session."""
    args = pn.state.session_args or {}
    values = args.get(name) or [b""]
    return values[0].decode() if isinstance(values[0], bytes) else str(values[0])


def query_method() -> str:
    """The ``method`` of the URL query, or ''."""
    return query_arg("method")


def contents() -> pn.pane.Markdown:
    """The sidebar's contents list: the gallery, then every available method by family."""
    lines = ["[All methods](?)"]
    for family in FAMILIES:
        members = [m for m in METHODS if m.family == family and m.available]
        if members:
            lines.append(f"\n**{markdown_text(family)}**\n")
            lines += [f"- [{m.id:02d} {markdown_text(m.short)}](?method={m.slug})" for m in members]
    return pn.pane.Markdown("\n".join(lines), css_classes=["labkit-contents"])


def create_app(method: str = "", page: str = "") -> pn.viewable.Viewable:
    """The page for ``method`` (a slug): its method page, or its compare page when ``page == "compare"``; the
    gallery when ``method`` is empty, unknown or not available."""
    if not method:
        return gallery()
    try:
        module = get_method(method).load()
    except ValueError as err:  # unknown, or listed but not written yet
        return gallery(note=str(err))
    if page == "compare":
        from widgets.compare import ComparePage

        return ComparePage(module, user=session_user()).view
    return MethodPage(module).view


def collapse_sidebar_on_phones() -> None:
    """Close the contents sidebar once the page has loaded when the screen is narrower than ``PHONE_WIDTH`` (it
    would take the plot's width); the menu button opens it."""
    doc = pn.state.curdoc
    if doc is None or doc.session_context is None:
        return
    from bokeh.models import CustomJS

    code = f"if (window.innerWidth < {PHONE_WIDTH}) {{ document.getElementById('sidebar')?.classList.remove('show'); }}"
    doc.js_on_event("document_ready", CustomJS(code=code))


if __name__.startswith("bokeh"):  # `panel serve widgets/app.py`
    collapse_sidebar_on_phones()
    # the Bootstrap template: its files are served by Panel itself (the Fast ones fetch Open Sans from Google Fonts)
    pn.template.BootstrapTemplate(
        title="labkit",
        main=[create_app(query_method(), query_arg("page"))],
        sidebar=[contents()],
        header_background="#24292f",
        sidebar_width=260,
    ).servable()
