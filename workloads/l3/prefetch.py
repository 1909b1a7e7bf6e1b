"""Host-table row prefetch: the reusable part of table offload (L3_SPEC §4).
Details: docs/workloads.md#workloadsl3prefetch."""

import math
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import torch

ALIGN_BYTES = 64  # segment starts in a transfer buffer, so every dtype view of a segment is aligned
RING = 2  # staging buffers per consumer: the one a step reads and the one the next step fills


@dataclass(frozen=True)
class HostTable:
    """One consumer's rows in host memory: id t owns rows [offsets[t], offsets[t+1]) of every table."""

    offsets: np.ndarray  # (n_ids + 1,) int64
    tables: tuple[torch.Tensor, ...]  # (rows, width) host tensors sharing the row index
    name: str = "table"  # used in error messages

    @property
    def n_ids(self) -> int:
        return self.offsets.shape[0] - 1


class Compacted(NamedTuple):
    """A consumer's rows for one step, on the device: `ids` index `offsets`, whose ranges index `tables`."""

    ids: torch.Tensor  # (N,) int64, remapped into [0, U)
    offsets: torch.Tensor  # (U + 1,) int64
    tables: tuple[torch.Tensor, ...]  # (R, width) each


@dataclass
class PrefetchStats:
    """Counters since construction or `reset`; one step = one `start` (or a synchronous fetch)."""

    steps: int = 0
    rows_copied: int = 0  # table rows sent to the device, summed over consumers
    table_bytes_copied: int = 0  # bytes of those rows
    bytes_copied: int = 0  # everything sent: rows, remapped ids and offsets
    last_step_bytes: int = 0
    last_step_rows: int = 0
    wait_s: list[float] = field(default_factory=list)  # host wait of each `take`

    def reset(self) -> None:
        self.steps = self.rows_copied = self.table_bytes_copied = self.bytes_copied = 0
        self.last_step_bytes = self.last_step_rows = 0
        self.wait_s = []

    def bytes_per_step(self) -> float:
        return self.bytes_copied / self.steps if self.steps else 0.0


class _Segment(NamedTuple):
    """One tensor inside a packed transfer buffer."""

    start: int  # byte offset, a multiple of ALIGN_BYTES
    nbytes: int
    dtype: torch.dtype
    shape: tuple[int, ...]

    def view(self, buffer: torch.Tensor) -> torch.Tensor:
        """This segment of a (nbytes,) uint8 buffer as a tensor of its dtype and shape (no copy)."""
        return buffer[self.start : self.start + self.nbytes].view(self.dtype).view(self.shape)

    def bytes_of(self, buffer: np.ndarray) -> np.ndarray:
        """This segment of a uint8 numpy buffer, as (shape[0], row bytes) uint8 (no copy)."""
        row_bytes = math.prod(self.shape[1:]) * self.dtype.itemsize
        return buffer[self.start : self.start + self.nbytes].reshape(self.shape[0], row_bytes)


