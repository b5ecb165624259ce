"""Tunable parameters, presets, and their validation.

A method declares its knobs as a list of :class:`Param`. ``resolve_params`` turns a preset name
plus user overrides into a plain dict, and raises a ``ValueError`` that says what is allowed for
anything it cannot accept: an unknown preset, an unknown name, a wrong type, a value out of range.
The same specs drive the notebook parameters, the CLI (``-p key=value``), the ipywidgets form and
the Panel app, so the rules are written once, here.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Any

PRESETS = ("quick", "standard", "full")
PRESET_HELP = {
    "quick": "CI, a first look, Binder: at most ~30 s of a notebook on 2 CPU cores",
    "standard": "a learner on a laptop: a few minutes on CPU",
    "full": "one GPU: a few minutes, the closest to the paper that runs offline",
}
_TYPES = {int: "int", float: "float", str: "str", bool: "bool"}


@dataclass(frozen=True)
class Param:
    """One tunable knob: its type, allowed values, and its value in each preset.

    ``standard`` and ``full`` default to the ``quick`` value. Numbers take ``low``/``high``
    (inclusive); strings take ``choices``. ``log=True`` asks sliders for a log scale.
    """

    name: str
    type: type
    quick: Any
    standard: Any = None
    full: Any = None
    low: float | None = None
    high: float | None = None
    choices: tuple | None = None
    help: str = ""
    log: bool = False
    main: bool = True  # shown in widgets and the notebook's parameters cell

    def __post_init__(self):
        if self.type not in _TYPES:
            raise TypeError(f"Param {self.name!r}: type must be one of int, float, str, bool")
        for preset in PRESETS:
            check_value(self, self.value_for(preset))

    def value_for(self, preset: str) -> Any:
        value = getattr(self, preset)
        return self.quick if value is None else value

    def describe(self) -> str:
        """Allowed values in words, for error messages and help text."""
        if self.choices is not None:
            return f"one of {list(self.choices)}"
        if self.type is bool:
            return "true or false"
        if self.type is str:
            return "any text"
        kind = "a whole number" if self.type is int else "a number"
        if self.low is not None and self.high is not None:
            return f"{kind} from {_number_words(self.low)} to {_number_words(self.high)}"
        if self.low is not None:
            return f"{kind} of at least {_number_words(self.low)}"
        if self.high is not None:
            return f"{kind} of at most {_number_words(self.high)}"
        return kind


def _number_words(value: float) -> str:
    """10 → "10", 100000 → "100,000", 0.0 → "0", 1e-05 → "1e-05" (bounds as a person reads them)."""
    if float(value).is_integer() and abs(value) < 1e15:
        return f"{int(value):,}"
    return f"{value:g}"


def check_value(param: Param, value: Any) -> Any:
    """Return ``value`` converted to the param's type, or raise ``ValueError``."""
    value = _coerce(param, value)
    if param.choices is not None and value not in param.choices:
        raise ValueError(f"{param.name}={value!r} is not allowed: expected {param.describe()}")
    if param.type in (int, float):
        if value != value:  # NaN
            raise ValueError(f"{param.name}=nan is not allowed: expected {param.describe()}")
        if (param.low is not None and value < param.low) or (param.high is not None and value > param.high):
            raise ValueError(f"{param.name}={value!r} is out of range: expected {param.describe()}")
    return value


def _coerce(param: Param, value: Any) -> Any:
    kind = param.type
    if isinstance(value, str) and kind is not str:
        return _parse_text(param, value)
    if kind is bool:
        if isinstance(value, bool):
            return value
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif kind is str and isinstance(value, str):
        return value
    raise ValueError(f"{param.name}={value!r} has the wrong type ({type(value).__name__}): expected {param.describe()}")


#: plain ASCII numbers only: Python's int()/float() also take "１" (full-width) and "1_0" (= 10), which we refuse
_INT_TEXT = re.compile(r"[+-]?[0-9]+")
_FLOAT_TEXT = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")


