"""nlprune.cut: gate-aware cutting of RNN/GRU/LSTM and Linear units, checked by output equivalence."""

import numpy as np
import pytest
import torch
from torch import nn

from nlprune import cut, models, prune, train

KINDS = {"rnn": (nn.RNN, 1), "gru": (nn.GRU, 3), "lstm": (nn.LSTM, 4)}


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


def tiny_classifier(kind: str = "lstm") -> models.RNNClassifier:
    torch.manual_seed(0)
    return models.RNNClassifier(20, kind=kind, embed_dim=6, hidden=10).eval()


def test_unit_norms_match_a_loop_over_each_units_weights():
    model = tiny_classifier("gru")
    rnn, hidden = model.rnn, 10
    for p in (1, 2):
        expected = []
        for j in range(hidden):
            rows = [g * hidden + j for g in range(3)]
            hh = rnn.weight_hh_l0.detach()
            cols = [r for r in range(3 * hidden) if r not in rows]  # own rows already counted
            parts = [rnn.weight_ih_l0[rows].flatten(), hh[rows].flatten(), hh[cols, j],
                     model.out.weight[:, j]]
            expected.append(torch.linalg.vector_norm(torch.cat([t.detach() for t in parts]), ord=p))
        torch.testing.assert_close(cut.unit_norms(model, p=p).detach(), torch.stack(expected))
    with pytest.raises(ValueError, match="p must be"):
        cut.unit_norms(model, p=0)


def test_unit_norm_group_lasso_drives_whole_units_to_zero(toy_loaders):
    model = models.RNNClassifier(12, kind="lstm", embed_dim=8, hidden=16)
    before = cut.unit_norms(model).detach()
    train.fit(model, toy_loaders[0], epochs=25, lr=1e-2, progress=False,
              penalty=lambda m: 0.02 * cut.unit_norms(m).sum())
    after = cut.unit_norms(model).detach()
    assert after.min() < 1e-2 * before.min()       # some units are (nearly) gone
    assert (after < 1e-2).sum() >= 4


def test_structured_path_mask_finetune_cut(toy_loaders):
    """Structured mask -> masked fine-tune -> physical cut gives the same outputs."""
    model = tiny_classifier("lstm")
    scores = cut.unit_norms(model).detach()
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


def test_activation_and_taylor_unit_scores(toy_loaders):
    model = tiny_classifier("lstm")
    masks = cut.structured_masks(model, [0, 1, 2, 3, 4])
    prune.apply_masks(model, masks)
    act = cut.activation_scores(model, toy_loaders[1])
    assert act.shape == (10,) and (act[5:] == 0).all() and (act[:5] > 0).all()

    def loss_fn(m, batch):
        ids, lengths, labels = batch
        return nn.functional.cross_entropy(m(ids, lengths), labels)

    taylor = cut.unit_taylor_scores(model, toy_loaders[1], loss_fn)
    assert taylor.shape == (10,) and (taylor[5:] == 0).all()
    # the score predicts the loss change of removing one unit to first order
    j = int(taylor.argmax())
    base = sum(loss_fn(model, b).item() for b in toy_loaders[1]) / len(toy_loaders[1])
    removed = cut.cut_model_hidden(model, [i for i in range(10) if i != j])
    with torch.no_grad():
        after = sum(loss_fn(removed, b).item() for b in toy_loaders[1]) / len(toy_loaders[1])
    assert abs(after - base) > 0.2 * float(taylor[j])


def test_activation_scores_leave_out_padding():
    torch.manual_seed(0)
    model = tiny_classifier("lstm")
    ids, lengths = torch.tensor([[4, 5, 6, 0], [7, 8, 0, 0]]), torch.tensor([3, 2])
    act = cut.activation_scores(model, [(ids, lengths, torch.tensor([0, 1]))])
    # the hidden states of each sequence alone, without padding
    states = torch.cat([model.rnn(model.embedding(ids[i:i + 1, :n]))[0][0] for i, n in enumerate([3, 2])])
    torch.testing.assert_close(act, states.abs().mean(dim=0))
    wider = torch.cat([ids, torch.zeros(2, 3, dtype=torch.long)], dim=1)  # more padding, same mean
    torch.testing.assert_close(cut.activation_scores(model, [(wider, lengths, torch.tensor([0, 1]))]), act)


def test_activation_scores_on_language_model():
    torch.manual_seed(0)
    lm = models.LSTMLanguageModel(15, embed_dim=4, hidden=6).eval()
    batches = [(torch.randint(0, 15, (2, 5)), torch.randint(0, 15, (2, 5)))]
    act = cut.activation_scores(lm, batches)
    y, _ = lm.rnn(lm.embedding(batches[0][0]))
    torch.testing.assert_close(act, y.abs().mean(dim=(0, 1)))
    small = cut.cut_model_hidden(lm, [0, 2])
    assert small.out.in_features == 2 and small.out.out_features == 15


@pytest.mark.parametrize("bad, error, match", [
    (lambda: cut.keep_top_units(torch.ones(4), 1.0), ValueError, "fraction_cut"),
    (lambda: cut.keep_top_units(torch.ones(2, 2), 0.5), TypeError, "1-D"),
    (lambda: cut.structured_masks(nn.Linear(2, 2), [0]), TypeError, "`rnn`"),
    (lambda: cut.unit_norms(models.RNNClassifier(5, hidden=4, num_layers=2)), ValueError, "single-layer"),
    (lambda: cut.activation_scores(tiny_classifier(), []), ValueError, "empty"),
    (lambda: cut.cut_model_hidden(tiny_classifier(), [3, 3]), ValueError, "duplicate"),
])
def test_unit_helpers_reject_bad_input(bad, error, match):
    with pytest.raises(error, match=match):
        bad()
