"""Section `lzw`: the L3 allocation's LZW phrase counting (stage 1, numba trie walk) over the built-in
corpus's training documents, and stage 2 (sort + walk to per-token row counts); then `lzw-paper`'s stage 1
(the published loop, on the same documents' lines) and how many rows it moves against `lzw` (in its note:
half the sum of |rows_lzw - rows_paper| over tokens, at the layer section's budget and cap).
Details: docs/workloads.md#workloadsbenchlzw."""

import time
from dataclasses import replace

from workloads.bench.layer import BUDGET, CAP, l3_setup
from workloads.bench.rows import COMPARISON, REPORTED, BenchContext, Row, timed_row
from workloads.l3.allocation import PhraseCounts, allocate_from_counts, count_phrases
from workloads.l3.lzw_paper import count_phrases_paper, paper_lines

TOKENS_PER_S_GOAL = 5e6


def stage2_bytes(phrases: PhraseCounts) -> float:
    """Bytes stage 2 must move at the least: every phrase's count and last token read (8 B each), the
    (V,) int64 rows per token written."""
    return float(phrases.count.nbytes + phrases.last_token.nbytes + 8 * phrases.vocab_size)


def rows(ctx: BenchContext) -> list[Row]:
    data, _ = l3_setup()
    docs = list(data.allocation_sequences())
    if ctx.quick:
        docs = docs[: max(1, len(docs) // 8)]
    count_phrases(docs[:2], data.vocab_size)  # JIT warm-up
    stage1, stage2, phrases = [], [], None
    for _ in range(max(3, ctx.rounds // 2)):
        t0 = time.perf_counter()
        phrases = count_phrases(docs, data.vocab_size)
        stage1.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        allocate_from_counts(phrases, BUDGET, CAP)
        stage2.append(time.perf_counter() - t0)
    n = phrases.n_tokens
    first = timed_row("lzw", "stage 1 count", stage1, ctx.probe, nbytes=4.0 * n, flops=0.0)
    first = replace(first, items=float(n))
    first = first.with_goal(f"≥{TOKENS_PER_S_GOAL / 1e6:g}M tok/s", first.items_per_s >= TOKENS_PER_S_GOAL)
    second = timed_row("lzw", "stage 2 allocate", stage2, ctx.probe, nbytes=stage2_bytes(phrases), flops=0.0)
    second = second.without_goal(REPORTED)
    return [first, second, _paper_row(ctx, docs, data, allocate_from_counts(phrases, BUDGET, CAP))]


def _paper_row(ctx: BenchContext, docs: list, data, lzw_rows) -> Row:
    """lzw-paper's stage 1 over the lines of the same documents; its note: rows moved against `lzw`."""
    texts = (data.tokenizer.decode(ids.tolist(), skip_special_tokens=False) for ids in docs)
    lines = list(paper_lines(texts, data.tokenizer))
    count_phrases_paper(lines[:2], data.vocab_size)  # JIT warm-up
    times, phrases = [], None
    for _ in range(max(3, ctx.rounds // 2)):
        t0 = time.perf_counter()
        phrases = count_phrases_paper(lines, data.vocab_size)
        times.append(time.perf_counter() - t0)
    moved = int(abs(allocate_from_counts(phrases, BUDGET, CAP) - lzw_rows).sum()) // 2
    row = timed_row(
        "lzw", "lzw-paper stage 1 (lines)", times, ctx.probe, nbytes=4.0 * phrases.n_tokens, flops=0.0
    )
    note = f"rows moved vs lzw: {moved:,} of {BUDGET:,} ({moved / BUDGET:.1%})"
    return replace(row, items=float(phrases.n_tokens), note=note).without_goal(COMPARISON)
