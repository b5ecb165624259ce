"""The Panel app in a real browser: ``panel serve widgets/app.py`` driven by headless Debian Chromium.

What a learner does, and what testers found by hand (issue 15): the gallery lists, searches and filters every
method; every available method's page loads; a short run trains with the curve gaining points and the claim cards
appearing; two users training at once both end with the complete figure; Stop ends a run and records nothing; a
script in the URL shows as text; number boxes refuse bad text in words; the plot has a width on a phone; the
compare page overlays two runs; no page fetches anything from outside the server (KaTeX and plotly.js are
served locally). One server and one Chromium serve the whole module (they are slow to start on a loaded machine);
each test counts the runs it adds to the shared temporary store. Screenshots go to ``docs/screenshots/`` when
``LABKIT_SCREENSHOTS=1``, else to pytest's tmp folder.
"""

import os
import re
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from browser_support import CHROMIUM, CHROMIUM_ARGS, require_chromium, shots_dir

import labkit
from labkit.core.store import RunStore

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[1]
LAB_URL = "http://127.0.0.1:18888"
# (slug, a number-box param, a value it rejects, a cheap valid value): cheapest first
CANDIDATES = [("rpo", "n_pairs", "5", "100"), ("fedld", "rounds", "0", "3")]
# the plotly figures on a page: per figure, its traces as [meta, name, number of x values]
TRACES_JS = "els => els.map(e => (e.data || []).map(t => [t.meta || '', t.name || '', t.x ? t.x.length : 0]))"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = 40.0) -> None:
    """Poll ``url`` until it answers 200; fail early if the server process died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"panel serve exited with code {proc.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"panel serve did not answer at {url} within {timeout} s")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``panel serve widgets/app.py`` on a free port with a temporary run store; yields (url, store path).
    Stopped when the module's tests end, also when one fails."""
    port = free_port()
    store = tmp_path_factory.mktemp("app_store") / "runs.sqlite"
    env = {**os.environ, "LABKIT_STORE": str(store), "LABKIT_PROGRESS": "0", "LABKIT_LAB_URL": LAB_URL}
    cmd = [
        sys.executable,
        "-m",
        "panel",
        "serve",
        "widgets/app.py",
        "--port",
        str(port),
        "--address",
        "127.0.0.1",
        f"--allow-websocket-origin=127.0.0.1:{port}",
    ]
    log = store.with_name("server.log")  # a file, not a pipe: a pipe nobody reads fills up and blocks the server
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/app"
    try:
        wait_for_http(url, proc, log)
        yield url, store
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def browser():
    """Headless Debian Chromium through Playwright (never a downloaded browser); closed also on failure."""
    sync_api = require_chromium()
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


class Pages:
    """Opens pages, each in its own browser context (its own cookies: its own user); closes them all at the end.
    Every dialog a page opens is recorded in ``page.dialogs`` and dismissed; every request that leaves the
    server is recorded in ``page.outside``."""

    def __init__(self, browser, host: str):
        self.browser, self.host, self.contexts = browser, host, []

    def new(self, width: int = 1400, height: int = 1000):
        context = self.browser.new_context(viewport={"width": width, "height": height})
        self.contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(30_000)
        page.dialogs, page.outside = [], []

        def on_dialog(dialog):
            page.dialogs.append(dialog.message)
            dialog.dismiss()

        page.on("dialog", on_dialog)
        page.on(
            "request", lambda r: None if r.url.startswith((self.host, "blob:", "data:")) else page.outside.append(r.url)
        )
        return page

    def close(self):
        for context in self.contexts:
            context.close()


@pytest.fixture
def pages(browser, server):
    url, _ = server
    opened = Pages(browser, url.rsplit("/", 1)[0])
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def page(pages):
    return pages.new()


def n_runs(store, slug: str) -> int:
    return len(RunStore(store).runs(slug)) if store.exists() else 0


def pick_method():
    """The cheapest available method we know how to drive, or skip."""
    available = {m.slug for m in labkit.available_methods()}
    for candidate in CANDIDATES:
        if candidate[0] in available:
            return candidate
    pytest.skip(f"none of {[c[0] for c in CANDIDATES]} is available yet")


