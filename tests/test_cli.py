"""The labkit command: list, run (papermill, with parameters injected), report, and bad input."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from labkit import cli
from labkit.core.store import RunStore

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_STORE", str(tmp_path / "runs.sqlite"))
    return RunStore()


def test_list_shows_all_methods(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 31 and "rpo" in out[8]


def test_list_markdown_is_the_readme_table(capsys):
    from labkit.core.registry import markdown_table

    cli.main(["list", "--markdown"])
    assert capsys.readouterr().out.strip() == markdown_table()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["run", "nope"], "unknown method 'nope'"),
        (["run", "rpo", "-p", "bogus=1"], "unknown parameter 'bogus'"),
        (["run", "rpo", "-p", "beta=-1"], "beta=-1.0 is out of range"),
        (["run", "rpo", "-p", "beta=abc"], "beta='abc' is not a valid value"),
        (["run", "rpo", "-p", "beta"], "expected KEY=VALUE"),
        (["run", "rpo", "--seed", "-3"], "seed=-3 is not allowed"),
    ],
)
def test_bad_input_is_refused_before_anything_runs(argv, message, store, tmp_path, capsys):
    code = cli.main(argv + ["--out", str(tmp_path / "runs")])
    assert code == 2
    assert message in capsys.readouterr().err
    assert store.runs().empty and not (tmp_path / "runs").exists()


def test_a_listed_method_without_its_package_is_refused(store, tmp_path, monkeypatch, capsys):
    """All thirty methods are written now: hide one package to check the "listed but not available" path."""
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "labkit.methods.tlob" else real(name, *a)
    )
    assert cli.main(["run", "tlob", "--out", str(tmp_path / "runs")]) == 2
    assert "not available yet" in capsys.readouterr().err
    assert store.runs().empty and not (tmp_path / "runs").exists()


def test_unknown_preset_is_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["run", "rpo", "--preset", "huge"])
    assert exc.value.code == 2 and "invalid choice: 'huge'" in capsys.readouterr().err


@pytest.mark.slow
def test_run_executes_the_notebook_with_injected_parameters_and_records_it(store, tmp_path, capsys):
    out_dir = tmp_path / "runs"
    assert cli.main(["run", "rpo", "-p", "n_seeds=2", "-p", "eta=2.5", "--seed", "4", "--out", str(out_dir)]) == 0
    executed = list(out_dir.glob("08_rpo-quick-s4-*.ipynb"))
    assert len(executed) == 1
    runs = store.runs("rpo")
    assert len(runs) == 1
    row = runs.iloc[0]
    assert row["params"]["n_seeds"] == 2 and row["params"]["eta"] == 2.5 and row["seed"] == 4
    assert row["notebook"] == str(executed[0])
    nb = json.loads(executed[0].read_text())
    injected = [c for c in nb["cells"] if "injected-parameters" in c["metadata"].get("tags", [])]
    assert "n_seeds = 2" in "".join(injected[0]["source"])
    assert set(store.history(int(row["id"]))["seed"]) == {4, 5}  # the injected n_seeds really took effect
    # the report's scoreboard shows this run's headline verdict; its chapter is this executed notebook
    assert cli.main(["report", "--out", str(tmp_path / "report")]) == 0
    site = tmp_path / "report" / "_build" / "html"
    row = (site / "index.html").read_text().split("data-slug='rpo'")[1].split("</tr>")[0]
    assert "lk-badge" in row and "chapters/alignment/08_rpo.html" in row
    assert executed[0].name in (site / "chapters" / "alignment" / "08_rpo.html").read_text()


def test_labkit_console_script_is_installed():
    exe = Path(sys.executable).with_name("labkit")
    out = subprocess.run([str(exe), "list", "--available"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith(" #")


def test_sweep_grid_is_the_product_of_values_and_seeds():
    jobs = cli.sweep_grid(["lr=0.1,0.01", "arm=a"], "0,1")
    assert jobs == [
        {"lr": "0.1", "arm": "a", "seed": 0},
        {"lr": "0.1", "arm": "a", "seed": 1},
        {"lr": "0.01", "arm": "a", "seed": 0},
        {"lr": "0.01", "arm": "a", "seed": 1},
    ]
    assert cli.sweep_grid(None, "3") == [{"seed": 3}]


def test_sweep_validates_every_combination_first(store, capsys):
    assert cli.main(["sweep", "rpo", "-p", "beta=0.1,-2"]) == 2
    assert "beta=-2.0 is out of range" in capsys.readouterr().err and store.runs().empty


@pytest.mark.slow
def test_sweep_runs_on_a_local_dask_cluster_and_records_each_run(store, tmp_path, capsys):
    csv = tmp_path / "sweep.csv"
    assert (
        cli.main(
            ["sweep", "rpo", "-p", "eta=1,5", "-p", "n_seeds=1", "--seeds", "0", "--workers", "1", "--csv", str(csv)]
        )
        == 0
    )
    import pandas as pd

    table = pd.read_csv(csv)
    assert sorted(table["eta"]) == [1, 5] and len(store.runs("rpo")) == 2


@pytest.mark.slow
def test_a_bad_value_injected_straight_into_a_notebook_stops_it_with_a_clear_error(store, tmp_path, monkeypatch):
    """Bypassing `labkit run` (plain papermill), the notebook's own run() call refuses the value, and nothing is
    recorded although recording is on."""
    import papermill

    monkeypatch.setenv("LABKIT_RECORD", "1")

    with pytest.raises(papermill.PapermillExecutionError) as err:
        papermill.execute_notebook(
            str(ROOT / "notebooks" / "08_rpo.ipynb"),
            str(tmp_path / "out.ipynb"),
            parameters={"beta": -1.0},
            kernel_name="python3",
            cwd=str(ROOT / "notebooks"),
            progress_bar=False,
        )
    assert err.value.ename == "ValueError"
    assert "beta=-1.0 is out of range: expected a number from 0.001 to 10" in err.value.evalue
    assert store.runs().empty
