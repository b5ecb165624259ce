"""Reading a notebook is not changing it: every committed notebook opened in JupyterLab, in a real browser.

Issue 15, defect 4: opening a notebook in JupyterLab (with Jupytext's server extension, which pairs each
``.ipynb`` with its ``.py``) marked it modified with no cell run, and autosave rewrote both files (the Jupytext
header, the kernel's display name, papermill's cell metadata...). ``make notebooks`` now saves every executed
notebook through Jupytext's contents manager as JupyterLab does (``labkit.cli.strip_widget_state``), so the
committed pair is already in the form JupyterLab writes. Defect 5: the explorer cell showed the raw repr
``Explorer(children=(HTML(value=...`` wherever the widget cannot run; it now has a readable fallback.

The browser test starts one ``jupyter lab`` (127.0.0.1, a free port, a token, autosave every second through an
``overrides.json`` in its own settings folder) on a temporary copy of the notebooks and ``jupytext.toml``, and
one headless Debian Chromium. It opens every notebook (the thirty methods' and the index) through JupyterLab's
own ``docmanager:open`` command, waits until its kernel is idle and past several autosave intervals, records
whether the document is marked modified and what the explorer cell shows, then shuts its kernel down and closes
it. Afterwards every ``.ipynb`` and ``.py`` of the copy must be byte-identical to the repository's. A control
pair in the old form (the kernel's display name "Python 3" where the kernel says "Python 3 (ipykernel)") must
be rewritten: the proof that autosave was on and that the check can fail. The server is stopped, its kernels
shut down and the copy deleted, also when a check fails.

The fast tests (no browser) check the explorer's mimebundle and that ``strip_widget_state`` leaves every
committed pair as it is (the same fixed point, without JupyterLab).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from browser_support import CHROMIUM, CHROMIUM_ARGS, require_chromium, with_interactive_figures

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(p.name for p in (REPO / "notebooks").glob("*.ipynb"))
CONTROL = "zz_control_old_form.ipynb"  # a copy of 08_rpo in the form before the fix: JupyterLab must rewrite it
# 08_rpo with its figures as plotly's interactive output, as they were committed before: drawing one makes
# jupyterlab-plotly add its screenshot to the output, so JupyterLab must rewrite it
FIGURE_CONTROL = "zz_control_plotly_figures.ipynb"
CONTROLS = (CONTROL, FIGURE_CONTROL)
AUTOSAVE_S = 1  # JupyterLab's autosave interval for the test (its default is 120 s)
SETTLE_S = 3.5  # wait after the kernel is idle and the outputs are drawn: several autosave intervals
LIMIT_S = 90  # the longest any one step of opening a notebook may take (a kernel starting on a loaded machine)
TOKEN = "labkit-test-token"


@dataclass(frozen=True)
class Opened:
    """What JupyterLab showed for one notebook: marked modified or not, and the explorer cell's output text."""

    name: str
    dirty: bool | None  # None: it did not open (see error)
    explorer_text: str | None  # None: the notebook has no explorer cell
    figures: int  # figures drawn in its outputs (committed images, or plotly figures)
    seconds: float
    error: str | None = None


# --- fast checks, no browser ----------------------------------------------------------------------------------


def test_explorer_mimebundle_has_a_readable_fallback():
    pytest.importorskip("ipywidgets")
    import widgets

    explorer = widgets.explorer("rpo", metric="gold_reward")
    bundle = explorer._repr_mimebundle_()
    # a running kernel still gets the live widget ...
    assert "application/vnd.jupyter.widget-view+json" in bundle
    # ... everything else gets words: what it is, its knobs, how to use it, and never the widget's repr
    for mime in ("text/plain", "text/html"):
        text = bundle[mime]
        assert "Explorer for RPO (rpo)" in text and "Explorer(children" not in text
        assert all(name in text for name in explorer.controls)
        assert "gold_reward" in text and "run this notebook in Jupyter" in text
    assert bundle["text/html"].startswith("<p") and "<script" not in bundle["text/html"]


