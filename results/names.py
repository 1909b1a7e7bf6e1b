"""MLflow names that `results/` reads (tags, params, metric keys): the contract with orchestrator.tracking.

Plain string constants only, importable without pandas. The orchestrator writes these names; `results.load`
reads them from an `mlflow.search_runs` DataFrame (columns "tags.<name>", "params.<name>", "metrics.<name>").

They follow what `orchestrator/tracking.py` (suite.py labels) writes.

Tags of a job run (strings, as MLflow stores them):
  isosparse.kind          "job" for a job run, "suite" for the suite's parent run (dropped by results.load)
  isosparse.job_kind      "train" | "infer" | "dummy"
  isosparse.family        "dense" | "l3" | "moe" | "scone"
  isosparse.preset        preset name, e.g. "tiny"
  isosparse.variant       the suite variant's name (e.g. "base", "cap64"); ablations are variants
  isosparse.seed          integer seed
  isosparse.group         comparison group: jobs matched to one dense base (equal active params; L3 and
                          MoE of a group also equal in total params). The orchestrator writes
                          "<preset>/<variant>/s<seed>"; results.load drops a trailing "/s<seed>" equal to the
                          run's seed, so that the seeds of one config aggregate.
  isosparse.fingerprint   hash of the resolved job config + code version
  isosparse.outcome       failure class: "finished" | "failed" | "oom" | "infra" | "cancelled"
  isosparse.hardware      hardware name ("cpu", a GPU name); else isosparse.info.hardware (BenchResult.info)
  isosparse.suite         suite name; on the parent run, copied to its job runs by results.load
  isosparse.match_error   optional signed match error (fraction); else the larger-magnitude of the metrics
                          match/active_rel_err (vs the group's dense) and match/total_rel_err (MoE vs L3)
Accounting (params_active, params_total, sparsity) is read from metrics first, then params, then tags.
Ablation settings come from the flattened resolved config (params), see PARAM_* below; if the exact name is
absent, params columns ending in the same dotted suffix (e.g. ".l3.cap") are used, shallowest first.
"""

TAG_PREFIX = "isosparse."
TAG_RUN_TYPE = "isosparse.kind"
RUN_TYPE_JOB = "job"
RUN_TYPE_SUITE = "suite"
TAG_JOB_KIND = "isosparse.job_kind"
TAG_SUITE = "isosparse.suite"
TAG_FAMILY = "isosparse.family"
TAG_PRESET = "isosparse.preset"
TAG_GROUP = "isosparse.group"
TAG_SEED = "isosparse.seed"
TAG_HARDWARE = "isosparse.hardware"
TAG_INFO_HARDWARE = "isosparse.info.hardware"
TAG_FINGERPRINT = "isosparse.fingerprint"
TAG_MATCH_ERROR = "isosparse.match_error"
TAG_OUTCOME = "isosparse.outcome"
TAG_ERROR = "isosparse.error"  # one-line error of a run that did not finish
TAG_VARIANT = "isosparse.variant"
TAG_PARENT_RUN = "mlflow.parentRunId"  # set by MLflow for nested runs

OUTCOMES = ("finished", "failed", "oom", "infra", "cancelled")

# Accounting keys (BenchResult.params); logged as metrics (preferred) or params.
PARAMS_ACTIVE = "params_active"
PARAMS_TOTAL = "params_total"
SPARSITY = "sparsity"

# Flattened resolved-config params (dotted paths) used by the ablation tables.
PARAM_L3_ALLOCATION = "model_config.l3.allocation"
PARAM_L3_CAP = "model_config.l3.cap"
PARAM_L3_TIED = "model_config.l3.tied"
PARAM_L3_POSITIONS = "model_config.l3.positions"
PARAM_MOE_NUM_EXPERTS = "model_config.moe.num_experts"
PARAM_MOE_TOP_K = "model_config.moe.top_k"

# Match errors the orchestrator logs as metrics (signed fractions).
MATCH_ACTIVE_REL_ERR = "match/active_rel_err"
MATCH_TOTAL_REL_ERR = "match/total_rel_err"

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
LB_EXPERT_MAX_OVER_MEAN = "lb/expert_tokens_max_over_mean"
LB_EXPERT_CV = "lb/expert_tokens_cv"
LB_DROPPED_TOKEN_FRAC = "lb/dropped_token_frac"
LB_AUX_LOSS = "lb/aux_loss"
LB_L3_ROWS_PER_TOKEN_MEAN = "lb/l3_rows_per_token_mean"
LB_L3_ROWS_PER_TOKEN_MAX = "lb/l3_rows_per_token_max"
LB_L3_UNIQUE_ROWS_PER_STEP = "lb/l3_unique_rows_per_step"
LB_L3_BYTES_PER_TOKEN = "lb/l3_bytes_per_token"
EVAL_VAL_LOSS = "eval/val_loss"
EVAL_VAL_PPL = "eval/val_ppl"

PARAM_CATEGORIES = ("dense", "l3_tables", "experts", "fgram_table", "embeddings")

# Keys that are also logged per batch size with the suffix BATCH_SUFFIX + str(batch size),
# e.g. "infer/decode_tokens_per_s/bs8".
PER_BATCH_SIZE = (
    INFER_PREFILL_TOKENS_PER_S,
    INFER_DECODE_TOKENS_PER_S,
    INFER_TTFT_S,
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
    EVAL_VAL_LOSS,
    EVAL_VAL_PPL,
)
