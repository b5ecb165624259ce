"""``labkit report``: the Jupyter Book with the scoreboard (issue 15 "The report"; issue 16 multi-seed verdicts).

Pooling is checked on hand-made records (a pooled verdict that no single run gives; overlapping seeds counted once;
runs with another margin or other parameters left out). The book is built once per module from a temporary store
whose records go in through the store's API, with the network blocked in this process and in the build's child
process; the built HTML is checked structurally (one scoreboard row per registered method, badges, links to
chapters that exist, plotly and equation markup in a chapter, search, the machine page). A browser test opens the
front page from a local HTTP server in Chromium and writes ``docs/screenshots/report.png`` when
``LABKIT_SCREENSHOTS=1`` (else into pytest's tmp folder).
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import re
import socket
import threading
import time

import pytest
from browser_support import CHROMIUM, CHROMIUM_ARGS, require_chromium, shots_dir, with_interactive_figures

from labkit import cli, report
from labkit.core.claims import ClaimCheck, Verdict
from labkit.core.registry import METHODS, REPO_ROOT, get_method
from labkit.core.store import RunStore
from labkit.report import Row, build_rows, pool_headline, scoreboard_html

DEFAULTS = {"lr": 0.1, "steps": 10}


def record(
    values, seed=0, margin=0.0, preset="quick", params=None, higher=True, claim="A beats B", method="rpo", **extra
):
    """A store record whose headline claim has ``values`` (one per seed ``seed, seed + 1, …``)."""
    check = ClaimCheck(claim, "A − B", values, margin, higher_is_better=higher, headline=True)
    return {
        "method": method,
        "preset": preset,
        "seed": seed,
        "device": "cpu",
        "params": dict(DEFAULTS if params is None else params),
        "metrics": {"final": 1.0},
        "claims": [check.to_dict(), ClaimCheck("supporting", "x", [1.0], 0.0).to_dict()],
        "claims_hold": check.holds,
        "verdict": check.verdict.value,
        "duration_s": 2.0,
        "created_at": time.time(),
        "notebook": None,
        "history": [],
        **extra,
    }


def as_store_rows(records):
    """Records as the store returns them: with ids, newest (last inserted) first."""
    return [{**r, "id": i + 1} for i, r in reversed(list(enumerate(records)))]


# ---------------------------------------------------------------------------------------------------- pooling


def test_pooled_seeds_give_a_verdict_that_no_single_run_gives():
    a = record([1.0, 0.2, -0.1], seed=0)
    b = record([0.9, 0.3, 0.5], seed=3)
    for single in (a, b):
        assert ClaimCheck("c", "q", single["claims"][0]["values"], 0.0).verdict is Verdict.INCONCLUSIVE
    pooled = pool_headline(as_store_rows([a, b]), DEFAULTS)
    assert pooled.seeds == (0, 1, 2, 3, 4, 5)
    assert pooled.check.values == (1.0, 0.2, -0.1, 0.9, 0.3, 0.5)
    assert pooled.verdict is Verdict.HOLDS
    assert pooled.check.margin == 0.0 and len(pooled.run_ids) == 2
    assert pooled.basis() == "6 seeds from 2 runs"


def test_overlapping_seeds_are_counted_once_from_the_newest_run():
    old = record([5.0, 5.0, 5.0], seed=0)  # seeds 0, 1, 2
    new = record([1.0, 2.0, 3.0], seed=1)  # seeds 1, 2, 3: newest, wins on 1 and 2
    pooled = pool_headline(as_store_rows([old, new]), DEFAULTS)
    assert pooled.seeds == (0, 1, 2, 3)
    assert pooled.check.values == (5.0, 1.0, 2.0, 3.0)
    # a run that adds no seed (all covered by newer runs) is not counted as a basis
    again = record([9.0], seed=2)
    pooled = pool_headline(as_store_rows([again, old, new]), DEFAULTS)
    assert pooled.check.values == (5.0, 1.0, 2.0, 3.0) and len(pooled.run_ids) == 2


def test_only_runs_at_default_params_with_the_same_claim_and_margin_are_pooled():
    other_params = record([-9.0, -9.0, -9.0], seed=10, params={"lr": 0.5, "steps": 10})
    other_margin = record([-9.0, -9.0, -9.0], seed=20, margin=0.5)
    kept = record([1.0, 1.1, 0.9], seed=0)
    pooled = pool_headline(as_store_rows([other_margin, other_params, kept]), DEFAULTS)
    assert pooled.seeds == (0, 1, 2) and pooled.at_defaults
    assert pooled.left_out == 1 and "1 older run with another claim or margin left out" in pooled.basis()
    assert pooled.verdict is Verdict.HOLDS


def test_the_stored_margin_and_direction_are_used_never_a_new_one():
    lower = record([0.30, 0.31, 0.29], margin=0.35, higher=False)  # "at most 0.35": holds
    assert pool_headline(as_store_rows([lower]), DEFAULTS).verdict is Verdict.HOLDS
    higher = record([0.30, 0.31, 0.29], margin=0.35, higher=True)  # "at least 0.35": does not hold
    assert pool_headline(as_store_rows([higher]), DEFAULTS).verdict is Verdict.DOES_NOT_HOLD


def test_without_a_run_at_default_params_the_newest_run_is_shown_alone_and_says_so():
    a = record([1.0, 1.0, 1.0], params={"lr": 0.5, "steps": 10})
    b = record([2.0, 2.0, 2.0], seed=5, params={"lr": 0.7, "steps": 10})
    pooled = pool_headline(as_store_rows([a, b]), DEFAULTS)
    assert not pooled.at_defaults and pooled.check.values == (2.0, 2.0, 2.0)
    assert "none at the preset's default parameters" in pooled.basis()


def test_a_non_finite_value_makes_the_pooled_verdict_inconclusive():
    pooled = pool_headline(as_store_rows([record([1.0, float("nan"), 1.0])]), DEFAULTS)
    assert pooled.verdict is Verdict.INCONCLUSIVE


def test_records_without_a_headline_with_values_give_nothing():
    old = record([1.0])
    old["claims"] = [{"claim": "old style", "passed": True, "headline": True}]
    assert pool_headline(as_store_rows([old]), DEFAULTS) is None


# ---------------------------------------------------------------------------------------------------- scoreboard


def _rows(records):
    return build_rows(METHODS, as_store_rows(records), {"rpo": "chapters/alignment/08_rpo.html"}, lambda i, p: DEFAULTS)


def test_scoreboard_has_one_row_per_method_and_a_column_per_recorded_preset():
    rows = _rows([record([1.0, 1.1, 0.9]), record([0.1, -0.5, 0.2], preset="full")])
    table = scoreboard_html(rows)
    assert re.findall(r"data-slug='([a-z0-9_]+)'", table) == [m.slug for m in METHODS]
    assert "<th>quick preset</th>" in table and "<th>full preset</th>" in table
    assert "<th>standard preset</th>" not in table  # no standard run recorded
    rpo = next(r for r in rows if r.method.slug == "rpo")
    assert rpo.by_preset["quick"].verdict is Verdict.HOLDS
    assert rpo.by_preset["full"].verdict is Verdict.INCONCLUSIVE
    assert "lk-badge lk-holds'>holds<" in table and "lk-badge lk-unsure'>inconclusive<" in table
    assert "href='chapters/alignment/08_rpo.html'" in table
    assert table.count("not recorded") == 2 * (len(METHODS) - 1)  # quick and full of every other method


def test_scoreboard_escapes_what_comes_from_the_store():
    evil = '<img src=x onerror="alert(1)">'
    table = scoreboard_html(_rows([record([1.0, 1.0, 1.0], claim=evil)]))
    assert evil not in table and html_escaped(evil) in table


def html_escaped(text):
    import html

    return html.escape(text)


def test_a_pending_method_is_listed_as_not_available():
    class Pending:
        def __init__(self, info):
            self._info = info

        def __getattr__(self, name):
            return getattr(self._info, name)

        available = False

    rows = [Row(Pending(get_method("tlob")), None)]
    assert "not available yet" in scoreboard_html(rows)


# ---------------------------------------------------------------------------------------------------- notebook outputs


def test_plotly_outputs_are_rendered_for_the_local_plotly_js_and_the_cdn_loader_is_dropped():
    figure = {"data": [{"type": "scatter", "y": [1, 2, 3]}], "layout": {"height": 300}}
    plot = {"output_type": "display_data", "metadata": {}, "data": {report.PLOTLY_MIME: figure, "text/html": "<x>"}}
    out = report._book_output(plot)
    assert report.PLOTLY_MIME not in out["data"] and "plotly-graph-div" in out["data"]["text/html"]
    assert "cdn.plot.ly" not in out["data"]["text/html"] and "<script src" not in out["data"]["text/html"]
    loader = {
        "output_type": "display_data",
        "metadata": {},
        "data": {"text/html": '<script src="https://cdn.plot.ly/x">'},
    }
    assert report._book_output(loader) is None
    widget = {"data": {report.WIDGET_MIME: {"model_id": "1"}, "text/plain": "Explorer(children=(...))"}}
    assert report._book_output(widget)["data"] == {"text/markdown": report.WIDGET_NOTE}
    stream = {"output_type": "stream", "name": "stdout", "text": "hi"}
    assert report._book_output(stream) == stream


# ---------------------------------------------------------------------------------------------------- the built book

NET_GUARD = """\
import os, socket
_log = os.environ["LABKIT_NET_LOG"]
def _note(what):
    with open(_log, "a") as f:
        f.write(what + "\\n")