def _parse_text(param: Param, text: str) -> Any:
    """Parse a value typed as text (CLI ``-p key=value``, a text box): ASCII digits only."""
    text = text.strip()
    try:
        if param.type is bool:
            lowered = text.lower()
            if lowered in ("true", "1", "yes", "on"):
                return True
            if lowered in ("false", "0", "no", "off"):
                return False
            raise ValueError
        if param.type is int:
            if _INT_TEXT.fullmatch(text):
                return int(text)
            if _FLOAT_TEXT.fullmatch(text) and float(text).is_integer():
                return int(float(text))
            raise ValueError
        if _FLOAT_TEXT.fullmatch(text):
            return float(text)
        raise ValueError
    except ValueError:
        raise ValueError(f"{param.name}={text!r} is not a valid value: expected {param.describe()}") from None


#: the largest seed: numpy and torch generators take it, and a method may add a few hundred to it
MAX_SEED = 2**31 - 1


def check_seed(seed: Any) -> int:
    """A seed is a whole number from 0 to :data:`MAX_SEED` (text of ASCII digits is accepted)."""
    if isinstance(seed, str) and _INT_TEXT.fullmatch(seed.strip()):
        seed = int(seed.strip())
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed={seed!r} is not allowed: expected a whole number from 0 to {MAX_SEED:,}")
    return seed


def check_run_args(params, preset: str, overrides: dict | None, seed: Any, device: str) -> dict:
    """Everything a run will be refused for, checked before any work starts: the preset, each parameter and
    the method's cross-field constraints (:func:`resolve_params`), the seed, and the device (unknown, or not
    available on this machine). Returns the resolved parameter values. Used by ``run()``, the CLI (``run``,
    ``sweep``: the whole grid), the widgets and the app."""
    from .device import pick_device

    values = resolve_params(params, preset, overrides)
    check_seed(seed)
    pick_device(device)
    return values


def check_preset(preset: str) -> str:
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}: choose one of {list(PRESETS)}")
    return preset


def resolve_params(params: list[Param], preset: str = "quick", overrides: dict | None = None) -> dict:
    """The preset's values with ``overrides`` applied, all validated.

    >>> resolve_params([Param("lr", float, 0.1, low=0)], "quick", {"lr": "0.5"})
    {'lr': 0.5}
    """
    check_preset(preset)
    by_name = {p.name: p for p in params}
    values = {p.name: p.value_for(preset) for p in params}
    for name, value in (overrides or {}).items():
        if name not in by_name:
            hint = difflib.get_close_matches(name, list(by_name), n=1)
            maybe = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise ValueError(f"unknown parameter {name!r}{maybe}: allowed are {sorted(by_name)}")
        values[name] = check_value(by_name[name], value)
    knobs_class = getattr(params, "knobs_class", None)
    if knobs_class is not None:
        knobs_class(**values)  # the method's cross-field checks (its __post_init__) raise ValueError
    return values


def parse_assignments(items: list[str]) -> dict:
    """``["lr=0.1", "arm=dpo"]`` → ``{"lr": "0.1", "arm": "dpo"}`` (values stay text; see check_value)."""
    out = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"expected KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        out[key.strip()] = value
    return out


def param_table(params: list[Param]):
    """A DataFrame of the params: value per preset, what is allowed, and what each one does."""
    import pandas as pd

    return pd.DataFrame(
        [
            {
                "name": p.name,
                "quick": p.quick,
                "standard": p.value_for("standard"),
                "full": p.value_for("full"),
                "allowed": p.describe(),
                "help": p.help,
            }
            for p in params
        ]
    )


#: what a notebook's parameters cell sets besides the method's params
NOTEBOOK_RUN_ARGS = ("preset", "seed", "device")


