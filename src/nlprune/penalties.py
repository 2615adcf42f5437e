"""Penalties added to the training loss: L1 (drives single weights to zero) and group lasso
(drives whole groups, e.g. the rows of a unit, to zero together). Chapter 4.

Each returns a differentiable scalar tensor on the model's device, in the parameters' dtype,
to pass as ``penalty=`` to :func:`nlprune.train.fit`.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from . import _checks
from .scores import named_weights

__all__ = ["l1_penalty", "group_lasso_penalty"]


def _zero(model: nn.Module) -> torch.Tensor:
    """A scalar zero on the model's device and in its dtype (the penalty of no weights)."""
    first = next(model.parameters(), None)
    return torch.zeros(()) if first is None else first.new_zeros(())


def l1_penalty(model: nn.Module, strength: float, names: list[str] | None = None) -> torch.Tensor:
    """The L1 penalty ``strength * Σ |w|`` over the named weights, to add to the loss.

    Args:
        model: the model.
        strength: ``λ >= 0``.
        names: the penalised parameters (default: :func:`prunable_weights`).

    Returns:
        A differentiable scalar tensor (zero for no names, still a tensor).

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
    strength = _checks.nonnegative(strength, "strength")
    return strength * sum((p.abs().sum() for p in named_weights(model, names).values()), _zero(model))


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
        A differentiable scalar tensor (zero for no names, still a tensor).

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
    strength = _checks.nonnegative(strength, "strength")
    if not isinstance(groups, Mapping):
        raise TypeError(f"groups must map parameter names to dimensions, got {type(groups).__name__}")
    params = named_weights(model, list(groups), argument="groups")
    dims = {n: _checks.dimension(d, params[n].dim(), f"groups[{n!r}]") for n, d in groups.items()}
    total = _zero(model)
    for name, dim in dims.items():
        w = params[name]
        others = [d for d in range(w.dim()) if d != dim]
        total = total + torch.sqrt((w ** 2).sum(dim=others) + 1e-12).sum()
    return strength * total