def test_explorer_fallback_html_is_escaped():
    pytest.importorskip("ipywidgets")
    import widgets

    explorer = widgets.explorer("rpo", metric="gold_reward")
    explorer.metric = '<img src=x onerror="alert(1)">'
    html_text = explorer._repr_mimebundle_()["text/html"]
    assert "<img" not in html_text and "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in html_text


def _explorer_outputs(path: Path) -> list[dict]:
    """The saved outputs of a notebook's explorer cell (the last cell calling ``widgets.explorer(``)."""
    cells = [c for c in json.loads(path.read_text())["cells"] if "widgets.explorer(" in "".join(c["source"])]
    return cells[-1]["outputs"] if cells else []


def test_every_committed_explorer_cell_saved_its_fallback_text():
    """What GitHub, nbviewer and the report show: every method notebook's explorer output carries the fallback
    as text/plain and text/html (a notebook executed before the fallback existed shows ``Explorer(children=``)."""
    stale = {}
    for name in NOTEBOOKS:
        if name == "index.ipynb":
            continue
        data = {k: "".join(v) for o in _explorer_outputs(REPO / "notebooks" / name) for k, v in o["data"].items()}
        if not (
            data.get("text/plain", "").startswith("Explorer for ") and "Explorer for " in data.get("text/html", "")
        ):
            stale[name] = data.get("text/plain", "(no output)")[:60]
    assert not stale, f"re-run `make notebooks NB=...` for: {stale}"


def test_nbconvert_renders_the_fallback_where_the_widget_cannot_run():
    """nbconvert (the HTML report, nbviewer) drops a widget view whose state is not saved and shows the next
    richest type: the escaped text/html fallback, not the repr."""
    nbformat = pytest.importorskip("nbformat")
    nbconvert = pytest.importorskip("nbconvert")
    nb = nbformat.read(str(REPO / "notebooks" / "08_rpo.ipynb"), as_version=4)
    nb.cells = [c for c in nb.cells if "widgets.explorer(" in c.source]
    body, _ = nbconvert.HTMLExporter().from_notebook_node(nb)
    assert '<p class="labkit-explorer-fallback"><i>Explorer for RPO (rpo)' in body
    assert "Explorer(children" not in body


def _copy_pairs(dest: Path) -> Path:
    """The notebooks folder and jupytext.toml copied into ``dest`` (times kept); returns the copy's notebooks."""
    shutil.copy2(REPO / "jupytext.toml", dest / "jupytext.toml")
    shutil.copytree(REPO / "notebooks", dest / "notebooks", ignore=shutil.ignore_patterns("__pycache__", ".*"))
    return dest / "notebooks"


@pytest.mark.slow  # every pair saved twice through Jupytext: about a second a notebook
def test_the_committed_pairs_are_already_in_the_form_jupyterlab_saves(tmp_path):
    """``strip_widget_state`` (the last step of ``make notebooks``) saves a pair through Jupytext's contents
    manager as JupyterLab does; on the committed pairs it must change no byte."""
    from labkit.cli import strip_widget_state

    copy = _copy_pairs(tmp_path)
    stale = {}
    for name in NOTEBOOKS:
        try:
            strip_widget_state(copy / name)
        except ValueError as err:  # its .py was edited after the .ipynb was made
            stale[name] = str(err)
    assert not stale, f"a .py differs from its executed .ipynb: {stale}"
    changed = [
        f.name
        for f in sorted(copy.iterdir())
        if f.suffix in (".py", ".ipynb") and f.read_bytes() != (REPO / "notebooks" / f.name).read_bytes()
    ]
    assert not changed, f"not in the form JupyterLab saves (run `make notebooks NB=...`): {changed}"