def needs(slug: str) -> None:
    if slug not in {m.slug for m in labkit.available_methods()}:
        pytest.skip(f"{slug} is not available")


def number_box(page, name: str):
    return page.locator(".bk-input-group", has_text=name).locator("input").first


def mean_points(page) -> dict[str, int]:
    """``{series: points}`` of the mean traces in the page's live figure (the first plotly figure)."""
    figures = page.locator(".js-plotly-plot").evaluate_all(TRACES_JS)
    return {name.split(" (same curve")[0]: n for meta, name, n in figures[0] if meta == "mean"}


def expected_points(store, run_id: int, metric: str) -> dict[str, int]:
    """``{series: number of logged steps}`` of ``metric`` in a recorded run's history (mean over seeds per step)."""
    history = RunStore(store).history(run_id)
    rows = history[history["metric"] == metric]
    return {series: rows[rows["series"] == series]["step"].nunique() for series in dict.fromkeys(rows["series"])}


def newest_run_id(page) -> int:
    """The id in the first row of the page's recent-runs table (the page lists its own user's runs)."""
    return int(page.locator("table.panel-df tbody tr").first.locator("td").first.inner_text())


def shown_text(locator) -> str:
    """The text a Panel pane shows (its content sits in the element's shadow root, which ``inner_text`` skips)."""
    js = "e => [...(e.shadowRoot || e).children].filter(c => !['STYLE', 'LINK'].includes(c.tagName))"
    return locator.evaluate(js + ".map(c => c.innerText).join('\\n')")


def wait_done(page, timeout: float = 120_000) -> None:
    page.locator(".labkit-status", has_text="Done in").wait_for(timeout=timeout)


# --------------------------------------------------------------------------- gallery and navigation


def test_gallery_lists_searches_and_filters_every_method(server, page):
    url, _ = server
    page.goto(url)
    cards = page.locator(".labkit-card")
    cards.first.wait_for()
    assert cards.count() == len(labkit.METHODS) == 30
    assert page.locator(".labkit-card a.open").count() == len(labkit.available_methods())
    for m in labkit.METHODS:
        assert page.locator(f'.labkit-card[data-slug="{m.slug}"]').count() == 1, m.slug

    search = page.get_by_placeholder("search: name, title, arXiv id…")
    search.press_sequentially("federated")  # as typed: the cards filter on every keystroke
    matching = [m.slug for m in labkit.METHODS if "federated" in f"{m.slug} {m.short} {m.title} {m.family}".lower()]
    assert matching
    page.get_by_text(f"{len(matching)} of 30 shown").wait_for()
    visible = page.locator(".labkit-card:visible").evaluate_all("els => els.map(e => e.dataset.slug)")
    assert sorted(visible) == sorted(matching)
    search.fill("")
    search.press("Backspace")
    family = labkit.METHODS[0].family
    page.locator("select").first.select_option(family)
    in_family = [m for m in labkit.METHODS if m.family == family]
    page.get_by_text(f"{len(in_family)} of 30 shown").wait_for()
    visible = page.locator(".labkit-card:visible").evaluate_all("els => els.map(e => e.dataset.slug)")
    assert sorted(visible) == sorted(m.slug for m in in_family)
    assert page.outside == [] and page.dialogs == [], page.outside


def test_every_available_method_page_loads(server, page):
    url, _ = server
    for info in labkit.available_methods():
        page.goto(f"{url}?method={info.slug}")
        page.get_by_role("button", name="Train", exact=True).wait_for(timeout=60_000)
        assert f"{info.id:02d} · {info.short}" in shown_text(page.locator(".labkit-header")), info.slug
        lab = page.locator("a.labkit-lab")
        assert lab.get_attribute("href") == f"{LAB_URL}/lab/tree/notebooks/{info.id:02d}_{info.slug}.ipynb"
        assert shown_text(page.locator(".labkit-estimate")).strip().startswith("estimated time:")
    assert page.outside == [] and page.dialogs == [], page.outside


# --------------------------------------------------------------------------- training


