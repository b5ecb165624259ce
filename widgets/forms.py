"""ipywidgets forms built from a method's ``PARAMS``, and the notebook explorer.

The rules that turn a :class:`~labkit.core.params.Param` into a control live in one function,
:func:`control_spec`, which the Panel app (``widgets/panel_forms.py``) uses too:

============================  =================================================================
param                         control
============================  =================================================================
bool                          checkbox
has ``choices``               dropdown of the choices
str (no choices)              text box
int, bounded, span <= 1000    integer slider
float, ``log``, low > 0       log slider over [low, high]
float, bounded                slider, if every preset value is easy to reach on it (none squeezed
                              into the first 5% of the range); otherwise a number box
unbounded or very wide        number box: a text box checked as it is typed
============================  =================================================================

In the notebook explorer (:class:`TextNumberBox`) and in the Panel app a number box, and the seed's box, is a
text box checked as it is typed (:func:`parse_typed` / :func:`parse_seed`, which use labkit's own
:func:`~labkit.core.params.check_value`): what is typed is never rounded, clamped or replaced, a refusal says in
words what is allowed (:func:`allowed_words`), and Train refuses (naming every refused box) and runs nothing.
Sliders stay only where both bounds are set: dragged, they offer only in-range values on their steps; their
typeable readout (which clamps and rounds) is replaced by a label (:func:`with_readout`). Text shown in Markdown
or HTML panes goes through :func:`markdown_text` / :func:`html_text`, so a URL or a typed value can
make no markup and run no script.

:func:`explorer` is what a notebook's last cell shows: the form, a Train button, a live plot of
one metric (one line per series) and the claim checks.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import ipywidgets as ipw

from labkit.core.params import PRESETS, Param, check_preset, check_seed, check_value
from widgets.app_plot import LiveRows, curve_figure, metric_rows, x_axis_label

SLIDER_STEPS = 100  # positions on a float slider
MAX_INT_SLIDER_SPAN = 1000  # wider int ranges get a number box
MAX_LOG_DECADES = 9  # wider log ranges get a number box
SQUEEZED = 0.05  # a float slider is refused when a preset value sits this close to its low end
REDRAW_EVERY_S = 0.3  # live plots redraw at most this often while training
ERROR_COLOUR = "#b00020"
WARNING_COLOUR = "#9a6700"


# --------------------------------------------------------------------------- Param -> control rules


@dataclass(frozen=True)
class ControlSpec:
    """Which control shows a param, toolkit-neutral.

    ``kind`` is one of ``checkbox``, ``select``, ``text``, ``int_slider``, ``float_slider``,
    ``log_slider``, ``int_box``, ``float_box``. For sliders ``low``/``high``/``step`` are the
    slider's range and step (for ``log_slider`` the step is in decades); ``options`` lists the
    choices of a ``select``.
    """

    kind: str
    low: float | None = None
    high: float | None = None
    step: float | None = None
    options: tuple | None = None


def control_spec(param: Param) -> ControlSpec:
    """The control for ``param``, by the rules in this module's docstring."""
    if param.type is bool:
        return ControlSpec("checkbox")
    if param.choices is not None:
        return ControlSpec("select", options=tuple(param.choices))
    if param.type is str:
        return ControlSpec("text")
    box = ControlSpec("int_box" if param.type is int else "float_box", param.low, param.high)
    low, high = param.low, param.high
    if low is None or high is None or not high > low:
        return box
    if param.type is int:
        return ControlSpec("int_slider", low, high, 1) if high - low <= MAX_INT_SLIDER_SPAN else box
    if param.log and low > 0:
        decades = math.log10(high / low)
        return ControlSpec("log_slider", low, high, decades / SLIDER_STEPS) if decades <= MAX_LOG_DECADES else box
    squeezed = any(0 < v - low < SQUEEZED * (high - low) for v in preset_values(param))
    return box if squeezed else ControlSpec("float_slider", low, high, (high - low) / SLIDER_STEPS)


def preset_values(param: Param) -> list:
    """The param's value in each preset (quick, standard, full)."""
    return [param.value_for(p) for p in PRESETS]


def help_text(param: Param) -> str:
    """One line for a tooltip: what the knob does and what is allowed."""
    return f"{param.help} ({param.describe()})" if param.help else param.describe()


# --------------------------------------------------------------------------- typed text and shown text


def allowed_words(param: Param) -> str:
    """What ``param`` allows, in words: "a whole number from 10 to 100,000", "one of a, b".

    The words are labkit's own (:meth:`labkit.core.params.Param.describe`, as the CLI says them); only choices are
    listed without brackets here."""
    if param.choices is not None:
        return "one of " + ", ".join(str(c) for c in param.choices)
    return param.describe()


