import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from nlprune import cut, data, models, prune
from nlprune.models import RNNClassifier

import tiny


def small_model():
    return RNNClassifier(50, kind="lstm", embed_dim=8, hidden=6)


def test_gradient_scores_match_finite_differences():
    model, batches = tiny.mlp(), tiny.batches()
    grads = prune.accumulated_gradients(model, batches, tiny.ce)
    eps = 1e-6
    for name, param in model.named_parameters():
        if name not in grads:
            continue
        for idx in [(0, 0), (1, 2), (2, 3)]:
            with torch.no_grad():
                saved = param[idx].item()
                param[idx] = saved + eps
                up = tiny.mean_loss(model, batches)
                param[idx] = saved - eps
                down = tiny.mean_loss(model, batches)
                param[idx] = saved
            assert grads[name][idx].item() == pytest.approx((up - down) / (2 * eps), rel=1e-5, abs=1e-9)
    scores = prune.gradient_scores(model, batches, tiny.ce)
    assert all(torch.equal(scores[n], grads[n].abs()) for n in grads)


def test_taylor_scores_are_abs_weight_times_gradient_and_predict_the_loss_change():
    model, batches = tiny.mlp(), tiny.batches()
    grads = prune.accumulated_gradients(model, batches, tiny.ce)
    taylor = prune.taylor_scores(model, batches, tiny.ce)
    w = model[0].weight
    assert torch.allclose(taylor["0.weight"], (w.detach() * grads["0.weight"]).abs())
    # zeroing one small weight changes the loss by about -g*w (first order)
    base = tiny.mean_loss(model, batches)
    with torch.no_grad():
        saved = w[1, 1].item()
        w[1, 1] = saved * 1e-3  # shrink almost to zero: the first-order term dominates
        change = tiny.mean_loss(model, batches) - base
        w[1, 1] = saved
    predicted = -grads["0.weight"][1, 1].item() * saved * (1 - 1e-3)
    assert change == pytest.approx(predicted, rel=0.05, abs=1e-6)


def test_zeroed_weight_still_has_a_gradient():
    model, batches = tiny.mlp(), tiny.batches()
    with torch.no_grad():
        model[0].weight[2, 3] = 0.0
    grads = prune.accumulated_gradients(model, batches, tiny.ce)
    assert grads["0.weight"][2, 3].abs().item() > 1e-6


def test_gradient_scores_leave_model_state_alone():
    model = RNNClassifier(10, embed_dim=4, hidden=4, dropout=0.5).train()
    batch = data.collate_padded([([2, 3, 4], 1), ([5, 6], 0)])
    loss = lambda m, b: nn.functional.cross_entropy(m(b[0], b[1]), b[2])
    scores = prune.gradient_scores(model, [batch], loss)
    assert model.training and all(p.grad is None for p in model.parameters())
    assert set(scores) == set(prune.prunable_weights(model))
    with pytest.raises(ValueError, match="empty"):
        prune.gradient_scores(model, [], loss)

    def failing(m, b):
        raise RuntimeError("loss failed")

    with pytest.raises(RuntimeError):
        prune.gradient_scores(model, [batch], failing)
    assert model.training  # restored even when the loss raises


def test_random_scores_seeded():
    model = tiny.mlp()
    a, b, c = (prune.random_scores(model, seed=s) for s in (1, 1, 2))
    assert all(torch.equal(a[n], b[n]) for n in a) and not torch.equal(a["0.weight"], c["0.weight"])


@pytest.mark.parametrize("p,dim,amount", [(1, 0, 0.5), (2, 0, 0.25), (2, 1, 0.4), (1, 1, 0.75)])
def test_row_norm_masks_equal_torch_ln_structured(p, dim, amount):
    torch.manual_seed(3)
    layer = nn.Linear(12, 8)
    norms = prune.row_norm_scores(layer.weight, p=p, dim=dim)
    keep = prune.compute_masks({"w": norms}, amount)["w"]
    ours = keep.unsqueeze(1 - dim).expand_as(layer.weight)  # one entry per row (dim 0) or column (dim 1)
    torch_prune.ln_structured(layer, "weight", amount=amount, n=p, dim=dim)
    assert torch.equal(ours, layer.weight_mask.bool())


def test_row_norm_scores_bad_input():
    with pytest.raises(TypeError):
        prune.row_norm_scores(torch.ones(3))
    with pytest.raises(ValueError, match="dim"):
        prune.row_norm_scores(torch.ones(3, 3), dim=2)


def test_magnitude_scores_unknown_name_raises():
    with pytest.raises(ValueError, match="does not have"):
        prune.magnitude_scores(small_model(), ["rnn.weight_xx"])


def test_prunable_weights_are_matrices_only():
    assert prune.prunable_weights(small_model()) == [
        "embedding.weight", "rnn.weight_ih_l0", "rnn.weight_hh_l0", "out.weight"]


def test_unit_norms_match_a_loop_over_each_units_weights():
    model = tiny.classifier("gru")
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
        torch.testing.assert_close(prune.unit_norms(model, p=p).detach(), torch.stack(expected))
    with pytest.raises(ValueError, match="p must be"):
        prune.unit_norms(model, p=0)


def test_activation_and_taylor_unit_scores(toy_loaders):
    model = tiny.classifier("lstm")
    masks = cut.structured_masks(model, [0, 1, 2, 3, 4])
    prune.apply_masks(model, masks)
    act = prune.activation_scores(model, toy_loaders[1])
    assert act.shape == (10,) and (act[5:] == 0).all() and (act[:5] > 0).all()

    def loss_fn(m, batch):
        ids, lengths, labels = batch
        return nn.functional.cross_entropy(m(ids, lengths), labels)

    taylor = prune.unit_taylor_scores(model, toy_loaders[1], loss_fn)
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
    model = tiny.classifier("lstm")
    ids, lengths = torch.tensor([[4, 5, 6, 0], [7, 8, 0, 0]]), torch.tensor([3, 2])
    act = prune.activation_scores(model, [(ids, lengths, torch.tensor([0, 1]))])
    # the hidden states of each sequence alone, without padding
    states = torch.cat([model.rnn(model.embedding(ids[i:i + 1, :n]))[0][0] for i, n in enumerate([3, 2])])
    torch.testing.assert_close(act, states.abs().mean(dim=0))
    wider = torch.cat([ids, torch.zeros(2, 3, dtype=torch.long)], dim=1)  # more padding, same mean
    torch.testing.assert_close(prune.activation_scores(model, [(wider, lengths, torch.tensor([0, 1]))]), act)


def test_activation_scores_on_language_model():
    torch.manual_seed(0)
    lm = models.LSTMLanguageModel(15, embed_dim=4, hidden=6).eval()
    batches = [(torch.randint(0, 15, (2, 5)), torch.randint(0, 15, (2, 5)))]
    act = prune.activation_scores(lm, batches)
    y, _ = lm.rnn(lm.embedding(batches[0][0]))
    torch.testing.assert_close(act, y.abs().mean(dim=(0, 1)))
    small = cut.cut_model_hidden(lm, [0, 2])
    assert small.out.in_features == 2 and small.out.out_features == 15
