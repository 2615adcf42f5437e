"""Measuring models: parameter counts, zeros, size on disk, latency, and the spread of
results over seeds."""

from __future__ import annotations

import gzip
import io
import math
import os
import statistics
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from . import _checks
from .baseline import ngrams
from .masks import with_total_row

__all__ = ["count_parameters", "count_nonzero", "sparsity_table", "size_on_disk", "median_latency",
           "check_timing", "seed_summary", "clearly_above", "paired_comparison", "paired_t_test",
           "results_table", "style_results", "text_degradation"]


def count_parameters(model: nn.Module) -> int:
    """Number of scalar parameters (zeros included)."""
    return sum(p.numel() for p in model.parameters())


def count_nonzero(model: nn.Module) -> int:
    """Number of parameters that are not exactly zero."""
    return sum(int(torch.count_nonzero(p.detach())) for p in model.parameters())


def sparsity_table(model: nn.Module, names: list[str] | None = None) -> pd.DataFrame:
    """Measured zeros per parameter tensor (default: all of them) and a ``total`` row.

    It counts the zeros in the weights themselves; :func:`nlprune.masks.sparsity_report` counts
    the ``False`` entries of masks (the two agree when the masks are applied and kept)."""
    params = dict(model.named_parameters())
    names = list(params) if names is None else _checks.known_names(names, params)
    rows = [{"tensor": n, "shape": tuple(params[n].shape), "entries": params[n].numel(),
             "zeros": params[n].numel() - int(torch.count_nonzero(params[n].detach()))} for n in names]
    return with_total_row(rows, ("entries", "zeros"), ("sparsity", "zeros", "entries"))


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
    The calls run in ``torch.inference_mode``; only the ``repeats`` calls are timed.

    Raises:
        TypeError: ``repeats``, ``warmup`` or ``threads`` is not an integer.
        ValueError: ``repeats < 1``, ``warmup < 0`` or ``threads < 1``.
    """
    repeats = _checks.at_least(repeats, "repeats", 1)
    warmup = _checks.at_least(warmup, "warmup", 0)
    if threads is not None:
        threads = _checks.integer(threads, "threads")
        if threads < 1:
            raise ValueError(f"threads must be None or an integer >= 1, got {threads!r}")
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


def check_timing(holds: bool, claim: str) -> None:
    """Check a claim of the text about measured time (a speed-up, a latency ratio).

    Timings depend on the CPU, on its vector instructions and on what else the machine runs, so
    a test must not fail on them. When ``holds`` is false, this prints a note naming the claim;
    it raises only when the environment variable ``NLPRUNE_STRICT_TIMING`` is ``1``, which
    ``make execute`` (the run whose outputs the text quotes) and ``make bench`` set. So the
    stored outputs always satisfy the text, and a reader's machine that disagrees says so
    instead of failing.

    Args:
        holds: whether the measured numbers satisfy the claim.
        claim: the claim in words, e.g. ``"cutting half the units is over 1.7x faster"``.

    Raises:
        TypeError: ``holds`` is not a bool (NumPy's ``bool_`` is accepted) or ``claim`` is not
            a string.
        AssertionError: the claim does not hold and ``NLPRUNE_STRICT_TIMING`` is ``1``.

    Example:
        >>> from unittest import mock
        >>> with mock.patch.dict(os.environ, {"NLPRUNE_STRICT_TIMING": "0"}):
        ...     check_timing(2.1 > 1.7, "1.7x faster")  # holds: silent
        ...     check_timing(1.2 > 1.7, "1.7x faster")
        Timing note: on this machine the text's claim "1.7x faster" does not hold (timings depend on the CPU).
    """
    if not isinstance(claim, str):
        raise TypeError(f"claim must be a string, got {type(claim).__name__}")
    if not isinstance(holds, (bool, np.bool_)):
        raise TypeError(f"holds must be a bool, got {type(holds).__name__}")
    if holds:
        return
    if os.environ.get("NLPRUNE_STRICT_TIMING") == "1":
        raise AssertionError(f"the timing claim {claim!r} does not hold on this run")
    print(f'Timing note: on this machine the text\'s claim "{claim}" does not hold '
          "(timings depend on the CPU).")


def seed_summary(runs: pd.DataFrame, by: str | list[str], value: str) -> pd.DataFrame:
    """Mean, sample standard deviation, minimum, maximum and number of runs of ``value`` for
    each group of ``by`` (e.g. one row per schedule, one run per seed).

    Example:
        >>> runs = pd.DataFrame({"schedule": ["a", "a", "a", "b", "b", "b"],
        ...                      "accuracy": [0.70, 0.72, 0.74, 0.60, 0.61, 0.62]})
        >>> table = seed_summary(runs, "schedule", "accuracy")
        >>> table.loc["a", ["mean", "sd", "min", "max", "runs"]].round(3).tolist()
        [0.72, 0.02, 0.7, 0.74, 3.0]
    """
    if not isinstance(runs, pd.DataFrame):
        raise TypeError(f"runs must be a pandas DataFrame, got {type(runs).__name__}")
    columns = [by] if isinstance(by, str) else list(by)
    missing = [c for c in columns + [value] if c not in runs.columns]
    if missing:
        raise ValueError(f"by and value must name columns of runs; {missing} are not among "
                         f"{list(runs.columns)}")
    grouped = runs.groupby(columns, sort=False)[value]
    table = grouped.agg(["mean", "std", "min", "max", "count"])
    return table.rename(columns={"std": "sd", "count": "runs"})


def clearly_above(a: Sequence[float], b: Sequence[float]) -> bool:
    """Whether every result in ``a`` is above every result in ``b`` (the ranges over seeds do
    not overlap): the conservative test the chapters use before they claim an ordering.

    Example:
        >>> clearly_above([0.75, 0.76, 0.78], [0.70, 0.74, 0.745])
        True
        >>> clearly_above([0.75, 0.76, 0.78], [0.70, 0.74, 0.755])
        False
    """
    a, b = list(a), list(b)
    if not a or not b:
        raise ValueError(f"a and b must each hold at least one result, got {len(a)} and {len(b)}")
    return min(a) > max(b)


def paired_comparison(correct_a: Sequence[bool] | torch.Tensor | np.ndarray,
                      correct_b: Sequence[bool] | torch.Tensor | np.ndarray) -> dict[str, float]:
    """Compare two models on the *same* test examples: the difference of their accuracies, its
    standard error, and McNemar's exact test.

    With ``d_i = a_i - b_i`` (``a_i = 1`` when model A is right on example ``i``), the difference
    of accuracies is the mean of ``d`` and its standard error ``sd(d) / sqrt(n)``. Examples both
    models get right (or wrong) cancel, so this is smaller than the unpaired
    ``sqrt(SE_a^2 + SE_b^2)`` whenever the models agree more often than chance. McNemar's test
    looks only at the ``n_ab`` examples A gets right and B wrong and the ``n_ba`` the other way
    round: if neither model is better, each of these ``n_ab + n_ba`` discordant examples is
    equally likely to fall either way, so ``p = min(1, 2 P[Binomial(n_ab + n_ba, 1/2) <=
    min(n_ab, n_ba)])`` (two-sided, exact).

    Args:
        correct_a, correct_b: one boolean per test example, in the same order, ``True`` where the
            model's prediction is right (e.g. :func:`nlprune.train.correct_predictions`).

    Returns:
        ``{"n", "accuracy_a", "accuracy_b", "difference", "se_difference", "se_unpaired",
        "a_only", "b_only", "p_mcnemar"}``.

    Raises:
        ValueError: the two have different lengths or are empty.
        TypeError: they do not hold booleans (or 0/1 integers).

    Example:
        >>> a = [True] * 6 + [False] * 2 + [True] * 1 + [False] * 1   # A right on 7 of 10
        >>> b = [True] * 6 + [True] * 2 + [False] * 1 + [False] * 1   # B right on 8 of 10
        >>> r = paired_comparison(a, b)
        >>> r["difference"], r["a_only"], r["b_only"], round(r["p_mcnemar"], 4)
        (-0.1, 1, 2, 1.0)
    """
    a, b = _as_correct(correct_a, "correct_a"), _as_correct(correct_b, "correct_b")
    if len(a) != len(b) or len(a) == 0:
        raise ValueError(f"correct_a and correct_b must be non-empty and of equal length (the same "
                         f"examples), got {len(a)} and {len(b)}")
    n = len(a)
    d = a.astype(float) - b.astype(float)
    a_only, b_only = int((a & ~b).sum()), int((~a & b).sum())
    discordant, low = a_only + b_only, min(a_only, b_only)
    tail = sum(math.comb(discordant, k) for k in range(low + 1)) / 2 ** discordant
    acc_a, acc_b = float(a.mean()), float(b.mean())
    return {"n": n, "accuracy_a": acc_a, "accuracy_b": acc_b, "difference": float(d.mean()),
            "se_difference": float(d.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan"),
            "se_unpaired": math.sqrt(acc_a * (1 - acc_a) / n + acc_b * (1 - acc_b) / n),
            "a_only": a_only, "b_only": b_only, "p_mcnemar": min(1.0, 2 * tail)}


def paired_t_test(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    """A paired t-test of two methods run with the *same* seeds: ``a[i]`` and ``b[i]`` come from
    seed ``i``. The second half of the rule the chapters use before they claim an ordering (the
    first is :func:`clearly_above`).

    With ``d_i = a_i - b_i`` over ``n`` seeds, ``t = mean(d) / (sd(d) / sqrt(n))`` has Student's
    t distribution with ``n - 1`` degrees of freedom when the two methods are equally good and
    the differences are normal; ``p`` is two-sided, from the closed form of that distribution for
    an integer number of degrees of freedom (Abramowitz and Stegun, 26.7.3-4).

    Returns:
        ``{"n", "difference", "se_difference", "t", "df", "p"}`` (``difference`` the mean of
        ``d``). When every ``d_i`` is the same, ``sd(d) = 0`` and ``t`` is infinite (``p = 0``)
        unless the differences are all zero (``t = 0``, ``p = 1``).

    Raises:
        ValueError: ``a`` and ``b`` differ in length or hold fewer than two results.

    Example:
        >>> r = paired_t_test([0.76, 0.75, 0.77], [0.74, 0.74, 0.74])
        >>> round(r["difference"], 4), r["df"], round(r["t"], 3), round(r["p"], 4)
        (0.02, 2, 3.464, 0.0742)
    """
    a, b = [float(x) for x in a], [float(x) for x in b]
    if len(a) != len(b) or len(a) < 2:
        raise ValueError(f"a and b must hold the same number of results, at least two (one per "
                         f"seed), got {len(a)} and {len(b)}")
    n = len(a)
    d = np.array(a) - np.array(b)
    se = float(d.std(ddof=1) / math.sqrt(n))
    mean = float(d.mean())
    if se == 0:
        t = 0.0 if mean == 0 else math.copysign(math.inf, mean)
    else:
        t = mean / se
    return {"n": n, "difference": mean, "se_difference": se, "t": t, "df": n - 1,
            "p": _student_two_sided(abs(t), n - 1)}


def _student_two_sided(t: float, df: int) -> float:
    """``P(|T| >= t)`` for Student's t with ``df`` (a positive integer) degrees of freedom."""
    if math.isinf(t):
        return 0.0
    theta = math.atan(t / math.sqrt(df))
    c2 = math.cos(theta) ** 2
    if df % 2:  # odd: A = (2/pi)(theta + sin cos (1 + 2/3 c^2 + 2*4/(3*5) c^4 + ...))
        term, total = 1.0, 1.0 if df > 1 else 0.0
        for k in range(1, (df - 1) // 2):
            term *= 2 * k / (2 * k + 1) * c2
            total += term
        inside = 2 / math.pi * (theta + math.sin(theta) * math.cos(theta) * total)
    else:  # even: A = sin (1 + 1/2 c^2 + 1*3/(2*4) c^4 + ...)
        term, total = 1.0, 1.0
        for k in range(1, df // 2):
            term *= (2 * k - 1) / (2 * k) * c2
            total += term
        inside = math.sin(theta) * total
    return min(1.0, max(0.0, 1.0 - inside))


def _as_correct(values: object, name: str) -> np.ndarray:
    """``values`` as a 1-D boolean NumPy array; ``TypeError`` unless booleans or 0/1 integers."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    array = np.asarray(values)
    if array.ndim != 1 or not (array.dtype == bool or (np.issubdtype(array.dtype, np.integer)
                                                      and np.isin(array, (0, 1)).all())):
        raise TypeError(f"{name} must be a 1-D sequence of booleans (True = right), got dtype "
                        f"{array.dtype} and shape {array.shape}")
    return array.astype(bool)


def results_table(models: Mapping[str, nn.Module], run: Callable[[nn.Module], object],
                  metric: Mapping[str, float], *, metric_name: str = "accuracy", repeats: int = 30,
                  threads: int = 1) -> pd.DataFrame:
    """The table every application of chapter 7 ends with: one row per model.

    Columns: ``parameters`` (all entries), ``nonzeros``, ``file (KB)`` (``torch.save`` of the
    state dict), ``gzip (KB)`` (that file compressed, where zeros start to pay), ``latency (ms)``
    (median of ``run(model)`` on ``threads`` threads, see :func:`median_latency`) and the task
    metric under ``metric_name``.

    Args:
        models: names to models, e.g. ``{"dense": ..., "90% gradual": ..., "50% units cut": ...}``.
        run: ``run(model)`` runs the forward pass to time (the same input for every model).
        metric: the measured task metric of each model, with the same names as ``models``.
        metric_name: the metric's column name.
        repeats, threads: as in :func:`median_latency`.

    Raises:
        ValueError: no models, or ``metric`` does not have exactly the names of ``models``.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> small, large = nn.Linear(4, 2), nn.Linear(4, 8)
        >>> x = torch.ones(1, 4)
        >>> table = results_table({"small": small, "large": large}, lambda m: m(x),
        ...                       {"small": 0.5, "large": 0.75}, repeats=3)
        >>> table[["parameters", "nonzeros", "accuracy"]].to_dict("index")["large"]
        {'parameters': 40, 'nonzeros': 40, 'accuracy': 0.75}
    """
    if len(models) == 0:
        raise ValueError("models is empty: give at least one name -> model")
    if set(metric) != set(models):
        raise ValueError(f"metric must have the names of models {sorted(models)}, got {sorted(metric)}")
    rows = []
    for name, model in models.items():
        sizes = size_on_disk(model)
        was_training = model.training
        model.eval()
        try:
            seconds = median_latency(lambda: run(model), repeats=repeats, threads=threads)
        finally:
            model.train(was_training)
        rows.append({"model": name, "parameters": count_parameters(model), "nonzeros": count_nonzero(model),
                     "file (KB)": sizes["dense"] / 1024, "gzip (KB)": sizes["compressed"] / 1024,
                     "latency (ms)": 1000 * seconds, metric_name: float(metric[name])})
    return pd.DataFrame(rows).set_index("model")


def style_results(table: pd.DataFrame, *, digits: int = 4) -> "pd.io.formats.style.Styler":
    """The :func:`results_table` for reading: counts with thousands separators, sizes in KB with
    one decimal, latency in ms with two, the metric with ``digits`` decimals."""
    formats = {"parameters": "{:,}", "nonzeros": "{:,}", "file (KB)": "{:,.1f}", "gzip (KB)": "{:,.1f}",
               "latency (ms)": "{:.2f}"}
    metric = {c: f"{{:.{digits}f}}" for c in table.columns if c not in formats}
    return table.style.format({**formats, **metric})


def text_degradation(tokens: Sequence[str], training_tokens: Sequence[str], *, n: int = 3,
                     unknown: str = "<unk>") -> dict[str, float]:
    """Simple measures of how generated text degrades, to read next to perplexity.

    * ``repeated n-grams``: the share of the passage's ``n``-grams that occur more than once
      in it (loops such as "the king the king the king" drive it up);
    * ``distinct words``: distinct tokens / tokens (low when a few words are repeated);
    * ``distinct bigrams``: distinct bigrams / bigrams of the passage, a per-passage version of
      the *distinct-2* of Li et al. (2016), who pool all generated texts and divide by their
      number of words (low when word pairs are repeated; NaN for a passage of one token);
    * ``unknown``: the share of ``unknown`` tokens (a language model with a vocabulary
      cut-off generates them instead of rare words);
    * ``copied n-grams``: the share of the passage's ``n``-grams that occur verbatim in
      ``training_tokens`` (high values mean the model recites its training text).

    Raises:
        TypeError, ValueError: ``n`` is not an integer >= 1, or ``tokens`` holds fewer than ``n``.

    Example:
        >>> text_degradation("a b a b a b".split(), "a b c".split(), n=2)["repeated n-grams"]
        1.0
    """
    n = _checks.at_least(n, "n", 1)
    tokens = list(tokens)
    if len(tokens) < n:
        raise ValueError(f"tokens must hold at least n={n} tokens, got {len(tokens)}")
    grams = ngrams(tokens, (n,))  # tokens contain no spaces, so joined n-grams stay distinct
    counts = Counter(grams)
    known = set(ngrams(list(training_tokens), (n,)))
    bigrams = ngrams(tokens, (2,))
    return {"repeated n-grams": sum(counts[g] > 1 for g in grams) / len(grams),
            "distinct words": len(set(tokens)) / len(tokens),
            "distinct bigrams": len(set(bigrams)) / len(bigrams) if bigrams else float("nan"),
            "unknown": tokens.count(unknown) / len(tokens),
            "copied n-grams": sum(g in known for g in grams) / len(grams)}