def parse_typed(param: Param, text: str):
    """The value of ``text`` typed into ``param``'s box, checked by labkit's own rules
    (:func:`~labkit.core.params.check_value`: "2.5" is no whole number, "abc" and "" are no numbers, the
    range is inclusive). Raises ``ValueError`` that says in words what is allowed; nothing is rounded,
    clamped or guessed."""
    if not text.strip():
        raise ValueError(f"{param.name} is empty: expected {allowed_words(param)}")
    try:
        return check_value(param, text)
    except ValueError as err:  # labkit's message, with the choices listed as allowed_words lists them
        raise ValueError(str(err).replace(param.describe(), allowed_words(param))) from None


def parse_seed(text: str) -> int:
    """The seed typed as ``text``, by labkit's :func:`~labkit.core.params.check_seed` (a whole number from 0)."""
    if not text.strip():
        raise ValueError("seed is empty: expected a whole number from 0")
    return check_seed(text)


def text_of(value) -> str:
    """A value as a number box shows it: ``1000`` → "1000", ``0.1`` → "0.1", ``1e-05`` → "1e-05"."""
    if isinstance(value, float):
        return repr(value)
    return str(value)


_MARKDOWN_INLINE = re.compile(r"([\\`*_\[\]~|$])")  # emphasis, code, links, tables, math: anywhere in a line
_MARKDOWN_LINE_START = re.compile(r"^(\s*\d*)([#+=.)-])", re.MULTILINE)  # headings, lists ("-", "+", "1.")


def markdown_text(text: str) -> str:
    """``text`` shown as itself in a Markdown pane: HTML escaped (no tag is made, no script runs) and the
    Markdown punctuation that could make a link, emphasis, code, math, a heading or a list backslash-escaped."""
    escaped = _MARKDOWN_INLINE.sub(r"\\\1", html.escape(str(text), quote=False))
    return _MARKDOWN_LINE_START.sub(lambda m: m.group(1) + "\\" + m.group(2), escaped)


def html_text(text: str) -> str:
    """``text`` shown as itself inside HTML (element content and attribute values)."""
    return html.escape(str(text), quote=True)


FULL_ON_CPU = (
    "The full preset is sized for one GPU, and no GPU is available here: on a CPU it may take very long. "
    "Train still runs it; the standard preset takes minutes on a CPU."
)


def gpu_available() -> bool:
    """Whether torch sees a CUDA GPU (torch is imported only when this is asked)."""
    import torch

    return bool(torch.cuda.is_available())


def preset_warning(preset: str, device: str = "auto") -> str:
    """A warning to show before training ``preset`` on ``device`` ('' when there is none): the full preset
    without a GPU (or on ``device="cpu"``) may take very long. It warns; it blocks nothing."""
    if preset != "full" or (device != "cpu" and gpu_available()):
        return ""
    return FULL_ON_CPU


def shown_params(params: Iterable[Param], main_only: bool = True) -> list[Param]:
    """The params a form shows: the ``main`` ones, or all of them."""
    return [p for p in params if p.main or not main_only]


def resolve_method(method) -> Any:
    """A method's module from a slug, short name, id, registry entry, or the module itself.

    Anything with ``PARAMS`` and ``run`` counts as a module (tests pass small fakes).
    """
    if hasattr(method, "PARAMS") and hasattr(method, "run"):
        return method
    if hasattr(method, "load"):  # a registry MethodInfo
        return method.load()
    if isinstance(method, (str, int)):
        from labkit.core.registry import get_method

        return get_method(method).load()
    raise TypeError(f"expected a method slug or a module with PARAMS and run, got {type(method).__name__}")


def method_name(module) -> str:
    """The slug of a method module (the last part of its module name)."""
    return getattr(module, "__name__", "method").rsplit(".", 1)[-1]


def changed_values(params: Iterable[Param], values: dict, preset: str) -> dict:
    """The form values that differ from the preset's: the overrides a run needs."""
    by_name = {p.name: p for p in params}
    return {k: v for k, v in values.items() if v != by_name[k].value_for(preset)}


# --------------------------------------------------------------------------- live curves


def new_live_figure(widget: bool, x_label: str, metric: str | None):
    """An empty live plot: a ``go.FigureWidget`` when ``widget`` (needs anywidget, updated in place), else a
    ``go.Figure`` (redrawn into an Output area)."""
    import plotly.graph_objects as go

    empty = curve_figure(metric_rows(None, metric), metric, x_label)
    return go.FigureWidget(empty) if widget else empty


