"""Panel forms built from a method's ``PARAMS``, by the same rules as the ipywidgets forms.

:func:`widgets.forms.control_spec` decides the kind of control, its range and step; this module
only maps each kind to its Panel widget. Panel has no log slider, so a ``log_slider`` becomes a
``DiscreteSlider`` over log-spaced values (the presets' values among them).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import panel as pn

from labkit.core.params import PRESETS, Param
from widgets.forms import SLIDER_STEPS, control_spec, help_text, param_controls, set_preset

WIDTH = 300


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
        return pn.widgets.IntSlider(value=value, start=int(spec.low), end=int(spec.high), step=1, **common)
    if kind == "float_slider":
        return pn.widgets.FloatSlider(
            value=value, start=spec.low, end=spec.high, step=spec.step, format="0[.]000", **common
        )
    if kind == "log_slider":
        options = log_options(param, spec.low, spec.high)
        return pn.widgets.DiscreteSlider(options=options, value=float(value), **common)
    if kind == "int_box":
        return pn.widgets.IntInput(value=value, **common)
    return pn.widgets.FloatInput(value=value, **common)


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