def test_gallery_to_training_in_the_browser(server, page, tmp_path):
    url, store = server
    slug, knob, bad, good = pick_method()
    before = n_runs(store, slug)

    page.goto(url)
    page.locator(f'.labkit-card[data-slug="{slug}"] a.open').click()
    page.wait_for_url(f"**?method={slug}")
    train = page.get_by_role("button", name="Train", exact=True)
    train.wait_for()
    box = number_box(page, knob)

    box.fill(bad)
    box.press("Enter")
    train.click()
    page.locator(".labkit-error", has_text=f"{knob}={bad} is out of range").wait_for()

    box.fill(good)
    box.press("Enter")
    train.click()
    page.locator(".labkit-status", has_text="Training").wait_for()
    wait_done(page)
    headline = page.locator(".labkit-claim.headline")
    headline.wait_for()
    page.get_by_text(f"{knob}={good}").wait_for()  # the recent-runs table shows the change
    # the page shows exactly the headline verdict the run recorded, as the headline card's badge
    recorded = RunStore(store).runs(slug).iloc[0]
    assert headline.get_attribute("data-verdict") == recorded["verdict"]
    assert headline.locator(".badge").inner_text() == recorded["verdict"].upper()
    assert recorded["claims"][0]["claim"] in headline.inner_text()
    assert not page.locator(".labkit-error").is_visible()
    # the recent-runs headers sit over their columns: header and body cells aligned alike, same left edges
    align = "els => els.map(e => [getComputedStyle(e).textAlign, Math.round(e.getBoundingClientRect().left)])"
    heads = page.locator("table.panel-df thead th").evaluate_all(align)
    cells = page.locator("table.panel-df tbody tr").first.locator("td").evaluate_all(align)
    assert len(heads) == len(cells) == 8 and heads == cells, (heads, cells)
    # the x-axis says what a step counts
    x_title = page.locator(".js-plotly-plot").first.evaluate("e => e.layout.xaxis.title.text")
    assert x_title in ("step", "round", "iteration", "epoch", "episode"), x_title
    page.set_viewport_size({"width": 1400, "height": 2200})  # the template scrolls inside: show the claims too
    page.locator(".labkit-claim").first.scroll_into_view_if_needed()
    page.screenshot(path=str(shots_dir(tmp_path) / "method.png"))
    page.set_viewport_size({"width": 1400, "height": 1000})
    # the individual seeds on demand
    seed_traces = "e => e.data.filter(t => t.meta === 'seed').length"
    assert page.locator(".js-plotly-plot").first.evaluate(seed_traces) == 0
    page.locator(".labkit-show-seeds input").check()
    deadline = time.monotonic() + 20
    while page.locator(".js-plotly-plot").first.evaluate(seed_traces) == 0 and time.monotonic() < deadline:
        page.wait_for_timeout(200)
    assert page.locator(".js-plotly-plot").first.evaluate(seed_traces) > 0
    # the gallery card shows the newest run's headline verdict
    page.goto(url)
    badge = page.locator(f'.labkit-card[data-slug="{slug}"] .verdict')
    assert badge.text_content() == recorded["verdict"].upper()
    page.screenshot(path=str(shots_dir(tmp_path) / "gallery.png"), full_page=False)  # the first screen, a badge on

    runs = RunStore(store).runs(slug)
    assert len(runs) == before + 1 and runs["params"][0][knob] == int(good)
    assert page.outside == [] and page.dialogs == [], page.outside


def test_two_users_training_at_once_both_end_with_the_complete_figure(server, pages):
    url, store = server
    needs("rpo")
    users = [pages.new(), pages.new()]
    for user, n_pairs in zip(users, ("100", "120")):
        user.goto(f"{url}?method=rpo")
        user.get_by_role("button", name="Train", exact=True).wait_for()
        number_box(user, "n_pairs").fill(n_pairs)
    for user in users:  # both press Train, one right after the other
        user.get_by_role("button", name="Train", exact=True).click()
    for user in users:
        wait_done(user, timeout=180_000)
    ids = [newest_run_id(user) for user in users]
    assert ids[0] != ids[1]  # each page lists its own user's run first
    for user, run_id in zip(users, ids):
        expected = expected_points(store, run_id, "gold_reward")
        assert expected and all(n > 1 for n in expected.values())
        # the final full figure must arrive: poll the page's figure until it holds every point, or fail
        deadline = time.monotonic() + 30
        while mean_points(user) != expected and time.monotonic() < deadline:
            user.wait_for_timeout(250)
        assert mean_points(user) == expected, (run_id, mean_points(user), expected)
        # the other user's run is not listed on this page unless asked
        rows = user.locator("table.panel-df tbody tr").count()
        assert rows == 1, rows
        assert user.dialogs == []


