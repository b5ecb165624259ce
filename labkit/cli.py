"""The ``labkit`` command: list the methods, run one through its notebook, write the HTML report.

    labkit list [--family F] [--available]
    labkit run SLUG [--preset P] [--seed N] [--device D] [-p KEY=VALUE ...] [--out runs]
    labkit report [--execute] [--preset P] [--out report] [--runs runs]
    labkit sweep SLUG [-p KEY=V1,V2 ...] [--seeds 0,1,2] [--workers N | --scheduler ADDRESS] [--notebook]
    labkit dashboard [--port 5006] [--address 127.0.0.1]
    labkit import FILE ...

``run`` validates the parameters first (nothing is executed or recorded when one is wrong), executes
the method's paired notebook with papermill into the runs folder, and records the run in the store.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import html
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from .core.claims import describe_record
from .core.params import PRESETS, check_run_args, check_seed, parse_assignments
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

    import papermill

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
    """Drop the saved ipywidgets state from an executed notebook. It holds, among others, plotly.js for the
    live figure (~5 MB) and is useless without a kernel; the widgets are rebuilt when the cell runs."""
    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    if nb.metadata.pop("widgets", None) is not None:
        nbformat.write(nb, str(path))


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
    from .core.store import RunStore

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    executed = []
    if args.execute:
        for m in [m for m in METHODS if m.available]:
            print(f"executing {m.id:02d} {m.short} at preset={args.preset} ...", flush=True)
            executed.append(execute_notebook(m.slug, args.preset, 0, "auto", {}, args.runs))
            print(f"  {executed[-1]['seconds']:.1f} s", flush=True)
    store = RunStore()
    runs = store.runs()
    entries = []
    for m in METHODS:
        if not m.available:
            continue
        mine = runs[(runs["method"] == m.slug) & runs["notebook"].notna()]
        if mine.empty:
            entries.append((m, None, None))
            continue
        nb = Path(mine.iloc[0]["notebook"])  # the newest executed notebook ...
        runs_of_nb = mine[mine["notebook"] == str(nb)].iloc[::-1]  # ... and every run() it made, in order
        page = None
        if nb.exists():
            page = out / (nb.stem + ".html")
            _notebook_to_html(nb, page)
        entries.append((m, runs_of_nb, page))
    index = out / "index.html"
    index.write_text(_report_html(entries), encoding="utf-8")
    print(f"report → {index}")
    return 0


def _notebook_to_html(notebook: Path, target: Path) -> None:
    import nbformat
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_notebook_node(nbformat.read(str(notebook), as_version=4))
    target.write_text(body, encoding="utf-8")


VERDICT_CSS = {"holds": "ok", "does not hold": "no", "inconclusive": "maybe"}


def _claim_item(c: dict) -> str:
    label, line = describe_record(c)
    css = VERDICT_CSS.get(c.get("verdict"), "maybe")
    extra = ", ".join(f"{k} = {_num(v)}" for k, v in c.get("numbers", {}).items())
    return (
        f"<li class='{css}'><b>{html.escape(label)}</b> {html.escape(line)}"
        + (f"<br><small>{html.escape(extra)}</small>" if extra else "")
        + "</li>"
    )


def _report_html(entries) -> str:
    """The scoreboard: one row per method, the paper's headline claim first with its three-way verdict and
    interval, the supporting checks below it, and a link to the executed notebook."""
    esc = html.escape
    rows, counts = [], {"holds": 0, "does not hold": 0, "inconclusive": 0}
    for m, runs, page in entries:
        if runs is None:
            rows.append(
                f"<tr><td>{m.id:02d}</td><td>{esc(m.short)}</td><td colspan=5>no executed run yet "
                f"(<code>labkit run {m.slug}</code>)</td></tr>"
            )
            continue
        labels = _run_labels(list(runs["params"]))
        first = runs.iloc[0]
        head = next((c for c in first["claims"] if c.get("headline")), None)
        if head is not None and head.get("verdict") in counts:
            counts[head["verdict"]] += 1
        head_cell = (
            f"<span class='verdict {VERDICT_CSS.get(head.get('verdict'), 'maybe')}'>"
            f"{esc(describe_record(head)[0])}</span><br>{esc(describe_record(head)[1])}"
            if head
            else "no headline claim recorded"
        )
        details = "".join(
            (f"<p><b>{esc(label)}</b></p>" if label else "")
            + "<ul>"
            + "".join(_claim_item(c) for c in run["claims"])
            + "</ul>"
            for label, (_, run) in zip(labels, runs.iterrows())
        )
        link = f"<a href='{esc(page.name)}'>notebook</a>" if page else "(notebook file missing)"
        when = _dt.datetime.fromtimestamp(first["created_at"]).strftime("%Y-%m-%d %H:%M")
        rows.append(
            f"<tr><td>{m.id:02d}</td><td><a href='{m.arxiv_url}'>{esc(m.short)}</a><br><small>{esc(m.family)}"
            f"</small></td><td class='head'>{head_cell}</td><td>{esc(first['preset'])}</td>"
            f"<td>{runs['duration_s'].sum():.1f} s<br><small>{when}</small></td><td>{link}</td>"
            f"<td><details><summary>all checks</summary>{details}</details></td></tr>"
        )
    pending = sum(not m.available for m in METHODS)
    n = len(METHODS)
    availability = f"{pending} of {n} methods are not available yet." if pending else f"All {n} methods are available."
    tally = ", ".join(f"{n} {v}" for v, n in counts.items())
    return f"""<!doctype html><html><head><meta charset='utf-8'><title>labkit report</title><style>
