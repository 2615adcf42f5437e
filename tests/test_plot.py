"""nlprune.plot: the shared figures."""

import matplotlib.pyplot as plt
import pytest
import torch

from nlprune import plot


def test_plots():
    axes = plot.weight_histograms({"a": torch.randn(100), "b": torch.randn(5, 5)})
    assert [ax.get_title() for ax in axes] == ["a", "b"]
    ax = plot.sparsity_accuracy({"x": ([0.5, 0.9], [0.7, 0.6])}, dense=0.75, baseline=0.57)
    assert ax.get_xlabel().startswith("sparsity") and len(ax.lines) == 3
    with pytest.raises(ValueError):
        plot.sparsity_accuracy({"x": ([0.5], [0.7, 0.6])})
    with pytest.raises(ValueError):
        plot.weight_histograms({})
    plt.close("all")


def test_weight_histograms_count_every_entry_of_every_tensor():
    tensors = {"a": torch.zeros(30), "b": torch.randn(4, 5, dtype=torch.float64),
               "c": torch.randn(7, dtype=torch.bfloat16)}
    axes = plot.weight_histograms(tensors, bins=10, log=False)
    assert [ax.get_title() for ax in axes] == ["a", "b", "c"]
    assert [sum(p.get_height() for p in ax.patches) for ax in axes] == [30, 20, 7]  # zeros included
    assert axes[0].get_ylabel() == "count"
    plt.close("all")


def test_weight_histograms_refuse_fewer_axes_than_tensors():
    _, axes = plt.subplots(1, 2)
    with pytest.raises(ValueError, match="axes has 2 axes but tensors has 3"):
        plot.weight_histograms({"a": torch.randn(3), "b": torch.randn(3), "c": torch.randn(3)}, axes=axes)
    plt.close("all")
