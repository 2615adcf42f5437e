"""Sensitivity scans: prune one tensor at a time and measure what it costs (chapter 2, after
Han et al., 2015, and MIT 6.5940's Lab 1)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import pandas as pd
import torch
from torch import nn

from . import _checks
from .masks import compute_masks
from .scores import named_weights

__all__ = ["sensitivity_scan"]


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
        ValueError: a sparsity outside [0, 1], a sparsity given twice, or unknown ``names``. Whatever ``evaluate``
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
    params = named_weights(model, names)
    sparsities = [_checks.fraction(s, "sparsity") for s in sparsities]
    repeated = sorted({s for s in sparsities if sparsities.count(s) > 1})
    if repeated:
        raise ValueError(f"sparsities holds duplicates {repeated}: each column must be measured once")
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
