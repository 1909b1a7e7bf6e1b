"""Where the tracking store is (ISOSPARSE_HOME, the URI) and whether an sqlite store's path is usable,
decided without creating anything and without importing MLflow: MLflow would create missing folders
anywhere, retry a path it cannot open for 108 s, and end in a traceback. Used by `isosparse validate`,
before a run opens the store, and by the readers' sqlite path (`runs.sqlite_reader`)."""

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote, urlparse

import psutil

SQLITE_HEADER = b"SQLite format 3\x00"


class TrackingError(RuntimeError):
    """The tracking store cannot be used (unreachable server, unwritable directory)."""


def home() -> Path:
    """The project data directory: $ISOSPARSE_HOME, else ./.isosparse."""
    return Path(os.environ.get("ISOSPARSE_HOME") or ".isosparse").expanduser().resolve()


def resolve_uri(uri: str | None = None) -> str:
    """The tracking URI: the argument, else $MLFLOW_TRACKING_URI, else the sqlite file under home()."""
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{home() / 'mlflow.db'}"


def sqlite_path(uri: str) -> Path | None:
    """The database file of an sqlite:/// URI; None for any other store."""
    if urlparse(uri).scheme != "sqlite":
        return None
    return Path(unquote(uri[len("sqlite:///") :])).expanduser()


def check_uri(uri: str | None = None) -> None:
    """TrackingError when the (resolved) store is an sqlite path that cannot be used; creates nothing."""
    uri = resolve_uri(uri)
    db = sqlite_path(uri)
    if db is None:
        return
    default = uri == resolve_uri(None) and not os.environ.get("MLFLOW_TRACKING_URI")
    found = problem(db, creatable=home() if default else None)
    if found:
        raise TrackingError(f"tracking store {uri}: {found}")


def problem(db: Path, creatable: Path | None = None) -> str | None:
    """Why the sqlite file `db` cannot be the store, or None. Only `creatable` (ISOSPARSE_HOME for the
    default store) may be a missing folder, created by the run; any other missing folder is refused."""
    db = db.expanduser().absolute()
    if db.is_dir():
        return f"{db} is a folder; give a file path such as {db / 'mlflow.db'}"
    existing, missing = db.parent, []
    while not existing.exists():
        missing.append(existing)
        existing = existing.parent
    if not existing.is_dir():
        what = "ISOSPARSE_HOME " if creatable is not None and existing == creatable else ""
        return f"{what}{existing} is a file, not a folder, so {db} cannot be created there"
    if missing and missing != [creatable]:
        return f"the folder {db.parent} does not exist; create it first (or give another path)"
    if db.exists():
        if not os.access(db, os.R_OK | os.W_OK):
            return f"{db} is not writable by this user"
        if db.stat().st_size and db.read_bytes()[:16] != SQLITE_HEADER:
            return f"{db} exists and is not an sqlite database; give another path"
    return _unwritable(existing)


def _unwritable(folder: Path) -> str | None:
    """Whether a file can be made in `folder` (sqlite also writes its journal next to the database):
    os.access, then a real anonymous temporary file, since root passes os.access on /proc."""
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"the folder {folder} is not writable by this user"
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        return f"cannot create files in {folder}: {err.strerror or err}"
    return None


def create_atomically(db: Path, create: Callable[[Path], None]) -> None:
    """Make a missing sqlite store complete or not at all: `create(tmp)` builds it under a temporary
    sibling name (MLflow's schema is dozens of migrations, 20 s on a loaded machine), then it is linked
    into place. A Ctrl-C during start-up ends the process at once (orchestrator.runs.interrupts); this
    keeps that from leaving a half-migrated store. Leftovers of processes that died so are removed."""
    if db.exists():
        return
    for old in db.parent.glob(f".{db.name}.*.creating*"):
        pid = old.name[len(db.name) + 2 :].split(".", 1)[0]
        if pid.isdigit() and not psutil.pid_exists(int(pid)):
            old.unlink(missing_ok=True)
    tmp = db.with_name(f".{db.name}.{os.getpid()}.creating")
    try:
        create(tmp)
        with contextlib.suppress(FileExistsError):  # another process made it first: theirs is complete
            os.link(tmp, db)
    finally:
        tmp.unlink(missing_ok=True)
