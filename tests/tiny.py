"""Tiny models and data shared by the unit tests (imported as ``tiny``; pytest puts ``tests/`` on
the path)."""

import torch
from torch import nn

from nlprune.models import RNNClassifier


def batches(n_batches: int = 3, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Float64 inputs ``[8, 5]`` and labels in ``{0, 1, 2}``, for :func:`mlp`."""
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(8, 5, generator=g, dtype=torch.float64), torch.randint(0, 3, (8,), generator=g))
            for _ in range(n_batches)]


def ce(model: nn.Module, batch) -> torch.Tensor:
    """The ``loss_fn(model, batch)`` of the score functions for :func:`batches`."""
    x, y = batch
    return nn.functional.cross_entropy(model(x), y)


def mean_loss(model: nn.Module, batches) -> float:
    with torch.no_grad():
        return sum(ce(model, b) for b in batches).item() / len(batches)


def mlp() -> nn.Module:
    """A seeded float64 5-4-3 network with weights ``0.weight`` and ``2.weight``."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3)).double()


def lstm_classifier() -> RNNClassifier:
    """A seeded LSTM classifier over 12 tokens, 6 hidden units."""
    torch.manual_seed(0)
    return RNNClassifier(12, kind="lstm", embed_dim=4, hidden=6)


def classifier(kind: str = "lstm") -> RNNClassifier:
    """A seeded classifier over 20 tokens, 10 hidden units, in evaluation mode."""
    torch.manual_seed(0)
    return RNNClassifier(20, kind=kind, embed_dim=6, hidden=10).eval()
