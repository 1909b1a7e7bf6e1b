"""MLflow tracking (the only module importing mlflow): the store, experiments, one parent run per suite
invocation, one nested run per job attempt, and the FINISHED-fingerprint lookup that makes suites resume.
Details: docs/orchestrator.md#orchestratorrunstracking.
"""

import contextlib
import functools
import json
import logging
import math
import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import yaml
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from orchestrator.runs import interrupts, store_path
from orchestrator.runs.store_path import TrackingError, check_uri, resolve_uri, sqlite_path
from orchestrator.suites.fingerprint import code_version, git_commit, git_dirty
from results import names

# A normal run prints no MLflow INFO lines (system-metrics monitor start/stop, database creation).
logging.getLogger("mlflow").setLevel(logging.WARNING)
# Reports read result.json artifacts back; MLflow's tqdm bar per download would litter the run's output.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

PARAM_VALUE_CHARS = 6000
BATCH = 100  # MLflow accepts at most 100 params / 1000 metrics per log_batch
# MLflow 3's UI opens an experiment without this tag in GenAI mode (an empty Traces overview, the job
# runs under "Evaluations"); "custom_model_development" opens it on its training runs.
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}


def _uncut(method):
    """A store call that a first Ctrl-C does not cut in the middle (see orchestrator.interrupts)."""

    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        with interrupts.deferred():
            return method(*args, **kwargs)

    return wrapper


def flatten(data: Any, prefix: str = "") -> dict[str, str]:
    """{"a": {"b": 1}} → {"a.b": "1"}; lists become JSON; values cut to MLflow's param limit."""
    out: dict[str, str] = {}
    if isinstance(data, Mapping):
        for key, value in data.items():
            out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    else:
        text = json.dumps(data) if isinstance(data, list | tuple) else str(data)
        out[prefix] = text[:PARAM_VALUE_CHARS]
    return out


def _finite(metrics: Mapping[str, Any]) -> dict[str, float]:
    out = {}
    for key, value in metrics.items():
        if isinstance(value, bool | int | float) and not math.isnan(float(value)):
            out[key] = float(value)
    return out


