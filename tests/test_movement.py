import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from nlprune import prune
from nlprune.movement import MovementPruner, topk_mask


def test_topk_mask_keeps_the_highest_and_passes_the_gradient_straight_through():
    torch.manual_seed(0)
    scores = torch.randn(7, 9, requires_grad=True)
    mask = topk_mask(scores, 0.7)
    keep = round(0.3 * 63)
    assert int(mask.sum()) == keep
    assert scores[mask.bool()].min() > scores[~mask.bool()].max()
    weights = torch.randn(7, 9)
    (mask * weights).sum().backward()
    assert torch.equal(scores.grad, weights)  # d(sum(M * w))/dM = w, passed to the scores unchanged
    assert torch.equal(topk_mask(scores, 0.0), torch.ones(7, 9))
    assert int(topk_mask(scores, 1.0).sum()) == 0


def test_topk_mask_bad_input():
    with pytest.raises(ValueError, match="sparsity"):
        topk_mask(torch.rand(4), 1.5)
    with pytest.raises(ValueError, match="NaN"):
        topk_mask(torch.tensor([1.0, float("nan")]), 0.5)
    with pytest.raises(TypeError, match="scores must be a torch.Tensor"):
        topk_mask([1.0, 2.0], 0.5)


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 10), nn.Tanh(), nn.Linear(10, 3))


def test_movement_is_minus_the_sum_of_gradient_times_weight():
    """-Σ_t (∂L/∂W'_t) ⊙ W_t, with ∂L/∂W' computed here by hand from a copy of the model."""
    model, reference = _model(), _model()
    pruner = MovementPruner(model, ["0.weight"], final=0.5, begin=2, end=6)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    expected = torch.zeros(10, 6)
    g = torch.Generator().manual_seed(1)
    for step in range(8):
        x, y = torch.randn(16, 6, generator=g), torch.randint(0, 3, (16,), generator=g)
        pruner(step)
        weight = model[0].parametrizations.weight.original.detach().clone()
        mask = pruner.current_masks()["0.weight"].float()
        # by hand: the gradient with respect to the masked weight W' = W ⊙ M
        with torch.no_grad():
            reference.load_state_dict({"0.weight": weight * mask, "0.bias": model[0].bias,
                                       "2.weight": model[2].weight, "2.bias": model[2].bias})
        reference.zero_grad()
        nn.functional.cross_entropy(reference(x), y).backward()
        expected -= reference[0].weight.grad * weight
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    pruner.current_masks()  # takes the last step of the scores
    assert torch.allclose(pruner.movement["0.weight"], expected, atol=1e-6)
    assert pruner.sparsity == 0.5
    assert int(pruner.current_masks()["0.weight"].sum()) == 30


def test_adam_scores_after_one_step_are_the_sign_of_the_movement():
    """Adam's first step is -lr * g / (|g| + eps): each score moves by 0.01 whatever the size of
    its gradient, which is what makes these scores differ from the plain sum."""
    model = _model()
    pruner = MovementPruner(model, ["0.weight"], final=0.5, begin=5, end=9)
    pruner(0)
    nn.functional.cross_entropy(model(torch.randn(16, 6)), torch.randint(0, 3, (16,))).backward()
    pruner(1)
    movement, scores = pruner.movement["0.weight"], pruner.scores["0.weight"].detach()
    assert movement.abs().min() > 1e-6
    assert torch.allclose(scores, 0.01 * movement.sign(), atol=1e-4)


def test_pruned_weights_get_no_gradient_and_remove_bakes_the_mask():
    model = _model()
    pruner = MovementPruner(model, ["0.weight", "2.weight"], final=0.6, begin=0, end=1)
    pruner(1)
    before = model[0].parametrizations.weight.original.detach().clone()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    x, y = torch.randn(32, 6), torch.randint(0, 3, (32,))
    mask = pruner.current_masks()["0.weight"]  # the mask of this forward pass (the scores move after it)
    nn.functional.cross_entropy(model(x), y).backward()
    optimizer.step()
    after = model[0].parametrizations.weight.original.detach()
    assert torch.equal(after[~mask], before[~mask])  # no gradient under the mask
    assert not torch.equal(after[mask], before[mask])
    masks = pruner.remove()
    assert not parametrize.is_parametrized(model[0])
    assert torch.equal(model[0].weight.detach(), after * masks["0.weight"])
    assert [round(float(m.float().mean()), 2) for m in masks.values()] == [0.4, 0.4]


