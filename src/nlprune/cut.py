"""Cutting (剪切, structured pruning): physically removing hidden units, so matrices get smaller.

Masks (:mod:`nlprune.prune`) leave the shapes alone and only write zeros; cutting builds new,
smaller modules. Two facts about PyTorch's recurrent layers decide how:

* The input and recurrent matrices stack one block of ``hidden_size`` rows per gate:
  ``nn.RNN`` has 1 block, ``nn.GRU`` 3 (``[r, z, n]``), ``nn.LSTM`` 4 (``[i, f, g, o]``). Keeping
  unit ``j`` keeps row ``j`` of *every* block.
* A unit's *outgoing* weights are its column of the recurrent matrix ``weight_hh``, its column
  of the next layer's ``weight_ih`` and its column of the output layer. When those are zero, the
  unit sends nothing and cutting it changes nothing else.

Unit-level helpers work on models with an ``rnn`` (single-layer, unidirectional) and an ``out``
``nn.Linear`` that reads the RNN's hidden state, such as
:class:`nlprune.models.RNNClassifier` and :class:`nlprune.models.LSTMLanguageModel`. The scores
that decide which units to cut (``unit_norms``, ``activation_scores``, ``unit_taylor_scores``)
live with the weight scores in :mod:`nlprune.scores`.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from . import _checks
from .masks import pruned_count
from .models import gate_count, unit_layers

__all__ = [
    "keep_index",
    "unit_rows",
    "cut_rnn_hidden",
    "cut_linear_outputs",
    "cut_linear_inputs",
    "cut_linear_units",
    "keep_top_units",
    "structured_masks",
    "cut_model_hidden",
]

Indices = Sequence[int] | torch.Tensor | np.ndarray
"""Unit indices: a sequence of integers, an integer tensor or an integer NumPy array."""
Keep = Indices | Sequence[Indices]
"""Unit indices for every layer, or one set of indices per layer of a stack."""


def keep_index(keep: Sequence[int] | torch.Tensor | np.ndarray, size: int, name: str = "keep",
               device: torch.device | str | None = None) -> torch.Tensor:
    """``keep`` as a 1-D long tensor of distinct unit indices in ``range(size)``, on ``device``.

    Accepts a sequence of integers (Python or NumPy integers), an integer tensor or an integer
    NumPy array (the check, :func:`nlprune._checks.indices`, is shared with
    :mod:`nlprune.keras_cut`).

    Raises:
        TypeError: ``keep`` does not hold integers (a boolean or float array, say).
        ValueError: ``keep`` is empty, holds duplicates or indices out of range.

    Example:
        >>> keep_index([3, 1], 4)
        tensor([3, 1])
    """
    return torch.tensor(_checks.indices(keep, size, name), dtype=torch.long, device=device)


def unit_rows(keep: torch.Tensor, hidden: int, gates: int) -> torch.Tensor:
    """Row indices of the kept units in a matrix of ``gates`` stacked blocks of ``hidden`` rows.

    Example:
        >>> unit_rows(torch.tensor([0, 2]), hidden=3, gates=2)
        tensor([0, 2, 3, 5])
    """
    return torch.cat([g * hidden + keep for g in range(gates)])


def _per_layer_keep(rnn: nn.RNNBase, keep: Keep) -> list[torch.Tensor]:
    """One index tensor per layer: ``keep`` itself for every layer, or a list with one per layer."""
    nested = (not isinstance(keep, (torch.Tensor, np.ndarray)) and len(keep) > 0
              and isinstance(keep[0], (Sequence, torch.Tensor, np.ndarray)))
    if not nested:
        return [keep_index(keep, rnn.hidden_size)] * rnn.num_layers
    if len(keep) != rnn.num_layers:
        raise ValueError(f"keep has {len(keep)} lists of indices but the RNN has {rnn.num_layers} layers")
    keeps = [keep_index(k, rnn.hidden_size, f"keep[{i}]") for i, k in enumerate(keep)]
    if len({k.numel() for k in keeps}) != 1:
        raise ValueError("every layer must keep the same number of units (nn.RNN/GRU/LSTM have one "
                         f"hidden_size), got {[k.numel() for k in keeps]}")
    return keeps


@torch.no_grad()
def cut_rnn_hidden(rnn: nn.RNNBase, keep: Keep) -> nn.RNNBase:
    """A new ``nn.RNN``/``nn.GRU``/``nn.LSTM`` with ``hidden_size == len(keep)``.

    ``keep`` lists the hidden units to keep, in the order they should appear. For a stack of
    layers it is either one list used by every layer or a list of lists, one per layer (all of
    the same length); cutting layer ``k`` also removes the matching inputs of layer ``k + 1``.
    Weights are copied gate by gate. When the dropped units send nothing (their columns of
    ``weight_hh`` and of the next layer's ``weight_ih`` are zero), the new module's output equals
    the original output restricted to ``keep``. The settings ``bias``, ``batch_first``,
    ``dropout``, ``nonlinearity`` (``nn.RNN``), device, dtype and the training mode are carried over.

    Args:
        rnn: an ``nn.RNN``, ``nn.GRU`` or ``nn.LSTM`` (unidirectional, no projections).
        keep: unit indices (integers, an integer tensor or NumPy array), or one such list per layer.

    Returns:
        A new module; ``rnn`` is not changed.

    Raises:
        TypeError: ``rnn`` is not a recurrent layer or ``keep`` does not hold integers.
        ValueError: ``keep`` is empty, has duplicates or indices out of range, or per-layer
            lists differ in length or number; bidirectional layers and projections.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> lstm = nn.LSTM(3, 4, bias=False)
        >>> small = cut_rnn_hidden(lstm, [0, 3])
        >>> small
        LSTM(3, 2, bias=False)
        >>> torch.equal(small.weight_ih_l0, lstm.weight_ih_l0[[0, 3, 4, 7, 8, 11, 12, 15]])
        True
    """
    gates = gate_count(rnn)
    keeps = _per_layer_keep(rnn, keep)
    kwargs = dict(input_size=rnn.input_size, hidden_size=len(keeps[0]), num_layers=rnn.num_layers,
                  bias=rnn.bias, batch_first=rnn.batch_first, dropout=rnn.dropout)
    if isinstance(rnn, nn.RNN):
        kwargs["nonlinearity"] = rnn.nonlinearity
    weight = rnn.weight_ih_l0
    new = type(rnn)(**kwargs, device=weight.device, dtype=weight.dtype)
    for layer, k in enumerate(keeps):
        rows = unit_rows(k, rnn.hidden_size, gates).to(weight.device)
        w_ih = getattr(rnn, f"weight_ih_l{layer}")[rows]
        if layer > 0:
            w_ih = w_ih[:, keeps[layer - 1].to(weight.device)]
        getattr(new, f"weight_ih_l{layer}").copy_(w_ih)
        getattr(new, f"weight_hh_l{layer}").copy_(
            getattr(rnn, f"weight_hh_l{layer}")[rows][:, k.to(weight.device)])
        if rnn.bias:
            for kind in ("ih", "hh"):
                getattr(new, f"bias_{kind}_l{layer}").copy_(getattr(rnn, f"bias_{kind}_l{layer}")[rows])
    return new.train(rnn.training)


def _check_linear(linear: nn.Module, name: str) -> None:
    if not isinstance(linear, nn.Linear):
        raise TypeError(f"{name} must be an nn.Linear, got {type(linear).__name__}")


@torch.no_grad()
def cut_linear_outputs(linear: nn.Linear, keep: Sequence[int] | torch.Tensor) -> nn.Linear:
    """A new ``nn.Linear`` that computes only the outputs (units) in ``keep``.

    Raises ``TypeError`` if ``linear`` is not an ``nn.Linear`` and ``ValueError``/``TypeError``
    for a bad ``keep`` (as :func:`cut_rnn_hidden`).

    Example:
        >>> cut_linear_outputs(nn.Linear(4, 6), [1, 2, 5])
        Linear(in_features=4, out_features=3, bias=True)
    """
    _check_linear(linear, "linear")
    k = keep_index(keep, linear.out_features).to(linear.weight.device)
    new = nn.Linear(linear.in_features, len(k), bias=linear.bias is not None,
                    device=linear.weight.device, dtype=linear.weight.dtype)
    new.weight.copy_(linear.weight[k])
    if linear.bias is not None:
        new.bias.copy_(linear.bias[k])
    return new.train(linear.training)


@torch.no_grad()
def cut_linear_inputs(linear: nn.Linear, keep: Sequence[int] | torch.Tensor) -> nn.Linear:
    """A new ``nn.Linear`` that reads only the inputs in ``keep`` (same outputs).

    Errors as :func:`cut_linear_outputs`.

    Example:
        >>> cut_linear_inputs(nn.Linear(4, 6), [0, 3])
        Linear(in_features=2, out_features=6, bias=True)
    """
    _check_linear(linear, "linear")
    k = keep_index(keep, linear.in_features).to(linear.weight.device)
    new = nn.Linear(len(k), linear.out_features, bias=linear.bias is not None,
                    device=linear.weight.device, dtype=linear.weight.dtype)
    new.weight.copy_(linear.weight[:, k])
    if linear.bias is not None:
        new.bias.copy_(linear.bias)
    return new.train(linear.training)


def cut_linear_units(first: nn.Linear, second: nn.Linear, keep: Sequence[int] | torch.Tensor
                     ) -> tuple[nn.Linear, nn.Linear]:
    """Cut the hidden units between two ``nn.Linear`` layers: the outputs of ``first`` and the
    matching inputs of ``second``. With an elementwise activation in between (``relu``, …),
    ``second(act(first(x)))`` is unchanged whenever the dropped units' columns of ``second`` are zero.

    Returns:
        The pair of new layers.

    Raises:
        TypeError: a layer is not an ``nn.Linear``.
        ValueError: ``first``'s outputs do not match ``second``'s inputs, or a bad ``keep``.

    Example:
        >>> cut_linear_units(nn.Linear(4, 6), nn.Linear(6, 2), [0, 5])
        (Linear(in_features=4, out_features=2, bias=True), Linear(in_features=2, out_features=2, bias=True))
    """
    _check_linear(first, "first")
    _check_linear(second, "second")
    if first.out_features != second.in_features:
        raise ValueError(f"first has {first.out_features} outputs but second reads {second.in_features} inputs")
    return cut_linear_outputs(first, keep), cut_linear_inputs(second, keep)


def keep_top_units(scores: torch.Tensor, fraction_cut: float) -> torch.Tensor:
    """Indices (sorted) of the units to keep after cutting the ``round(fraction_cut * n)``
    lowest-scoring of ``n`` units; at least one unit always stays.

    Args:
        scores: a 1-D tensor, one real score per unit (higher = more important).
        fraction_cut: the share of units to cut, in [0, 1) (NumPy scalars accepted).

    Returns:
        A sorted 1-D long tensor of unit indices, for :func:`cut_model_hidden` or
        :func:`structured_masks`.

    Raises:
        TypeError: ``scores`` is not a 1-D tensor or ``fraction_cut`` not a number.
        ValueError: ``fraction_cut`` outside [0, 1), or NaN scores.

    Example:
        >>> keep_top_units(torch.tensor([0.3, 0.9, 0.1, 0.5]), 0.5)
        tensor([1, 3])
        >>> keep_top_units(torch.tensor([0.3, 0.9, 0.1, 0.5]), 0.9)   # round(3.6) = 4, one stays
        tensor([1])
    """
    if not isinstance(scores, torch.Tensor) or scores.dim() != 1 or scores.numel() == 0:
        raise TypeError("scores must be a non-empty 1-D torch.Tensor with one score per unit")
    if scores.is_floating_point() and torch.isnan(scores).any():
        raise ValueError("scores contains NaN; every unit needs a real score")
    fraction_cut = _checks.fraction(fraction_cut, "fraction_cut", upper_open=True)
    n_keep = max(1, scores.numel() - pruned_count(fraction_cut, scores.numel()))
    return torch.topk(scores, n_keep, sorted=False).indices.sort().values


def structured_masks(model: nn.Module, keep: Sequence[int] | torch.Tensor) -> dict[str, torch.Tensor]:
    """Keep-masks (for :func:`nlprune.train.fit` and :func:`nlprune.prune.apply_masks`) that zero
    every weight and bias of the units not in ``keep``: their gate rows, their recurrent columns
    and their output-layer columns. A unit masked this way sends nothing, so
    :func:`cut_model_hidden` with the same ``keep`` leaves the model's outputs unchanged.

    Raises ``TypeError``/``ValueError`` for a model without a single-layer ``rnn`` and ``out``
    or a bad ``keep`` (as :func:`cut_rnn_hidden`).

    Example:
        >>> from nlprune.models import RNNClassifier
        >>> masks = structured_masks(RNNClassifier(10, kind="rnn", embed_dim=2, hidden=3), [0, 2])
        >>> masks["rnn.weight_hh_l0"].int()
        tensor([[1, 0, 1],
                [0, 0, 0],
                [1, 0, 1]], dtype=torch.int32)
        >>> masks["out.weight"].int()
        tensor([[1, 0, 1],
                [1, 0, 1]], dtype=torch.int32)
    """
    rnn, out, gates = unit_layers(model)
    hidden = rnn.hidden_size
    k = keep_index(keep, hidden, device=rnn.weight_ih_l0.device)
    unit = torch.zeros(hidden, dtype=torch.bool, device=k.device)
    unit[k] = True
    rows = unit.repeat(gates)
    masks = {"rnn.weight_ih_l0": rows[:, None].expand_as(rnn.weight_ih_l0).clone(),
             "rnn.weight_hh_l0": (rows[:, None] & unit[None, :]).clone(),
             "out.weight": unit[None, :].expand_as(out.weight).clone()}
    if rnn.bias:
        masks["rnn.bias_ih_l0"] = rows.clone()
        masks["rnn.bias_hh_l0"] = rows.clone()
    return masks


def cut_model_hidden(model: nn.Module, keep: Keep) -> nn.Module:
    """A copy of ``model`` with only the hidden units in ``keep``: its ``rnn`` is cut by
    :func:`cut_rnn_hidden` and its ``out`` layer loses the matching inputs (those of the top
    layer's ``keep``). The original model is left unchanged; the copy keeps its training mode
    and the RNN's settings (see :func:`cut_rnn_hidden`).

    Raises ``TypeError``/``ValueError`` as :func:`cut_rnn_hidden` and for a model without an
    ``rnn`` and an ``out`` ``nn.Linear``.

    Example:
        >>> from nlprune.models import RNNClassifier
        >>> small = cut_model_hidden(RNNClassifier(10, kind="lstm", embed_dim=4, hidden=8), [1, 5, 6])
        >>> small.rnn, small.out
        (LSTM(4, 3, batch_first=True), Linear(in_features=3, out_features=2, bias=True))
    """
    rnn, out, _ = unit_layers(model, single_layer=False)
    keeps = _per_layer_keep(rnn, keep)
    new = copy.deepcopy(model)
    new.rnn = cut_rnn_hidden(rnn, keep)
    new.out = cut_linear_inputs(out, keeps[-1])
    return new
