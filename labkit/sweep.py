"""Grids of runs on Dask: ``labkit sweep`` and the multi-seed results of ``labkit report --seeds N``.

One cell of a grid is one method, one preset, one seed and one set of parameter overrides. Every cell is
validated before anything starts (a bad value anywhere refuses the whole grid), a cell already recorded in the
store with exactly these parameters is reused instead of run again (unless ``rerun``), and the others run on Dask:
a local cluster of ``workers`` processes, or the scheduler at ``scheduler`` (``tcp://HOST:PORT``), whose workers
may live on other machines.

The records go to ONE store, the caller's: a worker runs the method without recording and sends the record
(parameters, metrics, claims, history) back with its result, and this process writes it. Workers on other
machines therefore need neither the store's file nor a shared disk. A failed cell is recorded as a failure with its
error and the others go on. (``notebook=True`` is the exception: the notebook's kernel records itself, into the
worker's ``LABKIT_STORE``, which this module points at the caller's store path, so it needs a disk the workers
share with the caller.)

Several machines::

    dask scheduler --host 0.0.0.0 --port 8786 --no-dashboard              # on one machine
    dask worker tcp://SCHEDULER:8786 --nthreads 1 --nworkers 2 --no-dashboard   # on each of the others
    labkit sweep rpo --seeds 0,1,2 --scheduler tcp://SCHEDULER:8786        # anywhere: records in the local store

``device="cuda"`` runs every cell on the workers' GPU; with a scheduler, each worker is asked whether it has one
before anything starts, and a worker without one refuses the grid by name (with a local cluster, this machine is
asked).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import sqlite3
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING

from .core.params import check_run_args, check_seed, parse_assignments
from .core.registry import get_method

if TYPE_CHECKING:  # pragma: no cover - typing only
    from .core.store import RunStore

#: row statuses: run now, found in the store, or failed (with ``error``)
DONE, REUSED, FAILED = "done", "recorded earlier", "failed"


def sweep_grid(params: list[str] | None, seeds: str) -> list[dict]:
    """``["lr=0.1,0.01", "eta=1"]`` and ``"0,1"`` → one dict of overrides (plus ``seed``) per combination."""
    axes = {k: v.split(",") for k, v in parse_assignments(params or []).items()}
    seed_list = []
    for text in seeds.split(","):
        try:
            seed_list.append(check_seed(text.strip()))
        except ValueError:
            raise ValueError(
                f"--seeds: {text.strip()!r} is not a seed: give whole numbers, e.g. --seeds 0,1,2"
            ) from None
    combos = [dict(zip(axes, values)) for values in itertools.product(*axes.values())] or [{}]
    return [{**combo, "seed": seed} for combo in combos for seed in seed_list]


def _overrides(job: dict) -> dict:
    return {k: v for k, v in job.items() if k not in ("seed", "method")}


def sweep_one(
    slug: str, preset: str, device: str, job: dict, notebook: bool = False, out: str = "runs", store_path: str = ""
) -> dict:
    """One cell of a grid, run on a Dask worker: the method's ``run()`` without recording (the record travels back
    in the row under ``"_record"``, for the caller to write), or a papermill execution of its notebook. A failure
    is returned as a row with ``status="failed"`` and its ``error``, never raised: one bad cell does not stop the
    others."""
    overrides = _overrides(job)
    try:
        if notebook:
            from .cli import execute_notebook

            with _env(LABKIT_STORE=store_path or None):
                done = execute_notebook(slug, preset, job["seed"], device, overrides, out)
            return {**job, "status": DONE, **done}
        import labkit

        res = labkit.load(slug).run(
            preset=preset, seed=job["seed"], device=device, progress=False, record=False, **overrides
        )
    except Exception as err:  # noqa: BLE001 - any failure of one cell is reported, not fatal to the sweep
        return {**job, "status": FAILED, "error": f"{type(err).__name__}: {err}"}
    from .core.store import record_of

    verdict = res.verdict.value if res.verdict else None
    row = {**job, "status": DONE, **res.metrics, "verdict": verdict, "seconds": res.duration_s}
    return {**row, "_record": record_of(res)}


@contextlib.contextmanager
def _env(**values: str | None) -> Iterator[None]:
    """Set environment variables for the block (``None``: leave that one as it is)."""
    before = {k: os.environ.get(k) for k in values}
    os.environ.update({k: v for k, v in values.items() if v is not None})
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _worker_has_cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


@contextlib.contextmanager
def dask_client(scheduler: str | None = None, workers: int = 2, in_process: bool = False):
    """A Dask client on the scheduler at ``scheduler``, or on a local cluster of ``workers`` single-thread worker
    processes (threads of this process with ``in_process``), without a dashboard. The local cluster is closed on
    the way out, also after an error."""
    from dask.distributed import Client, LocalCluster

    cluster = (
        None
        if scheduler
        else LocalCluster(n_workers=workers, threads_per_worker=1, processes=not in_process, dashboard_address=None)
    )
    try:
        with Client(scheduler or cluster, timeout="30s") as client:
            yield client
    finally:
        if cluster is not None:
            cluster.close()


def check_workers_device(client, device: str) -> None:
    """Refuse ``cuda`` before any work when a worker of ``client`` has no GPU (named in the error)."""
    if not device.startswith("cuda"):
        return
    answers = client.run(_worker_has_cuda)
    without = sorted(addr for addr, ok in answers.items() if not ok)
    if not answers or without:
        raise ValueError(
            f"device {device!r} was asked for but these Dask workers have no CUDA GPU: {without or 'no workers'}; "
            "start the workers on GPU machines, or use --device cpu"
        )


def _validate(module, preset: str, job: dict, device: str, remote: bool) -> dict:
    """The resolved parameters of one cell, or ValueError naming the cell. With a remote scheduler a ``cuda``
    device is checked on the workers (:func:`check_workers_device`), not on this machine."""
    local_device = "cpu" if remote and device.startswith("cuda") else device
    try:
        return check_run_args(module.PARAMS, preset, _overrides(job), job["seed"], local_device)
    except ValueError as err:
        raise ValueError(f"sweep cell {job}: {err} (nothing was run)") from None


def _keep(store: RunStore, slug: str, job: dict, row: dict, preset: str) -> dict:
    """Write a worker's row for the cell ``job`` into ``store``: its record (→ ``run_id``) or its failure."""
    from .core.store import save_fallback

    record = row.pop("_record", None)
    if row["status"] == FAILED:
        store.save_failure(slug, preset, job["seed"], _overrides(job), row["error"])
    elif record is not None:
        try:
            row["run_id"] = store.insert(record)
        except (sqlite3.Error, OSError) as err:  # the result is not lost: a file `labkit import` reads
            kept = save_fallback(record, store.path)
            row["status"] = f"{DONE}, not stored ({err}): labkit import {kept}"
    return row


