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
:class:`nlprune.models.RNNClassifier` and :class:`nlprune.models.LSTMLanguageModel`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from . import _checks, prune
from .models import valid_steps

__all__ = [
    "gate_count",
    "unit_rows",
    "cut_rnn_hidden",
    "cut_linear_outputs",
    "cut_linear_inputs",
    "cut_linear_units",
    "unit_norms",
    "activation_scores",
    "unit_taylor_scores",
    "keep_top_units",
    "structured_masks",
    "cut_model_hidden",
]

_GATES = {nn.LSTM: 4, nn.GRU: 3, nn.RNN: 1}


def gate_count(rnn: nn.Module) -> int:
    """Number of gate blocks stacked in the weights: 1 (``nn.RNN``), 3 (``nn.GRU``), 4 (``nn.LSTM``).

    Raises:
        TypeError: ``rnn`` is not an ``nn.RNN``, ``nn.GRU`` or ``nn.LSTM``.
        ValueError: a bidirectional layer or an LSTM with projections (``proj_size > 0``),
            which this module does not cut.

    Example:
        >>> gate_count(nn.LSTM(3, 5)), gate_count(nn.GRU(3, 5)), gate_count(nn.RNN(3, 5))
        (4, 3, 1)
    """
    if type(rnn) not in _GATES:
        raise TypeError(f"rnn must be an nn.RNN, nn.GRU or nn.LSTM, got {type(rnn).__name__}")
    if rnn.bidirectional:
        raise ValueError("bidirectional RNNs are not supported: cut each direction's weights yourself")
    if getattr(rnn, "proj_size", 0) > 0:
        raise ValueError(f"LSTMs with projections are not supported (proj_size={rnn.proj_size})")
    return _GATES[type(rnn)]


def _check_keep(keep: Sequence[int] | torch.Tensor | np.ndarray, size: int, name: str = "keep") -> torch.Tensor:
    """``keep`` as a 1-D long tensor; ``ValueError`` if empty, duplicated or out of ``range(size)``.

    Accepts a sequence of integers (Python or NumPy integers), an integer tensor or an integer
    NumPy array (shared with :mod:`nlprune.keras_cut`)."""
    if isinstance(keep, np.ndarray):
        keep = torch.from_numpy(keep)
    if isinstance(keep, torch.Tensor):
        if keep.dtype == torch.bool or keep.is_floating_point() or keep.dim() != 1:
            raise TypeError(f"{name} must be a 1-D sequence of integer indices, got a {keep.dtype} tensor "
                            f"of shape {tuple(keep.shape)}")
        index = keep.long().cpu()
    else:
        items = list(keep)
        try:
            items = [_checks.integer(i, name) for i in items]
        except TypeError:
            raise TypeError(f"{name} must be a sequence of integer indices, got {items[:5]!r}…") from None
        index = torch.tensor(items, dtype=torch.long)
    if index.numel() == 0:
        raise ValueError(f"{name} is empty: keep at least one unit")
    if index.min() < 0 or index.max() >= size:
        raise ValueError(f"{name} must hold indices in [0, {size - 1}], got min {int(index.min())} "
                         f"and max {int(index.max())}")
    if index.unique().numel() != index.numel():
        raise ValueError(f"{name} holds duplicate indices")
    return index


def unit_rows(keep: torch.Tensor, hidden: int, gates: int) -> torch.Tensor:
    """Row indices of the kept units in a matrix of ``gates`` stacked blocks of ``hidden`` rows.

    Example:
        >>> unit_rows(torch.tensor([0, 2]), hidden=3, gates=2)
        tensor([0, 2, 3, 5])
    """
    return torch.cat([g * hidden + keep for g in range(gates)])


def _per_layer_keep(rnn: nn.Module, keep) -> list[torch.Tensor]:
    """One index tensor per layer: ``keep`` itself for every layer, or a list with one per layer."""
    nested = (not isinstance(keep, torch.Tensor) and len(keep) > 0
              and isinstance(keep[0], (Sequence, torch.Tensor)))
    if not nested:
        return [_check_keep(keep, rnn.hidden_size)] * rnn.num_layers
    if len(keep) != rnn.num_layers:
        raise ValueError(f"keep has {len(keep)} lists of indices but the RNN has {rnn.num_layers} layers")
    keeps = [_check_keep(k, rnn.hidden_size, f"keep[{i}]") for i, k in enumerate(keep)]
    if len({k.numel() for k in keeps}) != 1:
        raise ValueError("every layer must keep the same number of units (nn.RNN/GRU/LSTM have one "
                         f"hidden_size), got {[k.numel() for k in keeps]}")
    return keeps