def _layout(parts: list[tuple[torch.dtype, tuple[int, ...]]]) -> tuple[list[_Segment], int]:
    """Aligned segments for `parts` (dtype, shape) packed back to back; returns them and the total bytes."""
    segments, end = [], 0
    for dtype, shape in parts:
        start = -(-end // ALIGN_BYTES) * ALIGN_BYTES
        segment = _Segment(start, math.prod(shape) * dtype.itemsize, dtype, tuple(shape))
        segments.append(segment)
        end = start + segment.nbytes
    return segments, end


class _Ready(NamedTuple):
    buffer: torch.Tensor  # (nbytes,) uint8 on the device (on CPU: the staging buffer itself)
    segments: list[_Segment]  # ids, offsets, then one per table
    event: "torch.cuda.Event | None"  # recorded on the side stream after the copy


class _Job(NamedTuple):
    token_ids: torch.Tensor  # the ids the job serves (matched by identity in `take`)
    ready: list[Future]  # one per consumer, resolved with a _Ready
    distinct: list  # [(uniq, inverse)] once computed (the caller's path computes it on first take)


class _Staging:
    """A consumer's ring of reusable host buffers (pinned on CUDA), each with its last copy's event."""

    def __init__(self, pin_memory: bool):
        self.pin_memory = pin_memory
        self.buffers: list[torch.Tensor | None] = [None] * RING
        self.events: list = [None] * RING
        self.next = 0

    def take(self, nbytes: int) -> tuple[int, torch.Tensor, np.ndarray]:
        """The next buffer of the ring with at least `nbytes`, free to overwrite: (slot, tensor, numpy)."""
        k, self.next = self.next, (self.next + 1) % RING
        if self.events[k] is not None:  # its previous contents are still being copied to the device
            self.events[k].synchronize()
            self.events[k] = None
        buf = self.buffers[k]
        if buf is None or buf.numel() < nbytes:  # grown geometrically, allocated rarely
            size = max(nbytes, 2 * (0 if buf is None else buf.numel()), 1 << 16)
            buf = self.buffers[k] = torch.empty(size, dtype=torch.uint8, pin_memory=self.pin_memory)
        return k, buf[:nbytes], buf.numpy()[:nbytes]


class HostRowPrefetcher:
    """Gathers host-table rows for a step's ids into staging buffers; see the module doc.

    threaded: gather on a worker thread (True) or on the caller inside `take` (False); None: a worker
    only when `device` is CUDA.
    """

    def __init__(
        self,
        consumers: list[HostTable],
        device: torch.device,
        pin_memory: bool = False,
        threaded: bool | None = None,
    ):
        self.consumers, self.device, self.pin_memory = consumers, torch.device(device), pin_memory
        self.stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None
        self.threaded = self.device.type == "cuda" if threaded is None else threaded
        # Each table's rows as raw bytes, so numpy gathers any dtype (bf16 included) without torch ops.
        self._bytes = [[t.detach().view(torch.uint8).numpy() for t in c.tables] for c in consumers]
        self._staging = [_Staging(pin_memory) for _ in consumers]
        self.stats = PrefetchStats()
        self._lock = threading.Lock()  # stats are updated by the worker and the caller
        self._worker = None
        if self.threaded:
            self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="host-row-prefetch")
        self._job: _Job | None = None

    def start(self, token_ids: torch.Tensor) -> None:
        """Begin serving every consumer's rows for `token_ids` (any shape and device); returns at once."""
        ids = token_ids.detach().reshape(-1)
        host, event = ids, None
        if ids.device.type == "cuda":
            host = torch.empty(ids.shape, dtype=ids.dtype, pin_memory=True)
            self.stream.wait_stream(torch.cuda.current_stream(ids.device))  # ids are final there
            with torch.cuda.stream(self.stream):
                host.copy_(ids, non_blocking=True)
                event = torch.cuda.Event()
                event.record(self.stream)
            ids.record_stream(self.stream)
        job = _Job(token_ids, [Future() for _ in self.consumers], [])
        self._new_step()
        self._job = job
        if self._worker is not None:
            self._worker.submit(self._run, job, host, event)
        else:
            job.distinct.append(host)  # the caller's `take` computes the distinct ids on first use

    def _new_step(self) -> None:
        with self._lock:
            self.stats.steps += 1
            self.stats.last_step_bytes = self.stats.last_step_rows = 0

    def _run(self, job: _Job, host: torch.Tensor, event) -> None:
        try:
            if event is not None:
                event.synchronize()
            uniq, inverse = _distinct(host)
            for i, ready in enumerate(job.ready):
                ready.set_result(self._gather(i, uniq, inverse))
        except BaseException as err:  # noqa: BLE001 — handed to every waiting consumer
            for ready in job.ready:
                if not ready.done():
                    ready.set_exception(err)

    def _gather(self, i: int, uniq: np.ndarray, inverse: np.ndarray) -> _Ready:
        """Consumer i's rows for the distinct ids `uniq`, packed and (on CUDA) in flight to the device."""
        consumer = self.consumers[i]
        if uniq.size and (uniq[0] < 0 or uniq[-1] >= consumer.n_ids):
            bad = int(uniq[0] if uniq[0] < 0 else uniq[-1])
            vocab = f"[0, {consumer.n_ids})"
            raise ValueError(f"token id {bad} is outside the {consumer.name} vocabulary {vocab}")
        start = consumer.offsets[uniq]  # (U,) first row of each distinct id
        counts = consumer.offsets[uniq + 1] - start  # (U,)
        local = np.zeros(uniq.size + 1, dtype=np.int64)  # (U + 1,) offsets into the compacted rows
        np.cumsum(counts, out=local[1:])
        n_rows = int(local[-1])
        rows = np.repeat(start - local[:-1], counts) + np.arange(n_rows)  # (R,) table row of each
        parts = [(torch.int64, inverse.shape), (torch.int64, local.shape)]
        parts += [(t.dtype, (n_rows, t.shape[1])) for t in consumer.tables]
        segments, nbytes = _layout(parts)
        slot, staging, raw = self._staging[i].take(nbytes)
        for segment, values in zip(segments[:2], (inverse, local), strict=True):
            raw[segment.start : segment.start + segment.nbytes].view(np.int64)[:] = values
        for table, segment in zip(self._bytes[i], segments[2:], strict=True):
            np.take(table, rows, axis=0, out=segment.bytes_of(raw))  # releases the GIL, one thread
        buffer, event = staging, None
        if self.stream is not None:
            with torch.cuda.stream(self.stream):
                buffer = staging.to(self.device, non_blocking=True)
                event = torch.cuda.Event()
                event.record(self.stream)
            self._staging[i].events[slot] = event
        with self._lock:
            self.stats.rows_copied += n_rows
            self.stats.last_step_rows += n_rows
            self.stats.table_bytes_copied += sum(s.nbytes for s in segments[2:])
            self.stats.bytes_copied += nbytes
            self.stats.last_step_bytes += nbytes
        return _Ready(buffer, segments, event)

    def take(self, i: int, token_ids: torch.Tensor) -> Compacted:
        """Consumer i's tables for `token_ids`; waits for that consumer's copy only. Without a started
        job for these very ids (a call outside the step), fetches this consumer's rows synchronously."""
        job = self._job
        if job is None or job.token_ids is not token_ids:
            job = _Job(token_ids, [Future() for _ in self.consumers], [token_ids.detach().reshape(-1).cpu()])
            self._new_step()
        t0 = time.perf_counter()
        ready = job.ready[i]
        if job is not self._job or (self._worker is None and not ready.done()):
            self._gather_here(job, i)
        ready = ready.result()  # re-raises the gather's error (e.g. an id out of range)
        self.stats.wait_s.append(time.perf_counter() - t0)
        if ready.event is not None:
            stream = torch.cuda.current_stream(self.device)
            stream.wait_event(ready.event)
            ready.buffer.record_stream(stream)  # the allocator must not reuse it while `stream` reads it
        ids, offsets, *tables = (s.view(ready.buffer) for s in ready.segments)
        return Compacted(ids, offsets, tuple(tables))

    def _gather_here(self, job: _Job, i: int) -> None:
        """Gather consumer i's rows for `job` on the calling thread (the path without a worker)."""
        if not isinstance(job.distinct[0], tuple):
            job.distinct[0] = _distinct(job.distinct[0])
        try:
            job.ready[i].set_result(self._gather(i, *job.distinct[0]))
        except Exception as err:  # noqa: BLE001 — raised by `result()` to this and any later take
            job.ready[i].set_exception(err)

    def close(self) -> None:
        """Finish the pending job and stop the worker thread."""
        self._job = None
        if self._worker is not None:
            self._worker.shutdown(wait=True)


def _distinct(host: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """The sorted distinct ids of a (N,) host tensor and each position's index among them."""
    uniq, inverse = np.unique(host.numpy().astype(np.int64, copy=False), return_inverse=True)
    return uniq, inverse.reshape(-1)
