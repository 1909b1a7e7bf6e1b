"""What else ran on the node while a job's timed phase ran (issue 26): the phase's wall-clock bounds, the
load average, the CPU time other processes used meanwhile (psutil) and, on CUDA, the other processes on
the device (NVML via pynvml). Each is omitted where its source is missing (the bare GPU image has no
psutil): a number that was not measured is never guessed. The orchestrator adds the suite's own jobs.
"""

import os
import sys
import time

# MLflow keys (results.names holds them too; workloads import nothing of results).
PHASE_START_S = "timing/phase_start_s"  # epoch seconds
PHASE_END_S = "timing/phase_end_s"
LOAD_AVG_1M = "timing/load_avg_1m"  # the node's 1-minute load average when the phase ended
OTHER_CPU_CORES = "timing/other_cpu_cores"  # CPU-seconds of other processes per second of the phase
NODE_CPUS = "timing/node_cpus"  # CPUs this process may run on
THREADS = "timing/threads"  # torch intra-op threads of the job
OTHER_DEVICE_PROCS = "timing/other_device_procs"  # CUDA: other processes holding the job's device


def _cpu_seconds() -> tuple[float, float] | None:
    """(busy CPU-seconds of the whole node, CPU-seconds of this process and its children), or None."""
    try:
        import psutil
    except ImportError:
        return None
    node = psutil.cpu_times()
    # guest time is already inside user time on Linux; idle and iowait are not busy
    busy = sum(getattr(node, f, 0.0) for f in ("user", "nice", "system", "irq", "softirq", "steal"))
    own = psutil.Process().cpu_times()
    return busy, own.user + own.system + own.children_user + own.children_system


def _other_device_processes(device: str) -> int | None:
    """Processes other than this one with memory on the CUDA device (None: not CUDA, or no NVML)."""
    if not device.startswith("cuda"):
        return None
    try:
        import pynvml
        import torch

        pynvml.nvmlInit()
        index = torch.device(device).index
        index = torch.cuda.current_device() if index is None else index
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        procs = pynvml.nvmlDeviceGetComputeRunningProcesses(handle)
    except Exception:  # noqa: BLE001 - pynvml missing or NVML unusable: the number is not measured
        return None
    return sum(p.pid != os.getpid() for p in procs)


class TimedPhase:
    """Brackets a job's timed phase; `metrics()` afterwards (all of them omitted before it ran).

    with TimedPhase(device) as phase:
        timed_loop()
    result_metrics |= phase.metrics()
    """

    def __init__(self, device: object = "cpu"):
        self.device = str(device)  # a torch.device or its name; torch is imported only for CUDA
        self._start_s = self._end_s = None
        self._cpu0 = self._cpu1 = None
        self._others: int | None = None

    def __enter__(self) -> "TimedPhase":
        self._others = _other_device_processes(self.device)
        self._cpu0, self._start_s = _cpu_seconds(), time.time()
        return self

    def __exit__(self, *exc) -> None:
        self._end_s, self._cpu1 = time.time(), _cpu_seconds()
        after = _other_device_processes(self.device)
        if after is not None:
            self._others = max(self._others or 0, after)

    def metrics(self) -> dict[str, float]:
        if self._end_s is None:
            return {}
        wall = max(self._end_s - self._start_s, 1e-9)
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        out = {PHASE_START_S: self._start_s, PHASE_END_S: self._end_s, NODE_CPUS: float(cpus or 1)}
        torch = sys.modules.get("torch")  # a job that timed torch work has imported it
        if torch is not None:
            out[THREADS] = float(torch.get_num_threads())
        if hasattr(os, "getloadavg"):
            out[LOAD_AVG_1M] = os.getloadavg()[0]
        if self._cpu0 is not None and self._cpu1 is not None:
            (busy0, own0), (busy1, own1) = self._cpu0, self._cpu1
            out[OTHER_CPU_CORES] = max(0.0, (busy1 - busy0) - (own1 - own0)) / wall
        if self._others is not None:
            out[OTHER_DEVICE_PROCS] = float(self._others)
        return out
