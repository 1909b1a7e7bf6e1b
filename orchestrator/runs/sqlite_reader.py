"""The readers' path into the tracking store: stdlib sqlite3 on the default (sqlite) store, MLflow elsewhere.
`compare` must print within 1.5 s of the interpreter's start; importing MLflow and opening its store alone
takes 2-3 s, so a local sqlite store is read here, by the same answers as `Tracker` (a parity test holds the
two to identical frames on a store MLflow wrote). Details: docs/orchestrator.md#orchestratorrunssqlite_reader.
"""

import contextlib
import sqlite3
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlparse

import pandas as pd

from orchestrator.runs.store_path import check_uri, resolve_uri, sqlite_path

# The tables and columns read, of MLflow's sqlite schema (checked when a store is opened: a store laid out
# otherwise is read through MLflow instead).
LAYOUT = {
    "experiments": {"experiment_id", "name", "lifecycle_stage"},
    "runs": {
        "run_uuid",
        "experiment_id",
        "status",
        "artifact_uri",
        "start_time",
        "end_time",
        "lifecycle_stage",
    },
    "latest_metrics": {"run_uuid", "key", "value", "is_nan"},
    "params": {"run_uuid", "key", "value"},
    "tags": {"run_uuid", "key", "value"},
}
INFO = ("run_id", "experiment_id", "status", "artifact_uri", "start_time", "end_time")
CHUNK = 500  # run ids per `IN (...)`: below every sqlite build's bound on bound parameters


class Reader(Protocol):
    """The reads `status`, `compare` and `verdict` make; `SqliteReader` and `runs.tracking.Tracker` answer."""

    uri: str

    def experiment_id(self, name: str, create: bool = False) -> str | None: ...
    def experiment_name(self, experiment_id: str | None) -> str | None: ...
    def runs(
        self, experiment: str | None, tags: Mapping[str, str] | None = None, status: str | None = None
    ) -> pd.DataFrame: ...
    def download_text(self, run_id: str, artifact: str) -> str: ...


def open_reader(uri: str | None = None) -> Reader:
    """What the readers read through: a `SqliteReader` for an existing sqlite store of MLflow's layout,
    else a checked `runs.tracking.Tracker` (a server, a store still to be created, an unknown layout).
    TrackingError for an unusable store."""
    uri = resolve_uri(uri)
    check_uri(uri)
    db = sqlite_path(uri)
    if db is not None and db.is_file() and db.stat().st_size:
        reader = SqliteReader.of_layout(uri, db)
        if reader is not None:
            return reader
    # Imported here, not at the top: MLflow takes 1.5-3 s to import, which the sqlite path never pays.
    from orchestrator.runs.tracking import Tracker

    tracker = Tracker(uri)
    tracker.check()
    return tracker


