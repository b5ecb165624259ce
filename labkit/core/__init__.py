"""Shared machinery: params and presets, device and seeding, training helpers, results, registry, store."""
from .device import pick_device, seed_everything, torch_threads
from .params import PRESETS, Param, overrides_from, param_table, resolve_params
from .registry import METHODS, MethodInfo, available_methods, get_method
from .result import ClaimCheck, History, Result
from .runner import Outcome, RunContext, method_run
from .training import DivergenceError, check_finite, iterate_minibatches, progress, train_steps

__all__ = [
    "PRESETS", "Param", "overrides_from", "param_table", "resolve_params", "pick_device", "seed_everything", "torch_threads",
    "METHODS", "MethodInfo", "available_methods", "get_method", "ClaimCheck", "History", "Result",
    "Outcome", "RunContext", "method_run", "DivergenceError", "check_finite", "iterate_minibatches",
    "progress", "train_steps",
]