body{{font-family:system-ui,sans-serif;margin:2em;max-width:1300px}} table{{border-collapse:collapse;width:100%}}
td,th{{border-bottom:1px solid #ddd;padding:8px;vertical-align:top;text-align:left}} ul{{margin:0;padding-left:1.2em}}
.ok b,.verdict.ok{{color:#1a7f37}} .no b,.verdict.no{{color:#b42318}} .maybe b,.verdict.maybe{{color:#9a6700}}
.verdict{{font-weight:bold}} small{{color:#555}}</style></head><body>
<h1>labkit scoreboard</h1><p>Each row is the newest recorded run of a method: the paper's <b>headline claim</b> with
its three-way verdict (holds / does not hold / inconclusive) from a 95% interval over seeds against a margin fixed
before the run, then the supporting checks and the executed notebook. Headline verdicts: {esc(tally)}.
{availability}</p>
<table><tr><th>#</th><th>method</th><th>headline claim</th><th>preset</th><th>run() time</th>
<th>executed notebook</th><th>supporting checks</th></tr>
{"".join(rows)}</table></body></html>"""


def _run_labels(params: list[dict]) -> list[str]:
    """For a notebook that called run() more than once: name each run by the params that differ."""
    if len(params) == 1:
        return [""]
    differ = [k for k in params[0] if len({json.dumps(p.get(k)) for p in params}) > 1]
    return [
        f"run {i + 1}: " + (", ".join(f"{k}={p[k]}" for k in differ) or "same params") for i, p in enumerate(params)
    ]


def _num(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def sweep_grid(params: list[str] | None, seeds: str) -> list[dict]:
    """``["lr=0.1,0.01", "eta=1"]`` and ``"0,1"`` → one dict of overrides (plus ``seed``) per combination."""
    import itertools

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


def _sweep_one(slug: str, preset: str, device: str, job: dict, notebook: bool, out: str) -> dict:
    """One cell of a sweep (runs on a Dask worker): a direct recorded ``run``, or a papermill execution. A run
    that fails is recorded as a failure with its error and reported in the table; the other runs go on."""
    overrides = {k: v for k, v in job.items() if k != "seed"}
    try:
        if notebook:
            done = execute_notebook(slug, preset, job["seed"], device, overrides, out)
            return {**job, "status": "done", **done}
        import labkit

        res = labkit.load(slug).run(
            preset=preset, seed=job["seed"], device=device, progress=False, record=True, **overrides
        )
    except Exception as err:  # noqa: BLE001 - any failure of one cell is reported, not fatal to the sweep
        from .core.store import RunStore

        message = f"{type(err).__name__}: {err}"
        RunStore().save_failure(slug, preset, job["seed"], overrides, message)
        return {**job, "status": "failed", "error": message}
    verdict = res.verdict.value if res.verdict else None
    return {**job, "status": "done", **res.metrics, "verdict": verdict, "seconds": res.duration_s}


def cmd_sweep(args) -> int:
    info = get_method(args.slug)
    module = info.load()
    jobs = sweep_grid(args.param, args.seeds)
    from .core.store import RunStore

    store = RunStore()  # every run records into it: refuse a damaged store before anything starts
    todo, rows = [], []
    for job in jobs:  # validate the whole grid before starting anything
        overrides = {k: v for k, v in job.items() if k != "seed"}
        try:
            values = check_run_args(module.PARAMS, args.preset, overrides, job["seed"], args.device)
        except ValueError as err:
            raise ValueError(f"sweep cell {job}: {err} (nothing was run)") from None
        earlier = None if args.notebook or args.rerun else store.find(info.slug, args.preset, job["seed"], values)
        if earlier is None:
            todo.append(job)
        else:
            rows.append({**job, "status": f"recorded earlier (run {earlier})"})
    where = f"scheduler {args.scheduler}" if args.scheduler else f"{args.workers} local workers"
    print(f"sweep {info.slug}: {len(todo)} runs on {where}" + (f", {len(rows)} already recorded" if rows else ""))
    if todo:
        from dask.distributed import Client, LocalCluster
        from dask.distributed import progress as dask_progress

        cluster = (
            None
            if args.scheduler
            else LocalCluster(
                n_workers=args.workers,
                threads_per_worker=1,
                processes=not args.in_process,
                dashboard_address=None,
            )
        )
        try:
            with Client(args.scheduler or cluster) as client:
                futures = [
                    client.submit(
                        _sweep_one, info.slug, args.preset, args.device, job, args.notebook, args.out, pure=False
                    )
                    for job in todo
                ]
                if sys.stderr.isatty():
                    dask_progress(futures)
                rows += client.gather(futures)
        finally:
            if cluster is not None:
                cluster.close()
    import pandas as pd

    table = pd.DataFrame(rows)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    if args.csv:
        table.to_csv(args.csv, index=False)
        print(f"table → {args.csv}")
    failed = int((table["status"] == "failed").sum()) if "status" in table else 0
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

    p = sub.add_parser("report", help="write the HTML report of the newest runs")
    p.add_argument("--execute", action="store_true", help="first execute every available notebook")
    p.add_argument("--preset", default="quick", choices=PRESETS)
    p.add_argument("--out", default="report")
    p.add_argument("--runs", default="runs", help="folder for executed notebooks (with --execute)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("sweep", help="run a grid of parameters and seeds on Dask; every run is recorded")
    p.add_argument("slug")
    p.add_argument("--preset", default="quick", choices=PRESETS)
    p.add_argument("--device", default="auto")
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
