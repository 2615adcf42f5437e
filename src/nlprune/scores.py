"""Importance scores: how much each weight, or each hidden unit, matters.

A score is a tensor per parameter (weight scores) or one value per hidden unit (unit scores);
higher means more important. :func:`nlprune.masks.compute_masks` turns weight scores into
keep-masks and :func:`nlprune.cut.keep_top_units` turns unit scores into the units to keep.

* weight scores: ``|w|`` (:func:`magnitude_scores`), ``|g|`` (:func:`gradient_scores`), the
  first-order Taylor score ``|w·g|`` (:func:`taylor_scores`), uniform random scores (the
  baseline, :func:`random_scores`), and the Lp norm of rows or columns (:func:`row_norm_scores`);
* unit scores of a recurrent layer: the norm of each unit's weights across all gates
  (:func:`unit_norms`), its mean activation (:func:`activation_scores`) and the Taylor score of
  removing it (:func:`unit_taylor_scores`).

Every score is computed on the model's device, in the parameters' dtype.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import torch
from torch import nn

from . import _checks
from .models import unit_layers, valid_steps

__all__ = [
    "prunable_weights",
    "named_weights",
    "magnitude_scores",
    "accumulated_gradients",
    "gradient_scores",
    "taylor_scores",
    "random_scores",
    "row_norm_scores",
    "unit_norms",
    "activation_scores",
    "unit_taylor_scores",
]


def prunable_weights(model: nn.Module) -> list[str]:
    """Names of the weight matrices of ``model``: parameters with two or more dimensions.

    Biases (one dimension) are left out, as is usual: they are few and they matter.

    Args:
        model: any ``nn.Module``.

    Returns:
        The names, in ``model.named_parameters()`` order.

    Example:
        >>> prunable_weights(nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2)))
        ['0.weight', '1.weight']
    """
    return [name for name, p in model.named_parameters() if p.dim() >= 2]


def named_weights(model: nn.Module, names: Iterable[str] | None = None, *,
                  argument: str = "names") -> dict[str, nn.Parameter]:
    """The parameters called ``names`` (default: :func:`prunable_weights`), by name.

    Args:
        model: the model.
        names: parameter names, or ``None``.
        argument: the caller's name for ``names``, used in the error message.

    Raises:
        ValueError: ``names`` holds a name the model does not have.

    Example:
        >>> list(named_weights(nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))))
        ['0.weight', '1.weight']
    """
    params = dict(model.named_parameters())
    names = prunable_weights(model) if names is None else _checks.known_names(names, params, argument=argument)
    return {n: params[n] for n in names}


def magnitude_scores(model: nn.Module, names: list[str] | None = None) -> dict[str, torch.Tensor]:
    """``|w|`` for each named parameter.

    Args:
        model: the model whose weights are scored.
        names: parameter names to score (default: :func:`prunable_weights`).

    Returns:
        A dict name -> detached tensor of ``|w|``, a copy (pruning the model later does not
        change it).

    Raises:
        ValueError: ``names`` holds a name the model does not have.

    Example:
        >>> layer = nn.Linear(2, 1, bias=False)
        >>> with torch.no_grad():
        ...     _ = layer.weight.copy_(torch.tensor([[-0.5, 0.25]]))
        >>> magnitude_scores(layer)
        {'weight': tensor([[0.5000, 0.2500]])}
    """
    return {n: p.detach().abs().clone() for n, p in named_weights(model, names).items()}


def accumulated_gradients(model: nn.Module, batches: Iterable,
                          loss_fn: Callable[[nn.Module, object], torch.Tensor],
                          names: list[str] | None = None) -> dict[str, torch.Tensor]:
    """The gradient of the *mean* loss over ``batches`` for each named parameter.

    The per-batch gradients are averaged: with equal batch sizes this is the gradient of the
    loss over all the examples. The model is put in evaluation mode (no dropout) while the
    gradients are taken, its mode is restored afterwards (also when ``loss_fn`` raises), and
    its own ``.grad`` fields are left untouched.

    Args:
        model: the model.
        batches: an iterable of batches (e.g. a ``DataLoader`` or a list).
        loss_fn: ``loss_fn(model, batch)`` returns the mean loss of one batch.
        names: parameters to differentiate (default: :func:`prunable_weights`).

    Returns:
        A dict name -> gradient tensor (zeros where a parameter is unused).

    Raises:
        ValueError: ``batches`` is empty, or ``names`` holds an unknown name.

    Example:
        >>> layer = nn.Linear(2, 1, bias=False)
        >>> with torch.no_grad():
        ...     _ = layer.weight.fill_(1.0)
        >>> x = torch.tensor([[1.0, 2.0]])
        >>> accumulated_gradients(layer, [x], lambda m, b: m(b).sum())   # d(w.x)/dw = x
        {'weight': tensor([[1., 2.]])}
    """
    params = named_weights(model, names)
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
    Arguments, errors and evaluation mode as in :func:`accumulated_gradients`.

    Returns:
        A dict name -> ``|g|``.

    Example:
        >>> layer = nn.Linear(2, 1, bias=False)
        >>> x = torch.tensor([[1.0, -2.0]])
        >>> gradient_scores(layer, [x], lambda m, b: m(b).sum())
        {'weight': tensor([[1., 2.]])}
    """
    return {n: g.abs() for n, g in accumulated_gradients(model, batches, loss_fn, names).items()}


