"""nlprune.cut: gate-aware cutting of RNN/GRU/LSTM and Linear units, checked by output equivalence."""

import numpy as np
import pytest
import torch
from torch import nn

from nlprune import cut, models, prune, schedules, train

import tiny

KINDS = {"rnn": (nn.RNN, 1), "gru": (nn.GRU, 3), "lstm": (nn.LSTM, 4)}
from nlprune.models import RNNClassifier


def silence_dropped(rnn: nn.Module, keeps: list[torch.Tensor]) -> None:
    """Zero the outgoing weights of every dropped unit: its recurrent column, and its column of
    the next layer's input matrix."""
    with torch.no_grad():
        for layer, k in enumerate(keeps):
            dropped = torch.ones(rnn.hidden_size, dtype=torch.bool)
            dropped[k] = False
            getattr(rnn, f"weight_hh_l{layer}")[:, dropped] = 0
            if layer + 1 < rnn.num_layers:
                getattr(rnn, f"weight_ih_l{layer + 1}")[:, dropped] = 0


def run(rnn: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    y, state = rnn(x)
    h = state[0] if isinstance(rnn, nn.LSTM) else state
    return y, h


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("num_layers", [1, 3])
def test_cut_rnn_hidden_keeps_outputs_of_kept_units(kind, batch_first, num_layers):
    cls, gates = KINDS[kind]
    rnn = cls(5, 8, num_layers=num_layers, batch_first=batch_first).eval()
    keeps = [torch.tensor([6, 1, 3]), torch.tensor([0, 2, 7]), torch.tensor([5, 4, 1])][:num_layers]
    silence_dropped(rnn, keeps)
    keep_arg = keeps if num_layers > 1 else keeps[0].tolist()
    small = cut.cut_rnn_hidden(rnn, keep_arg)
    assert type(small) is cls and small.hidden_size == 3 and small.batch_first == batch_first
    assert small.num_layers == num_layers
    x = torch.randn(4, 6, 5) if batch_first else torch.randn(6, 4, 5)
    y, h = run(rnn, x)
    y_small, h_small = run(small, x)
    torch.testing.assert_close(y_small, y[..., keeps[-1]])
    for layer, k in enumerate(keeps):
        torch.testing.assert_close(h_small[layer], h[layer][:, k])
    # parameter count = formula: gates * (h * (in + h) + 2h) for the first layer
    first = sum(p.numel() for n, p in small.named_parameters() if n.endswith("_l0"))
    assert first == gates * (3 * (5 + 3) + 2 * 3)


def test_cut_rnn_hidden_without_silencing_changes_outputs():
    """The equivalence really depends on the dropped units sending nothing."""
    rnn = nn.LSTM(5, 8, batch_first=True).eval()
    x = torch.randn(2, 7, 5)
    y, _ = rnn(x)
    y_small, _ = cut.cut_rnn_hidden(rnn, [0, 1, 2])(x)
    assert not torch.allclose(y_small, y[..., :3], atol=1e-4)


def test_keep_may_be_a_numpy_integer_array_but_not_floats():
    rnn = nn.GRU(3, 4)
    small = cut.cut_rnn_hidden(rnn, np.array([3, 1]))
    torch.testing.assert_close(small.weight_hh_l0, rnn.weight_hh_l0[[3, 1, 7, 5, 11, 9]][:, [3, 1]])
    with pytest.raises(TypeError, match="integer"):
        cut.cut_rnn_hidden(rnn, np.array([0.0, 1.0]))


def test_cut_rnn_hidden_copies_nonlinearity_and_gate_blocks():
    rnn = nn.RNN(3, 4, nonlinearity="relu")
    small = cut.cut_rnn_hidden(rnn, [2])
    assert small.nonlinearity == "relu"
    lstm = nn.LSTM(3, 4)
    small = cut.cut_rnn_hidden(lstm, [2])
    torch.testing.assert_close(small.weight_ih_l0, lstm.weight_ih_l0[[2, 6, 10, 14]])
    torch.testing.assert_close(small.bias_hh_l0, lstm.bias_hh_l0[[2, 6, 10, 14]])


@pytest.mark.parametrize("bad, error, match", [
    ([], ValueError, "empty"),
    ([1, 1], ValueError, "duplicate"),
    ([0, 8], ValueError, r"\[0, 7\]"),
    ([-1], ValueError, r"\[0, 7\]"),
    ([0.5], TypeError, "integer"),
    (torch.tensor([True, False]), TypeError, "integer"),
])
def test_cut_rnn_hidden_rejects_bad_keep(bad, error, match):
    with pytest.raises(error, match=match):
        cut.cut_rnn_hidden(nn.GRU(3, 8), bad)


def test_cut_rnn_hidden_rejects_unsupported_modules():
    with pytest.raises(ValueError, match="bidirectional"):
        cut.cut_rnn_hidden(nn.LSTM(3, 4, bidirectional=True), [0])
    with pytest.raises(ValueError, match="proj_size"):
        cut.cut_rnn_hidden(nn.LSTM(3, 4, proj_size=2), [0])
    with pytest.raises(TypeError, match="nn.RNN, nn.GRU or nn.LSTM"):
        cut.cut_rnn_hidden(nn.Linear(3, 4), [0])
    with pytest.raises(ValueError, match="same number"):
        cut.cut_rnn_hidden(nn.LSTM(3, 4, num_layers=2), [[0, 1], [2]])
    with pytest.raises(ValueError, match="2 layers"):
        cut.cut_rnn_hidden(nn.LSTM(3, 4, num_layers=2), [[0], [1], [2]])


def test_cut_linear_units_equivalence_and_errors():
    first, second = nn.Linear(6, 10), nn.Linear(10, 3)
    keep = [9, 0, 4, 5]
    with torch.no_grad():
        second.weight[:, [i for i in range(10) if i not in keep]] = 0
    x = torch.randn(7, 6)
    new_first, new_second = cut.cut_linear_units(first, second, keep)
    assert (new_first.out_features, new_second.in_features) == (4, 4)
    torch.testing.assert_close(new_second(torch.relu(new_first(x))), second(torch.relu(first(x))))
    torch.testing.assert_close(new_first(x), first(x)[:, keep])
    with pytest.raises(ValueError, match="reads 4 inputs"):
        cut.cut_linear_units(first, nn.Linear(4, 3), keep)
    with pytest.raises(TypeError, match="nn.Linear"):
        cut.cut_linear_outputs(nn.GRU(3, 3), [0])


def test_structured_path_mask_finetune_cut(toy_loaders):
    """Structured mask -> masked fine-tune -> physical cut gives the same outputs."""
    model = tiny.classifier("lstm")
    scores = prune.unit_norms(model).detach()
    keep = cut.keep_top_units(scores, 0.5)
    assert keep.numel() == 5 and torch.equal(keep, keep.sort().values)
    assert set(keep.tolist()) == set(torch.topk(scores, 5).indices.tolist())
    masks = cut.structured_masks(model, keep)
    train.fit(model, toy_loaders[0], epochs=2, masks=masks, progress=False)
    model.eval()
    small = cut.cut_model_hidden(model, keep)
    assert small.rnn.hidden_size == 5 and small.out.in_features == 5
    assert prune.prunable_weights(small) == prune.prunable_weights(model)
    ids, lengths, _ = next(iter(toy_loaders[1]))
    torch.testing.assert_close(small(ids, lengths), model(ids, lengths))
    # parameters removed = LSTM formula 4·h·(in + h + 2) at h = 10 minus at h = 5, plus 2 classes × 5 inputs
    removed = sum(p.numel() for p in model.parameters()) - sum(p.numel() for p in small.parameters())
    assert removed == 4 * (10 * (6 + 10 + 2) - 5 * (6 + 5 + 2)) + 2 * 5


@pytest.mark.parametrize("bad, error, match", [
    (lambda: cut.keep_top_units(torch.ones(4), 1.0), ValueError, "fraction_cut"),
    (lambda: cut.keep_top_units(torch.ones(2, 2), 0.5), TypeError, "1-D"),
    (lambda: cut.structured_masks(nn.Linear(2, 2), [0]), TypeError, "`rnn`"),
    (lambda: prune.unit_norms(models.RNNClassifier(5, hidden=4, num_layers=2)), ValueError, "single-layer"),
    (lambda: prune.activation_scores(tiny.classifier(), []), ValueError, "empty"),
    (lambda: cut.cut_model_hidden(tiny.classifier(), [3, 3]), ValueError, "duplicate"),
])
def test_unit_helpers_reject_bad_input(bad, error, match):
    with pytest.raises(error, match=match):
        bad()


def test_keep_top_units_keeps_at_least_one_unit():
    keep = cut.keep_top_units(torch.tensor([0.3, 0.9, 0.1, 0.5]), 0.9)
    assert keep.tolist() == [1]


def test_keep_top_units_rejects_nan():
    with pytest.raises(ValueError, match="NaN"):
        cut.keep_top_units(torch.tensor([0.3, float("nan"), 0.1, 0.5]), 0.5)


@pytest.mark.parametrize("cls", [nn.RNN, nn.GRU, nn.LSTM])
def test_cut_rnn_hidden_keeps_bias_false(cls):
    torch.manual_seed(0)
    rnn = cls(5, 6, bias=False)
    new = cut.cut_rnn_hidden(rnn, [0, 2, 5])
    assert new.bias is False
    assert all("bias" not in n for n, _ in new.named_parameters())
    x = torch.randn(4, 2, 5)
    with torch.no_grad():
        for name, p in rnn.named_parameters():
            if name.startswith("weight_hh"):
                p[:, [1, 3, 4]] = 0.0  # the dropped units send nothing
        full, _ = rnn(x)
        small, _ = new(x)
    assert torch.allclose(small, full[..., [0, 2, 5]], atol=1e-6)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("batch_first", [True, False])
def test_cut_carries_dropout_batch_first_and_mode(training, batch_first):
    torch.manual_seed(0)
    rnn = nn.LSTM(5, 6, num_layers=2, dropout=0.3, batch_first=batch_first).train(training)
    new = cut.cut_rnn_hidden(rnn, [1, 2, 4])
    assert (new.dropout, new.batch_first, new.training) == (0.3, batch_first, training)
    model = RNNClassifier(12, kind="gru", embed_dim=4, hidden=6, dropout=0.2).train(training)
    small = cut.cut_model_hidden(model, [0, 3])
    assert small.training == training
    assert all(m.training == training for m in small.modules())
    assert small.rnn.batch_first == model.rnn.batch_first


def test_numpy_scalars_are_accepted_where_numbers_are():
    scores = {"w": torch.arange(10.0)}
    masks = prune.compute_masks(scores, np.float32(0.5))
    assert torch.equal(masks["w"], prune.compute_masks(scores, 0.5)["w"])
    rnn = nn.GRU(3, 5)
    new = cut.cut_rnn_hidden(rnn, [np.int64(0), np.int64(3)])
    assert new.hidden_size == 2
    keep = cut.keep_top_units(torch.arange(4.0), np.float64(0.5))
    assert keep.tolist() == [2, 3]
    assert schedules.polynomial_sparsity(np.int64(5), initial=0.0, final=np.float32(0.5), begin=0,
                                     end=10) == pytest.approx(0.5 - 0.5 * 0.5 ** 3)


def test_cut_linear_units_names_the_layer_that_is_not_linear():
    with pytest.raises(TypeError, match="first must be an nn.Linear"):
        cut.cut_linear_units(nn.Conv1d(3, 4, 1), nn.Linear(4, 2), [0])


def test_cut_rnn_hidden_takes_one_numpy_array_per_layer():
    torch.manual_seed(0)
    lstm = nn.LSTM(3, 5, num_layers=2)
    small = cut.cut_rnn_hidden(lstm, [np.array([0, 2, 4]), np.array([1, 2, 3])])
    assert small.hidden_size == 3
    assert torch.equal(small.weight_hh_l1, lstm.weight_hh_l1[cut.unit_rows(torch.tensor([1, 2, 3]), 5, 4)][:, [1, 2, 3]])


def test_keep_index_is_one_check_for_both_frameworks():
    assert cut.keep_index(np.array([2, 0]), 3).tolist() == [2, 0]
    with pytest.raises(TypeError, match="integer"):
        cut.keep_index(torch.tensor([0.0, 1.0]), 3)
    with pytest.raises(TypeError, match="integer"):
        cut.keep_index(np.array([True, False]), 3)
    with pytest.raises(ValueError, match="duplicate"):
        cut.keep_index([1, 1], 3)