@contextlib.contextmanager
def _fail_fast_http() -> Iterator[None]:
    """No retries and a short timeout while probing a server (MLflow's defaults retry for minutes)."""
    saved = {k: os.environ.get(k) for k in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")}
    os.environ.update({"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"})
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _create_store(db: Path) -> None:
    """MLflow's sqlite schema, made in the file `db` (see store_path.create_atomically)."""
    MlflowClient(tracking_uri=f"sqlite:///{db}").search_experiments(max_results=1)


class Tracker:
    """One tracking store. Construct, then `check()` before submitting anything."""

    def __init__(self, uri: str | None = None):
        self.uri = resolve_uri(uri)
        self.db_path = sqlite_path(self.uri)
        check_uri(self.uri)  # before MlflowClient, which opens (and retries) an sqlite store at once
        if self.db_path is not None:
            self.db_path.parent.mkdir(exist_ok=True)  # ISOSPARSE_HOME; any other folder exists (check_uri)
            store_path.create_atomically(self.db_path, _create_store)  # MlflowClient would make it in place
        self.client = MlflowClient(tracking_uri=self.uri)
        mlflow.set_tracking_uri(self.uri)  # search_runs and the parent run use the global URI
        self._experiments: dict[str, str] = {}

    @_uncut
    def check(self) -> None:
        """Raise TrackingError unless the store answers at once (an unusable sqlite path was refused when
        the Tracker was made: `check_uri`)."""
        try:
            with _fail_fast_http():
                self.client.search_experiments(max_results=1)
        except Exception as err:  # noqa: BLE001 - any failure here means "unusable store"
            raise TrackingError(
                f"tracking store {self.uri} is unreachable: {type(err).__name__}: {err}"
            ) from err

    def artifact_location(self, experiment: str) -> str | None:
        if self.db_path is None:
            return None  # a server decides (its --artifacts-destination)
        return (self.db_path.parent / "mlartifacts" / experiment.replace("/", "_")).as_uri()

    @_uncut
    def experiment_id(self, name: str, create: bool = True) -> str | None:
        if name in self._experiments:
            return self._experiments[name]
        exp = self.client.get_experiment_by_name(name)
        if exp is None:
            if not create:
                return None
            exp_id = self.client.create_experiment(
                name, artifact_location=self.artifact_location(name), tags=EXPERIMENT_TAGS
            )
        else:
            exp_id = exp.experiment_id
            if create and any(exp.tags.get(k) != v for k, v in EXPERIMENT_TAGS.items()):
                for key, value in EXPERIMENT_TAGS.items():  # experiments made by older code
                    self.client.set_experiment_tag(exp_id, key, value)
        self._experiments[name] = exp_id
        return exp_id

    @_uncut
    def experiment_name(self, experiment_id: str | None) -> str | None:
        """The name of an experiment id (status shows names, not ids); None for an unknown id."""
        if experiment_id is None:
            return None
        try:
            return self.client.get_experiment(str(experiment_id)).name
        except MlflowException:
            return None

    # -- runs ------------------------------------------------------------------------------------------
    @_uncut
    def search(self, experiment: str, filter_string: str = "") -> pd.DataFrame:
        exp_id = self.experiment_id(experiment, create=False)
        if exp_id is None:
            return pd.DataFrame()
        mlflow.set_tracking_uri(self.uri)  # global: another Tracker may have set its own since
        return mlflow.search_runs(
            experiment_ids=[exp_id], filter_string=filter_string, output_format="pandas", max_results=100_000
        )

    @_uncut
    def runs(
        self, experiment: str | None, tags: Mapping[str, str] | None = None, status: str | None = None
    ) -> pd.DataFrame:
        """The `mlflow.search_runs` frame of the runs carrying every tag value in `tags` (and `status`),
        in one experiment or, with None, in every active one: what the readers query
        (`runs.sqlite_reader.SqliteReader.runs` answers the same from the sqlite file)."""
        terms = [f"attributes.status = '{status}'"] if status else []
        filter_string = " and ".join(terms + [names.tag_filter(k, v) for k, v in (tags or {}).items()])
        if experiment is not None:
            return self.search(experiment, filter_string)
        mlflow.set_tracking_uri(self.uri)  # global: another Tracker may have set its own since
        return mlflow.search_runs(
            search_all_experiments=True,
            filter_string=filter_string,
            output_format="pandas",
            max_results=100_000,
        )

    @_uncut
    def children(self, parent_id: str) -> pd.DataFrame:
        exp_id = self.client.get_run(parent_id).info.experiment_id
        mlflow.set_tracking_uri(self.uri)  # global: another Tracker may have set its own since
        return mlflow.search_runs(
            experiment_ids=[exp_id],
            filter_string=names.tag_filter(names.TAG_PARENT_RUN, parent_id),
            max_results=100_000,
        )

    @_uncut
    def finished_fingerprints(self, experiment: str) -> dict[str, str]:
        """fingerprint → run id of the FINISHED job runs of the experiment; a run of another config than
        its suite asked for (an OOM-halved retry) also under the suite's fingerprint."""
        runs = self.runs(experiment, {names.TAG_RUN_TYPE: names.RUN_TYPE_JOB}, "FINISHED")
        col = names.tag_column(names.TAG_FINGERPRINT)
        if runs.empty or col not in runs:
            return {}
        out = dict(zip(runs[col], runs["run_id"], strict=True))
        requested = names.tag_column(names.TAG_REQUESTED_FINGERPRINT)
        if requested in runs:
            asked = runs.dropna(subset=[requested])
            out |= {fp: run for fp, run in zip(asked[requested], asked["run_id"], strict=True) if fp}
        return out

    @_uncut
    def finished_run(self, experiment: str, fingerprint: str) -> str | None:
        """The run id of a FINISHED job run with this fingerprint, if any."""
        runs = self.runs(experiment, {names.TAG_FINGERPRINT: fingerprint}, "FINISHED")
        return None if runs.empty else str(runs["run_id"].iloc[0])

    @_uncut
    def start_suite(
        self, experiment: str, name: str, tags: Mapping[str, str], run_name: str | None = None
    ) -> str:
        """The parent run of one suite invocation (named run_name, default the suite's name), with MLflow
        system metrics (sampled in the driver)."""
        exp_id = self.experiment_id(experiment)
        base = {
            names.TAG_RUN_TYPE: "suite",
            names.TAG_SUITE: name,
            names.TAG_CODE_VERSION: code_version(),
            names.TAG_GIT_COMMIT: git_commit() or "",
            names.TAG_GIT_DIRTY: str(git_dirty()),
            names.TAG_DRIVER_PID: str(os.getpid()),
            names.TAG_DRIVER_HOST: os.uname().nodename,
        }
        mlflow.set_tracking_uri(self.uri)
        run = mlflow.start_run(
            experiment_id=exp_id, run_name=run_name or name, tags={**base, **tags}, log_system_metrics=True
        )
        return run.info.run_id

    @_uncut
    def end_suite(self, run_id: str, status: str) -> None:
        active = mlflow.active_run()
        if active is not None and active.info.run_id == run_id:
            mlflow.end_run(status=status)
        else:
            self.client.set_terminated(run_id, status=status)

    @_uncut
    def start_job(self, experiment: str, parent_id: str, job, attempt: int, tags: Mapping[str, str]) -> str:
        """A nested run for one attempt of `job` (a JobSpec): params, tags and config.yaml."""
        exp_id = self.experiment_id(experiment)
        all_tags = {
            "mlflow.parentRunId": parent_id,
            names.TAG_RUN_TYPE: "job",
            names.TAG_JOB: job.name,
            names.TAG_JOB_KIND: job.kind,
            names.TAG_FINGERPRINT: job.fingerprint,
            names.TAG_ATTEMPT: str(attempt),
            names.TAG_CODE_VERSION: code_version(),
            names.TAG_GIT_COMMIT: git_commit() or "",
            **{names.label_tag(k): str(v) for k, v in job.labels.items()},
            **tags,
        }
        if getattr(job, "requested_fingerprint", None):
            all_tags[names.TAG_REQUESTED_FINGERPRINT] = job.requested_fingerprint
        run = self.client.create_run(exp_id, run_name=job.name, tags=all_tags)
        run_id = run.info.run_id
        params = [Param(k, v) for k, v in flatten(job.resolved).items()]
        for i in range(0, len(params), BATCH):
            self.client.log_batch(run_id, params=params[i : i + BATCH])
        self.log_metrics(run_id, {names.MATCH_PREFIX + k: v for k, v in job.match.items()}, 0)
        self.client.log_text(run_id, yaml.safe_dump(job.resolved, sort_keys=False), "config.yaml")
        return run_id

    @_uncut
    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    @_uncut
    def log_metrics(self, run_id: str, metrics: Mapping[str, Any], step: int) -> None:
        now = int(time.time() * 1000)
        batch = [Metric(k, v, now, step) for k, v in _finite(metrics).items()]
        for i in range(0, len(batch), 1000):
            self.client.log_batch(run_id, metrics=batch[i : i + 1000])

    @_uncut
    def finish_job(self, run_id: str, fingerprint: str, experiment: str, completion, step: int = 0) -> str:
        """Record a Completion (runs.outcomes.Completion) and close the run; returns the MLflow status.

        A run whose fingerprint FINISHED meanwhile (another invocation) is closed KILLED, tagged
        `isosparse.duplicate_of`: a fingerprint never has two FINISHED runs."""
        tags = {names.TAG_OUTCOME: completion.outcome}
        if completion.error:
            tags[names.TAG_ERROR] = completion.error[:PARAM_VALUE_CHARS]
        if completion.traceback:
            self.client.log_text(run_id, completion.traceback, "traceback.txt")
        if completion.result_json:
            self._log_result(run_id, completion.result_json, step)
        status = names.OUTCOME_STATUS[completion.outcome]
        if status == "FINISHED":
            other = self.finished_run(experiment, fingerprint)
            if other is not None and other != run_id:
                tags[names.TAG_DUPLICATE_OF], status = other, "KILLED"
        self.set_tags(run_id, tags)
        self.client.set_terminated(run_id, status=status)
        return status

    def _log_result(self, run_id: str, result_json: str, step: int) -> None:
        result = json.loads(result_json)
        self.client.log_text(run_id, result_json, "result.json")
        self.log_metrics(run_id, {**result.get("params", {}), **result.get("metrics", {})}, step)
        info = dict(result.get("info", {}))
        self._log_datasets(run_id, info.pop(names.INFO_DATASETS, None))
        harness = info.pop(names.INFO_LM_EVAL_RESULTS, None)
        if harness:
            self.client.log_text(run_id, harness, "lm_eval_results.json")
        if info:
            self.set_tags(
                run_id, {f"{names.TAG_INFO_PREFIX}{k}": str(v)[:PARAM_VALUE_CHARS] for k, v in info.items()}
            )
        summary = info.get("allocation_summary") or result.get("allocation")
        if summary:
            text = summary if isinstance(summary, str) else json.dumps(summary, indent=2)
            self.client.log_text(run_id, text, "allocation_summary.json")

    def _log_datasets(self, run_id: str, datasets_json: str | None) -> None:
        """Each dataset a job names (its training corpus, every eval set) as an MLflow dataset input: a
        metadata-only dataset with the content digest, so a run says what it was measured on."""
        from mlflow.data.code_dataset_source import CodeDatasetSource
        from mlflow.data.meta_dataset import MetaDataset
        from mlflow.entities import DatasetInput, InputTag
        from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

        inputs = []
        for d in json.loads(datasets_json) if datasets_json else []:
            source = CodeDatasetSource({k: str(v) for k, v in d.items() if k not in ("name", "digest")})
            dataset = MetaDataset(source, name=d["name"], digest=d["digest"][: names.DATASET_DIGEST_CHARS])
            tags = [InputTag(MLFLOW_DATASET_CONTEXT, d["context"])]
            inputs.append(DatasetInput(dataset._to_mlflow_entity(), tags=tags))
        if inputs:
            self.client.log_inputs(run_id, datasets=inputs)

    @_uncut
    def log_text(self, run_id: str, text: str, artifact: str) -> None:
        self.client.log_text(run_id, text, artifact)

    @_uncut
    def kill(self, run_id: str, reason: str) -> None:
        self.set_tags(run_id, {names.TAG_OUTCOME: "cancelled", names.TAG_ERROR: reason})
        self.client.set_terminated(run_id, status="KILLED")

    @_uncut
    def metric_history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        """Every (step, value) logged for `key` in a run, in logging order."""
        return [(m.step, m.value) for m in self.client.get_metric_history(run_id, key)]

    @_uncut
    def log_files(self, run_id: str, files: Mapping[Path, str]) -> None:
        """Upload local files as artifacts of a run, each into its artifact folder ({path: folder}). Works on
        runs of any status (reports go onto finished parent runs)."""
        for path, folder in files.items():
            self.client.log_artifact(run_id, str(path), folder)

    @_uncut
    def download_text(self, run_id: str, artifact: str) -> str:
        """A text artifact of a run; FileNotFoundError when the run has no such artifact."""
        try:
            path = mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=artifact, tracking_uri=self.uri
            )
        except MlflowException as err:
            raise FileNotFoundError(f"run {run_id} has no artifact {artifact!r}: {err}") from err
        return Path(path).read_text()
