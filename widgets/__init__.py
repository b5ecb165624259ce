"""Interactive front ends for labkit: ipywidgets forms for notebooks and the Panel app.

``import widgets`` is cheap: ipywidgets loads on first use of :func:`explorer` or
:func:`param_controls`, and Panel only when ``widgets.app`` or ``widgets.panel_forms`` is imported.

In a notebook::

    import widgets
    widgets.explorer("rpo", metric="gold_reward")   # a form, a Train button, a live plot

The app: ``panel serve widgets/app.py``.
"""

from __future__ import annotations

_LAZY = {"explorer", "param_controls", "preset_dropdown", "control_spec", "ControlSpec", "Explorer"}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    """Load :mod:`widgets.forms` (and ipywidgets) only when one of its names is first used."""
    if name in _LAZY:
        from . import forms

        return getattr(forms, name)
    raise AttributeError(f"module 'widgets' has no attribute {name!r}")
