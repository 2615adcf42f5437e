"""Storing a pruned model compactly (Deep Compression in miniature, Han et al., 2016).

A pruned ``state_dict`` saved with ``torch.save`` is as large as the dense one: every zero
takes four bytes. :func:`save_compressed` stores each floating-point tensor of ``N`` entries,
``K`` of them nonzero, as three byte strings:

* a **bitmask** of its nonzero positions, one bit per entry (``numpy.packbits``): ``⌈N/8⌉`` B;
* one fp32 **scale** (quantization step) per row (first dimension) for matrices, one per tensor
  otherwise: ``4·rows`` B (or one per tensor for every tensor, ``scale="tensor"``: 4 B);
* its **nonzeros quantized** uniformly and symmetrically to ``b`` bits,
  ``q = round(w / scale)`` with ``scale = max |w| / (2^(b-1) - 1)``, and **bit-packed** at
  ``b`` bits each: ``⌈K·b/8⌉`` B.

Other tensors (integer and boolean buffers, empty tensors) are kept byte for byte. A short JSON
header names the tensors, their shapes and dtypes. :func:`parts` gives these byte counts without
writing anything; the payload is exactly ``parts`` plus the header, and the file is that payload
compressed with LZMA, a standard entropy coder. So the three stages of Deep Compression can be
read apart: pruning turns ``4N`` bytes into a bitmask and ``4K`` bytes, quantization turns the
``4K`` into ``K·b/8``, and the entropy coder takes what it can of the rest.

:func:`load_compressed` reads a file back: zeros come back exactly zero and every nonzero within
half a quantization step of the original (a tiny nonzero may round to 0).
"""

from __future__ import annotations

import json
import lzma
import struct
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from . import _checks

__all__ = ["save_compressed", "load_compressed", "parts"]

_FORMAT = "nlprune-compressed-2"
_HEADER_LENGTH = struct.Struct("<I")  # the payload starts with the header's length in bytes


def _is_quantized(tensor: torch.Tensor) -> bool:
    return tensor.is_floating_point() and tensor.numel() > 0


def _rows(tensor: torch.Tensor, scale: str) -> torch.Tensor:
    w = tensor.detach().cpu().to(torch.float32)
    return w.reshape(w.shape[0], -1) if scale == "row" and w.dim() >= 2 else w.reshape(1, -1)


def _pack_bits(values: np.ndarray, bits: int) -> bytes:
    """Unsigned integers below ``2**bits``, ``bits`` bits each, most significant bit first."""
    as_bits = np.unpackbits(values.astype(np.uint8)[:, None], axis=1)[:, 8 - bits:]
    return np.packbits(as_bits.reshape(-1)).tobytes()


def _unpack_bits(data: bytes, bits: int, count: int) -> np.ndarray:
    as_bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8), count=count * bits)
    full = np.zeros((count, 8), dtype=np.uint8)
    full[:, 8 - bits:] = as_bits.reshape(count, bits)
    return np.packbits(full, axis=1).reshape(-1)


def _encode(tensor: torch.Tensor, bits: int, scale: str) -> tuple[dict, list[bytes]]:
    rows = _rows(tensor, scale)
    nonzero = rows != 0
    levels = 2 ** (bits - 1) - 1
    steps = rows.abs().amax(dim=1) / levels
    steps = torch.where(steps > 0, steps, torch.ones_like(steps))
    q = torch.round(rows / steps[:, None]).clamp(-levels, levels).to(torch.int16)
    values = (q[nonzero] + levels).numpy()  # 0 .. 2 * levels, fits in `bits` bits
    mask = np.packbits(nonzero.numpy().reshape(-1)).tobytes()
    entry = {"shape": list(tensor.shape), "dtype": str(tensor.dtype).removeprefix("torch."),
             "kind": "quantized", "nonzeros": len(values), "rows": len(steps)}
    return entry, [mask, steps.numpy().astype("<f4").tobytes(), _pack_bits(values, bits)]


