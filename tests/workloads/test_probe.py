import pytest
import torch

from workloads.probe import MachineProbe, gemm_flop_per_s, probe, read_bytes_per_s

MiB = 2**20


def test_floor_is_the_roofline_max_of_bytes_and_flops():
    p = MachineProbe(device="cpu", threads=1, read_bytes_per_s=1e9, gemm_flop_per_s={"8x8x8": 4e9})
    assert p.floor_s(2e9, 4e9) == pytest.approx(2.0)  # memory-bound: 2 GB at 1 GB/s
    assert p.floor_s(1e9, 12e9) == pytest.approx(3.0)  # compute-bound: 12 GFLOP at 4 GFLOP/s
    assert p.floor_s(1e9, 12e9, flop_per_s=12e9) == pytest.approx(1.0)  # a shape's own rate wins
    assert p.peak_flops_per_s() == 4e9


# A hand-made ladder: L2 100 GB/s, LLC 50 GB/s, a noisy 8 MiB probe (30, below the 16 MiB one), DRAM 20.
LADDER = {1 * MiB: 100e9, 4 * MiB: 50e9, 8 * MiB: 30e9, 16 * MiB: 40e9, 256 * MiB: 20e9}


@pytest.mark.parametrize(
    ("working_set", "rate"),
    [
        (0.25 * MiB, 100e9),  # below the ladder: its smallest size
        (1 * MiB, 100e9),  # exactly a probed size
        (3 * MiB, 100e9),  # between 1 and 4 MiB: the rate at 1 MiB (the largest size <= W)
        (4 * MiB, 50e9),
        (10 * MiB, 40e9),  # at 8 MiB the probe read 30, but 16 MiB read 40: the larger rate stands
        (200 * MiB, 40e9),  # the 16 MiB rate
        (256 * MiB, 20e9),
        (4096 * MiB, 20e9),  # beyond the ladder: the DRAM rate
    ],
)
def test_read_rate_is_the_largest_probed_size_not_above_the_working_set(working_set, rate):
    p = MachineProbe(device="cpu", threads=1, read_bytes_per_s=20e9, read_by_size=LADDER)
    assert p.read_rate(working_set) == rate


def test_floor_reads_at_the_working_set_rate():
    p = MachineProbe(device="cpu", threads=1, read_bytes_per_s=20e9, gemm_flop_per_s={"8x8x8": 1e12},
                     read_by_size=LADDER)  # fmt: skip
    assert p.floor_s(2 * MiB, 0.0) == pytest.approx(2 * MiB / 100e9)  # the call's own bytes: in L2
    # the same 2 MiB call cycling through a 300 MiB working set (e.g. every expert) reads at DRAM's rate
    assert p.floor_s(2 * MiB, 0.0, working_set_bytes=300 * MiB) == pytest.approx(2 * MiB / 20e9)
    bare = MachineProbe(device="cpu", threads=1, read_bytes_per_s=20e9, gemm_flop_per_s={"8x8x8": 1e12})
    assert bare.floor_s(2 * MiB, 0.0) == pytest.approx(2 * MiB / 20e9)  # no ladder: one rate for all


def test_probes_measure_positive_rates_and_keep_the_shape():
    assert read_bytes_per_s("cpu", nbytes=4 * MiB, repeats=2) > 0
    assert read_bytes_per_s("cpu", nbytes=MiB // 2, repeats=2) > 0  # read over in one op
    assert gemm_flop_per_s(16, 16, 16, repeats=2) > 0
    p = MachineProbe(device="cpu", threads=torch.get_num_threads(), read_bytes_per_s=1e9)
    first = p.flops_per_s(16, 32, 8)
    assert p.gemm_flop_per_s == {"16x32x8": first} and p.flops_per_s(16, 32, 8) == first


def test_probe_records_every_size_and_the_largest_as_the_dram_rate():
    p = probe("cpu", sizes=(MiB, 2 * MiB))
    assert sorted(p.read_by_size) == [MiB, 2 * MiB]
    assert p.read_bytes_per_s == p.read_by_size[2 * MiB] and p.as_dict()["read_by_size"] == p.read_by_size
