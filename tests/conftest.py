"""Shared pytest settings.

Reference libraries (TRL, torchmetrics, torch-hd, anywidget) are imported with ``importorskip`` so that a user
without the dev extra still gets a green run of the rest. In CI (``CI`` set), a skipped test is a missing install
and fails the run: every reference check must really run there.
"""

import os

import pytest


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session, exitstatus):
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    if os.environ.get("CI") and skipped and exitstatus == 0:
        reporter.write_line(f"CI: {len(skipped)} test(s) skipped — a reference library or browser is missing", red=True)
        session.exitstatus = 1
