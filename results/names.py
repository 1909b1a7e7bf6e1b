"""Every MLflow name isosparse uses (tags, params, metric keys), defined once: the orchestrator writes with
these constants (tracking, api) and reads with them (status, compare, reporting, planning), and `results.load`
reads them from an `mlflow.search_runs` DataFrame (columns "tags.<name>", "params.<name>", "metrics.<name>").
Plain string constants only, importable without pandas.
Details: docs/results.md#resultsnames."""

TAG_PREFIX = "isosparse."
TAG_RUN_TYPE = TAG_PREFIX + "kind"
RUN_TYPE_JOB = "job"
RUN_TYPE_SUITE = "suite"
TAG_JOB = TAG_PREFIX + "job"  # the job's name ("train/l3/tiny/base/s0")
TAG_JOB_KIND = TAG_PREFIX + "job_kind"
TAG_SUITE = TAG_PREFIX + "suite"
TAG_FAMILY = TAG_PREFIX + "family"
TAG_PRESET = TAG_PREFIX + "preset"
TAG_GROUP = TAG_PREFIX + "group"
TAG_SEED = TAG_PREFIX + "seed"
TAG_VARIANT = TAG_PREFIX + "variant"
TAG_HARDWARE = TAG_PREFIX + "hardware"
TAG_INFO_PREFIX = TAG_PREFIX + "info."  # + a BenchResult.info key
TAG_INFO_HARDWARE = TAG_INFO_PREFIX + "hardware"
TAG_FINGERPRINT = TAG_PREFIX + "fingerprint"
# the suite's fingerprint of a run whose config differs from what the suite asked (an OOM-halved retry):
# a rerun of the suite finds the job finished under it
TAG_REQUESTED_FINGERPRINT = TAG_PREFIX + "requested_fingerprint"
TAG_MATCH_ERROR = TAG_PREFIX + "match_error"
TAG_OUTCOME = TAG_PREFIX + "outcome"
TAG_ERROR = TAG_PREFIX + "error"
TAG_ATTEMPT = TAG_PREFIX + "attempt"
TAG_DUPLICATE_OF = TAG_PREFIX + "duplicate_of"
TAG_CODE_VERSION = TAG_PREFIX + "code_version"
TAG_GIT_COMMIT = TAG_PREFIX + "git_commit"
TAG_GIT_DIRTY = TAG_PREFIX + "git_dirty"
TAG_DRIVER_PID = TAG_PREFIX + "driver_pid"
TAG_DRIVER_HOST = TAG_PREFIX + "driver_host"
TAG_RAY_NODE = TAG_PREFIX + "ray_node"
TAG_HOST = TAG_PREFIX + "host"
TAG_SUITE_PATH = TAG_PREFIX + "suite_path"
TAG_N_JOBS = TAG_PREFIX + "n_jobs"
TAG_N_SKIPPED = TAG_PREFIX + "n_skipped"
TAG_PARENT_RUN = "mlflow.parentRunId"  # set by MLflow for nested runs
# The parent run's record of its expanded jobs (name, kind, fingerprint, labels, match): what readers read.
SUITE_JOBS = "suite_jobs.json"


def label_tag(label: str) -> str:
    """A JobSpec label ("family", "preset", "variant", "seed", "group") → its tag (TAG_FAMILY, ...)."""
    return TAG_PREFIX + label


def tag_column(name: str) -> str:
    """A tag → its `mlflow.search_runs` column ("tags.isosparse.kind")."""
    return f"tags.{name}"


def tag_filter(name: str, value: str) -> str:
    """An MLflow search filter on a tag's value: tags.`isosparse.kind` = 'job'."""
    return f"tags.`{name}` = '{value}'"


def metric_column(key: str) -> str:
    return f"metrics.{key}"


def param_column(key: str) -> str:
    return f"params.{key}"


# The failure classes (tag isosparse.outcome) and the MLflow status each closes a job run with.
OUTCOME_STATUS = {
    "finished": "FINISHED",
    "failed": "FAILED",
    "oom": "FAILED",
    "infra": "FAILED",
    "cancelled": "KILLED",
}
OUTCOMES = tuple(OUTCOME_STATUS)

