"""The durable journal of a run: SQLite in WAL mode, one transaction per step transition.

The journal is what makes a run resumable: every step's start and end is committed before
the next begins. WAL with synchronous=NORMAL survives a killed or crashed process with every
committed transition intact; after a power cut the last transitions may be missing, which
resume reconciles against the instruments (datasets on disk, cycler data files).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

STATUSES = ("pending", "running", "done", "failed", "skipped")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS steps (
    idx INTEGER PRIMARY KEY, lane TEXT NOT NULL, kind TEXT NOT NULL, label TEXT NOT NULL,
    estimate_s REAL NOT NULL, status TEXT NOT NULL DEFAULT 'pending', attempts INTEGER NOT NULL DEFAULT 0,
    started_at REAL, ended_at REAL, outcome TEXT);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, idx INTEGER, at REAL NOT NULL, status TEXT NOT NULL, detail TEXT);
CREATE TABLE IF NOT EXISTS datasets (
    dataset TEXT NOT NULL, expno INTEGER NOT NULL, idx INTEGER NOT NULL, kind TEXT NOT NULL, path TEXT NOT NULL,
    temperature_k REAL, sample_temperature_k REAL, setpoint_k REAL, params TEXT NOT NULL,
    status TEXT NOT NULL, note TEXT, at REAL NOT NULL, PRIMARY KEY (dataset, expno));
"""


@dataclass(frozen=True)
class StepRecord:
    """One step as the journal knows it."""

    index: int
    lane: str
    kind: str
    label: str
    estimate_s: float
    status: str
    attempts: int
    started_at: float | None
    ended_at: float | None
    outcome: dict[str, Any]


class Journal:
    """Thread-safe access to a run's journal file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _tx(self, statements: Iterable[tuple[str, tuple[Any, ...]]]) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for sql, params in statements:
                    self._db.execute(sql, params)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def set_meta(self, **values: Any) -> None:
        self._tx(("INSERT OR REPLACE INTO meta VALUES (?, ?)", (k, json.dumps(v))) for k, v in values.items())

    def meta(self) -> dict[str, Any]:
        with self._lock:
            rows = self._db.execute("SELECT key, value FROM meta").fetchall()
        return {k: json.loads(v) for k, v in rows}

    def add_steps(self, steps: Iterable[Any]) -> None:
        """Register plan steps as pending (existing rows are kept: resume never forgets)."""
        self._tx(
            ("INSERT OR IGNORE INTO steps (idx, lane, kind, label, estimate_s) VALUES (?, ?, ?, ?, ?)",
             (s.index, s.lane, s.kind, s.label, s.estimate_s))
            for s in steps
        )

    def set_estimates(self, estimates: list[tuple[int, float]]) -> None:
        """Revise steps' time estimates (a pending EXSY point's, once the T1 that sets its D1 is measured)."""
        self._tx(("UPDATE steps SET estimate_s = ? WHERE idx = ?", (estimate_s, index)) for index, estimate_s in estimates)

    def transition(self, index: int, status: str, *, at: float, detail: dict[str, Any] | None = None) -> None:
        """Record a step's new status (and its detail: readings, outcome) in one transaction."""
        self.transitions([(index, status, detail)], at=at)

    def transitions(self, changes: list[tuple[int, str, dict[str, Any] | None]], *, at: float) -> None:
        """Several step transitions in one transaction (a step's end with the next one's start)."""
        statements: list[tuple[str, tuple[Any, ...]]] = []
        for index, status, detail in changes:
            if status not in STATUSES:
                raise ValueError(f"unknown step status {status!r}")
            detail_json = json.dumps(detail or {}, default=str)
            statements.append(("INSERT INTO events (idx, at, status, detail) VALUES (?, ?, ?, ?)",
                               (index, at, status, detail_json)))
            if status == "running":
                statements.append(("UPDATE steps SET status=?, attempts=attempts+1, started_at=?, ended_at=NULL "
                                   "WHERE idx=?", (status, at, index)))
            elif status == "pending":
                statements.append(("UPDATE steps SET status=? WHERE idx=?", (status, index)))
            else:
                statements.append(("UPDATE steps SET status=?, ended_at=?, outcome=? WHERE idx=?",
                                   (status, at, detail_json, index)))
        self._tx(statements)

    def event(self, index: int | None, status: str, *, at: float, detail: dict[str, Any] | None = None) -> None:
        """A note in the journal that does not change a step's status (an excursion, a retry, a partial dataset)."""
        self._tx([("INSERT INTO events (idx, at, status, detail) VALUES (?, ?, ?, ?)",
                   (index, at, status, json.dumps(detail or {}, default=str)))])

    def record_dataset(self, *, dataset: str, expno: int, index: int, kind: str, path: str, temperature_k: float,
                       params: dict[str, Any], status: str, at: float, sample_temperature_k: float | None = None,
                       setpoint_k: float | None = None, note: str = "") -> None:
        """Link a TopSpin dataset to its step (any kind; its own parameters in `params`), status running..failed."""
        self._tx([(
            "INSERT OR REPLACE INTO datasets (dataset, expno, idx, kind, path, temperature_k, sample_temperature_k, "
            "setpoint_k, params, status, note, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (dataset, expno, index, kind, path, temperature_k, sample_temperature_k, setpoint_k,
             json.dumps(params, default=str), status, note, at),
        )])

    def datasets(self) -> list[dict[str, Any]]:
        """Every dataset record, its `params` decoded (e.g. {"mixing_time_s": 0.1} for an EXSY point)."""
        with self._lock:
            cursor = self._db.execute("SELECT * FROM datasets ORDER BY idx, at")
            names = [d[0] for d in cursor.description]
            rows = [dict(zip(names, row)) for row in cursor.fetchall()]
        for row in rows:
            row["params"] = json.loads(row["params"] or "{}")
        return rows

    def steps(self) -> list[StepRecord]:
        with self._lock:
            rows = self._db.execute(
                "SELECT idx, lane, kind, label, estimate_s, status, attempts, started_at, ended_at, outcome FROM steps ORDER BY idx"
            ).fetchall()
        return [StepRecord(index=row[0], lane=row[1], kind=row[2], label=row[3], estimate_s=row[4], status=row[5],
                           attempts=row[6], started_at=row[7], ended_at=row[8],
                           outcome=json.loads(row[9]) if row[9] else {}) for row in rows]

    def events(self, limit: int = 20) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, idx, at, status, detail FROM events ORDER BY id DESC LIMIT ?", (limit,)
            ).fetchall()
        return [{"id": r[0], "index": r[1], "at": r[2], "status": r[3], "detail": json.loads(r[4] or "{}")} for r in rows][::-1]

    def last_time(self) -> float | None:
        with self._lock:
            row = self._db.execute("SELECT MAX(at) FROM events").fetchone()
        return row[0]
