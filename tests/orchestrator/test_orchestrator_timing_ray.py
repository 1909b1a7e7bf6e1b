"""Timed work through a real local Ray cluster: exclusive jobs never overlap their timed phases on the node
(the recorded phase intervals do not intersect), and a `timing: shared` run is marked contended."""

import itertools
import os
import textwrap

import mlflow
import pytest

from orchestrator import api
from orchestrator.runs import scheduling
from results import names

pytestmark = pytest.mark.ray

SUITE = """
experiment: {name}
timing: {{dummy: {mode}}}
resources:
  dummy: {{num_cpus: 0.5}}   # CPUs for all four at once: only the timing resource keeps them apart
matrix:
  jobs: [dummy]
  presets: [debug]
  variants: [{{name: a}}, {{name: b, dummy: {{value: 1}}}}, {{name: c, dummy: {{value: 2}}}},
             {{name: d, dummy: {{value: 3}}}}]
dummy: {{steps: 4, sleep_s: 0.25}}
"""


@pytest.fixture(scope="module", autouse=True)
def ray_cluster():
    os.environ["RAY_AUTH_MODE"] = "disabled"
    scheduling.start(num_cpus=2)
    yield
    scheduling.shutdown()


@pytest.fixture()
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("ISOSPARSE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    return uri


def run(tmp_path, store, mode: str):
    path = tmp_path / f"{mode}.yaml"
    path.write_text(textwrap.dedent(SUITE.format(name=mode, mode=mode)))
    report = api.run_suite(str(path), tracking_uri=store, make_report=False)
    assert report.exit_code == 0, {n: j.error for n, j in report.jobs.items()}
    runs = mlflow.search_runs(
        experiment_names=[mode], filter_string=names.tag_filter(names.TAG_RUN_TYPE, "job")
    )
    assert len(runs) == 4
    return runs


def phases(runs) -> list[tuple[float, float]]:
    start = runs[names.metric_column(names.TIMING_PHASE_START_S)]
    end = runs[names.metric_column(names.TIMING_PHASE_END_S)]
    return sorted(zip(start, end, strict=True))


def test_exclusive_jobs_never_overlap_their_timed_phases(tmp_path, store):
    runs = run(tmp_path, store, "exclusive")
    assert scheduling.timing_enforced()
    for (_, end), (next_start, _) in itertools.pairwise(phases(runs)):
        assert end < next_start  # sorted by start: no phase begins before the previous one ended
    assert set(runs[names.metric_column(names.TIMING_OVERLAPPING_JOBS)]) == {0.0}
    assert set(runs[names.tag_column(names.TAG_TIMING)]) == {"exclusive"}
    assert set(runs[names.metric_column(names.TIMING_ENFORCED)]) == {1.0}


def test_shared_jobs_are_marked_contended(tmp_path, store):
    runs = run(tmp_path, store, "shared")
    assert set(runs[names.metric_column(names.TIMING_CONTENDED)]) == {1.0}
    assert set(runs[names.tag_column(names.TAG_TIMING)]) == {"shared"}


def test_an_interleaved_group_runs_in_one_process_and_its_jobs_are_not_each_others_contention(
    tmp_path, store
):
    text = SUITE.format(name="interleaved", mode="interleaved").replace(
        "presets: [debug]", "presets: [debug]\n  families: [dense, l3]"
    )
    path = tmp_path / "interleaved.yaml"
    path.write_text(textwrap.dedent(text))
    report = api.run_suite(str(path), tracking_uri=store, make_report=False)
    assert report.exit_code == 0, {n: j.error for n, j in report.jobs.items()}
    runs = mlflow.search_runs(
        experiment_names=["interleaved"], filter_string=names.tag_filter(names.TAG_RUN_TYPE, "job")
    )
    assert len(runs) == 8  # 4 groups (variants) × 2 families, each its own run
    by_group = runs.groupby(names.tag_column(names.TAG_GROUP))
    assert by_group["metrics.dummy/pid"].nunique().tolist() == [1] * 4  # a group's families: one process
    assert by_group[names.metric_column(names.TIMING_PHASE_START_S)].nunique().tolist() == [1] * 4
    assert set(runs[names.metric_column(names.TIMING_OVERLAPPING_JOBS)]) == {0.0}  # partners do not count
    groups = [(g[names.metric_column(names.TIMING_PHASE_START_S)].iloc[0],
               g[names.metric_column(names.TIMING_PHASE_END_S)].iloc[0]) for _, g in by_group]  # fmt: skip
    for (_, end), (next_start, _) in itertools.pairwise(sorted(groups)):
        assert end < next_start  # the groups themselves ran one after another