class SqliteReader:
    """Reads MLflow's sqlite store read-only, each call in one transaction (a consistent snapshot while a
    run writes). Same methods, arguments and answers as `Tracker`'s reads."""

    def __init__(self, uri: str, db: Path):
        self.uri, self.db_path = uri, db
        self._con: sqlite3.Connection | None = None
        self._tracker = None  # made on first need: an artifact that is not a local file

    @classmethod
    def of_layout(cls, uri: str, db: Path) -> "SqliteReader | None":
        """A reader of `db`, or None when the file lacks a table or column this module reads."""
        reader = cls(uri, db)
        try:
            with reader._snapshot() as con:
                for table, columns in LAYOUT.items():
                    found = {row[1] for row in con.execute(f"PRAGMA table_info({table})")}
                    if not columns <= found:
                        return None
        except sqlite3.DatabaseError:
            return None
        return reader

    @contextlib.contextmanager
    def _snapshot(self) -> Iterator[sqlite3.Connection]:
        """One read transaction on the reader's read-only connection (opened once, on first use)."""
        if self._con is None:
            uri = f"{self.db_path.absolute().as_uri()}?mode=ro"
            self._con = sqlite3.connect(uri, uri=True, isolation_level=None)
        self._con.execute("BEGIN")
        try:
            yield self._con
        finally:
            self._con.execute("COMMIT")

    def experiment_id(self, name: str, create: bool = False) -> str | None:
        """The id of the experiment called `name` (any lifecycle stage, as MLflow's lookup), else None."""
        if create:
            raise ValueError("a reader creates no experiments; use runs.tracking.Tracker")
        with self._snapshot() as con:
            row = con.execute("SELECT experiment_id FROM experiments WHERE name = ?", (name,)).fetchone()
        return None if row is None else str(row[0])

    def experiment_name(self, experiment_id: str | None) -> str | None:
        if experiment_id is None:
            return None
        with self._snapshot() as con:
            row = con.execute(
                "SELECT name FROM experiments WHERE CAST(experiment_id AS TEXT) = ?", (str(experiment_id),)
            ).fetchone()
        return None if row is None else row[0]

    def runs(
        self, experiment: str | None, tags: Mapping[str, str] | None = None, status: str | None = None
    ) -> pd.DataFrame:
        """`Tracker.runs`: active runs, newest first (ties by run id), with MLflow's columns and nulls."""
        where, args = ["r.lifecycle_stage = 'active'"], []
        if experiment is not None:
            exp_id = self.experiment_id(experiment)
            if exp_id is None:
                return pd.DataFrame()  # as Tracker.search for an unknown experiment
            where.append("r.experiment_id = ?")
            args.append(int(exp_id))
        else:  # every active experiment, as mlflow.search_runs(search_all_experiments=True)
            where.append("e.lifecycle_stage = 'active'")
        if status is not None:
            where.append("r.status = ?")
            args.append(status)
        for key, value in (tags or {}).items():
            where.append(
                "EXISTS (SELECT 1 FROM tags t WHERE t.run_uuid = r.run_uuid AND t.key = ? AND t.value = ?)"
            )
            args += [key, value]
        query = (
            "SELECT r.run_uuid, r.experiment_id, r.status, r.artifact_uri, r.start_time, r.end_time "
            "FROM runs r JOIN experiments e ON e.experiment_id = r.experiment_id "
            f"WHERE {' AND '.join(where)} ORDER BY r.start_time DESC, r.run_uuid"
        )
        with self._snapshot() as con:
            rows = con.execute(query, args).fetchall()
            ids = [row[0] for row in rows]
            metrics = _per_run(con, "SELECT run_uuid, key, value, is_nan FROM latest_metrics", ids)
            params = _per_run(con, "SELECT run_uuid, key, value FROM params", ids)
            tags_ = _per_run(con, "SELECT run_uuid, key, value FROM tags", ids)
        return _frame(rows, metrics, params, tags_)

    def download_text(self, run_id: str, artifact: str) -> str:
        """A text artifact of a run (its artifact folder when local, else through MLflow);
        FileNotFoundError when the run has no such artifact."""
        with self._snapshot() as con:
            row = con.execute("SELECT artifact_uri FROM runs WHERE run_uuid = ?", (run_id,)).fetchone()
        if row is None:
            raise FileNotFoundError(f"run {run_id} has no artifact {artifact!r}: no such run in {self.uri}")
        parsed = urlparse(row[0] or "")
        if parsed.scheme not in ("", "file"):  # mlflow-artifacts:, s3:, ...: MLflow knows how to fetch
            return self._mlflow().download_text(run_id, artifact)
        path = Path(unquote(parsed.path)) / artifact
        if not path.is_file():
            raise FileNotFoundError(f"run {run_id} has no artifact {artifact!r} (no file {path})")
        return path.read_text()

    def _mlflow(self):
        if self._tracker is None:
            # Imported here, not at the top: only an artifact stored remotely needs MLflow (1.5-3 s).
            from orchestrator.runs.tracking import Tracker

            self._tracker = Tracker(self.uri)
        return self._tracker


def _per_run(con: sqlite3.Connection, select: str, ids: list[str]) -> dict[str, list[tuple]]:
    """{run id: [(key, value, ...)]} of one of the per-run tables, for the runs `ids`."""
    out: dict[str, list[tuple]] = {}
    for i in range(0, len(ids), CHUNK):
        chunk = ids[i : i + CHUNK]
        marks = ",".join("?" * len(chunk))
        for run_id, *rest in con.execute(f"{select} WHERE run_uuid IN ({marks})", chunk):
            out.setdefault(run_id, []).append(tuple(rest))
    return out


def _frame(rows, metrics, params, tags) -> pd.DataFrame:
    """The frame `mlflow.search_runs(output_format="pandas")` builds from the same runs: the info columns,
    then metrics.* (NaN where a run lacks one), params.* and tags.* (None where absent), built the way
    MLflow builds it (per-value timestamps, then one DataFrame of lists) so that dtypes agree."""
    data: dict[str, list] = {name: [] for name in INFO}
    values: dict[str, dict[str, object]] = {}
    for run_id, exp_id, status, artifact_uri, start, end in rows:
        for name, value in zip(
            INFO, (run_id, str(exp_id), status, artifact_uri, _time(start), _time(end)), strict=True
        ):
            data[name].append(value)
        for key, value, is_nan in metrics.get(run_id, ()):
            values.setdefault(f"metrics.{key}", {})[run_id] = float("nan") if is_nan else float(value)
        for prefix, table in (("params", params), ("tags", tags)):
            for key, value in table.get(run_id, ()):
                values.setdefault(f"{prefix}.{key}", {})[run_id] = value
    for column in sorted(
        values, key=lambda c: (not c.startswith("metrics."), not c.startswith("params."), c)
    ):
        null = float("nan") if column.startswith("metrics.") else None
        data[column] = [values[column].get(run_id, null) for run_id in data["run_id"]]
    return pd.DataFrame(data)


def _time(ms: int | None):
    return pd.to_datetime(ms, unit="ms", utc=True)
