"""Section 8.4: movement pruning (Sanh, Wolf and Rush, 2020) and its magnitude baseline.

During fine-tuning every pruned matrix is used as ``W' = W ⊙ M`` with ``M = TopK(S)``: the
``k`` entries with the highest scores ``S`` are kept, ``k`` set by a cubic sparsity schedule.

* **magnitude**: ``S = |W|``, the current magnitudes (gradual magnitude pruning);
* **random**: ``S`` drawn once, uniform on [0, 1) from a seeded generator, and never changed: the
  control that tells whether a score's choice of weights matters at all (the masks grow nested,
  on the same schedule, blind to the weights and the task);
* **movement**: ``S`` is learned. ``TopK`` has no useful derivative, so the backward pass treats it
  as the identity (a straight-through estimator): ``∂L/∂S = ∂L/∂M = (∂L/∂W') ⊙ W``. Summed over
  the training steps with plain gradient descent from ``S = 0``,
  ``S = -η Σ_t (∂L/∂W'_t) ⊙ W_t``, which is large when a weight moves *away from zero* during
  fine-tuning. The step size ``η`` scales all scores alike, so it does not change which entries
  are kept (:attr:`MovementPruner.movement` keeps this sum, with ``η = 1``). The authors' code,
  and this module, step ``S`` with Adam instead, which divides each entry's step by the size of
  its own gradients: the score then counts how *consistently* a weight moves away from zero, not
  how far times how large it is. Section 8.4 measures that the difference decides whether the
  method works in a short fine-tuning. Adam's learning rate, too, only scales the scores (up to
  its ``ε``).

The weights under the mask are not zeroed while training (they get no gradient, ``∂L/∂W =
(∂L/∂W') ⊙ M``, but their scores keep moving, so a pruned weight can come back), as in the
authors' code. :meth:`MovementPruner.remove` bakes ``W ⊙ M`` into plain weights at the end.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn.utils import parametrize

from . import _checks
from .masks import pruned_count
from .schedules import polynomial_sparsity

__all__ = ["METHODS", "topk_mask", "MovementPruner"]

METHODS = ("magnitude", "random", "movement")


class _TopKStraightThrough(torch.autograd.Function):
    """``TopK`` forward, identity backward."""

    @staticmethod
    def forward(ctx, scores: torch.Tensor, keep: int) -> torch.Tensor:  # type: ignore[override]
        if keep >= scores.numel():  # nothing pruned yet: skip the sort
            return torch.ones_like(scores)
        mask = torch.zeros_like(scores)
        if keep > 0:
            mask.view(-1)[torch.topk(scores.flatten(), keep, sorted=False).indices] = 1.0
        return mask

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        return grad, None


def topk_mask(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """A 0/1 float mask that prunes the ``round(sparsity · n)`` lowest ``scores`` (the package's one
    rounding rule, :func:`nlprune.masks.pruned_count`, so the ``"magnitude"`` method prunes
    exactly what :func:`nlprune.masks.compute_masks` prunes); its gradient passes straight
    through to ``scores``.

    Example:
        >>> s = torch.tensor([0.3, -1.0, 2.0, 0.1], requires_grad=True)
        >>> m = topk_mask(s, 0.5)
        >>> m.tolist()
        [1.0, 0.0, 1.0, 0.0]
        >>> (m * torch.tensor([1.0, 2.0, 3.0, 4.0])).sum().backward()
        >>> s.grad.tolist()   # straight through: d(sum)/dm, for kept and pruned entries alike
        [1.0, 2.0, 3.0, 4.0]
    """
    if not isinstance(scores, torch.Tensor):
        raise TypeError(f"scores must be a torch.Tensor, got {type(scores).__name__}")
    sparsity = _checks.fraction(sparsity, "sparsity")
    if torch.isnan(scores).any():
        raise ValueError("scores contain NaN")
    keep = scores.numel() - pruned_count(sparsity, scores.numel())
    return _TopKStraightThrough.apply(scores, keep)


class _Masked(nn.Module):
    """The parametrization ``W -> W ⊙ M`` of one weight; ``M`` comes from its pruner."""

    def __init__(self, pruner: MovementPruner, name: str) -> None:
        super().__init__()
        self.pruner, self.name = [pruner], name  # a list: not a submodule, no recursion

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.pruner[0].mask_of(self.name, weight)


class MovementPruner:
    """Movement (or magnitude) pruning of some weight matrices during fine-tuning.

    Building it registers a parametrization on every named weight (``W' = W ⊙ TopK(S)``); call it
    with the step number before each training step (``nlprune.train.fit(on_step=pruner)``) to
    follow the cubic schedule of :func:`nlprune.schedules.polynomial_sparsity`. The masks live in
    the parametrizations, not in a dict the loop re-applies, so this is an ``on_step`` callback,
    not a ``pruner=`` (:class:`nlprune.masks.Pruner`); :meth:`current_masks` reads them.

    Args:
        model: the model; ``names`` are parameter names in it (e.g. ``"layers.4.query.weight"``).
        names: the weights to prune, each at the same sparsity (per-matrix ``TopK``, as the authors).
        final, begin, end, initial, power: the schedule, as in :func:`polynomial_sparsity`.
        method: ``"magnitude"`` (``S = |W|``), ``"random"`` (fixed scores drawn uniformly from a
            generator seeded with ``seed``, one matrix after another in the order of ``names``),
            or ``"movement"`` (scores learned by Adam, learning rate 0.01, as in the authors' code).
        seed: the seed of the ``"random"`` scores (ignored by the other methods).

    Attributes:
        scores: ``{name: S}``, zeros at first (the fixed draws for ``"random"``). For ``"movement"`` every backward pass leaves
            ``∂L/∂S = (∂L/∂W') ⊙ W`` in ``S.grad`` (the model's optimizer never sees ``S``) and
            the next call, or :meth:`current_masks`, takes Adam's step.
        movement: ``{name: -Σ_t (∂L/∂W'_t) ⊙ W_t}``, the same gradients summed without Adam
            (the scores of plain gradient descent); zeros for ``"magnitude"`` and ``"random"``.
        sparsity: the current target.

    Raises:
        ValueError: unknown ``method`` or ``names``, a name that is not a 2-D weight of an
            ``nn.Linear``, or a bad schedule.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
        >>> pruner = MovementPruner(model, ["0.weight"], final=0.75, begin=0, end=10)
        >>> pruner(10)
        >>> model(torch.randn(5, 4)).sum().backward()
        >>> int(pruner.current_masks()["0.weight"].sum()), pruner.scores["0.weight"].shape
        (8, torch.Size([8, 4]))
        >>> pruner.remove()["0.weight"].float().mean().item()   # W ⊙ M baked in
        0.25
    """

    def __init__(self, model: nn.Module, names: Sequence[str], *, final: float, begin: int, end: int,
                 initial: float = 0.0, power: int | float = 3, method: str = "movement", seed: int = 0) -> None:
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        seed = _checks.integer(seed, "seed")
        if isinstance(names, str) or not names:
            raise ValueError("names must be a non-empty list of parameter names")
        polynomial_sparsity(0, initial=initial, final=final, begin=begin, end=end, power=power)  # checks
        self.method = method
        self.schedule = dict(initial=initial, final=final, begin=begin, end=end, power=power)
        self.sparsity = float(initial)
        modules = dict(model.named_modules())
        self.modules: dict[str, nn.Linear] = {}
        for name in names:
            owner, _, leaf = name.rpartition(".")
            module = modules.get(owner)
            if leaf != "weight" or not isinstance(module, nn.Linear):
                raise ValueError(f"names must name the weight of an nn.Linear, got {name!r}")
            if parametrize.is_parametrized(module, "weight"):
                raise ValueError(f"{name!r} is already parametrized (pruned by another pruner?)")
            self.modules[name] = module
        self.scores: dict[str, torch.Tensor] = {
            name: torch.zeros_like(module.weight, requires_grad=method == "movement")
            for name, module in self.modules.items()}
        if method == "random":
            generator = torch.Generator().manual_seed(seed)
            for name, score in self.scores.items():
                score.copy_(torch.rand(score.shape, generator=generator, dtype=score.dtype))
        self.movement = {name: torch.zeros_like(score) for name, score in self.scores.items()}
        for name, module in self.modules.items():
            parametrize.register_parametrization(module, "weight", _Masked(self, name))
        self._adam = (torch.optim.Adam(list(self.scores.values()), lr=0.01) if method == "movement"
                      else None)

    def __call__(self, step: int) -> None:
        """Take the scores' gradient step, then set the sparsity of ``step`` (for ``fit(on_step=...)``)."""
        step = _checks.integer(step, "step")
        self._descend()
        self.sparsity = polynomial_sparsity(step, **self.schedule)

    def _descend(self) -> None:
        """Adam's step of the scores with the gradient of the last backward pass (if any), and
        that gradient subtracted from :attr:`movement`."""
        if self._adam is None:
            return
        with torch.no_grad():
            for name, score in self.scores.items():
                if score.grad is not None:
                    self.movement[name] -= score.grad
        self._adam.step()
        self._adam.zero_grad()

    def mask_of(self, name: str, weight: torch.Tensor) -> torch.Tensor:
        """The current 0/1 mask of ``name`` (``weight`` is the unmasked matrix)."""
        if self.method == "magnitude":
            return topk_mask(weight.detach().abs(), self.sparsity)
        return topk_mask(self.scores[name], self.sparsity)

    def current_masks(self) -> dict[str, torch.Tensor]:
        """The current keep-masks (boolean), as :func:`nlprune.prune.compute_masks` returns them.

        A pending gradient of the scores (from a backward pass since the last call) is applied
        first, so the masks are those the next forward pass will use."""
        self._descend()
        with torch.no_grad():
            return {name: self.mask_of(name, m.parametrizations.weight.original).bool()
                    for name, m in self.modules.items()}

    def remove(self) -> dict[str, torch.Tensor]:
        """Bake ``W ⊙ M`` into plain weights, drop the parametrizations, return the final masks."""
        masks = self.current_masks()
        for module in self.modules.values():
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
        return masks
