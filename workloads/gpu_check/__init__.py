"""The one-command GPU check (`make gpu-check`, `python -m workloads.gpu_check --out DIR [--dry-run]`).

Built for a briefly lent GPU machine with Python, torch, triton and numpy only (DESIGN.md "GPU machines"):
it imports `workloads` modules that need nothing else (no ray, mlflow, deepspeed, pydantic, pandas,
typer, rich, yaml, tokenizers), skips MoE, and writes one JSON file plus a printed table.
"""