_connect, _connect_ex, _gai = socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo
def connect(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6):
        _note(f"connect {address!r}")
        raise OSError("the network is blocked by tests/test_report.py")
    return _connect(self, address)
def connect_ex(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6):
        _note(f"connect_ex {address!r}")
        return 111
    return _connect_ex(self, address)
def getaddrinfo(host, *args, **kwargs):
    if host not in (None, "localhost", "127.0.0.1", "::1"):
        _note(f"getaddrinfo {host!r}")
        raise socket.gaierror("the network is blocked by tests/test_report.py")
    return _gai(host, *args, **kwargs)
socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo = connect, connect_ex, getaddrinfo
"""


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """``labkit report --seeds 3`` with a fake ``run_seeds`` (records go in through the store's API), the network
    blocked here and in the build's child process. Yields (html folder, store, calls to run_seeds, net log)."""
    tmp = tmp_path_factory.mktemp("report")
    store_path = tmp / "runs.sqlite"
    store = RunStore(store_path)
    rpo = get_method("rpo")
    quick = report.default_params(rpo, "quick")
    executed = tmp / "runs" / "08_rpo-quick-s0-20260101-000000-000000.ipynb"
    executed.parent.mkdir()
    # as `labkit run` leaves it: figures interactive (the committed notebook keeps them as images)
    committed = json.loads((REPO_ROOT / "notebooks" / "08_rpo.ipynb").read_text(encoding="utf-8"))
    executed.write_text(json.dumps(with_interactive_figures(committed)))
    # a notebook execution (seed 0) and a full-preset run: quick and full are shown side by side
    store.insert(record([0.2, 0.3, 0.25], params=quick, notebook=str(executed)))
    store.insert(record([-0.3, -0.2, -0.4], preset="full", params=report.default_params(rpo, "full")))
    calls = []

    def fake_run_seeds(slugs, preset, seeds, *, scheduler=None, store=None, **kwargs):
        calls.append((list(slugs), preset, list(seeds), scheduler, store))
        for s in seeds[1:]:  # seed 0 is recorded already: reused
            store.insert(record([0.2 + 0.01 * s, 0.3, 0.25], seed=s, params=quick))
        return [
            {"method": slug, "seed": s, "status": "reused" if s == 0 else "done"} for slug in ["rpo"] for s in seeds
        ]

    net_log = tmp / "net.log"
    net_log.touch()
    guard = tmp / "guard"
    guard.mkdir()
    (guard / "sitecustomize.py").write_text(NET_GUARD)
    out = tmp / "report"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LABKIT_STORE", str(store_path))
        mp.setenv("LABKIT_NET_LOG", str(net_log))
        mp.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(guard), os.environ.get("PYTHONPATH")])))
        mp.setattr(report, "_run_seeds", lambda: fake_run_seeds)
        blocked = {}
        exec(compile(NET_GUARD, "guard", "exec"), blocked)  # this process too (patches socket; undone below)
        try:
            assert cli.main(["report", "--out", str(out), "--seeds", "3"]) == 0
        finally:
            socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo = (
                blocked["_connect"],
                blocked["_connect_ex"],
                blocked["_gai"],
            )
    yield out / "_build" / "html", store, calls, net_log


