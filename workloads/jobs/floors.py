"""The roofline record of a job (DESIGN.md "floors"): torch's intra-op threads set from the job's CPUs
(recorded as timing/threads), the machine's probe (`workloads.probe`) taken at job start and recorded as
probe/* metrics, and the
fraction of the probed floor each speed metric reached (floor time ÷ measured time; 1 = the hardware's
limit). Bytes and FLOPs come from `workloads.models.accounting`.
"""

import torch

from workloads.models.accounting import ParamCount, decode_step_cost, decode_working_set_bytes, prefill_cost
from workloads.models.config import ModelConfig
from workloads.probe import MachineProbe, probe


def set_threads(threads: int | None) -> int:
    """torch's intra-op threads := `threads` (the job's Ray num_cpus) when given; returns the count used."""
    if threads is not None:
        if threads < 1:
            raise ValueError(f"JobContext.threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def job_probe(device: torch.device, gemm: tuple[int, int, int]) -> MachineProbe:
    """The probe at the current thread count: read bandwidth and GEMM FLOP/s at the job's `gemm` shape."""
    return probe(device, (gemm,))


def probe_metrics(p: MachineProbe) -> dict[str, float]:
    """probe/read_bytes_per_s and probe/gemm_flop_per_s (the best rate probed); the thread count and
    load average are the timed phase's record (workloads.jobs.contention: timing/threads, ...)."""
    out = {"probe/read_bytes_per_s": p.read_bytes_per_s}
    if p.gemm_flop_per_s:
        out["probe/gemm_flop_per_s"] = max(p.gemm_flop_per_s.values())
    return out


def floor_frac(
    p: MachineProbe,
    cost: tuple[float, float],
    seconds: float,
    gemm: tuple[int, int, int],
    working_set: float | None = None,
) -> float:
    """floor_s(bytes at the read rate of `working_set` (default: the bytes), FLOPs at the GEMM rate of
    `gemm`) / measured seconds."""
    nbytes, flops = cost
    return p.floor_s(nbytes, flops, p.flops_per_s(*gemm), working_set) / seconds


def infer_floor_fracs(
    mc: ModelConfig, pc: ParamCount, element: int, job, m: dict, machine: MachineProbe
) -> dict[str, float]:
    """infer/prefill_floor_frac/bs<B> and infer/decode_floor_frac/bs<B> of an infer job (`job`: its
    InferJobConfig; `m`: its measured metrics; device placement; the unsuffixed keys at the largest B):
    the floor of `prefill_cost` / `decode_step_cost` (a MoE batch taken to touch min(B · top_k,
    num_experts) experts per layer; decode read at the rate of `decode_working_set_bytes`) over the
    measured median time."""
    out: dict[str, float] = {}
    for bs in job.batch_sizes:
        if f"infer/decode_tokens_per_s/bs{bs}" not in m:  # stopped before this batch size
            continue
        prefill = prefill_cost(mc, pc, bs, job.prompt_len, element)
        context = job.prompt_len + job.gen_len / 2
        decode = decode_step_cost(mc, pc, bs, context, None, element)
        working_set = decode_working_set_bytes(mc, pc, bs, context, element)
        step_s = bs / m[f"infer/decode_tokens_per_s/bs{bs}"]
        ttft_s = m[f"infer/ttft_s/bs{bs}"]
        pf = floor_frac(machine, prefill, ttft_s, (bs * job.prompt_len, mc.dim, mc.ffn_dim))
        df = floor_frac(machine, decode, step_s, (bs, mc.dim, mc.ffn_dim), working_set)
        out |= {f"infer/prefill_floor_frac/bs{bs}": pf, f"infer/decode_floor_frac/bs{bs}": df}
        if bs == max(job.batch_sizes):
            out |= {"infer/prefill_floor_frac": pf, "infer/decode_floor_frac": df}
    return out
