"""An L3 layer whose output is known in closed form, written out with scalars (no code shared with the
layer): catches a scale on the scores (L3_SPEC §1: no 1/sqrt(d)), a wrong softmax axis or a missing norm."""

import math

import pytest
import torch

from workloads.l3.layer import L3Layer


def _rms_normalized(v: list[float], eps: float = 1e-6) -> list[float]:
    rms = math.sqrt(sum(a * a for a in v) / len(v) + eps)
    return [a / rms for a in v]


@pytest.mark.parametrize("impl", ["reference", "sorted"])
def test_two_rows_softmax_closed_form(impl):
    """dim = d_emb = d_up = 2; token 0 owns rows k0 = (1, 0), k1 = (0, 2) with values e0, e1; W_up = I,
    W_mix = [I | 0] (the lookup half only). For x = (3, 4): q = x / rms(x) = (0.8485, 1.1314) · ...,
    scores (q0, 2·q1), weights = softmax(scores), looked up = weights, out = RMSNorm_out(weights)."""
    layer = L3Layer(2, [2, 1], 2, 2, impl=impl).double()
    with torch.no_grad():
        layer.keys.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0], [5.0, 5.0]]))
        layer.values.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [7.0, 7.0]]))
        layer.up.weight.copy_(torch.eye(2))
        layer.mix.weight.copy_(torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]]))
    x = torch.tensor([[[3.0, 4.0]]], dtype=torch.float64)
    q = _rms_normalized([3.0, 4.0])
    scores = [1.0 * q[0] + 0.0 * q[1], 0.0 * q[0] + 2.0 * q[1]]
    z = [math.exp(s) for s in scores]
    weights = [w / sum(z) for w in z]  # softmax over the token's own 2 rows, unscaled
    expected = _rms_normalized(weights)
    got = layer(x, torch.tensor([[0]]))[0, 0].tolist()
    assert got == pytest.approx(expected, rel=1e-9)
    # The same numbers by hand: q = (0.848528, 1.131371), scores (0.848528, 2.262742).
    assert weights[1] == pytest.approx(1 / (1 + math.exp(0.848528137 - 2.262741700)), rel=1e-6)


@pytest.mark.parametrize("impl", ["reference", "sorted"])
def test_one_row_per_token_output_is_the_normalized_value_row(impl):
    """d_t = 1: the softmax is 1 whatever the scores, so the output is RMSNorm_out(W_up · V_t)."""
    layer = L3Layer(2, [1, 1, 1], 2, 2, impl=impl).double()
    with torch.no_grad():
        layer.values.copy_(torch.tensor([[1.0, 0.0], [3.0, 4.0], [0.5, -0.5]]))
        layer.up.weight.copy_(torch.eye(2))
        layer.mix.weight.copy_(torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]]))
    x = torch.tensor([[[1.0, 2.0], [-1.0, 0.5]]], dtype=torch.float64)
    got = layer(x, torch.tensor([[1, 2]]))[0]
    assert got[0].tolist() == pytest.approx(_rms_normalized([3.0, 4.0]), rel=1e-9)
    assert got[1].tolist() == pytest.approx(_rms_normalized([0.5, -0.5]), rel=1e-9)
