"""The accelerator catalog: `catalog.yaml` loaded into frozen dataclasses.
Details: docs/clusters.md#clusterscatalog."""

import contextlib
import difflib
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

CATALOG_PATH = Path(__file__).with_name("catalog.yaml")
PEAK_DTYPES: tuple[str, ...] = ("float32", "tf32", "bfloat16", "float16", "fp8")
# Spellings accepted by `peak_flops`, mapped to the catalog's dtype keys.
DTYPE_ALIASES: dict[str, str] = {
    "fp32": "float32",
    "float32": "float32",
    "tf32": "tf32",
    "bf16": "bfloat16",
    "bfloat16": "bfloat16",
    "fp16": "float16",
    "float16": "float16",
    "half": "float16",
    "fp8": "fp8",
    "float8": "fp8",
}
_FIELDS = (
    "description",
    "memory_bytes",
    "hbm_bytes_per_s",
    "peak_flops",
    "host_link",
    "nvlink_bytes_per_s",
    "device_names",
    "ray_accelerator_type",
)


@dataclass(frozen=True)
class HostLink:
    """The host<->device link: PCIe generation and bandwidth per direction (bytes/s)."""

    pcie_gen: int
    bytes_per_s: float


@dataclass(frozen=True)
class Accelerator:
    """One catalog entry. None means "not applicable / not known" (e.g. every peak of `cpu`)."""

    name: str
    description: str
    memory_bytes: int | None
    hbm_bytes_per_s: float | None
    peak_flops: tuple[tuple[str, float | None], ...]  # ((dtype, dense FLOP/s), ...) in PEAK_DTYPES order
    host_link: HostLink | None
    nvlink_bytes_per_s: float | None
    device_names: tuple[str, ...]
    ray_accelerator_type: str | None

    @property
    def is_gpu(self) -> bool:
        return self.name != "cpu"

    def peak(self, dtype: str) -> float | None:
        """Dense peak FLOP/s for `dtype` (any spelling in DTYPE_ALIASES); None if the part has none."""
        key = DTYPE_ALIASES.get(str(dtype).lower())
        if key is None:
            raise ValueError(f"unknown dtype {dtype!r}; choose one of {sorted(DTYPE_ALIASES)}")
        return dict(self.peak_flops)[key]


def _number(where: str, value: Any, *, integer: bool = False) -> Any:
    if value is None:
        return None
    if isinstance(value, str) and not integer:
        # PyYAML reads "3.35e12" (no exponent sign, YAML 1.1) as a string; accept it as a number.
        with contextlib.suppress(ValueError):
            value = float(value)
    ok = isinstance(value, int) if integer else isinstance(value, int | float)
    if isinstance(value, bool) or not ok or value <= 0:
        kind = "a positive integer" if integer else "a positive number"
        raise ValueError(f"{where} must be {kind} or null, got {value!r}")
    return value if integer else float(value)


def _parse_entry(name: str, raw: Any, source: str) -> Accelerator:
    where = f"{source}: accelerators.{name}"
    if not isinstance(raw, dict):
        raise ValueError(f"{where} must be a mapping, got {type(raw).__name__}")
    unknown, missing = sorted(set(raw) - set(_FIELDS)), sorted(set(_FIELDS) - set(raw))
    if unknown or missing:
        raise ValueError(f"{where}: unknown fields {unknown}, missing fields {missing}")
    peaks = raw["peak_flops"]
    if not isinstance(peaks, dict) or set(peaks) != set(PEAK_DTYPES):
        raise ValueError(f"{where}.peak_flops must map exactly {PEAK_DTYPES} to FLOP/s, got {peaks!r}")
    link = raw["host_link"]
    if link is not None:
        if not isinstance(link, dict) or set(link) != {"pcie_gen", "bytes_per_s"}:
            raise ValueError(f"{where}.host_link must be {{pcie_gen, bytes_per_s}} or null, got {link!r}")
        link = HostLink(
            pcie_gen=_number(f"{where}.host_link.pcie_gen", link["pcie_gen"], integer=True),
            bytes_per_s=_number(f"{where}.host_link.bytes_per_s", link["bytes_per_s"]),
        )
    names = raw["device_names"]
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"{where}.device_names must be a list of strings, got {names!r}")
    return Accelerator(
        name=name,
        description=str(raw["description"]),
        memory_bytes=_number(f"{where}.memory_bytes", raw["memory_bytes"], integer=True),
        hbm_bytes_per_s=_number(f"{where}.hbm_bytes_per_s", raw["hbm_bytes_per_s"]),
        peak_flops=tuple((d, _number(f"{where}.peak_flops.{d}", peaks[d])) for d in PEAK_DTYPES),
        host_link=link,
        nvlink_bytes_per_s=_number(f"{where}.nvlink_bytes_per_s", raw["nvlink_bytes_per_s"]),
        device_names=tuple(names),
        ray_accelerator_type=raw["ray_accelerator_type"],
    )


def load_catalog(path: str | Path = CATALOG_PATH) -> dict[str, Accelerator]:
    """Parse and validate a catalog YAML file: {name: Accelerator}."""
    raw = yaml.safe_load(Path(path).read_text())
    if not isinstance(raw, dict) or not isinstance(raw.get("accelerators"), dict):
        raise ValueError(f"{path}: expected a top-level 'accelerators' mapping")
    return {name: _parse_entry(name, entry, str(path)) for name, entry in raw["accelerators"].items()}


@functools.cache
def catalog() -> dict[str, Accelerator]:
    """The shipped catalog (parsed once)."""
    return load_catalog()


def names() -> tuple[str, ...]:
    return tuple(catalog())


def get(name: str) -> Accelerator:
    """The entry `name`; exact names only, with a did-you-mean hint."""
    entries = catalog()
    if name in entries:
        return entries[name]
    close = [n for n in entries if n.startswith(str(name).lower())] or difflib.get_close_matches(
        str(name), entries, n=1
    )
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"unknown accelerator {name!r}{hint} (known: {', '.join(entries)})")


def peak_flops(name: str, dtype: str) -> float | None:
    """Dense peak FLOP/s of accelerator `name` in `dtype`; None when the catalog has no peak (cpu)."""
    return get(name).peak(dtype)


def identify(device_name: str) -> str:
    """The catalog name of a device as torch/nvidia-smi report it ("NVIDIA H100 80GB HBM3" -> "h100-sxm").

    Matches the entries' `device_names` exactly (case-insensitive), then a reported name that starts with
    a known one; unknown names raise.
    """
    wanted = device_name.strip().lower()
    for exact in (True, False):
        for acc in catalog().values():
            for known in acc.device_names:
                k = known.lower()
                if (wanted == k) if exact else wanted.startswith(k):
                    return acc.name
    raise ValueError(
        f"device {device_name!r} is not in the hardware catalog; add its name to device_names of an "
        f"entry in {CATALOG_PATH.name} (entries: {', '.join(catalog())})"
    )
