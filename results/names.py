"""MLflow names that `results/` reads (tags, params, metric keys): the contract with orchestrator.tracking.

Plain string constants only, importable without pandas. The orchestrator writes these names; `results.load`
reads them from an `mlflow.search_runs` DataFrame (columns "tags.<name>", "params.<name>", "metrics.<name>").

Tags (one per nested job run; strings, as MLflow stores them):
  isosparse.suite         suite name (experiment-level label; the parent run is also "mlflow.parentRunId")
  isosparse.family        "dense" | "l3" | "moe" | "scone"
  isosparse.preset        preset name, e.g. "tiny"
  isosparse.group         comparison group: the jobs matched against one dense base (same active params;
                          L3 and MoE of a group also share total params), e.g. "tiny/s4"
  isosparse.seed          integer seed
  isosparse.kind          "train" | "infer" | "dummy"
  isosparse.hardware      hardware catalog name, e.g. "h100-sxm", "cpu"
  isosparse.fingerprint   hash of the resolved job config + code version
  isosparse.match_error   signed relative error of the iso-sparse match (fraction: 0.013 = 1.3%); the
                          larger-magnitude of the active and total errors of the job vs its targets
  isosparse.outcome       failure class: "finished" | "failed" | "oom" | "infra" | "cancelled"
  isosparse.variant       optional free-form label of an ablation variant (e.g. "cap=64")
Accounting (params_active, params_total, sparsity) is read from metrics first, then params, then tags.
Ablation settings come from the flattened resolved config (params), see PARAM_* below; if the exact name is
absent, params columns ending in the same dotted suffix (e.g. ".l3.cap") are used, shallowest first.
"""

TAG_PREFIX = "isosparse."
TAG_SUITE = "isosparse.suite"
TAG_FAMILY = "isosparse.family"
TAG_PRESET = "isosparse.preset"
TAG_GROUP = "isosparse.group"
TAG_SEED = "isosparse.seed"
TAG_KIND = "isosparse.kind"
TAG_HARDWARE = "isosparse.hardware"
TAG_FINGERPRINT = "isosparse.fingerprint"
TAG_MATCH_ERROR = "isosparse.match_error"
TAG_OUTCOME = "isosparse.outcome"
TAG_VARIANT = "isosparse.variant"
TAG_PARENT_RUN = "mlflow.parentRunId"  # set by MLflow for nested runs

OUTCOMES = ("finished", "failed", "oom", "infra", "cancelled")

# Accounting keys (BenchResult.params); logged as metrics (preferred) or params.
PARAMS_ACTIVE = "params_active"
PARAMS_TOTAL = "params_total"
SPARSITY = "sparsity"

# Flattened resolved-config params (dotted paths) used by the ablation tables.
PARAM_L3_ALLOCATION = "model.l3.allocation"
PARAM_L3_CAP = "model.l3.cap"
PARAM_L3_TIED = "model.l3.tied"
PARAM_L3_POSITIONS = "model.l3.positions"
PARAM_MOE_NUM_EXPERTS = "model.moe.num_experts"
PARAM_MOE_TOP_K = "model.moe.top_k"

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
