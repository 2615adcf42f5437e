"""Figures shared by the chapters (matplotlib)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import torch
from matplotlib.axes import Axes

__all__ = ["weight_histograms", "sparsity_accuracy"]


def weight_histograms(tensors: Mapping[str, torch.Tensor], *, bins: int = 80, log: bool = True,
                      axes: Sequence[Axes] | None = None) -> Sequence[Axes]:
    """One histogram of weight values per tensor, side by side (zeros included).

    Args:
        tensors: titles to tensors (any device; bfloat16 is drawn through float32).
        bins: bins per histogram.
        log: a logarithmic count axis.
        axes: where to draw, one axis per tensor (default: a new row of figures).

    Returns:
        The axes drawn on.

    Raises:
        ValueError: no tensors, or fewer ``axes`` than tensors.
    """
    if len(tensors) == 0:
        raise ValueError("tensors is empty")
    if axes is None:
        _, axes = plt.subplots(1, len(tensors), figsize=(3.2 * len(tensors), 2.8), squeeze=False)
        axes = axes[0]
    if len(axes) < len(tensors):
        raise ValueError(f"axes has {len(axes)} axes but tensors has {len(tensors)}: give one axis per tensor")
    for ax, (name, t) in zip(axes, tensors.items()):
        values = t.detach().flatten().cpu()
        if values.dtype == torch.bfloat16:  # NumPy has no bfloat16; float32 holds every value exactly
            values = values.float()
        ax.hist(values.numpy(), bins=bins, log=log, color="tab:blue")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("weight value")
    axes[0].set_ylabel("count" + (" (log scale)" if log else ""))
    return axes


def sparsity_accuracy(curves: Mapping[str, tuple[Sequence[float], Sequence[float]]], *,
                      dense: float | None = None, baseline: float | None = None,
                      ax: Axes | None = None, ylabel: str = "test accuracy") -> Axes:
    """Accuracy against sparsity, one line per ``label: (sparsities, accuracies)``.

    ``dense`` and ``baseline`` (e.g. the majority class) are drawn as horizontal lines.
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.8))
    for label, (xs, ys) in curves.items():
        if len(xs) != len(ys):
            raise ValueError(f"curve {label!r} has {len(xs)} sparsities but {len(ys)} accuracies")
        ax.plot([100 * x for x in xs], ys, marker="o", label=label)
    if dense is not None:
        ax.axhline(dense, color="black", linestyle="--", linewidth=1, label="dense model")
    if baseline is not None:
        ax.axhline(baseline, color="grey", linestyle=":", linewidth=1, label="majority class")
    ax.set_xlabel("sparsity of the pruned weights (%)")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return ax
