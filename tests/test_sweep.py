"""labkit.sweep: grids and multi-seed runs on Dask, reused from the store, recorded in ONE store.

The slow test is the multi-machine path on one machine: a ``dask scheduler`` and two ``dask worker`` processes
started as separate processes on 127.0.0.1 (as they would be on several machines), ``labkit sweep --scheduler``
and :func:`labkit.sweep.run_seeds` against them, every record in the caller's store and none in the workers'.
Every process a test starts is stopped in ``finally`` (its whole process group), also when the test fails.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from labkit import sweep
from labkit.core.params import check_run_args
from labkit.core.registry import get_method
from labkit.core.store import RunStore

#: a cheap RPO: one seed, a few steps (seconds on one thread)
TINY_RPO = {"n_seeds": "1", "n_steps": "20", "log_every": "10", "n_pairs": "20", "n_responses": "20", "sweep": "false"}


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_STORE", str(tmp_path / "runs.sqlite"))
    monkeypatch.setenv("LABKIT_PROGRESS", "0")
    return RunStore()


def fake_record(slug: str, preset: str, seed: int, params: dict) -> dict:
    """A stored run as ``record_of`` writes it, without running anything."""
    return {
        "method": slug,
        "preset": preset,
        "seed": seed,
        "device": "cpu",
        "params": params,
        "metrics": {"x": 1.0},
        "claims": [],
        "claims_hold": True,
        "verdict": "holds",
        "duration_s": 0.1,
        "created_at": time.time(),
        "notebook": None,
        "history": [],
    }


def test_sweep_grid_crosses_values_and_seeds_and_refuses_a_bad_seed():
    assert sweep.sweep_grid(["eta=1,5"], "0,1") == [
        {"eta": "1", "seed": 0},
        {"eta": "1", "seed": 1},
        {"eta": "5", "seed": 0},
        {"eta": "5", "seed": 1},
    ]
    with pytest.raises(ValueError, match="'x' is not a seed"):
        sweep.sweep_grid(None, "0,x")


def test_run_seeds_reuses_runs_recorded_at_the_default_parameters_without_starting_dask(store, monkeypatch):
    """Every (method, seed) already in the store: rows name the stored runs, and no cluster is started."""
    monkeypatch.setattr(sweep, "dask_client", lambda *a, **k: pytest.fail("a Dask cluster was started"))
    ids = {}
    for slug in ("rpo", "fedld"):
        defaults = check_run_args(get_method(slug).load().PARAMS, "quick", {}, 0, "cpu")
        for seed in (0, 1):
            ids[slug, seed] = store.insert(fake_record(slug, "quick", seed, defaults))
    # a run at other parameters is not a default run: it is never reused
    other = check_run_args(get_method("rpo").load().PARAMS, "quick", {"eta": "3"}, 2, "cpu")
    store.insert(fake_record("rpo", "quick", 2, other))
    rows = sweep.run_seeds(["RPO", "fedld"], "quick", [0, 1], store=store)
    assert [(r["method"], r["seed"], r["status"], r["run_id"]) for r in rows] == [
        ("rpo", 0, "reused", ids["rpo", 0]),
        ("rpo", 1, "reused", ids["rpo", 1]),
        ("fedld", 0, "reused", ids["fedld", 0]),
        ("fedld", 1, "reused", ids["fedld", 1]),
    ]


def test_run_seeds_refuses_bad_input_before_any_work(store, monkeypatch):
    monkeypatch.setattr(sweep, "dask_client", lambda *a, **k: pytest.fail("a Dask cluster was started"))
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        sweep.run_seeds(["rpo", "nope"], "quick", [0], store=store)
    with pytest.raises(ValueError, match="unknown preset"):
        sweep.run_seeds(["rpo"], "huge", [0], store=store)
    with pytest.raises(ValueError, match="not allowed"):
        sweep.run_seeds(["rpo"], "quick", [-1], store=store)
    assert store.runs().empty


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a GPU")
def test_cuda_is_refused_clearly_without_a_gpu(store, monkeypatch):
    monkeypatch.setattr(sweep, "dask_client", lambda *a, **k: pytest.fail("a Dask cluster was started"))
    with pytest.raises(ValueError, match="CUDA is not available here"):
        sweep.run_seeds(["rpo"], "quick", [0], device="cuda", store=store)


def test_workers_without_a_gpu_refuse_cuda_by_name():
    class FakeClient:  # what Client.run returns: {worker address: answer}
        def run(self, fn):
            return {"tcp://10.0.0.1:1": True, "tcp://10.0.0.2:1": False}

    sweep.check_workers_device(FakeClient(), "cpu")  # nothing asked
    with pytest.raises(ValueError, match=r"no CUDA GPU: \['tcp://10.0.0.2:1'\]"):
        sweep.check_workers_device(FakeClient(), "cuda")


def test_a_failed_cell_is_recorded_as_a_failure_and_a_done_cell_as_a_run(store):
    row = sweep._keep(store, "rpo", {"eta": "3", "seed": 4}, {"seed": 4, "status": "failed", "error": "E: x"}, "quick")
    assert row["status"] == "failed" and "run_id" not in row
    failures = store.failures("rpo")
    assert len(failures) == 1 and failures.loc[0, "params"] == {"eta": "3"} and failures.loc[0, "seed"] == 4
    done = {"seed": 0, "status": "done", "_record": fake_record("rpo", "quick", 0, {"eta": 1.0})}
    row = sweep._keep(store, "rpo", {"seed": 0}, done, "quick")
    assert "_record" not in row and store.runs("rpo").loc[0, "id"] == row["run_id"]


# --- the multi-machine path, on 127.0.0.1 ---------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd: list[str], env: dict, log: Path) -> subprocess.Popen:
    """A process in its own process group (so that stopping it stops whatever it started), output to ``log``."""
    with open(log, "wb") as out:
        return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM the process group, SIGKILL it after 10 s; never raises."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            # the group may outlive its leader (a nanny's worker): make sure it is gone
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


@pytest.mark.slow
def test_a_scheduler_and_two_workers_as_separate_processes_record_every_run_in_one_store(tmp_path):
    from dask.distributed import Client

    dask = str(Path(sys.executable).with_name("dask"))
    labkit = str(Path(sys.executable).with_name("labkit"))
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    the_store = tmp_path / "one.sqlite"
    worker_store = tmp_path / "workers-never-write-here.sqlite"
    base = {**os.environ, "LABKIT_PROGRESS": "0", "LABKIT_THREADS": "1", "OMP_NUM_THREADS": "1"}
    procs = []
    try:
        procs.append(
            start(
                [dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
                base,
                tmp_path / "scheduler.log",
            )
        )
        for i in range(2):  # as on two other machines: their own environment and store path
            procs.append(
                start(
                    [dask, "worker", address, "--nthreads", "1", "--no-dashboard", "--host", "127.0.0.1"],
                    {**base, "LABKIT_STORE": str(worker_store)},
                    tmp_path / f"worker{i}.log",
                )
            )
        with Client(address, timeout="60s") as client:
            client.wait_for_workers(2, timeout=120)
            assert len(client.scheduler_info()["workers"]) == 2

        params = [x for k, v in TINY_RPO.items() for x in ("-p", f"{k}={v}")]
        cmd = [labkit, "sweep", "rpo", "--scheduler", address, "--seeds", "0,1", "-p", "eta=1,3", *params]
        out = subprocess.run(
            cmd, env={**base, "LABKIT_STORE": str(the_store)}, capture_output=True, text=True, timeout=300
        )
        assert out.returncode == 0, out.stdout + out.stderr
        assert f"4 runs on scheduler {address}" in out.stdout
        runs = RunStore(the_store).runs("rpo")
        assert sorted(zip(runs["seed"], runs["params"].map(lambda p: p["eta"]))) == [(0, 1), (0, 3), (1, 1), (1, 3)]
        assert len(RunStore(the_store).history(int(runs.loc[0, "id"]))) > 0  # the history travelled back too

        # run_seeds against the same scheduler: default quick parameters, two seeds, then all reused
        rows = sweep.run_seeds(["rpo"], "quick", [0, 1], scheduler=address, store=RunStore(the_store))
        assert [(r["seed"], r["status"]) for r in rows] == [(0, "done"), (1, "done")], rows
        again = sweep.run_seeds(["rpo"], "quick", [0, 1], scheduler=address, store=RunStore(the_store))
        assert [(r["status"], r["run_id"]) for r in again] == [("reused", r["run_id"]) for r in rows]
        assert len(RunStore(the_store).runs("rpo")) == 6

        # --notebook: the kernel on the worker records itself, into the caller's store (a disk they share here)
        cmd = [
            labkit,
            "sweep",
            "rpo",
            "--scheduler",
            address,
            "--notebook",
            "--out",
            str(tmp_path / "nb"),
            "-p",
            "eta=2",
        ]
        out = subprocess.run(
            cmd, env={**base, "LABKIT_STORE": str(the_store)}, capture_output=True, text=True, timeout=300
        )
        assert out.returncode == 0, out.stdout + out.stderr
        runs = RunStore(the_store).runs("rpo")
        from_notebook = runs[runs["notebook"].notna()]
        assert len(from_notebook) >= 1 and {p["eta"] for p in from_notebook["params"]} == {2.0}
        assert Path(from_notebook.iloc[0]["notebook"]).parent == tmp_path / "nb"
        assert not worker_store.exists()  # the workers recorded nothing of their own

        if not __import__("torch").cuda.is_available():  # GPU workers asked for where the workers have none
            with pytest.raises(ValueError, match="have no CUDA GPU"):
                sweep.run_seeds(["rpo"], "quick", [5], scheduler=address, device="cuda", store=RunStore(the_store))
    finally:
        for proc in reversed(procs):
            stop(proc)
