import os

import numpy as np
import pytest
import torch
from torch import nn

from nlprune import masks, measure, prune, schedules, train
from nlprune.models import RNNClassifier

import tiny


def test_polynomial_sparsity_contract():
    kw = dict(initial=0.1, final=0.9, begin=10, end=110, power=3)
    assert schedules.polynomial_sparsity(0, **kw) == 0.1
    assert schedules.polynomial_sparsity(10, **kw) == 0.1
    assert schedules.polynomial_sparsity(110, **kw) == 0.9
    assert schedules.polynomial_sparsity(500, **kw) == 0.9
    assert schedules.polynomial_sparsity(60, **kw) == pytest.approx(0.9 + (0.1 - 0.9) * 0.5 ** 3)
    values = [schedules.polynomial_sparsity(s, **kw) for s in range(0, 120)]
    assert values == sorted(values)


@pytest.mark.parametrize("bad,match", [
    (dict(step=-1), "step"), (dict(initial=-0.1), "initial"), (dict(final=1.5), "final"),
    (dict(begin=50, end=50), "begin must be smaller"), (dict(begin=60, end=50), "begin must be smaller"),
    (dict(begin=-1), "begin"), (dict(power=0), "power"),
])
def test_polynomial_sparsity_bad_arguments(bad, match):
    kw = dict(step=5, initial=0.0, final=0.8, begin=0, end=100, power=3)
    kw.update(bad)
    step = kw.pop("step")
    with pytest.raises(ValueError, match=match):
        schedules.polynomial_sparsity(step, **kw)


def test_polynomial_sparsity_equals_tfmot_polynomial_decay():
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    tfmot = pytest.importorskip("tensorflow_model_optimization")
    for initial, final, begin, end, power in [(0.0, 0.9, 0, 100, 3), (0.2, 0.8, 30, 230, 2), (0.5, 0.95, 5, 17, 1)]:
        schedule = tfmot.sparsity.keras.PolynomialDecay(initial, final, begin, end, power=power, frequency=1)
        for step in range(begin, end + 1):  # TF-MOT prunes only between begin and end
            _, theirs = schedule(step)
            ours = schedules.polynomial_sparsity(step, initial=initial, final=final, begin=begin, end=end, power=power)
            assert ours == pytest.approx(float(theirs), abs=1e-6), (step, ours, float(theirs))


def test_gradual_pruner_reaches_final_sparsity_and_keeps_masks(toy_loaders):
    loader, _ = toy_loaders
    model = RNNClassifier(10, kind="lstm", embed_dim=8, hidden=8)
    pruner = schedules.GradualPruner(model, final=0.8, begin=0, end=len(loader) * 3, frequency=2)
    train.fit(model, loader, epochs=4, pruner=pruner, progress=False)
    report = prune.sparsity_report(pruner.masks).set_index("tensor")
    assert all(report.loc[n, "pruned"] == round(0.8 * report.loc[n, "entries"]) for n in pruner.masks)
    params = dict(model.named_parameters())
    assert all(torch.all(params[n][~m] == 0) for n, m in pruner.masks.items())
    targets = [t for _, t in pruner.history]
    assert targets == sorted(targets) and targets[-1] == 0.8 and len(targets) > 5


def test_gradual_pruner_per_tensor_targets_equal_one_pruner_per_tensor(toy_loaders):
    """A mapping as ``final`` trains to the same masks and weights as one pruner per tensor."""
    loader, _ = toy_loaders
    targets = {"embedding.weight": 0.9, "rnn.weight_ih_l0": 0.6, "rnn.weight_hh_l0": 0.0}
    runs = []
    for combined in (True, False):
        torch.manual_seed(0)
        model = RNNClassifier(10, kind="lstm", embed_dim=8, hidden=8)
        end = len(loader) * 2
        if combined:
            pruner = schedules.GradualPruner(model, final=targets, begin=0, end=end, frequency=2)
            masks, on_step = None, None
        else:
            pruners = [schedules.GradualPruner(model, final=s, begin=0, end=end, frequency=2, names=[n])
                       for n, s in targets.items()]
            masks = {n: m for p in pruners for n, m in p.masks.items()}

            def on_step(step):
                for p in pruners:
                    p(step)
                    masks.update(p.masks)
        train.fit(model, loader, epochs=3, masks=masks, on_step=on_step, pruner=pruner if combined else None,
                  progress=False)
        runs.append((pruner.masks if combined else masks, model.state_dict()))
    (masks_a, state_a), (masks_b, state_b) = runs
    for name, target in targets.items():
        assert torch.equal(masks_a[name], masks_b[name])
        assert int((~masks_a[name]).sum()) == round(target * masks_a[name].numel())
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    sizes = {n: masks_a[n].numel() for n in targets}
    overall = sum(targets[n] * sizes[n] for n in targets) / sum(sizes.values())
    assert pruner.history[-1][1] == pytest.approx(overall)