def test_magnitude_method_matches_compute_masks():
    model = _model()
    weights = {n: p.detach().clone() for n, p in model.named_parameters() if n.endswith("weight")}
    pruner = MovementPruner(model, list(weights), final=0.75, begin=0, end=1, method="magnitude")
    pruner(1)
    ours = pruner.current_masks()
    reference = prune.compute_masks({n: w.abs() for n, w in weights.items()}, 0.75)
    for name in weights:
        assert torch.equal(ours[name], reference[name])


def test_random_method_keeps_nested_seeded_masks_blind_to_the_weights():
    """The random control: fixed uniform scores, the same masks for the same seed whatever the
    weights, masks that only grow as the schedule prunes more, none of the scores' gradient."""
    def masks_along_schedule(model, seed):
        pruner = MovementPruner(model, ["0.weight", "2.weight"], final=0.8, begin=0, end=4,
                                method="random", seed=seed)
        out = []
        for step in range(5):
            pruner(step)
            model(torch.randn(3, 6)).sum().backward()
            out.append(pruner.current_masks())
        return pruner, out

    pruner, first = masks_along_schedule(_model(), seed=1)
    other = _model()
    with torch.no_grad():
        for p in other.parameters():
            p.mul_(-3.0).add_(0.5)  # different weights, same seed
    _, second = masks_along_schedule(other, seed=1)
    _, third = masks_along_schedule(_model(), seed=2)
    for name in ("0.weight", "2.weight"):
        for a, b in zip(first, second):
            assert torch.equal(a[name], b[name])
        for earlier, later in zip(first, first[1:]):
            assert not (later[name] & ~earlier[name]).any()  # nested: nothing comes back
        n = first[-1][name].numel()
        assert int((~first[-1][name]).sum()) == round(0.8 * n)
        assert not torch.equal(first[-1][name], third[-1][name])
        assert pruner.scores[name].grad is None and not pruner.scores[name].requires_grad
        assert torch.equal(pruner.movement[name], torch.zeros_like(pruner.movement[name]))
    # the two matrices get different draws, not the same pattern
    assert not torch.equal(pruner.scores["0.weight"].flatten()[:30],
                           pruner.scores["2.weight"].flatten()[:30])


def test_movement_pruner_bad_input():
    model = _model()
    with pytest.raises(ValueError, match="method must be one of"):
        MovementPruner(model, ["0.weight"], final=0.5, begin=0, end=1, method="taylor")
    with pytest.raises(ValueError, match="weight of an nn.Linear"):
        MovementPruner(model, ["0.bias"], final=0.5, begin=0, end=1)
    with pytest.raises(ValueError, match="non-empty list"):
        MovementPruner(model, "0.weight", final=0.5, begin=0, end=1)
    with pytest.raises(ValueError):
        MovementPruner(model, ["0.weight"], final=1.5, begin=0, end=1)
    with pytest.raises(TypeError, match="seed must be an integer"):
        MovementPruner(model, ["0.weight"], final=0.5, begin=0, end=1, method="random", seed=0.5)
    MovementPruner(model, ["0.weight"], final=0.5, begin=0, end=1)
    with pytest.raises(ValueError, match="already parametrized"):
        MovementPruner(model, ["0.weight"], final=0.5, begin=0, end=1)


@pytest.mark.parametrize("n, sparsity", [(5, 0.5), (5, 0.3), (9, 0.5)])
def test_topk_mask_prunes_what_compute_masks_prunes_for_odd_sizes(n, sparsity):
    """round((1 - s) n) kept (0.2) is not round(s n) pruned for odd n (review finding D4)."""
    scores = torch.randperm(n, generator=torch.Generator().manual_seed(n)).float()
    ours = topk_mask(scores, sparsity).bool()
    assert torch.equal(ours, prune.compute_masks({"w": scores}, sparsity)["w"])
