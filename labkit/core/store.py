"""Run records in an embedded SQLite store, read by the CLI, the report and the Panel app.

Where: ``$LABKIT_STORE`` if set, else ``~/.labkit/runs.sqlite``. A record is written in one
transaction at the end of a successful run, so a failed or interrupted run leaves nothing behind.

The store is checked when it is opened, before a run starts: a damaged file, a directory, or a folder that
cannot be written is refused with a :class:`StoreError` naming the path. If writing still fails at the end
of a run, the result is not lost: it is saved as a JSON file next to the store (or in the working folder)
and ``labkit import FILE`` adds it to a store later. A run that failed inside a sweep is recorded in
``failures`` with its error, so the sweep's table can show it and a restarted sweep can tell it apart.
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
CREATE TABLE IF NOT EXISTS failures (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    method TEXT NOT NULL, preset TEXT NOT NULL, seed INTEGER NOT NULL, params TEXT NOT NULL,
    error TEXT NOT NULL, created_at REAL NOT NULL
);
"""


class StoreError(ValueError):
    """The run store cannot be opened or written; the message names the path and what to do."""


def default_path() -> Path:
    env = os.environ.get("LABKIT_STORE")
    return Path(env) if env else Path.home() / ".labkit" / "runs.sqlite"


def record_of(result, notebook: str | None = None) -> dict:
    """A run as plain JSON-able data: what the store writes, and what a fallback file holds."""
    hist = result.history
    rows = [list(r) for r in hist[["seed", "step", "series", "metric", "value"]].itertuples(index=False, name=None)]
    return {
        "method": result.method,
        "preset": result.preset,
        "seed": int(result.seed),
        "device": str(result.device),
        "params": result.params,
        "metrics": _plain(result.metrics),
        "claims": [c.to_dict() for c in result.claims],
        "claims_hold": bool(result.claims_hold),
        "verdict": result.verdict.value if result.verdict else None,
        "duration_s": float(result.duration_s),
        "created_at": time.time(),
        "notebook": notebook,
        "history": rows,
    }


class RunStore:
    def __init__(self, path: str | os.PathLike | None = None):
        self.path = Path(path) if path else default_path()
        if self.path.is_dir():
            raise StoreError(f"the run store {self.path} is a directory: set LABKIT_STORE to a file path")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            con = self._connect()
            try:
                with con:
                    con.executescript(SCHEMA)
                    columns = {row[1] for row in con.execute("PRAGMA table_info(runs)")}
                    if "verdict" not in columns:  # a store written before three-way verdicts
                        con.execute("ALTER TABLE runs ADD COLUMN verdict TEXT")
                    if con.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                        raise sqlite3.DatabaseError("integrity check failed")
            finally:
                con.close()
        except (sqlite3.Error, OSError) as err:
            raise StoreError(
                f"the run store {self.path} cannot be used ({err}): move the file away, or set LABKIT_STORE to "
                "another path"
            ) from None

    def _connect(self):
        con = sqlite3.connect(self.path, timeout=30)
        con.execute("PRAGMA foreign_keys = ON")
        return con

    def save(self, result, notebook: str | None = None) -> int:
        """Write one run and its history atomically; returns the run id. If the write fails, the run is
        saved to a JSON file (see :func:`save_fallback`) and a :class:`StoreError` names it."""
        record = record_of(result, notebook)
        try:
            return self.insert(record)
        except (sqlite3.Error, OSError) as err:
            fallback = save_fallback(record, self.path)
            raise StoreError(
                f"could not write the run to the store {self.path} ({err}); the result was saved to {fallback}: "
                f"add it later with `labkit import {fallback}`"
            ) from None

    def insert(self, record: dict) -> int:
        con = self._connect()
        try:
            with con:  # one transaction: all or nothing
                cur = con.execute(
                    "INSERT INTO runs (method, preset, seed, device, params, metrics, claims, claims_hold,"
                    " duration_s, created_at, notebook, verdict) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                    (
                        record["method"],
                        record["preset"],
                        record["seed"],
                        record["device"],
                        json.dumps(record["params"]),
                        json.dumps(record["metrics"]),
                        json.dumps(record["claims"]),
                        int(record["claims_hold"]),
                        record["duration_s"],
                        record["created_at"],
                        record["notebook"],
                        record["verdict"],
                    ),
                )
                run_id = cur.lastrowid
                con.executemany(
                    "INSERT INTO history (run_id, seed, step, series, metric, value) VALUES (?,?,?,?,?,?)",
                    [(run_id, int(a), int(b), c, d, float(e)) for a, b, c, d, e in record["history"]],
                )
        finally:
            con.close()
        return run_id

    def import_file(self, path: str | os.PathLike) -> int:
        """Add a run saved by :func:`save_fallback` to this store; returns its id."""
        try:
            record = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise StoreError(f"cannot read the saved run {path}: {err}") from None
        return self.insert(record)

    def save_failure(self, method: str, preset: str, seed: int, params: dict, error: str) -> int:
        """Record a run that failed at run time (e.g. one cell of a sweep), with its error."""
        con = self._connect()
        try:
            with con:
                cur = con.execute(
                    "INSERT INTO failures (method, preset, seed, params, error, created_at) VALUES (?,?,?,?,?,?)",
                    (method, preset, int(seed), json.dumps(params, sort_keys=True), error, time.time()),
                )
                return cur.lastrowid
        finally:
            con.close()

    def find(self, method: str, preset: str, seed: int, params: dict) -> int | None:
        """The id of the newest recorded run of ``method`` with exactly these params and seed, or None."""
        runs = self.runs(method)
        for _, row in runs.iterrows():
            if row["preset"] == preset and int(row["seed"]) == int(seed) and row["params"] == params:
                return int(row["id"])
        return None

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

    def failures(self, method: str | None = None):
        import pandas as pd

        query = "SELECT * FROM failures" + (" WHERE method = ?" if method else "") + " ORDER BY id DESC"
        con = self._connect()
        try:
            frame = pd.read_sql_query(query, con, params=(method,) if method else ())
        finally:
            con.close()
        frame["params"] = frame["params"].map(json.loads)
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


def save_fallback(record: dict, store_path: Path) -> Path:
    """Write ``record`` as JSON next to the store, or in the working folder if that fails; returns the path."""
    name = f"labkit-run-{record['method']}-s{record['seed']}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.json"
    text = json.dumps(record, allow_nan=True)
    for folder in (store_path.parent, Path.cwd()):
        try:
            target = folder / name
            target.write_text(text, encoding="utf-8")
            return target
        except OSError:
            continue
    raise StoreError(f"could not write the run anywhere (tried {store_path.parent} and {Path.cwd()})")


def _plain(values: dict) -> dict:
    return {
        k: (float(v) if hasattr(v, "__float__") and not isinstance(v, (bool, str)) else v) for k, v in values.items()
    }
