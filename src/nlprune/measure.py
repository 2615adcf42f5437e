"""Measuring models: parameter counts, zeros, size on disk, latency."""

from __future__ import annotations

import gzip
import io
import statistics
import time
from collections.abc import Callable

import pandas as pd
import torch
from torch import nn

from . import _checks

__all__ = ["count_parameters", "count_nonzero", "sparsity_table", "size_on_disk", "median_latency"]


def count_parameters(model: nn.Module) -> int:
    """Number of scalar parameters (zeros included)."""
    return sum(p.numel() for p in model.parameters())


def count_nonzero(model: nn.Module) -> int:
    """Number of parameters that are not exactly zero."""
    return sum(int(torch.count_nonzero(p.detach())) for p in model.parameters())


def sparsity_table(model: nn.Module, names: list[str] | None = None) -> pd.DataFrame:
    """Measured zeros per parameter tensor (default: all of them) and a ``total`` row."""
    params = dict(model.named_parameters())
    names = list(params) if names is None else _checks.known_names(names, params)
    rows = [{"tensor": n, "shape": tuple(params[n].shape), "entries": params[n].numel(),
             "zeros": params[n].numel() - int(torch.count_nonzero(params[n].detach()))} for n in names]
    rows.append({"tensor": "total", "shape": "", "entries": sum(r["entries"] for r in rows),
                 "zeros": sum(r["zeros"] for r in rows)})
    table = pd.DataFrame(rows)
    table["sparsity"] = table["zeros"] / table["entries"]
    return table


def size_on_disk(model: nn.Module) -> dict[str, int]:
    """Bytes of the saved ``state_dict``: as ``torch.save`` writes it (``dense``) and gzip-compressed
    (``compressed``). Zeros in a dense tensor take as much room as any other float until the
    file is compressed (or stored in a sparse format)."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    raw = buffer.getvalue()
    return {"dense": len(raw), "compressed": len(gzip.compress(raw, compresslevel=6, mtime=0))}


def median_latency(fn: Callable[[], object], *, repeats: int = 30, warmup: int = 3,
                   threads: int | None = None) -> float:
    """Median wall-clock seconds of ``fn()`` over ``repeats`` calls, after ``warmup`` calls.

    ``threads`` sets torch's intra-op thread count during the measurement (and restores it
    afterwards). One thread gives the most repeatable numbers on a busy machine: with several
    threads, a small operation waits for the slowest thread whenever another program holds a core.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got {repeats!r} and {warmup!r}")
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be None or >= 1, got {threads!r}")
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            for _ in range(warmup):
                fn()
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                fn()
                times.append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(previous)
    return statistics.median(times)
