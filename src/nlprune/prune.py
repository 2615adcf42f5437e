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

import math
from collections.abc import Callable, Iterable, Mapping

import pandas as pd
import torch
from torch import nn

__all__ = [
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
    "make_permanent",
    "sparsity_report",
]

_SCOPES = ("layer", "global")


def prunable_weights(model: nn.Module) -> list[str]:
    """Names of the weight matrices of ``model``: parameters with two or more dimensions.

    Biases (one dimension) are left out, as is usual: they are few and they matter.
    """
    return [name for name, p in model.named_parameters() if p.dim() >= 2]


def magnitude_scores(model: nn.Module, names: list[str] | None = None) -> dict[str, torch.Tensor]:
    """``|w|`` for each named parameter (default: :func:`prunable_weights`)."""
    return {n: p.detach().abs().clone() for n, p in _resolve(model, names).items()}


def _resolve(model: nn.Module, names: list[str] | None) -> dict[str, nn.Parameter]:
    params = dict(model.named_parameters())
    names = prunable_weights(model) if names is None else names
    unknown = [n for n in names if n not in params]
    if unknown:
        raise ValueError(f"names contains parameters the model does not have: {unknown}; "
                         f"the model has {list(params)}")
    return {n: params[n] for n in names}


def accumulated_gradients(model: nn.Module, batches: Iterable,
                          loss_fn: Callable[[nn.Module, object], torch.Tensor],
                          names: list[str] | None = None) -> dict[str, torch.Tensor]:
    """The gradient of the *mean* loss over ``batches`` for each named parameter.

    ``loss_fn(model, batch)`` returns the mean loss of one batch. The model is put in
    evaluation mode (no dropout) and its own ``.grad`` fields are left untouched.
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
    """
    return {n: g.abs() for n, g in accumulated_gradients(model, batches, loss_fn, names).items()}


def taylor_scores(model: nn.Module, batches: Iterable,
                  loss_fn: Callable[[nn.Module, object], torch.Tensor],
                  names: list[str] | None = None) -> dict[str, torch.Tensor]:
    """First-order Taylor score ``|w * g|`` (Molchanov et al., 2017).

    Setting ``w`` to zero changes the loss by ``L(0) - L(w) ≈ -g * w`` to first order, so
    ``|w * g|`` estimates how much the loss changes when the weight is pruned.
    """
    params = _resolve(model, names)
    grads = accumulated_gradients(model, batches, loss_fn, list(params))
    return {n: (params[n].detach() * grads[n]).abs() for n in params}


def random_scores(model: nn.Module, names: list[str] | None = None, *, seed: int = 0) -> dict[str, torch.Tensor]:
    """Uniform random scores (a seeded baseline that every criterion must beat)."""
    gen = torch.Generator().manual_seed(seed)
    return {n: torch.rand(p.shape, generator=gen) for n, p in _resolve(model, names).items()}


def row_norm_scores(weight: torch.Tensor, *, p: int | float = 2, dim: int = 0) -> torch.Tensor:
    """The Lp norm of every slice of ``weight`` along ``dim`` (``dim=0``: one norm per row, i.e.
    per output unit of a Linear layer), as used by ``torch.nn.utils.prune.ln_structured``."""
    if not isinstance(weight, torch.Tensor) or weight.dim() < 2:
        raise TypeError("weight must be a torch.Tensor with at least two dimensions")
    if not -weight.dim() <= dim < weight.dim():
        raise ValueError(f"dim must be in [{-weight.dim()}, {weight.dim() - 1}], got {dim!r}")
    return torch.linalg.vector_norm(weight.detach(), ord=p, dim=_other_dims(weight, dim))


def _other_dims(weight: torch.Tensor, dim: int) -> list[int]:
    """All dimensions of ``weight`` except ``dim``: reducing over them gives one value per slice."""
    return [d for d in range(weight.dim()) if d != dim % weight.dim()]