# Accounting keys (BenchResult.params); logged as metrics (preferred) or params.
PARAMS_ACTIVE = "params_active"
PARAMS_TOTAL = "params_total"
SPARSITY = "sparsity"

# Params: the resolved config the worker ran (JobSpec.resolved: {"kind", "job": the job config with its
# resolved model}), flattened with "." between keys; the ablation tables read these.
PARAM_JOB = "job"  # prefix of the job config's params
PARAM_MODEL = PARAM_JOB + ".model"  # prefix of the resolved model's params
PARAM_BATCH_SIZE = PARAM_JOB + ".batch_size"
PARAM_SEQ_LEN = PARAM_JOB + ".seq_len"
PARAM_DATA_SEQ_LEN = PARAM_JOB + ".data.seq_len"
PARAM_L3_ALLOCATION = PARAM_MODEL + ".l3.allocation"
PARAM_L3_CAP = PARAM_MODEL + ".l3.cap"
PARAM_L3_TIED = PARAM_MODEL + ".l3.tied"
PARAM_L3_POSITIONS = PARAM_MODEL + ".l3.positions"
PARAM_MOE_NUM_EXPERTS = PARAM_MODEL + ".moe.num_experts"
PARAM_MOE_TOP_K = PARAM_MODEL + ".moe.top_k"

# Planned (iso-sparse match) numbers the orchestrator logs as metrics MATCH_PREFIX + JobSpec.match key.
MATCH_PREFIX = "match/"
MATCH_ACTIVE_REL_ERR = MATCH_PREFIX + "active_rel_err"
MATCH_TOTAL_REL_ERR = MATCH_PREFIX + "total_rel_err"

