"""Inference with the L3 tables in host memory (L3_SPEC §4): `offload_l3_tables(model) -> L3Offload`.

Every L3 layer's key/value tables move to host memory (pinned when CUDA is available). A forward
pre-hook on the model sees the token ids before any block runs; for each L3 layer it gathers on the host
the rows the step needs (the row ranges of the step's distinct ids, each range once), packs them with
the remapped ids and offsets into one staging buffer and copies that to the device on a side CUDA
stream. All copies are issued at the start of the forward, so they overlap with the blocks before the
first L3 layer; an L3 layer waits on its own copy only (a stream wait on that copy's event) and runs the
same lookup op on the compacted tables, so its output equals the on-device one exactly.
On CPU the same code runs: the "copy" is the staging buffer itself and there are no streams or events.
"""

import math
from dataclasses import dataclass
from functools import partial
from typing import NamedTuple

import numpy as np
import torch
import torch.nn as nn

from workloads.l3.layer import L3Layer, LookupTables

ALIGN_BYTES = 64  # segment starts in a transfer buffer, so every dtype view of a segment is aligned


@dataclass
class OffloadStats:
    """Counters over the forward steps since offloading (or `reset`); one step = one model forward."""

    steps: int = 0
    rows_copied: int = 0  # table rows sent to the device, summed over L3 layers
    table_bytes_copied: int = 0  # bytes of those key/value rows
    bytes_copied: int = 0  # everything sent: rows, remapped ids and offsets
    last_step_bytes: int = 0
    last_step_rows: int = 0

    def reset(self) -> None:
        self.steps = self.rows_copied = self.table_bytes_copied = self.bytes_copied = 0
        self.last_step_bytes = self.last_step_rows = 0

    def bytes_per_step(self) -> float:
        return self.bytes_copied / self.steps if self.steps else 0.0

    def rows_per_step(self) -> float:
        return self.rows_copied / self.steps if self.steps else 0.0


class _Segment(NamedTuple):
    """One tensor inside a packed transfer buffer."""

    start: int  # byte offset, a multiple of ALIGN_BYTES
    nbytes: int
    dtype: torch.dtype
    shape: tuple[int, ...]

    def view(self, buffer: torch.Tensor) -> torch.Tensor:
        """This segment of a (nbytes,) uint8 buffer as a tensor of its dtype and shape (no copy)."""
        return buffer[self.start : self.start + self.nbytes].view(self.dtype).view(self.shape)


