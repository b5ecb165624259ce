"""Shared pytest settings.

Reference libraries (TRL, torchmetrics, torch-hd, anywidget) are imported with ``importorskip`` so that a user
without the dev extra still gets a green run of the rest. In CI (``CI`` set), a skipped test is a missing install
and fails the run: every reference check must really run there.

Whatever a test starts it stops. Every process started under this pytest run inherits ``LABKIT_TEST_RUN``; when the
run ends, any such process still alive (a kernel, Ray, Flower, Panel, Chromium, a Dask worker...) is killed, named,
and fails the run (``tools/leftovers.py``), so a leftover can never keep ``make test`` waiting.
"""

import os
import sys
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from leftovers import MARKER, stop_leftovers  # noqa: E402

# set (not inherited) by every pytest process: its own descendants carry it, its ancestors never do
RUN_ID = os.environ[MARKER] = f"pytest-{os.getpid()}-{uuid.uuid4().hex[:8]}"


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session, exitstatus):
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if hasattr(session.config, "workerinput"):
        return
    killed = stop_leftovers(RUN_ID)
    if killed and reporter:
        reporter.write_line(f"{len(killed)} process(es) left running by the tests were killed:", red=True)
        for pid, cmd in killed.items():
            reporter.write_line(f"  {pid} {cmd}", red=True)
    if killed:
        session.exitstatus = 1
    skipped = reporter.stats.get("skipped", []) if reporter else []
    if os.environ.get("CI") and skipped and session.exitstatus == 0:
        reporter.write_line(f"CI: {len(skipped)} test(s) skipped — a reference library or browser is missing", red=True)
        session.exitstatus = 1
