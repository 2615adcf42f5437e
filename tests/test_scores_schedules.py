import os

import pytest
import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from nlprune import data, prune, train
from nlprune.models import RNNClassifier


def tiny_batches(n_batches=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(8, 5, generator=g, dtype=torch.float64), torch.randint(0, 3, (8,), generator=g))
            for _ in range(n_batches)]


def tiny_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3)).double()


def ce(model, batch):
    x, y = batch
    return nn.functional.cross_entropy(model(x), y)


def mean_loss(model, batches):
    with torch.no_grad():
        return sum(ce(model, b) for b in batches).item() / len(batches)


def test_gradient_scores_match_finite_differences():
    model, batches = tiny_model(), tiny_batches()
    grads = prune.accumulated_gradients(model, batches, ce)
    eps = 1e-6
    for name, param in model.named_parameters():
        if name not in grads:
            continue
        for idx in [(0, 0), (1, 2), (2, 3)]:
            with torch.no_grad():
                saved = param[idx].item()
                param[idx] = saved + eps
                up = mean_loss(model, batches)
                param[idx] = saved - eps
                down = mean_loss(model, batches)
                param[idx] = saved
            assert grads[name][idx].item() == pytest.approx((up - down) / (2 * eps), rel=1e-5, abs=1e-9)
    scores = prune.gradient_scores(model, batches, ce)
    assert all(torch.equal(scores[n], grads[n].abs()) for n in grads)


def test_taylor_scores_are_abs_weight_times_gradient_and_predict_the_loss_change():
    model, batches = tiny_model(), tiny_batches()
    grads = prune.accumulated_gradients(model, batches, ce)
    taylor = prune.taylor_scores(model, batches, ce)
    w = model[0].weight
    assert torch.allclose(taylor["0.weight"], (w.detach() * grads["0.weight"]).abs())
    # zeroing one small weight changes the loss by about -g*w (first order)
    base = mean_loss(model, batches)
    with torch.no_grad():
        saved = w[1, 1].item()
        w[1, 1] = saved * 1e-3  # shrink almost to zero: the first-order term dominates
        change = mean_loss(model, batches) - base
        w[1, 1] = saved
    predicted = -grads["0.weight"][1, 1].item() * saved * (1 - 1e-3)
    assert change == pytest.approx(predicted, rel=0.05, abs=1e-6)


def test_zeroed_weight_still_has_a_gradient():
    model, batches = tiny_model(), tiny_batches()
    with torch.no_grad():
        model[0].weight[2, 3] = 0.0
    grads = prune.accumulated_gradients(model, batches, ce)
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
    model = tiny_model()
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


def test_polynomial_sparsity_contract():
    kw = dict(initial=0.1, final=0.9, begin=10, end=110, power=3)
    assert prune.polynomial_sparsity(0, **kw) == 0.1
    assert prune.polynomial_sparsity(10, **kw) == 0.1
    assert prune.polynomial_sparsity(110, **kw) == 0.9
    assert prune.polynomial_sparsity(500, **kw) == 0.9
    assert prune.polynomial_sparsity(60, **kw) == pytest.approx(0.9 + (0.1 - 0.9) * 0.5 ** 3)
    values = [prune.polynomial_sparsity(s, **kw) for s in range(0, 120)]
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
        prune.polynomial_sparsity(step, **kw)


def test_polynomial_sparsity_equals_tfmot_polynomial_decay():
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    tfmot = pytest.importorskip("tensorflow_model_optimization")
    for initial, final, begin, end, power in [(0.0, 0.9, 0, 100, 3), (0.2, 0.8, 30, 230, 2), (0.5, 0.95, 5, 17, 1)]:
        schedule = tfmot.sparsity.keras.PolynomialDecay(initial, final, begin, end, power=power, frequency=1)
        for step in range(begin, end + 1):  # TF-MOT prunes only between begin and end
            _, theirs = schedule(step)
            ours = prune.polynomial_sparsity(step, initial=initial, final=final, begin=begin, end=end, power=power)
            assert ours == pytest.approx(float(theirs), abs=1e-6), (step, ours, float(theirs))


def test_gradual_pruner_reaches_final_sparsity_and_keeps_masks(toy_loaders):
    loader, _ = toy_loaders
    model = RNNClassifier(10, kind="lstm", embed_dim=8, hidden=8)
    pruner = prune.GradualPruner(model, final=0.8, begin=0, end=len(loader) * 3, frequency=2)
    train.fit(model, loader, epochs=4, masks=pruner.masks, on_step=pruner, progress=False)
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
            pruner = prune.GradualPruner(model, final=targets, begin=0, end=end, frequency=2)
            masks, on_step = pruner.masks, pruner
        else:
            pruners = [prune.GradualPruner(model, final=s, begin=0, end=end, frequency=2, names=[n])
                       for n, s in targets.items()]
            masks = {n: m for p in pruners for n, m in p.masks.items()}

            def on_step(step):
                for p in pruners:
                    p(step)
                    masks.update(p.masks)
        train.fit(model, loader, epochs=3, masks=masks, on_step=on_step, progress=False)
        runs.append((masks, model.state_dict()))
    (masks_a, state_a), (masks_b, state_b) = runs
    for name, target in targets.items():
        assert torch.equal(masks_a[name], masks_b[name])
        assert int((~masks_a[name]).sum()) == round(target * masks_a[name].numel())
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    sizes = {n: masks_a[n].numel() for n in targets}
    overall = sum(targets[n] * sizes[n] for n in targets) / sum(sizes.values())
    assert pruner.history[-1][1] == pytest.approx(overall)


