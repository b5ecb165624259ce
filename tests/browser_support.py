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


def with_interactive_figures(nb: dict) -> dict:
    """A committed notebook (JSON) with each figure image replaced by plotly's interactive output, as a notebook
    run in a live kernel (``labkit run``) has it; the committed form keeps images (``labkit.viz.static_figures``)."""
    import json

    import plotly.graph_objects as go
    import plotly.io as pio

    figure = go.Figure(go.Scatter(x=[0, 1, 2], y=[0.1, 0.3, 0.2], name="RPO η=1"))
    bundle = json.loads(json.dumps(pio.renderers["plotly_mimetype"].to_mimebundle(figure.to_dict())))
    outputs = [o for cell in nb["cells"] for o in cell.get("outputs", []) if "image/png" in o.get("data", {})]
    assert outputs, "the notebook has no figure"
    for output in outputs:
        output["data"] = dict(bundle)
    return nb
