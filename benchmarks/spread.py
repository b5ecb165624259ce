"""Measure how far each method's quick-preset numbers move across CPU kernels and thread counts.

    python benchmarks/spread.py                 # every available method
    python benchmarks/spread.py rpo inpo        # some
    python benchmarks/spread.py --configs default:1,avx2:2

Each configuration runs ``labkit.run(slug, preset="quick")`` in a fresh interpreter with
``ATEN_CPU_CAPABILITY`` (torch's CPU kernel set: default, avx2, avx512 where the CPU has it), the matching caps
on MKL's and oneDNN's instruction sets (``MKL_ENABLE_INSTRUCTIONS``, ``ONEDNN_MAX_CPU_ISA``: the BLAS also picks
its kernels by CPU) and ``LABKIT_THREADS`` set, and saves the final metrics, every claim's per-seed values
and its verdict.
The spread of a number is max − min over the configurations. Checked notebook cells print a number only
at a precision its spread supports (``labkit.core.fmt(value, decimals)``); a verdict that changes between
configurations is a claim that sits on its margin, and the note and the notebook must say so.

Results go to ``benchmarks/spread/<slug>.json`` (the raw numbers) and a table per method on stdout;
``--markdown`` prints the summary table that BENCHMARKS.md keeps.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "spread"
sys.path.insert(0, str(ROOT))

CHILD = r"""
import json, sys, labkit
res = labkit.run(sys.argv[1], progress=False)
nums = {f"metric:{k}": float(v) for k, v in res.metrics.items() if isinstance(v, (int, float))}
claims = []
for c in res.claims:
    d = c.to_dict()
    claims.append({"claim": d["claim"], "verdict": d["verdict"], "mean": d["mean"], "low": d["low"],
                   "high": d["high"], "values": d["values"], "decimals": d["decimals"], "margin": d["margin"]})
