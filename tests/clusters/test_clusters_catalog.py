"""The accelerator catalog: datasheet numbers, dtype spellings, lookups with hints, validation."""

import re

import pytest

from clusters import catalog

GPUS = ("h100-sxm", "h100-pcie", "h200", "a100-40gb", "a100-80gb", "b200", "l40s")


def test_catalog_has_the_required_entries_with_every_field():
    assert set(catalog.names()) == {*GPUS, "cpu"}
    for name in GPUS:
        acc = catalog.get(name)
        assert acc.memory_bytes > 0 and acc.hbm_bytes_per_s > 0 and acc.host_link.bytes_per_s > 0
        assert acc.peak("bf16") > acc.peak("tf32") > acc.peak("fp32") > 0
        assert acc.ray_accelerator_type and acc.device_names


@pytest.mark.parametrize(
    "name,dtype,flops",
    [
        ("h100-sxm", "bfloat16", 989.5e12),  # 1,979 TFLOPS with sparsity / 2
        ("h100-sxm", "fp8", 1979e12),
        ("h100-sxm", "float32", 67e12),
        ("a100-80gb", "bf16", 312e12),
        ("h200", "fp16", 989.5e12),
        ("b200", "bfloat16", 2250e12),
        ("l40s", "bf16", 362.05e12),
    ],
)
def test_peak_flops_are_the_dense_datasheet_figures(name, dtype, flops):
    assert catalog.peak_flops(name, dtype) == flops


def test_memory_and_links():
    assert catalog.get("h100-sxm").memory_bytes == 80 * 2**30
    assert catalog.get("a100-40gb").memory_bytes == 40 * 2**30
    assert catalog.get("h100-sxm").host_link == catalog.HostLink(pcie_gen=5, bytes_per_s=64e9)
    assert catalog.get("a100-80gb").host_link.pcie_gen == 4
    assert catalog.get("l40s").nvlink_bytes_per_s is None
    assert catalog.get("h100-sxm").hbm_bytes_per_s == 3.35e12


def test_cpu_and_ampere_fp8_have_no_peak():
    assert catalog.peak_flops("cpu", "float32") is None
    assert catalog.peak_flops("a100-80gb", "fp8") is None
    assert not catalog.get("cpu").is_gpu


def test_unknown_names_get_hints():
    with pytest.raises(ValueError, match="unknown accelerator 'h100'; did you mean 'h100-sxm'"):
        catalog.get("h100")
    with pytest.raises(ValueError, match="did you mean 'a100-80gb'"):
        catalog.get("a100-80g")
    with pytest.raises(ValueError, match="unknown dtype 'int4'"):
        catalog.peak_flops("h100-sxm", "int4")


def test_identify_device_names():
    assert catalog.identify("NVIDIA H100 80GB HBM3") == "h100-sxm"
    assert catalog.identify("nvidia a100-sxm4-40gb") == "a100-40gb"
    assert catalog.identify("NVIDIA H200") == "h200"
    with pytest.raises(ValueError, match="not in the hardware catalog"):
        catalog.identify("Tesla K80")


def test_every_number_has_a_source_comment():
    numeric = re.compile(r"^\s+(memory_bytes|hbm_bytes_per_s|float32|tf32|bfloat16|float16|fp8|host_link|"
                         r"nvlink_bytes_per_s):\s*[\d{]")  # fmt: skip
    lines = [line for line in catalog.CATALOG_PATH.read_text().splitlines() if numeric.match(line)]
    assert len(lines) == 7 * 9 - 3  # every GPU number; A100 fp8 and L40S NVLink are null (commented too)
    missing = [
        line for line in lines if "#" not in line or not re.search(r"datasheet", line.split("#", 1)[1])
    ]
    assert not missing


def test_load_catalog_validates(tmp_path):
    bad = tmp_path / "catalog.yaml"
    bad.write_text("accelerators:\n  x:\n    description: x\n    memory_bytes: -1\n")
    with pytest.raises(ValueError, match="missing fields"):
        catalog.load_catalog(bad)
    good = catalog.CATALOG_PATH.read_text().replace("memory_bytes: 85899345920", "memory_bytes: -5", 1)
    bad.write_text(good)
    with pytest.raises(ValueError, match=r"accelerators.h100-sxm.memory_bytes must be a positive integer"):
        catalog.load_catalog(bad)
