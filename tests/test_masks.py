import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from nlprune import prune
from nlprune.models import RNNClassifier

import tiny


def small_model():
    return RNNClassifier(50, kind="lstm", embed_dim=8, hidden=6)


@pytest.mark.parametrize("sparsity", [0.0, 0.1, 0.5, 0.73, 0.9, 1.0])
def test_layer_masks_equal_torch_l1_unstructured(sparsity):
    model = small_model()
    names = prune.prunable_weights(model)
    masks = prune.compute_masks(prune.magnitude_scores(model), sparsity, scope="layer")
    for name in names:
        module_name, attr = name.rsplit(".", 1)
        module = model.get_submodule(module_name)
        torch_prune.l1_unstructured(module, attr, amount=sparsity)
        assert torch.equal(masks[name], getattr(module, attr + "_mask").bool()), name
        # exactly round(sparsity * n) pruned in every tensor
        assert int((~masks[name]).sum()) == round(sparsity * masks[name].numel())


@pytest.mark.parametrize("sparsity", [0.2, 0.5, 0.8, 0.95])
def test_global_masks_equal_torch_global_unstructured(sparsity):
    model = small_model()
    masks = prune.compute_masks(prune.magnitude_scores(model), sparsity, scope="global")
    params = [(model.get_submodule(n.rsplit(".", 1)[0]), n.rsplit(".", 1)[1]) for n in masks]
    torch_prune.global_unstructured(params, pruning_method=torch_prune.L1Unstructured, amount=sparsity)
    for (module, attr), name in zip(params, masks):
        assert torch.equal(masks[name], getattr(module, attr + "_mask").bool()), name
    total = sum(m.numel() for m in masks.values())
    assert sum(int((~m).sum()) for m in masks.values()) == round(sparsity * total)


def test_global_scope_prunes_small_scale_tensor_more():
    scores = {"big": 1 + torch.rand(100), "small": torch.rand(100) * 0.1}
    masks = prune.compute_masks(scores, 0.5, scope="global")
    assert not masks["small"].any() and masks["big"].all()


def test_masks_keep_largest_scores():
    scores = {"w": torch.tensor([[0.3, -5.0], [2.0, 0.1]]).abs()}
    masks = prune.compute_masks(scores, 0.5)
    assert masks["w"].tolist() == [[False, True], [True, False]]


@pytest.mark.parametrize("bad", [1.5, -0.1, float("nan")])
def test_bad_sparsity_raises(bad):
    with pytest.raises(ValueError, match="sparsity must be in"):
        prune.compute_masks({"w": torch.rand(4)}, bad)


def test_bad_sparsity_type_raises():
    with pytest.raises(TypeError, match="sparsity"):
        prune.compute_masks({"w": torch.rand(4)}, "0.5")


def test_unknown_scope_raises():
    with pytest.raises(ValueError, match="scope must be one of"):
        prune.compute_masks({"w": torch.rand(4)}, 0.5, scope="row")


def test_nan_scores_raise():
    with pytest.raises(ValueError, match="NaN"):
        prune.compute_masks({"w": torch.tensor([1.0, math.nan])}, 0.5)


def test_empty_scores_raise():
    with pytest.raises(ValueError, match="empty"):
        prune.compute_masks({}, 0.5)


def test_non_tensor_scores_raise():
    with pytest.raises(TypeError, match="torch.Tensor"):
        prune.compute_masks({"w": [1.0, 2.0]}, 0.5)


def test_apply_masks_zeroes_exactly_the_pruned_weights():
    model = small_model()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    masks = prune.compute_masks(prune.magnitude_scores(model), 0.6)
    prune.apply_masks(model, masks)
    for name, p in model.named_parameters():
        if name in masks:
            assert torch.equal(p.detach(), before[name] * masks[name])
        else:
            assert torch.equal(p.detach(), before[name])


def test_apply_masks_shape_mismatch_raises():
    model = small_model()
    with pytest.raises(ValueError, match="has shape"):
        prune.apply_masks(model, {"out.weight": torch.ones(3, 3, dtype=torch.bool)})


def test_apply_masks_unknown_name_raises():
    with pytest.raises(ValueError, match="names no parameter"):
        prune.apply_masks(small_model(), {"nope.weight": torch.ones(2, dtype=torch.bool)})


def test_mask_gradients_zeroes_pruned_gradients():
    model = nn.Linear(4, 3)
    model(torch.randn(5, 4)).sum().backward()
    masks = prune.compute_masks({"weight": model.weight.abs()}, 0.5)
    prune.mask_gradients(model, masks)
    assert torch.all(model.weight.grad[~masks["weight"]] == 0)
    assert torch.all(model.weight.grad[masks["weight"]] != 0)


def test_make_permanent_folds_torch_reparametrisation():
    model = small_model()
    torch_prune.l1_unstructured(model.out, "weight", amount=0.5)
    torch_prune.l1_unstructured(model.rnn, "weight_hh_l0", amount=0.5)
    expected = model.out.weight.detach().clone()
    folded = prune.make_permanent(model)
    assert sorted(folded) == ["out.weight", "rnn.weight_hh_l0"]
    assert "out.weight_orig" not in dict(model.named_parameters())
    assert isinstance(model.out.weight, nn.Parameter)
    assert torch.equal(model.out.weight.detach(), expected)
    assert int((model.rnn.weight_hh_l0 == 0).sum()) == round(0.5 * model.rnn.weight_hh_l0.numel())
    assert prune.make_permanent(model) == []


