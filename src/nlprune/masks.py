"""Keep-masks: choosing them, applying them, keeping them during training, and reporting them.

A *mask* is a boolean tensor with the shape of a parameter: ``True`` keeps the weight,
``False`` prunes it (sets it to zero). Masks are plain data in a ``dict`` keyed by parameter
name (``model.named_parameters()`` names), so they can be saved, compared and reported. This
module owns them: every other module that chooses, applies or counts masks calls it.

Keeping pruned weights at zero while training is :func:`masked_step`: it zeroes the gradients
of pruned weights after ``backward`` and re-applies the masks after the optimizer step (the
optimizer may move a weight whose gradient is zero, e.g. through momentum Adam built up before a
gradual schedule pruned it, so re-applying the mask after the step is what makes zeros exact). The training loops
(:func:`nlprune.train.fit`, :func:`nlprune.train.fit_language_model`,
:func:`nlprune.seq2seq.fit_seq2seq`) call it with fixed ``masks=`` or with the masks of a
*pruner*: any object with a ``masks`` dict and a ``__call__(step)`` that updates it
(:class:`Pruner`, e.g. :class:`nlprune.schedules.GradualPruner`), handed to the loop once.

One rounding rule holds everywhere in the package: "sparsity ``s`` of ``n`` entries" prunes
``round(s * n)`` of them (:func:`pruned_count`; Python's ``round``, as ``torch.nn.utils.prune``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol, runtime_checkable

import pandas as pd
import torch
from torch import nn

from . import _checks

__all__ = [
    "SCOPES",
    "Pruner",
    "loop_masks",
    "pruned_count",
    "compute_masks",
    "nm_masks",
    "apply_masks",
    "mask_gradients",
    "masked_step",
    "check_masks",
    "make_permanent",
    "overall_sparsity",
    "sparsity_report",
    "with_total_row",
]

SCOPES = ("layer", "global")


@runtime_checkable
class Pruner(Protocol):
    """What a training loop needs of a pruner: keep-masks it owns, and an update per step.

    ``masks`` maps parameter names to boolean keep-masks; the loop keeps the pruned weights at
    zero with them after every optimizer step. ``pruner(step)`` is called before each step and
    may change the masks (in place or by replacing entries) and zero newly pruned weights.
    """

    masks: Mapping[str, torch.Tensor]

    def __call__(self, step: int) -> None: ...


def loop_masks(masks: Mapping[str, torch.Tensor] | None, pruner: Pruner | None
               ) -> Callable[[], Mapping[str, torch.Tensor] | None]:
    """What a training loop keeps at each step: fixed ``masks``, the current ``pruner.masks``, or
    nothing. Returns a function that gives them (a pruner may replace its masks while training).

    Raises:
        TypeError: ``pruner`` has no ``masks`` mapping or is not callable with the step.
        ValueError: both ``masks`` and ``pruner`` are given.

    Example:
        >>> keep = {"w": torch.tensor([True, False])}
        >>> loop_masks(keep, None)() is keep, loop_masks(None, None)()
        (True, None)
    """
    if pruner is not None and not isinstance(pruner, Pruner):
        raise TypeError(f"pruner must have a `masks` mapping and be callable with the step "
                        f"(nlprune.masks.Pruner), got {type(pruner).__name__}")
    if pruner is not None and masks is not None:
        raise ValueError("give masks (fixed keep-masks) or pruner (masks that change), not both: "
                         "the loop keeps pruner.masks itself")
    return (lambda: pruner.masks) if pruner is not None else (lambda: masks)


def pruned_count(sparsity: float, n: int) -> int:
    """How many of ``n`` entries a sparsity of ``sparsity`` prunes: ``round(sparsity * n)``.

    Python's ``round`` rounds halves to even, as ``torch.nn.utils.prune`` does; every function
    of the package that turns a sparsity into a count uses this one.

    Raises:
        TypeError, ValueError: ``sparsity`` is not a number in [0, 1] or ``n`` not an integer >= 0.

    Example:
        >>> pruned_count(0.5, 5), pruned_count(0.3, 5), pruned_count(0.5, 9)
        (2, 2, 4)
    """
    sparsity = _checks.fraction(sparsity, "sparsity")
    return round(sparsity * _checks.at_least(n, "n", 0))


def _check_scores(scores: Mapping[str, torch.Tensor]) -> None:
    if not isinstance(scores, Mapping):
        raise TypeError(f"scores must be a mapping of names to tensors, got {type(scores).__name__}")
    if len(scores) == 0:
        raise ValueError("scores is empty: give at least one tensor of scores")
    for name, s in scores.items():
        if not isinstance(s, torch.Tensor):
            raise TypeError(f"scores[{name!r}] must be a torch.Tensor, got {type(s).__name__}")
        if s.dtype == torch.bool or s.is_complex():
            raise TypeError(f"scores[{name!r}] must hold real numbers, got dtype {s.dtype}")
        if s.is_floating_point() and torch.isnan(s).any():
            raise ValueError(f"scores[{name!r}] contains NaN; scores must be real numbers")


def _pooled(scores: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """All scores in one flat tensor, without losing precision: integers stay integers, and
    floating-point scores are pooled in float64, so the global ranking equals each tensor's own."""
    flats = [s.detach().reshape(-1) for s in scores.values()]
    if any(f.is_floating_point() for f in flats):
        flats = [f.double() for f in flats]
    return torch.cat(flats)


