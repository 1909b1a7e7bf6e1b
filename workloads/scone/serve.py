"""Serving SCONE's f-gram table F at inference (L3_SPEC §6): `serve_fgrams(model, matcher, placement)`.
Details: docs/workloads.md#workloadssconeserve."""

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn as nn

from workloads.l3.prefetch import HostRowPrefetcher, HostTable
from workloads.scone.tagging import SuffixMatcher

Placement = Literal["device", "host", "disk"]
PLACEMENTS: tuple[str, ...] = ("device", "host", "disk")
_INT_VIEW = {2: (torch.int16, np.int16), 4: (torch.int32, np.int32)}  # raw bits of a float table on disk


@dataclass
class ServeStats:
    """Counters since serving started (or `reset`): positions looked up, matched, and the host time."""

    positions: int = 0
    matched: int = 0
    match_tokens: int = 0  # Σ matched f-gram lengths
    lookup_s: float = 0.0  # host time of the suffix lookups (ids already on the host)
    fetch_s: float = 0.0  # host time of gathering rows and starting their copy
    bytes_copied: int = 0

    def reset(self) -> None:
        self.positions = self.matched = self.match_tokens = self.bytes_copied = 0
        self.lookup_s = self.fetch_s = 0.0

    @property
    def match_rate(self) -> float:
        return self.matched / self.positions if self.positions else 0.0

    @property
    def mean_match_len(self) -> float:
        return self.match_tokens / self.matched if self.matched else 0.0

    @property
    def lookup_us_per_token(self) -> float:
        return 1e6 * self.lookup_s / self.positions if self.positions else 0.0


def save_fgram_table(path: str | Path, table: torch.Tensor) -> Path:
    """Write F's raw bits as a .npy (int16 for 2-byte floats, int32 for float32) for `open_fgram_table`."""
    t = table.detach().cpu().contiguous()
    torch_int, _ = _INT_VIEW[t.element_size()]
    np.save(path, t.view(torch_int).numpy())
    return Path(path)


def open_fgram_table(path: str | Path, dtype: torch.dtype) -> np.ndarray:
    """F as a read-only memory map of its raw bits (rows are gathered by numpy, then viewed as `dtype`)."""
    table = np.load(path, mmap_mode="c")  # copy-on-write: torch may wrap it; nothing ever writes
    if table.dtype != _INT_VIEW[torch.empty(0, dtype=dtype).element_size()][1]:
        raise ValueError(f"{path}: a table of {table.dtype} cannot hold {dtype}")
    return table