def test_sparsity_report_counts():
    masks = {"a": torch.tensor([True, False, False, True]), "b": torch.zeros(2, 3, dtype=torch.bool)}
    report = prune.sparsity_report(masks).set_index("tensor")
    assert report.loc["a", "pruned"] == 2 and report.loc["b", "pruned"] == 6
    assert report.loc["total", "sparsity"] == pytest.approx(8 / 10)
    with pytest.raises(ValueError):
        prune.sparsity_report({})


@pytest.mark.parametrize("scores", [
    1.0 + torch.randperm(1000, generator=torch.Generator().manual_seed(0)).double() * 1e-12,
    2 ** 40 + torch.randperm(1000, generator=torch.Generator().manual_seed(1)),
])
def test_global_scope_ranks_like_layer_scope_in_full_precision(scores):
    # float32 makes 1 + k*1e-12 all equal to 1.0 and 2**40 + k a few distinct values
    layer = prune.compute_masks({"w": scores}, 0.3, scope="layer")["w"]
    pooled = prune.compute_masks({"w": scores}, 0.3, scope="global")["w"]
    assert torch.equal(layer, pooled)
    assert torch.equal(layer, scores > scores.kthvalue(300).values)


def test_apply_masks_rejects_non_boolean_masks():
    model = tiny.lstm_classifier()
    w = model.out.weight.detach().clone()
    with pytest.raises(TypeError, match="bool"):
        prune.apply_masks(model, {"out.weight": torch.full_like(w, 2.0)})
    assert torch.equal(model.out.weight, w)  # a mask of 2.0 used to double the weights


def test_apply_masks_rejects_numpy_masks_with_a_clear_error():
    model = tiny.lstm_classifier()
    mask = np.ones(tuple(model.out.weight.shape), dtype=bool)
    with pytest.raises(TypeError, match="torch.Tensor"):
        prune.apply_masks(model, {"out.weight": mask})
    with pytest.raises(TypeError, match="torch.Tensor"):
        prune.mask_gradients(model, {"out.weight": mask})


@pytest.mark.parametrize("bad", [True, "0.5", None])
def test_sparsity_must_be_a_real_number(bad):
    with pytest.raises(TypeError, match="sparsity"):
        prune.compute_masks({"w": torch.arange(4.0)}, bad)


def test_check_masks_fails_loudly_when_pruned_weights_regrow():
    model = tiny.lstm_classifier()
    masks = prune.compute_masks(prune.magnitude_scores(model), 0.5)
    prune.apply_masks(model, masks)
    prune.check_masks(model, masks)  # passes: every pruned weight is zero
    with torch.no_grad():
        model.rnn.weight_hh_l0.add_(0.01)  # an optimizer step without masks
    with pytest.raises(AssertionError, match="rnn.weight_hh_l0"):
        prune.check_masks(model, masks)


# --- reports and the one rounding rule (review findings D4, D8) -----------------------------

@pytest.mark.parametrize("report", [prune.overall_sparsity, prune.sparsity_report])
def test_reports_reject_float_masks_as_apply_masks_does(report):
    with pytest.raises(TypeError, match="torch.bool"):
        report({"w": torch.tensor([1.0, 0.5, 0.0])})  # 0.5 is neither kept nor pruned
    with pytest.raises(ValueError, match="empty"):
        report({})


@pytest.mark.parametrize("n, sparsity", [(5, 0.5), (5, 0.3), (9, 0.5), (7, 0.25), (1, 0.5)])
def test_every_sparsity_to_count_rule_is_round_of_s_times_n(n, sparsity):
    expected = round(sparsity * n)
    assert prune.pruned_count(sparsity, n) == expected
    assert int((~prune.compute_masks({"w": torch.arange(float(n))}, sparsity)["w"]).sum()) == expected
    from nlprune import cut, movement, oneshot
    assert n - len(cut.keep_top_units(torch.arange(float(n)), sparsity)) == min(expected, n - 1)
    assert int((movement.topk_mask(torch.arange(float(n)), sparsity) == 0).sum()) == expected
    assert int((~oneshot.row_masks(torch.arange(float(n))[None, :], sparsity)).sum()) == expected


def test_masked_step_keeps_pruned_weights_at_zero_under_adam_with_weight_decay():
    torch.manual_seed(0)
    layer = nn.Linear(4, 3)
    keep = {"weight": torch.rand(3, 4) > 0.5}
    prune.apply_masks(layer, keep)
    optimizer = torch.optim.AdamW(layer.parameters(), lr=0.1, weight_decay=0.1)
    for _ in range(5):
        prune.masked_step(layer, optimizer, layer(torch.randn(8, 4)).pow(2).mean(), keep, clip=1.0)
    prune.check_masks(layer, keep)
    assert bool((layer.weight[keep["weight"]] != 0).all())


def test_the_fixed_public_names_import_from_where_they_always_did():
    from nlprune import cut, masks, schedules
    from nlprune.compress import load_compressed, save_compressed  # noqa: F401
    from nlprune.cut import cut_rnn_hidden  # noqa: F401
    from nlprune.prune import compute_masks, nm_masks, polynomial_sparsity
    assert compute_masks is masks.compute_masks and nm_masks is masks.nm_masks
    assert polynomial_sparsity is schedules.polynomial_sparsity
    assert callable(cut.cut_rnn_hidden)
