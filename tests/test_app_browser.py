"""The Panel app in a real browser: ``panel serve widgets/app.py`` driven by headless Debian Chromium.

Opens the gallery, follows an available method's card, types a bad value (the error alert shows),
then a good one, trains, and waits for the claim checks and the recorded run. A screenshot of the
method page is written to pytest's tmp folder (its path is printed) to judge the layout by eye.

Then what a tester found by hand: a script in the URL (``?method=<img onerror=...>``) must show as text and
run nothing, and a number box must refuse "2.5", "abc", an empty box and -1 in words, train on none of them,
and train on the value typed once it is valid. One server and one Chromium serve the whole module (they are
slow to start on a loaded machine); each test counts the runs it adds to the shared temporary store.
"""

import os
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

import labkit
from labkit.core.store import RunStore

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
REPO = Path(__file__).resolve().parents[1]
# (slug, a number-box param, a value it rejects, a cheap valid value): cheapest first
CANDIDATES = [("rpo", "n_pairs", "5", "100"), ("fedld", "rounds", "0", "3")]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_http(url: str, proc: subprocess.Popen, timeout: float = 40.0) -> None:
    """Poll ``url`` until it answers 200; fail early if the server process died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"panel serve exited with code {proc.returncode}:\n{proc.stdout.read()}")
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
    env = {**os.environ, "LABKIT_STORE": str(store), "LABKIT_PROGRESS": "0"}
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
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/app"
    try:
        wait_for_http(url, proc)
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
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"Debian Chromium not found at {CHROMIUM} (install it with `make browser`)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser):
    """A fresh page; every dialog it opens (alert, confirm) is recorded in ``page.dialogs`` and dismissed."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(30_000)
    page.dialogs = []

    def on_dialog(dialog):
        page.dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    try:
        yield page
    finally:
        page.close()


def n_runs(store, slug: str) -> int:
    return len(RunStore(store).runs(slug)) if store.exists() else 0


def pick_method():
    """The cheapest available method we know how to drive, or skip."""
    available = {m.slug for m in labkit.available_methods()}
    for candidate in CANDIDATES:
        if candidate[0] in available:
            return candidate
    pytest.skip(f"none of {[c[0] for c in CANDIDATES]} is available yet")


def test_gallery_to_training_in_the_browser(server, page, tmp_path):
    url, store = server
    slug, knob, bad, good = pick_method()
    before = n_runs(store, slug)

    page.goto(url)
    page.locator(".labkit-card").first.wait_for()
    assert page.locator(".labkit-card").count() == 30
    assert page.locator(".labkit-card a.open").count() == len(labkit.available_methods())

    page.locator(f'.labkit-card[data-slug="{slug}"] a.open').click()
    page.wait_for_url(f"**?method={slug}")
    train = page.get_by_role("button", name="Train")
    train.wait_for()
    box = page.locator(".bk-input-group", has_text=knob).locator("input")

    box.fill(bad)
    box.press("Enter")
    train.click()
    page.locator(".labkit-error", has_text=f"{knob}={bad} is out of range").wait_for()

    box.fill(good)
    box.press("Enter")
    train.click()
    claims = page.locator(".labkit-claims")
    claims.get_by_text("(headline)").first.wait_for(timeout=60_000)
    page.get_by_text(f"{knob}={good}").wait_for()  # the recent-runs table shows the change
    # the page shows exactly the headline verdict the run recorded, first (not a substring match on "HOLD")
    recorded = RunStore(store).runs(slug).iloc[0]
    shown = claims.get_by_text("(headline)").first.inner_text()  # the claims' <pre>, inside Panel's shadow root
    first_line = shown.strip().splitlines()[0]
    assert first_line.startswith(f"[{recorded['verdict'].upper()}] (headline) "), first_line
    assert not page.locator(".labkit-error").is_visible()
    # the recent-runs headers sit over their columns: header and body cells aligned alike, same left edges
    align = "els => els.map(e => [getComputedStyle(e).textAlign, Math.round(e.getBoundingClientRect().left)])"
    heads = page.locator("table.panel-df thead th").evaluate_all(align)
    cells = page.locator("table.panel-df tbody tr").first.locator("td").evaluate_all(align)
    assert len(heads) == len(cells) == 8 and heads == cells, (heads, cells)
    assert not page.get_by_text("is out of range").first.is_visible()

    shot = tmp_path / f"app_{slug}.png"
    page.screenshot(path=str(shot), full_page=True)
    print(f"screenshot: {shot}")

    runs = RunStore(store).runs(slug)
    assert len(runs) == before + 1 and runs["params"][0][knob] == int(good)
    assert page.dialogs == []


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
    if slug not in {m.slug for m in labkit.available_methods()}:
        pytest.skip("rpo is not available")
    before = n_runs(store, slug)
    page.goto(f"{url}?method={slug}")
    train = page.get_by_role("button", name="Train")
    train.wait_for()
    error = page.locator(".labkit-error")
    n_pairs = page.locator(".bk-input-group", has_text="n_pairs").locator("input")
    seed = page.locator(".bk-input-group", has_text="seed").locator("input")
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
    page.locator(".labkit-claims").get_by_text("(headline)").first.wait_for(timeout=60_000)
    runs = RunStore(store).runs(slug)
    assert len(runs) == before + 1
    assert (runs["params"][0]["n_pairs"], int(runs["seed"][0])) == (120, 3)  # exactly what was typed
    assert not error.is_visible()
    assert page.dialogs == []
