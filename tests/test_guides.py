"""The app's teaching content (widgets/guides.py): one guide per registered method, every guided experiment a valid
set of knobs for its method at the quick preset, every equation well formed, no raw HTML. Fast: no run is started."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from labkit.core.params import resolve_params
from labkit.core.registry import METHODS
from widgets.guides import GUIDES, Experiment, Guide, experiment_values, guide_for

SLUGS = [m.slug for m in METHODS]
CASES = [(slug, i) for slug in SLUGS for i in range(len(GUIDES[slug].experiments))] if set(SLUGS) <= set(GUIDES) else []


def _texts(guide: Guide) -> list[str]:
    """Every string of a guide that the app shows."""
    out = [guide.what_you_see, guide.equation, guide.equation_note]
    for e in guide.experiments:
        out += [e.title, e.expect, *(str(v) for v in e.overrides.values())]
    return out


def _balanced(latex: str) -> bool:
    """Braces balance (escaped \\{ and \\} are literal braces and do not count) and never close before they open."""
    depth = 0
    for ch in re.sub(r"\\[{}]", "", latex):
        depth += {"{": 1, "}": -1}.get(ch, 0)
        if depth < 0:
            return False
    return depth == 0


def test_every_registered_method_has_a_guide_and_nothing_else():
    assert set(GUIDES) == set(SLUGS)
    for slug in SLUGS:
        assert guide_for(slug) is GUIDES[slug]
    assert guide_for("no_such_method") is None


@pytest.mark.parametrize("slug", SLUGS)
def test_guide_shape(slug):
    g = GUIDES[slug]
    assert isinstance(g, Guide) and dataclasses.is_dataclass(g)
    assert 2 <= len(g.experiments) <= 3
    assert all(isinstance(e, Experiment) for e in g.experiments)
    assert all(e.overrides for e in g.experiments), "an experiment must change at least one knob"
    titles = [e.title for e in g.experiments]
    assert len(set(titles)) == len(titles)
    overrides = [tuple(sorted(e.overrides.items())) for e in g.experiments]
    assert len(set(overrides)) == len(overrides), "two experiments of one guide change the same knobs the same way"
    for text in (g.what_you_see, g.equation, g.equation_note, *titles, *(e.expect for e in g.experiments)):
        assert isinstance(text, str) and text.strip()
    # "what you see" is 2-4 sentences: count sentence ends followed by a space or the end
    sentences = len(re.findall(r"[.!?](?:\s|$)", g.what_you_see.strip()))
    assert 2 <= sentences <= 4, f"{slug}: what_you_see has {sentences} sentences"
    assert len(re.findall(r"[.!?](?:\s|$)", g.equation_note.strip())) == 1, f"{slug}: the note is one sentence"
    for e in g.experiments:
        assert 1 <= len(re.findall(r"[.!?](?:\s|$)", e.expect.strip())) <= 2, f"{slug}: {e.title!r} expects too much"


@pytest.mark.parametrize("slug", SLUGS)
def test_equation_is_plain_katex(slug):
    eq = GUIDES[slug].equation
    assert _balanced(eq), f"{slug}: unbalanced braces in {eq!r}"
    assert "$" not in eq, "no $ delimiters: the app adds them"
    assert "\\operatorname*" not in eq and "\\newcommand" not in eq and "\\def" not in eq
    # \left and \right pair up (\leftarrow and \rightarrow are arrows, not delimiters)
    assert len(re.findall(r"\\left(?![a-zA-Z])", eq)) == len(re.findall(r"\\right(?![a-zA-Z])", eq))


def _katex_errors(equations: dict[str, str]) -> dict[str, str]:
    """Render each equation with the KaTeX that Panel bundles (the app's renderer), in Node, strict; return the
    errors by key. Skips the test where Node or the bundled KaTeX is missing."""
    import json
    import shutil
    import subprocess

    node = shutil.which("node")
    panel = pytest.importorskip("panel")
    bundled = sorted((Path(panel.__file__).parent / "dist" / "bundled" / "katex").glob("*/dist/katex.min.js"))
    if node is None or not bundled:
        pytest.skip("needs node and the KaTeX bundled with Panel")
    script = (
        f"const katex = require({json.dumps(str(bundled[-1]))});"
        "const eqs = JSON.parse(require('fs').readFileSync(0, 'utf8')); const bad = {};"
        "for (const [k, eq] of Object.entries(eqs)) {"
        "  try { katex.renderToString(eq, {throwOnError: true, displayMode: true, strict: 'error'}); }"
        "  catch (e) { bad[k] = String(e.message); } }"
        "console.log(JSON.stringify(bad));"
    )
    done = subprocess.run([node, "-e", script], input=json.dumps(equations), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_equations_render_in_katex():
    """Every equation renders in KaTeX with strict errors on; a broken one is reported (the check can fail)."""
    errors = _katex_errors({**{slug: g.equation for slug, g in GUIDES.items()}, "_broken": r"\frac{a}{\lVert b"})
    assert set(errors) == {"_broken"}, errors


@pytest.mark.parametrize("slug", SLUGS)
def test_no_raw_html(slug):
    for text in _texts(GUIDES[slug]):
        assert "<" not in text, f"{slug}: raw '<' in {text!r} (write \\lt in LaTeX, 'below' in prose)"
        if text is not GUIDES[slug].equation:  # prose is markdown: two '*' could pair up as emphasis
            assert text.count("*") <= 1, f"{slug}: several '*' in {text!r} may render as emphasis"


@pytest.mark.parametrize(("slug", "index"), CASES)
def test_experiment_overrides_are_valid_knobs(slug, index):
    """Each override names a real knob and passes the method's checks (ranges, choices, cross-field constraints),
    through the same validator as the CLI, the widgets and the app; and it really changes the quick preset."""
    experiment = GUIDES[slug].experiments[index]
    module = next(m for m in METHODS if m.slug == slug).load()
    names = {p.name for p in module.PARAMS}
    assert set(experiment.overrides) <= names, f"{slug}: unknown knob(s) {set(experiment.overrides) - names}"
    values = experiment_values(slug, experiment)
    assert values == resolve_params(module.PARAMS, "quick", experiment.overrides)
    quick = resolve_params(module.PARAMS, "quick")
    assert any(values[k] != quick[k] for k in experiment.overrides), f"{slug}: {experiment.title!r} changes nothing"
    # the typed knobs accept the values as they are (no silent coercion of, e.g., "5" to 5 in the app)
    for name, value in experiment.overrides.items():
        assert type(value) is next(p.type for p in module.PARAMS if p.name == name), (slug, name, value)


def test_a_bad_override_is_refused_by_the_same_validator():
    """The validator the tests rely on refuses what a method refuses: an out-of-range value, an unknown knob, and a
    cross-field constraint (INPO: η·τ ≤ 1) that each knob alone satisfies."""
    with pytest.raises(ValueError, match="out of range"):
        experiment_values("rpo", Experiment("η below 0", {"eta": -1.0}, "refused"))
    with pytest.raises(ValueError, match="unknown parameter 'etaa'"):
        experiment_values("rpo", Experiment("typo", {"etaa": 0.0}, "refused"))
    with pytest.raises(ValueError):
        experiment_values("inpo", Experiment("η·τ > 1", {"eta": 50.0, "tau": 1.0}, "refused"))
    with pytest.raises(ValueError, match="beta_high"):  # dual_rl: the second ReCOIL arm must use another β
        experiment_values("dual_rl", Experiment("β = β_high", {"beta": 0.5}, "refused"))


def test_guides_module_imports_no_method():
    """Importing the guides is cheap: no method module (and no torch) until experiment_values is called."""
    import subprocess
    import sys

    code = (
        "import sys; import widgets.guides; "
        "bad = [m for m in sys.modules if m.startswith('labkit.methods.') or m == 'torch']; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=root)
    assert done.returncode == 0, done.stdout + done.stderr