def polynomial_sparsity(step: int, *, initial: float, final: float, begin: int, end: int,
                        power: int | float = 3) -> float:
    """The gradual pruning schedule of Zhu & Gupta (2017).

    ``initial`` before ``begin``, ``final`` after ``end``, and in between
    ``final + (initial - final) * (1 - (step - begin) / (end - begin)) ** power``: the
    sparsity rises fast at first, while the network is still redundant, and slowly at the end.

    Raises ``ValueError`` for a negative step, sparsities outside [0, 1], ``begin >= end``,
    a negative ``begin`` or a non-positive ``power``.
    """
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step!r}")
    for name, value in (("initial", initial), ("final", final)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} sparsity must be in [0, 1], got {value!r}")
    if begin < 0:
        raise ValueError(f"begin must be >= 0, got {begin!r}")
    if begin >= end:
        raise ValueError(f"begin must be smaller than end, got begin={begin!r} and end={end!r}")
    if power <= 0:
        raise ValueError(f"power must be > 0, got {power!r}")
    if step <= begin:
        return float(initial)
    if step >= end:
        return float(final)
    return float(final + (initial - final) * (1 - (step - begin) / (end - begin)) ** power)


class GradualPruner:
    """Gradual magnitude pruning during training, for ``nlprune.train.fit(on_step=...)``.

    Every ``frequency`` steps counted from ``begin`` (as TF-MOT's ``PolynomialDecay`` counts
    them), and once more at ``end``, it sets the masks to the current ``polynomial_sparsity``
    target from the current weights' magnitudes. ``masks`` is the dict to pass to ``fit(masks=...)``:
    it is updated in place, so ``fit`` keeps the newest masks applied after every step. ::

        pruner = GradualPruner(model, final=0.9, begin=0, end=600, frequency=20)
        fit(model, train, valid, epochs=6, masks=pruner.masks, on_step=pruner)
    """

    def __init__(self, model: nn.Module, *, final: float, begin: int, end: int, frequency: int = 10,
                 initial: float = 0.0, power: int | float = 3, scope: str = "layer",
                 names: list[str] | None = None) -> None:
        if frequency < 1:
            raise ValueError(f"frequency must be >= 1, got {frequency!r}")
        polynomial_sparsity(0, initial=initial, final=final, begin=begin, end=end, power=power)  # checks
        self.model, self.scope, self.frequency = model, scope, frequency
        self.schedule = dict(initial=initial, final=final, begin=begin, end=end, power=power)
        params = _resolve(model, names)
        self.names = list(params)
        self.masks: dict[str, torch.Tensor] = {n: torch.ones_like(p, dtype=torch.bool)
                                               for n, p in params.items()}
        self.history: list[tuple[int, float]] = []

    def __call__(self, step: int) -> None:
        if (step - self.schedule["begin"]) % self.frequency != 0 and step < self.schedule["end"]:
            return
        target = polynomial_sparsity(step, **self.schedule)
        if self.history and self.history[-1][1] == target:
            return
        self.masks.update(compute_masks(magnitude_scores(self.model, self.names), target, scope=self.scope))
        apply_masks(self.model, self.masks)
        self.history.append((step, target))


def sensitivity_scan(model: nn.Module, evaluate: Callable[[nn.Module], float], sparsities: Iterable[float],
                     names: list[str] | None = None) -> pd.DataFrame:
    """Prune one tensor at a time by magnitude and record ``evaluate(model)``.

    Returns a table with one row per tensor and one column per sparsity. The model's weights
    are restored after every evaluation.
    """
    params = _resolve(model, names)
    sparsities = list(sparsities)
    rows = {}
    for name, param in params.items():
        original = param.detach().clone()
        rows[name] = {}
        for s in sparsities:
            mask = compute_masks({name: original.abs()}, s)[name]
            with torch.no_grad():
                param.copy_(original * mask)
            rows[name][s] = evaluate(model)
        with torch.no_grad():
            param.copy_(original)
    table = pd.DataFrame(rows).T
    table.columns.name = "sparsity"
    return table


def l1_penalty(model: nn.Module, strength: float, names: list[str] | None = None) -> torch.Tensor:
    """``strength * Σ |w|`` over the named weights: pushes individual weights to exactly zero."""
    if strength < 0:
        raise ValueError(f"strength must be >= 0, got {strength!r}")
    return strength * sum(p.abs().sum() for p in _resolve(model, names).values())


def group_lasso_penalty(model: nn.Module, strength: float, groups: Mapping[str, int]) -> torch.Tensor:
    """``strength * Σ_groups ||w_group||_2`` (Wen et al., 2016): pushes whole groups to zero.

    ``groups`` maps a parameter name to the dimension along which its slices form the groups
    (``0``: rows, i.e. output units of a Linear layer; ``1``: columns, i.e. inputs).
    """
    if strength < 0:
        raise ValueError(f"strength must be >= 0, got {strength!r}")
    params = _resolve(model, list(groups))
    total = 0.0
    for name, dim in groups.items():
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
        if s.is_floating_point() and torch.isnan(s).any():
            raise ValueError(f"scores[{name!r}] contains NaN; scores must be real numbers")