print("@@" + json.dumps({"numbers": nums, "claims": claims}))
"""


def cpu_has_avx512() -> bool:
    try:
        return "avx512f" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def default_configs() -> list[tuple[str, int]]:
    kernels = ["default", "avx2"] + (["avx512"] if cpu_has_avx512() else [])
    return [(k, 1) for k in kernels] + [("avx2", 2)]


#: the instruction sets MKL (torch's BLAS here) and oneDNN may use alongside each torch kernel set, so that one
#: configuration stands for a whole older or newer CPU, not only torch's own kernels
KERNEL_ENV = {
    "default": {"MKL_ENABLE_INSTRUCTIONS": "SSE4_2", "ONEDNN_MAX_CPU_ISA": "SSE41"},
    "avx2": {"MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
    "avx512": {"MKL_ENABLE_INSTRUCTIONS": "AVX512", "ONEDNN_MAX_CPU_ISA": "ALL"},
}


def kernel_env(kernel: str) -> dict[str, str]:
    """Environment for one torch kernel set, with the matching MKL and oneDNN instruction-set caps."""
    return {"ATEN_CPU_CAPABILITY": kernel, **KERNEL_ENV.get(kernel, {})}


def run_config(slug: str, kernel: str, threads: int) -> dict:
    env = {**os.environ, **kernel_env(kernel), "LABKIT_THREADS": str(threads), "LABKIT_PROGRESS": "0"}
    out = subprocess.run(
        [sys.executable, "-c", CHILD, slug], env=env, capture_output=True, text=True, cwd=ROOT, check=False
    )
    if out.returncode != 0:
        raise RuntimeError(f"{slug} under {kernel}:{threads} failed:\n{out.stderr[-2000:]}")
    line = [x for x in out.stdout.splitlines() if x.startswith("@@")][-1]
    return json.loads(line[2:])


def spread_of(runs: dict[str, dict]) -> dict:
    """Per number: min, max, spread; per claim: the verdicts seen and the spread of its mean."""
    names = sorted(set().union(*(r["numbers"] for r in runs.values())))
    numbers = {}
    for name in names:
        vals = [r["numbers"][name] for r in runs.values() if name in r["numbers"]]
        finite = [v for v in vals if math.isfinite(v)]
        numbers[name] = {
            "min": min(finite) if finite else float("nan"),
            "max": max(finite) if finite else float("nan"),
            "spread": (max(finite) - min(finite)) if finite else float("nan"),
        }
    first = next(iter(runs.values()))["claims"]
    claims = []
    for i, c in enumerate(first):
        seen = [r["claims"][i] for r in runs.values()]
        means = [s["mean"] for s in seen]
        edges = [s["low"] for s in seen] + [s["high"] for s in seen]
        claims.append(
            {
                "claim": c["claim"],
                "verdicts": sorted({s["verdict"] for s in seen}),
                "mean_spread": max(means) - min(means),
                "interval_edge_spread": max(
                    max(s["low"] for s in seen) - min(s["low"] for s in seen),
                    max(s["high"] for s in seen) - min(s["high"] for s in seen),
                )
                if all(math.isfinite(e) for e in edges)
                else float("nan"),
                "decimals": c["decimals"],
                "printed_unstable": any(
                    round(s["mean"], c["decimals"]) != round(c["mean"], c["decimals"]) for s in seen
                ),
            }
        )
    return {"numbers": numbers, "claims": claims}


def measure(slug: str, configs: list[tuple[str, int]]) -> dict:
    runs = {}
    for kernel, threads in configs:
        print(f"  {slug}: ATEN_CPU_CAPABILITY={kernel} threads={threads}", flush=True)
        runs[f"{kernel}:{threads}"] = run_config(slug, kernel, threads)
    report = {"slug": slug, "configs": list(runs), "runs": runs, **spread_of(runs)}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{slug}.json").write_text(json.dumps(report, indent=1))
    return report


def print_report(rep: dict) -> None:
    print(f"\n== {rep['slug']} over {', '.join(rep['configs'])}")
    for c in rep["claims"]:
        flag = "  VERDICT CHANGES" if len(c["verdicts"]) > 1 else ""
        print(
            f"  claim: {c['claim'][:70]!r}: verdicts {c['verdicts']}, mean spread {c['mean_spread']:.2g}, "
            f"interval edges {c['interval_edge_spread']:.2g}; printed at {c['decimals']} decimals"
            f"{' (last digit moves)' if c['printed_unstable'] else ''}{flag}"
        )
    moving = {k: v for k, v in rep["numbers"].items() if v["spread"] > 0}
    print(f"  {len(moving)} of {len(rep['numbers'])} metrics move; largest spreads:")
    for k, v in sorted(moving.items(), key=lambda kv: -abs(kv[1]["spread"]))[:8]:
        print(f"    {k}: {v['min']:.6g} .. {v['max']:.6g} (spread {v['spread']:.2g})")


def markdown(reports: list[dict]) -> str:
    rows = [
        "| method | configurations | metrics that move | largest metric spread | claim verdicts stable |",
        "| --- | --- | --- | --- | --- |",
    ]
    for rep in reports:
        moving = {k: v for k, v in rep["numbers"].items() if v["spread"] > 0}
        top = max(moving.items(), key=lambda kv: abs(kv[1]["spread"]), default=None)
        largest = f"{top[0].removeprefix('metric:')} {top[1]['spread']:.2g}" if top else "none"
        stable = all(len(c["verdicts"]) == 1 for c in rep["claims"])
        rows.append(
            f"| {rep['slug']} | {len(rep['configs'])} | {len(moving)} / {len(rep['numbers'])} | {largest} | "
            f"{'yes' if stable else 'NO'} |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    import labkit

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("methods", nargs="*")
    ap.add_argument("--configs", help="kernel:threads,... (default: default:1, avx2:1, avx512:1, avx2:2)")
    ap.add_argument("--markdown", action="store_true", help="print the summary table from saved results")
    args = ap.parse_args(argv)
    slugs = args.methods or [m.slug for m in labkit.available_methods()]
    if args.markdown:
        reports = [json.loads((OUT / f"{s}.json").read_text()) for s in slugs if (OUT / f"{s}.json").exists()]
        print(markdown(reports))
        return
    configs = (
        [(c.split(":")[0], int(c.split(":")[1])) for c in args.configs.split(",")]
        if args.configs
        else default_configs()
    )
    for slug in slugs:
        print_report(measure(slug, configs))


if __name__ == "__main__":
    main()