@pytest.mark.slow
def test_the_build_fetches_nothing_and_run_seeds_was_asked_for_the_missing_seeds(built):
    html_dir, store, calls, net_log = built
    assert net_log.read_text() == "", "a build step used the network"
    assert calls == [([m.slug for m in METHODS if m.available], "quick", [0, 1, 2], None, calls[0][4])]
    assert calls[0][4].path == store.path
    assert (html_dir.parent.parent / "index.html").read_text().count("_build/html/index.html") >= 1


@pytest.mark.slow
def test_front_page_is_the_scoreboard_with_a_row_per_method_badges_and_working_links(built):
    html_dir = built[0]
    index = (html_dir / "index.html").read_text()
    table = index[index.index("<table class='lk-scoreboard'>") : index.index("</table>", index.index("lk-scoreboard"))]
    assert re.findall(r"data-slug='([a-z0-9_]+)'", table) == [m.slug for m in METHODS]
    assert "<th>quick preset</th>" in table and "<th>full preset</th>" in table
    rpo = table[table.index("data-slug='rpo'") :].split("</tr>")[0]
    # quick: the notebook's seed-0 run and run_seeds' seeds 1 and 2 pooled (seeds 0..4, counted once each)
    assert "lk-badge lk-holds'>holds<" in rpo and "5 seeds from 3 runs" in rpo
    assert "lk-badge lk-fails'>does not hold<" in rpo and "3 seeds from 1 run" in rpo
    links = re.findall(r"<a href='([^']+\.html)'", table)
    assert len(links) == sum(m.available for m in METHODS)
    for link in links:
        assert (html_dir / link).exists(), link
    assert "headline verdicts" in index


