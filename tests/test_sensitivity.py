import pytest
import torch
from torch import nn

from nlprune import sensitivity
from nlprune.models import RNNClassifier

import tiny


def test_sensitivity_scan_restores_weights():
    model, batches = tiny.mlp(), tiny.batches()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    table = sensitivity.sensitivity_scan(model, lambda m: tiny.mean_loss(m, batches), [0.0, 0.5, 1.0])
    assert list(table.index) == ["0.weight", "2.weight"] and list(table.columns) == [0.0, 0.5, 1.0]
    assert table[0.0].tolist() == pytest.approx([tiny.mean_loss(model, batches)] * 2)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


def test_sensitivity_scan_restores_weights_when_evaluate_raises():
    model = tiny.lstm_classifier()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    calls = []

    def evaluate(m):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("evaluation failed")
        return 0.0

    with pytest.raises(RuntimeError, match="evaluation failed"):
        sensitivity.sensitivity_scan(model, evaluate, [0.5, 0.9])
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


def test_sensitivity_scan_rejects_duplicate_sparsities():
    """[0.5, 0.5, 0.0] used to give two columns silently (review finding D7)."""
    with pytest.raises(ValueError, match=r"duplicates \[0.5\]"):
        sensitivity.sensitivity_scan(tiny.mlp(), lambda m: 0.0, [0.5, 0.5, 0.0])