def _decode(entry: dict, bits: int, read) -> torch.Tensor:
    shape, count = entry["shape"], int(np.prod(entry["shape"]))
    rows, nonzeros = entry["rows"], entry["nonzeros"]
    nonzero = np.unpackbits(np.frombuffer(read((count + 7) // 8), dtype=np.uint8), count=count)
    scale = np.frombuffer(read(4 * rows), dtype="<f4")
    q = _unpack_bits(read((nonzeros * bits + 7) // 8), bits, nonzeros).astype(np.float32)
    levels = 2 ** (bits - 1) - 1
    out = np.zeros((rows, count // rows), dtype=np.float32)
    keep = nonzero.reshape(out.shape).astype(bool)
    out[keep] = (q - levels) * np.broadcast_to(scale[:, None], out.shape)[keep]
    return torch.from_numpy(out).reshape(shape).to(getattr(torch, entry["dtype"]))


def _raw_bytes(tensor: torch.Tensor) -> bytes:
    flat = tensor.detach().cpu().contiguous().reshape(-1)
    return flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b""


def _check(state_dict: object, bits: object, scale: object) -> int:
    bits = _checks.integer(bits, "bits")
    if not 2 <= bits <= 8:
        raise ValueError(f"bits must be in [2, 8], got {bits!r}")
    if scale not in ("row", "tensor"):
        raise ValueError(f"scale must be 'row' or 'tensor', got {scale!r}")
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"state_dict must be a mapping of names to tensors, got {type(state_dict).__name__}")
    for name, t in state_dict.items():
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"state_dict[{name!r}] must be a torch.Tensor, got {type(t).__name__}")
    return bits


def _payload(state_dict: Mapping[str, torch.Tensor], bits: int,
             scale: str) -> tuple[bytes, dict[str, int]]:
    entries, chunks = [], []
    sizes = {"bitmask": 0, "scales": 0, "values": 0, "other tensors": 0}
    for name, t in state_dict.items():
        if _is_quantized(t):
            entry, (mask, scales, values) = _encode(t, bits, scale)
            sizes["bitmask"] += len(mask)
            sizes["scales"] += len(scales)
            sizes["values"] += len(values)
            chunks += [mask, scales, values]
        else:
            raw = _raw_bytes(t)
            entry = {"shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch."),
                     "kind": "raw", "bytes": len(raw)}
            sizes["other tensors"] += len(raw)
            chunks.append(raw)
        entries.append({"name": name, **entry})
    header = json.dumps({"format": _FORMAT, "bits": bits, "tensors": entries}).encode()
    sizes["header"] = _HEADER_LENGTH.size + len(header)
    return _HEADER_LENGTH.pack(len(header)) + header + b"".join(chunks), sizes


def parts(state_dict: Mapping[str, torch.Tensor], *, bits: int = 8,
          scale: str = "row") -> dict[str, int]:
    """Bytes of each part of :func:`save_compressed`'s payload, before the entropy coder.

    Returns ``{"bitmask", "scales", "values", "other tensors", "header"}``: the sum of the
    bitmasks ``Σ⌈N/8⌉``, of the scales ``Σ 4·rows`` (4 B per tensor with ``scale="tensor"``),
    of the bit-packed nonzeros
    ``Σ⌈K·b/8⌉``, of the tensors kept as they are, and of the header. Their sum is the length of
    the payload that LZMA compresses into the file.

    Raises:
        TypeError, ValueError: as :func:`save_compressed`.

    Example:
        >>> w = torch.tensor([[0.0, 1.0, -0.5, 0.0], [0.25, 0.0, 0.0, 2.0]])
        >>> {k: v for k, v in parts({"w": w}, bits=4).items() if k != "header"}
        {'bitmask': 1, 'scales': 8, 'values': 2, 'other tensors': 0}
    """
    return _payload(state_dict, _check(state_dict, bits, scale), scale)[1]


def save_compressed(state_dict: Mapping[str, torch.Tensor], path: str | Path, *, bits: int = 8,
                    scale: str = "row") -> int:
    """Write ``state_dict`` in the compact format of this module and return the bytes written.

    Args:
        state_dict: names to tensors (e.g. ``model.state_dict()`` of a pruned model).
        path: the file to write.
        bits: bits per quantized nonzero, an integer in [2, 8].
        scale: ``"row"``, one quantization step per row of a matrix (per tensor for vectors),
            or ``"tensor"``, one per tensor: 4 bytes instead of ``4·rows``, at the price of a
            coarser step for the rows whose weights are small.

    Raises:
        TypeError: ``state_dict`` is not a mapping of tensors, or ``bits`` is not an integer.
        ValueError: ``bits`` outside [2, 8], or ``scale`` neither ``"row"`` nor ``"tensor"``.

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
    payload, _ = _payload(state_dict, _check(state_dict, bits, scale), scale)
    data = lzma.compress(payload, preset=9)
    Path(path).write_bytes(data)
    return len(data)


def load_compressed(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a file written by :func:`save_compressed`: same keys (in the same order), shapes and
    dtypes; zeros exactly zero, nonzeros within half a quantization step.

    Nothing in the file is executed: it holds a JSON header and raw bytes.

    Raises:
        ValueError: the file is not in this format.
    """
    try:
        payload = lzma.decompress(Path(path).read_bytes())
        (length,) = _HEADER_LENGTH.unpack_from(payload)
        header = json.loads(payload[_HEADER_LENGTH.size:_HEADER_LENGTH.size + length])
    except (lzma.LZMAError, struct.error, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path} is not a file written by save_compressed") from error
    if not isinstance(header, dict) or header.get("format") != _FORMAT:
        raise ValueError(f"{path} is not a file written by save_compressed ({_FORMAT})")
    position = _HEADER_LENGTH.size + length

    def read(n: int) -> bytes:
        nonlocal position
        position += n
        return payload[position - n:position]

    out = {}
    for entry in header["tensors"]:
        if entry["kind"] == "quantized":
            out[entry["name"]] = _decode(entry, header["bits"], read)
        else:
            dtype, raw = getattr(torch, entry["dtype"]), read(entry["bytes"])
            if not raw:  # an empty tensor
                out[entry["name"]] = torch.empty(entry["shape"], dtype=dtype)
                continue
            data = torch.from_numpy(np.frombuffer(raw, dtype=np.uint8).copy())
            out[entry["name"]] = data.view(dtype).reshape(entry["shape"])
    return out
