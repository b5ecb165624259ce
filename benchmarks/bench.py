"""Measure what the kit promises and write BENCHMARKS.md (one command; every section can be re-run on its own).

    python benchmarks/bench.py                    # every section but --memory (long: each notebook twice)
    python benchmarks/bench.py --table rpo fedld  # one section, some methods
    python benchmarks/bench.py --imports --overhead --lora
    python benchmarks/bench.py --memory rpo dual_rl   # peak RSS of standard presets (minutes per method)

Sections (a section not asked for keeps its text in BENCHMARKS.md as it was):

``--table``     per method: the quick notebook through papermill (wall and CPU seconds, as CI runs it) and, unless
                ``--notebooks-only``, ``run(preset="quick")`` called directly with 1 and 2 torch threads.
``--suite``     the quick notebooks through the ``papermill`` command two at a time (total wall, the slowest), then
                the same notebooks from ONE Python process (:mod:`labkit.batch`, papermill imported once), and the
                fixed cost of a trivial notebook both ways: what the batch saves per notebook.
``--imports``   ``import labkit`` (best of 5) and ``import papermill`` with their largest imports (``-X importtime``),
                and ``import papermill`` as :mod:`labkit.batch` does it.
``--overhead``  labkit's runner per training step against a plain PyTorch loop on the same MLP and data (goal ≤ 1.05).
``--lora``      a LoRA training step of labkit's adapters against PEFT's on the same tiny Llama (ratio).
``--memory``    peak resident memory (``ru_maxrss`` of a fresh process) of each named method's standard preset;
                ``--memory all`` for every available method.

Positional slugs choose the methods of ``--table``, ``--suite`` and ``--memory``. ``--out FILE`` writes elsewhere
than BENCHMARKS.md. Every section records the machine (CPU, cores, AVX2/AVX-512) and the load average when it
started: on a shared machine the figures read high.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTES = "<!-- notes: kept when the script rewrites this file -->"
SECTIONS = ("table", "suite", "imports", "overhead", "lora", "memory")
sys.path.insert(0, str(ROOT))


# --- the machine ----------------------------------------------------------------------------------------------


def machine() -> str:
    """CPU model, cores, vector extensions, Python, torch and the 1-minute load average, in one line."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        info = Path("/proc/cpuinfo").read_text()
        model = re.search(r"model name\s*:\s*(.+)", info).group(1).strip()
        flags = set(re.search(r"flags\s*:\s*(.+)", info).group(1).split())
    except (OSError, AttributeError):
        pass
    vector = [f for f in ("avx2", "avx512f", "amx_tile") if f in flags]
    import torch

    return (
        f"{model}, {os.cpu_count()} cores ({', '.join(vector) or 'no AVX2'}), Python {platform.python_version()}, "
        f"torch {torch.__version__}; load average {os.getloadavg()[0]:.1f} at the start"
    )


def stamp() -> str:
    return f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {machine()}."


# --- BENCHMARKS.md: blocks that each section rewrites in place ------------------------------------------------


def block_markers(name: str) -> tuple[str, str]:
    return f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"


def write_block(target: Path, name: str, body: str) -> None:
    """Put ``body`` between the markers of section ``name`` in ``target`` (after the notes marker, at the end,
    the first time); the rest of the file is kept as it is."""
    start, end = block_markers(name)
    text = target.read_text() if target.exists() else "# Benchmarks\n"
    block = f"{start}\n{body.strip()}\n{end}"
    if start in text and end in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end) :]
    else:
        if NOTES not in text:
            text = text.rstrip() + "\n\n" + NOTES + "\n"
        text = text.rstrip() + "\n\n" + block + "\n"
    target.write_text(text)


def read_block(target: Path, name: str) -> str:
    start, end = block_markers(name)
    text = target.read_text() if target.exists() else ""
    return text[text.index(start) + len(start) : text.index(end)] if start in text and end in text else ""


# --- --table: the per-method table at the top (as before) -----------------------------------------------------


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


