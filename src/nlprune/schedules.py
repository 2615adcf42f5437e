"""Schedules: how sparsity grows during training, and the gradual magnitude pruner that follows one.

:func:`polynomial_sparsity` is the cubic schedule of Zhu & Gupta (2017); :class:`GradualPruner`
is a :class:`nlprune.masks.Pruner` that sets its masks to that schedule's target from the
current magnitudes, for :func:`nlprune.train.fit` ``(pruner=...)``.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from . import _checks
from .masks import SCOPES, apply_masks, compute_masks
from .scores import magnitude_scores, named_weights

__all__ = ["polynomial_sparsity", "GradualPruner"]


def polynomial_sparsity(step: int, *, initial: float, final: float, begin: int, end: int,
                        power: int | float = 3) -> float:
    """The gradual pruning schedule of Zhu & Gupta (2017).

    With ``t`` the step, ``t0 = begin`` and ``t1 = end``, the target sparsity is ``initial``
    up to ``t0``, ``final`` from ``t1`` on, and in between
    ``s(t) = final + (initial - final) * (1 - (t - t0) / (t1 - t0)) ** power``: it rises fast
    at first, while the network is still redundant, and slowly at the end.

    Args:
        step: the training step ``t`` (an integer >= 0).
        initial, final: the sparsities at ``begin`` and ``end``, in [0, 1].
        begin, end: the steps where the ramp starts and ends, ``0 <= begin < end``.
        power: the exponent (3 in the paper), positive.

    Returns:
        The target sparsity at ``step`` as a ``float``.

    Raises:
        TypeError: a step is not an integer or a sparsity not a real number.
        ValueError: a negative step, sparsities outside [0, 1], ``begin >= end``, a negative
            ``begin`` or a non-positive ``power``.

    Example:
        >>> [round(polynomial_sparsity(t, initial=0.0, final=0.8, begin=0, end=4), 4) for t in range(6)]
        [0.0, 0.4625, 0.7, 0.7875, 0.8, 0.8]
    """
    step = _checks.integer(step, "step")
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step!r}")
    initial = _checks.fraction(initial, "initial sparsity")
    final = _checks.fraction(final, "final sparsity")
    begin, end = _checks.integer(begin, "begin"), _checks.integer(end, "end")
    if begin < 0:
        raise ValueError(f"begin must be >= 0, got {begin!r}")
    if begin >= end:
        raise ValueError(f"begin must be smaller than end, got begin={begin!r} and end={end!r}")
    power = _checks.positive(power, "power")
    if step <= begin:
        return initial
    if step >= end:
        return final
    return float(final + (initial - final) * (1 - (step - begin) / (end - begin)) ** power)


class GradualPruner:
    """Gradual magnitude pruning during training, for ``nlprune.train.fit(pruner=...)``.

    At the steps ``begin, begin + frequency, begin + 2 * frequency, …`` up to ``end`` (counted
    from ``begin``, as TF-MOT's ``PolynomialDecay`` counts them), and once more at ``end``
    itself, it sets the masks to the current :func:`polynomial_sparsity` target from the
    current weights' magnitudes. Before ``begin`` it never changes anything; after ``end`` the
    target stays ``final``. (TF-MOT updates only where ``(step - begin) % frequency == 0`` and
    ``step <= end``, so with an ``end`` that is not on that grid it stops short of ``end``;
    this class also updates at ``end``, so the final sparsity is reached exactly.)

    It is a :class:`nlprune.masks.Pruner`: hand it to the training loop once,
    ``fit(..., pruner=pruner)``; the loop calls it before every step and keeps its ``masks``
    (updated in place) applied after every optimizer step. ``history`` lists ``(step, target)``
    for every update.

    At every update it first checks that the masks it set last held: a weight it pruned that is
    no longer zero means the loop did not keep the masks between updates (a loop that calls the
    pruner but does not re-apply ``pruner.masks`` ends far less sparse than ``history`` says),
    and it raises ``RuntimeError`` rather than report a sparsity the model does not have.

    Args:
        model: the model to prune.
        final, begin, end, initial, power: the schedule, as in :func:`polynomial_sparsity`.
            ``final`` may also map parameter names to their own final sparsities (a per-tensor
            allocation); each tensor then follows the same schedule to its own target, the
            names default to the mapping's keys, and ``scope`` must be ``"layer"``.
        frequency: steps between updates, an integer >= 1.
        scope: ``"layer"`` or ``"global"``, as in :func:`compute_masks`.
        names: the parameters to prune (default: :func:`prunable_weights`).

    Raises:
        TypeError: ``frequency`` or a step is not an integer.
        ValueError: a bad schedule, ``frequency < 1``, an unknown ``scope`` or unknown ``names``
            (all checked when the object is built, not at the first step); per-tensor targets
            with ``names`` or with ``scope="global"``.
        RuntimeError: (when called) a weight pruned at an earlier update is no longer zero.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> layer = nn.Linear(10, 10)
        >>> pruner = GradualPruner(layer, final=0.5, begin=2, end=7, frequency=2)
        >>> for step in range(9):
        ...     pruner(step)
        >>> pruner.history
        [(2, 0.0), (4, 0.392), (6, 0.496), (7, 0.5)]
        >>> int((~pruner.masks["weight"]).sum())
        50

    In training: ``fit(model, train, valid, epochs=6, pruner=pruner)``. A loop that forgets to
    keep the masks is caught at the next update:

        >>> with torch.no_grad():
        ...     _ = layer.weight.add_(1.0)   # what an optimizer step without the masks does
        >>> try:
        ...     pruner(7)
        ... except RuntimeError as error:
        ...     print(str(error)[:89])
        the masks of this GradualPruner did not hold between its updates: weight: 50 of 50 pruned

    Per-tensor targets (``history`` then records the overall target, weighted by the tensors'
    sizes):

        >>> model = nn.Sequential(nn.Linear(10, 10), nn.Linear(10, 4))
        >>> pruner = GradualPruner(model, final={"0.weight": 0.9, "1.weight": 0.5}, begin=0, end=4)
        >>> for step in range(5):
        ...     pruner(step)
        >>> {n: round(float((~m).float().mean()), 2) for n, m in pruner.masks.items()}
        {'0.weight': 0.9, '1.weight': 0.5}
    """

    def __init__(self, model: nn.Module, *, final: float | Mapping[str, float], begin: int, end: int,
                 frequency: int = 10, initial: float = 0.0, power: int | float = 3, scope: str = "layer",
                 names: list[str] | None = None) -> None:
        frequency = _checks.at_least(frequency, "frequency", 1)
        if scope not in SCOPES:
            raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
        self.finals: dict[str, float] | None = None  # per-tensor targets, or None for one target
        if isinstance(final, Mapping):
            if names is not None or scope != "layer" or not final:
                raise ValueError("per-tensor targets (a mapping as final) need scope='layer', no "
                                 "names (the mapping's keys are the names) and at least one entry")
            self.finals = dict(final)
            names = list(final)
            for target in self.finals.values():
                polynomial_sparsity(0, initial=initial, final=target, begin=begin, end=end, power=power)
            final = max(self.finals.values())  # only checked here; each tensor uses its own
        polynomial_sparsity(0, initial=initial, final=final, begin=begin, end=end, power=power)  # checks
        self.model, self.scope, self.frequency = model, scope, frequency
        self.schedule = dict(initial=initial, final=final, begin=begin, end=end, power=power)
        params = named_weights(model, names, argument="final" if self.finals is not None else "names")
        self.names = list(params)
        self.masks: dict[str, torch.Tensor] = {n: torch.ones_like(p, dtype=torch.bool)
                                               for n, p in params.items()}
        self.history: list[tuple[int, float]] = []
        self._last_targets: dict[str, float] = {}

    def __call__(self, step: int) -> None:
        """Update the masks (and zero the newly pruned weights) if ``step`` is an update step,
        after checking that the masks of the last update held."""
        step = _checks.integer(step, "step")
        begin, end = self.schedule["begin"], self.schedule["end"]
        if step < begin or ((step - begin) % self.frequency != 0 and step != end):
            return
        self._check_held()
        if self.finals is not None:
            self._update_per_tensor(step)
            return
        target = polynomial_sparsity(step, **self.schedule)
        if self.history and self.history[-1][1] == target:
            return
        self.masks.update(compute_masks(magnitude_scores(self.model, self.names), target, scope=self.scope))
        apply_masks(self.model, self.masks)
        self.history.append((step, target))

    def _update_per_tensor(self, step: int) -> None:
        """The update with per-tensor targets; ``history`` records the overall target."""
        schedule = {k: v for k, v in self.schedule.items() if k != "final"}
        targets = {n: polynomial_sparsity(step, final=f, **schedule) for n, f in self.finals.items()}
        if self.history and targets == self._last_targets:
            return
        scores = magnitude_scores(self.model, self.names)
        for name, target in targets.items():
            self.masks.update(compute_masks({name: scores[name]}, target))
        apply_masks(self.model, self.masks)
        self._last_targets = targets
        sizes = {n: self.masks[n].numel() for n in targets}
        overall = sum(targets[n] * sizes[n] for n in targets) / sum(sizes.values())
        self.history.append((step, overall))

    @torch.no_grad()
    def _check_held(self) -> None:
        """``RuntimeError`` when a weight pruned by an earlier update is no longer zero."""
        if not self.history:
            return
        params = dict(self.model.named_parameters())
        regrown = []
        for name, mask in self.masks.items():
            pruned = ~mask.to(params[name].device)
            nonzero = int(torch.count_nonzero(params[name][pruned]))
            if nonzero:
                regrown.append(f"{name}: {nonzero} of {int(pruned.sum())} pruned entries are nonzero")
        if regrown:
            raise RuntimeError("the masks of this GradualPruner did not hold between its updates: "
                               + "; ".join(regrown) + ". Hand the pruner to the training loop once, "
                               "fit(..., pruner=pruner), or re-apply pruner.masks after every optimizer step.")