def run_grid(
    slug: str,
    jobs: list[dict],
    preset: str = "quick",
    *,
    device: str = "auto",
    scheduler: str | None = None,
    workers: int = 2,
    in_process: bool = False,
    notebook: bool = False,
    out: str = "runs",
    store: RunStore | None = None,
    rerun: bool = False,
    say=print,
) -> list[dict]:
    """Run the cells ``jobs`` (from :func:`sweep_grid`) of one method; one row per cell, in the order done:
    first the reused ones, then those run now. See the module docstring."""
    return _run_cells(
        [(slug, job) for job in jobs],
        preset,
        device=device,
        scheduler=scheduler,
        workers=workers,
        in_process=in_process,
        notebook=notebook,
        out=out,
        store=store,
        rerun=rerun,
        say=say,
    )


def run_seeds(
    slugs: list[str],
    preset: str,
    seeds: list[int],
    *,
    scheduler: str | None = None,
    workers: int = 2,
    device: str = "cpu",
    store: RunStore | None = None,
    rerun: bool = False,
) -> list[dict]:
    """``len(seeds)`` runs of each method at its default parameters for ``preset``, for multi-seed results.

    A run recorded earlier at that preset and seed with exactly the default parameters is reused (unless
    ``rerun``); the others run on Dask (local cluster, or ``scheduler``) and are recorded in ``store`` (default:
    ``$LABKIT_STORE``). Returns one row per (method, seed), methods in the order given: ``method``, ``seed``,
    ``status`` (``"done"``, ``"reused"`` or ``"failed"``), ``run_id`` (None when failed), ``error``
    (failed only), and for runs done now their metrics, ``verdict`` and ``seconds``."""
    cells = [
        (get_method(slug).slug, {"method": get_method(slug).slug, "seed": int(s)}) for slug in slugs for s in seeds
    ]
    rows = _run_cells(
        cells, preset, device=device, scheduler=scheduler, workers=workers, store=store, rerun=rerun, say=None
    )
    order = {(slug, job["seed"]): i for i, (slug, job) in enumerate(cells)}
    rows.sort(key=lambda r: order[(r["method"], r["seed"])])
    for row in rows:
        row.setdefault("run_id", None)
        if str(row["status"]).startswith(REUSED):
            row["status"] = "reused"
    return rows


def _run_cells(
    cells: list[tuple[str, dict]],
    preset: str,
    *,
    device: str,
    scheduler: str | None,
    workers: int,
    in_process: bool = False,
    notebook: bool = False,
    out: str = "runs",
    store: RunStore | None,
    rerun: bool,
    say,
) -> list[dict]:
    from .core.store import RunStore

    store = store if store is not None else RunStore()  # refuse a damaged store before anything starts
    todo, rows = [], []
    modules = {}
    for slug, job in cells:  # validate the whole grid before starting anything
        info = get_method(slug)
        module = modules.setdefault(info.slug, info.load())
        values = _validate(module, preset, job, device, remote=bool(scheduler))
        earlier = None if notebook or rerun else store.find(info.slug, preset, job["seed"], values)
        if earlier is None:
            todo.append((info.slug, job))
        else:
            rows.append({**job, "status": f"{REUSED} (run {earlier})", "run_id": earlier})
    if say is not None:
        where = f"scheduler {scheduler}" if scheduler else f"{workers} local workers"
        names = sorted({slug for slug, _ in cells})
        say(
            f"sweep {', '.join(names)}: {len(todo)} runs on {where}"
            + (f", {len(rows)} already recorded" if rows else "")
        )
    if not todo:
        return rows
    from dask.distributed import progress as dask_progress

    with dask_client(scheduler, workers, in_process) as client:
        check_workers_device(client, device)
        futures = [
            client.submit(sweep_one, slug, preset, device, job, notebook, out, str(store.path), pure=False)
            for slug, job in todo
        ]
        if say is not None and sys.stderr.isatty():
            dask_progress(futures)
        done = client.gather(futures)
    rows += [_keep(store, slug, job, row, preset) for (slug, job), row in zip(todo, done)]
    return rows