def test_stop_ends_the_run_and_records_nothing(server, page):
    url, store = server
    needs("rpo")
    before = n_runs(store, "rpo")
    page.goto(f"{url}?method=rpo")
    train, stop = (
        page.get_by_role("button", name="Train", exact=True),
        page.get_by_role("button", name="Stop", exact=True),
    )
    train.wait_for()
    assert stop.is_disabled()
    train.click()
    page.locator(".labkit-status", has_text="points so far").wait_for(timeout=60_000)
    stop.click()
    page.locator(".labkit-status", has_text="nothing was recorded").wait_for(timeout=60_000)
    assert "Stopped" in shown_text(page.locator(".labkit-status"))
    assert train.is_enabled() and stop.is_disabled()
    assert n_runs(store, "rpo") == before
    assert not page.locator(".labkit-claim").count()


def test_the_plot_has_a_width_on_a_phone(server, pages):
    url, _ = server
    needs("rpo")
    phone = pages.new(width=390, height=844)
    phone.goto(f"{url}?method=rpo")
    phone.get_by_role("button", name="Train", exact=True).wait_for()
    plot = phone.locator(".js-plotly-plot").first
    plot.wait_for()
    box = plot.bounding_box()
    assert box is not None and box["width"] > 200, box
    assert box["x"] >= 0 and box["x"] + box["width"] <= 390 + 1, box


def record_run(store, slug: str, metric: str, offset: float) -> int:
    """Write a small made-up run of ``slug`` into the store (two arms, two seeds, five steps); returns its id."""
    history = [
        [seed, step, arm, metric, offset + k + step / 10]
        for seed in (0, 1)
        for k, arm in enumerate("ab")
        for step in range(5)
    ]
    record = {
        "method": slug,
        "preset": "quick",
        "seed": 0,
        "device": "cpu",
        "params": {"n_pairs": 100 + int(offset)},
        "metrics": {metric: offset},
        "claims": [],
        "claims_hold": False,
        "verdict": None,
        "duration_s": 1.0,
        "created_at": time.time(),
        "notebook": None,
        "history": history,
    }
    return RunStore(store).insert(record)


def test_compare_page_overlays_two_runs(server, page):
    url, store = server
    needs("rpo")
    ids = [record_run(store, "rpo", "gold_reward", offset) for offset in (0.0, 5.0)]  # the newest two: picked
    page.goto(f"{url}?page=compare&method=rpo")
    page.get_by_text("Compare runs of rpo").wait_for()
    page.locator(".labkit-all-users input").check()  # made outside the app
    page.locator(".labkit-compare-note", has_text="2 run(s) picked").wait_for()
    traces = page.locator(".js-plotly-plot").first.evaluate("e => e.data.map(t => [t.name, t.x.length])")
    assert sorted(traces) == sorted([f"#{i} {arm}", 5] for i in ids for arm in "ab"), traces
    rows = page.locator("table.panel-df tbody tr")
    assert rows.count() == 2
    assert sorted(int(rows.nth(k).locator("td").first.inner_text()) for k in range(2)) == sorted(ids)
    assert page.get_by_role("button", name="Download the table (CSV)").count() == 1
    assert page.outside == [] and page.dialogs == [], page.outside


def test_a_method_page_teaches_and_a_guided_experiment_fills_the_form(server, page):
    url, _ = server
    needs("rpo")
    guides = pytest.importorskip("widgets.guides")
    guide = guides.guide_for("rpo")
    if guide is None or not guide.experiments:
        pytest.skip("rpo has no guide yet")
    page.goto(f"{url}?method=rpo")
    page.get_by_role("button", name="Train", exact=True).wait_for()
    page.locator(".labkit-what").get_by_text("What you will see").wait_for()
    page.locator(".labkit-equation .katex").first.wait_for()  # typeset by KaTeX, served by the app itself
    experiment = next((x for x in guide.experiments if set(x.overrides) & {"eta", "n_pairs"}), None)
    if experiment is None:
        pytest.skip("no rpo experiment sets a knob shown in the form")
    page.get_by_role("button", name=experiment.title, exact=True).click()
    page.locator(".labkit-expect", has_text="What to expect").wait_for()
    name, value = next((k, v) for k, v in experiment.overrides.items() if k in {"eta", "n_pairs"})
    box = number_box(page, name)
    deadline = time.monotonic() + 20
    while box.input_value() != str(value) and time.monotonic() < deadline:
        page.wait_for_timeout(200)
    assert float(box.input_value()) == float(value)
    assert page.outside == [] and page.dialogs == [], page.outside