@pytest.mark.slow
def test_a_chapter_has_the_figures_equations_provenance_and_the_books_navigation(built):
    html_dir = built[0]
    page = (html_dir / "chapters" / "alignment" / "08_rpo.html").read_text()
    assert "plotly-graph-div" in page and "Plotly.newPlot" in page and "cdn.plot.ly" not in page
    assert "_static/plotly.min.js" in page and (html_dir / "_static" / "plotly.min.js").stat().st_size > 1e6
    assert 'class="math notranslate nohighlight"' in page  # MathJax markup (KaTeX renders it offline)
    assert "_static/katex/katex.min.js" in page and "_static/labkit-math.js" in page
    assert "08_rpo-quick-s0-20260101-000000-000000.ipynb" in page and "Executed at the" in page
    assert "prev-next-area" in page and "bd-sidebar-primary" in page and "Alignment" in page
    assert "Explorer(children=" not in page
    # a method without an executed notebook in the store: the committed notebook, said so
    committed = (html_dir / "chapters" / "federated-robustness" / "07_ensloss.html").read_text()
    assert "the notebook as committed in the repository" in committed
    # its figures are the committed images, copied into the book
    images = re.findall(r'<img [^>]*src="([^"]+\.png)"', committed)
    assert images and all((html_dir / "chapters" / "federated-robustness" / src).exists() for src in images)