@torch.no_grad()
def cut_rnn_hidden(rnn: nn.Module, keep) -> nn.Module:
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
        >>> torch.manual_seed(0) and None
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
    k = _check_keep(keep, linear.out_features).to(linear.weight.device)
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
    k = _check_keep(keep, linear.in_features).to(linear.weight.device)
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
    _check_linear(second, "second")
    if first.out_features != second.in_features:
        raise ValueError(f"first has {first.out_features} outputs but second reads {second.in_features} inputs")
    return cut_linear_outputs(first, keep), cut_linear_inputs(second, keep)


def _rnn_and_out(model: nn.Module) -> tuple[nn.Module, nn.Linear, int]:
    """The ``rnn``, the ``out`` layer and the gate count of a model whose units we can cut."""
    rnn, out = getattr(model, "rnn", None), getattr(model, "out", None)
    if rnn is None or not isinstance(out, nn.Linear):
        raise TypeError(f"model must have an `rnn` (nn.RNN/GRU/LSTM) and an `out` nn.Linear, "
                        f"got {type(model).__name__}")
    return rnn, out, gate_count(rnn)


def _unit_model(model: nn.Module) -> tuple[nn.Module, nn.Linear, int]:
    """The ``rnn`` and ``out`` of a model whose hidden units we can score or mask (one layer)."""
    rnn, out, gates = _rnn_and_out(model)
    if rnn.num_layers != 1:
        raise ValueError(f"unit scores and masks need a single-layer RNN, got num_layers={rnn.num_layers}")
    if out.in_features != rnn.hidden_size:
        raise ValueError(f"out reads {out.in_features} features but the RNN has {rnn.hidden_size} units")
    return rnn, out, gates


