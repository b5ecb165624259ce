"""Measure what the kit promises and write BENCHMARKS.md.

    python benchmarks/bench.py            # all available methods
    python benchmarks/bench.py rpo fedld  # some
    python benchmarks/bench.py --notebooks-only   # skip the direct run() timings (half the time)

Measures: `import labkit` (fresh interpreter, best of 5), each method's quick preset through papermill
(the whole notebook, as CI and `make run` execute it), and `run(preset="quick")` called directly,
with 1 and with 2 torch threads. Timings depend on the machine; the table says which one.
"""

from __future__ import annotations

import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTES = "<!-- notes: kept when the script rewrites this file -->"
sys.path.insert(0, str(ROOT))


def import_time(repeats: int = 5) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import labkit"], check=True)
        best = min(best, time.perf_counter() - start)
    return best


def direct_run_time(slug: str, threads: int) -> float:
    code = (
        f"import time, labkit; t=time.perf_counter(); labkit.run({slug!r}, progress=False); "
        "print(time.perf_counter()-t)"
    )
    env = {**os.environ, "LABKIT_THREADS": str(threads), "LABKIT_PROGRESS": "0"}
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, env=env)
    return float(out.stdout.strip().splitlines()[-1])


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process and of its reaped children (the notebook's kernel)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def notebook_time(slug: str) -> tuple[float, float]:
    """(wall, CPU) seconds of the quick notebook through papermill. CPU counts the kernel too: on a loaded machine
    wall time grows with the load, while CPU time (one thread at quick) stays close to the quiet wall time."""
    from labkit.cli import execute_notebook

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["LABKIT_STORE"] = str(Path(tmp) / "runs.sqlite")
        cpu = _cpu_seconds()
        wall = execute_notebook(slug, "quick", 0, "auto", {}, tmp)["seconds"]
        return wall, _cpu_seconds() - cpu


def previous_rows() -> dict[str, str]:
    """The table rows of the current BENCHMARKS.md by method id ("03"), kept for methods not measured this time."""
    target = ROOT / "BENCHMARKS.md"
    if not target.exists():
        return {}
    rows = [
        line
        for line in target.read_text().split(NOTES)[0].splitlines()
        if line.startswith("| ") and line[2:4].isdigit()
    ]
    return {line[2:4]: line for line in rows}


def main(slugs: list[str], notebooks_only: bool = False) -> None:
    import labkit

    methods = [m for m in labkit.available_methods() if not slugs or m.slug in slugs]
    kept = previous_rows() if slugs else {}
    measured = {}
    day = time.strftime("%Y-%m-%d")
    for m in methods:
        print(f"{m.slug}: notebook ...", flush=True)
        wall, cpu = notebook_time(m.slug)
        load = os.getloadavg()[0]
        one, two = (
            ("—", "—") if notebooks_only else (f"{direct_run_time(m.slug, 1):.1f}", f"{direct_run_time(m.slug, 2):.1f}")
        )
        measured[f"{m.id:02d}"] = (
            f"| {m.id:02d} {m.short} | {wall:.1f} | {cpu:.1f} | {load:.1f} | {one} | {two} | {day} |"
        )
        print(measured[f"{m.id:02d}"], flush=True)
    rows = [row for _, row in sorted({**kept, **measured}.items())]
    imp = import_time()
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    import torch

    text = (
        f"""# Benchmarks

Written by `python benchmarks/bench.py` on {time.strftime("%Y-%m-%d")} ({machine}, torch {torch.__version__},
no GPU). Rerun it to refresh; figures depend on the machine.

`import labkit`: **{imp * 1000:.0f} ms** (fresh interpreter, best of 5, interpreter start included; the budget is 1 s).

Quick preset, seconds (budget: ~30 s per notebook through papermill):

| method | notebook wall | notebook CPU | load | `run()` 1 thread | `run()` 2 threads | measured |
| --- | --- | --- | --- | --- | --- | --- |
"""
        + "\n".join(rows)
        + """

The notebook columns are the whole notebook (kernel start, the tiny demos, the figures, the widget), as
`make run` and CI execute it: wall seconds, CPU seconds of papermill and its kernel together, and the 1-minute
load average right after (about 1 is the benchmark alone; above that another process shared the two cores, and
then both times read high: under a load of 7 RPO took 43 s wall and 21 s of CPU against 10 s quiet).
`bench.py SLUG ...` re-measures those methods and keeps the other rows as they were, with their dates.
The `run()` columns force the thread count with `LABKIT_THREADS`; each
method's quick preset uses the count set in its `method_run(threads=...)`.
"""
    )
    target = ROOT / "BENCHMARKS.md"
    if target.exists() and NOTES in target.read_text():  # keep the hand-written notes below the marker
        text += "\n" + NOTES + target.read_text().split(NOTES, 1)[1]
    target.write_text(text)
    print(text)


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    main(args, notebooks_only="--notebooks-only" in sys.argv)