def compute_masks(scores: Mapping[str, torch.Tensor], sparsity: float, *, scope: str = "layer"
                  ) -> dict[str, torch.Tensor]:
    """Boolean keep-masks that prune the lowest-scoring entries.

    ``scope="layer"`` prunes exactly ``round(sparsity * n)`` entries of each tensor of ``n``
    entries; ``scope="global"`` pools all tensors and prunes ``round(sparsity * N)`` of their
    ``N`` entries together, so some tensors lose more than others. Ties are broken as
    ``torch.topk`` breaks them, which makes the masks equal to those of
    ``torch.nn.utils.prune.l1_unstructured`` / ``global_unstructured`` on ``|w|``.

    Raises ``ValueError`` for a sparsity outside [0, 1], an unknown scope, empty scores or
    scores containing NaN.
    """
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)):
        raise TypeError(f"sparsity must be a number in [0, 1], got {type(sparsity).__name__}")
    if not (0.0 <= sparsity <= 1.0) or math.isnan(sparsity):
        raise ValueError(f"sparsity must be in [0, 1], got {sparsity!r}")
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
    flat = torch.cat([s.detach().reshape(-1).float() for s in scores.values()])
    keep = lowest(flat)
    masks, start = {}, 0
    for n, s in scores.items():
        masks[n] = keep[start : start + s.numel()].view(s.shape)
        start += s.numel()
    return masks


def _masked_params(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> list[tuple[nn.Parameter, torch.Tensor]]:
    params = dict(model.named_parameters())
    pairs = []
    for name, mask in masks.items():
        if name not in params:
            raise ValueError(f"mask {name!r} names no parameter of the model; parameters are {list(params)}")
        if tuple(mask.shape) != tuple(params[name].shape):
            raise ValueError(f"mask {name!r} has shape {tuple(mask.shape)} but the parameter has shape "
                             f"{tuple(params[name].shape)}")
        pairs.append((params[name], mask.to(device=params[name].device, dtype=params[name].dtype)))
    return pairs


@torch.no_grad()
def apply_masks(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> nn.Module:
    """Zero, in place, every weight whose mask entry is ``False``; returns ``model``.

    Raises ``ValueError`` when a mask names no parameter or its shape differs from the
    parameter's shape.
    """
    for param, mask in _masked_params(model, masks):
        param.mul_(mask)
    return model


@torch.no_grad()
def mask_gradients(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> None:
    """Zero, in place, the gradients of pruned weights (call after ``backward``)."""
    for param, mask in _masked_params(model, masks):
        if param.grad is not None:
            param.grad.mul_(mask)


def make_permanent(model: nn.Module) -> list[str]:
    """Fold every ``torch.nn.utils.prune`` re-parametrisation of ``model`` into plain weights.

    After ``torch.nn.utils.prune`` a module holds ``weight_orig`` and a buffer ``weight_mask``
    and recomputes ``weight`` before every forward pass. This calls ``prune.remove`` on each of
    them, so ``weight`` becomes an ordinary parameter that keeps its zeros, and returns the
    names that were folded (``"rnn.weight_hh_l0"``, …).
    """
    from torch.nn.utils import prune as torch_prune

    folded = []
    for mod_name, module in model.named_modules():
        for hook in list(module._forward_pre_hooks.values()):
            if isinstance(hook, torch_prune.BasePruningMethod):
                torch_prune.remove(module, hook._tensor_name)
                folded.append(f"{mod_name}.{hook._tensor_name}" if mod_name else hook._tensor_name)
    return folded


def sparsity_report(masks: Mapping[str, torch.Tensor]) -> pd.DataFrame:
    """One row per mask (entries, pruned, sparsity) and a final ``total`` row."""
    if len(masks) == 0:
        raise ValueError("masks is empty")
    rows = [{"tensor": n, "shape": tuple(m.shape), "entries": m.numel(), "pruned": int((~m.bool()).sum())}
            for n, m in masks.items()]
    rows.append({"tensor": "total", "shape": "", "entries": sum(r["entries"] for r in rows),
                 "pruned": sum(r["pruned"] for r in rows)})
    table = pd.DataFrame(rows)
    table["sparsity"] = table["pruned"] / table["entries"]
    return table