def taylor_scores(model: nn.Module, batches: Iterable,
                  loss_fn: Callable[[nn.Module, object], torch.Tensor],
                  names: list[str] | None = None) -> dict[str, torch.Tensor]:
    """First-order Taylor score ``|w * g|`` of each weight.

    Setting ``w`` to zero changes the loss by ``L(0) - L(w) ≈ -g * w`` to first order, so
    ``|w * g|`` estimates how much the loss changes when the weight is pruned. (Molchanov et
    al., 2017, apply this expansion to whole feature maps; the per-weight form is the same
    expansion for a group of one.) ``g`` is the gradient of the mean loss over ``batches``;
    arguments, errors and evaluation mode as in :func:`accumulated_gradients`.

    Returns:
        A dict name -> ``|w * g|``.

    Example:
        >>> layer = nn.Linear(2, 1, bias=False)
        >>> with torch.no_grad():
        ...     _ = layer.weight.copy_(torch.tensor([[3.0, 0.5]]))
        >>> x = torch.tensor([[1.0, -2.0]])
        >>> taylor_scores(layer, [x], lambda m, b: m(b).sum())   # |w * x|
        {'weight': tensor([[3., 1.]])}
    """
    params = named_weights(model, names)
    grads = accumulated_gradients(model, batches, loss_fn, list(params))
    return {n: (params[n].detach() * grads[n]).abs() for n in params}


def random_scores(model: nn.Module, names: list[str] | None = None, *, seed: int = 0) -> dict[str, torch.Tensor]:
    """Uniform random scores: the baseline that every criterion must beat.

    Args:
        model: the model (only the shapes of its weights are used).
        names: parameters to score (default: :func:`prunable_weights`).
        seed: the seed of a private generator; torch's global generator is not touched.

    Returns:
        A dict name -> tensor of uniform [0, 1) scores on each weight's device, the same for the
        same seed.

    Raises:
        ValueError: ``names`` holds an unknown name.

    Example:
        >>> layer = nn.Linear(4, 3)
        >>> a, b = random_scores(layer, seed=1), random_scores(layer, seed=1)
        >>> torch.equal(a["weight"], b["weight"]), tuple(a["weight"].shape)
        (True, (3, 4))
    """
    gen = torch.Generator().manual_seed(_checks.integer(seed, "seed"))
    # Drawn on the CPU (the same numbers on any machine), then moved to each weight's device.
    return {n: torch.rand(p.shape, generator=gen).to(p.device)
            for n, p in named_weights(model, names).items()}


