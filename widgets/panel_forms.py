"""Panel forms built from a method's ``PARAMS``, by the same rules as the ipywidgets forms.

:func:`widgets.forms.control_spec` decides the kind of control, its range and step; this module
only maps each kind to its Panel widget. Panel has no log slider, so a ``log_slider`` becomes a
``DiscreteSlider`` over log-spaced values (the presets' values among them).

Bounded sliders (``int_slider``, ``float_slider``) are :class:`SliderBox`: a number box over a slider, so an
exact value can be typed. Number boxes (``int_box``, ``float_box``, the app's seed, and a slider's box) are
:class:`NumberBox`: a text box whose text is never changed behind the learner's back (Panel's ``IntInput``
turns "2.5" into 25, "abc" into ``None`` and clamps -1 to 0). What is typed is checked on every keystroke by
labkit's own rules; a refusal shows under the box in words, and ``value`` is ``None`` until the text is a valid
value.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import panel as pn

from labkit.core.params import PRESETS, Param
from widgets.forms import (
    SLIDER_STEPS,
    control_spec,
    help_text,
    html_text,
    param_controls,
    parse_seed,
    parse_typed,
    set_preset,
    text_of,
)

WIDTH = 300
REFUSAL_CSS = ":host { color: #b00020; font-size: 13px; }"


class NumberBox(pn.viewable.Viewer):
    """A number typed as text, checked as it is typed; shows why a text is refused, under the box.

    ``parse(text)`` returns the value or raises ``ValueError`` worded for the learner. ``value`` is the
    checked value, or ``None`` while the text is refused (then ``error`` says why); setting ``value``
    writes its text into the box. ``text`` is what the box holds now.
    """

    def __init__(self, parse: Callable[[str], object], value, label: str, width: int = WIDTH):
        super().__init__()
        self.parse = parse
        self.input = pn.widgets.TextInput(label=label, value=text_of(value), width=width)
        self.refusal = pn.pane.HTML("", visible=False, stylesheets=[REFUSAL_CSS], width=width, margin=(0, 10))
        self.text = ""
        self.error = ""
        self._value = None
        self._check(self.input.value)
        # value_input: every keystroke; value: Enter or leaving the box (and values set from Python)
        for name in ("value_input", "value"):
            self.input.param.watch(lambda event: self._check(event.new), name)

    @property
    def value(self):
        return self._value

    @value.setter
    def value(self, value) -> None:
        text = text_of(value)
        self.input.param.update(value=text, value_input=text)
        self._check(text)

    def _check(self, text: str) -> None:
        self.text = text or ""
        try:
            self._value, self.error = self.parse(self.text), ""
        except ValueError as err:
            self._value, self.error = None, str(err)
        self.refusal.object = html_text(self.error)
        self.refusal.visible = bool(self.error)

    def __panel__(self):
        return pn.Column(self.input, self.refusal, margin=0)


class SliderBox(pn.viewable.Viewer):
    """A number box with a slider under it: drag to explore the range, or type an exact value (25 on a 1-1000
    slider is hard to hit by dragging). The box is the value: typing a valid value moves the slider, dragging
    writes the slider's value into the box; a refused text leaves the slider where it was (see :class:`NumberBox`).
    """

    def __init__(self, slider, parse: Callable[[str], object], value, label: str):
        super().__init__()
        self.slider = slider
        self.box = NumberBox(parse, value, label)
        self._syncing = False
        self.box.input.param.watch(lambda *events: self._to_slider(), ["value_input", "value"])
        self.slider.param.watch(lambda event: self._to_box(event.new), "value")

    @property
    def value(self):
        return self.box.value

    @value.setter
    def value(self, value) -> None:
        self.box.value = value
        self._to_slider()

    @property
    def error(self) -> str:
        return self.box.error

    @property
    def text(self) -> str:
        return self.box.text

    def _to_slider(self) -> None:
        value = self.box.value
        if self._syncing or value is None:
            return
        self._syncing = True
        try:
            self.slider.value = min(max(value, self.slider.start), self.slider.end)
        finally:
            self._syncing = False

    def _to_box(self, value) -> None:
        if self._syncing:
            return
        self._syncing = True
        try:
            self.box.value = float(f"{value:.6g}") if isinstance(value, float) else value  # no 0.35000000000000003
        finally:
            self._syncing = False

    def __panel__(self):
        return pn.Column(self.box, self.slider, margin=0)


def seed_box(value: int = 0) -> NumberBox:
    """The seed's box: a whole number from 0, by labkit's ``check_seed``."""
    return NumberBox(parse_seed, value, "seed")


def log_options(param: Param, low: float, high: float) -> dict[str, float]:
    """``{label: value}``: ``SLIDER_STEPS + 1`` log-spaced values from low to high, plus the preset values."""
    values = {float(f"{v:.3g}") for v in np.logspace(np.log10(low), np.log10(high), SLIDER_STEPS + 1)}
    values |= {float(v) for v in (low, high, *(param.value_for(p) for p in PRESETS))}
    return {f"{v:.3g}": v for v in sorted(values)}


def panel_control(param: Param, value=None):
    """The Panel widget for one param, set to ``value`` (default: its quick value)."""
    spec = control_spec(param)
    value = param.quick if value is None else value
    common = dict(label=param.name, width=WIDTH)
    kind = spec.kind
    if kind == "checkbox":
        return pn.widgets.Checkbox(value=value, **common)
    if kind == "select":
        return pn.widgets.Select(options=list(spec.options), value=value, **common)
    if kind == "text":
        return pn.widgets.TextInput(value=value, **common)
    if kind == "int_slider":
        slider = pn.widgets.IntSlider(value=value, start=int(spec.low), end=int(spec.high), step=1, width=WIDTH)
        return SliderBox(slider, lambda text: parse_typed(param, text), value, param.name)
    if kind == "float_slider":
        slider = pn.widgets.FloatSlider(
            value=value, start=spec.low, end=spec.high, step=spec.step, format="0[.]000", width=WIDTH
        )
        return SliderBox(slider, lambda text: parse_typed(param, text), value, param.name)
    if kind == "log_slider":
        options = log_options(param, spec.low, spec.high)
        return pn.widgets.DiscreteSlider(options=options, value=float(value), **common)
    return NumberBox(lambda text: parse_typed(param, text), value, param.name)


def panel_controls(params: Iterable[Param], preset: str = "quick", main_only: bool = True) -> dict:
    """``{name: Panel widget}`` for the params (the ``main`` ones unless ``main_only=False``), set to ``preset``."""
    return param_controls(params, preset, main_only, make=panel_control)


def panel_preset_select(controls: dict, params: Iterable[Param], preset: str = "quick"):
    """A preset select that resets ``controls`` to the chosen preset's values."""
    params = list(params)
    select = pn.widgets.Select(label="preset", options=list(PRESETS), value=preset, width=WIDTH)
    select.param.watch(lambda event: set_preset(controls, params, event.new), "value")
    return select


def labelled(control, param: Param):
    """The control with a help icon that says what the knob does and what is allowed."""
    return pn.Row(control, pn.widgets.TooltipIcon(value=help_text(param), margin=(25, 0, 0, -5)))
