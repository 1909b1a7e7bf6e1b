"""Break the code on purpose and check that `make test` notices: each mutation is a one-line text patch,
applied to a clean checkout, its named tests run (`-m "not gpu and not slow"`: `make test`'s selection),
then the file is restored byte for byte (and its mtime, so bytecode and numba caches stay honest).

    python .ci/mutations.py                  # all; prints "mutation | file | caught by | result"
    python .ci/mutations.py --only cap-dropped --no-baseline
"""

import argparse
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from pytest_group import ROOT, run_pytest

TIMEOUT_S = 1200  # a mutation that hangs its tests counts as not caught


@dataclass(frozen=True)
class Mutation:
    name: str
    item: str  # the issue-22 item it probes ("table": the issue's own table)
    what: str
    file: str
    old: str  # must occur exactly once in the file
    new: str
    tests: tuple[str, ...]  # the narrowest test files / node ids that should catch it


T = "tests/"
CLOSED_FORMS = T + "workloads/jobs/test_jobs_train_closed_forms.py"
INTERRUPTS = T + "orchestrator/test_orchestrator_interrupts.py"
MUTATIONS = (
    Mutation("cap-dropped", "table", "to_jsonable drops a field named cap (l3.cap leaves the fingerprint)",
             "workloads/jobs/result.py",
             "return {k: to_jsonable(v) for k, v in asdict(obj).items()}",
             'return {k: to_jsonable(v) for k, v in asdict(obj).items() if k != "cap"}',
             (T + "orchestrator/test_fingerprint_coverage.py",)),
    Mutation("tokens-no-accum", "table", "tokens per step ignore grad_accum", "workloads/jobs/train.py",
             "return self.batch_size * self.grad_accum * self.data_config().seq_len",
             "return self.batch_size * self.data_config().seq_len",
             (CLOSED_FORMS,)),
    Mutation("eval-on-train", "table", "the train job evaluates on the train split", "workloads/jobs/loop.py",
             'self.val = data.packed("val", self.seq_len, shuffle=False)',
             'self.val = data.packed("train", self.seq_len, shuffle=False)',
             (CLOSED_FORMS + "::test_evaluation_sees_validation_windows_only",)),
    Mutation("world-size-unfingerprinted", "1", "num_workers left out of the resolved config",
             "orchestrator/suites/expansion.py",
             'resolved["num_workers"] = resources.num_workers', "pass",
             (T + "orchestrator/test_fingerprint_coverage.py",)),
    Mutation("code-not-fingerprinted", "1", "the fingerprint hashes the config without the code version",
             "orchestrator/suites/fingerprint.py",
             'canonical_json({"config": resolved, "code": code if code is not None else code_version()})',
             'canonical_json({"config": resolved})',
             (T + "orchestrator/test_fingerprint_code_version.py",)),
    Mutation("budget-floor", "2", "token_budget → steps rounds down", "workloads/jobs/train.py",
             "return math.ceil(self.token_budget /", "return math.floor(self.token_budget /",
             (CLOSED_FORMS,)),
    Mutation("mfu-one-rank", "2", "MFU divides by one device's peak whatever the world size",
             "workloads/jobs/metrics.py",
             "return tokens_per_s * flops_per_token / (peak_flops * world_size)",
             "return tokens_per_s * flops_per_token / peak_flops",
             (T + "workloads/jobs/test_jobs_metrics.py",)),
    Mutation("prefill-per-row", "2", "prefill tokens/s counts one row (P/t, not B·P/t)",
             "workloads/jobs/rounds.py",
             'm[f"infer/{prefix}prefill_tokens_per_s"] = B * P / times.prefill.median_s',
             'm[f"infer/{prefix}prefill_tokens_per_s"] = P / times.prefill.median_s',
             (T + "workloads/jobs/test_jobs_decode_timing.py",)),
    Mutation("cancel-leaves-jobs-open", "3", "a Ctrl-C does not close the running jobs' runs",
             "orchestrator/api.py", "tracker.kill(job.run_id, \"cancelled by the user\")", "pass",
             (INTERRUPTS + "::test_ctrl_c_in_the_cli_exits_130_and_closes_every_run_killed",)),
    Mutation("timer-keeps-warmup", "3", "the step timer's median includes its warm-up steps",
             "workloads/jobs/timing.py", "return TimingStats.of(self.samples_s()[self.warmup :])",
             "return TimingStats.of(self.samples_s())",
             (T + "workloads/jobs/test_jobs_timing.py::test_step_timer_drops_the_warmup",)),
    Mutation("store-judged-late", "3", "MLflow opens an unusable sqlite store before it is judged",
             "orchestrator/runs/tracking.py",
             "check_uri(self.uri)  # before MlflowClient", "pass  # before MlflowClient",
             (T + "orchestrator/test_store_path.py",)),
    Mutation("code-version-head", "4", "the code version is the HEAD commit, not the workloads/ tree",
             "orchestrator/suites/fingerprint.py", "tree = workloads_tree()", "tree = git_commit()",
             (T + "orchestrator/test_fingerprint_code_version.py",)),
    Mutation("oom-retry-records-request", "4", "an OOM-halved retry records the suite's micro-batch",
             "orchestrator/suites/spec.py",
             'resolved = {**self.resolved, "job": to_jsonable(config)}', "resolved = self.resolved",
             (T + "orchestrator/test_orchestrator_scheduling.py",)),
    Mutation("first-line-driver-clock", "4", "progress rates steps by the driver's clock (batched events)",
             "orchestrator/runs/driver.py",
             "sent_s = event.time_s if event.time_s is not None else time.monotonic()",
             "sent_s = time.monotonic()",
             (T + "orchestrator/test_orchestrator_render.py",)),
    Mutation("oom-one-cpu-wording", "4", "the OOM classifier misses 'DefaultCPUAllocator: not enough memory'",
             "orchestrator/runs/outcomes.py", '"DefaultCPUAllocator: not enough memory",', "",
             (T + "orchestrator/test_orchestrator_scheduling.py",)),
    Mutation("pipe-ignores-columns", "4", "piped output ignores an explicit COLUMNS",
             "orchestrator/cli/render.py",
             "return Console()", "return Console(width=240)",
             (T + "orchestrator/test_orchestrator_render.py",)),
    Mutation("paper-count-increments", "5", "lzw-paper adds 1 to a phrase at a line end instead of setting 1",
             "workloads/l3/lzw_paper.py", "count[found] = 1  # the assignment",
             "count[found] += 1  # the assignment",
             (T + "workloads/l3/test_lzw_paper.py",)),
    Mutation("paper-lines-no-newline", "5", "lzw-paper tokenizes lines without their newline",
             "workloads/l3/lzw_paper.py", 'pieces = [line + "\\n" for line in lines[:-1]]',
             "pieces = [line for line in lines[:-1]]",
             (T + "workloads/l3/test_lzw_paper.py",)),
)  # fmt: skip


