"""The one-command GPU check (`make gpu-check`, `python -m workloads.gpu_check --out DIR [--dry-run]`).
Details: docs/workloads.md#workloadsgpu_check."""
