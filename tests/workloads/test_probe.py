import pytest
import torch

from workloads.probe import MachineProbe, gemm_flop_per_s, read_bytes_per_s


def test_floor_is_the_roofline_max_of_bytes_and_flops():
    p = MachineProbe(device="cpu", threads=1, read_bytes_per_s=1e9, gemm_flop_per_s={"8x8x8": 4e9})
    assert p.floor_s(2e9, 4e9) == pytest.approx(2.0)  # memory-bound: 2 GB at 1 GB/s
    assert p.floor_s(1e9, 12e9) == pytest.approx(3.0)  # compute-bound: 12 GFLOP at 4 GFLOP/s
    assert p.floor_s(1e9, 12e9, flop_per_s=12e9) == pytest.approx(1.0)  # a shape's own rate wins
    assert p.peak_flops_per_s() == 4e9


def test_probes_measure_positive_rates_and_keep_the_shape():
    assert read_bytes_per_s("cpu", nbytes=4 * 2**20, repeats=2) > 0
    assert gemm_flop_per_s(16, 16, 16, repeats=2) > 0
    p = MachineProbe(device="cpu", threads=torch.get_num_threads(), read_bytes_per_s=1e9)
    first = p.flops_per_s(16, 32, 8)
    assert p.gemm_flop_per_s == {"16x32x8": first} and p.flops_per_s(16, 32, 8) == first