def previous_rows(target: Path) -> dict[str, str]:
    """The table rows of the current file by method id ("03"), kept for methods not measured this time."""
    if not target.exists():
        return {}
    rows = [
        line
        for line in target.read_text().split(NOTES)[0].splitlines()
        if line.startswith("| ") and line[2:4].isdigit()
    ]
    return {line[2:4]: line for line in rows}


def section_table(target: Path, slugs: list[str], notebooks_only: bool = False) -> None:
    import labkit

    methods = [m for m in labkit.available_methods() if not slugs or m.slug in slugs]
    kept = previous_rows(target) if slugs else {}
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
    host = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    import torch

    text = (
        f"""# Benchmarks

Written by `python benchmarks/bench.py` on {time.strftime("%Y-%m-%d")} ({host}, torch {torch.__version__},
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
    if target.exists() and NOTES in target.read_text():  # keep the notes and the other sections below the marker
        text += "\n" + NOTES + target.read_text().split(NOTES, 1)[1]
    target.write_text(text)
    print(text)


# --- --suite: the quick notebooks, two at a time, by the papermill command and from one process ----------------


def quick_notebooks(slugs: list[str]) -> list[Path]:
    import labkit

    methods = [m for m in labkit.available_methods() if not slugs or m.slug in slugs]
    return [ROOT / m.notebook.replace(".py", ".ipynb") for m in methods]


def papermill_command(notebook: Path, out_dir: Path, env: dict) -> float:
    """Wall seconds of ``papermill NB OUT`` in a fresh process (what ``make notebooks`` runs per notebook)."""
    exe = str(Path(sys.executable).with_name("papermill"))
    cmd = [exe, "--log-level", "WARNING", "--no-progress-bar", "-k", "python3", "--cwd", str(notebook.parent)]
    start = time.perf_counter()
    subprocess.run([*cmd, str(notebook), str(out_dir / notebook.name)], check=True, env=env, capture_output=True)
    return time.perf_counter() - start


def by_command(notebooks: list[Path], out_dir: Path, env: dict, jobs: int) -> tuple[float, list[float]]:
    """(total wall, per-notebook walls) of the papermill command, ``jobs`` notebooks at a time."""
    start = time.perf_counter()
    with ThreadPoolExecutor(jobs) as pool:
        each = list(pool.map(lambda nb: papermill_command(nb, out_dir, env), notebooks))
    return time.perf_counter() - start, each


def by_batch(notebooks: list[Path], out_dir: Path, env: dict, jobs: int) -> tuple[float, list[float]]:
    """(total wall including the interpreter, per-notebook seconds) of ``python -m labkit.batch``."""
    cmd = [sys.executable, "-m", "labkit.batch", "--jobs", str(jobs), "--out", str(out_dir), *map(str, notebooks)]
    start = time.perf_counter()
    out = subprocess.run(cmd, check=True, env=env, capture_output=True, text=True)
    total = time.perf_counter() - start
    seconds = {line.split()[-1]: float(line.split()[0]) for line in out.stdout.splitlines() if line.endswith(".ipynb")}
    return total, [seconds[nb.name] for nb in notebooks]


def trivial_notebook(folder: Path) -> Path:
    """A two-cell notebook that only imports torch: its time is the fixed cost of executing any notebook."""
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    nb = new_notebook(
        cells=[new_code_cell("preset = 'quick'", metadata={"tags": ["parameters"]}), new_code_cell("import torch")]
    )
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = folder / "trivial.ipynb"
    nbformat.write(nb, str(path))
    return path


def section_suite(target: Path, slugs: list[str], jobs: int = 2, trivial_repeats: int = 4) -> None:
    head = stamp()
    notebooks = quick_notebooks(slugs)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        env = {**os.environ, "LABKIT_STORE": str(tmp / "runs.sqlite"), "LABKIT_PROGRESS": "0", "LABKIT_RECORD": "0"}
        (tmp / "cmd").mkdir()
        (tmp / "batch").mkdir()
        print(f"suite: {len(notebooks)} notebooks by the papermill command, {jobs} at a time ...", flush=True)
        cmd_total, cmd_each = by_command(notebooks, tmp / "cmd", env, jobs)
        print(f"suite: the same from one process ({jobs} at a time) ...", flush=True)
        batch_total, batch_each = by_batch(notebooks, tmp / "batch", env, jobs)
        trivial = [trivial_notebook(tmp)] * trivial_repeats
        print("suite: the fixed cost of a trivial notebook, one at a time ...", flush=True)
        (tmp / "t1").mkdir()
        (tmp / "t2").mkdir()
        triv_cmd_total, triv_cmd = by_command(trivial, tmp / "t1", env, 1)
        triv_batch_total, triv_batch = by_batch(trivial, tmp / "t2", env, 1)
    load = os.getloadavg()[0]
    saved = (triv_cmd_total - triv_batch_total) / trivial_repeats

    def worst(each: list[float]) -> str:
        slowest = sorted(zip(each, notebooks), reverse=True)[:3]
        return ", ".join(f"{nb.stem} {sec:.1f}" for sec, nb in slowest)

    def row(how: str, total: float, each: list[float]) -> str:
        over = f"{sum(sec > 30 for sec in each)} of {len(each)}"
        return f"| {how} | {total:.1f} | {statistics.median(each):.1f} | {over} | {worst(each)} |"

    per_cmd, per_batch = triv_cmd_total / trivial_repeats, triv_batch_total / trivial_repeats
    kernels = statistics.median(triv_batch)
    which = "all available" if not slugs else ", ".join(nb.stem for nb in notebooks)
    body = f"""## The quick suite: the papermill command against one process

{head} Notebooks: {which} ({len(notebooks)}), {jobs} at a time, executed copies in a temporary folder.
Load average at the end: {load:.1f}.

| how | total wall (s) | per notebook: median (s) | over 30 s | slowest (s) |
| --- | --- | --- | --- | --- |
{row("`papermill` command per notebook", cmd_total, cmd_each)}
{row("one process (`python -m labkit.batch`)", batch_total, batch_each)}

A two-cell notebook that only imports torch, one at a time, {trivial_repeats} times: **{per_cmd:.1f} s** each by the
`papermill` command, **{per_batch:.1f} s** each from one process (its interpreter and one `import papermill` spread
over the {trivial_repeats}; the kernels alone {kernels:.1f} s each): the batch saves **{saved:.1f} s of fixed cost per
notebook** (a fresh interpreter, `import papermill` and, through nbformat's jsonschema, `rfc3987_syntax`, which
`labkit.batch` does not import). The kernel's own start and imports stay.
"""
    write_block(target, "suite", body)
    print(body)


# --- --imports ------------------------------------------------------------------------------------------------


def importtime(statement: str, env: dict | None = None) -> tuple[float, list[tuple[float, str]]]:
    """(wall seconds of a fresh ``python -X importtime -c statement``, the modules whose own import time (without
    what they import) is largest, in ms, largest first)."""
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", statement], capture_output=True, text=True, check=True, env=env
    )
    wall = time.perf_counter() - start
    rows = []
    for line in out.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+\d+ \|\s*(\S+)", line)
        if m:
            rows.append((int(m.group(1)) / 1000, m.group(2)))
    return wall, sorted(rows, reverse=True)


def section_imports(target: Path) -> None:
    head = stamp()
    labkit_best = import_time()
    _, labkit_top = importtime("import labkit")
    pm_wall, pm_top = importtime("import papermill")
    batch_wall, batch_top = importtime("from labkit.batch import import_papermill; import_papermill()")
    rfc = sum(ms for ms, name in pm_top if name.split(".")[0] == "rfc3987_syntax")
    lines = lambda top, n: ", ".join(f"`{name}` {ms:.0f}" for ms, name in top[:n])  # noqa: E731
    body = f"""## Import times

{head}

- `import labkit`: **{labkit_best * 1000:.0f} ms** (fresh interpreter, best of 5); largest own import times (ms):
  {lines(labkit_top, 5) or "none above the package itself"}.
- `import papermill`: **{pm_wall:.2f} s** (fresh interpreter, once); largest own import times (ms): {lines(pm_top, 5)}.
  `rfc3987_syntax` alone: **{rfc:.0f} ms** (nbformat → jsonschema's format checkers; it builds a Lark grammar at
  import and checks only the `iri` formats, which no notebook schema uses).
- `import papermill` as `labkit.batch` does it (without `rfc3987_syntax`): **{batch_wall:.2f} s**; largest:
  {lines(batch_top, 4)}.

The papermill command cannot skip it (it is papermill's own import chain, through nbformat and jsonschema);
`labkit.batch` and anything that imports papermill through it (one process for a batch of notebooks) does.
"""
    write_block(target, "imports", body)
    print(body)


# --- --overhead: the runner against a plain loop --------------------------------------------------------------


def _mlp_problem(seed: int = 0, n: int = 512, d: int = 32, width: int = 64):
    import torch

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    y = torch.sin(x @ torch.randn(d, 1, generator=g))
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(d, width), torch.nn.Tanh(), torch.nn.Linear(width, 1))
    return model, x, y


def clock() -> tuple[float, float]:
    """(wall, CPU) seconds now. CPU time (this process, all threads) moves little with the machine's load, wall
    time a lot: on a shared machine compare CPU times."""
    return time.perf_counter(), time.process_time()


def since(start: tuple[float, float]) -> tuple[float, float]:
    wall, cpu = clock()
    return wall - start[0], cpu - start[1]


def plain_loop(steps: int, log_every: int) -> tuple[float, float]:
    """(wall, CPU) seconds of ``steps`` Adam steps on the MLP regression, written as a plain PyTorch loop (loss
    read at the logged steps only)."""
    import torch

    model, x, y = _mlp_problem()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    log = []
    start = clock()
    for step in range(steps):
        loss = torch.nn.functional.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % log_every == 0:
            log.append(loss.item())
    return since(start)


def runner_loop(n_steps: int, every: int) -> tuple[float, float]:
    """The same training as :func:`plain_loop` as a method writes it: ``method_run`` with typed knobs, a progress
    bar, ``ctx.check`` on every loss, ``ctx.history.log`` and ``ctx.check_weights`` at each logged step."""
    from dataclasses import dataclass

    import torch

    from labkit.core import ClaimCheck, Outcome, knob, method_run

    @dataclass(frozen=True)
    class Knobs:
        steps: int = knob(n_steps, low=1, high=10**7, help="steps")
        log_every: int = knob(every, low=1, high=10**7, help="log period")

    timing = {}

    def body(ctx):
        model, x, y = _mlp_problem()
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        start = clock()
        bar = ctx.bar(ctx.p.steps, "mlp")
        for step in range(ctx.p.steps):
            loss = torch.nn.functional.mse_loss(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            value = ctx.check(loss, step, "mlp")
            if step % ctx.p.log_every == 0:
                ctx.history.log(step, "mlp", "loss", value)
                ctx.check_weights(model, step, "mlp")
            bar.update(1)
        bar.close()
        timing["s"] = since(start)
        return Outcome(metrics={"loss": value}, claims=[ClaimCheck("runs", "loss", [value], 0.0, headline=True)])

    body.__module__ = "labkit.methods.bench.experiment"
    run = method_run(Knobs)(body)
    run(progress=False, record=False)
    return timing["s"]


def section_overhead(target: Path, steps: int = 2000, log_every: int = 20, repeats: int = 5) -> None:
    import torch

    head = stamp()
    torch.set_num_threads(1)
    plain_loop(50, log_every)  # warm up (the first optimizer of a process imports torch's compiler)
    runner_loop(50, log_every)
    plain, runner = [], []
    for _ in range(repeats):  # interleaved, so that a load change hits both
        plain.append(plain_loop(steps, log_every))
        runner.append(runner_loop(steps, log_every))
    load = os.getloadavg()[0]
    step_us = {  # best of the repeats, per step, (wall, CPU)
        name: tuple(min(t[i] for t in times) / steps * 1e6 for i in (0, 1))
        for name, times in dict(plain=plain, runner=runner).items()
    }
    cpu_ratio = step_us["runner"][1] / step_us["plain"][1]
    wall_ratio = step_us["runner"][0] / step_us["plain"][0]
    body = f"""## The runner's per-step overhead

{head} One torch thread. An MLP (32 → 64 → 1, tanh) regressing 512 points, {steps} Adam steps, best of
{repeats} interleaved runs, CPU time per step (wall in brackets): a plain PyTorch loop (the loss read every
{log_every} steps) **{step_us["plain"][1]:.0f} µs** ({step_us["plain"][0]:.0f}); the same through `method_run` with a
progress bar, `ctx.check` on every loss and `ctx.history.log` + `ctx.check_weights` every {log_every} steps
**{step_us["runner"][1]:.0f} µs** ({step_us["runner"][0]:.0f}): ratio **{cpu_ratio:.3f}** on CPU time, {wall_ratio:.3f}
on wall time (goal ≤ 1.05; load {load:.1f} at the end). `ctx.check` reads the loss every step (`float(loss)`): free
on a CPU, a synchronisation on a GPU.
"""
    write_block(target, "overhead", body)
    print(body)


# --- --lora: labkit's LoRA against PEFT's ---------------------------------------------------------------------


def _tiny_llama():
    import torch
    import transformers

    config = transformers.LlamaConfig(
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=256,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(config)


def lora_step_time(which: str, steps: int = 30, batch: int = 8, length: int = 32) -> tuple[float, float]:
    """Median (wall, CPU) seconds of one LoRA training step (forward, loss, backward, AdamW) on the tiny Llama,
    with labkit's ``inject_lora`` or PEFT's ``get_peft_model``."""
    import torch

    model = _tiny_llama()
    targets = ["q_proj", "v_proj"]
    if which == "labkit":
        from labkit.models.adapters import inject_lora

        inject_lora(model, r"model\.layers\.\d+\.self_attn\.(q_proj|v_proj)", r=8, alpha=16)
    else:
        import peft

        model = peft.get_peft_model(model, peft.LoraConfig(r=8, lora_alpha=16, target_modules=targets, lora_dropout=0))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    ids = torch.randint(0, 256, (batch, length), generator=torch.Generator().manual_seed(0))
    times = []
    for _ in range(steps + 3):
        start = clock()
        loss = model(input_ids=ids, labels=ids).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(since(start))
    kept = times[3:]
    return statistics.median(t[0] for t in kept), statistics.median(t[1] for t in kept)


def section_lora(target: Path, repeats: int = 3) -> None:
    import torch

    head = stamp()
    torch.set_num_threads(1)
    ours, theirs = [], []
    for _ in range(repeats):  # interleaved
        ours.append(lora_step_time("labkit"))
        theirs.append(lora_step_time("peft"))
    import peft

    load = os.getloadavg()[0]
    ms = {name: tuple(min(t[i] for t in v) * 1000 for i in (0, 1)) for name, v in dict(ours=ours, peft=theirs).items()}
    body = f"""## LoRA step: labkit against PEFT

{head} One torch thread. A tiny Llama (transformers, 2 layers, d = 128, vocabulary 256) with LoRA r = 8, α = 16
on `q_proj` and `v_proj`, batches of 8 × 32 tokens, AdamW on the adapter only; median step of 30 after 3 warm-up
steps, best of {repeats} interleaved, CPU time (wall in brackets): `labkit.models.adapters.inject_lora`
**{ms["ours"][1]:.1f} ms** ({ms["ours"][0]:.1f}), PEFT {peft.__version__} **{ms["peft"][1]:.1f} ms**
({ms["peft"][0]:.1f}):
ratio labkit / PEFT **{ms["ours"][1] / ms["peft"][1]:.2f}** on CPU time, {ms["ours"][0] / ms["peft"][0]:.2f} on wall
time (load {load:.1f} at the end).
"""
    write_block(target, "lora", body)
    print(body)


# --- --memory: peak RSS of standard presets -------------------------------------------------------------------


def peak_memory(slug: str, preset: str = "standard") -> tuple[float, float]:
    """(peak resident MB, wall seconds) of ``run(preset)`` in a fresh process (``ru_maxrss``: the process's
    high-water mark, interpreter and imports included)."""
    code = (
        "import resource, time, labkit; t = time.perf_counter(); "
        f"labkit.run({slug!r}, preset={preset!r}, progress=False); "
        "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    )
    env = {**os.environ, "LABKIT_THREADS": "1", "LABKIT_PROGRESS": "0", "LABKIT_RECORD": "0"}
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, env=env)
    wall, kb = out.stdout.strip().splitlines()[-1].split()
    return int(kb) / 1024, float(wall)


def section_memory(target: Path, slugs: list[str]) -> None:
    import labkit

    chosen = [m for m in labkit.available_methods() if "all" in slugs or m.slug in slugs]
    unknown = set(slugs) - {m.slug for m in labkit.available_methods()} - {"all"}
    if unknown:
        raise SystemExit(f"--memory: not available methods: {sorted(unknown)}")
    kept = {}
    for line in read_block(target, "memory").splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("| ") and cells[0][:2].isdigit():
            kept[cells[0][:2]] = line
    for m in chosen:
        print(f"{m.slug}: standard preset ...", flush=True)
        load_before = os.getloadavg()[0]
        mb, wall = peak_memory(m.slug)
        kept[f"{m.id:02d}"] = (
            f"| {m.id:02d} {m.short} | {mb:.0f} | {'yes' if mb < 2048 else '**no**'} | {wall:.0f} | "
            f"{load_before:.1f} | {time.strftime('%Y-%m-%d')} |"
        )
        print(kept[f"{m.id:02d}"], flush=True)
        write_memory_block(target, kept)  # after each method: a stopped measurement keeps what it measured


def write_memory_block(target: Path, kept: dict[str, str]) -> None:
    import labkit

    missing = [f"{m.id:02d} {m.short}" for m in labkit.available_methods() if f"{m.id:02d}" not in kept]
    body = f"""## Peak memory of the standard presets

{stamp()} Peak resident memory (`ru_maxrss`) of a fresh process that imports labkit and runs
`run(preset="standard")` on one thread (Binder's limit is 2 GB); wall seconds and the load when it started.
`python benchmarks/bench.py --memory SLUG ...` measures more and keeps these rows.

| method | peak RSS (MB) | under 2 GB | wall (s) | load | measured |
| --- | --- | --- | --- | --- | --- |
{chr(10).join(row for _, row in sorted(kept.items()))}

Not measured yet: {", ".join(missing) or "none"}.
"""
    write_block(target, "memory", body)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("slugs", nargs="*", help="methods for --table, --suite and --memory (default: all)")
    for name in SECTIONS:
        parser.add_argument(f"--{name}", action="store_true", help=f"run the {name} section")
    parser.add_argument("--notebooks-only", action="store_true", help="--table without the direct run() timings")
    parser.add_argument("--jobs", type=int, default=2, help="notebooks at a time in --suite (default: 2)")
    parser.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md", help="the file to write")
    args = parser.parse_args(argv)
    chosen = [name for name in SECTIONS if getattr(args, name)] or [s for s in SECTIONS if s != "memory"]
    if "memory" in chosen and not args.slugs:
        parser.error("--memory takes the methods to measure (minutes each): SLUG ... or all")
    target = args.out
    for name in chosen:
        if name == "table":
            section_table(target, args.slugs, args.notebooks_only)
        elif name == "suite":
            section_suite(target, args.slugs, args.jobs)
        elif name == "imports":
            section_imports(target)
        elif name == "overhead":
            section_overhead(target)
        elif name == "lora":
            section_lora(target)
        elif name == "memory":
            section_memory(target, args.slugs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