def row_norm_scores(weight: torch.Tensor, *, p: int | float = 2, dim: int = 0) -> torch.Tensor:
    """The Lp norm of every slice of ``weight`` along ``dim``, as
    ``torch.nn.utils.prune.ln_structured`` computes it.

    Args:
        weight: a tensor with at least two dimensions.
        p: the order of the norm (``1``, ``2``, ``float("inf")``, …), positive.
        dim: ``0`` gives one norm per row (an output unit of ``nn.Linear``), ``1`` one per column.

    Returns:
        A 1-D tensor with ``weight.shape[dim]`` norms.

    Raises:
        TypeError: ``weight`` is not a tensor of two or more dimensions, or ``dim`` is not an integer.
        ValueError: ``dim`` is out of range or ``p`` is not positive.

    Example:
        >>> row_norm_scores(torch.tensor([[3.0, -4.0], [0.0, 1.0]]), p=2, dim=0)
        tensor([5., 1.])
    """
    if not isinstance(weight, torch.Tensor) or weight.dim() < 2:
        raise TypeError("weight must be a torch.Tensor with at least two dimensions")
    dim = _checks.dimension(dim, weight.dim())
    return torch.linalg.vector_norm(weight.detach(), ord=_checks.positive(p, "p"),
                                    dim=[d for d in range(weight.dim()) if d != dim])


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
    rnn, out, gates = unit_layers(model)
    powers = {"ih": rnn.weight_ih_l0.abs() ** p, "hh": rnn.weight_hh_l0.abs() ** p, "out": out.weight.abs() ** p}
    return (_per_unit_sum(rnn.hidden_size, gates, powers) + 1e-12) ** (1.0 / p)


def _default_forward(model: nn.Module, batch) -> object:
    """Classifier batches are ``(ids, lengths, labels)``, language-model batches ``(x, y)``."""
    return model(*(t.to(model.out.weight.device) for t in batch[:-1]))


@torch.no_grad()
def activation_scores(model: nn.Module, batches: Iterable,
                      forward: Callable[[nn.Module, object], object] | None = None) -> torch.Tensor:
    """Mean ``|h_t|`` of each hidden unit over every (non-padding) time step of ``batches``.

    The RNN's output is captured with a forward hook. With the default ``forward``, classifier
    batches ``(ids, lengths, labels)`` have padding after each sequence's ``length``, and those
    steps are left out, so padding does not dilute the mean (a packed sequence holds real tokens
    only); language-model batches ``(x, y)`` have none. With a ``forward`` of your own, every
    time step the RNN returns is counted (your batches may not be laid out as the course's).
    The model is run in evaluation mode; its mode is restored afterwards.

    Args:
        model: a model with a single-layer ``rnn`` and an ``out`` layer.
        batches: an iterable of batches.
        forward: ``forward(model, batch)`` runs one batch (default: ``model(*batch[:-1])``,
            which fits classifier batches ``(ids, lengths, labels)`` and LM batches ``(x, y)``).

    Returns:
        A 1-D tensor with one mean activation per unit, on the RNN's device.

    Raises:
        ValueError: ``batches`` is empty or the RNN has several layers.
        TypeError: the model has no ``rnn``/``out``.
    """
    rnn, _, _ = unit_layers(model)
    weight = rnn.weight_ih_l0
    total = torch.zeros(rnn.hidden_size, device=weight.device, dtype=weight.dtype)
    count = 0
    valid = None  # the time steps of the current batch that hold tokens, when it is a classifier batch

    def hook(module, inputs, output):
        nonlocal total, count
        y = output[0]
        if isinstance(y, nn.utils.rnn.PackedSequence):
            y = y.data
        elif valid is not None:
            y = y[valid.to(y.device)]  # [B, T, hidden] -> [tokens, hidden]
        y = y.reshape(-1, rnn.hidden_size)
        total += y.abs().sum(dim=0).to(total.device)
        count += y.shape[0]

    was_training = model.training
    model.eval()
    handle = rnn.register_forward_hook(hook)
    try:
        for batch in batches:
            if forward is None:
                valid = valid_steps(batch[1], batch[0].shape[1]) if len(batch) == 3 else None
                _default_forward(model, batch)
            else:
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
    rnn, _, gates = unit_layers(model)
    names = {"ih": "rnn.weight_ih_l0", "hh": "rnn.weight_hh_l0", "out": "out.weight"}
    grads = accumulated_gradients(model, batches, loss_fn, list(names.values()))
    params = dict(model.named_parameters())
    products = {k: params[n].detach() * grads[n] for k, n in names.items()}
    return _per_unit_sum(rnn.hidden_size, gates, products).abs()
