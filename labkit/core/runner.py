"""``method_run``: turns a method's experiment body into the contract's ``run()``.

A method's ``experiment.py`` writes::

    @dataclass(frozen=True)
    class Knobs:                        # typed knobs: one declaration, see labkit.core.params.knob
        lr: float = knob(0.01, low=1e-5, high=1.0, help="Adam learning rate")

    PARAMS = params_of(Knobs)
    MAIN_METRIC = "test_acc"            # the history metric the widgets and the app plot live

    @method_run(Knobs, figures=make_figures)
    def run(ctx: RunContext[Knobs]) -> Outcome:
        p = ctx.p                       # a Knobs: p.lr is a float an editor knows about
        ...train, ctx.history.log(...), ctx.check(loss, step, series)...
        return Outcome(metrics={...}, claims=[ClaimCheck(...)])

and gets ``run(preset="quick", seed=0, device="auto", *, callback=None, progress=True,
record=None, **overrides) -> Result`` with validation, device choice, seeding, thread count,
timing, figures and (optionally) a run record, all done the same way for every method.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Generic, TypeVar

from .claims import ClaimCheck, order_claims
from .device import pick_device, seed_everything, torch_threads
from .params import check_seed, params_of, resolve_params
from .result import History, Result
from .training import check_finite, check_weights, progress

#: intra-op threads per preset unless a method says otherwise (None = torch's default)
DEFAULT_THREADS = {"quick": 1, "standard": 1, "full": None}


@dataclass
class Outcome:
    """What a method's body returns; the runner adds the rest of the :class:`Result`."""

    metrics: dict[str, float]
    claims: list[ClaimCheck]
    extras: dict[str, Any] = field(default_factory=dict)


K = TypeVar("K")


@dataclass
class RunContext(Generic[K]):
    """Handed to a method's body: typed knobs (``ctx.p.lr``), device, seed, history, progress."""

    p: K
    preset: str
    seed: int
    device: Any
    history: History
    show_progress: bool = True

    def seeds(self, n: int) -> list[int]:
        """The ``n`` seeds of a multi-seed run: ``seed, seed + 1, …`` (each an independent problem)."""
        return [self.seed + k for k in range(n)]

    def check(self, loss, step: int, series: str = "") -> float:
        """``float(loss)``, or ``DivergenceError`` naming the step if it is NaN/inf."""
        return check_finite(loss, step, series)

    def check_weights(self, modules, step: int, series: str = "") -> float:
        """Largest |weight|, or ``DivergenceError`` if one is NaN/inf or beyond ``WEIGHT_LIMIT`` (1e6): a run
        whose loss saturates while its weights run off (a finite mess) is stopped like a NaN loss."""
        return check_weights(modules, step, series)

    def bar(self, total: int, desc: str):
        """A progress bar over ``total`` steps (``tqdm.auto``)."""
        return progress(total=total, desc=desc, enabled=self.show_progress)


def method_run(params, figures: Callable[[Result], dict] | None = None, threads: dict[str, int | None] | None = None):
    """Decorator: see the module docstring. ``params`` is a knobs dataclass (preferred) or a Param list."""
    thread_plan = {**DEFAULT_THREADS, **(threads or {})}
    knobs_class = params if dataclasses.is_dataclass(params) else None
    if knobs_class is not None:
        params = params_of(knobs_class)

    def wrap(body: Callable[[RunContext], Outcome]):
        slug = method_slug(body.__module__)

        @functools.wraps(body)
        def run(
            preset: str = "quick",
            seed: int = 0,
            device: str = "auto",
            *,
            callback=None,
            progress: bool = True,
            record: bool | None = None,
            **overrides,
        ) -> Result:
            values = resolve_params(params, preset, overrides)  # with the method's cross-field checks
            check_seed(seed)
            if callback is not None and not callable(callback):
                raise ValueError(f"callback={callback!r} is not callable: pass a function of one history row")
            dev = pick_device(device)
            store = None
            if record if record is not None else os.environ.get("LABKIT_RECORD") == "1":
                from .store import RunStore

                store = RunStore()  # checked now, before the work: a damaged store is refused up front
            knobs = knobs_class(**values) if knobs_class is not None else SimpleNamespace(**values)
            ctx = RunContext(knobs, preset, seed, dev, History(callback), progress)
            start = time.perf_counter()
            with torch_threads(thread_plan.get(preset)):
                seed_everything(seed)
                outcome = body(ctx)
            result = Result(
                method=slug,
                preset=preset,
                params=values,
                seed=seed,
                device=str(dev),
                history=ctx.history.frame(),
                metrics=outcome.metrics,
                claims=order_claims(outcome.claims),
                duration_s=time.perf_counter() - start,
                extras=outcome.extras,
            )
            if figures is not None:
                result.figures = figures(result)
            if store is not None:  # a failed write keeps the result in a file and names it (StoreError)
                store.save(result, notebook=os.environ.get("LABKIT_NOTEBOOK"))
            return result

        run.PARAMS = params
        return run

    return wrap


def method_slug(module: str) -> str:
    """``labkit.methods.rpo.experiment`` → ``rpo`` (and ``labkit.methods.rpo`` → ``rpo``)."""
    parts = module.split(".")
    if "methods" in parts and parts.index("methods") + 1 < len(parts):
        return parts[parts.index("methods") + 1]
    return parts[-1]
