"""Pruning core: importance scores, keep-masks, applying masks, and reports.

A *mask* is a boolean tensor with the shape of a parameter: ``True`` keeps the weight,
``False`` prunes it (sets it to zero). Masks are plain data in a ``dict`` keyed by parameter
name (``model.named_parameters()`` names), so they can be saved, compared and reported.

Keeping pruned weights at zero while training is the job of :func:`nlprune.train.fit`, which
calls :func:`mask_gradients` after every backward pass and :func:`apply_masks` after every
optimizer step (the optimizer may move a weight whose gradient is zero, e.g. through Adam's
momentum or weight decay, so re-applying the mask after the step is what makes zeros exact).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import pandas as pd
import torch
from torch import nn

from . import _checks

__all__ = [
    "nm_masks",
    "prunable_weights",
    "magnitude_scores",
    "accumulated_gradients",
    "gradient_scores",
    "taylor_scores",
    "random_scores",
    "row_norm_scores",
    "polynomial_sparsity",
    "GradualPruner",
    "sensitivity_scan",
    "l1_penalty",
    "group_lasso_penalty",
    "compute_masks",
    "apply_masks",
    "mask_gradients",
    "check_masks",
    "make_permanent",
    "overall_sparsity",
    "sparsity_report",
]

_SCOPES = ("layer", "global")


def prunable_weights(model: nn.Module) -> list[str]:
    """Names of the weight matrices of ``model``: parameters with two or more dimensions.

    Biases (one dimension) are left out, as is usual: they are few and they matter.

    Args:
        model: any ``nn.Module``.

    Returns:
        The names, in ``model.named_parameters()`` order.

    Example:
        >>> prunable_weights(nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2)))
        ['0.weight', '1.weight']
    """
    return [name for name, p in model.named_parameters() if p.dim() >= 2]


def magnitude_scores(model: nn.Module, names: list[str] | None = None) -> dict[str, torch.Tensor]:
    """``|w|`` for each named parameter.

    Args:
        model: the model whose weights are scored.
        names: parameter names to score (default: :func:`prunable_weights`).

    Returns:
        A dict name -> detached tensor of ``|w|``, a copy (pruning the model later does not
        change it).

    Raises:
        ValueError: ``names`` holds a name the model does not have.

    Example:
        >>> layer = nn.Linear(2, 1, bias=False)
        >>> with torch.no_grad():
        ...     _ = layer.weight.copy_(torch.tensor([[-0.5, 0.25]]))
        >>> magnitude_scores(layer)
        {'weight': tensor([[0.5000, 0.2500]])}
    """
    return {n: p.detach().abs().clone() for n, p in _resolve(model, names).items()}


def _resolve(model: nn.Module, names: Iterable[str] | None) -> dict[str, nn.Parameter]:
    params = dict(model.named_parameters())
    names = prunable_weights(model) if names is None else _checks.known_names(names, params)
    return {n: params[n] for n in names}


def accumulated_gradients(model: nn.Module, batches: Iterable,
                          loss_fn: Callable[[nn.Module, object], torch.Tensor],
                          names: list[str] | None = None) -> dict[str, torch.Tensor]:
    """The gradient of the *mean* loss over ``batches`` for each named parameter.

    The per-batch gradients are averaged: with equal batch sizes this is the gradient of the
    loss over all the examples. The model is put in evaluation mode (no dropout) while the
    gradients are taken, its mode is restored afterwards (also when ``loss_fn`` raises), and
    its own ``.grad`` fields are left untouched.

    Args:
        model: the model.
        batches: an iterable of batches (e.g. a ``DataLoader`` or a list).
        loss_fn: ``loss_fn(model, batch)`` returns the mean loss of one batch.
        names: parameters to differentiate (default: :func:`prunable_weights`).

    Returns:
        A dict name -> gradient tensor (zeros where a parameter is unused).

    Raises:
        ValueError: ``batches`` is empty, or ``names`` holds an unknown name.

    Example:
        >>> layer = nn.Linear(2, 1, bias=False)
        >>> with torch.no_grad():
        ...     _ = layer.weight.fill_(1.0)
        >>> x = torch.tensor([[1.0, 2.0]])
        >>> accumulated_gradients(layer, [x], lambda m, b: m(b).sum())   # d(w.x)/dw = x
        {'weight': tensor([[1., 2.]])}
    """
    params = _resolve(model, names)
    was_training = model.training
    model.eval()
    totals = {n: torch.zeros_like(p) for n, p in params.items()}
    count = 0
    try:
        for batch in batches:
            grads = torch.autograd.grad(loss_fn(model, batch), list(params.values()), allow_unused=True)
            for n, g in zip(params, grads):
                if g is not None:
                    totals[n] += g
            count += 1
    finally:
        model.train(was_training)
    if count == 0:
        raise ValueError("batches is empty: the gradient needs at least one batch")
    return {n: t / count for n, t in totals.items()}


def gradient_scores(model: nn.Module, batches: Iterable,
                    loss_fn: Callable[[nn.Module, object], torch.Tensor],
                    names: list[str] | None = None) -> dict[str, torch.Tensor]:
    """``|g|``: the magnitude of the gradient of the mean loss over ``batches``.

    A small ``|g|`` means the loss is locally flat in that weight's direction; it says
    nothing about how large the weight is, so a large weight at a flat spot scores low.
    Arguments, errors and evaluation mode as in :func:`accumulated_gradients`.

    Returns:
        A dict name -> ``|g|``.

    Example:
        >>> layer = nn.Linear(2, 1, bias=False)
        >>> x = torch.tensor([[1.0, -2.0]])
        >>> gradient_scores(layer, [x], lambda m, b: m(b).sum())
        {'weight': tensor([[1., 2.]])}
    """
    return {n: g.abs() for n, g in accumulated_gradients(model, batches, loss_fn, names).items()}


def taylor_scores(model: nn.Module, batches: Iterable,
                  loss_fn: Callable[[nn.Module, object], torch.Tensor],
                  names: list[str] | None = None) -> dict[str, torch.Tensor]:
    """First-order Taylor score ``|w * g|`` of each weight.

    Setting ``w`` to zero changes the loss by ``L(0) - L(w) ≈ -g * w`` to first order, so
    ``|w * g|`` estimates how much the loss changes when the weight is pruned. (Molchanov et
    al., 2017, apply this expansion to whole feature maps; the per-weight form is the same
    expansion for a group of one.) ``g`` is the gradient of the mean loss over ``batches``;
    arguments, errors and evaluation mode as in :func:`accumulated_gradients`.

    Returns:
        A dict name -> ``|w * g|``.

    Example:
        >>> layer = nn.Linear(2, 1, bias=False)
        >>> with torch.no_grad():
        ...     _ = layer.weight.copy_(torch.tensor([[3.0, 0.5]]))
        >>> x = torch.tensor([[1.0, -2.0]])
        >>> taylor_scores(layer, [x], lambda m, b: m(b).sum())   # |w * x|
        {'weight': tensor([[3., 1.]])}
    """
    params = _resolve(model, names)
    grads = accumulated_gradients(model, batches, loss_fn, list(params))
    return {n: (params[n].detach() * grads[n]).abs() for n in params}


def random_scores(model: nn.Module, names: list[str] | None = None, *, seed: int = 0) -> dict[str, torch.Tensor]:
    """Uniform random scores: the baseline that every criterion must beat.

    Args:
        model: the model (only the shapes of its weights are used).
        names: parameters to score (default: :func:`prunable_weights`).
        seed: the seed of a private generator; torch's global generator is not touched.

    Returns:
        A dict name -> tensor of uniform [0, 1) scores, the same for the same seed.

    Raises:
        ValueError: ``names`` holds an unknown name.

    Example:
        >>> layer = nn.Linear(4, 3)
        >>> a, b = random_scores(layer, seed=1), random_scores(layer, seed=1)
        >>> torch.equal(a["weight"], b["weight"]), tuple(a["weight"].shape)
        (True, (3, 4))
    """
    gen = torch.Generator().manual_seed(_checks.integer(seed, "seed"))
    return {n: torch.rand(p.shape, generator=gen) for n, p in _resolve(model, names).items()}


def row_norm_scores(weight: torch.Tensor, *, p: int | float = 2, dim: int = 0) -> torch.Tensor:
    """The Lp norm of every slice of ``weight`` along ``dim``, as
    ``torch.nn.utils.prune.ln_structured`` computes it.

    Args:
        weight: a tensor with at least two dimensions.
        p: the order of the norm (``1``, ``2``, ``float("inf")``, …), positive.
        dim: ``0`` gives one norm per row (an output unit of ``nn.Linear``), ``1`` one per column.

    Returns:
        A 1-D tensor with ``weight.shape[dim]`` norms.

    Raises:
        TypeError: ``weight`` is not a tensor of two or more dimensions, or ``dim`` is not an integer.
        ValueError: ``dim`` is out of range or ``p`` is not positive.

    Example:
        >>> row_norm_scores(torch.tensor([[3.0, -4.0], [0.0, 1.0]]), p=2, dim=0)
        tensor([5., 1.])
    """
    if not isinstance(weight, torch.Tensor) or weight.dim() < 2:
        raise TypeError("weight must be a torch.Tensor with at least two dimensions")
    dim = _checks.dimension(dim, weight.dim())
    return torch.linalg.vector_norm(weight.detach(), ord=_checks.positive(p, "p"),
                                    dim=_other_dims(weight, dim))


def _other_dims(weight: torch.Tensor, dim: int) -> list[int]:
    """All dimensions of ``weight`` except ``dim``: reducing over them gives one value per slice."""
    return [d for d in range(weight.dim()) if d != dim]


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
    """Gradual magnitude pruning during training, for ``nlprune.train.fit(on_step=...)``.

    At the steps ``begin, begin + frequency, begin + 2 * frequency, …`` up to ``end`` (counted
    from ``begin``, as TF-MOT's ``PolynomialDecay`` counts them), and once more at ``end``
    itself, it sets the masks to the current :func:`polynomial_sparsity` target from the
    current weights' magnitudes. Before ``begin`` it never changes anything; after ``end`` the
    target stays ``final``. (TF-MOT updates only where ``(step - begin) % frequency == 0`` and
    ``step <= end``, so with an ``end`` that is not on that grid it stops short of ``end``;
    this class also updates at ``end``, so the final sparsity is reached exactly.)

    ``masks`` is the dict to pass to ``fit(masks=...)``: it is updated in place, so ``fit``
    keeps the newest masks applied after every step. ``history`` lists ``(step, target)`` for
    every update.

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

    Example:
        >>> torch.manual_seed(0) and None
        >>> layer = nn.Linear(10, 10)
        >>> pruner = GradualPruner(layer, final=0.5, begin=2, end=7, frequency=2)
        >>> for step in range(9):
        ...     pruner(step)
        >>> pruner.history
        [(2, 0.0), (4, 0.392), (6, 0.496), (7, 0.5)]
        >>> int((~pruner.masks["weight"]).sum())
        50

    In training: ``fit(model, train, valid, epochs=6, masks=pruner.masks, on_step=pruner)``.

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
        frequency = _checks.integer(frequency, "frequency")
        if frequency < 1:
            raise ValueError(f"frequency must be >= 1, got {frequency!r}")
        if scope not in _SCOPES:
            raise ValueError(f"scope must be one of {_SCOPES}, got {scope!r}")
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
        params = _resolve(model, names)
        self.names = list(params)
        self.masks: dict[str, torch.Tensor] = {n: torch.ones_like(p, dtype=torch.bool)
                                               for n, p in params.items()}
        self.history: list[tuple[int, float]] = []
        self._last_targets: dict[str, float] = {}

    def __call__(self, step: int) -> None:
        """Update the masks (and zero the newly pruned weights) if ``step`` is an update step."""
        step = _checks.integer(step, "step")
        begin, end = self.schedule["begin"], self.schedule["end"]
        if step < begin or ((step - begin) % self.frequency != 0 and step != end):
            return
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


def sensitivity_scan(model: nn.Module, evaluate: Callable[[nn.Module], float], sparsities: Iterable[float],
                     names: list[str] | None = None) -> pd.DataFrame:
    """Prune one tensor at a time by magnitude and record ``evaluate(model)``.

    Args:
        model: the trained model.
        evaluate: ``evaluate(model)`` returns a number (e.g. validation accuracy).
        sparsities: the sparsities to try, each in [0, 1].
        names: the tensors to scan (default: :func:`prunable_weights`).

    Returns:
        A table with one row per tensor and one column per sparsity.

    Raises:
        ValueError: a sparsity outside [0, 1] or unknown ``names``. Whatever ``evaluate``
            raises is passed on, after the model's weights are restored.

    The model's weights are restored after every tensor, also when ``evaluate`` raises.

    Example:
        >>> layer = nn.Linear(2, 1, bias=False)
        >>> with torch.no_grad():
        ...     _ = layer.weight.copy_(torch.tensor([[2.0, 1.0]]))
        >>> x = torch.tensor([[1.0, 1.0]])
        >>> sensitivity_scan(layer, lambda m: m(x).item(), [0.0, 0.5, 1.0])
        sparsity  0.0  0.5  1.0
        weight    3.0  2.0  0.0
        >>> layer.weight
        Parameter containing:
        tensor([[2., 1.]], requires_grad=True)
    """
    params = _resolve(model, names)
    sparsities = [_checks.fraction(s, "sparsity") for s in sparsities]
    rows = {}
    for name, param in params.items():
        original = param.detach().clone()
        rows[name] = {}
        try:
            for s in sparsities:
                mask = compute_masks({name: original.abs()}, s)[name]
                with torch.no_grad():
                    param.copy_(original * mask)
                rows[name][s] = evaluate(model)
        finally:
            with torch.no_grad():
                param.copy_(original)
    table = pd.DataFrame(rows).T
    table.columns.name = "sparsity"
    return table


def l1_penalty(model: nn.Module, strength: float, names: list[str] | None = None) -> torch.Tensor:
    """The L1 penalty ``strength * Σ |w|`` over the named weights, to add to the loss.

    Args:
        model: the model.
        strength: ``λ >= 0``.
        names: the penalised parameters (default: :func:`prunable_weights`).

    Returns:
        A differentiable scalar tensor.

    Raises:
        TypeError: ``strength`` is not a real number.
        ValueError: ``strength < 0`` or unknown ``names``.

    Example:
        >>> layer = nn.Linear(2, 1, bias=False)
        >>> with torch.no_grad():
        ...     _ = layer.weight.copy_(torch.tensor([[-3.0, 1.0]]))
        >>> l1_penalty(layer, 0.5)
        tensor(2., grad_fn=<MulBackward0>)
    """
    strength = _nonnegative(strength, "strength")
    return strength * sum(p.abs().sum() for p in _resolve(model, names).values())


def _nonnegative(value: object, name: str) -> float:
    value = _checks.real(value, name)
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return value


def group_lasso_penalty(model: nn.Module, strength: float, groups: Mapping[str, int]) -> torch.Tensor:
    """The group-lasso penalty ``strength * Σ_groups ||w_group||_2`` (Wen et al., 2016).

    Its gradient has the same length for every group that is not zero, so it pushes whole
    groups (rows, columns) to zero together.

    Args:
        model: the model.
        strength: ``λ >= 0``.
        groups: maps a parameter name to the dimension along which its slices form the groups
            (``0``: rows, i.e. output units of a Linear layer; ``1``: columns, i.e. inputs).

    Returns:
        A differentiable scalar tensor.

    Raises:
        TypeError: ``strength`` is not a real number or a dimension is not an integer.
        ValueError: ``strength < 0``, unknown names, or a dimension out of range.

    Example:
        >>> layer = nn.Linear(2, 2, bias=False)
        >>> with torch.no_grad():
        ...     _ = layer.weight.copy_(torch.tensor([[3.0, 4.0], [0.0, 0.0]]))
        >>> round(group_lasso_penalty(layer, 1.0, {"weight": 0}).item(), 4)   # ||(3, 4)|| + ||(0, 0)||
        5.0
    """
    strength = _nonnegative(strength, "strength")
    params = _resolve(model, list(groups))
    dims = {n: _checks.dimension(d, params[n].dim(), f"dim of {n!r}") for n, d in groups.items()}
    total = 0.0
    for name, dim in dims.items():
        w = params[name]
        total = total + torch.sqrt((w ** 2).sum(dim=_other_dims(w, dim)) + 1e-12).sum()
    return strength * total


def _check_scores(scores: Mapping[str, torch.Tensor]) -> None:
    if not isinstance(scores, Mapping):
        raise TypeError(f"scores must be a mapping of names to tensors, got {type(scores).__name__}")
    if len(scores) == 0:
        raise ValueError("scores is empty: give at least one tensor of scores")
    for name, s in scores.items():
        if not isinstance(s, torch.Tensor):
            raise TypeError(f"scores[{name!r}] must be a torch.Tensor, got {type(s).__name__}")
        if s.dtype == torch.bool or s.is_complex():
            raise TypeError(f"scores[{name!r}] must hold real numbers, got dtype {s.dtype}")
        if s.is_floating_point() and torch.isnan(s).any():
            raise ValueError(f"scores[{name!r}] contains NaN; scores must be real numbers")


def _pooled(scores: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """All scores in one flat tensor, without losing precision: integers stay integers, and
    floating-point scores are pooled in float64, so the global ranking equals each tensor's own."""
    flats = [s.detach().reshape(-1) for s in scores.values()]
    if any(f.is_floating_point() for f in flats):
        flats = [f.double() for f in flats]
    return torch.cat(flats)


def compute_masks(scores: Mapping[str, torch.Tensor], sparsity: float, *, scope: str = "layer"
                  ) -> dict[str, torch.Tensor]:
    """Boolean keep-masks that prune the lowest-scoring entries.

    ``scope="layer"`` prunes exactly ``round(sparsity * n)`` entries of each tensor of ``n``
    entries; ``scope="global"`` pools all tensors and prunes ``round(sparsity * N)`` of their
    ``N`` entries together, so some tensors lose more than others. (``round`` is Python's,
    which rounds halves to even, as ``torch.nn.utils.prune`` does.) Ties are broken as
    ``torch.topk`` breaks them, which makes the masks equal to those of
    ``torch.nn.utils.prune.l1_unstructured`` / ``global_unstructured`` on ``|w|``. The pooled
    ranking is done in full precision (float64, or the integers themselves), so both scopes
    order close scores alike.

    Args:
        scores: maps names to score tensors (any shapes, real numbers).
        sparsity: the share to prune, a real number in [0, 1] (NumPy scalars are accepted).
        scope: ``"layer"`` or ``"global"``.

    Returns:
        A dict name -> boolean tensor of the score's shape, ``True`` = keep.

    Raises:
        TypeError: ``scores`` is not a mapping of real-valued tensors, or ``sparsity`` is not
            a real number.
        ValueError: a sparsity outside [0, 1], an unknown scope, empty scores or NaN scores.

    Example:
        >>> scores = {"a": torch.tensor([0.1, 0.9, 0.5, 0.3]), "b": torch.tensor([0.8, 0.7])}
        >>> compute_masks(scores, 0.5)
        {'a': tensor([False,  True,  True, False]), 'b': tensor([ True, False])}
        >>> compute_masks(scores, 0.5, scope="global")
        {'a': tensor([False,  True, False, False]), 'b': tensor([True, True])}
    """
    sparsity = _checks.fraction(sparsity, "sparsity")
    if scope not in _SCOPES:
        raise ValueError(f"scope must be one of {_SCOPES}, got {scope!r}")
    _check_scores(scores)

    def lowest(flat: torch.Tensor) -> torch.Tensor:
        keep = torch.ones(flat.numel(), dtype=torch.bool, device=flat.device)
        k = round(sparsity * flat.numel())
        if k > 0:
            keep[torch.topk(flat, k, largest=False).indices] = False
        return keep

    if scope == "layer":
        return {n: lowest(s.detach().reshape(-1)).view(s.shape) for n, s in scores.items()}
    keep = lowest(_pooled(scores))
    masks, start = {}, 0
    for n, s in scores.items():
        masks[n] = keep[start : start + s.numel()].view(s.shape)
        start += s.numel()
    return masks


def nm_masks(scores: Mapping[str, torch.Tensor], n: int, m: int) -> dict[str, torch.Tensor]:
    """N:M semi-structured keep-masks: along the last dimension, in every group of ``m``
    consecutive entries, exactly the ``n`` highest scores are kept (2:4 keeps 2 of every 4, a
    sparsity of 50% that sparse tensor cores on recent GPUs can exploit).

    Args:
        scores: maps names to score tensors (as for :func:`compute_masks`); the last dimension
            of each must be a multiple of ``m``.
        n: entries kept per group, an integer in ``[1, m)``.
        m: the group size, an integer >= 2.

    Returns:
        A dict name -> boolean tensor of the score's shape, ``True`` = keep. Ties are broken
        as ``torch.topk`` breaks them.

    Raises:
        TypeError: bad ``scores`` or non-integer ``n`` / ``m``.
        ValueError: ``n`` not in ``[1, m)``, a last dimension that is not a multiple of ``m``,
            empty or NaN scores.

    Example:
        >>> nm_masks({"w": torch.tensor([[0.1, 0.9, 0.5, 0.3, 4.0, 3.0, 2.0, 1.0]])}, 2, 4)
        {'w': tensor([[False,  True,  True, False,  True,  True, False, False]])}
    """
    n, m = _checks.integer(n, "n"), _checks.integer(m, "m")
    if m < 2 or not 1 <= n < m:
        raise ValueError(f"n must be in [1, m) with m >= 2, got n={n!r}, m={m!r}")
    _check_scores(scores)
    masks = {}
    for name, s in scores.items():
        if s.dim() == 0 or s.shape[-1] % m != 0:
            raise ValueError(f"scores[{name!r}] has shape {tuple(s.shape)}: its last dimension must be "
                             f"a multiple of m={m}")
        groups = s.detach().reshape(-1, m)
        keep = torch.zeros(groups.shape, dtype=torch.bool, device=s.device)
        keep.scatter_(1, torch.topk(groups, n, dim=1).indices, True)
        masks[name] = keep.view(s.shape)
    return masks


def _masked_params(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> list[tuple[nn.Parameter, torch.Tensor]]:
    """Pairs (parameter, mask on its device); every mask must be a boolean tensor of its shape."""
    if not isinstance(masks, Mapping):
        raise TypeError(f"masks must be a mapping of parameter names to boolean tensors, "
                        f"got {type(masks).__name__}")
    params = dict(model.named_parameters())
    pairs = []
    for name, mask in masks.items():
        if not isinstance(mask, torch.Tensor):
            raise TypeError(f"mask {name!r} must be a torch.Tensor of dtype torch.bool, got "
                            f"{type(mask).__name__} (convert a NumPy mask with torch.from_numpy)")
        if mask.dtype != torch.bool:
            raise TypeError(f"mask {name!r} must have dtype torch.bool (True = keep), got {mask.dtype}")
        _checks.mask_matches(name, mask.shape, params[name].shape if name in params else (), params)
        pairs.append((params[name], mask.to(params[name].device)))
    return pairs


@torch.no_grad()
def apply_masks(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> nn.Module:
    """Zero, in place, every weight whose mask entry is ``False``.

    Args:
        model: the model.
        masks: maps parameter names to boolean keep-masks of the parameters' shapes.

    Returns:
        ``model`` itself.

    Raises:
        TypeError: a mask is not a boolean ``torch.Tensor`` (a float mask would scale weights).
        ValueError: a mask names no parameter or its shape differs from the parameter's shape.

    Example:
        >>> layer = nn.Linear(3, 1, bias=False)
        >>> with torch.no_grad():
        ...     _ = layer.weight.copy_(torch.tensor([[1.0, 2.0, 3.0]]))
        >>> apply_masks(layer, {"weight": torch.tensor([[True, False, True]])}).weight
        Parameter containing:
        tensor([[1., 0., 3.]], requires_grad=True)
    """
    for param, mask in _masked_params(model, masks):
        param.mul_(mask)
    return model


@torch.no_grad()
def mask_gradients(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> None:
    """Zero, in place, the gradients of pruned weights (call after ``backward``).

    A pruned weight still has a gradient (the loss depends on it even at zero), so without
    this an optimizer step would move it away from zero. Arguments and errors as in
    :func:`apply_masks`; parameters without a ``.grad`` are skipped.
    """
    for param, mask in _masked_params(model, masks):
        if param.grad is not None:
            param.grad.mul_(mask)


@torch.no_grad()
def check_masks(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> None:
    """Fail loudly if a pruned weight is no longer zero (it regrew during training).

    Call it after fine-tuning: a training loop that forgets to re-apply the masks (or an
    optimizer with momentum or weight decay) moves pruned weights away from zero, and the model
    silently stops being as sparse as reported.

    Args:
        model: the model.
        masks: the keep-masks the model was pruned with (as for :func:`apply_masks`).

    Raises:
        AssertionError: some weight with mask ``False`` is not exactly zero; the message names
            each such tensor and how many of its pruned weights regrew.
        TypeError, ValueError: bad masks, as in :func:`apply_masks`.

    Example:
        >>> layer = nn.Linear(2, 1, bias=False)
        >>> masks = {"weight": torch.tensor([[True, False]])}
        >>> check_masks(apply_masks(layer, masks), masks)   # passes silently
        >>> with torch.no_grad():
        ...     _ = layer.weight.add_(1.0)
        >>> try:
        ...     check_masks(layer, masks)
        ... except AssertionError as error:
        ...     print(error)
        pruned weights regrew: weight: 1 of 1 pruned entries are nonzero
    """
    regrown = []
    for (name, mask), (param, device_mask) in zip(masks.items(), _masked_params(model, masks)):
        nonzero = int(torch.count_nonzero(param[~device_mask]))
        if nonzero:
            regrown.append(f"{name}: {nonzero} of {int((~mask).sum())} pruned entries are nonzero")
    if regrown:
        raise AssertionError("pruned weights regrew: " + "; ".join(regrown))


def make_permanent(model: nn.Module) -> list[str]:
    """Fold every ``torch.nn.utils.prune`` re-parametrisation of ``model`` into plain weights.

    After ``torch.nn.utils.prune`` a module holds ``weight_orig`` and a buffer ``weight_mask``
    and recomputes ``weight`` before every forward pass. This calls ``prune.remove`` on each of
    them, so ``weight`` becomes an ordinary parameter that keeps its zeros, and returns the
    names that were folded (``"rnn.weight_hh_l0"``, …).

    Example:
        >>> from torch.nn.utils import prune as torch_prune
        >>> model = nn.Sequential(nn.Linear(4, 2))
        >>> _ = torch_prune.l1_unstructured(model[0], "weight", amount=0.5)
        >>> sorted(n for n, _ in model.named_parameters())
        ['0.bias', '0.weight_orig']
        >>> make_permanent(model)
        ['0.weight']
        >>> sorted(n for n, _ in model.named_parameters())
        ['0.bias', '0.weight']
    """
    from torch.nn.utils import prune as torch_prune

    folded = []
    for mod_name, module in model.named_modules():
        for hook in list(module._forward_pre_hooks.values()):
            if isinstance(hook, torch_prune.BasePruningMethod):
                torch_prune.remove(module, hook._tensor_name)
                folded.append(f"{mod_name}.{hook._tensor_name}" if mod_name else hook._tensor_name)
    return folded


def overall_sparsity(masks: Mapping[str, torch.Tensor]) -> float:
    """The share of pruned entries over all masks together (the ``total`` row of
    :func:`sparsity_report`).

    Raises:
        ValueError: ``masks`` is empty.

    Example:
        >>> overall_sparsity({"a": torch.tensor([True, False]), "b": torch.zeros(2, dtype=torch.bool)})
        0.75
    """
    if len(masks) == 0:
        raise ValueError("masks is empty")
    pruned = sum(int((~m.bool()).sum()) for m in masks.values())
    return pruned / sum(m.numel() for m in masks.values())


def sparsity_report(masks: Mapping[str, torch.Tensor]) -> pd.DataFrame:
    """A table of the masks: one row per mask (entries, pruned, sparsity) and a ``total`` row.

    Args:
        masks: maps names to boolean keep-masks.

    Returns:
        A ``pandas.DataFrame`` with columns tensor, shape, entries, pruned, sparsity.

    Raises:
        ValueError: ``masks`` is empty.

    Example:
        >>> sparsity_report({"w": torch.tensor([[True, False], [False, False]])})
          tensor   shape  entries  pruned  sparsity
        0      w  (2, 2)        4       3      0.75
        1  total                4       3      0.75
    """
    if len(masks) == 0:
        raise ValueError("masks is empty")
    rows = [{"tensor": n, "shape": tuple(m.shape), "entries": m.numel(), "pruned": int((~m.bool()).sum())}
            for n, m in masks.items()]
    rows.append({"tensor": "total", "shape": "", "entries": sum(r["entries"] for r in rows),
                 "pruned": sum(r["pruned"] for r in rows)})
    table = pd.DataFrame(rows)
    table["sparsity"] = table["pruned"] / table["entries"]
    return table
