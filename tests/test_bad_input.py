"""Bad input is refused before any work starts, results are never lost, and nothing hangs.

Each case goes through the entry point where it was found: the Python API (``run()``), the CLI (``labkit run``,
``labkit sweep``, ``labkit report``), plain papermill on a notebook, and the store. The table at the top is the
count the issue asks for: every bad input is refused *before work* (the method's body never starts, no kernel
or Dask worker is started, nothing is recorded).
"""

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from labkit import cli
from labkit.core import ClaimCheck, Outcome, knob, method_run, params_of
from labkit.core.params import check_seed, papermill_injected_names
from labkit.core.store import RunStore, StoreError

ROOT = Path(__file__).resolve().parents[1]
STARTED = []  # the toy body appends here: a refusal "before work" leaves it empty


@dataclass(frozen=True)
class Knobs:
    eta: float = knob(1.0, low=0.0, high=100.0, help="step")
    tau: float = knob(0.1, low=0.0, high=1.0, help="temperature")
    steps: int = knob(3, low=1, high=100, help="steps")

    def __post_init__(self):  # a cross-field constraint, as INPO's eta·tau ≤ 1
        if self.eta * self.tau > 1:
            raise ValueError(f"eta·tau = {self.eta * self.tau:g} > 1 is not allowed: lower eta or tau")


PARAMS = params_of(Knobs)


@method_run(Knobs)
def toy_run(ctx):
    STARTED.append(ctx.p)
    if ctx.p.steps == 13:  # a failure at run time (after validation), for the sweep
        raise RuntimeError("unlucky thirteen")
    return Outcome(metrics={"x": ctx.p.eta}, claims=[ClaimCheck("x > 0", "x", [ctx.p.eta], 0.0, headline=True)])


@pytest.fixture(autouse=True)
def fresh(tmp_path, monkeypatch):
    STARTED.clear()
    monkeypatch.setenv("LABKIT_STORE", str(tmp_path / "runs.sqlite"))
    monkeypatch.setenv("LABKIT_PROGRESS", "0")


# --- the Python API: every kind of bad input, refused before the body starts --------------------------------

API_CASES = [
    ({"preset": "huge"}, "unknown preset"),
    ({"etaa": 5}, "did you mean 'eta'"),
    ({"eta": -1}, "out of range"),
    ({"eta": "abc"}, "not a valid value"),
    ({"eta": "１"}, "not a valid value"),  # a full-width digit: float() would take it
    ({"eta": "1_0"}, "not a valid value"),  # float() reads 10
    ({"steps": 2.5}, "wrong type"),
    ({"eta": float("nan")}, "nan is not allowed"),
    ({"eta": 50.0, "tau": 0.1}, "eta·tau = 5 > 1"),  # each value in range, the combination is not
    ({"seed": -1}, "seed=-1 is not allowed"),
    ({"seed": 99999999999999999999999}, "is not allowed"),
    ({"seed": True}, "is not allowed"),
    ({"device": "tpu"}, "unknown device 'tpu'"),
    ({"device": "cuda"}, "CUDA is not available"),
    ({"device": "meta"}, "unknown device"),
    ({"callback": "notcallable"}, "not callable"),
]


@pytest.mark.parametrize("kwargs, message", API_CASES, ids=[str(c[0])[:40] for c in API_CASES])
def test_api_refuses_before_work(kwargs, message):
    if kwargs.get("device") == "cuda":
        pytest.importorskip("torch")
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA")
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        toy_run(progress=False, record=True, **kwargs)
    assert STARTED == [] and RunStore().runs().empty


def test_ascii_numbers_are_still_accepted():
    res = toy_run(progress=False, eta="2.5", steps="4", tau="1e-1")
    assert (res.params["eta"], res.params["steps"], res.params["tau"]) == (2.5, 4, 0.1)
    assert check_seed("7") == 7


# --- the CLI: refused before a kernel starts, and before "running ..." is printed ----------------------------

CLI_CASES = [
    (["run", "rpo", "--device", "tpu"], "unknown device 'tpu'"),
    (["run", "rpo", "--seed", "99999999999999999999999"], "is not allowed"),
    (["run", "rpo", "-p", "eta=１"], "not a valid value"),
    (["run", "rpo", "-p", "eta=1_0"], "not a valid value"),
    (["run", "inpo", "-p", "eta=100"], "eta·tau = 5 > 1"),  # each in range, the combination is not (INPO's knobs)
    (["run", "daa_overoptimization", "-p", "betas=abc"], "betas='abc' is not allowed"),  # free text, checked early
    (["run", "ear", "-p", "budget=50"], "budget=50 is too small"),  # in range, but no adaptor could ever grow
    (["sweep", "rpo", "--seeds", "0,x"], "--seeds: 'x' is not a seed"),
    (["sweep", "rpo", "-p", "eta=1,-5"], "eta=-5.0 is out of range"),
    (["sweep", "rpo", "--device", "tpu"], "unknown device"),
]


