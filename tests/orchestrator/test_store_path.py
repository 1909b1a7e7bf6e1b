"""An sqlite tracking store's path is judged without creating anything (orchestrator.runs.store_path):
each unusable path gets its reason, nothing appears on disk, and a run refuses it before MLflow would
retry it for minutes."""

import os

import pytest

from orchestrator.runs import store_path, tracking


def test_a_fresh_file_in_an_existing_folder_is_fine_and_nothing_is_created(tmp_path):
    assert store_path.problem(tmp_path / "mlflow.db") is None
    assert list(tmp_path.iterdir()) == []


def test_only_the_home_folder_may_be_created(tmp_path):
    home = tmp_path / "home"
    assert store_path.problem(home / "mlflow.db", creatable=home) is None
    deeper = tmp_path / "a" / "b"
    assert "the folder" in store_path.problem(deeper / "mlflow.db", creatable=deeper)
    assert not home.exists() and not (tmp_path / "a").exists()


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda t: (t / "f").write_text("x") and t / "f" / "x.db", "is a file, not a folder"),
        (lambda t: t / "missing" / "x.db", "does not exist; create it first"),
        (lambda t: t, "is a folder; give a file path"),
        (lambda t: (t / "n.db").write_text("not sqlite") and t / "n.db", "is not an sqlite database"),
    ],
)
def test_each_unusable_path_says_why(tmp_path, make, expected):
    assert expected in store_path.problem(make(tmp_path))


def test_an_unwritable_folder_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "access", lambda path, mode: False)  # as a non-root user sees a 0555 folder
    assert store_path.problem(tmp_path / "x.db") == f"the folder {tmp_path} is not writable by this user"


def test_proc_is_refused_at_once_even_for_root(monkeypatch):
    def mlflow_opens_the_store(*args, **kwargs):  # and retries it for 108 s
        raise AssertionError("MLflow was handed the store before it was judged")

    monkeypatch.setattr(tracking, "MlflowClient", mlflow_opens_the_store)
    with pytest.raises(tracking.TrackingError, match="cannot create files in /proc"):
        tracking.Tracker("sqlite:////proc/x.db").check()


def test_isosparse_home_as_a_file_is_named(tmp_path, monkeypatch):
    (tmp_path / "home").write_text("x")
    monkeypatch.setenv("ISOSPARSE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(tracking.TrackingError, match=f"ISOSPARSE_HOME {tmp_path}/home is a file"):
        tracking.check_uri(None)
