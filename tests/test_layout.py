"""The seam between the paper and the experiment: one package per method, ``method.py`` holds the paper only.

Every available method is a package ``labkit/methods/<slug>/`` with ``method.py`` (the paper's rules and its
algorithm's loop), ``experiment.py`` (knobs, toy setup, baselines, claims, ``run``), ``figures.py`` and an
``__init__.py`` that re-exports them. ``method.py`` imports torch, numpy and labkit's substrates, models and data,
never the runner, the figures or plotly, and stays short enough to read as the paper's method section.
"""

import ast
from pathlib import Path

import pytest

import labkit

METHODS_DIR = Path(labkit.__file__).parent / "methods"
#: the longest a method.py may grow: a paper's method section, not an experiment
METHOD_PY_MAX_LINES = 450
#: what method.py must never import (by module name prefix)
FORBIDDEN_IN_METHOD = ("labkit.core.runner", "labkit.viz", "plotly", "labkit.cli", "widgets", "panel", "ipywidgets")
FORBIDDEN_RELATIVE = ("experiment", "figures")

SLUGS = [m.slug for m in labkit.available_methods()]


def imported_modules(path: Path) -> list[str]:
    """Absolute module names imported by a file, and relative ones as ``.name``."""
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            names.append(base)
            if node.module is None or node.level:
                names += ["." * node.level + (node.module + "." if node.module else "") + a.name for a in node.names]
            if node.module == "labkit":
                names += [f"labkit.{a.name}" for a in node.names]
    return names


def test_no_flat_method_modules_are_left():
    assert sorted(p.name for p in METHODS_DIR.glob("*.py") if p.name != "__init__.py") == []


@pytest.mark.parametrize("slug", SLUGS)
def test_method_is_a_package_with_the_four_files(slug):
    pkg = METHODS_DIR / slug
    for name in ("__init__.py", "method.py", "experiment.py", "figures.py"):
        assert (pkg / name).is_file(), f"{slug}: {name} is missing"
    module = labkit.load(slug)
    assert callable(module.run) and module.PARAMS and isinstance(module.MAIN_METRIC, str)


@pytest.mark.parametrize("slug", SLUGS)
def test_method_py_holds_the_paper_only(slug):
    path = METHODS_DIR / slug / "method.py"
    imports = imported_modules(path)
    bad = [m for m in imports if m.startswith(FORBIDDEN_IN_METHOD) or m.lstrip(".").startswith(FORBIDDEN_RELATIVE)]
    assert not bad, f"{slug}/method.py imports {bad}: the paper's rules must not depend on the runner or the plots"
    n_lines = len(path.read_text().splitlines())
    assert n_lines <= METHOD_PY_MAX_LINES, f"{slug}/method.py has {n_lines} lines (at most {METHOD_PY_MAX_LINES})"
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    assert "arXiv" in doc or "arxiv" in doc, f"{slug}/method.py should open with the paper (title, arXiv id)"


def test_the_import_check_sees_what_it_must():
    probe = METHODS_DIR.parent.parent / "tests" / "_probe_method.py"
    probe.write_text("import plotly.graph_objects as go\nfrom labkit import viz\nfrom .figures import make_figures\n")
    try:
        found = imported_modules(probe)
    finally:
        probe.unlink()
    assert "plotly.graph_objects" in found and "labkit.viz" in found and ".figures.make_figures" in found
