"""The project's own consistency: README table, CI command, pins, notebook pairs."""

import re
from pathlib import Path

import tomllib

from labkit.core.registry import METHODS, markdown_table, readme_with_table

ROOT = Path(__file__).resolve().parents[1]


def test_readme_method_table_is_generated_from_the_registry():
    text = (ROOT / "README.md").read_text()
    assert readme_with_table(text) == text, "run `labkit list --update-readme`"
    assert markdown_table() in text


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "make test   #" in readme
    ci = (ROOT / ".ci/run").read_text()
    commands = [line.strip() for line in ci.splitlines() if line.strip() and not line.strip().startswith("#")]
    # the README's command, under a whole-suite time limit, then the leftover-process guard
    assert any(line.endswith('"$LIMIT" make test || status=$?') for line in commands)
    assert "tools/leftovers.py" in ci and commands[-1] == 'exit "$status"'


def _pyproject_pins() -> dict:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = meta["dependencies"] + [r for group in meta["optional-dependencies"].values() for r in group]
    return dict(r.split("==") for r in reqs if "==" in r)


def test_conda_environment_has_the_pyproject_pins():
    # binder/environment.yml is a lean subset with torch's +cpu build: tests/test_binder.py checks its pins
    lines = (ROOT / "environment.yml").read_text().splitlines()
    conda = dict(m.groups() for m in (re.match(r"\s+- ([\w\[\]-]+)==(\S+)", line) for line in lines) if m)
    assert conda == _pyproject_pins()


def test_torch_is_pinned_everywhere_it_is_installed():
    assert _pyproject_pins()["torch"] == "2.13.0"
    assert "install -q torch==2.13.0" in (ROOT / "Makefile").read_text()


def test_every_notebook_source_has_its_executed_twin_with_the_same_cells():
    import jupytext

    sources = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py"))
    expected = {m.notebook for m in METHODS if m.available}
    assert {f"notebooks/{p.name}" for p in sources} == expected
    for src in sources + [ROOT / "notebooks" / "index.py"]:
        twin = src.with_suffix(".ipynb")
        assert twin.exists(), f"{src.name} has no executed {twin.name}: run `make notebooks NB={src.stem}`"
        a, b = jupytext.read(src), jupytext.read(twin)
        cells_a = [(c.cell_type, c.source.strip()) for c in a.cells]
        cells_b = [(c.cell_type, c.source.strip()) for c in b.cells]
        assert cells_a == cells_b, f"{src.name} and {twin.name} disagree: run `make notebooks NB={src.stem}`"
        assert b.metadata["kernelspec"]["name"] == "python3"


def test_every_notebook_follows_the_conventions():
    import jupytext

    for src in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py")):
        nb = jupytext.read(src)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert "parameters" in code[0].metadata.get("tags", []), f"{src.name}: first code cell must be tagged"
        first = code[0].source
        for name in ("preset", "seed", "device"):
            assert re.search(rf"^{name} = ", first, re.M), f"{src.name}: parameters cell lacks {name}"
        executed = jupytext.read(src.with_suffix(".ipynb"))
        checked = [c for c in executed.cells if "nbval-check-output" in c.metadata.get("tags", [])]
        assert checked, f"{src.name}: no cell is tagged nbval-check-output"
        assert all(c.outputs for c in checked), f"{src.name}: a checked cell has no committed output"
        assert "widgets.explorer(" in src.read_text(), f"{src.name}: no interactive widget"


def test_committed_notebooks_carry_no_widget_state_and_stay_small():
    import json

    for twin in sorted((ROOT / "notebooks").glob("*.ipynb")):
        assert "widgets" not in json.loads(twin.read_text())["metadata"], f"{twin.name}: run `make notebooks`"
        assert twin.stat().st_size < 2_000_000, f"{twin.name} is {twin.stat().st_size / 1e6:.1f} MB"


def test_papermill_reads_every_parameter_of_every_notebook():
    """papermill skips a parameters-cell line it cannot parse (e.g. a second '=' in a comment); then
    `labkit run -p` and `papermill --help-notebook` would not know that knob."""
    import papermill

    for twin in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        import jupytext

        first = next(c for c in jupytext.read(twin).cells if c.cell_type == "code")
        names = set(re.findall(r"^(\w+) = ", first.source, re.M))
        assert set(papermill.inspect_notebook(str(twin))) == names, twin.name