# Metric keys (DESIGN.md "Metrics every job records").
TRAIN_TOKENS_PER_S = "train/tokens_per_s"
TRAIN_STEP_TIME_S = "train/step_time_s"
TRAIN_STEP_TIME_P10_S = "train/step_time_s_p10"
TRAIN_STEP_TIME_P90_S = "train/step_time_s_p90"
TRAIN_MFU = "train/mfu"
TRAIN_LOSS = "train/loss"
INFER_PREFILL_TOKENS_PER_S = "infer/prefill_tokens_per_s"
INFER_DECODE_TOKENS_PER_S = "infer/decode_tokens_per_s"
INFER_TTFT_S = "infer/ttft_s"
INFER_OFFLOAD_DECODE_TOKENS_PER_S = "infer/offload/decode_tokens_per_s"
INFER_OFFLOAD_DECODE_RATIO = "infer/offload_decode_ratio"
MEM_PEAK_DEVICE_BYTES = "mem/peak_device_bytes"
MEM_PEAK_HOST_BYTES = "mem/peak_host_bytes"
MEM_PARAMS_BYTES = "mem/params_bytes"  # per category: mem/params_bytes/<category>
MEM_OPTIMIZER_BYTES = "mem/optimizer_bytes"
# Floors (workloads.jobs.floors): floor time / measured time of the speed metric beside it (1 = the probed
# hardware's limit; per batch size /bs<B> for infer) and the probe taken at job start.
TRAIN_FLOOR_FRAC = "train/floor_frac"
INFER_PREFILL_FLOOR_FRAC = "infer/prefill_floor_frac"
INFER_DECODE_FLOOR_FRAC = "infer/decode_floor_frac"
PROBE_READ_BYTES_PER_S = "probe/read_bytes_per_s"
PROBE_GEMM_FLOP_PER_S = "probe/gemm_flop_per_s"
LB_EXPERT_MAX_OVER_MEAN = "lb/expert_tokens_max_over_mean"
LB_EXPERT_CV = "lb/expert_tokens_cv"
LB_DROPPED_TOKEN_FRAC = "lb/dropped_token_frac"
LB_AUX_LOSS = "lb/aux_loss"
LB_L3_ROWS_PER_TOKEN_MEAN = "lb/l3_rows_per_token_mean"
LB_L3_ROWS_PER_TOKEN_MAX = "lb/l3_rows_per_token_max"
LB_L3_UNIQUE_ROWS_PER_STEP = "lb/l3_unique_rows_per_step"
LB_L3_BYTES_PER_TOKEN = "lb/l3_bytes_per_token"
LB_SCONE_MATCH_RATE = "lb/scone_match_rate"  # SCONE: positions whose input is an f-gram embedding
LB_SCONE_MEAN_MATCH_LEN = "lb/scone_mean_match_len"
MEM_FGRAM_TABLE_BYTES = "mem/fgram_table_bytes"  # SCONE's F: storage, never parameters
TRAIN_FLOPS_PER_TOKEN = "train/flops_per_token"  # SCONE: the main model + A_fgram
TRAIN_FLOPS_PER_TOKEN_MAIN = "train/flops_per_token_main"  # SCONE: the main model alone (= its dense)
# Timed work (issue 26): what shared the node during a job's timed phase (workloads.jobs.contention) and
# the orchestrator's verdict on it; TAG_TIMING is the suite's timing mode of the job.
TIMING_PHASE_START_S = "timing/phase_start_s"  # epoch seconds
TIMING_PHASE_END_S = "timing/phase_end_s"
TIMING_LOAD_AVG_1M = "timing/load_avg_1m"
TIMING_OTHER_CPU_CORES = "timing/other_cpu_cores"  # other processes' CPU-seconds per second of the phase
TIMING_NODE_CPUS = "timing/node_cpus"
TIMING_THREADS = "timing/threads"
TIMING_OTHER_DEVICE_PROCS = "timing/other_device_procs"
TIMING_OVERLAPPING_JOBS = "timing/overlapping_jobs"  # other jobs on the node during the phase
TIMING_ENFORCED = "timing/enforced"  # 1: the cluster's nodes declare the timing resource
TIMING_CONTENDED = "timing/contended"  # 1: speed numbers marked "~" in compare and the report
INFER_VS_DENSE_DECODE = "infer/vs_dense/decode_tokens_per_s"  # + /bs<B>: interleaved, one process
# its spread over the rounds of alternating generations the ratio is taken in (workloads.jobs.rounds)
INFER_VS_DENSE_DECODE_P10 = INFER_VS_DENSE_DECODE + "_p10"
INFER_VS_DENSE_DECODE_P90 = INFER_VS_DENSE_DECODE + "_p90"
TAG_TIMING = TAG_PREFIX + "timing"  # "exclusive" | "shared" | "interleaved"
EVAL_VAL_LOSS = "eval/val_loss"
EVAL_VAL_PPL = "eval/val_ppl"
# Bits per UTF-8 byte of the validation text: val_loss / (ln 2 · DATA_VAL_BYTES_PER_TOKEN). Loss per token
# depends on the tokenizer; bits per byte does not, so rows with different bytes per token compare by it.
EVAL_VAL_BPB = "eval/val_bpb"
DATA_VAL_BYTES_PER_TOKEN = "data/val_bytes_per_token"
DATA_REPLACED_CHARS = "data/replaced_chars"  # characters of the corpus that did not decode (became U+FFFD)
# Logged by jobs, kept as extra columns (not in METRICS): tests/workloads/jobs/test_metric_names.py holds
# every key literal in workloads/ to this module.
TRAIN_LR = "train/lr"
TRAIN_FGRAM_TOKENS_PER_TOKEN = "train/fgram_tokens_per_token"  # SCONE: f-gram tokens A_fgram ran per token
MEM_OPTIMIZER_BYTES_PREFIX = MEM_OPTIMIZER_BYTES + "/"  # + a parameter category
INFER_OFFLOAD_WAIT_S = "infer/offload_wait_s"
INFER_OFFLOAD_PREFILL_WAIT_S = "infer/offload_prefill_wait_s"
INFER_SCONE_LOOKUP_US_PER_TOKEN = "infer/scone_lookup_us_per_token"
LB_DROPPED_ROUTE_FRAC = "lb/dropped_route_frac"
MEM_OFFLOAD_HOST_TABLE_BYTES = "mem/offload/host_table_bytes"
MEM_BALLAST_BYTES = "mem/ballast_bytes"  # the dummy job's

