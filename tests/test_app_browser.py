"""The Panel app in a real browser: ``panel serve widgets/app.py`` driven by headless Debian Chromium.

Opens the gallery, follows an available method's card, types a bad value (the error alert shows),
then a good one, trains, and waits for the claim checks and the recorded run. A screenshot of the
method page is written to pytest's tmp folder (its path is printed) to judge the layout by eye.
"""

import os
import socket
import subprocess
import sys
import time
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


@pytest.fixture
def server(tmp_path):
    """``panel serve widgets/app.py`` on a free port with a temporary run store; yields (url, store path)."""
    port = free_port()
    store = tmp_path / "runs.sqlite"
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


@pytest.fixture
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"Debian Chromium not found at {CHROMIUM} (install it with `make browser`)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def pick_method():
    """The cheapest available method we know how to drive, or skip."""
    available = {m.slug for m in labkit.available_methods()}
    for candidate in CANDIDATES:
        if candidate[0] in available:
            return candidate
    pytest.skip(f"none of {[c[0] for c in CANDIDATES]} is available yet")


def test_gallery_to_training_in_the_browser(server, browser, tmp_path):
    url, store = server
    slug, knob, bad, good = pick_method()
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(30_000)

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
    page.get_by_text(f"{knob}={bad} is out of range").wait_for()

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
    assert not page.get_by_text("is out of range").is_visible()

    shot = tmp_path / f"app_{slug}.png"
    page.screenshot(path=str(shot), full_page=True)
    print(f"screenshot: {shot}")

    runs = RunStore(store).runs(slug)
    assert len(runs) == 1 and runs["params"][0][knob] == int(good)
