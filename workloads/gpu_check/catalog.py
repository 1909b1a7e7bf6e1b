"""Peak device-memory bandwidth from the hardware catalog (clusters/catalog.yaml), read without yaml.
Details: docs/workloads.md#workloadsgpu_checkcatalog."""

import ast
import re
from pathlib import Path

CATALOG_PATH = Path(__file__).resolve().parents[2] / "clusters" / "catalog.yaml"
_ENTRY = re.compile(r"^  ([A-Za-z0-9_.-]+):\s*(#.*)?$")
_FIELD = re.compile(r"^    (hbm_bytes_per_s|device_names):\s*(.+?)\s*(#.*)?$")


def read_catalog(path: Path = CATALOG_PATH) -> dict[str, dict]:
    """{entry: {"hbm_bytes_per_s": float | None, "device_names": [str]}} of every accelerator."""
    entries: dict[str, dict] = {}
    current = None
    for line in path.read_text().splitlines():
        if m := _ENTRY.match(line):
            current = entries.setdefault(m.group(1), {"hbm_bytes_per_s": None, "device_names": []})
        elif (m := _FIELD.match(line)) and current is not None:
            key, raw = m.group(1), m.group(2)
            if key == "hbm_bytes_per_s":
                current[key] = None if raw == "null" else float(raw)
            else:
                names = ast.literal_eval(raw)
                if not isinstance(names, list):
                    raise ValueError(f"{path}: device_names must be an inline list, got {raw!r}")
                current[key] = [str(n) for n in names]
    if not entries:
        raise ValueError(f"{path}: no accelerator entries found")
    return entries


def hbm_peak(device_name: str, path: Path = CATALOG_PATH) -> tuple[str | None, float | None]:
    """(catalog entry, peak bytes/s) of the entry listing `device_name` (exact, then case-insensitive
    substring either way); (None, None) when no entry matches."""
    entries = read_catalog(path)
    for key, entry in entries.items():
        if device_name in entry["device_names"]:
            return key, entry["hbm_bytes_per_s"]
    lowered = device_name.lower()
    for key, entry in entries.items():
        for name in entry["device_names"]:
            if name.lower() in lowered or lowered in name.lower():
                return key, entry["hbm_bytes_per_s"]
    return None, None