def compute_masks(scores: Mapping[str, torch.Tensor], sparsity: float, *, scope: str = "layer"
                  ) -> dict[str, torch.Tensor]:
    """Boolean keep-masks that prune the lowest-scoring entries.

    ``scope="layer"`` prunes exactly ``round(sparsity * n)`` entries of each tensor of ``n``
    entries; ``scope="global"`` pools all tensors and prunes ``round(sparsity * N)`` of their
    ``N`` entries together, so some tensors lose more than others. (``round`` is Python's,
    which rounds halves to even, as ``torch.nn.utils.prune`` does.) Ties are broken as
    ``torch.topk`` breaks them, which makes the masks equal to those of
    ``torch.nn.utils.prune.l1_unstructured`` / ``global_unstructured`` on ``|w|``. The pooled
    ranking is done in full precision (float64, or the integers themselves), so both scopes
    order close scores alike.

    Args:
        scores: maps names to score tensors (any shapes, real numbers).
        sparsity: the share to prune, a real number in [0, 1] (NumPy scalars are accepted).
        scope: ``"layer"`` or ``"global"``.

    Returns:
        A dict name -> boolean tensor of the score's shape, ``True`` = keep.

    Raises:
        TypeError: ``scores`` is not a mapping of real-valued tensors, or ``sparsity`` is not
            a real number.
        ValueError: a sparsity outside [0, 1], an unknown scope, empty scores or NaN scores.

    Example:
        >>> scores = {"a": torch.tensor([0.1, 0.9, 0.5, 0.3]), "b": torch.tensor([0.8, 0.7])}
        >>> compute_masks(scores, 0.5)
        {'a': tensor([False,  True,  True, False]), 'b': tensor([ True, False])}
        >>> compute_masks(scores, 0.5, scope="global")
        {'a': tensor([False,  True, False, False]), 'b': tensor([True, True])}
    """
    sparsity = _checks.fraction(sparsity, "sparsity")
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
    _check_scores(scores)

    def lowest(flat: torch.Tensor) -> torch.Tensor:
        keep = torch.ones(flat.numel(), dtype=torch.bool, device=flat.device)
        k = pruned_count(sparsity, flat.numel())
        if k > 0:
            keep[torch.topk(flat, k, largest=False).indices] = False
        return keep

    if scope == "layer":
        return {n: lowest(s.detach().reshape(-1)).view(s.shape) for n, s in scores.items()}
    keep = lowest(_pooled(scores))
    masks, start = {}, 0
    for n, s in scores.items():
        masks[n] = keep[start : start + s.numel()].view(s.shape)
        start += s.numel()
    return masks


