"""Benchmark jobs: plain functions `run(cfg, ctx) -> BenchResult` (no ray, no mlflow in here).

The orchestrator calls them in a Ray worker, passes a `JobContext` for live metrics and hardware facts,
and records the returned `BenchResult`. Jobs: `train`, `infer`, and `dummy` (for testing the pipeline).
"""