def papermill_injected_names(namespace: dict) -> list[str]:
    """Names assigned by the cell papermill injected (its source starts with ``# Parameters``), read from
    IPython's input history ``In`` in ``namespace``; ``[]`` outside a papermill execution."""
    import ast

    names: list[str] = []
    for source in namespace.get("In") or []:
        if isinstance(source, str) and source.lstrip().startswith("# Parameters"):
            try:
                tree = ast.parse(source)
            except SyntaxError:
                continue
            names += [
                t.id
                for node in tree.body
                if isinstance(node, ast.Assign)
                for t in node.targets
                if isinstance(t, ast.Name)
            ]
    return names


def overrides_from(params: list[Param], namespace: dict) -> dict:
    """The knobs a notebook's parameters cell (or papermill) set: every param of ``params`` found in
    ``namespace`` with a value other than ``None``. Used as ``overrides_from(m.PARAMS, globals())``,
    so a value injected by papermill for any param, shown in the cell or not, reaches ``run``.

    Everything is checked here, in the notebook's first code cell after the parameters, before any work:
    a name papermill injected that the method does not know (``-p etaa 5``), each value, the method's
    cross-field constraints, the preset, the seed and the device."""
    known = {p.name for p in params} | set(NOTEBOOK_RUN_ARGS)
    unknown = [name for name in papermill_injected_names(namespace) if name not in known]
    if unknown:
        hints = [difflib.get_close_matches(name, sorted(known), n=1) for name in unknown]
        maybe = "".join(f" ({u!r}: did you mean {h[0]!r}?)" for u, h in zip(unknown, hints) if h)
        raise ValueError(f"unknown parameter(s) {unknown}{maybe}: allowed are {sorted(known)}")
    overrides = {p.name: namespace[p.name] for p in params if namespace.get(p.name) is not None}
    if all(name in namespace for name in NOTEBOOK_RUN_ARGS):
        check_run_args(params, namespace["preset"], overrides, namespace["seed"], namespace["device"])
    return overrides


# --- typed knobs: one dataclass declares the params and gives the body typed attribute access -------------


def knob(
    quick: Any,
    standard: Any = None,
    full: Any = None,
    *,
    low: float | None = None,
    high: float | None = None,
    choices: tuple | None = None,
    help: str = "",
    log: bool = False,
    main: bool = True,
):
    """A dataclass field that is also a :class:`Param` (its name and type come from the annotation)::

        @dataclass(frozen=True)
        class Knobs:
            eta: float = knob(1.0, low=0.0, high=100.0, help="RPO weight η")
            n_seeds: int = knob(10, full=100, low=1, high=1000, main=False, help="independent problems")

        PARAMS = params_of(Knobs)       # what the CLI, widgets and app validate against
        Knobs()                         # the quick preset's values, typed; ``ctx.p`` in a run is a Knobs

    The default is the quick value, so ``Knobs()`` is the quick preset."""
    from dataclasses import field

    spec = {
        "quick": quick,
        "standard": standard,
        "full": full,
        "low": low,
        "high": high,
        "choices": choices,
        "help": help,
        "log": log,
        "main": main,
    }
    return field(default=quick, metadata={"knob": spec})


class ParamList(list):
    """The :class:`Param` list of a knobs dataclass; remembers the class so that :func:`resolve_params` also runs
    its cross-field checks (a ``__post_init__`` that raises ``ValueError``, e.g. "eta·tau must be ≤ 1")."""

    knobs_class: type | None = None


def params_of(knobs_class) -> ParamList:
    """The :class:`Param` list of a knobs dataclass, in field order (see :func:`knob`). Constraints between
    knobs go in the class's ``__post_init__``: they are then checked with everything else, before any work."""
    import dataclasses
    import typing

    hints = typing.get_type_hints(knobs_class)
    out = []
    for f in dataclasses.fields(knobs_class):
        if "knob" not in f.metadata:
            raise TypeError(f"{knobs_class.__name__}.{f.name} is not declared with knob(...)")
        out.append(Param(f.name, hints[f.name], **f.metadata["knob"]))
    params = ParamList(out)
    params.knobs_class = knobs_class
    return params
