"""The ``labkit`` command: list the methods, run one through its notebook, write the HTML report.

    labkit list [--family F] [--available]
    labkit run SLUG [--preset P] [--seed N] [--device D] [-p KEY=VALUE ...] [--out runs]
    labkit report [--execute] [--preset P] [--out report] [--runs runs] [--seeds N] [--scheduler ADDRESS]
    labkit sweep SLUG [-p KEY=V1,V2 ...] [--seeds 0,1,2] [--workers N | --scheduler ADDRESS] [--notebook]
    labkit dashboard [--port 5006] [--address 127.0.0.1]
    labkit import FILE ...

``run`` validates the parameters first (nothing is executed or recorded when one is wrong), executes
the method's paired notebook with papermill into the runs folder, and records the run in the store.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import subprocess
import sys
import time
from pathlib import Path

from .core.claims import describe_record
from .core.params import PRESETS, check_run_args, parse_assignments
from .core.registry import FAMILIES, METHODS, REPO_ROOT, get_method, markdown_table, readme_with_table


class CLIError(Exception):
    """A user error: printed without a traceback, exit status 2."""


def cmd_list(args) -> int:
    if args.markdown:
        print(markdown_table())
        return 0
    if args.update_readme:
        readme = REPO_ROOT / "README.md"
        readme.write_text(readme_with_table(readme.read_text(encoding="utf-8")), encoding="utf-8")
        print(f"updated the method table in {readme}")
        return 0
    rows = [m for m in METHODS if (not args.family or m.family == args.family) and (not args.available or m.available)]
    print(f"{'#':>2}  {'slug':<22} {'method':<26} {'family':<25} status")
    for m in rows:
        status = "available" if m.available else "not yet available"
        print(f"{m.id:>2}  {m.slug:<22} {m.short[:26]:<26} {m.family:<25} {status}")
    return 0


def _notebook_paths(info) -> tuple[Path, Path]:
    src = REPO_ROOT / info.notebook
    return src, src.with_suffix(".ipynb")


def execute_notebook(
    slug: str,
    preset: str = "quick",
    seed: int = 0,
    device: str = "auto",
    overrides: dict | None = None,
    out_dir: str | Path = "runs",
) -> dict:
    """Validate, then execute the method's notebook with papermill; returns where it went and how long.

    The notebook's ``run()`` records itself in the store (``LABKIT_RECORD=1``), tagged with the output
    path, so the report can find the claim checks of exactly this execution.
    """
    info = get_method(slug)
    module = info.load()
    values = check_run_args(module.PARAMS, preset, overrides or {}, seed, device)
    from .core.store import RunStore

    RunStore()  # the notebook's run() records into it: refuse a damaged store before the kernel starts
    chosen = {k: values[k] for k in (overrides or {})}
    _, ipynb = _notebook_paths(info)
    if not ipynb.exists():
        raise ValueError(f"{info.slug}: notebook {ipynb} is missing")
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    output = out_dir / f"{ipynb.stem}-{preset}-s{seed}-{stamp}.ipynb"

    from .batch import import_papermill

    papermill = import_papermill()  # without rfc3987_syntax: seconds of grammar building that nothing here uses
    env_before = {k: os.environ.get(k) for k in ("LABKIT_RECORD", "LABKIT_NOTEBOOK", "LABKIT_PROGRESS")}
    os.environ.update(LABKIT_RECORD="1", LABKIT_NOTEBOOK=str(output), LABKIT_PROGRESS="0")
    start = time.perf_counter()
    try:
        papermill.execute_notebook(
            str(ipynb),
            str(output),
            parameters={"preset": preset, "seed": seed, "device": device, **chosen},
            kernel_name="python3",
            cwd=str(ipynb.parent),
            progress_bar=False,
            log_output=False,
            kernel_manager_class=ipc_kernel_manager(),
        )
    except KeyboardInterrupt:
        output.unlink(missing_ok=True)  # no half-executed notebook is left in the runs folder
        raise
    except papermill.PapermillExecutionError as err:
        raise CLIError(
            f"{info.slug}: the notebook stopped at cell {err.exec_count} with {err.ename}: "
            f"{err.evalue}; nothing was recorded (executed notebook kept at {output})"
        ) from None
    else:
        strip_widget_state(output)
    finally:
        for key, value in env_before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return {"slug": info.slug, "output": str(output), "seconds": time.perf_counter() - start}


def ipc_kernel_manager():
    """A kernel manager whose channels are Unix sockets in a private temporary folder instead of TCP ports on
    127.0.0.1: several notebooks started at the same moment (``make run``, ``labkit sweep --notebook``, any
    parallel batch) cannot race for the same ports ("Kernel died before replying", "Invalid Signature")."""
    import shutil
    import tempfile

    from jupyter_client.manager import AsyncKernelManager

    class IPCKernelManager(AsyncKernelManager):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self._socket_dir = tempfile.mkdtemp(prefix="labkit-kernel-")
            self.transport = "ipc"
            self.ip = str(Path(self._socket_dir) / "kernel")

        async def _async_cleanup_resources(self, restart: bool = False) -> None:
            await super()._async_cleanup_resources(restart=restart)
            if not restart:
                shutil.rmtree(self._socket_dir, ignore_errors=True)

        cleanup_resources = _async_cleanup_resources  # what nbclient awaits after the last cell

    return IPCKernelManager


def strip_widget_state(path: str | Path) -> None:
    """Drop the saved ipywidgets state from an executed notebook, then keep its paired ``.py`` in step.

    The widget state holds, among others, plotly.js for the live figure (~5 MB) and is useless without a kernel;
    the widgets are rebuilt when the cell runs.

    A notebook with a ``.py`` twin under a ``jupytext.toml`` (the committed ones, executed in place) is then saved
    through Jupytext's contents manager, the code JupyterLab saves with, and once more as JupyterLab would read it
    back: both files get exactly the form JupyterLab + Jupytext write, so opening a committed notebook in
    JupyterLab changes nothing (issue 15, defect 4), and the .py is never older than the executed .ipynb and
    different from it (which Jupytext refuses to open). Its plotly figures are committed as images
    (:func:`labkit.viz.static_figures`), so that scrolling to one or hovering it changes nothing either. A notebook
    without a twin (``labkit run``'s copies in the runs folder) is left alone: no ``.py`` is created next to it,
    and its figures stay interactive. A twin whose cells differ from the notebook's
    (edited after the notebook was made from it) raises ``ValueError`` and is not overwritten.
    """
    import nbformat

    path = Path(path)
    nb = nbformat.read(str(path), as_version=4)
    if nb.metadata.pop("widgets", None) is not None:
        nbformat.write(nb, str(path))
    if not path.with_suffix(".py").exists():
        return
    from jupytext.config import find_jupytext_configuration_file

    config = find_jupytext_configuration_file(str(path.resolve().parent))
    if config is None:
        return
    import jupytext

    def cells(notebook) -> list[tuple[str, str]]:
        return [(c.cell_type, c.source.strip()) for c in notebook.cells]

    if cells(jupytext.read(path.with_suffix(".py"))) != cells(nb):
        # the .py was edited after this .ipynb was made from it: saving the pair would overwrite those edits
        raise ValueError(
            f"{path.with_suffix('.py')} has cells that differ from {path.name}: convert it first "
            f"(`make notebooks NB={path.stem}`), or its edits would be overwritten"
        )
    from .viz import static_figures

    static_figures(nb)  # a committed figure is an image: JupyterLab's plotly renderer would rewrite it when drawn
    from jupyter_server.services.contents.filemanager import FileContentsManager
    from jupytext.sync_contentsmanager import build_sync_jupytext_contents_manager_class

    class Unsigned(FileContentsManager):
        """No trust bookkeeping: signatures live in a database outside the notebook and change no byte of it."""

        def check_and_sign(self, nb, path=""):
            pass

        def mark_trusted_cells(self, nb, path=""):
            pass

    root = Path(config).resolve().parent  # where JupyterLab is started (`make lab`): the config is found from there
    manager = build_sync_jupytext_contents_manager_class(Unsigned)(root_dir=str(root))
    relative = path.resolve().relative_to(root).as_posix()
    manager.save({"type": "notebook", "format": "json", "content": nb}, relative)
    # JupyterLab opens the pair as the .py's cells with the .ipynb's outputs; saved so, the pair is a fixed point
    reopened = manager.get(relative)
    manager.save({"type": "notebook", "format": "json", "content": reopened["content"]}, relative)


def cmd_run(args) -> int:
    overrides = parse_assignments(args.param or [])
    info = get_method(args.slug)
    check_run_args(info.load().PARAMS, args.preset, overrides, args.seed, args.device)  # before saying "running"
    print(f"running {info.id:02d} {info.short} ({args.preset}) through {info.notebook.replace('.py', '.ipynb')} ...")
    done = execute_notebook(info.slug, args.preset, args.seed, args.device, overrides, args.out)
    print(f"done in {done['seconds']:.1f} s → {done['output']}")
    from .core.store import RunStore

    runs = RunStore().runs(info.slug)
    mine = runs[runs["notebook"] == done["output"]]
    for _, row in mine.iloc[::-1].iterrows():
        for c in row["claims"]:
            label, line = describe_record(c)
            print(f"  [{label}] {line}")
    return 0


def cmd_report(args) -> int:
    """Build the report (a Jupyter Book; see :mod:`labkit.report`), after executing the notebooks (``--execute``)
    and running the missing seeds on Dask (``--seeds N``) when asked."""
    from .report import ReportBuildError, build_report

    try:
        index = build_report(
            args.out,
            preset=args.preset,
            execute=args.execute,
            runs_dir=args.runs,
            seeds=args.seeds,
            scheduler=args.scheduler,
            say=lambda line: print(line, flush=True),
        )
    except ReportBuildError as err:
        raise CLIError(str(err)) from None
    print(f"report → {index}")
    return 0


def sweep_grid(params: list[str] | None, seeds: str) -> list[dict]:
    """``["lr=0.1,0.01", "eta=1"]`` and ``"0,1"`` → one dict of overrides (plus ``seed``) per combination
    (see :func:`labkit.sweep.sweep_grid`)."""
    from .sweep import sweep_grid as grid

    return grid(params, seeds)


def _sweep_one(slug: str, preset: str, device: str, job: dict, notebook: bool, out: str) -> dict:
    """One cell of a sweep (see :func:`labkit.sweep.sweep_one`, which the sweep runs on its workers)."""
    from .sweep import sweep_one

    return sweep_one(slug, preset, device, job, notebook, out)


def cmd_sweep(args) -> int:
    """Validate the whole grid, run it on Dask (:func:`labkit.sweep.run_grid`), print the table."""
    from .sweep import FAILED, run_grid

    info = get_method(args.slug)
    rows = run_grid(
        info.slug,
        sweep_grid(args.param, args.seeds),
        args.preset,
        device=args.device,
        scheduler=args.scheduler,
        workers=args.workers,
        in_process=args.in_process,
        notebook=args.notebook,
        out=args.out,
        rerun=args.rerun,
    )
    import pandas as pd

    table = pd.DataFrame(rows)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    if args.csv:
        table.to_csv(args.csv, index=False)
        print(f"table → {args.csv}")
    failed = int((table["status"] == FAILED).sum()) if "status" in table else 0
    if failed:
        print(
            f"labkit: {failed} of {len(table)} runs failed (their errors are in the table and the store)",
            file=sys.stderr,
        )
    return 1 if failed else 0


def cmd_dashboard(args) -> int:
    """Serve the Panel app; bound to 127.0.0.1 unless an address is given. SIGTERM or Ctrl-C stops the server
    with this command (no orphan left holding the port)."""
    import signal

    import widgets

    app = Path(widgets.__file__).with_name("app.py")
    cmd = [sys.executable, "-m", "panel", "serve", str(app), "--port", str(args.port), "--address", args.address]
    if args.address in ("127.0.0.1", "localhost"):
        cmd.append(f"--allow-websocket-origin={args.address}:{args.port}")
    else:
        cmd.append(f"--allow-websocket-origin=*:{args.port}")
        print(f"labkit: serving on {args.address}:{args.port}: reachable from other machines", file=sys.stderr)
    if args.show:
        cmd.append("--show")
    child = subprocess.Popen(cmd)

    def stop(signum, _frame):
        child.terminate()

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        return child.wait()
    except KeyboardInterrupt:
        child.terminate()
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
        if child.poll() is None:
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()


def cmd_import(args) -> int:
    from .core.store import RunStore

    store = RunStore()
    for path in args.files:
        print(f"imported {path} as run {store.import_file(path)} into {store.path}")
    return 0


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1 or not text.strip().isascii():
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="labkit", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="list the methods of the registry")
    p.add_argument("--family", choices=FAMILIES)
    p.add_argument("--available", action="store_true", help="only methods that can run")
    p.add_argument("--markdown", action="store_true", help="print the README's method table")
    p.add_argument("--update-readme", action="store_true", help="regenerate the table in README.md")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("run", help="execute a method's notebook with papermill and record the run")
    p.add_argument("slug")
    p.add_argument("--preset", default="quick", choices=PRESETS)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("-p", "--param", action="append", metavar="KEY=VALUE", help="override a parameter")
    p.add_argument("--out", default="runs", help="folder for executed notebooks (default: runs)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("report", help="build the report: a Jupyter Book with the scoreboard of the run store")
    p.add_argument("--execute", action="store_true", help="first execute every available notebook")
    p.add_argument("--preset", default="quick", choices=PRESETS)
    p.add_argument("--out", default="report", help="folder of the book (default: report; open report/index.html)")
    p.add_argument("--runs", default="runs", help="folder for executed notebooks (with --execute)")
    p.add_argument("--seeds", type=positive_int, help="first run seeds 0..N-1 of every method on Dask (reusing runs)")
    p.add_argument("--scheduler", help="with --seeds: address of a running Dask scheduler instead of a local cluster")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("sweep", help="run a grid of parameters and seeds on Dask; every run is recorded")
    p.add_argument("slug")
    p.add_argument("--preset", default="quick", choices=PRESETS)
    p.add_argument(
        "--device", default="auto", help="auto, cpu or cuda (cuda: every worker must have a GPU, checked first)"
    )
    p.add_argument("-p", "--param", action="append", metavar="KEY=V1,V2", help="values to sweep")
    p.add_argument("--seeds", default="0", help="comma-separated seeds (default: 0)")
    p.add_argument("--workers", type=positive_int, default=2, help="local Dask workers (default: 2)")
    p.add_argument("--rerun", action="store_true", help="run again the cells already recorded (default: skip them)")
    p.add_argument("--in-process", action="store_true", help="Dask workers as threads of this process (debugging)")
    p.add_argument("--scheduler", help="address of a running Dask scheduler instead of a local cluster")
    p.add_argument("--notebook", action="store_true", help="execute the notebook with papermill for each run")
    p.add_argument("--out", default="runs", help="folder for executed notebooks (with --notebook)")
    p.add_argument("--csv", help="also write the results table to this CSV file")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("dashboard", help="serve the Panel app")
    p.add_argument("--port", type=int, default=5006)
    p.add_argument("--address", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine)")
    p.add_argument("--show", action="store_true", help="open a browser")
    p.set_defaults(func=cmd_dashboard)

    p = sub.add_parser("import", help="add runs saved to files (when the store could not be written) to the store")
    p.add_argument("files", nargs="+")
    p.set_defaults(func=cmd_import)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, CLIError) as err:
        print(f"labkit: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("labkit: interrupted; the partial output was removed (runs recorded before it are kept)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
