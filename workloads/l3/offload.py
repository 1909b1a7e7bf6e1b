"""Inference with the L3 tables in host memory (L3_SPEC §4): `offload_l3_tables(model) -> L3Offload`.
Details: docs/workloads.md#workloadsl3offload."""

import weakref

import torch
import torch.nn as nn

from workloads.l3.layer import L3Layer, LookupTables
from workloads.l3.prefetch import ALIGN_BYTES, HostRowPrefetcher, HostTable, PrefetchStats, _layout

# _layout: the packing that workloads.scone.serve imports from here (it lives in prefetch.py now)
__all__ = ["ALIGN_BYTES", "L3Offload", "OffloadStats", "_layout", "l3_layers", "offload_l3_tables"]

_OFFLOADED: "weakref.WeakSet[L3Layer]" = weakref.WeakSet()  # layers whose tables a live handle holds
OffloadStats = PrefetchStats  # per-step copy counters and per-call waits (one step = one model forward)


class L3Offload:
    """The handle `offload_l3_tables` returns: host tables, the prefetcher, per-step copy statistics.

    `prefetch(token_ids)` is what the model's pre-hook calls (compact only); `remove()` moves the tables
    back to the device, detaches every hook and stops the worker thread.
    """

    def __init__(
        self,
        model: nn.Module,
        layers: list[L3Layer],
        pin_memory: bool | None = None,
        compact: bool | None = None,
    ):
        devices = {layer.mix.weight.device for layer in layers}
        if len(devices) != 1:
            raise ValueError(f"L3 layers must share one device to offload, got {sorted(map(str, devices))}")
        self.model, self.layers = model, layers
        self.device = devices.pop()
        cuda = self.device.type == "cuda"
        self.compact = cuda if compact is None else compact
        if cuda and not self.compact:
            raise ValueError("compact=False reads the tables in place, which needs the model on the CPU")
        self.pin_memory = cuda and torch.cuda.is_available() if pin_memory is None else pin_memory
        consumers = [
            HostTable(layer.offsets.cpu().numpy(), self._move_tables_to_host(layer), name="L3")
            for layer in layers
        ]
        self.prefetcher = HostRowPrefetcher(consumers, self.device, self.pin_memory)
        _OFFLOADED.update(layers)
        for layer in layers:  # the tables move (`.data =`): what the fused kernel kept would be stale
            layer.drop_kept_tables()
        self._hook = None
        if self.compact:
            for i, layer in enumerate(layers):
                layer.table_source = self._source(i)
            self._hook = model.register_forward_pre_hook(self._pre_forward, with_kwargs=True)
        self._removed = False

    @property
    def stats(self) -> PrefetchStats:
        """Rows and bytes gathered, waits per L3 call (all zero/empty when reading in place)."""
        return self.prefetcher.stats

    def _move_tables_to_host(self, layer: L3Layer) -> tuple[torch.Tensor, ...]:
        """Point the layer's table parameters at host copies (device memory is freed); return them."""
        names = ("keys",) if layer.tied else ("keys", "values")
        for name in names:
            param = getattr(layer, name)
            if self.pin_memory:  # one pinned host copy, no pageable intermediate
                host = torch.empty_like(param, device="cpu", pin_memory=True).copy_(param.detach())
            else:
                host = param.detach().to("cpu")
            param.data = host
        return tuple(getattr(layer, name).detach() for name in names)

    def _source(self, i: int):
        def tables_for(token_ids: torch.Tensor) -> LookupTables:
            """Layer i's tables for this call; waits for their copy only."""
            ids, offsets, (keys, *values) = self.prefetcher.take(i, token_ids)
            return LookupTables(ids, keys, values[0] if values else keys, offsets)

        return tables_for

    @property
    def host_table_bytes(self) -> int:
        """Bytes of L3 tables held in host memory (a tied table counted once)."""
        seen = {t.data_ptr(): t.nbytes for c in self.prefetcher.consumers for t in c.tables}
        return sum(seen.values())

    def _pre_forward(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        self.prefetch(args[0] if args else kwargs["token_ids"])

    def prefetch(self, token_ids: torch.Tensor) -> None:
        """Start gathering and copying the rows every L3 layer needs for `token_ids`; returns at once."""
        self.prefetcher.start(token_ids)

    def remove(self) -> None:
        """Move the tables back to the model's device, detach the hooks, stop the thread (idempotent)."""
        if self._removed:
            return
        self._removed = True
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        self.prefetcher.close()
        for layer in self.layers:
            _OFFLOADED.discard(layer)
            layer.table_source = None
            for name in ("keys",) if layer.tied else ("keys", "values"):
                param = getattr(layer, name)
                param.data = param.data.to(self.device)


def l3_layers(model: nn.Module) -> list[L3Layer]:
    """The model's L3 sublayers in forward order (module registration order)."""
    return [m for m in model.modules() if isinstance(m, L3Layer)]


def offload_l3_tables(
    model: nn.Module, pin_memory: bool | None = None, compact: bool | None = None
) -> L3Offload:
    """Keep the L3 tables of a built model (already on its device) in host memory; see the module doc.

    pin_memory: None pins when the model is on CUDA. compact: gather each step's rows into a staging
    buffer (None: on CUDA only; on CPU the lookup reads the host tables in place). The returned handle's
    `stats` count the bytes gathered per step and the waits; `remove()` undoes the offload.
    """
    layers = l3_layers(model)
    if not layers:
        raise ValueError(f"model has no L3 layers to offload ({type(model).__name__})")
    if any(layer in _OFFLOADED for layer in layers):
        raise ValueError("the model's L3 tables are already offloaded (call remove() on that handle first)")
    return L3Offload(model, layers, pin_memory, compact)