@pytest.mark.parametrize("argv, message", CLI_CASES, ids=[" ".join(c[0])[:40] for c in CLI_CASES])
def test_cli_refuses_before_work(argv, message, tmp_path, capsys):
    assert cli.main(argv + (["--out", str(tmp_path / "runs")])) == 2
    out = capsys.readouterr()
    assert message in out.err and "running" not in out.out and "sweep rpo:" not in out.out
    assert not (tmp_path / "runs").exists() and RunStore().runs().empty


@pytest.mark.parametrize("workers", ["0", "-1", "x"])
def test_sweep_refuses_zero_workers_instead_of_hanging(workers, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["sweep", "rpo", "--workers", workers])
    assert exc.value.code == 2 and "expected a whole number >= 1" in capsys.readouterr().err


# --- the store: checked before the run, and a result is never lost -------------------------------------------


@pytest.mark.parametrize("damage", ["garbage", "directory", "truncated"])
def test_a_damaged_store_is_refused_before_the_run_with_its_path(damage, tmp_path, monkeypatch):
    path = tmp_path / "bad.sqlite"
    if damage == "garbage":
        path.write_bytes(os.urandom(4096))
    elif damage == "directory":
        path.mkdir()
    else:
        RunStore(path)
        toy_run(progress=False, record=False)
        data = path.read_bytes()
        path.write_bytes(b"SQLite format 3\0" + data[16:100])
        STARTED.clear()
    monkeypatch.setenv("LABKIT_STORE", str(path))
    with pytest.raises(StoreError, match=str(path)):
        toy_run(progress=False, record=True)
    assert STARTED == []
    assert cli.main(["report", "--out", str(tmp_path / "report")]) == 2  # a message, not a traceback


def test_a_failed_write_keeps_the_result_in_a_file_that_can_be_imported(tmp_path, monkeypatch, capsys):
    store_path = tmp_path / "runs.sqlite"

    def fail(self, record):
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(RunStore, "insert", fail)
    with pytest.raises(StoreError, match="saved to") as err:
        toy_run(progress=False, record=True, eta=3.0)
    saved = Path(str(err.value).split("saved to ")[1].split(":")[0])
    assert saved.parent == tmp_path and json.loads(saved.read_text())["params"]["eta"] == 3.0
    monkeypatch.undo()
    monkeypatch.setenv("LABKIT_STORE", str(store_path))
    assert cli.main(["import", str(saved)]) == 0
    runs = RunStore().runs()
    assert len(runs) == 1 and runs.loc[0, "params"]["eta"] == 3.0 and runs.loc[0, "verdict"] == "holds"


# --- a sweep with a failing cell goes on, records the failure, and a second start skips what is done ---------


def test_sweep_records_failures_goes_on_and_resumes(monkeypatch, capsys):
    import types

    import labkit
    from labkit.core import registry

    def body(ctx):
        return toy_run.__wrapped__(ctx)

    body.__module__ = "labkit.methods.rpo.experiment"  # records under "rpo", as the sweep's method
    toy = types.SimpleNamespace(PARAMS=PARAMS, run=method_run(Knobs)(body), MAIN_METRIC="x")
    info = registry.get_method("rpo")
    monkeypatch.setattr(type(info), "load", lambda self: toy)
    monkeypatch.setattr(labkit, "load", lambda slug: toy)
    argv = ["sweep", "rpo", "-p", "steps=3,13", "--seeds", "0,1", "--workers", "1", "--in-process"]
    assert cli.main(argv) == 1  # two of four failed: the exit status says so
    out = capsys.readouterr()
    assert "2 of 4 runs failed" in out.err and "unlucky thirteen" in out.out
    assert len(RunStore().runs()) == 2 and len(RunStore().failures()) == 2
    STARTED.clear()
    assert cli.main(argv) == 1  # started again: the two recorded runs are skipped, the failed ones retried
    out = capsys.readouterr().out
    assert "recorded earlier" in out and len(STARTED) == 2 and len(RunStore().runs()) == 2


# --- plain papermill: names the method does not know are refused in the notebook's first cell ---------------


def test_papermill_injected_names_are_read_from_the_input_history():
    ns = {"In": ["", "preset = 'quick'", "# Parameters\netaa = 5\nseed = 1\n", "x = 1"]}
    assert papermill_injected_names(ns) == ["etaa", "seed"]
    assert papermill_injected_names({}) == []