# Downstream tasks (the eval job, lm-evaluation-harness): LM_EVAL_PREFIX + "<task>/<metric>", and the
# standard error "<task>/<metric>_stderr" where lm-eval computes one (acc, acc_norm).
LM_EVAL_PREFIX = "lm_eval/"


def lm_eval_key(task: str, metric: str) -> str:
    """ "arc_easy", "acc" -> "lm_eval/arc_easy/acc"."""
    return f"{LM_EVAL_PREFIX}{task}/{metric}"


# BenchResult.info keys the orchestrator logs other than as tags: the datasets a job was measured on (JSON
# list → MLflow dataset inputs, digests cut to DATASET_DIGEST_CHARS) and lm-eval's raw results (artifact).
INFO_DATASETS = "datasets"
INFO_LM_EVAL_RESULTS = "lm_eval_results"
DATASET_DIGEST_CHARS = 36  # MLflow's dataset digest column holds 36 characters

PARAM_CATEGORIES = ("dense", "l3_tables", "experts", "fgram_table", "fgram_model", "embeddings")

# Keys that are also logged per batch size with the suffix BATCH_SUFFIX + str(batch size),
# e.g. "infer/decode_tokens_per_s/bs8".
PER_BATCH_SIZE = (
    INFER_PREFILL_TOKENS_PER_S,
    INFER_DECODE_TOKENS_PER_S,
    INFER_TTFT_S,
    INFER_PREFILL_FLOOR_FRAC,
    INFER_DECODE_FLOOR_FRAC,
    INFER_OFFLOAD_DECODE_TOKENS_PER_S,
    INFER_OFFLOAD_DECODE_RATIO,
)
BATCH_SUFFIX = "/bs"


def batch_size_key(key: str, batch_size: int) -> str:
    """ "infer/decode_tokens_per_s", 8 -> "infer/decode_tokens_per_s/bs8"."""
    return f"{key}{BATCH_SUFFIX}{batch_size}"


def params_bytes_key(category: str) -> str:
    """ "l3_tables" -> "mem/params_bytes/l3_tables"."""
    return f"{MEM_PARAMS_BYTES}/{category}"


# Every metric a schema row carries, present as a column (NA when the job did not log it).
METRICS = (
    TRAIN_TOKENS_PER_S,
    TRAIN_STEP_TIME_S,
    TRAIN_STEP_TIME_P10_S,
    TRAIN_STEP_TIME_P90_S,
    TRAIN_MFU,
    TRAIN_FLOOR_FRAC,
    TRAIN_LOSS,
    INFER_PREFILL_TOKENS_PER_S,
    INFER_DECODE_TOKENS_PER_S,
    INFER_TTFT_S,
    MEM_PEAK_DEVICE_BYTES,
    MEM_PEAK_HOST_BYTES,
    *(params_bytes_key(c) for c in PARAM_CATEGORIES),
    MEM_OPTIMIZER_BYTES,
    LB_EXPERT_MAX_OVER_MEAN,
    LB_EXPERT_CV,
    LB_DROPPED_TOKEN_FRAC,
    LB_AUX_LOSS,
    LB_L3_ROWS_PER_TOKEN_MEAN,
    LB_L3_ROWS_PER_TOKEN_MAX,
    LB_L3_UNIQUE_ROWS_PER_STEP,
    LB_L3_BYTES_PER_TOKEN,
    LB_SCONE_MATCH_RATE,
    LB_SCONE_MEAN_MATCH_LEN,
    MEM_FGRAM_TABLE_BYTES,
    TRAIN_FLOPS_PER_TOKEN,
    TRAIN_FLOPS_PER_TOKEN_MAIN,
    EVAL_VAL_LOSS,
    EVAL_VAL_PPL,
    EVAL_VAL_BPB,
    DATA_VAL_BYTES_PER_TOKEN,
    DATA_REPLACED_CHARS,
)
