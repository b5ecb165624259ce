"""Framework only: params and presets, device and seeding, training helpers, results and claims, registry,
store. The toy worlds methods share live in :mod:`labkit.substrates`."""

from .claims import ClaimCheck, Interval, Verdict, decide, fmt, nonfinite_note
from .device import pick_device, seed_everything, torch_threads
from .params import PRESETS, Param, knob, overrides_from, param_table, params_of, resolve_params
from .registry import METHODS, MethodInfo, available_methods, get_method
from .result import Arm, History, Result
from .runner import Outcome, RunContext, method_run
from .training import (
    WEIGHT_LIMIT,
    DivergenceError,
    accuracy,
    check_arms,
    check_finite,
    check_weights,
    endless_minibatches,
    iterate_minibatches,
    progress,
)

__all__ = [
    "PRESETS",
    "Param",
    "knob",
    "params_of",
    "overrides_from",
    "param_table",
    "resolve_params",
    "pick_device",
    "seed_everything",
    "torch_threads",
    "METHODS",
    "MethodInfo",
    "available_methods",
    "get_method",
    "ClaimCheck",
    "Interval",
    "Verdict",
    "decide",
    "fmt",
    "nonfinite_note",
    "Arm",
    "History",
    "Result",
    "Outcome",
    "RunContext",
    "method_run",
    "DivergenceError",
    "accuracy",
    "check_arms",
    "check_finite",
    "check_weights",
    "WEIGHT_LIMIT",
    "endless_minibatches",
    "iterate_minibatches",
    "progress",
]