# --------------------------------------------------------------------------- what testers found by hand

INJECTION = '<img src=x onerror="alert(1)">'


def test_a_script_in_the_url_shows_as_text(server, page):
    url, _ = server
    page.goto(f"{url}?method={urllib.parse.quote(INJECTION)}")
    page.locator(".labkit-card").first.wait_for()
    note = page.get_by_text(f"unknown method {INJECTION!r}")  # the tag's text itself is on the page
    note.wait_for()
    assert note.is_visible()
    assert page.locator('img[src="x"]').count() == 0  # no element was made of it
    page.wait_for_timeout(1000)  # an onerror handler would have fired by now
    assert page.dialogs == []


def test_number_boxes_refuse_in_words_and_never_train_on_a_refused_value(server, page):
    url, store = server
    slug = "rpo"
    needs(slug)
    before = n_runs(store, slug)
    page.goto(f"{url}?method={slug}")
    train = page.get_by_role("button", name="Train", exact=True)
    train.wait_for()
    error = page.locator(".labkit-error")
    n_pairs = number_box(page, "n_pairs")
    seed = number_box(page, "seed")
    whole = "a whole number from 10 to 100,000"
    typed = {  # (box, text) -> the refusal shown, in words
        (n_pairs, "2.5"): f"n_pairs='2.5' is not a valid value: expected {whole}",
        (n_pairs, "abc"): f"n_pairs='abc' is not a valid value: expected {whole}",
        (n_pairs, ""): f"n_pairs is empty: expected {whole}",
        (n_pairs, "-1"): f"n_pairs=-1 is out of range: expected {whole}",
        (seed, "-1"): "seed=-1 is not allowed: expected a whole number from 0 to 2,147,483,647",
        (seed, "2.5"): "seed='2.5' is not allowed: expected a whole number from 0",
        (seed, "abc"): "seed='abc' is not allowed: expected a whole number from 0",
        (seed, ""): "seed is empty: expected a whole number from 0",
    }
    for (box, text), refusal in typed.items():
        other = seed if box is n_pairs else n_pairs
        other.fill("100" if other is n_pairs else "1")
        box.fill(text)  # no Enter: the refusal shows as it is typed
        page.get_by_text(refusal).first.wait_for()
        assert box.input_value() == text  # the text stays as typed: nothing rounded, stripped or clamped
        train.click()
        error.filter(has_text=refusal).wait_for()
        page.get_by_text("Not trained: fix the marked values first").wait_for()
        assert n_runs(store, slug) == before, (text, refusal)
    assert train.is_enabled() and train.inner_text() == "Train"

    n_pairs.fill("120")
    seed.fill("3")
    assert not page.get_by_text("is not a valid value").first.is_visible()
    train.click()
    wait_done(page)
    runs = RunStore(store).runs(slug)
    assert len(runs) == before + 1
    assert (runs["params"][0]["n_pairs"], int(runs["seed"][0])) == (120, 3)  # exactly what was typed
    assert not error.is_visible()
    assert page.dialogs == []


def test_the_server_logged_no_error(server):
    """Last in the module: nothing the tests above did raised on the server (a callback's exception shows in the
    page only as a frozen widget; the server's log names it)."""
    _, store = server
    text = store.with_name("server.log").read_text()
    # a page left while the server still wrote to it (the tests navigate fast): Tornado logs the closed socket
    closed = ("WebSocketClosedError", "StreamClosedError")
    blocks = re.split(r"\n(?=\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ )", text)
    errors = [b for b in blocks if ("Traceback" in b or " ERROR" in b) and not any(c in b for c in closed)]
    assert errors == [], "\n".join(errors)[-4000:]
