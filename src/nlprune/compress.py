"""Storing a pruned model compactly (Deep Compression in miniature, Han et al., 2016).

A pruned ``state_dict`` saved with ``torch.save`` is as large as the dense one: every zero
takes four bytes. :func:`save_compressed` stores each floating-point tensor as

* a **bitmask** of its nonzero positions (one bit per entry, ``numpy.packbits``);
* its **nonzeros quantized** uniformly and symmetrically to ``bits`` bits: with one scale per
  row (first dimension) for matrices and one per tensor otherwise,
  ``q = round(w / scale)``, ``scale = max |w| / (2^(bits-1) - 1)``, ``q`` stored as int8;

and compresses the whole with LZMA, a standard entropy coder. Other tensors (integer buffers)
are kept as they are. :func:`load_compressed` reads it back: zeros come back exactly zero and
every nonzero within half a quantization step of the original (a tiny nonzero may round to 0).
"""

from __future__ import annotations

import io
import lzma
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from . import _checks

__all__ = ["save_compressed", "load_compressed"]

_FORMAT = "nlprune-compressed-1"


def _encode(tensor: torch.Tensor, bits: int) -> dict:
    w = tensor.detach().cpu().to(torch.float32)
    nonzero = w != 0
    rows = w.reshape(w.shape[0], -1) if w.dim() >= 2 else w.reshape(1, -1)
    levels = 2 ** (bits - 1) - 1
    scale = rows.abs().amax(dim=1) / levels
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.round(rows / scale[:, None]).clamp(-levels, levels).to(torch.int8).reshape(w.shape)
    return {"mask": torch.from_numpy(np.packbits(nonzero.numpy().reshape(-1))),
            "values": q[nonzero].clone(), "scale": scale, "shape": list(w.shape),
            "dtype": str(tensor.dtype).removeprefix("torch.")}


def _decode(item: dict) -> torch.Tensor:
    shape = item["shape"]
    count = int(np.prod(shape)) if shape else 1
    nonzero = torch.from_numpy(np.unpackbits(item["mask"].numpy(), count=count).astype(bool)).reshape(shape)
    scale = item["scale"]
    rows = len(scale)
    per_entry = scale.repeat_interleave(count // rows).reshape(shape)
    out = torch.zeros(shape, dtype=torch.float32)
    out[nonzero] = item["values"].to(torch.float32) * per_entry[nonzero]
    return out.to(getattr(torch, item["dtype"]))


def save_compressed(state_dict: Mapping[str, torch.Tensor], path: str | Path, *, bits: int = 8) -> int:
    """Write ``state_dict`` in the compact format of this module and return the bytes written.

    Args:
        state_dict: names to tensors (e.g. ``model.state_dict()`` of a pruned model).
        path: the file to write.
        bits: bits per quantized nonzero, an integer in [2, 8].

    Raises:
        TypeError: ``state_dict`` is not a mapping of tensors, or ``bits`` is not an integer.
        ValueError: ``bits`` outside [2, 8].

    Example:
        >>> import tempfile, os
        >>> w = torch.tensor([[0.0, 1.0, -0.5, 0.0], [0.25, 0.0, 0.0, 2.0]])
        >>> path = os.path.join(tempfile.mkdtemp(), "w.nlpz")
        >>> save_compressed({"w": w}, path) > 0
        True
        >>> back = load_compressed(path)["w"]
        >>> bool((back[w == 0] == 0).all()), float((back - w).abs().max()) <= 2.0 / 127 / 2
        (True, True)
    """
    bits = _checks.integer(bits, "bits")
    if not 2 <= bits <= 8:
        raise ValueError(f"bits must be in [2, 8], got {bits!r}")
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"state_dict must be a mapping of names to tensors, got {type(state_dict).__name__}")
    tensors, raw = {}, {}
    for name, t in state_dict.items():
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"state_dict[{name!r}] must be a torch.Tensor, got {type(t).__name__}")
        if t.is_floating_point() and t.numel() > 0:
            tensors[name] = _encode(t, bits)
        else:
            raw[name] = t.detach().cpu().clone()
    buffer = io.BytesIO()
    torch.save({"format": _FORMAT, "bits": bits, "order": list(state_dict), "tensors": tensors, "raw": raw},
               buffer)
    data = lzma.compress(buffer.getvalue(), preset=9)
    Path(path).write_bytes(data)
    return len(data)


def load_compressed(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a file written by :func:`save_compressed`: same keys (in the same order), shapes and
    dtypes; zeros exactly zero, nonzeros within half a quantization step.

    Loading uses ``torch.load(..., weights_only=True)`` (no pickled code).

    Raises:
        ValueError: the file is not in this format.
    """
    try:
        payload = torch.load(io.BytesIO(lzma.decompress(Path(path).read_bytes())), weights_only=True)
    except lzma.LZMAError as error:
        raise ValueError(f"{path} is not a file written by save_compressed") from error
    if not isinstance(payload, dict) or payload.get("format") != _FORMAT:
        raise ValueError(f"{path} is not a file written by save_compressed")
    out = {}
    for name in payload["order"]:
        out[name] = _decode(payload["tensors"][name]) if name in payload["tensors"] else payload["raw"][name]
    return out
