"""Section 8.6: one-shot pruning of a language model without retraining, layer by layer, from a
few calibration sequences: magnitude, Wanda (Sun et al., 2024) and SparseGPT (Frantar &
Alistarh, 2023).

All three prune every ``nn.Linear`` of every block of a :class:`nlprune.llm.Llama`, either to an
unstructured ``sparsity`` or to an N:M pattern. They differ in the score and in what they do
after choosing the mask:

- **magnitude** keeps the largest ``|W_ij|`` of each matrix and changes nothing else;
- **Wanda** keeps, in each output row, the largest ``|W_ij| * ||X_j||``, where ``||X_j||`` is
  the norm of input feature ``j`` over the calibration tokens; nothing else changes;
- **SparseGPT** chooses the mask from ``W_ij^2 / U_jj^2`` (``H = X^T X``, the Hessian of the
  layer's squared reconstruction error, up to a factor; ``U`` the upper Cholesky factor of
  ``H^-1``, so that ``U_jj^2`` is the diagonal entry ``j`` of the inverse of ``H`` restricted to
  the columns not yet processed, ``j`` and later, not ``[H^-1]_jj`` itself) and, column after
  column, updates the weights not yet processed so that the layer's output on the calibration
  tokens changes as little as it can (the Optimal Brain Surgeon update, made cheap by that
  Cholesky factor).

Blocks are pruned in order: the calibration inputs of block ``i`` are the outputs of the
already pruned blocks ``0 .. i-1``, as in both papers.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from . import _checks
from .masks import compute_masks, nm_masks

__all__ = ["METHODS", "COMPARES", "LINEARS", "wanda_scores", "row_masks", "sparsegpt", "input_statistics",
           "prune_llm", "reconstruction_error"]

METHODS = ("magnitude", "wanda", "sparsegpt")
LINEARS = ("q", "k", "v", "o", "gate", "up", "down")


def _pattern(sparsity: float | None, n_m: tuple[int, int] | None) -> tuple[float | None, tuple[int, int] | None]:
    """Exactly one of an unstructured ``sparsity`` in ``(0, 1)`` and an ``n_m`` pattern."""
    if (sparsity is None) == (n_m is None):
        raise ValueError("give exactly one of sparsity (unstructured) and n_m (an N:M pattern)")
    if sparsity is not None:
        sparsity = _checks.fraction(sparsity, "sparsity", upper_open=True)
        if sparsity == 0.0:
            raise ValueError("sparsity must be in (0, 1), got 0.0")
        return sparsity, None
    if not isinstance(n_m, tuple) or len(n_m) != 2:
        raise TypeError(f"n_m must be a pair (n, m) such as (2, 4), got {n_m!r}")
    n, m = _checks.integer(n_m[0], "n"), _checks.integer(n_m[1], "m")
    if m < 2 or not 1 <= n < m:
        raise ValueError(f"n_m must have 1 <= n < m, got {n_m!r}")
    return None, (n, m)


def wanda_scores(weight: torch.Tensor, input_norms: torch.Tensor) -> torch.Tensor:
    """Wanda's score ``|W_ij| * ||X_j||``: a weight matters as much as the input it multiplies.

    Args:
        weight: ``[out, in]``.
        input_norms: ``[in]``, the L2 norm of each input feature over the calibration tokens.
    """
    if weight.dim() != 2 or input_norms.shape != weight.shape[1:]:
        raise ValueError(f"input_norms must have shape [in] = {tuple(weight.shape[1:])} for a weight "
                         f"of shape {tuple(weight.shape)}, got {tuple(input_norms.shape)}")
    return weight.abs() * input_norms.unsqueeze(0)


def row_masks(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Keep-mask that removes the ``sparsity`` lowest scores of every row (``round(sparsity *
    in)`` per row), so that each output unit loses the same number of inputs."""
    sparsity = _checks.fraction(sparsity, "sparsity", upper_open=True)
    if scores.dim() != 2:
        raise ValueError(f"scores must be 2-D [out, in], got shape {tuple(scores.shape)}")
    drop = round(sparsity * scores.shape[1])
    keep = torch.ones_like(scores, dtype=torch.bool)
    if drop:
        keep.scatter_(1, torch.topk(scores, drop, dim=1, largest=False).indices, False)
    return keep