class FgramServer:
    """The handle `serve_fgrams` returns: the table, the history, `stats`; `remove()` undoes it."""

    def __init__(self, model: nn.Module, matcher: SuffixMatcher, placement: Placement, table, pin: bool):
        self.model, self.matcher, self.placement, self.table = model, matcher, placement, table
        self.device = model.tok_emb.weight.device
        self.dtype = model.tok_emb.weight.dtype
        self.dim = model.config.dim
        self.pin = pin
        self.prefetcher = None
        if placement != "device":  # disk: the raw bits of the memory map, viewed as the dtype on arrival
            host = table if placement == "host" else torch.from_numpy(table)
            consumer = HostTable(np.arange(host.shape[0] + 1, dtype=np.int64), (host,), name="f-gram table")
            self.prefetcher = HostRowPrefetcher([consumer], self.device, pin_memory=pin)
        self.stats = ServeStats()
        self._history = np.zeros((0, 0), dtype=np.int64)
        self._pending = None
        model.fgram_source = self._source
        self._hook = model.register_forward_pre_hook(self._pre_forward, with_kwargs=True)

    @property
    def table_bytes(self) -> int:
        """Bytes of F wherever it lives."""
        return int(self.table.nbytes)

    @property
    def host_table_bytes(self) -> int:
        """Bytes of F kept off the device (host RAM or the mapped file); 0 on the device."""
        return 0 if self.placement == "device" else self.table_bytes

    def _pre_forward(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        token_ids = args[0] if args else kwargs["token_ids"]
        start_pos = args[2] if len(args) > 2 else kwargs.get("start_pos", 0)
        self.prefetch(token_ids, start_pos, kwargs.get("fgram_ids"))

    @torch.no_grad()
    def prefetch(self, token_ids: torch.Tensor, start_pos: int, fgram_ids: torch.Tensor | None = None):
        """Look up the new positions' f-grams and start copying their rows (see the module doc)."""
        # The newest ids on the host: on CUDA this waits for the step that sampled them (not timed here).
        ids = token_ids.detach().to("cpu").numpy().astype(np.int64, copy=False)  # (B, T)
        t0 = time.perf_counter()
        tags = self._lookup(ids, start_pos)  # (B, T); also keeps the history current
        t1 = time.perf_counter()
        if fgram_ids is not None:  # the caller's tags win
            tags = fgram_ids.detach().to("cpu").numpy().astype(np.int64, copy=False)
        mask = tags >= 0
        rows = tags[mask]
        self._pending = (token_ids, *self._fetch(mask, rows))
        self.stats.positions += int(tags.size)
        self.stats.matched += int(rows.size)
        self.stats.match_tokens += int(self.matcher.fgrams.lengths[rows].sum())
        self.stats.lookup_s += t1 - t0
        self.stats.fetch_s += time.perf_counter() - t1

    def _lookup(self, ids: np.ndarray, start_pos: int) -> np.ndarray:
        B, T = ids.shape
        if start_pos == 0:
            context = np.zeros((B, 0), dtype=np.int64)
        elif self._history.shape[0] != B:
            raise ValueError(f"{B} rows continue a history of {self._history.shape[0]} rows (start_pos > 0)")
        else:
            context = self._history
        both = np.concatenate([context, ids], axis=1)
        self._history = both[:, -(self.matcher.max_n - 1) :]
        return self.matcher.tag_rows(both, context.shape[1])

    def _fetch(self, mask: np.ndarray, rows: np.ndarray) -> tuple:
        """The mask on the device, and the rows (device placement) or the ids whose rows are in flight."""
        mask_d = torch.from_numpy(mask).to(self.device, non_blocking=True)
        rows_t = torch.from_numpy(rows)
        if self.placement == "device":
            return mask_d, self.table[rows_t.to(self.device)]
        self.prefetcher.start(rows_t)  # the worker gathers F's rows and starts their copy
        return mask_d, rows_t

    def _source(self, token_ids: torch.Tensor, fgram_ids: torch.Tensor | None):
        pending, self._pending = self._pending, None
        if pending is None or pending[0] is not token_ids:
            raise ValueError("the f-gram table serves the model's own forward only (these ids were not seen)")
        _, mask, rows = pending
        if self.placement == "device":
            return mask, rows
        t0 = time.perf_counter()
        compact = self.prefetcher.take(0, rows)  # waits for this step's copy only
        self.stats.fetch_s += time.perf_counter() - t0
        self.stats.bytes_copied += mask.numel() + self.prefetcher.stats.last_step_bytes
        table = compact.tables[0]
        if table.dtype != self.dtype:  # disk: raw bits
            table = table.view(self.dtype)
        return mask, table[compact.offsets[compact.ids]]  # each f-gram owns one row

    def remove(self) -> None:
        """Detach the hook and the source (idempotent); the model needs fgram_ids again afterwards."""
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
            self.model.fgram_source = None
            if self.prefetcher is not None:
                self.prefetcher.close()


@dataclass(frozen=True, eq=False)
class FgramTable:
    """F computed once (on the model's device) with its matcher, served at a placement on demand."""

    matcher: SuffixMatcher
    table: torch.Tensor  # (S, D)
    path: Path | None = None  # the file of placement "disk"
    offload: Placement = "host"  # where the infer job's offloaded placement serves F: "host" or "disk"

    def serve(self, model: nn.Module, placement: Placement) -> "FgramServer":
        """A server of F at `placement`; "disk" writes `path` on first use and maps it afterwards."""
        if placement == "disk" and self.path is not None and Path(self.path).exists():
            return serve_fgrams(model, self.matcher, placement, path=self.path)
        return serve_fgrams(model, self.matcher, placement, table=self.table, path=self.path)


def serve_fgrams(
    model: nn.Module,
    matcher: SuffixMatcher,
    placement: Placement = "host",
    *,
    table: torch.Tensor | None = None,
    path: str | Path | None = None,
    pin_memory: bool | None = None,
) -> FgramServer:
    """Serve F for `model` (family "scone", already on its device) from `placement`.

    table: F when already computed (else `model.precompute_fgram_table()`). path: the file of placement
    "disk": written here from F when `table` is given or the file is missing, else mapped as it is.
    pin_memory: None pins host staging when the model is on CUDA.
    """
    if getattr(model, "fgram", None) is None:
        raise ValueError("serve_fgrams needs a model of family 'scone'")
    if placement not in PLACEMENTS:
        raise ValueError(f"placement must be one of {PLACEMENTS}, got {placement!r}")
    if model.fgram_source is not None:
        raise ValueError("the model already serves an f-gram table (call remove() on that server first)")
    if matcher.fgrams.n_fgrams != model.config.scone.n_fgrams:
        n_model = model.config.scone.n_fgrams
        raise ValueError(f"the matcher has {matcher.fgrams.n_fgrams} f-grams, the model {n_model}")
    device = model.tok_emb.weight.device
    pin = device.type == "cuda" and torch.cuda.is_available() if pin_memory is None else pin_memory
    if placement == "disk":
        if path is None:
            raise ValueError("placement 'disk' needs path= for the table file")
        if table is not None or not Path(path).exists():  # else: map the file written before
            save_fgram_table(path, model.precompute_fgram_table() if table is None else table)
        table = open_fgram_table(path, model.tok_emb.weight.dtype)
    else:
        table = model.precompute_fgram_table() if table is None else table
        if placement == "device":
            table = table.to(device)
        else:
            table = table.detach().to("cpu")
            table = table.pin_memory() if pin else table
    return FgramServer(model, matcher, placement, table, pin)