def _per_unit_sum(hidden: int, gates: int, values: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Sum, per hidden unit, of elementwise ``values`` laid out like the unit's weights.

    ``values`` maps ``"ih"``, ``"hh"`` and ``"out"`` to tensors shaped like ``weight_ih_l0``,
    ``weight_hh_l0`` and ``out.weight``. A unit's weights are its rows (every gate) of the input
    and recurrent matrices, its column of the recurrent matrix and its column of the output
    layer; the entries where its rows meet its own column are counted once.
    """
    ih = values["ih"].reshape(gates, hidden, -1).sum(dim=(0, 2))
    hh = values["hh"].reshape(gates, hidden, hidden)
    rows, cols = hh.sum(dim=(0, 2)), hh.sum(dim=(0, 1))
    self_loops = torch.diagonal(hh, dim1=1, dim2=2).sum(dim=0)
    return ih + rows + cols - self_loops + values["out"].sum(dim=0)


def unit_norms(model: nn.Module, *, p: int | float = 2) -> torch.Tensor:
    """The Lp norm of each hidden unit's weights across all gates (incoming input and recurrent
    rows, outgoing recurrent and output columns), one value per unit.

    The result is differentiable, so ``strength * unit_norms(model).sum()`` is a group-lasso
    penalty with one group per unit; call ``.detach()`` to use it as an importance score.

    Args:
        model: a model with a single-layer ``rnn`` and an ``out`` ``nn.Linear`` (see the module).
        p: the order of the norm, positive.

    Returns:
        A 1-D tensor with ``hidden_size`` norms.

    Raises:
        TypeError: the model has no ``rnn``/``out``, or ``p`` is not a number.
        ValueError: ``p`` is not positive, or the RNN has several layers.

    Example:
        >>> from nlprune.models import RNNClassifier
        >>> model = RNNClassifier(10, kind="gru", embed_dim=4, hidden=3)
        >>> with torch.no_grad():
        ...     for w in (model.rnn.weight_ih_l0, model.rnn.weight_hh_l0, model.out.weight):
        ...         _ = w.fill_(1.0)
        >>> unit_norms(model, p=1).tolist()   # 3 gates x (4 + 3) in, 3 x 3 - 3 out, 2 to the output
        [29.0, 29.0, 29.0]
    """
    p = _checks.positive(p, "p")
    rnn, out, gates = _unit_model(model)
    powers = {"ih": rnn.weight_ih_l0.abs() ** p, "hh": rnn.weight_hh_l0.abs() ** p, "out": out.weight.abs() ** p}
    return (_per_unit_sum(rnn.hidden_size, gates, powers) + 1e-12) ** (1.0 / p)


def _default_forward(model: nn.Module, batch) -> object:
    """Classifier batches are ``(ids, lengths, labels)``, language-model batches ``(x, y)``."""
    return model(*batch[:-1])


@torch.no_grad()
def activation_scores(model: nn.Module, batches: Iterable,
                      forward: Callable[[nn.Module, object], object] = _default_forward) -> torch.Tensor:
    """Mean ``|h_t|`` of each hidden unit over every (non-padding) time step of ``batches``.

    The RNN's output is captured with a forward hook. In classifier batches ``(ids, lengths,
    labels)`` the time steps after each sequence's ``length`` are padding, and they are left
    out, so padding does not dilute the mean (a packed sequence holds real tokens only). The
    model is run in evaluation mode; its mode is restored afterwards.

    Args:
        model: a model with a single-layer ``rnn`` and an ``out`` layer.
        batches: an iterable of batches.
        forward: ``forward(model, batch)`` runs one batch (default: ``model(*batch[:-1])``,
            which fits classifier batches ``(ids, lengths, labels)`` and LM batches ``(x, y)``).

    Returns:
        A 1-D tensor with one mean activation per unit.

    Raises:
        ValueError: ``batches`` is empty or the RNN has several layers.
        TypeError: the model has no ``rnn``/``out``.
    """
    rnn, _, _ = _unit_model(model)
    total, count = torch.zeros(rnn.hidden_size), 0
    valid = None  # the time steps of the current batch that hold tokens, when it is a classifier batch

    def hook(module, inputs, output):
        nonlocal total, count
        y = output[0]
        if isinstance(y, nn.utils.rnn.PackedSequence):
            y = y.data
        elif valid is not None:
            y = y[valid.to(y.device)]  # [B, T, hidden] -> [tokens, hidden]
        y = y.reshape(-1, rnn.hidden_size)
        total += y.abs().sum(dim=0).cpu()
        count += y.shape[0]

    was_training = model.training
    model.eval()
    handle = rnn.register_forward_hook(hook)
    try:
        for batch in batches:
            valid = valid_steps(batch[1], batch[0].shape[1]) if len(batch) == 3 else None
            forward(model, batch)
    finally:
        handle.remove()
        model.train(was_training)
    if count == 0:
        raise ValueError("batches is empty: activations need at least one batch")
    return total / count


def unit_taylor_scores(model: nn.Module, batches: Iterable,
                       loss_fn: Callable[[nn.Module, object], torch.Tensor]) -> torch.Tensor:
    """First-order Taylor score of removing each unit: ``|Σ w·g|`` over the unit's weights.

    Zeroing all of a unit's weights changes the loss by about ``-Σ w·g`` (the first-order
    expansion of chapter 3 applied to the whole group), with ``g`` the gradient of the mean
    loss over ``batches`` (``loss_fn(model, batch)`` returns one batch's mean loss).

    Returns:
        A 1-D tensor with one score per unit.

    Raises:
        ValueError: ``batches`` is empty or the RNN has several layers.
        TypeError: the model has no ``rnn``/``out``.
    """
    rnn, _, gates = _unit_model(model)
    names = {"ih": "rnn.weight_ih_l0", "hh": "rnn.weight_hh_l0", "out": "out.weight"}
    grads = prune.accumulated_gradients(model, batches, loss_fn, list(names.values()))
    params = dict(model.named_parameters())
    products = {k: params[n].detach() * grads[n] for k, n in names.items()}
    return _per_unit_sum(rnn.hidden_size, gates, products).abs()


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
    n_keep = max(1, scores.numel() - round(fraction_cut * scores.numel()))
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
    rnn, out, gates = _unit_model(model)
    hidden = rnn.hidden_size
    k = _check_keep(keep, hidden)
    unit = torch.zeros(hidden, dtype=torch.bool)
    unit[k] = True
    rows = unit.repeat(gates)
    masks = {"rnn.weight_ih_l0": rows[:, None].expand_as(rnn.weight_ih_l0).clone(),
             "rnn.weight_hh_l0": (rows[:, None] & unit[None, :]).clone(),
             "out.weight": unit[None, :].expand_as(out.weight).clone()}
    if rnn.bias:
        masks["rnn.bias_ih_l0"] = rows.clone()
        masks["rnn.bias_hh_l0"] = rows.clone()
    return masks


def cut_model_hidden(model: nn.Module, keep) -> nn.Module:
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
    rnn, out, _ = _rnn_and_out(model)
    keeps = _per_layer_keep(rnn, keep)
    new = copy.deepcopy(model)
    new.rnn = cut_rnn_hidden(rnn, keep)
    new.out = cut_linear_inputs(out, keeps[-1])
    return new