def figure_widget_available() -> bool:
    """Plotly's ``FigureWidget`` needs the ``anywidget`` package."""
    import importlib.util

    return importlib.util.find_spec("anywidget") is not None


def claims_text(result) -> str:
    """The claim checks of a run, the paper's headline claim first, each with its three-way verdict."""
    return result.claims_text()


def missing_metric_note(result, metric: str | None) -> str:
    """A note when the plotted metric never showed up in the run's history ('' otherwise)."""
    logged = list(dict.fromkeys(result.history["metric"]))
    if metric is None or metric in logged:
        return ""
    return f"metric {metric!r} was not logged by this run; logged metrics: {logged}"


# --------------------------------------------------------------------------- ipywidgets


def make_control(param: Param, value=None):
    """The ipywidgets control for one param, set to ``value`` (default: its quick value)."""
    spec = control_spec(param)
    value = param.quick if value is None else value
    common = dict(
        description=param.name,
        tooltip=help_text(param),
        style={"description_width": "140px"},
        layout=ipw.Layout(width="460px"),
    )
    kind = spec.kind
    if kind == "checkbox":
        return ipw.Checkbox(value=value, indent=False, **common)
    if kind == "select":
        return ipw.Dropdown(options=list(spec.options), value=value, **common)
    if kind == "text":
        return ipw.Text(value=value, **common)
    if kind == "int_slider":
        return ipw.IntSlider(
            value=value, min=spec.low, max=spec.high, step=1, continuous_update=False, readout=False, **common
        )
    if kind == "float_slider":
        return ipw.FloatSlider(
            value=value,
            min=spec.low,
            max=spec.high,
            step=spec.step,
            readout_format=".3g",
            continuous_update=False,
            readout=False,
            **common,
        )
    if kind == "log_slider":
        return ipw.FloatLogSlider(
            value=value,
            base=10,
            min=math.log10(spec.low),
            max=math.log10(spec.high),
            step=spec.step,
            readout_format=".3g",
            continuous_update=False,
            readout=False,
            **common,
        )
    return TextNumberBox(lambda text: parse_typed(param, text), value, **common)


SLIDERS = (ipw.IntSlider, ipw.FloatSlider, ipw.FloatLogSlider)


def with_readout(control):
    """A slider shown with its value beside it, as a label that cannot be typed into (an ipywidgets slider's own
    readout can: it clamps 1000 to the slider's end and rounds "2.5" on an int slider, without a word).
    Any other control is returned as it is."""
    if not isinstance(control, SLIDERS):
        return control
    fmt = str if isinstance(control, ipw.IntSlider) else (lambda v: f"{v:.3g}")
    label = ipw.Label(fmt(control.value))
    ipw.dlink((control, "value"), (label, "value"), transform=fmt)
    return ipw.HBox([control, label])


def param_controls(params: Iterable[Param], preset: str = "quick", main_only: bool = True, make=None) -> dict:
    """``{name: control}`` for the params (the ``main`` ones unless ``main_only=False``), set to ``preset``.
    ``make(param, value)`` builds one control (default: the ipywidgets one, :func:`make_control`)."""
    check_preset(preset)
    make = make or make_control
    return {p.name: make(p, p.value_for(preset)) for p in shown_params(params, main_only)}


def set_preset(controls: dict, params: Iterable[Param], preset: str) -> None:
    """Put every control back to ``preset``'s value of its param."""
    for p in params:
        if p.name in controls:
            controls[p.name].value = p.value_for(preset)


def preset_dropdown(controls: dict, params: Iterable[Param], preset: str = "quick") -> ipw.Dropdown:
    """A preset picker that resets ``controls`` to the chosen preset's values."""
    params = list(params)
    picker = ipw.Dropdown(
        options=list(PRESETS),
        value=preset,
        description="preset",
        style={"description_width": "140px"},
        layout=ipw.Layout(width="460px"),
    )
    picker.observe(lambda change: set_preset(controls, params, change["new"]), names="value")
    return picker