def _layout(parts: list[tuple[torch.dtype, tuple[int, ...]]]) -> tuple[list[_Segment], int]:
    """Aligned segments for `parts` (dtype, shape) packed back to back; returns them and the total bytes."""
    segments, end = [], 0
    for dtype, shape in parts:
        start = -(-end // ALIGN_BYTES) * ALIGN_BYTES
        segment = _Segment(start, math.prod(shape) * dtype.itemsize, dtype, tuple(shape))
        segments.append(segment)
        end = start + segment.nbytes
    return segments, end


class _Pending(NamedTuple):
    """One L3 layer's tables for the current step, in flight to the device."""

    token_ids: torch.Tensor  # the (B, T) ids they were gathered for (checked by identity)
    buffer: torch.Tensor  # (nbytes,) uint8 on the device
    staging: torch.Tensor  # the host buffer the copy reads; kept alive until the layer has waited
    segments: list[_Segment]  # ids, offsets, keys[, values]
    event: "torch.cuda.Event | None"  # recorded on the side stream after the copy


class L3Offload:
    """The handle `offload_l3_tables` returns: host tables, the side stream, per-step copy statistics.

    `prefetch(token_ids)` is what the model's pre-hook calls; `remove()` moves the tables back to the
    device and detaches every hook. Inference only: the compacted tables carry no gradient.
    """

    def __init__(self, model: nn.Module, layers: list[L3Layer], pin_memory: bool | None = None):
        devices = {layer.mix.weight.device for layer in layers}
        if len(devices) != 1:
            raise ValueError(f"L3 layers must share one device to offload, got {sorted(map(str, devices))}")
        self.model, self.layers = model, layers
        self.device = devices.pop()
        cuda = self.device.type == "cuda"
        self.pin_memory = cuda and torch.cuda.is_available() if pin_memory is None else pin_memory
        self.stream = torch.cuda.Stream(self.device) if cuda else None
        self.stats = OffloadStats()
        self._pending: dict[int, _Pending] = {}
        self._host_offsets = [layer.offsets.cpu().numpy() for layer in layers]
        self._host_tables = [self._move_tables_to_host(layer) for layer in layers]
        for i, layer in enumerate(layers):
            layer.table_source = partial(self._tables_for, i)
        self._hook = model.register_forward_pre_hook(self._pre_forward, with_kwargs=True)

    def _move_tables_to_host(self, layer: L3Layer) -> tuple[torch.Tensor, torch.Tensor]:
        """Point the layer's table parameters at host copies (device memory is freed); return them."""
        names = ("keys",) if layer.tied else ("keys", "values")
        for name in names:
            param = getattr(layer, name)
            if self.pin_memory:  # one pinned host copy, no pageable intermediate
                host = torch.empty_like(param, device="cpu", pin_memory=True).copy_(param.detach())
            else:
                host = param.detach().to("cpu")
            param.data = host
        keys = layer.keys.detach()
        return keys, keys if layer.tied else layer.values.detach()

    @property
    def host_table_bytes(self) -> int:
        """Bytes of L3 tables held in host memory (a tied table counted once)."""
        seen = {k.data_ptr(): k.nbytes for k, _ in self._host_tables}
        seen.update({v.data_ptr(): v.nbytes for _, v in self._host_tables})
        return sum(seen.values())

    def _pre_forward(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        token_ids = args[0] if args else kwargs["token_ids"]
        self.prefetch(token_ids)

    @torch.no_grad()
    def prefetch(self, token_ids: torch.Tensor, layers: list[int] | None = None) -> None:
        """Gather and start copying the rows every L3 layer (or those in `layers`) needs for `token_ids`."""
        # The ids must be on the host to gather host rows: one small device-to-host copy (a sync on CUDA).
        ids = token_ids.detach().reshape(-1).to("cpu").numpy().astype(np.int64, copy=False)  # (N,)
        uniq, inverse = np.unique(ids, return_inverse=True)  # (U,) sorted distinct ids, (N,) index into them
        step_bytes = step_rows = 0
        for i in range(len(self.layers)) if layers is None else layers:
            pending, rows = self._gather(i, token_ids, uniq, inverse.reshape(-1))
            self._pending[i] = pending
            step_bytes += pending.buffer.numel()
            step_rows += rows
        self.stats.steps += 1
        self.stats.bytes_copied += step_bytes
        self.stats.rows_copied += step_rows
        self.stats.last_step_bytes, self.stats.last_step_rows = step_bytes, step_rows

    def _gather(self, i: int, token_ids, uniq: np.ndarray, inverse: np.ndarray) -> tuple[_Pending, int]:
        layer, offsets = self.layers[i], self._host_offsets[i]
        if uniq.size and (uniq[0] < 0 or uniq[-1] >= layer.vocab_size):
            bad = int(uniq[0] if uniq[0] < 0 else uniq[-1])
            raise ValueError(f"token id {bad} is outside the L3 vocabulary [0, {layer.vocab_size})")
        start = offsets[uniq]  # (U,) first table row of each distinct id
        counts = offsets[uniq + 1] - start  # (U,) its d_t
        local = np.zeros(uniq.size + 1, dtype=np.int64)  # (U + 1,) offsets into the compacted tables
        np.cumsum(counts, out=local[1:])
        n_rows = int(local[-1])
        rows = np.repeat(start - local[:-1], counts) + np.arange(n_rows)  # (R,) table row of each slot
        keys, values = self._host_tables[i]
        parts = [(torch.int64, inverse.shape), (torch.int64, local.shape)]
        parts.append((keys.dtype, (n_rows, keys.shape[1])))
        if not layer.tied:
            parts.append((values.dtype, (n_rows, values.shape[1])))
        segments, nbytes = _layout(parts)
        staging = torch.empty(nbytes, dtype=torch.uint8, pin_memory=self.pin_memory)
        segments[0].view(staging).copy_(torch.from_numpy(inverse))
        segments[1].view(staging).copy_(torch.from_numpy(local))
        rows_t = torch.from_numpy(rows)
        torch.index_select(keys, 0, rows_t, out=segments[2].view(staging))
        if not layer.tied:
            torch.index_select(values, 0, rows_t, out=segments[3].view(staging))
        self.stats.table_bytes_copied += sum(s.nbytes for s in segments[2:])
        buffer, event = staging, None
        if self.stream is not None:
            with torch.cuda.stream(self.stream):
                buffer = staging.to(self.device, non_blocking=True)
                event = torch.cuda.Event()
                event.record(self.stream)
        return _Pending(token_ids, buffer, staging, segments, event), n_rows

    def _tables_for(self, i: int, token_ids: torch.Tensor) -> LookupTables:
        """Layer i's tables for this call; waits (on the device, not the host) for their copy."""
        pending = self._pending.pop(i, None)
        if pending is None or pending.token_ids is not token_ids:
            # Called outside the model's forward (or with other ids): fetch this layer's rows now.
            self.prefetch(token_ids, layers=[i])
            pending = self._pending.pop(i)
        if pending.event is not None:
            stream = torch.cuda.current_stream(self.device)
            stream.wait_event(pending.event)
            pending.buffer.record_stream(stream)  # the allocator must not reuse it while `stream` reads it
        ids, offsets, keys, *values = (s.view(pending.buffer) for s in pending.segments)
        return LookupTables(ids, keys, values[0] if values else keys, offsets)

    def remove(self) -> None:
        """Move the tables back to the model's device and detach the hooks (idempotent)."""
        if self._hook is None:
            return
        self._hook.remove()
        self._hook, self._pending = None, {}
        for layer in self.layers:
            layer.table_source = None
            for name in ("keys",) if layer.tied else ("keys", "values"):
                param = getattr(layer, name)
                param.data = param.data.to(self.device)
        self._host_tables = []


def l3_layers(model: nn.Module) -> list[L3Layer]:
    """The model's L3 sublayers in forward order (module registration order)."""
    return [m for m in model.modules() if isinstance(m, L3Layer)]


def offload_l3_tables(model: nn.Module, pin_memory: bool | None = None) -> L3Offload:
    """Keep the L3 tables of a built model (already on its device) in host memory; see the module doc.

    pin_memory: None pins when the model is on CUDA. The returned handle's `stats` count the bytes
    copied per step; `remove()` undoes the offload.
    """
    layers = l3_layers(model)
    if not layers:
        raise ValueError(f"model has no L3 layers to offload ({type(model).__name__})")
    if any(layer.table_source is not None for layer in layers):
        raise ValueError("the model's L3 tables are already offloaded (call remove() on that handle first)")
    return L3Offload(model, layers, pin_memory)