def dirty() -> str:
    """Tracked files that differ from HEAD (a mutation restores its file from memory, but never on top of
    someone's edits)."""
    out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                         capture_output=True, text=True, check=True)  # fmt: skip
    return out.stdout.strip()


def pytest(targets: list[str], log: Path) -> tuple[int, list[str], float]:
    """(exit code, -1 when it hung; failed or errored node ids; seconds) of one pytest run over targets."""
    rc, text, seconds = run_pytest(targets, log, TIMEOUT_S, "-x")
    failed = re.findall(r"^(?:FAILED|ERROR) (\S+)", text, flags=re.MULTILINE)
    return -1 if rc is None else rc, failed, seconds


class Patched:
    """The mutation applied for the block; the original bytes and mtime come back however it ends."""

    def __init__(self, m: Mutation) -> None:
        self.path = ROOT / m.file
        self.original = self.path.read_bytes()
        text = self.original.decode()
        if text.count(m.old) != 1:
            raise LookupError(f"{m.name}: the text to mutate occurs {text.count(m.old)} times in {m.file}")
        self.mutated = text.replace(m.old, m.new).encode()
        self.stat = self.path.stat()

    def __enter__(self) -> None:
        self.path.write_bytes(self.mutated)
        # a whole second apart: .pyc files key on (mtime in s, size), so a same-size mutation written in
        # the second of the original would otherwise run the original's bytecode
        mtime_ns = max(time.time_ns(), self.stat.st_mtime_ns + 2_000_000_000)
        os.utime(self.path, ns=(mtime_ns, mtime_ns))

    def __exit__(self, *exc) -> None:
        self.path.write_bytes(self.original)
        os.utime(self.path, ns=(self.stat.st_atime_ns, self.stat.st_mtime_ns))


def _terminate(signum, frame):
    raise KeyboardInterrupt  # SIGTERM / SIGHUP unwind like Ctrl-C, through every restore


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run these mutations only")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    parser.add_argument(
        "--no-baseline",
        action="store_true",
        help="skip the unmutated run of the named tests (which must pass for a catch to count)",
    )
    parser.add_argument("--logs", type=Path, default=ROOT / ".isosparse" / "mutations")
    args = parser.parse_args()
    chosen = [m for m in MUTATIONS if not args.only or m.name in args.only]
    unknown = set(args.only or ()) - {m.name for m in MUTATIONS}
    if unknown:
        parser.error(f"unknown mutation(s) {sorted(unknown)}; --list shows them")
    if args.list:
        for m in chosen:
            print(f"{m.name:28} item {m.item:5} {m.what}")
        return 0
    if dirty():
        print(f"refusing to mutate a dirty checkout (commit or stash first):\n{dirty()}", file=sys.stderr)
        return 2
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _terminate)
    args.logs.mkdir(parents=True, exist_ok=True)
    patches = {m.name: Patched(m) for m in chosen}  # every mutation applies before any test runs
    if not args.no_baseline:
        targets = sorted({t for m in chosen for t in m.tests})
        rc, failed, seconds = pytest(targets, args.logs / "baseline.log")
        print(f"baseline: {len(targets)} targets, rc={rc}, {seconds:.0f} s", flush=True)
        if rc != 0:
            print(f"the unmutated tests fail ({failed}); see {args.logs / 'baseline.log'}", file=sys.stderr)
            return 2
    rows = []
    for m in chosen:
        with patches[m.name]:
            rc, failed, seconds = pytest(list(m.tests), args.logs / f"{m.name}.log")
        result = {0: "SURVIVED", 1: "caught", -1: "hung"}.get(rc, f"error rc={rc}")
        rows.append((m.name, m.item, m.file, failed[0] if failed else "-", result, seconds))
        print(f"{m.name}: {result} ({seconds:.0f} s) by {failed[0] if failed else '-'}", flush=True)
    left = [m.file for m in chosen if (ROOT / m.file).read_bytes() != patches[m.name].original]
    if left:  # Patched restores on every exit; this checks that it did
        raise RuntimeError(f"mutated files not restored: {left}")
    print("\nmutation | item | file | caught by | result | s")
    for name, item, file, caught, result, seconds in rows:
        print(f"{name} | {item} | {file} | {caught} | {result} | {seconds:.0f}")
    return 0 if all(r[4] == "caught" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
