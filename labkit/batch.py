"""Execute a batch of notebooks from ONE Python process, a few at a time.

``papermill NB NB`` once per notebook (as ``make notebooks`` does) pays a fixed cost for every notebook before
its kernel even starts: a fresh interpreter and ``import papermill``, most of which is not papermill: nbformat's
validator imports jsonschema, whose format checkers import ``rfc3987_syntax`` when it is installed, and that
module builds a Lark grammar at import (about 2-3 s on a 2-core machine, more than papermill's own imports).
Here papermill is imported once for the whole batch, without that module (:func:`import_papermill`: the notebook
schema checks no IRI format, so nothing is lost), and ``jobs`` notebooks run at the same time, each in its own
kernel (every notebook still starts a kernel of its own: outputs are the same as with the ``papermill`` command).

    python -m labkit.batch notebooks/08_rpo.ipynb notebooks/14_daa_overoptimization.ipynb --jobs 2 --out /tmp/nb
    python -m labkit.batch --in-place notebooks/08_rpo.ipynb          # as `make notebooks` writes them

From Python: :func:`execute_batch` returns one :class:`Executed` per notebook (seconds, or the error).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

#: imported by jsonschema's format checkers only when installed; building its grammar costs seconds
SLOW_OPTIONAL = ("rfc3987_syntax",)


@dataclass(frozen=True)
class Executed:
    """One notebook of a batch: where it went, how long it took, and the error if it stopped."""

    source: Path
    output: Path
    seconds: float
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def skip_slow_optional() -> None:
    """Keep the optional modules of :data:`SLOW_OPTIONAL` from being imported (unless they already are).
    A ``None`` entry in ``sys.modules`` makes their import raise ImportError, which jsonschema catches: it only
    drops the ``iri``/``iri-reference`` format checks, which the notebook schema does not use."""
    for name in SLOW_OPTIONAL:
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]


def import_papermill():
    """``import papermill`` without the optional modules of :data:`SLOW_OPTIONAL` (:func:`skip_slow_optional`)."""
    skip_slow_optional()
    import papermill

    return papermill


def execute_one(source: Path, output: Path, parameters: dict | None = None, cwd: Path | None = None) -> Executed:
    """Execute ``source`` into ``output`` with papermill (kernel ``python3``, channels on Unix sockets so that
    notebooks started together cannot race for ports) and drop the saved widget state, as ``make notebooks``."""
    from .cli import ipc_kernel_manager, strip_widget_state

    papermill = import_papermill()
    source, output = Path(source), Path(output)
    start = time.perf_counter()
    try:
        papermill.execute_notebook(
            str(source),
            str(output),
            parameters=parameters or {},
            kernel_name="python3",
            cwd=str(cwd or source.parent),
            progress_bar=False,
            log_output=False,
            kernel_manager_class=ipc_kernel_manager(),
        )
    except papermill.PapermillExecutionError as err:
        stopped = f"cell {err.exec_count}: {err.ename}: {err.evalue}"
        return Executed(source, output, time.perf_counter() - start, stopped)
    try:
        strip_widget_state(output)
    except ValueError as err:  # its .py twin was edited since the notebook was converted: nothing is overwritten
        return Executed(source, output, time.perf_counter() - start, str(err))
    return Executed(source, output, time.perf_counter() - start)


def execute_batch(
    notebooks: list[str | Path],
    out_dir: str | Path | None = None,
    *,
    jobs: int = 2,
    parameters: dict | None = None,
) -> list[Executed]:
    """Execute ``notebooks`` (``.ipynb``), ``jobs`` at a time, into ``out_dir`` (same file names), or in place
    when ``out_dir`` is None. Each runs in the notebook's own folder. Returns one :class:`Executed` per notebook,
    in the order given; a notebook that stops does not stop the others."""
    if jobs < 1:
        raise ValueError(f"jobs={jobs}: expected a whole number >= 1")
    sources = [Path(nb).resolve() for nb in notebooks]
    missing = [str(s) for s in sources if not s.exists() or s.suffix != ".ipynb"]
    if missing:
        raise ValueError(f"not an existing .ipynb notebook: {missing}")
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
    outputs = [s if out_dir is None else Path(out_dir).resolve() / s.name for s in sources]
    import_papermill()  # once, before the threads start
    os.environ.setdefault("LABKIT_PROGRESS", "0")
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(lambda pair: execute_one(pair[0], pair[1], parameters), zip(sources, outputs)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m labkit.batch", description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="+", help=".ipynb files")
    parser.add_argument("--jobs", type=int, default=2, help="notebooks at the same time (default: 2)")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--out", help="folder for the executed notebooks")
    where.add_argument("--in-place", action="store_true", help="overwrite each notebook with its executed copy")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        done = execute_batch(args.notebooks, None if args.in_place else args.out, jobs=args.jobs)
    except ValueError as err:
        print(f"labkit.batch: error: {err}", file=sys.stderr)
        return 2
    for item in done:
        print(f"{item.seconds:6.1f} s  {item.source.name}" + ("" if item.ok else f"  FAILED {item.error}"))
    print(f"{len(done)} notebooks in {time.perf_counter() - start:.1f} s ({args.jobs} at a time)")
    return 0 if all(item.ok for item in done) else 1


if __name__ == "__main__":
    sys.exit(main())