@pytest.mark.slow
def test_the_book_has_search_and_the_machine_page(built):
    html_dir = built[0]
    assert (html_dir / "search.html").exists() and (html_dir / "searchindex.js").exists()
    machine = (html_dir / "machine.html").read_text()
    from importlib.metadata import version

    assert "Python" in machine and version("torch") in machine and version("jupyter-book") in machine
    assert "08_rpo-quick-s0" in machine  # the per-notebook times


@pytest.mark.slow
@pytest.mark.browser
def test_front_page_renders_in_chromium_and_a_chapter_draws_its_figure_and_equations(built, tmp_path):
    html_dir = built[0]
    sync_api = require_chromium()
    handler = functools.partial(QuietHandler, directory=str(html_dir))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with sync_api.sync_playwright() as p:
            chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = chromium.new_page(viewport={"width": 1400, "height": 1000})
                errors = []
                page.on("pageerror", lambda err: errors.append(str(err)))
                page.goto(f"{base}/index.html", wait_until="load")
                assert page.locator("table.lk-scoreboard tr.lk-method").count() == len(METHODS)
                assert page.locator(".lk-badge.lk-holds").first.is_visible()
                page.screenshot(path=str(shots_dir(tmp_path) / "report.png"), full_page=False)
                page.goto(f"{base}/chapters/alignment/08_rpo.html", wait_until="load")
                page.wait_for_selector(".plotly-graph-div .main-svg", timeout=30_000)
                # MathJax from its CDN when there is a network, the local KaTeX when there is none
                page.wait_for_function("document.querySelectorAll('.katex, mjx-container').length > 0", timeout=30_000)
                assert not [e for e in errors if "Plotly" in e or "katex" in e.lower()], errors
            finally:
                chromium.close()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_a_failed_build_is_an_error_message_not_a_traceback(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LABKIT_STORE", str(tmp_path / "runs.sqlite"))

    def fail(src, out):
        raise report.ReportBuildError("jupyter-book build failed (exit 2):\nboom")

    monkeypatch.setattr(report, "run_jupyter_book", fail)
    monkeypatch.setattr(report, "write_book", lambda *args: None)
    assert cli.main(["report", "--out", str(tmp_path / "report")]) == 2
    assert "jupyter-book build failed" in capsys.readouterr().err


def test_seeds_must_be_a_whole_number_at_least_one(capsys):
    with pytest.raises(SystemExit):
        cli.main(["report", "--seeds", "0"])
    assert "expected a whole number >= 1" in capsys.readouterr().err


def test_written_notebook_is_valid_json_with_the_provenance_after_the_title(tmp_path):
    rpo = get_method("rpo")
    chapter = report.Chapter(rpo, REPO_ROOT / "notebooks" / "08_rpo.ipynb", "committed", None, None, None, None)
    nb = json.loads(report.book_notebook(chapter))
    assert "".join(nb["cells"][0]["source"]).startswith("# 08")
    assert "as committed in the repository" in "".join(nb["cells"][1]["source"])
    outputs = [o for c in nb["cells"] if c["cell_type"] == "code" for o in c["outputs"]]
    assert not any("cdn.plot.ly" in "".join(o.get("data", {}).get("text/html", "")) for o in outputs)


def test_the_real_run_seeds_takes_the_call_the_report_makes():
    import inspect

    sweep = pytest.importorskip("labkit.sweep")
    inspect.signature(sweep.run_seeds).bind(["rpo"], "quick", [0, 1, 2], scheduler=None, store=None)


def test_a_damaged_store_is_refused_before_anything_runs(tmp_path, monkeypatch, capsys):
    damaged = tmp_path / "runs.sqlite"
    damaged.write_bytes(b"not a database, just bytes" * 100)
    monkeypatch.setenv("LABKIT_STORE", str(damaged))
    assert cli.main(["report", "--out", str(tmp_path / "report"), "--execute"]) == 2
    assert str(damaged) in capsys.readouterr().err and not (tmp_path / "report").exists()
