"""A disk cache of trained models and of experiments' results, so that chapters share them.

Trained base models are kept in :func:`cache_dir` (``$NLPRUNE_CACHE``, or ``~/.cache/nlprune``)
under a key that hashes everything the training depends on (:func:`recipe_key`), so a changed
recipe, data set or package version trains anew instead of loading a stale model. Weights are
loaded with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

import torch
from torch import nn

from . import __version__

__all__ = ["cache_dir", "cached_model", "recipe_key", "digest", "store_results", "load_results"]


def cache_dir() -> Path:
    """Where trained base models are kept: ``$NLPRUNE_CACHE`` or ``~/.cache/nlprune``."""
    path = Path(os.environ.get("NLPRUNE_CACHE", Path.home() / ".cache" / "nlprune"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def cached_model(key: str, build: Callable[[], nn.Module], train_fn: Callable[[nn.Module], object], *,
                 recipe: Mapping | None = None) -> tuple[nn.Module, dict]:
    """Return ``(model, info)``: loaded from the cache when ``key`` is there, otherwise built,
    trained by ``train_fn(model)`` and saved (``state_dict`` + a JSON file of ``info``).

    Loading uses ``torch.load(..., weights_only=True)``. ``info`` holds the key, what
    ``train_fn`` returned (e.g. its history), the training time in seconds and the ``recipe``.

    Args:
        key: the file name stem in :func:`cache_dir` (no slashes). Make it depend on everything
            that changes the trained model (:func:`recipe_key` does).
        build: returns the untrained model (seed inside it for a reproducible start).
        train_fn: trains the model in place; its return value must be JSON-serialisable.
        recipe: what the model was trained from (JSON-serialisable). It is stored beside the
            weights and compared on load.

    Returns:
        ``(model, info)``.

    Raises:
        ValueError: a bad ``key``, or a cached file whose stored recipe differs from ``recipe``
            (delete the file, or fix the key).
    """
    if not key or any(c in key for c in "/\\"):
        raise ValueError(f"key must be a non-empty name without slashes, got {key!r}")
    recipe = None if recipe is None else json.loads(json.dumps(recipe))
    with _training_lock(cache_dir() / f"{key}.lock"):
        return _load_or_train(key, build, train_fn, recipe)


@contextmanager
def _training_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (``flock``) while the body runs.

    ``make test`` runs two notebooks at once; when both ask for a base model that is not cached
    yet, the second waits for the first to train and store it, then loads it, instead of training
    it a second time. Where ``fcntl`` does not exist (Windows) there is no lock: both train, and
    :func:`_write_atomically` still keeps the files whole.
    """
    if fcntl is None:
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _load_or_train(key: str, build: Callable[[], nn.Module], train_fn: Callable[[nn.Module], object],
                   recipe: object) -> tuple[nn.Module, dict]:
    """:func:`cached_model`'s work, under its lock."""
    weights, meta = cache_dir() / f"{key}.pt", cache_dir() / f"{key}.json"
    model = build()
    if weights.exists() and meta.exists():
        info = json.loads(meta.read_text())
        if recipe is not None and info.get("recipe") != recipe:
            raise ValueError(f"the cached model {weights} was trained from the recipe {info.get('recipe')} "
                             f"but {recipe} was asked for; delete the file to retrain")
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        return model, info
    start = time.perf_counter()
    result = train_fn(model)
    info = {"key": key, "train_seconds": time.perf_counter() - start, "result": result, "recipe": recipe}
    model.cpu()
    _write_atomically(weights, lambda tmp: torch.save(model.state_dict(), tmp))
    _write_atomically(meta, lambda tmp: tmp.write_text(json.dumps(info, indent=1)))
    return model, info


def _write_atomically(path: Path, write: Callable[[Path], object]) -> None:
    """``write`` to a temporary file of this process beside ``path``, then rename it to ``path``.

    ``make notebooks`` runs two notebooks at once, and both may train and store the same base
    model: each writes its own file, and the rename means a reader never sees a half-written one.
    """
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    write(tmp)
    tmp.replace(path)


def _results_file(name: str, recipe: Mapping) -> tuple[dict, Path]:
    """The full recipe (with the package version) and the cache file of an experiment's records."""
    full = {"recipe": json.loads(json.dumps(recipe)), "nlprune": __version__}
    return full, cache_dir() / f"{recipe_key(f'results-{name}', full)}.json"


def store_results(name: str, recipe: Mapping, results: list[dict]) -> Path:
    """Keep the records of an experiment in the cache, so that a later notebook can reuse the
    runs an earlier one made instead of repeating them (see :func:`load_results`).

    The file is ``recipe_key(name, recipe + package version).json`` in :func:`cache_dir`; the
    recipe is stored beside the records. Describe in ``recipe`` everything the runs depend on
    (the base model's cache key, the schedules and their settings, the seeds).

    Returns:
        The path of the file written.

    Example:
        >>> import os, tempfile
        >>> from unittest import mock
        >>> with mock.patch.dict(os.environ, {"NLPRUNE_CACHE": tempfile.mkdtemp()}):
        ...     _ = store_results("demo", {"lr": 1e-3}, [{"seed": 0, "accuracy": 0.75}])
        ...     print(load_results("demo", {"lr": 1e-3}), load_results("demo", {"lr": 2e-3}))
        [{'seed': 0, 'accuracy': 0.75}] None
    """
    recipe, path = _results_file(name, recipe)
    _write_atomically(path, lambda tmp: tmp.write_text(json.dumps({**recipe, "results": results}, indent=1)))
    return path


def load_results(name: str, recipe: Mapping) -> list[dict] | None:
    """The records :func:`store_results` kept for ``name`` and exactly this ``recipe`` (and
    package version), or ``None`` when there are none."""
    recipe, path = _results_file(name, recipe)
    if not path.exists():
        return None
    stored = json.loads(path.read_text())
    if {k: stored.get(k) for k in recipe} != recipe:
        return None
    return stored["results"]


def recipe_key(prefix: str, recipe: Mapping) -> str:
    """A cache key: ``prefix`` and the first 16 hex digits of the SHA-256 of ``recipe`` as JSON.

    Example:
        >>> recipe_key("clf-lstm", {"lr": 0.002}) == recipe_key("clf-lstm", {"lr": 0.002})
        True
        >>> recipe_key("clf-lstm", {"lr": 0.002}) == recipe_key("clf-lstm", {"lr": 0.003})
        False
    """
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode("utf-8")).hexdigest()
    return f"{prefix}-{digest[:16]}"


def digest(items: object) -> str:
    """SHA-256 of a JSON-serialisable value (e.g. the data a model was trained on), for recipes.

    Example:
        >>> digest([1, 2]) == digest([1, 2]), digest([1, 2]) == digest([2, 1])
        (True, False)
    """
    return hashlib.sha256(json.dumps(items, ensure_ascii=False).encode("utf-8")).hexdigest()