class TextNumberBox(ipw.VBox):
    """A number typed as text, checked on every keystroke; the refusal shows in words under the box.

    ipywidgets' ``IntText`` turns "2.5" into 2, ``BoundedIntText`` clamps -1 to 0, and both hold no "abc" or empty
    text: the box would show one value and train on another. Here the text is never changed behind the learner's
    back: ``parse(text)`` returns the value or raises ``ValueError`` worded for the learner. ``value`` is the checked
    value, or ``None`` while the text is refused (then ``error`` says why); setting ``value`` writes its text.
    """

    def __init__(self, parse, value, description: str, tooltip: str = "", **common):
        self.parse = parse
        self.input = ipw.Text(
            value=text_of(value), description=description, tooltip=tooltip, continuous_update=True, **common
        )
        self.refusal = ipw.HTML("", layout=ipw.Layout(display="none", margin="0 0 0 144px"))
        self.text = ""
        self.error = ""
        self._value = None
        super().__init__([self.input, self.refusal], tooltip=tooltip)
        self._check(self.input.value)
        self.input.observe(lambda change: self._check(change["new"]), names="value")

    @property
    def value(self):
        return self._value

    @value.setter
    def value(self, value) -> None:
        text = text_of(value)
        if text == self.input.value:
            self._check(text)
        self.input.value = text  # the observer checks it

    def _check(self, text: str) -> None:
        self.text = text or ""
        try:
            self._value, self.error = self.parse(self.text), ""
        except ValueError as err:
            self._value, self.error = None, str(err)
        self.refusal.value = f'<span style="color:{ERROR_COLOUR}">{html_text(self.error)}</span>' if self.error else ""
        self.refusal.layout.display = "" if self.error else "none"


def form_errors(boxes: Iterable) -> list[str]:
    """Why a form cannot train as it is: the refusal of every box that holds a refused text, in form order."""
    return [box.error for box in boxes if getattr(box, "error", "")]


