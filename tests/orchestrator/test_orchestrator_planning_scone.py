"""The capacity planner knows SCONE: A_fgram is trained (states counted), F is host storage at inference."""

from dataclasses import replace

from clusters import capacity
from clusters.shapes import InferSetup, TrainSetup
from orchestrator.planning.plan import model_shape
from workloads.models import presets
from workloads.models.accounting import count_params, fgram_model_params


def test_scone_shape_and_memory():
    dense, scone = presets.get("tiny", "dense"), presets.get("tiny", "scone")
    d, s = model_shape(dense), model_shape(scone)
    assert s.params_fgram_model == fgram_model_params(scone) == count_params(scone).by_category["fgram_model"]
    assert s.fgram_rows == scone.scone.n_fgrams and d.fgram_rows == 0
    assert s.params_total == count_params(scone).total == d.params_total + s.params_fgram_model
    setup = TrainSetup(micro_batch=2, seq_len=128)
    td, ts = capacity.train_memory(d, setup), capacity.train_memory(s, setup)
    p_b, _, o_b = capacity.STATE_BYTES[setup.precision]
    assert ts.params - td.params == p_b * s.params_fgram_model  # A_fgram's weights on every GPU
    assert ts.optimizer - td.optimizer == o_b * s.params_fgram_model
    f_bytes = scone.scone.n_fgrams * scone.dim * 2
    infer = InferSetup(batch=8, context_len=256, dtype_bytes=2, l3_placement="offload")
    mi, md = capacity.infer_memory(s, infer), capacity.infer_memory(d, infer)
    assert mi.weights == md.weights  # inference-resident: A_fgram is gone
    assert mi.fgram_table_host == f_bytes and mi.device_total == md.device_total  # F in host memory
    assert mi.fgram_bytes_per_step == 8 * scone.dim * 2
    on_device = capacity.infer_memory(s, replace(infer, l3_placement="device"))
    assert on_device.fgram_table_device == f_bytes and on_device.fgram_table_host == 0
    assert (
        on_device.device_total
        == capacity.infer_memory(d, replace(infer, l3_placement="device")).device_total + f_bytes
    )
    assert capacity.infer_memory(replace(s, fgram_rows=0), infer).fgram_table_host == 0


def test_planned_train_flops_count_a_fgram():
    """The plan's FLOPs per token add A_fgram's 6·N_fgram per encoded f-gram token, at the bound of max_n
    tokens per position (runs measure fewer); dense's terms are untouched."""
    dense, scone = presets.get("tiny", "dense"), presets.get("tiny", "scone")
    d, s = model_shape(dense), model_shape(scone)
    assert d.train_flops == (6.0 * count_params(dense).flops_active, d.train_flops[1])
    extra = 6.0 * fgram_model_params(scone) * scone.scone.max_n
    assert s.train_flops[0] == d.train_flops[0] + extra and s.train_flops[1] == d.train_flops[1]
    assert s.train_flops_per_token(128) - d.train_flops_per_token(128) == extra