TINY_NOTEBOOK = {
    "cells": [
        {
            "cell_type": "code",
            "metadata": {"tags": ["parameters"]},
            "source": 'preset = "quick"\nseed = 0\ndevice = "auto"\neta = None',
            "outputs": [],
            "execution_count": None,
        },
        {
            "cell_type": "code",
            "metadata": {},
            "source": "import sys\nsys.path.insert(0, 'TESTS')\nfrom test_bad_input "
            "import PARAMS\nfrom labkit.core import overrides_from\noverrides = overrides_from(PARAMS, globals())\n"
            "print('started', overrides)",
            "outputs": [],
            "execution_count": None,
        },
    ],
    "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
    "nbformat": 4,
    "nbformat_minor": 5,
}


def write_tiny_notebook(path: Path) -> Path:
    nb = json.loads(json.dumps(TINY_NOTEBOOK).replace("TESTS", str(ROOT / "tests")))
    path.write_text(json.dumps(nb))
    return path


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_plain_papermill_refuses_unknown_and_bad_names_in_the_first_cell(tmp_path):
    import papermill

    src = write_tiny_notebook(tmp_path / "tiny.ipynb")
    for params, message in [
        ({"etaa": 5}, "unknown parameter(s) ['etaa']"),
        ({"seed": -1}, "seed=-1 is not allowed"),
        ({"device": "tpu"}, "unknown device 'tpu'"),
        ({"eta": 50, "tau": 0.5}, "eta·tau = 25 > 1"),
    ]:
        with pytest.raises(papermill.PapermillExecutionError) as err:
            papermill.execute_notebook(
                str(src), str(tmp_path / "out.ipynb"), parameters=params, progress_bar=False, kernel_name="python3"
            )
        assert message in err.value.evalue and err.value.exec_count == 3  # parameters, injected, this cell
    ok = papermill.execute_notebook(
        str(src), str(tmp_path / "ok.ipynb"), parameters={"eta": 2.0}, progress_bar=False, kernel_name="python3"
    )
    assert "started {'eta': 2.0}" in ok.cells[-1].outputs[0]["text"]


# --- several notebooks started at the same moment do not race for kernel ports -----------------------------

PARALLEL = """
import sys, papermill
from labkit.cli import ipc_kernel_manager
papermill.execute_notebook(sys.argv[1], sys.argv[2], parameters={"eta": float(sys.argv[3])}, progress_bar=False,
                           kernel_name="python3", kernel_manager_class=ipc_kernel_manager())
"""


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_notebooks_started_at_the_same_moment_all_finish(tmp_path):
    src = write_tiny_notebook(tmp_path / "tiny.ipynb")
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", PARALLEL, str(src), str(tmp_path / f"out{i}.ipynb"), str(i + 1)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(4)
    ]
    try:
        outs = [p.communicate(timeout=200)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in procs] == [0, 0, 0, 0], outs
    for i in range(4):
        nb = json.loads((tmp_path / f"out{i}.ipynb").read_text())
        assert f"started {{'eta': {float(i + 1)}}}" in "".join(nb["cells"][-1]["outputs"][0]["text"])


# --- the dashboard: bound to this machine, and stopped with its server -------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def listening_addresses(port: int) -> set[str]:
    """Local addresses with a socket listening on ``port`` (from /proc/net/tcp and tcp6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            addr, hexport = local.split(":")
            if state == "0A" and int(hexport, 16) == port:
                found.add(addr)
    return found


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_dashboard_listens_on_localhost_and_sigterm_stops_its_server(tmp_path):
    port = free_port()
    env = {**os.environ, "LABKIT_STORE": str(tmp_path / "runs.sqlite")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "labkit.cli", "dashboard", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not listening_addresses(port) and time.monotonic() < deadline:
            time.sleep(0.3)
        addresses = listening_addresses(port)
        assert addresses == {"0100007F"}, addresses  # 127.0.0.1 only: not 0.0.0.0, not [::]
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
        deadline = time.monotonic() + 15
        while listening_addresses(port) and time.monotonic() < deadline:
            time.sleep(0.3)
        assert listening_addresses(port) == set()  # the panel child went with it: the port is free
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def test_ear_budget_floor_matches_its_encoders():
    import torch

    from labkit.methods.ear import experiment as ear

    for kind, width in ear.ENCODER_FEATURES.items():
        side = 8 if kind == "mlp" else 28
        assert ear.build_encoder(kind, side)(torch.zeros(2, side * side))[-1].shape[-1] == width
