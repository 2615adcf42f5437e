"""Regression tests for defects found in a review of nlprune (issue 9).

Each test fails on the code before the fix: it names the silently wrong result it guards against.
"""

import json

import numpy as np
import pytest
import torch
from torch import nn

from nlprune import cut, data, prune, train
from nlprune.models import RNNClassifier


def _tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return RNNClassifier(12, kind="lstm", embed_dim=4, hidden=6)


# --- GradualPruner -------------------------------------------------------------------------

def test_gradual_pruner_never_prunes_before_begin():
    # (1 - 10) % 3 == 0 made the old pruner zero 30% of the weights at step 1.
    model = _tiny_model()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    pruner = prune.GradualPruner(model, initial=0.3, final=0.9, begin=10, end=40, frequency=3)
    for step in range(10):
        pruner(step)
    assert pruner.history == []
    assert all(bool(m.all()) for m in pruner.masks.values())
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    pruner(10)
    assert pruner.history == [(10, 0.3)]


def test_gradual_pruner_reaches_final_at_end_not_multiple_of_frequency():
    model = _tiny_model()
    pruner = prune.GradualPruner(model, final=0.8, begin=0, end=25, frequency=10)
    for step in range(40):
        pruner(step)
    assert [s for s, target in pruner.history if target > 0] == [10, 20, 25]
    assert pruner.history[-1] == (25, 0.8)
    for name, mask in pruner.masks.items():
        assert int((~mask).sum()) == round(0.8 * mask.numel()), name


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(scope="everything"), ValueError, "scope"),
    (dict(frequency=2.5), TypeError, "frequency"),
    (dict(frequency=0), ValueError, "frequency"),
    (dict(names=["no.such.weight"]), ValueError, "names"),
])
def test_gradual_pruner_checks_settings_when_built(kwargs, error, match):
    with pytest.raises(error, match=match):
        prune.GradualPruner(_tiny_model(), **{"final": 0.5, "begin": 0, "end": 10, **kwargs})


# --- sensitivity_scan ----------------------------------------------------------------------

def test_sensitivity_scan_restores_weights_when_evaluate_raises():
    model = _tiny_model()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    calls = []

    def evaluate(m):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("evaluation failed")
        return 0.0

    with pytest.raises(RuntimeError, match="evaluation failed"):
        prune.sensitivity_scan(model, evaluate, [0.5, 0.9])
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


# --- compute_masks: global and layer scope rank alike ---------------------------------------

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


# --- apply_masks / mask_gradients ----------------------------------------------------------

def test_apply_masks_rejects_non_boolean_masks():
    model = _tiny_model()
    w = model.out.weight.detach().clone()
    with pytest.raises(TypeError, match="bool"):
        prune.apply_masks(model, {"out.weight": torch.full_like(w, 2.0)})
    assert torch.equal(model.out.weight, w)  # a mask of 2.0 used to double the weights


def test_apply_masks_rejects_numpy_masks_with_a_clear_error():
    model = _tiny_model()
    mask = np.ones(tuple(model.out.weight.shape), dtype=bool)
    with pytest.raises(TypeError, match="torch.Tensor"):
        prune.apply_masks(model, {"out.weight": mask})
    with pytest.raises(TypeError, match="torch.Tensor"):
        prune.mask_gradients(model, {"out.weight": mask})


# --- group_lasso_penalty -------------------------------------------------------------------

@pytest.mark.parametrize("dim, error", [(5, ValueError), (-3, ValueError), ("1", TypeError),
                                        (1.0, TypeError)])
def test_group_lasso_penalty_rejects_bad_dim(dim, error):
    with pytest.raises(error, match="dim"):
        prune.group_lasso_penalty(_tiny_model(), 0.1, {"out.weight": dim})


def test_group_lasso_penalty_accepts_numpy_dim_and_strength():
    model = _tiny_model()
    a = prune.group_lasso_penalty(model, 0.1, {"out.weight": 1})
    b = prune.group_lasso_penalty(model, np.float32(0.1), {"out.weight": np.int64(1)})
    assert torch.allclose(a, b)


# --- keep_top_units ------------------------------------------------------------------------

def test_keep_top_units_keeps_at_least_one_unit():
    keep = cut.keep_top_units(torch.tensor([0.3, 0.9, 0.1, 0.5]), 0.9)
    assert keep.tolist() == [1]


def test_keep_top_units_rejects_nan():
    with pytest.raises(ValueError, match="NaN"):
        cut.keep_top_units(torch.tensor([0.3, float("nan"), 0.1, 0.5]), 0.5)


# --- the base-model cache ------------------------------------------------------------------

