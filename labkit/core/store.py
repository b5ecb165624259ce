"""Run records in an embedded SQLite store, read by the CLI, the report and the Panel app.

Where: ``$LABKIT_STORE`` if set, else ``~/.labkit/runs.sqlite``. A record is written in one
transaction at the end of a successful run, so a failed or interrupted run leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    method TEXT NOT NULL, preset TEXT NOT NULL, seed INTEGER NOT NULL, device TEXT NOT NULL,
    params TEXT NOT NULL, metrics TEXT NOT NULL, claims TEXT NOT NULL,
    claims_hold INTEGER NOT NULL, duration_s REAL NOT NULL, created_at REAL NOT NULL,
    notebook TEXT, verdict TEXT
);
CREATE TABLE IF NOT EXISTS history (
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    seed INTEGER, step INTEGER, series TEXT, metric TEXT, value REAL
);
CREATE INDEX IF NOT EXISTS history_run ON history(run_id);
"""


def default_path() -> Path:
    env = os.environ.get("LABKIT_STORE")
    return Path(env) if env else Path.home() / ".labkit" / "runs.sqlite"


class RunStore:
    def __init__(self, path: str | os.PathLike | None = None):
        self.path = Path(path) if path else default_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        con = self._connect()
        try:
            with con:
                con.executescript(SCHEMA)
                columns = {row[1] for row in con.execute("PRAGMA table_info(runs)")}
                if "verdict" not in columns:  # a store written before three-way verdicts
                    con.execute("ALTER TABLE runs ADD COLUMN verdict TEXT")
        finally:
            con.close()

    def _connect(self):
        con = sqlite3.connect(self.path, timeout=30)
        con.execute("PRAGMA foreign_keys = ON")
        return con

    def save(self, result, notebook: str | None = None) -> int:
        """Write one run and its history atomically; returns the run id."""
        hist = result.history
        rows = list(hist[["seed", "step", "series", "metric", "value"]].itertuples(index=False, name=None))
        con = self._connect()
        try:
            with con:  # one transaction: all or nothing
                cur = con.execute(
                    "INSERT INTO runs (method, preset, seed, device, params, metrics, claims, claims_hold,"
                    " duration_s, created_at, notebook, verdict) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                    (
                        result.method,
                        result.preset,
                        result.seed,
                        result.device,
                        json.dumps(result.params),
                        json.dumps(_plain(result.metrics)),
                        json.dumps([c.to_dict() for c in result.claims]),
                        int(result.claims_hold),
                        float(result.duration_s),
                        time.time(),
                        notebook,
                        result.verdict.value if result.verdict else None,
                    ),
                )
                run_id = cur.lastrowid
                con.executemany(
                    "INSERT INTO history (run_id, seed, step, series, metric, value) VALUES (?,?,?,?,?,?)",
                    [(run_id, int(a), int(b), c, d, float(e)) for a, b, c, d, e in rows],
                )
        finally:
            con.close()
        return run_id

    def runs(self, method: str | None = None):
        """All runs (newest first) as a DataFrame; ``params``/``metrics``/``claims`` decoded; ``verdict`` is the
        headline claim's three-way verdict (``holds``/``does not hold``/``inconclusive``, None for old records)."""
        import pandas as pd

        query = "SELECT * FROM runs" + (" WHERE method = ?" if method else "") + " ORDER BY id DESC"
        con = self._connect()
        try:
            frame = pd.read_sql_query(query, con, params=(method,) if method else ())
        finally:
            con.close()
        for col in ("params", "metrics", "claims"):
            frame[col] = frame[col].map(json.loads)
        frame["claims_hold"] = frame["claims_hold"].astype(bool)
        return frame

    def history(self, run_id: int):
        import pandas as pd

        con = self._connect()
        try:
            return pd.read_sql_query(
                "SELECT seed, step, series, metric, value FROM history WHERE run_id = ? ORDER BY rowid",
                con,
                params=(run_id,),
            )
        finally:
            con.close()


def _plain(values: dict) -> dict:
    return {
        k: (float(v) if hasattr(v, "__float__") and not isinstance(v, (bool, str)) else v) for k, v in values.items()
    }