def nm_masks(scores: Mapping[str, torch.Tensor], n: int, m: int) -> dict[str, torch.Tensor]:
    """N:M semi-structured keep-masks: along the last dimension, in every group of ``m``
    consecutive entries, exactly the ``n`` highest scores are kept (2:4 keeps 2 of every 4, a
    sparsity of 50% that sparse tensor cores on recent GPUs can exploit).

    Args:
        scores: maps names to score tensors (as for :func:`compute_masks`); the last dimension
            of each must be a multiple of ``m``.
        n: entries kept per group, an integer in ``[1, m)``.
        m: the group size, an integer >= 2.

    Returns:
        A dict name -> boolean tensor of the score's shape, ``True`` = keep. Ties are broken
        as ``torch.topk`` breaks them.

    Raises:
        TypeError: bad ``scores`` or non-integer ``n`` / ``m``.
        ValueError: ``n`` not in ``[1, m)``, a last dimension that is not a multiple of ``m``,
            empty or NaN scores.

    Example:
        >>> nm_masks({"w": torch.tensor([[0.1, 0.9, 0.5, 0.3, 4.0, 3.0, 2.0, 1.0]])}, 2, 4)
        {'w': tensor([[False,  True,  True, False,  True,  True, False, False]])}
    """
    n, m = _checks.integer(n, "n"), _checks.integer(m, "m")
    if m < 2 or not 1 <= n < m:
        raise ValueError(f"n must be in [1, m) with m >= 2, got n={n!r}, m={m!r}")
    _check_scores(scores)
    masks = {}
    for name, s in scores.items():
        if s.dim() == 0 or s.shape[-1] % m != 0:
            raise ValueError(f"scores[{name!r}] has shape {tuple(s.shape)}: its last dimension must be "
                             f"a multiple of m={m}")
        groups = s.detach().reshape(-1, m)
        keep = torch.zeros(groups.shape, dtype=torch.bool, device=s.device)
        keep.scatter_(1, torch.topk(groups, n, dim=1).indices, True)
        masks[name] = keep.view(s.shape)
    return masks