def _stub_fit(calls):
    def fit(model, *args, **kwargs):
        calls.append(kwargs.get("desc"))
        return [{"epoch": 1}]
    return fit


def test_base_classifier_cache_is_keyed_by_the_loader_settings(tmp_cache, monkeypatch):
    calls = []
    monkeypatch.setattr(train, "fit", _stub_fit(calls))
    default = data.make_loaders("en")
    other = data.make_loaders("en", max_len=16, batch_size=256)
    train.base_classifier(default)
    train.base_classifier(other)  # a different recipe: must train, not load the first model
    assert len(calls) == 2
    train.base_classifier(data.make_loaders("en"))  # the same recipe again: loads
    assert len(calls) == 2


def test_cached_model_stores_and_checks_the_recipe(tmp_cache):
    def build():
        torch.manual_seed(0)
        return nn.Linear(3, 2)

    recipe = {"lr": 0.1, "epochs": 1}
    model, info = train.cached_model("toy", build, lambda m: "trained", recipe=recipe)
    assert info["recipe"] == recipe
    stored = json.loads(next(p for p in train.cache_dir().glob("toy*.json")).read_text())
    assert stored["recipe"] == recipe
    again, _ = train.cached_model("toy", build, lambda m: pytest.fail("must load"), recipe=recipe)
    assert torch.equal(again.weight, model.weight)
    # a file whose stored recipe is not the one asked for is not used silently
    path = next(p for p in train.cache_dir().glob("toy*.json"))
    stored["recipe"] = {"lr": 0.2, "epochs": 1}
    path.write_text(json.dumps(stored))
    with pytest.raises(ValueError, match="recipe"):
        train.cached_model("toy", build, lambda m: "trained", recipe=recipe)


# --- settings carried through by cutting ---------------------------------------------------

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


# --- NumPy scalars -------------------------------------------------------------------------

def test_numpy_scalars_are_accepted_where_numbers_are():
    scores = {"w": torch.arange(10.0)}
    masks = prune.compute_masks(scores, np.float32(0.5))
    assert torch.equal(masks["w"], prune.compute_masks(scores, 0.5)["w"])
    rnn = nn.GRU(3, 5)
    new = cut.cut_rnn_hidden(rnn, [np.int64(0), np.int64(3)])
    assert new.hidden_size == 2
    keep = cut.keep_top_units(torch.arange(4.0), np.float64(0.5))
    assert keep.tolist() == [2, 3]
    assert prune.polynomial_sparsity(np.int64(5), initial=0.0, final=np.float32(0.5), begin=0,
                                     end=10) == pytest.approx(0.5 - 0.5 * 0.5 ** 3)


@pytest.mark.parametrize("bad", [True, "0.5", None])
def test_sparsity_must_be_a_real_number(bad):
    with pytest.raises(TypeError, match="sparsity"):
        prune.compute_masks({"w": torch.arange(4.0)}, bad)


# --- fit and the global generator ----------------------------------------------------------

def test_fit_seed_reseeds_the_global_generator_as_documented(toy_loaders):
    train_dl, _ = toy_loaders
    after = []
    for disturb in (1, 50):
        torch.manual_seed(0)
        model = RNNClassifier(10, kind="gru", embed_dim=4, hidden=4, dropout=0.3)
        torch.rand(disturb)  # whatever ran before, fit(seed=...) starts from the same state
        train.fit(model, train_dl, epochs=1, progress=False, seed=7)
        after.append(torch.rand(3))
    assert torch.equal(after[0], after[1])
    assert "global" in train.fit.__doc__ and "seed" in train.fit.__doc__


def test_fit_without_seed_leaves_the_global_generator_running(toy_loaders):
    train_dl, _ = toy_loaders
    torch.manual_seed(0)
    a = RNNClassifier(10, kind="gru", embed_dim=4, hidden=4)
    train.fit(a, train_dl, epochs=1, progress=False, seed=None)
    b = RNNClassifier(10, kind="gru", embed_dim=4, hidden=4)
    assert not torch.equal(a.out.weight, b.out.weight)


# --- check_masks ---------------------------------------------------------------------------

def test_check_masks_fails_loudly_when_pruned_weights_regrow():
    model = _tiny_model()
    masks = prune.compute_masks(prune.magnitude_scores(model), 0.5)
    prune.apply_masks(model, masks)
    prune.check_masks(model, masks)  # passes: every pruned weight is zero
    with torch.no_grad():
        model.rnn.weight_hh_l0.add_(0.01)  # an optimizer step without masks
    with pytest.raises(AssertionError, match="rnn.weight_hh_l0"):
        prune.check_masks(model, masks)
