"""Timed work runs alone (no Ray here): the resource each timing mode asks for, interleaved submission units,
overlap counts from recorded intervals, the contended verdict, and the suite's `timing:` section."""

import textwrap

import pytest

from orchestrator.runs import timing
from orchestrator.suites.expansion import SuiteError, load_suite
from orchestrator.suites.spec import JobSpec
from results import names

DUMMY = """
experiment: t
{timing}
matrix:
  jobs: [dummy]
  families: [dense, l3]
  presets: [debug]
dummy: {{steps: 1}}
"""


def suite(tmp_path, timing_line: str = ""):
    path = tmp_path / "s.yaml"
    path.write_text(textwrap.dedent(DUMMY.format(timing=timing_line)))
    return path


def spec(name: str, kind: str = "infer", group: str = "tiny/base/s0", mode: str = "interleaved") -> JobSpec:
    return JobSpec(name, kind, None, {}, name, {"group": group}, timing=mode)


def test_exclusive_takes_the_whole_unit_and_shared_a_share():
    assert timing.timing_request("exclusive") == {timing.TIMING_RESOURCE: 1.0}
    assert timing.timing_request("interleaved") == {timing.TIMING_RESOURCE: 1.0}
    assert timing.timing_request("shared") == {timing.TIMING_RESOURCE: timing.SHARED_SHARE}
    # a gang's workers split the unit: on one node they hold it whole, and no shared share fits beside
    per_worker = timing.timing_request("exclusive", num_workers=3)[timing.TIMING_RESOURCE]
    assert per_worker == 0.3333 and 1.0 - 3 * per_worker < timing.SHARED_SHARE
    assert round(1.0 / timing.SHARED_SHARE) == 1000


def test_interleaved_jobs_of_one_kind_and_group_are_one_unit():
    a, b = spec("infer/dense"), spec("infer/l3")
    other_group = spec("infer/dense/s1", group="tiny/base/s1")
    alone = spec("train/dense", kind="train", mode="exclusive")
    also_alone = spec("infer/moe/shared", mode="shared")
    units = timing.interleaved_groups([a, alone, b, other_group, also_alone])
    assert units == [(a, b), (alone,), (other_group,), (also_alone,)]


@pytest.mark.parametrize(
    ("others", "expected"),
    [
        ([], 0),
        ([timing.Occupancy("b", "n1", 0.0, 10.0)], 1),  # ran all along
        ([timing.Occupancy("b", "n1", 11.0, 12.0)], 1),  # inside the phase
        ([timing.Occupancy("b", "n1", 0.0, 10.0 - 1e-6)], 0),  # ended just before the phase began
        ([timing.Occupancy("b", "n1", 20.0 + 1e-6, None)], 0),  # started just after it ended
        ([timing.Occupancy("b", "n1", 20.0, None)], 1),  # started the instant it ended: closed bounds
        ([timing.Occupancy("b", "n1", 15.0, None)], 1),  # still running
        ([timing.Occupancy("b", "n2", 0.0, None)], 0),  # another node
        ([timing.Occupancy("a", "n1", 0.0, None)], 0),  # the job itself
        ([timing.Occupancy("p", "n1", 0.0, None)], 0),  # its interleaved partner
        ([timing.Occupancy(j, "n1", 12.0, 13.0) for j in "bcd"], 3),
    ],
)
def test_overlapping_jobs_counts_other_jobs_on_the_node_during_the_phase(others, expected):
    assert timing.overlapping_jobs((10.0, 20.0), "n1", others, exclude={"a", "p"}) == expected


def test_contended_when_shared_unenforced_overlapped_or_loaded():
    cpu = {names.TIMING_NODE_CPUS: 2.0, names.TIMING_THREADS: 1.0}
    quiet = cpu | {names.TIMING_OTHER_CPU_CORES: 1.0 + timing.CPU_SLACK}  # exactly the free core + slack
    assert not timing.contended("exclusive", True, quiet, 0)
    assert not timing.contended("interleaved", True, {}, 0)  # nothing measured: only the scheduler's word
    assert timing.contended("shared", True, quiet, 0)
    assert timing.contended("exclusive", False, quiet, 0)
    assert timing.contended("exclusive", True, quiet, 1)
    loaded = cpu | {names.TIMING_OTHER_CPU_CORES: 1.0 + timing.CPU_SLACK + 0.01}
    assert timing.contended("exclusive", True, loaded, 0)
    assert timing.contended("exclusive", True, {names.TIMING_OTHER_DEVICE_PROCS: 1.0}, 0)


def test_timing_defaults_per_kind_and_suite_override(tmp_path):
    jobs = load_suite(suite(tmp_path)).jobs
    assert {j.timing for j in jobs} == {"shared"}  # dummy reports no speed
    exclusive = load_suite(suite(tmp_path, "timing: {dummy: exclusive}")).jobs
    gang = "timing: {dummy: interleaved}\nresources: {dummy: {num_workers: 2}}"
    with pytest.raises(SuiteError, match="'interleaved' runs a group in one process; resources.dummy.num"):
        load_suite(suite(tmp_path, gang))
    assert {j.timing for j in exclusive} == {"exclusive"}
    assert {j.resolved["timing"] for j in exclusive} == {"exclusive"}
    # numbers measured alone and beside others are different results: different fingerprints
    assert {j.fingerprint for j in jobs}.isdisjoint({j.fingerprint for j in exclusive})


def test_bad_timing_is_refused_at_its_path(tmp_path):
    with pytest.raises(SuiteError) as info:
        load_suite(suite(tmp_path, "timing: {train: interleaved, trian: shared, infer: alone}"))
    errors = dict(info.value.errors)
    assert errors["timing.train"].startswith("'interleaved' applies to job kinds infer, dummy;")
    assert errors["timing.trian"] == "unknown job kind (did you mean 'train'?)"
    assert "'exclusive', 'shared' or 'interleaved'" in errors["timing.infer"]
