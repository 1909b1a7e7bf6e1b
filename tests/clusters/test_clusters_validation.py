"""The capacity model against measurements of the real model on CPU (and GPU when there is one).

What is comparable: `clusters.capacity` predicts bytes of tensors (parameters, gradients, AdamW states,
activations), which is what `torch.cuda.max_memory_allocated` (the train job's mem/peak_device_bytes)
counts on a GPU. On CPU the job's mem/peak_host_bytes is the process's peak RSS (interpreter, libraries,
data), so it is not comparable; instead these tests count CPU tensor allocations with the torch profiler
(profile_memory: every allocation and free in order; the peak of the running sum is the CPU analogue of
max_memory_allocated), and saved-for-backward tensors with `saved_tensors_hooks`.
"""

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile
from torch.utils.checkpoint import checkpoint

from clusters.capacity import activation_bytes, train_memory
from clusters.shapes import TrainSetup
from orchestrator.planning.plan import model_shape
from workloads.models import presets
from workloads.models.transformer import Transformer, rope_angles

FAMILIES = ("dense", "l3", "moe")


def _model(preset: str, family: str) -> Transformer:
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # uniform L3 allocation without a corpus is intended here
        return Transformer(presets.get(preset, family))


def _saved_bytes(model: Transformer, ids: torch.Tensor) -> int:
    """Bytes of the distinct non-parameter storages autograd saves for backward in one forward + loss."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        logits, _ = model(ids[:, :-1])
        F.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten())
    return sum(seen.values())


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("batch,seq", [(2, 32), (4, 64)])
def test_saved_activations_match_formula(family, batch, seq):
    model = _model("debug", family)
    ids = torch.randint(0, model.config.vocab_size, (batch, seq + 1))
    measured = _saved_bytes(model, ids)
    predicted = sum(
        activation_bytes(model_shape(model.config), TrainSetup(batch, seq, precision="fp32")).values()
    )
    # dense and MoE are counted tensor by tensor; L3 assumes the sorted lookup's average padding (1.29x)
    # where the uniform allocation of an untrained model pads less.
    tolerance = 0.05 if family == "l3" else 0.01
    assert predicted == pytest.approx(measured, rel=tolerance)


def _peak_allocated(fn) -> int:
    """Peak of the running sum of CPU tensor allocations (bytes) made while `fn` runs."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    running = peak = 0
    for event in sorted(events, key=lambda e: e.start_ns()):
        running += event.nbytes()
        peak = max(peak, running)
    return peak


def _measured_step_peak(model: Transformer, batch: int, seq: int, checkpointed: bool) -> int:
    """Peak tensor bytes of a steady-state training step (fused AdamW, as the train job builds it)."""
    cfg = model.config
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)

    def forward(ids):
        if not checkpointed:
            return model(ids)[0]
        h = model.tok_emb(ids)
        cos, sin = rope_angles(torch.arange(ids.shape[1]), cfg.head_dim, cfg.rope_theta)
        for block in model.layers:
            h = checkpoint(lambda h, b=block: b(h, ids, cos, sin, None, 0)[0], h, use_reentrant=False)
        return model.lm_head(model.norm(h))

    def step():
        ids = torch.randint(0, cfg.vocab_size, (batch, seq + 1))
        logits = forward(ids[:, :-1])
        F.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten()).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()  # creates the optimizer states; the profiled step is the steady state
    states = sum(p.numel() * p.element_size() for p in model.parameters())
    states += sum(t.numel() * t.element_size() for s in opt.state.values() for t in s.values())
    return states + _peak_allocated(step)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("checkpointed", [False, True])
def test_training_step_peak_within_15_percent(family, checkpointed):
    model = _model("debug", family)
    measured = _measured_step_peak(model, 4, 64, checkpointed)
    setup = TrainSetup(4, 64, precision="fp32", optimizer_impl="fused", activation_checkpointing=checkpointed)
    predicted = train_memory(model_shape(model.config), setup).peak
    assert abs(predicted / measured - 1) < 0.15, (predicted, measured)


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_tiny_training_step_peak(family):
    model = _model("tiny", family)
    measured = _measured_step_peak(model, 8, 128, False)
    setup = TrainSetup(8, 128, precision="fp32", optimizer_impl="fused")
    predicted = train_memory(model_shape(model.config), setup).peak
    print(
        f"tiny {family}: measured {measured:,} predicted {predicted:,.0f} ({predicted / measured - 1:+.1%})"
    )
    assert abs(predicted / measured - 1) < 0.15
