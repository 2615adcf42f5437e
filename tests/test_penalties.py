import numpy as np
import pytest
import torch
from torch import nn

from nlprune import models, penalties, prune, train
from nlprune.models import RNNClassifier

import tiny


def test_penalties():
    model = tiny.mlp()
    w0, w2 = model[0].weight, model[2].weight
    assert prune.l1_penalty(model, 0.1).item() == pytest.approx(0.1 * (w0.abs().sum() + w2.abs().sum()).item())
    gl = penalties.group_lasso_penalty(model, 0.5, {"0.weight": 0})
    assert gl.item() == pytest.approx(0.5 * w0.norm(dim=1).sum().item(), rel=1e-6)
    gl_cols = penalties.group_lasso_penalty(model, 1.0, {"2.weight": 1})
    assert gl_cols.item() == pytest.approx(w2.norm(dim=0).sum().item(), rel=1e-6)
    with pytest.raises(ValueError, match="strength"):
        prune.l1_penalty(model, -1.0)
    with pytest.raises(ValueError, match="does not have"):
        penalties.group_lasso_penalty(model, 1.0, {"nope": 0})


def test_group_lasso_drives_whole_rows_to_zero():
    torch.manual_seed(0)
    layer = nn.Linear(6, 6).double()
    x = torch.randn(64, 6, dtype=torch.float64)
    y = x[:, :2].sum(1, keepdim=True).repeat(1, 6) * torch.tensor([1.0, 1, 0, 0, 0, 0], dtype=torch.float64)
    opt = torch.optim.SGD(layer.parameters(), lr=0.05)
    for _ in range(3000):
        opt.zero_grad()
        loss = ((layer(x) - y) ** 2).mean() + penalties.group_lasso_penalty(layer, 0.05, {"weight": 0})
        loss.backward()
        opt.step()
    row_norms = layer.weight.norm(dim=1)
    assert (row_norms[2:] < 0.05).all() and (row_norms[:2] > 0.5).all()


@pytest.mark.parametrize("dim, error", [(5, ValueError), (-3, ValueError), ("1", TypeError),
                                        (1.0, TypeError)])
def test_group_lasso_penalty_rejects_bad_dim(dim, error):
    with pytest.raises(error, match="groups"):
        penalties.group_lasso_penalty(tiny.lstm_classifier(), 0.1, {"out.weight": dim})


def test_group_lasso_penalty_accepts_numpy_dim_and_strength():
    model = tiny.lstm_classifier()
    a = penalties.group_lasso_penalty(model, 0.1, {"out.weight": 1})
    b = penalties.group_lasso_penalty(model, np.float32(0.1), {"out.weight": np.int64(1)})
    assert torch.allclose(a, b)


def test_unit_norm_group_lasso_drives_whole_units_to_zero(toy_loaders):
    model = models.RNNClassifier(12, kind="lstm", embed_dim=8, hidden=16)
    before = prune.unit_norms(model).detach()
    train.fit(model, toy_loaders[0], epochs=25, lr=1e-2, progress=False,
              penalty=lambda m: 0.02 * prune.unit_norms(m).sum())
    after = prune.unit_norms(model).detach()
    assert after.min() < 1e-2 * before.min()       # some units are (nearly) gone
    assert (after < 1e-2).sum() >= 4


def test_penalties_of_no_weights_are_tensors_that_backpropagate():
    """An empty selection gives a zero tensor (on the model's device and dtype), not the float
    0.0, so ``loss + penalty`` still has ``.backward()`` (review finding D6)."""
    model = tiny.lstm_classifier().double()
    for value in (penalties.l1_penalty(model, 0.1, names=[]), penalties.group_lasso_penalty(model, 0.1, {})):
        assert isinstance(value, torch.Tensor) and value.dim() == 0 and value.dtype == torch.float64
        assert float(value) == 0.0
        (value + model.out.weight.sum()).backward()


def test_group_lasso_errors_name_groups():
    with pytest.raises(ValueError, match=r"^groups contains parameters"):
        penalties.group_lasso_penalty(tiny.lstm_classifier(), 0.1, {"nope": 0})
    with pytest.raises(TypeError, match="groups must map"):
        penalties.group_lasso_penalty(tiny.lstm_classifier(), 0.1, ["out.weight"])
