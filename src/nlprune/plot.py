"""Figures shared by the chapters (matplotlib)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import torch
from matplotlib.axes import Axes

__all__ = ["weight_histograms", "sparsity_accuracy"]


def weight_histograms(tensors: Mapping[str, torch.Tensor], *, bins: int = 80, log: bool = True,
                      axes: Sequence[Axes] | None = None) -> Sequence[Axes]:
    """One histogram of weight values per tensor, side by side (zeros included)."""
    if len(tensors) == 0:
        raise ValueError("tensors is empty")
    if axes is None:
        _, axes = plt.subplots(1, len(tensors), figsize=(3.2 * len(tensors), 2.8), squeeze=False)
        axes = axes[0]
    for ax, (name, t) in zip(axes, tensors.items()):
        ax.hist(t.detach().flatten().cpu().numpy(), bins=bins, log=log, color="tab:blue")
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