def sparsegpt(weight: torch.Tensor, hessian: torch.Tensor, *, sparsity: float | None = None,
              n_m: tuple[int, int] | None = None, block: int = 128,
              damping: float = 0.01) -> tuple[torch.Tensor, torch.Tensor]:
    """SparseGPT on one matrix: the pruned, updated weight and its keep-mask.

    Args:
        weight: ``[out, in]``; not modified.
        hessian: ``[in, in]``, ``X^T X`` summed over the calibration tokens (any positive scale).
        sparsity: unstructured: in every block of ``block`` columns, the ``sparsity`` share of
            entries with the lowest ``W^2 / U_jj^2`` is pruned (``U`` below), chosen at the
            start of the block from the weights as the earlier blocks have updated them; the
            block's entries compete together, so rows may keep different numbers.
        n_m: ``(n, m)``: in every group of ``m`` inputs of a row, the ``m - n`` with the lowest
            ``W^2 / U_jj^2`` are pruned, chosen when the group's first column is reached (the
            number of inputs must be a multiple of ``m``).
        block: columns whose mask is chosen together and whose updates are applied lazily.
        damping: added to the diagonal of ``H``, as a fraction of its mean, for a stable inverse.

    Columns are processed left to right. Pruning column ``j`` leaves an error ``e = (w_j -
    q_j) / U_jj`` in each row, where ``U`` is the upper Cholesky factor of ``H^-1``; subtracting
    ``e U_j,k`` from every later column ``k`` is the least-squares correction of the layer's
    output (Optimal Brain Surgeon restricted to the columns not yet fixed).

    Raises:
        ValueError: not exactly one of ``sparsity`` and ``n_m``, a ``hessian`` of the wrong
            shape, ``block < 1``, or with ``n_m`` an input width or a ``block`` that is not a
            multiple of ``m`` (as :func:`nlprune.masks.nm_masks`).
        TypeError: ``n_m`` is not a pair of integers or ``block`` not an integer.
    """
    sparsity, n_m = _pattern(sparsity, n_m)
    block = _checks.at_least(block, "block", 1)
    if weight.dim() != 2 or hessian.shape != (weight.shape[1], weight.shape[1]):
        raise ValueError(f"hessian must have shape [in, in] = {(weight.shape[1],) * 2} for a weight of "
                         f"shape {tuple(weight.shape)}, got {tuple(hessian.shape)}")
    if n_m is not None and weight.shape[1] % n_m[1]:
        raise ValueError(f"weight has {weight.shape[1]} input columns, not a multiple of m={n_m[1]} of "
                         f"n_m={n_m}: the last group of inputs would be partial")
    if n_m is not None and block % n_m[1]:
        raise ValueError(f"block must be a multiple of m={n_m[1]}, got {block}")
    w = weight.detach().double().clone()
    h = hessian.detach().double().clone()
    dead = h.diagonal() == 0  # inputs that were always zero: their weights can go at no cost
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    h.diagonal().add_(damping * h.diagonal().mean())
    u = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    keep = torch.ones_like(w, dtype=torch.bool)
    columns = w.shape[1]
    for start in range(0, columns, block):
        end = min(start + block, columns)
        wb, ub = w[:, start:end].clone(), u[start:end, start:end]
        errors = torch.zeros_like(wb)
        kb = torch.ones_like(wb, dtype=torch.bool)
        if sparsity is not None:
            score = wb.pow(2) / ub.diagonal().pow(2)
            drop = round(sparsity * score.numel())
            kb.view(-1)[torch.topk(score.view(-1), drop, largest=False).indices] = False
        for j in range(end - start):
            if n_m is not None and j % n_m[1] == 0:
                n, m = n_m
                group = wb[:, j:j + m].pow(2) / ub.diagonal()[j:j + m].pow(2)
                kb[:, j:j + m].scatter_(1, torch.topk(group, m - n, dim=1, largest=False).indices, False)
            kept = wb[:, j] * kb[:, j]
            errors[:, j] = (wb[:, j] - kept) / ub[j, j]
            wb[:, j:] -= errors[:, j:j + 1] * ub[j:j + 1, j:]
            wb[:, j] = kept
        w[:, start:end] = wb
        w[:, end:] -= errors @ u[start:end, end:]
        keep[:, start:end] = kb
    return (w * keep).to(weight.dtype), keep


def reconstruction_error(weight: torch.Tensor, pruned: torch.Tensor, hessian: torch.Tensor) -> float:
    """``sum over tokens of ||(W - W') x||^2``, computed from ``H = X^T X`` as ``tr(D H D^T)``."""
    diff = (weight - pruned).double()
    return float(((diff @ hessian.double()) * diff).sum())


def _linears(block: nn.Module) -> dict[str, nn.Linear]:
    return {name: getattr(block, name) for name in LINEARS}


