"""One benchmark entry: `python -m workloads.bench <section>... | all [--threads 1 2]` (`make bench`).

Each section is a `(BenchContext) -> list[Row]` in `sections.SECTIONS`; a row holds median/p10/p90 beside
the bytes and FLOPs the call must move, so the table prints GB/s, GFLOP/s and % of the probed floor, or
why a latency has none, and a goal or why not (`rows.gaps`). Nothing else in workloads imports this package.
"""
