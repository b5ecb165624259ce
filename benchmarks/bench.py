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


def notebook_time(slug: str) -> float:
    from labkit.cli import execute_notebook

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["LABKIT_STORE"] = str(Path(tmp) / "runs.sqlite")
        return execute_notebook(slug, "quick", 0, "auto", {}, tmp)["seconds"]


def main(slugs: list[str], notebooks_only: bool = False) -> None:
    import labkit

    methods = [m for m in labkit.available_methods() if not slugs or m.slug in slugs]
    rows = []
    for m in methods:
        print(f"{m.slug}: notebook ...", flush=True)
        nb = notebook_time(m.slug)
        if notebooks_only:
            rows.append(f"| {m.id:02d} {m.short} | {nb:.1f} | — | — |")
        else:
            one, two = direct_run_time(m.slug, 1), direct_run_time(m.slug, 2)
            rows.append(f"| {m.id:02d} {m.short} | {nb:.1f} | {one:.1f} | {two:.1f} |")
        print(rows[-1], flush=True)
    imp = import_time()
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    import torch

    text = (
        f"""# Benchmarks

Written by `python benchmarks/bench.py` on {time.strftime("%Y-%m-%d")} ({machine}, torch {torch.__version__},
no GPU). Rerun it to refresh; figures depend on the machine.

`import labkit`: **{imp * 1000:.0f} ms** (fresh interpreter, best of 5, interpreter start included; the budget is 1 s).

Quick preset, wall seconds (budget: ~30 s per notebook through papermill):

| method | notebook via papermill | `run()` 1 thread | `run()` 2 threads |
| --- | --- | --- | --- |
"""
        + "\n".join(rows)
        + """

The notebook column is the whole notebook (kernel start, the tiny demos, the figures, the widget), as
`make run` and CI execute it. The `run()` columns force the thread count with `LABKIT_THREADS`; each
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
