"""One benchmark entry: `python -m workloads.bench <section>... | all [--threads 1 2]` (`make bench`).

Every section is a function `(BenchContext) -> list[Row]` registered in `sections.SECTIONS`; a row holds the
timing (median, p10, p90 over interleaved rounds) beside the bytes and FLOPs the call must move, so the
table prints achieved GB/s, GFLOP/s and % of the probed floor (`workloads.probe`). Imports run one way:
this package may import any workloads layer, and nothing else in workloads imports it.
"""
