"""``method_run``: turns a method's experiment body into the contract's ``run()``.

A method writes::

    PARAMS = [Param("lr", float, 0.01, low=1e-5, high=1.0), ...]
    MAIN_METRIC = "test_acc"            # the history metric the widgets and the app plot live

    @method_run(PARAMS, figures=make_figures)
    def run(ctx):                       # ctx: RunContext
        ...train, ctx.history.log(...), ctx.check(loss, step, series)...
        return Outcome(metrics={...}, claims=[ClaimCheck(...)])

and gets ``run(preset="quick", seed=0, device="auto", *, callback=None, progress=True,
record=None, **overrides) -> Result`` with validation, device choice, seeding, thread count,
timing, figures and (optionally) a run record, all done the same way for every method.
"""
from __future__ import annotations

import functools
import os
import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Callable

from .device import pick_device, seed_everything, torch_threads
from .params import Param, resolve_params
from .result import ClaimCheck, History, Result
from .training import check_finite, progress

#: intra-op threads per preset unless a method says otherwise (None = torch's default)
DEFAULT_THREADS = {"quick": 1, "standard": 1, "full": None}


@dataclass
class Outcome:
    """What a method's body returns; the runner adds the rest of the :class:`Result`."""

    metrics: dict[str, float]
    claims: list[ClaimCheck]
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunContext:
    """Handed to a method's body: resolved params (``ctx.p.lr``), device, seed, history, progress."""

    p: SimpleNamespace
    preset: str
    seed: int
    device: Any
    history: History
    show_progress: bool = True

    def check(self, loss, step: int, series: str = "") -> float:
        """``float(loss)``, or ``DivergenceError`` naming the step if it is NaN/inf."""
        return check_finite(loss, step, series)

    def bar(self, total: int, desc: str):
        """A progress bar over ``total`` steps (``tqdm.auto``)."""
        return progress(total=total, desc=desc, enabled=self.show_progress)


def method_run(params: list[Param], figures: Callable[[Result], dict] | None = None,
               threads: dict[str, int | None] | None = None):
    """Decorator: see the module docstring."""
    thread_plan = {**DEFAULT_THREADS, **(threads or {})}

    def wrap(body: Callable[[RunContext], Outcome]):
        slug = body.__module__.rsplit(".", 1)[-1]

        @functools.wraps(body)
        def run(preset: str = "quick", seed: int = 0, device: str = "auto", *, callback=None,
                progress: bool = True, record: bool | None = None, **overrides) -> Result:
            values = resolve_params(params, preset, overrides)
            if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
                raise ValueError(f"seed={seed!r} is not allowed: expected an int >= 0")
            dev = pick_device(device)
            ctx = RunContext(SimpleNamespace(**values), preset, seed, dev, History(callback), progress)
            start = time.perf_counter()
            with torch_threads(thread_plan.get(preset)):
                seed_everything(seed)
                outcome = body(ctx)
            result = Result(
                method=slug, preset=preset, params=values, seed=seed, device=str(dev),
                history=ctx.history.frame(), metrics=outcome.metrics, claims=outcome.claims,
                duration_s=time.perf_counter() - start, extras=outcome.extras,
            )
            if figures is not None:
                result.figures = figures(result)
            if record if record is not None else os.environ.get("LABKIT_RECORD") == "1":
                from .store import RunStore

                RunStore().save(result, notebook=os.environ.get("LABKIT_NOTEBOOK"))
            return result

        run.PARAMS = params
        return run

    return wrap
