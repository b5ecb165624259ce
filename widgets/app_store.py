"""The run store as the app sees it: whose run is whose, what a preset takes, the newest verdicts.

Runs made in the app are recorded in labkit's :class:`~labkit.core.store.RunStore` like any other run. The
store has no field for who made a run, so the app keeps one small side table in the same SQLite file,
``app_run_users(run_id, user)``: a user is one browser (a random id kept in a cookie). The runs table is left as
labkit writes it; a run of the CLI or a notebook has no user and is listed only under "all users' runs".

:func:`estimated_time` says how long a preset takes: the median of the recorded runs of that method and preset
in this store when there are some, else the quick preset's notebook time in ``BENCHMARKS.md``, else unknown.
"""

from __future__ import annotations

import re
import sqlite3
import statistics
from functools import lru_cache
from pathlib import Path

import pandas as pd

from labkit.core.store import RunStore

USERS_TABLE = """
CREATE TABLE IF NOT EXISTS app_run_users (run_id INTEGER PRIMARY KEY, user TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS app_run_users_user ON app_run_users(user);
"""
BENCHMARKS = Path(__file__).resolve().parents[1] / "BENCHMARKS.md"


class AppRuns:
    """A :class:`RunStore` plus the app's ``app_run_users`` side table."""

    def __init__(self, store: RunStore):
        self.store = store
        with self._connect() as con:
            con.executescript(USERS_TABLE)

    def _connect(self):
        return sqlite3.connect(self.store.path, timeout=30)

    def save(self, result, user: str) -> int:
        """Record ``result`` in the store and note that ``user`` made it; returns the run id."""
        run_id = self.store.save(result)
        with self._connect() as con:
            con.execute("INSERT OR REPLACE INTO app_run_users (run_id, user) VALUES (?, ?)", (run_id, user))
        return run_id

    def users(self) -> dict[int, str]:
        """``{run id: user}`` for the runs made in the app."""
        con = self._connect()
        try:
            return dict(con.execute("SELECT run_id, user FROM app_run_users").fetchall())
        finally:
            con.close()

    def runs(self, slug: str | None, user: str | None = None) -> pd.DataFrame:
        """The runs of ``slug`` (all methods when ``None``), newest first, with a ``user`` column; only ``user``'s
        runs when one is given."""
        runs = self.store.runs(slug)
        users = self.users()
        runs["user"] = runs["id"].map(lambda i: users.get(int(i)))
        if user is not None:
            runs = runs[runs["user"] == user].reset_index(drop=True)
        return runs


def newest_verdicts(store: RunStore) -> dict[str, str]:
    """``{slug: headline verdict of its newest recorded run}`` (methods with no run, or no verdict, left out)."""
    runs = store.runs()
    out: dict[str, str] = {}
    for slug, verdict in zip(runs["method"], runs["verdict"]):  # newest first
        if slug not in out and isinstance(verdict, str):
            out[slug] = verdict
    return out


@lru_cache(maxsize=1)
def benchmark_seconds() -> dict[int, float]:
    """``{method id: quick-preset notebook seconds}`` from BENCHMARKS.md's table ({} when there is none)."""
    try:
        text = BENCHMARKS.read_text(encoding="utf-8")
    except OSError:
        return {}
    out = {}
    for match in re.finditer(r"^\| (\d\d) [^|]*\| ([\d.]+) \|", text, re.MULTILINE):
        out.setdefault(int(match.group(1)), float(match.group(2)))
    return out


def estimated_time(store: RunStore, slug: str, method_id: int | None, preset: str) -> str:
    """How long ``preset`` takes for ``slug``, in words, and where the figure comes from."""
    runs = store.runs(slug)
    times = [float(t) for t, p in zip(runs["duration_s"], runs["preset"]) if p == preset]
    if times:
        return f"about {statistics.median(times):.0f} s (median of {len(times)} recorded run(s) here)"
    if preset == "quick" and method_id in benchmark_seconds():
        return f"about {benchmark_seconds()[method_id]:.0f} s (the quick notebook's measured time, BENCHMARKS)"
    return "unknown (no recorded run of this preset yet)"