def test_strip_widget_state_pairs_only_notebooks_that_have_a_twin(tmp_path):
    """A notebook without a ``.py`` twin (``labkit run``'s copies in the runs folder) gets no ``.py``; a twin
    written in an older form is brought to the form JupyterLab saves; a twin with newer cells is left alone."""
    from labkit.cli import strip_widget_state

    copy = _copy_pairs(tmp_path)
    runs = tmp_path / "runs"
    runs.mkdir()
    alone = runs / "08_rpo-quick.ipynb"
    shutil.copy2(copy / "08_rpo.ipynb", alone)
    strip_widget_state(alone)
    assert sorted(p.name for p in runs.iterdir()) == [alone.name]

    py = copy / "08_rpo.py"
    py.write_text(py.read_text().replace("display_name: Python 3 (ipykernel)", "display_name: Python 3"))
    nb = json.loads((copy / "08_rpo.ipynb").read_text())
    nb["metadata"]["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    (copy / "08_rpo.ipynb").write_text(json.dumps(nb))
    strip_widget_state(copy / "08_rpo.ipynb")
    for suffix in (".py", ".ipynb"):
        assert (copy / f"08_rpo{suffix}").read_bytes() == (REPO / "notebooks" / f"08_rpo{suffix}").read_bytes()

    # a .py edited after its .ipynb was made is never overwritten by the older cells
    edited = py.read_text().replace('widgets.explorer("rpo"', 'widgets.explorer("rpo", device="cpu"')
    py.write_text(edited)
    with pytest.raises(ValueError, match="differ"):
        strip_widget_state(copy / "08_rpo.ipynb")
    assert py.read_text() == edited


def test_every_committed_figure_is_an_image():
    """No committed output is a plotly figure (JupyterLab's plotly renderer would rewrite it when drawn); every
    method notebook has its figures as PNG images, which GitHub and nbviewer show too."""
    interactive, without = [], []
    for name in NOTEBOOKS:
        cells = json.loads((REPO / "notebooks" / name).read_text())["cells"]
        outputs = [o for c in cells for o in c.get("outputs", [])]
        if any("application/vnd.plotly.v1+json" in o.get("data", {}) for o in outputs):
            interactive.append(name)
        if name != "index.ipynb" and not any("image/png" in o.get("data", {}) for o in outputs):
            without.append(name)
    assert not interactive, f"interactive figures committed (run `make notebooks NB=...`): {interactive}"
    assert not without, f"no figure image in {without}"


@pytest.mark.browser  # kaleido draws the image in Debian's Chromium
def test_static_figures_draws_each_figure_as_a_palette_png_and_drops_the_cdn_loader():
    import base64
    import io

    import nbformat
    import plotly.graph_objects as go
    import plotly.io as pio
    from PIL import Image

    from labkit.viz import STATIC_WIDTH, static_figures

    require_chromium()
    figure = go.Figure(go.Scatter(x=[0, 1, 2], y=[1, 3, 2], name="arm"), layout={"title": "Loss", "height": 300})
    bundle = json.loads(json.dumps(pio.renderers["plotly_mimetype"].to_mimebundle(figure.to_dict())))
    loader = {"text/html": ['<script type="module">import "https://cdn.plot.ly/plotly-4.1.1.min"</script>']}
    stream = nbformat.v4.new_output("stream", name="stdout", text="trained\n")
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(
            "fig",
            outputs=[
                nbformat.v4.new_output("display_data", data=loader),
                nbformat.v4.new_output("display_data", data=bundle),
                stream,
            ],
        ),
        nbformat.v4.new_markdown_cell("text"),
    ]
    assert static_figures(nb) == 1
    outputs = nb.cells[0].outputs
    assert [o.output_type for o in outputs] == ["display_data", "stream"]  # the loader is gone, the text kept
    assert set(outputs[0].data) == {"image/png", "text/plain"} and "Loss" in outputs[0].data["text/plain"]
    image = Image.open(io.BytesIO(base64.b64decode(outputs[0].data["image/png"])))
    assert image.format == "PNG" and image.mode == "P" and image.size == (STATIC_WIDTH, 300)
    assert len(set(image.getdata())) > 3  # drawn: more than a blank page
    nbformat.validate(nb)


def test_static_figures_without_a_figure_changes_nothing_and_starts_no_browser(monkeypatch):
    import nbformat

    from labkit.viz import static_figures

    monkeypatch.setitem(sys.modules, "kaleido", None)  # importing it would raise
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("1", outputs=[nbformat.v4.new_output("stream", name="stdout", text="1")])]
    before = json.dumps(nb)
    assert static_figures(nb) == 0 and json.dumps(nb) == before