class Explorer(ipw.VBox):
    """A method's form, a Train button, a live plot of one metric, and the claim checks.

    Training runs in the button's callback (the kernel is busy meanwhile); the plot redraws at most
    every ``REDRAW_EVERY_S`` seconds from the run's ``callback``. A ``go.FigureWidget`` is used when
    anywidget is installed; otherwise the plot is redrawn into an ``Output`` area.
    """

    def __init__(
        self,
        method,
        metric: str | None = None,
        *,
        device: str = "auto",
        record: bool | None = None,
        main_only: bool = True,
    ):
        self.module = resolve_method(method)
        self.params = list(self.module.PARAMS)
        self.metric = metric or getattr(self.module, "MAIN_METRIC", None)
        self.device = device
        self.record = record
        self.result = None
        self.controls = param_controls(self.params, "quick", main_only)
        self.preset_picker = preset_dropdown(self.controls, self.params)
        self.warning = ipw.HTML("", layout=ipw.Layout(display="none"))
        self.preset_picker.observe(lambda change: self._show_warning(), names="value")
        self.seed_box = TextNumberBox(
            parse_seed,
            0,
            description="seed",
            tooltip="a whole number from 0",
            style={"description_width": "140px"},
            layout=ipw.Layout(width="460px"),
        )
        self.train_button = ipw.Button(description="Train", button_style="primary", icon="play")
        self.train_button.on_click(self.train)
        self.status = ipw.HTML()
        self.figure = new_live_figure(figure_widget_available(), self._x_label(), self.metric)
        self.plot_output = None if isinstance(self.figure, ipw.DOMWidget) else ipw.Output()
        plot = self.figure if self.plot_output is None else self.plot_output
        title = ipw.HTML(f"<b>{html.escape(method_name(self.module))}</b>: change the knobs, then Train")
        super().__init__(
            [
                title,
                self.preset_picker,
                self.warning,
                *map(with_readout, self.controls.values()),
                self.seed_box,
                self.train_button,
                self.status,
                plot,
            ]
        )
        self._show_figure()

    def values(self) -> dict:
        """The form's current values, by param name."""
        return {name: control.value for name, control in self.controls.items()}

    def train(self, _button=None):
        """Run the method with the form's values; update the plot live; show claims or the error.

        A box holding a refused text stops it before anything runs: the status names every refused box."""
        errors = form_errors([*self.controls.values(), self.seed_box])
        if errors:
            self._set_status("Not trained: fix the boxes first.\n" + "\n".join(errors), error=True)
            return None
        preset = self.preset_picker.value
        overrides = changed_values(self.params, self.values(), preset)
        live = LiveRows(self.metric, every=REDRAW_EVERY_S)
        self._redraw(live)
        self.train_button.disabled = True
        warning = self._show_warning()
        self._set_status(f"training ({preset}{_describe(overrides)}) …" + (f"\n\n{warning}" if warning else ""))

        def on_row(row):
            live.add(row)
            if live.due():
                self._redraw(live)

        try:
            result = self.module.run(
                preset=preset,
                seed=self.seed_box.value,
                device=self.device,
                callback=on_row,
                progress=False,
                record=self.record,
                **overrides,
            )
        except Exception as err:  # shown to the learner, never raised into the notebook
            self._set_status(f"{type(err).__name__}: {err}", error=True)
            return None
        finally:
            self.train_button.disabled = False
        self.result = result
        self._redraw(live, result.history)
        note = missing_metric_note(result, self.metric)
        head = f"done in {result.duration_s:.1f} s · preset {preset} · seed {result.seed}{_describe(overrides)}"
        self._set_status(head + "\n\n" + claims_text(result) + (f"\n\n{note}" if note else ""))
        return result

    def _show_warning(self) -> str:
        """Show (or hide) the warning for the picked preset under the preset picker; returns its text."""
        text = preset_warning(self.preset_picker.value, self.device)
        self.warning.value = f'<span style="color:{WARNING_COLOUR}">⚠ {html_text(text)}</span>' if text else ""
        self.warning.layout.display = "" if text else "none"
        return text

    def _set_status(self, text: str, error: bool = False) -> None:
        colour = f"color:{ERROR_COLOUR};" if error else ""
        self.status.value = f'<pre style="white-space:pre-wrap;{colour}">{html.escape(text, quote=False)}</pre>'

    def _x_label(self, history=None) -> str:
        """What the x-axis counts (rounds, iterations, ...), from the form's values and, after a run, its history."""
        return x_axis_label(self.module, self.values(), history, self.metric)

    def _redraw(self, live: LiveRows, history=None) -> None:
        """Draw the rows so far as the app does (:func:`~widgets.app_plot.curve_figure`: per series the mean over
        seeds with a ±1 sd band): a FigureWidget takes the new traces and layout in place, a Figure is replaced."""
        fresh = curve_figure(live.frame(), live.metric, self._x_label(history))
        if isinstance(self.figure, ipw.DOMWidget):
            with self.figure.batch_update():
                self.figure.data = []
                self.figure.add_traces(fresh.data)
                self.figure.layout = fresh.layout
        else:
            self.figure = fresh
        self._show_figure()

    def _show_figure(self) -> None:
        """Without FigureWidget: redraw the figure into the Output area (in a kernel; a no-op elsewhere)."""
        from IPython import get_ipython
        from IPython.display import display

        if self.plot_output is None or get_ipython() is None:
            return

        with self.plot_output:
            self.plot_output.clear_output(wait=True)
            display(self.figure)

    def fallback_text(self) -> str:
        """What a saved notebook shows in place of the live form, in words: what the explorer is and how to use it.

        A running kernel renders the widget itself; GitHub, nbviewer, the HTML report and a JupyterLab that opens the
        notebook without running it have no widget state (it is stripped from the committed notebooks), so they show
        this text instead of the raw ``Explorer(children=(HTML(...`` repr."""
        slug = method_name(self.module)
        try:
            from labkit.core.registry import get_method

            name = f"{get_method(slug).short} ({slug})"
        except ValueError:  # a module outside the registry (a test's fake)
            name = slug
        knobs = ", ".join(self.controls) or "none"
        plot = f"a live plot of {self.metric} while it trains" if self.metric else "a live plot while it trains"
        return (
            f"Explorer for {name}: a form with the preset, the knobs ({knobs}) and the seed, a Train button, "
            f"{plot}, and the claim checks when it is done. It is interactive: run this notebook in Jupyter "
            "(JupyterLab, or Binder) to change the knobs and train from here; a saved copy shows only this text."
        )

    def _repr_mimebundle_(self, **kwargs) -> dict:
        """The live widget's view, with :meth:`fallback_text` as ``text/plain`` and as escaped ``text/html``.

        Front ends pick the richest type they can show: a kernel with the widget renders the view; without the widget
        state JupyterLab falls back to ``text/html``, nbviewer and the report to ``text/html``, a terminal to
        ``text/plain`` (ipywidgets' own plain text is the truncated repr)."""
        bundle = super()._repr_mimebundle_(**kwargs)
        text = self.fallback_text()
        bundle["text/plain"] = text
        bundle["text/html"] = f'<p class="labkit-explorer-fallback"><i>{html.escape(text)}</i></p>'
        return bundle


def _describe(overrides: dict) -> str:
    return "" if not overrides else " · " + ", ".join(f"{k}={v!r}" for k, v in overrides.items())


def explorer(method, metric: str | None = None, **options) -> Explorer:
    """The notebook widget for a method (slug or module): form, Train button, live plot, claim checks.

    ``metric`` is the one plotted live (default: the method's ``MAIN_METRIC``, else the first one logged). ``options``:
    ``device`` ("auto"), ``record`` (write a run record; default: ``$LABKIT_RECORD``), ``main_only``.
    """
    return Explorer(method, metric, **options)