def _masked_params(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> list[tuple[nn.Parameter, torch.Tensor]]:
    """Pairs (parameter, mask on its device); every mask must be a boolean tensor of its shape."""
    if not isinstance(masks, Mapping):
        raise TypeError(f"masks must be a mapping of parameter names to boolean tensors, "
                        f"got {type(masks).__name__}")
    params = dict(model.named_parameters())
    pairs = []
    for name, mask in masks.items():
        if not isinstance(mask, torch.Tensor):
            raise TypeError(f"mask {name!r} must be a torch.Tensor of dtype torch.bool, got "
                            f"{type(mask).__name__} (convert a NumPy mask with torch.from_numpy)")
        if mask.dtype != torch.bool:
            raise TypeError(f"mask {name!r} must have dtype torch.bool (True = keep), got {mask.dtype}")
        _checks.mask_matches(name, mask.shape, params[name].shape if name in params else (), params)
        pairs.append((params[name], mask.to(params[name].device)))
    return pairs


@torch.no_grad()
def apply_masks(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> nn.Module:
    """Zero, in place, every weight whose mask entry is ``False``.

    Args:
        model: the model.
        masks: maps parameter names to boolean keep-masks of the parameters' shapes.

    Returns:
        ``model`` itself.

    Raises:
        TypeError: a mask is not a boolean ``torch.Tensor`` (a float mask would scale weights).
        ValueError: a mask names no parameter or its shape differs from the parameter's shape.

    Example:
        >>> layer = nn.Linear(3, 1, bias=False)
        >>> with torch.no_grad():
        ...     _ = layer.weight.copy_(torch.tensor([[1.0, 2.0, 3.0]]))
        >>> apply_masks(layer, {"weight": torch.tensor([[True, False, True]])}).weight
        Parameter containing:
        tensor([[1., 0., 3.]], requires_grad=True)
    """
    for param, mask in _masked_params(model, masks):
        param.mul_(mask)
    return model


@torch.no_grad()
def mask_gradients(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> None:
    """Zero, in place, the gradients of pruned weights (call after ``backward``).

    A pruned weight still has a gradient (the loss depends on it even at zero), so without
    this an optimizer step would move it away from zero. Arguments and errors as in
    :func:`apply_masks`; parameters without a ``.grad`` are skipped.
    """
    for param, mask in _masked_params(model, masks):
        if param.grad is not None:
            param.grad.mul_(mask)


def masked_step(model: nn.Module, optimizer: torch.optim.Optimizer, loss: torch.Tensor,
                masks: Mapping[str, torch.Tensor] | None, clip: float | None = None) -> None:
    """One optimizer step that keeps pruned weights at exactly zero.

    ``zero_grad``, ``backward``, the gradients of pruned weights zeroed (:func:`mask_gradients`),
    the gradient norm clipped to ``clip`` (if given), the optimizer's step, and the masks
    re-applied (:func:`apply_masks`), because momentum the optimizer built up before a weight
    was pruned (a gradual schedule changes the masks while training) would move it even with a
    zero gradient. With ``masks=None`` it is a plain step.

    Args:
        model: the model whose parameters ``optimizer`` updates.
        optimizer: any ``torch.optim`` optimizer.
        loss: the scalar loss of the batch.
        masks: boolean keep-masks (as for :func:`apply_masks`), or ``None``.
        clip: the maximum gradient norm, or ``None`` for no clipping.

    Example:
        >>> layer = nn.Linear(2, 1, bias=False)
        >>> masks = {"weight": torch.tensor([[True, False]])}
        >>> optimizer = torch.optim.Adam(layer.parameters(), lr=0.1)
        >>> for _ in range(3):
        ...     masked_step(layer, optimizer, layer(torch.ones(1, 2)).sum(), masks)
        >>> layer.weight[0, 1].item() == 0.0   # the pruned weight has not moved
        True
    """
    optimizer.zero_grad()
    loss.backward()
    if masks is not None:
        mask_gradients(model, masks)
    if clip is not None:
        nn.utils.clip_grad_norm_(model.parameters(), clip)
    optimizer.step()
    if masks is not None:
        apply_masks(model, masks)


@torch.no_grad()
def check_masks(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> None:
    """Fail loudly if a pruned weight is no longer zero (it regrew during training).

    Call it after fine-tuning: a training loop that forgets to re-apply the masks (or an
    optimizer with momentum or weight decay) moves pruned weights away from zero, and the model
    silently stops being as sparse as reported.

    Args:
        model: the model.
        masks: the keep-masks the model was pruned with (as for :func:`apply_masks`).

    Raises:
        AssertionError: some weight with mask ``False`` is not exactly zero; the message names
            each such tensor and how many of its pruned weights regrew.
        TypeError, ValueError: bad masks, as in :func:`apply_masks`.

    Example:
        >>> layer = nn.Linear(2, 1, bias=False)
        >>> masks = {"weight": torch.tensor([[True, False]])}
        >>> check_masks(apply_masks(layer, masks), masks)   # passes silently
        >>> with torch.no_grad():
        ...     _ = layer.weight.add_(1.0)
        >>> try:
        ...     check_masks(layer, masks)
        ... except AssertionError as error:
        ...     print(error)
        pruned weights regrew: weight: 1 of 1 pruned entries are nonzero
    """
    regrown = []
    for (name, mask), (param, device_mask) in zip(masks.items(), _masked_params(model, masks)):
        nonzero = int(torch.count_nonzero(param[~device_mask]))
        if nonzero:
            regrown.append(f"{name}: {nonzero} of {int((~mask).sum())} pruned entries are nonzero")
    if regrown:
        raise AssertionError("pruned weights regrew: " + "; ".join(regrown))


def make_permanent(model: nn.Module) -> list[str]:
    """Fold every ``torch.nn.utils.prune`` re-parametrisation of ``model`` into plain weights.

    After ``torch.nn.utils.prune`` a module holds ``weight_orig`` and a buffer ``weight_mask``
    and recomputes ``weight`` before every forward pass. This calls ``prune.remove`` on each of
    them, so ``weight`` becomes an ordinary parameter that keeps its zeros, and returns the
    names that were folded (``"rnn.weight_hh_l0"``, …).

    Example:
        >>> from torch.nn.utils import prune as torch_prune
        >>> model = nn.Sequential(nn.Linear(4, 2))
        >>> _ = torch_prune.l1_unstructured(model[0], "weight", amount=0.5)
        >>> sorted(n for n, _ in model.named_parameters())
        ['0.bias', '0.weight_orig']
        >>> make_permanent(model)
        ['0.weight']
        >>> sorted(n for n, _ in model.named_parameters())
        ['0.bias', '0.weight']
    """
    from torch.nn.utils import prune as torch_prune

    folded = []
    for mod_name, module in model.named_modules():
        for hook in list(module._forward_pre_hooks.values()):
            if isinstance(hook, torch_prune.BasePruningMethod):
                torch_prune.remove(module, hook._tensor_name)
                folded.append(f"{mod_name}.{hook._tensor_name}" if mod_name else hook._tensor_name)
    return folded


def _bool_masks(masks: Mapping[str, torch.Tensor]) -> Mapping[str, torch.Tensor]:
    """``masks`` itself after checking it is a non-empty mapping of boolean tensors (a float mask
    would be miscounted: ``0.5`` is neither kept nor pruned)."""
    if not isinstance(masks, Mapping):
        raise TypeError(f"masks must be a mapping of names to boolean tensors, got {type(masks).__name__}")
    if len(masks) == 0:
        raise ValueError("masks is empty")
    for name, mask in masks.items():
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
            kind = mask.dtype if isinstance(mask, torch.Tensor) else type(mask).__name__
            raise TypeError(f"mask {name!r} must be a torch.Tensor of dtype torch.bool (True = keep), got {kind}")
    return masks


def overall_sparsity(masks: Mapping[str, torch.Tensor]) -> float:
    """The share of pruned entries over all masks together (the ``total`` row of
    :func:`sparsity_report`).

    Raises:
        TypeError: a mask is not a boolean tensor.
        ValueError: ``masks`` is empty.

    Example:
        >>> overall_sparsity({"a": torch.tensor([True, False]), "b": torch.zeros(2, dtype=torch.bool)})
        0.75
    """
    masks = _bool_masks(masks)
    pruned = sum(int((~m).sum()) for m in masks.values())
    return pruned / sum(m.numel() for m in masks.values())


def with_total_row(rows: list[dict], counts: tuple[str, ...], ratio: tuple[str, str, str]) -> pd.DataFrame:
    """A table of ``rows`` with a ``total`` row that sums the ``counts`` columns, and a column
    ``ratio[0] = ratio[1] / ratio[2]`` (shared by :func:`sparsity_report` and
    :func:`nlprune.measure.sparsity_table`).

    Example:
        >>> with_total_row([{"tensor": "a", "n": 4, "zeros": 1}], ("n", "zeros"), ("sparsity", "zeros", "n"))
          tensor  n  zeros  sparsity
        0      a  4      1      0.25
        1  total  4      1      0.25
    """
    total = {key: "" for key in rows[0]} | {"tensor": "total"}
    total.update({c: sum(r[c] for r in rows) for c in counts})
    table = pd.DataFrame([*rows, total])
    table[ratio[0]] = table[ratio[1]] / table[ratio[2]]
    return table


def sparsity_report(masks: Mapping[str, torch.Tensor]) -> pd.DataFrame:
    """A table of the masks: one row per mask (entries, pruned, sparsity) and a ``total`` row.

    Args:
        masks: maps names to boolean keep-masks.

    Returns:
        A ``pandas.DataFrame`` with columns tensor, shape, entries, pruned, sparsity.

    Raises:
        TypeError: a mask is not a boolean tensor.
        ValueError: ``masks`` is empty.

    Example:
        >>> sparsity_report({"w": torch.tensor([[True, False], [False, False]])})
          tensor   shape  entries  pruned  sparsity
        0      w  (2, 2)        4       3      0.75
        1  total                4       3      0.75
    """
    masks = _bool_masks(masks)
    rows = [{"tensor": n, "shape": tuple(m.shape), "entries": m.numel(), "pruned": int((~m).sum())}
            for n, m in masks.items()]
    return with_total_row(rows, ("entries", "pruned"), ("sparsity", "pruned", "entries"))