# --- the real thing: JupyterLab in Chromium ------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _api(base: str, path: str, method: str = "GET") -> object:
    request = urllib.request.Request(f"{base}{path}", method=method, headers={"Authorization": f"token {TOKEN}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        body = response.read()
    return json.loads(body) if body else None


def _make_controls(notebooks: Path) -> None:
    """Two copies of 08_rpo that JupyterLab must rewrite: :data:`CONTROL` in the form ``make notebooks`` wrote
    before the fix (the .py and .ipynb say "Python 3" where the kernel says "Python 3 (ipykernel)", so JupyterLab
    updates the kernelspec on connecting and autosaves), and :data:`FIGURE_CONTROL` with interactive figures."""
    stem = CONTROL.removesuffix(".ipynb")
    py = (notebooks / "08_rpo.py").read_text()
    (notebooks / f"{stem}.py").write_text(py.replace("display_name: Python 3 (ipykernel)", "display_name: Python 3"))
    nb = json.loads((notebooks / "08_rpo.ipynb").read_text())
    nb["metadata"]["kernelspec"]["display_name"] = "Python 3"
    (notebooks / CONTROL).write_text(json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n")
    (notebooks / FIGURE_CONTROL.replace(".ipynb", ".py")).write_text(py)
    nb = with_interactive_figures(json.loads((notebooks / "08_rpo.ipynb").read_text()))
    (notebooks / FIGURE_CONTROL).write_text(json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n")


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """``jupyter lab`` on a temporary copy of the notebooks; yields (base URL, copy root, original bytes of every
    file). Stopped when the module's tests end (its kernels with it), also when one fails; the copy deleted."""
    root = tmp_path_factory.mktemp("lab_copy")
    notebooks = _copy_pairs(root)
    _make_controls(notebooks)
    before = {p.name: p.read_bytes() for p in notebooks.iterdir() if p.suffix in (".py", ".ipynb")}
    settings = root.parent / f"{root.name}_settings"
    (settings / "app").mkdir(parents=True)
    (settings / "app" / "overrides.json").write_text(
        json.dumps(
            {
                "@jupyterlab/docmanager-extension:plugin": {"autosave": True, "autosaveInterval": AUTOSAVE_S},
                # every cell drawn, as after a reader scrolled through the whole notebook (JupyterLab's default
                # draws only the cells in view): each figure is drawn, and hovered below
                "@jupyterlab/notebook-extension:tracker": {"windowingMode": "none"},
            }
        )
    )
    port = _free_port()
    cmd = [
        sys.executable,
        "-m",
        "jupyter",
        "lab",
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        f"--ServerApp.root_dir={root}",
        f"--IdentityProvider.token={TOKEN}",
        f"--LabApp.app_settings_dir={settings / 'app'}",
        f"--LabApp.user_settings_dir={settings / 'user'}",
        f"--LabApp.workspaces_dir={settings / 'workspaces'}",
        "--LabApp.expose_app_in_browser=True",  # window.jupyterapp: open, inspect and close documents directly
        "--LabApp.extension_manager=readonly",  # no network: no extension index, no update check, no news
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.news_url=None",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(settings / "config"),
        "JUPYTER_RUNTIME_DIR": str(settings / "runtime"),
        "JUPYTER_DATA_DIR": str(settings / "data"),
        "LABKIT_PROGRESS": "0",
    }
    log = open(settings / "lab.log", "w")
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"jupyter lab exited with {proc.returncode}:\n{(settings / 'lab.log').read_text()}")
            try:
                _api(base, "/api/status")
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError("jupyter lab did not answer within 120 s") from None
                time.sleep(0.5)
        yield base, notebooks, before
    finally:
        try:
            for session in _api(base, "/api/sessions"):
                _api(base, f"/api/sessions/{session['id']}", method="DELETE")
        except OSError:
            pass
        proc.terminate()  # the server shuts its remaining kernels down on SIGTERM
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(settings, ignore_errors=True)


# Opens one notebook with JupyterLab's own command, waits for its kernel to be idle and the explorer cell's output
# to be drawn (the widget renderer first says "Loading widget...", then falls back to the saved text), waits past
# several autosave intervals, reads the document's dirty flag, then shuts the kernel down and closes the document.
# Every wait has a limit, so a notebook that cannot load (Jupytext refuses a pair whose .ipynb is newer than its
# .py and different) is reported with the dialog's words instead of hanging the test.
OPEN_JS = """
async ([path, settleMs, limitMs]) => {
  const app = window.jupyterapp;
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
  const limited = (promise, what) =>
    Promise.race([promise, sleep(limitMs).then(() => { throw new Error('timed out waiting for ' + what); })]);
  const until = async (ok, what) => {
    const end = Date.now() + limitMs;
    while (!ok()) { if (Date.now() > end) throw new Error('timed out waiting for ' + what); await sleep(100); }
  };
  let panel = null;
  try {
    panel = await limited(app.commands.execute('docmanager:open', { path, factory: 'Notebook' }), 'the document');
    await limited(panel.context.ready, 'the notebook to load');
    await limited(panel.sessionContext.ready, 'a session');
    await until(() => panel.sessionContext.session?.kernel?.status === 'idle', 'an idle kernel');
    await limited(panel.sessionContext.session.kernel.info, 'the kernel info');
    const cells = panel.content.widgets;
    const isExplorer = (c) => c.model.type === 'code' && c.model.sharedModel.getSource().includes('widgets.explorer(');
    const last = cells.findLastIndex(isExplorer);
    let explorer = null;
    if (last >= 0) {
      panel.content.activeCellIndex = last;
      await panel.content.scrollToItem(last);
      const output = () => cells[last].outputArea.node.querySelector('.jp-OutputArea-output');
      const text = () => (output()?.innerText ?? '').trim();
      try {
        await until(() => {
          if (!output()) cells[last].node.scrollIntoView();  // not drawn yet: bring it into view again
          return text() !== '' && !text().startsWith('Loading widget');
        }, 'the explorer output');
      } catch (err) {  // say what was there, to tell "never drawn" from "widget still loading"
        const seen = output() ? ' (it shows: ' + JSON.stringify(text().slice(0, 80)) + ')' : ' (no output drawn)';
        throw new Error(err.message + seen);
      }
      explorer = text();
    }
    // every figure: drawn (all cells are, windowing off) and hovered, as a reader pointing at it
    const drawn = '.jp-OutputArea-output img, .jp-OutputArea-output .plot-container';
    const figures = [...panel.content.node.querySelectorAll(drawn)];
    for (const figure of figures) {
      for (const kind of ['mouseenter', 'mouseover', 'mousemove']) {
        figure.dispatchEvent(new MouseEvent(kind, { bubbles: true }));
      }
    }
    await sleep(settleMs);
    return { dirty: panel.context.model.dirty, explorer, figures: figures.length, error: null };
  } catch (err) {
    const dialog = document.querySelector('.jp-Dialog-content');
    const words = dialog ? ': ' + dialog.innerText.slice(0, 400) : '';
    return { dirty: null, explorer: null, figures: 0, error: String(err?.message ?? err) + words };
  } finally {
    if (panel) {
      try { await limited(panel.sessionContext.shutdown(), 'the kernel to shut down'); } catch (err) {}
      try { panel.context.model.dirty = false; } catch (err) {}  // close with no "unsaved changes" dialog
      panel.dispose();
    }
  }
}
"""


@pytest.fixture(scope="module")
def opened(lab) -> dict[str, Opened]:
    """Every notebook (and the control) opened in one headless Chromium, one after the other."""
    sync_api = require_chromium()
    base, notebooks, _ = lab
    found = {}
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(120_000)
            page.goto(f"{base}/lab?token={TOKEN}")
            page.wait_for_function("() => window.jupyterapp && window.jupyterapp.started", polling=200)
            page.evaluate("() => window.jupyterapp.restored")
            for name in [*NOTEBOOKS, *CONTROLS]:
                start = time.monotonic()
                seen = page.evaluate(OPEN_JS, [f"notebooks/{name}", SETTLE_S * 1000, LIMIT_S * 1000])
                if seen["error"] and "timed out" in seen["error"]:  # once in a few runs a wait hangs: open it again
                    print(f"{name}: first try {seen['error']}; opening it again")
                    page.keyboard.press("Escape")
                    seen = page.evaluate(OPEN_JS, [f"notebooks/{name}", SETTLE_S * 1000, LIMIT_S * 1000])
                found[name] = Opened(
                    name, seen["dirty"], seen["explorer"], seen["figures"], time.monotonic() - start, seen["error"]
                )
                page.keyboard.press("Escape")  # dismiss a dialog left by a notebook that did not open
                print(
                    f"{name}: {time.monotonic() - start:.1f} s" + (f" ERROR {seen['error']}" if seen["error"] else "")
                )
            time.sleep(2 * AUTOSAVE_S)  # a save started as the last document closed has landed
        finally:
            browser.close()
    slowest = sorted(found.values(), key=lambda o: -o.seconds)[:3]
    print("slowest to open and settle: " + ", ".join(f"{o.name} {o.seconds:.1f} s" for o in slowest))
    return found


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_opening_every_notebook_in_jupyterlab_changes_no_file(lab, opened):
    _, notebooks, before = lab
    failed = {o.name: o.error for o in opened.values() if o.error and o.name not in CONTROLS}
    assert not failed, f"JupyterLab could not open: {failed}"
    controls = tuple(c.removesuffix(".ipynb") for c in CONTROLS)
    real = [name for name in before if not name.startswith(controls)]
    assert len(real) == 2 * len(NOTEBOOKS) >= 2 * 31
    changed = [name for name in real if (notebooks / name).read_bytes() != before[name]]
    assert not changed, f"JupyterLab rewrote {changed}: the committed form is not what JupyterLab + Jupytext save"
    marked = [o.name for o in opened.values() if o.dirty and o.name not in CONTROLS]
    assert not marked, f"JupyterLab marked {marked} modified with no cell run"


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_every_figure_was_drawn_and_hovered(opened):
    """The check above covers the figures only if they were drawn: every method notebook has some."""
    methods = [o for o in opened.values() if o.name not in CONTROLS and o.name != "index.ipynb"]
    assert len(methods) == len(NOTEBOOKS) - 1
    empty = [o.name for o in methods if o.figures == 0]
    assert not empty, f"no figure drawn in {empty}"
    print(f"{sum(o.figures for o in methods)} figures drawn and hovered")


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("control", CONTROLS)
def test_the_check_can_fail_a_notebook_in_an_old_form_is_rewritten(lab, opened, control):
    """The old kernel name, or interactive figures (jupyterlab-plotly adds each drawn figure's screenshot to the
    output): JupyterLab must mark the notebook modified or rewrite it, else the check above proves nothing."""
    _, notebooks, before = lab
    stem = control.removesuffix(".ipynb")
    assert opened[control].error is None, opened[control].error
    assert opened[control].dirty or any(
        (notebooks / f"{stem}{s}").read_bytes() != before[f"{stem}{s}"] for s in (".py", ".ipynb")
    ), f"the control pair {control} was not rewritten: was autosave on, were its figures drawn?"
    if control == CONTROL:
        assert "display_name: Python 3 (ipykernel)" in (notebooks / f"{stem}.py").read_text()
    else:
        assert opened[control].figures > 0


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_an_unrun_notebook_shows_the_explorer_fallback_not_its_repr(opened):
    with_explorer = [o for o in opened.values() if o.explorer_text is not None and o.name not in CONTROLS]
    assert len(with_explorer) == len(NOTEBOOKS) - 1  # every method's notebook; the index has none
    wrong = {o.name: o.explorer_text[:80] for o in with_explorer if not o.explorer_text.startswith("Explorer for ")}
    assert not wrong, f"the explorer cell shows no readable fallback: {wrong}"
