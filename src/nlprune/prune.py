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
from collections.abc import Mapping

import pandas as pd
import torch
from torch import nn

__all__ = [
    "prunable_weights",
    "magnitude_scores",
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
    params = dict(model.named_parameters())
    names = prunable_weights(model) if names is None else names
    unknown = [n for n in names if n not in params]
    if unknown:
        raise ValueError(f"names contains parameters the model does not have: {unknown}; "
                         f"the model has {list(params)}")
    return {n: params[n].detach().abs().clone() for n in names}


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
