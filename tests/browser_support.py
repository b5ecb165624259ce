"""What every browser test shares: Debian's Chromium (never a downloaded browser), its flags, and where
screenshots go."""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


def require_chromium():
    """Playwright's sync API, or skip the test when Debian's Chromium or Playwright is missing."""
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"Debian Chromium not found at {CHROMIUM} (install it with `make browser`)")
    return pytest.importorskip("playwright.sync_api")


def shots_dir(tmp_path: Path) -> Path:
    """Where screenshots go: docs/screenshots/ when LABKIT_SCREENSHOTS=1, else the test's tmp folder."""
    if os.environ.get("LABKIT_SCREENSHOTS") == "1":
        folder = REPO / "docs" / "screenshots"
        folder.mkdir(parents=True, exist_ok=True)
        return folder
    return tmp_path