def test_gradual_pruner_bad_arguments():
    model = tiny_model()
    with pytest.raises(ValueError, match="frequency"):
        prune.GradualPruner(model, final=0.5, begin=0, end=10, frequency=0)
    with pytest.raises(ValueError, match="begin"):
        prune.GradualPruner(model, final=0.5, begin=10, end=10)
    with pytest.raises(ValueError, match="per-tensor targets"):
        prune.GradualPruner(model, final={"0.weight": 0.5}, begin=0, end=10, scope="global")
    with pytest.raises(ValueError, match="per-tensor targets"):
        prune.GradualPruner(model, final={"0.weight": 0.5}, begin=0, end=10, names=["0.weight"])
    with pytest.raises(ValueError, match="final"):
        prune.GradualPruner(model, final={"0.weight": 1.5}, begin=0, end=10)
    with pytest.raises(ValueError):
        prune.GradualPruner(model, final={"nope.weight": 0.5}, begin=0, end=10)


def test_sensitivity_scan_restores_weights():
    model, batches = tiny_model(), tiny_batches()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    table = prune.sensitivity_scan(model, lambda m: mean_loss(m, batches), [0.0, 0.5, 1.0])
    assert list(table.index) == ["0.weight", "2.weight"] and list(table.columns) == [0.0, 0.5, 1.0]
    assert table[0.0].tolist() == pytest.approx([mean_loss(model, batches)] * 2)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


def test_penalties():
    model = tiny_model()
    w0, w2 = model[0].weight, model[2].weight
    assert prune.l1_penalty(model, 0.1).item() == pytest.approx(0.1 * (w0.abs().sum() + w2.abs().sum()).item())
    gl = prune.group_lasso_penalty(model, 0.5, {"0.weight": 0})
    assert gl.item() == pytest.approx(0.5 * w0.norm(dim=1).sum().item(), rel=1e-6)
    gl_cols = prune.group_lasso_penalty(model, 1.0, {"2.weight": 1})
    assert gl_cols.item() == pytest.approx(w2.norm(dim=0).sum().item(), rel=1e-6)
    with pytest.raises(ValueError, match="strength"):
        prune.l1_penalty(model, -1.0)
    with pytest.raises(ValueError, match="does not have"):
        prune.group_lasso_penalty(model, 1.0, {"nope": 0})


def test_group_lasso_drives_whole_rows_to_zero():
    torch.manual_seed(0)
    layer = nn.Linear(6, 6).double()
    x = torch.randn(64, 6, dtype=torch.float64)
    y = x[:, :2].sum(1, keepdim=True).repeat(1, 6) * torch.tensor([1.0, 1, 0, 0, 0, 0], dtype=torch.float64)
    opt = torch.optim.SGD(layer.parameters(), lr=0.05)
    for _ in range(3000):
        opt.zero_grad()
        loss = ((layer(x) - y) ** 2).mean() + prune.group_lasso_penalty(layer, 0.05, {"weight": 0})
        loss.backward()
        opt.step()
    row_norms = layer.weight.norm(dim=1)
    assert (row_norms[2:] < 0.05).all() and (row_norms[:2] > 0.5).all()


def test_fit_restores_best_epoch_only_among_final_masks(toy_loaders):
    loader, _ = toy_loaders
    model = RNNClassifier(10, kind="lstm", embed_dim=8, hidden=8)
    pruner = prune.GradualPruner(model, final=0.95, begin=0, end=len(loader) * 2, frequency=1)
    history = train.fit(model, loader, loader, epochs=4, lr=1e-2, masks=pruner.masks, on_step=pruner,
                        progress=False)
    assert len(history) == 4
    params = dict(model.named_parameters())
    for name, mask in pruner.masks.items():
        assert int((params[name] == 0).sum()) >= round(0.95 * mask.numel()), name


def test_gradual_pruner_counts_frequency_from_begin():
    model = tiny_model()
    pruner = prune.GradualPruner(model, final=0.5, begin=3, end=23, frequency=5)
    for step in range(30):
        pruner(step)
    steps = [s for s, _ in pruner.history]
    # begin (initial sparsity 0), then begin + k * frequency up to end
    assert steps == [3, 8, 13, 18, 23]
    assert pruner.history[0][1] == 0.0
    assert pruner.history[-1][1] == 0.5
