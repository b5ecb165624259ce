"""Every available method's full preset on one GPU, one at a time, into BENCHMARKS.md (see benchmarks/GPU.md).

    python benchmarks/gpu.py --dry-run                  # what it would run, nothing run
    python benchmarks/gpu.py                            # every method: --device cuda --preset full, 300 s each
    python benchmarks/gpu.py --only rpo fedld --limit 120 --budget 480   # a slice that fits a lent GPU's time
    python benchmarks/gpu.py --device cpu --preset quick --only rpo --out /tmp/B.md   # the same path on a CPU

Each method runs in a fresh process (its own CUDA context, so ``torch.cuda.max_memory_allocated`` is its own, and
a method past ``--limit`` seconds is killed with its process group and the next one starts). A row per method:
wall seconds; throughput (torch optimizer steps per second of ``run()``, every arm and seed counted, from a global
step hook; and any metric the method reports named ``*_per_s`` or ``throughput``); peak GPU memory; and each
claim's verdict with its mean. The device's name (``torch.cuda.get_device_name``) heads the section. Rows of methods
not run this time are kept. Nothing is recorded in the run store (``LABKIT_RECORD=0``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench import read_block, write_block  # noqa: E402

#: a metric a method may report for the throughput column
THROUGHPUT = re.compile(r"(^|_)(per_s|throughput)($|_)")


def child(slug: str, preset: str, device: str) -> None:
    """Run one method (in the child process) and print its row as one JSON line."""
    import torch
    from torch.optim.optimizer import register_optimizer_step_post_hook

    import labkit

    steps = [0]  # every torch optimizer's step() in this process: all arms and seeds together
    register_optimizer_step_post_hook(lambda *_: steps.__setitem__(0, steps[0] + 1))
    start = time.perf_counter()
    result = labkit.run(slug, preset=preset, device=device, progress=False, record=False)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    wall = time.perf_counter() - start
    cuda = device.startswith("cuda")
    row = {
        "slug": slug,
        "wall": wall,
        "run_seconds": result.duration_s,
        "peak_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
        "throughput": {
            **({"optimizer steps/s": steps[0] / result.duration_s} if steps[0] and result.duration_s > 0 else {}),
            **{k: float(v) for k, v in result.metrics.items() if THROUGHPUT.search(k)},
        },
        "claims": [
            {"claim": c.claim, "verdict": c.verdict.value, "mean": c.interval.mean, "headline": c.headline}
            for c in result.claims
        ],
    }
    print("GPUBENCH " + json.dumps(row), flush=True)


def run_one(slug: str, preset: str, device: str, limit: float) -> dict:
    """Run ``slug`` in a fresh process with a time limit; returns its row, or one with ``error``."""
    env = {**os.environ, "LABKIT_RECORD": "0", "LABKIT_PROGRESS": "0"}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", slug, "--preset", preset, "--device", device]
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    start = time.perf_counter()
    try:
        out, err = proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return {"slug": slug, "wall": time.perf_counter() - start, "error": f"stopped at the {limit:.0f} s limit"}
    finally:
        if proc.poll() is None:  # interrupted: leave nothing running on the GPU
            os.killpg(proc.pid, signal.SIGKILL)
    for line in out.splitlines():
        if line.startswith("GPUBENCH "):
            return json.loads(line[len("GPUBENCH ") :])
    last = (err.strip().splitlines() or ["no output"])[-1]
    return {"slug": slug, "wall": time.perf_counter() - start, "error": f"exit {proc.returncode}: {last[:200]}"}


def device_name(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        gpu = torch.cuda.get_device_name(torch.device(device))
        return f"{gpu}, torch {torch.__version__}, CUDA {torch.version.cuda}"
    from bench import machine

    return f"CPU: {machine()}"


def format_row(info, preset: str, device: str, row: dict) -> str:
    """One Markdown table row for ``row`` (from :func:`run_one`)."""
    day = time.strftime("%Y-%m-%d")
    head = f"| {info.id:02d} {info.short} | {preset} | {device} | {row['wall']:.0f} |"
    if "error" in row:
        return f"{head} — | — | **{row['error']}** | {day} |"
    throughput = ", ".join(f"{k} {v:.3g}" for k, v in row["throughput"].items()) or "—"
    peak = "—" if row["peak_mb"] is None else f"{row['peak_mb']:.0f}"
    claims = "; ".join(
        ("**" if c["headline"] else "") + f"{c['verdict']} ({c['mean']:.3g})" + ("**" if c["headline"] else "")
        for c in row["claims"]
    )
    return f"{head} {throughput} | {peak} | {claims} | {day} |"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    parser.add_argument("--preset", default="full", choices=["quick", "standard", "full"])
    parser.add_argument("--only", nargs="+", metavar="SLUG", help="these methods (default: every available one)")
    parser.add_argument("--skip", nargs="+", metavar="SLUG", default=[], help="leave these out")
    parser.add_argument("--limit", type=float, default=300, help="seconds per method before it is stopped (300)")
    parser.add_argument(
        "--budget", type=float, default=None, help="total seconds: no method starts once it is spent (default: none)"
    )
    parser.add_argument("--dry-run", action="store_true", help="list what would run and stop")
    parser.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md", help="the file to write")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args.preset, args.device)
        return 0

    import labkit
    from labkit.core.device import pick_device

    available = {m.slug: m for m in labkit.available_methods()}
    unknown = sorted(set(args.only or []) - set(available))
    if unknown:
        parser.error(f"not available methods: {unknown}")
    chosen = [m for slug, m in available.items() if (not args.only or slug in args.only) and slug not in args.skip]
    if args.dry_run:  # imports each method (cheap), so a missing package shows before the GPU time is spent
        for m in chosen:
            try:
                m.load()
                ready = "imports ok"
            except ImportError as err:
                ready = f"cannot import: {err}"
            what = f"preset={args.preset} device={args.device} limit={args.limit:.0f}s"
            print(f"would run {m.id:02d} {m.slug} {what}: {ready}")
        most = len(chosen) * args.limit if args.budget is None else min(args.budget, len(chosen) * args.limit)
        print(f"{len(chosen)} methods; at most {most / 60:.0f} min; rows into {args.out}")
        return 0
    try:
        pick_device(args.device)  # refuse a device this machine lacks before anything starts
    except ValueError as err:
        parser.error(str(err))

    kept = {}
    for line in read_block(args.out, "gpu").splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("| ") and cells[0][:2].isdigit():
            kept[(cells[0][:2], cells[1], cells[2])] = line
    name = device_name(args.device)
    start, ran = time.perf_counter(), 0
    for m in chosen:
        left = float("inf") if args.budget is None else args.budget - (time.perf_counter() - start)
        if left < min(30.0, args.limit):
            print(f"budget spent: {m.slug} and the rest not run", flush=True)
            break
        print(f"{m.id:02d} {m.slug}: {args.preset} on {args.device} ...", flush=True)
        row = run_one(m.slug, args.preset, args.device, min(args.limit, left))
        ran += 1
        kept[(f"{m.id:02d}", args.preset, args.device)] = format_row(m, args.preset, args.device, row)
        print(kept[(f"{m.id:02d}", args.preset, args.device)], flush=True)
    body = f"""## Full presets on one GPU

Last written {time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())} by `python benchmarks/gpu.py` on **{name}**
(this time {ran} of {len(chosen)} methods in {time.perf_counter() - start:.0f} s, one at a time, at most
{args.limit:.0f} s each).
Wall seconds include the process's start and imports; peak is `torch.cuda.max_memory_allocated` (MB); claims: each
claim's verdict and mean, the headline in bold. Rows from earlier runs (other presets or devices) are kept.

| method | preset | device | wall (s) | throughput | peak GPU MB | claims | measured |
| --- | --- | --- | --- | --- | --- | --- | --- |
{chr(10).join(row for _, row in sorted(kept.items()))}
"""
    write_block(args.out, "gpu", body)
    print(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
