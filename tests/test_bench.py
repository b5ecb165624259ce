"""The benchmark scripts (benchmarks/bench.py, benchmarks/gpu.py) and labkit.batch: what they write and refuse.

No timing is asserted: figures depend on the machine and its load. These tests check that the sections land in
BENCHMARKS.md without touching the rest of it, that the GPU script runs a method through the same code path on a
CPU, stops one past its time limit and refuses a device the machine lacks, and that a batch of notebooks from one
process gives each notebook its outputs (and its error) without importing ``rfc3987_syntax``.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench  # noqa: E402

GPU = [sys.executable, str(ROOT / "benchmarks" / "gpu.py")]
HEAD = "# Benchmarks\n\n| 08 RPO | 9.9 |\n\n" + bench.NOTES + "\n## Notes\n\nhand-written.\n"


def test_a_section_is_added_after_the_notes_then_rewritten_in_place(tmp_path):
    target = tmp_path / "B.md"
    target.write_text(HEAD)
    bench.write_block(target, "lora", "## LoRA\n\nratio 1.0")
    bench.write_block(target, "suite", "## Suite\n\n12 s")
    bench.write_block(target, "lora", "## LoRA\n\nratio 0.9")
    text = target.read_text()
    assert text.startswith(HEAD.rstrip())  # the table and the notes are kept as they were
    assert "ratio 0.9" in text and "ratio 1.0" not in text and text.count("<!-- bench:lora -->") == 1
    assert text.index("<!-- bench:lora -->") < text.index("<!-- bench:suite -->")  # rewritten where it was
    assert bench.read_block(target, "suite").strip() == "## Suite\n\n12 s"
    assert bench.read_block(target, "memory") == ""


def test_a_section_in_a_file_without_notes_marker_gets_one(tmp_path):
    target = tmp_path / "B.md"
    bench.write_block(target, "gpu", "## GPU")
    assert bench.NOTES in target.read_text() and bench.read_block(target, "gpu").strip() == "## GPU"


def test_memory_rows_of_other_methods_are_kept(tmp_path, monkeypatch):
    target = tmp_path / "B.md"
    target.write_text(HEAD)
    monkeypatch.setattr(bench, "peak_memory", lambda slug: (3000.0 if slug == "fedld" else 150.0, 2.0))
    bench.section_memory(target, ["rpo"])
    bench.section_memory(target, ["fedld"])
    block = bench.read_block(target, "memory")
    assert "| 08 RPO | 150 | yes |" in block and "| 04 FedLD | 3000 | **no** |" in block
    assert "Not measured yet: 01 LoL" in block and "08 RPO" not in block.split("Not measured yet:")[1]
    with pytest.raises(SystemExit, match="nope"):
        bench.section_memory(target, ["nope"])


def test_importtime_reads_python_own_report():
    wall, top = bench.importtime("import json")
    assert wall > 0 and "json" in {name for _, name in top} and all(ms >= 0 for ms, _ in top)
    assert top == sorted(top, reverse=True)


def test_the_runner_loop_trains_through_method_run():
    assert min(bench.runner_loop(5, 2)) > 0 and min(bench.plain_loop(5, 2)) > 0


def test_the_machine_line_names_the_cpu_cores_and_load():
    line = bench.machine()
    assert f"{__import__('os').cpu_count()} cores" in line and "load average" in line


def test_bench_refuses_memory_without_methods(capsys):
    with pytest.raises(SystemExit):
        bench.main(["--memory"])
    assert "--memory takes the methods" in capsys.readouterr().err


# --- benchmarks/gpu.py ------------------------------------------------------------------------------------------


def test_gpu_dry_run_lists_every_available_method_and_runs_nothing(tmp_path):
    import labkit

    out = subprocess.run([*GPU, "--dry-run", "--out", str(tmp_path / "B.md")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    lines = [line for line in out.stdout.splitlines() if line.startswith("would run")]
    assert len(lines) == len(labkit.available_methods()) and all("imports ok" in line for line in lines)
    assert "preset=full device=cuda" in lines[0] and not (tmp_path / "B.md").exists()


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a GPU")
def test_gpu_script_refuses_cuda_where_there_is_none(tmp_path):
    out = subprocess.run([*GPU, "--only", "rpo", "--out", str(tmp_path / "B.md")], capture_output=True, text=True)
    assert out.returncode == 2 and "CUDA is not available here" in out.stderr and not (tmp_path / "B.md").exists()


def test_gpu_script_refuses_an_unknown_method():
    out = subprocess.run([*GPU, "--dry-run", "--only", "nope"], capture_output=True, text=True)
    assert out.returncode == 2 and "not available methods: ['nope']" in out.stderr


def test_a_method_past_its_limit_is_stopped_and_the_row_says_so(tmp_path):
    target = tmp_path / "B.md"
    cmd = [*GPU, "--device", "cpu", "--preset", "standard", "--only", "rpo", "--limit", "1", "--out", str(target)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "| 08 RPO | standard | cpu |" in target.read_text() and "stopped at the 1 s limit" in target.read_text()


def test_no_method_starts_once_the_budget_is_spent(tmp_path):
    target = tmp_path / "B.md"
    cmd = [*GPU, "--device", "cpu", "--only", "rpo", "fedld", "--budget", "5", "--out", str(target)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "budget spent: fedld and the rest not run" in out.stdout and "this time 0 of 2 methods" in target.read_text()


@pytest.mark.slow
def test_gpu_script_runs_one_method_on_cpu_and_writes_its_row(tmp_path):
    target = tmp_path / "B.md"
    target.write_text(HEAD)
    cmd = [*GPU, "--device", "cpu", "--preset", "quick", "--only", "rpo", "--out", str(target)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    block = bench.read_block(target, "gpu")
    row = next(line for line in block.splitlines() if line.startswith("| 08 RPO"))
    assert "| quick | cpu |" in row and row.count("holds") + row.count("inconclusive") >= 1 and "**" in row
    # RPO trains with torch optimizers: the throughput column counts their steps (a positive rate)
    rate = float(re.search(r"optimizer steps/s ([0-9.e+]+)", row).group(1))
    assert rate > 0
    assert "CPU: " in block and target.read_text().startswith(HEAD.rstrip())


# --- labkit.batch -----------------------------------------------------------------------------------------------


def notebook(path: Path, code: str) -> Path:
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    nb = new_notebook(cells=[new_code_cell("x = 1", metadata={"tags": ["parameters"]}), new_code_cell(code)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(path))
    return path


def test_batch_imports_papermill_without_rfc3987_syntax():
    code = "import sys, labkit.batch; labkit.batch.import_papermill(); print(sys.modules['rfc3987_syntax'])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "None"


def test_batch_refuses_bad_input_before_any_kernel(tmp_path):
    from labkit.batch import execute_batch

    with pytest.raises(ValueError, match="jobs=0"):
        execute_batch([], jobs=0)
    with pytest.raises(ValueError, match="not an existing .ipynb"):
        execute_batch([tmp_path / "missing.ipynb"], tmp_path)


@pytest.mark.slow
def test_a_batch_runs_notebooks_two_at_a_time_and_one_error_does_not_stop_the_other(tmp_path):
    import nbformat

    from labkit.batch import main

    good = notebook(tmp_path / "good.ipynb", "print(x * 7)")
    bad = notebook(tmp_path / "bad.ipynb", "raise RuntimeError('boom')")
    assert main([str(good), str(bad), "--jobs", "2", "--out", str(tmp_path / "out")]) == 1
    outputs = nbformat.read(str(tmp_path / "out" / "good.ipynb"), as_version=4).cells[-1].outputs
    assert outputs[0]["text"] == "7\n"
    assert nbformat.read(str(good), as_version=4).cells[-1].outputs == []  # the source was not touched