def test_gradual_pruner_bad_arguments():
    model = tiny.mlp()
    with pytest.raises(ValueError, match="frequency"):
        schedules.GradualPruner(model, final=0.5, begin=0, end=10, frequency=0)
    with pytest.raises(ValueError, match="begin"):
        schedules.GradualPruner(model, final=0.5, begin=10, end=10)
    with pytest.raises(ValueError, match="per-tensor targets"):
        schedules.GradualPruner(model, final={"0.weight": 0.5}, begin=0, end=10, scope="global")
    with pytest.raises(ValueError, match="per-tensor targets"):
        schedules.GradualPruner(model, final={"0.weight": 0.5}, begin=0, end=10, names=["0.weight"])
    with pytest.raises(ValueError, match="final"):
        schedules.GradualPruner(model, final={"0.weight": 1.5}, begin=0, end=10)
    with pytest.raises(ValueError):
        schedules.GradualPruner(model, final={"nope.weight": 0.5}, begin=0, end=10)


def test_gradual_pruner_counts_frequency_from_begin():
    model = tiny.mlp()
    pruner = schedules.GradualPruner(model, final=0.5, begin=3, end=23, frequency=5)
    for step in range(30):
        pruner(step)
    steps = [s for s, _ in pruner.history]
    # begin (initial sparsity 0), then begin + k * frequency up to end
    assert steps == [3, 8, 13, 18, 23]
    assert pruner.history[0][1] == 0.0
    assert pruner.history[-1][1] == 0.5


def test_gradual_pruner_never_prunes_before_begin():
    # (1 - 10) % 3 == 0 made the old pruner zero 30% of the weights at step 1.
    model = tiny.lstm_classifier()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    pruner = schedules.GradualPruner(model, initial=0.3, final=0.9, begin=10, end=40, frequency=3)
    for step in range(10):
        pruner(step)
    assert pruner.history == []
    assert all(bool(m.all()) for m in pruner.masks.values())
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    pruner(10)
    assert pruner.history == [(10, 0.3)]


def test_gradual_pruner_reaches_final_at_end_not_multiple_of_frequency():
    model = tiny.lstm_classifier()
    pruner = schedules.GradualPruner(model, final=0.8, begin=0, end=25, frequency=10)
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
        schedules.GradualPruner(tiny.lstm_classifier(), **{"final": 0.5, "begin": 0, "end": 10, **kwargs})


# --- the pruner hands its masks to the loop once (review finding D1) ------------------------

def test_fit_with_the_pruner_passed_once_reaches_the_pruners_sparsity(toy_loaders):
    loader, _ = toy_loaders
    model = RNNClassifier(10, kind="gru", embed_dim=8, hidden=8)
    pruner = schedules.GradualPruner(model, final=0.8, begin=0, end=len(loader) * 2, frequency=2)
    train.fit(model, loader, epochs=3, pruner=pruner, progress=False)
    assert pruner.history[-1][1] == 0.8
    measured = measure.sparsity_table(model, pruner.names)["sparsity"].iloc[-1]
    assert measured == pytest.approx(masks.overall_sparsity(pruner.masks), abs=1e-9)
    assert measured == pytest.approx(0.8, abs=0.01)  # round(0.8 * n) per tensor, some tensors are small


def test_a_loop_that_does_not_keep_the_masks_makes_the_pruner_raise(toy_loaders):
    """The trap of nlprune 0.2: the pruner called every step, its masks never re-applied, ended at
    6% zeros while the pruner reported 79%. Now the pruner's next update says so."""
    loader, _ = toy_loaders
    model = RNNClassifier(10, kind="gru", embed_dim=8, hidden=8)
    pruner = schedules.GradualPruner(model, final=0.8, begin=0, end=len(loader) * 2, frequency=2)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    with pytest.raises(RuntimeError, match="did not hold between its updates.*pruner=pruner"):
        for step, (ids, lengths, labels) in enumerate(loader):
            pruner(step)
            loss = nn.functional.cross_entropy(model(ids, lengths), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()  # Adam moves every weight, the pruned ones too: nothing re-applies the masks


def test_fit_refuses_a_pruner_given_as_on_step_or_beside_masks(toy_loaders):
    loader, _ = toy_loaders
    model = RNNClassifier(10, kind="gru", embed_dim=8, hidden=8)
    pruner = schedules.GradualPruner(model, final=0.5, begin=0, end=4)
    with pytest.raises(TypeError, match="pass it as pruner="):
        train.fit(model, loader, epochs=1, masks=pruner.masks, on_step=pruner, progress=False)
    with pytest.raises(ValueError, match="not both"):
        train.fit(model, loader, epochs=1, masks=pruner.masks, pruner=pruner, progress=False)
    with pytest.raises(TypeError, match="pruner must have a `masks`"):
        train.fit(model, loader, epochs=1, pruner=lambda step: None, progress=False)


def test_per_tensor_errors_name_the_argument_passed():
    with pytest.raises(ValueError, match=r"^final contains parameters"):
        schedules.GradualPruner(tiny.lstm_classifier(), final={"rnn.weight_xx": 0.5}, begin=0, end=4)
    with pytest.raises(ValueError, match=r"^names contains parameters"):
        schedules.GradualPruner(tiny.lstm_classifier(), final=0.5, begin=0, end=4, names=["rnn.weight_xx"])

