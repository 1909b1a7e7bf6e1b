"""HostRowPrefetcher: each consumer gets its own compacted rows, waits for its own gather only, errors
from the worker reach the caller, and the offload handle records one wait per L3 call."""

import threading

import numpy as np
import pytest
import torch

from workloads.l3.prefetch import HostRowPrefetcher, HostTable


def _tables(counts: list[int], width: int, seed: int) -> HostTable:
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    g = torch.Generator().manual_seed(seed)
    return HostTable(offsets, (torch.randn(offsets[-1], width, generator=g),), name=f"t{seed}")


@pytest.mark.parametrize("threaded", [False, True], ids=["caller", "worker"])
def test_each_consumer_gets_the_rows_of_the_distinct_ids(threaded):
    consumers = [_tables([2, 1, 3], 4, seed=0), _tables([1, 1, 1], 2, seed=1)]
    pf = HostRowPrefetcher(consumers, torch.device("cpu"), threaded=threaded)
    assert (pf._worker is not None) == threaded
    ids = torch.tensor([[2, 0, 2]])
    pf.start(ids)
    first = pf.take(0, ids)
    assert first.ids.tolist() == [1, 0, 1]  # remapped into the distinct ids [0, 2]
    assert first.offsets.tolist() == [0, 2, 5]  # id 0 owns 2 rows, id 2 owns 3
    torch.testing.assert_close(first.tables[0], consumers[0].tables[0][[0, 1, 3, 4, 5]], rtol=0, atol=0)
    second = pf.take(1, ids)
    assert second.offsets.tolist() == [0, 1, 2]
    torch.testing.assert_close(second.tables[0], consumers[1].tables[0][[0, 2]], rtol=0, atol=0)
    assert pf.stats.steps == 1 and pf.stats.rows_copied == 5 + 2 and len(pf.stats.wait_s) == 2
    pf.close()


def test_a_consumer_waits_only_for_its_own_rows():
    """Consumer 1's gather is held back; consumer 0's rows are handed out meanwhile."""
    consumers = [_tables([1, 2], 3, seed=0), _tables([2, 2], 3, seed=1)]
    pf = HostRowPrefetcher(consumers, torch.device("cpu"), threaded=True)
    release, gather = threading.Event(), pf._gather

    def slow_gather(i, uniq, inverse):
        if i == 1 and not release.wait(timeout=10):
            raise TimeoutError("consumer 1 was never released")
        return gather(i, uniq, inverse)

    pf._gather = slow_gather
    ids = torch.tensor([1, 1])
    pf.start(ids)
    assert pf.take(0, ids).offsets.tolist() == [0, 2]  # returned while consumer 1 is still held
    assert not pf._job.ready[1].done()
    release.set()
    assert pf.take(1, ids).offsets.tolist() == [0, 2]
    pf.close()


@pytest.mark.parametrize("threaded", [False, True], ids=["caller", "worker"])
def test_gather_errors_reach_the_consumer_and_other_ids_fetch_synchronously(threaded):
    pf = HostRowPrefetcher([_tables([1, 1], 2, seed=0)], torch.device("cpu"), threaded=threaded)
    bad = torch.tensor([0, 5])
    pf.start(bad)
    with pytest.raises(ValueError, match="token id 5 is outside the t0 vocabulary"):
        pf.take(0, bad)
    other = torch.tensor([1])
    assert pf.take(0, other).offsets.tolist() == [0, 1]  # no job for these ids: fetched on the spot
    pf.close()


def test_the_caller_path_gathers_lazily_and_each_step_reuses_a_staging_ring():
    """Without a worker nothing is gathered before `take`; staging buffers alternate between two, so a
    step's rows stay valid through the next step, and are then refilled in place (no new allocation)."""
    table = _tables([3, 2, 4], 8, seed=2)
    pf = HostRowPrefetcher([table], torch.device("cpu"))
    steps = [torch.tensor([2]), torch.tensor([0, 1]), torch.tensor([2, 2])]
    got = []
    for ids in steps:
        pf.start(ids)
        assert not pf._job.ready[0].done()  # lazy: gathered on the caller, when the layer asks
        got.append(pf.take(0, ids).tables[0])
    ptr = [t.untyped_storage().data_ptr() for t in got]
    assert ptr[0] != ptr[1] and ptr[2] == ptr[0]  # a ring of two buffers
    torch.testing.assert_close(got[1], table.tables[0][:5], rtol=0, atol=0)  # step 1 intact after step 2
    torch.testing.assert_close(got[2], table.tables[0][5:], rtol=0, atol=0)
    assert pf.stats.steps == 3 and pf.stats.rows_copied == 4 + 5 + 4


def test_offload_records_one_wait_per_l3_call():
    from workloads.jobs.decode import greedy_generate
    from workloads.l3.offload import l3_layers, offload_l3_tables
    from workloads.models.transformer import Transformer

    torch.manual_seed(0)
    model = Transformer(uniform_config()).eval()
    prompts = torch.randint(0, 256, (2, 5))
    with torch.no_grad():
        want = greedy_generate(model, prompts, 4)
    handle = offload_l3_tables(model, compact=True)
    with torch.no_grad():
        got = greedy_generate(model, prompts, 4)
    assert torch.equal(got, want)
    assert len(handle.stats.wait_s) == 4 * len(l3_layers(model))  # prefill + 3 decode steps
    assert all(w >= 0 for w in handle.stats.wait_s)
    handle.remove()


def uniform_config():
    """The debug L3 preset with a uniform allocation (no corpus needed, no warning)."""
    from dataclasses import replace

    from workloads.models import presets

    cfg = presets.get("debug", "l3")
    return replace(cfg, l3=replace(cfg.l3, allocation="uniform"))