def input_statistics(block: nn.Module, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
                     ) -> dict[str, torch.Tensor]:
    """Run ``block`` on ``x`` and return, for each of its linear layers, ``H = X^T X`` over all
    tokens (``X``: the layer's inputs, one row per token; its diagonal is ``||X_j||^2``).

    Layers that read the same input tensor (q, k and v; gate and up) share one ``H``, computed
    once."""
    stats: dict[str, torch.Tensor] = {}
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []  # (input tensor, its H)

    def record(name):
        def hook(module, inputs, output):
            for tensor, hessian in seen:
                if tensor is inputs[0]:
                    stats[name] = hessian
                    return
            flat = inputs[0].reshape(-1, inputs[0].shape[-1]).double()
            stats[name] = flat.T @ flat
            seen.append((inputs[0], stats[name]))
        return hook

    handles = [layer.register_forward_hook(record(name)) for name, layer in _linears(block).items()]
    try:
        with torch.no_grad():
            block(x, cos, sin)
    finally:
        for handle in handles:
            handle.remove()
    return stats


def _mask(method: str, weight: torch.Tensor, hessian: torch.Tensor | None, sparsity: float | None,
          n_m: tuple[int, int] | None, compare: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The new weight and keep-mask of one matrix under one method."""
    if method == "sparsegpt":
        return sparsegpt(weight, hessian, sparsity=sparsity, n_m=n_m)
    if method == "magnitude":
        score = weight.abs()
    else:
        score = wanda_scores(weight, hessian.diagonal().sqrt().to(weight.dtype))
    if n_m is not None:
        keep = nm_masks({"w": score}, *n_m)["w"]
    elif compare == "matrix":
        keep = compute_masks({"w": score}, sparsity)["w"]  # the whole matrix competes
    else:
        keep = row_masks(score, sparsity)  # the weights of one output row compete
    return weight * keep, keep


COMPARES = ("matrix", "row")
"""The comparison groups of :func:`prune_llm`: a whole matrix, or each output row."""


@torch.no_grad()
def prune_llm(model: nn.Module, calibration: torch.Tensor | None, method: str, *,
              sparsity: float | None = None, n_m: tuple[int, int] | None = None,
              compare: str | None = None) -> dict[str, torch.Tensor]:
    """Prune every linear layer of every block of a :class:`~nlprune.llm.Llama` in place.

    Args:
        model: the model; its blocks are pruned in order.
        calibration: token ids ``[sequences, length]`` (not needed by ``"magnitude"``).
        method: one of :data:`METHODS`.
        sparsity: unstructured share of each matrix to remove, in ``(0, 1)``; or
        n_m: an N:M pattern such as ``(2, 4)`` (along each row's inputs).
        compare: which weights compete for an unstructured ``sparsity``: ``"matrix"`` (each
            matrix loses its lowest scores wherever they are) or ``"row"`` (each output row loses
            ``round(sparsity * in)``). ``None`` is the method's own: ``"matrix"`` for
            ``"magnitude"``, ``"row"`` for ``"wanda"``, as Sun et al. (2024) compare them;
            ``"sparsegpt"`` chooses within blocks of columns and takes only ``None``.

    Returns:
        The keep-masks, keyed like ``model.named_parameters()`` (``blocks.0.q.weight``, ...).

    Raises:
        ValueError: an unknown ``method``, not exactly one of ``sparsity`` and ``n_m``, a
            ``compare`` not in :data:`COMPARES` (or given with ``n_m`` or for ``"sparsegpt"``),
            or no 2-D ``calibration`` for ``"wanda"`` and ``"sparsegpt"`` (see also
            :func:`sparsegpt`).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    sparsity, n_m = _pattern(sparsity, n_m)
    if compare is not None:
        if compare not in COMPARES:
            raise ValueError(f"compare must be None or one of {COMPARES}, got {compare!r}")
        if n_m is not None or method == "sparsegpt":
            raise ValueError("compare applies to an unstructured sparsity with 'magnitude' or 'wanda'; "
                             f"got compare={compare!r} with method={method!r}, n_m={n_m!r}")
    else:
        compare = "matrix" if method == "magnitude" else "row"
    if method != "magnitude" and (not isinstance(calibration, torch.Tensor) or calibration.dim() != 2):
        raise ValueError(f"calibration must be a 2-D tensor of token ids [sequences, length] for {method!r}")
    masks = {}
    if method != "magnitude":
        x = model.embed(calibration.to(model.embed.weight.device))  # run where the model is
        cos, sin = model.rotary(calibration.shape[1])
    for index, block in enumerate(model.blocks):
        stats = input_statistics(block, x, cos, sin) if method != "magnitude" else {}
        for name, layer in _linears(block).items():
            weight, keep = _mask(method, layer.weight, stats.get(name), sparsity, n_m, compare)
            layer.weight.copy_(weight)
            masks[f"blocks.{index}.{name}.weight"] = keep
        if method != "magnitude":
            x = block(x, cos, sin)  # the next block sees what the pruned block produces
    return masks

