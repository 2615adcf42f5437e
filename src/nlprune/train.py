"""Training and evaluation loops, reproducibility, and a cache of trained base models.

One loop (:func:`fit`) serves every chapter: plain training, fine-tuning under pruning
masks (pruned weights stay exactly zero), and training with a penalty term.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import random
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from . import __version__, _checks, prune
from .data import lm_batches
from .models import LSTMLanguageModel, RNNClassifier

__all__ = [
    "reproducible",
    "thread_count",
    "default_device",
    "evaluate",
    "fit",
    "cache_dir",
    "cached_model",
    "recipe_key",
    "store_results",
    "load_results",
    "perplexity",
    "fit_language_model",
    "LM_RECIPE",
    "base_language_model",
    "base_classifier",
]


def reproducible(seed: int = 0, threads: int = 2) -> None:
    """Seed Python, NumPy, PyTorch (and TensorFlow if already imported) and fix torch's thread count.

    The environment variable ``NLPRUNE_THREADS``, when set, replaces ``threads``: ``make
    notebooks`` sets it to 1 because it runs two notebooks side by side on 2 cores. Results
    then differ from the stored ones by float rounding only, which the notebooks' tolerances
    cover.

    Args:
        seed: the seed for every generator.
        threads: torch's intra-op thread count, an integer >= 1.

    Raises:
        TypeError: ``seed`` or ``threads`` is not an integer.
        ValueError: ``threads < 1``.

    Example:
        >>> reproducible(3, threads=1); a = torch.rand(2)
        >>> reproducible(3, threads=1); torch.equal(a, torch.rand(2)), torch.get_num_threads()
        (True, 1)
    """
    seed, threads = _checks.integer(seed, "seed"), thread_count(threads)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    if "tensorflow" in sys.modules:
        sys.modules["tensorflow"].random.set_seed(seed)


def thread_count(threads: int = 2) -> int:
    """``threads``, or the value of the environment variable ``NLPRUNE_THREADS`` when it is set.

    Raises:
        TypeError: ``threads`` is not an integer.
        ValueError: ``threads < 1``, or ``NLPRUNE_THREADS`` is set but is not an integer >= 1.

    Example:
        >>> from unittest import mock
        >>> with mock.patch.dict(os.environ, {"NLPRUNE_THREADS": "1"}):
        ...     thread_count(2)
        1
    """
    threads = _checks.integer(threads, "threads")
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads!r}")
    value = os.environ.get("NLPRUNE_THREADS", "").strip()
    if not value:
        return threads
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"NLPRUNE_THREADS must be an integer >= 1, got {value!r}")
    return int(value)


def default_device() -> torch.device:
    """CUDA when a GPU is present, otherwise the CPU (the course's reference device)."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _to(batch: tuple[torch.Tensor, ...], device: torch.device) -> tuple[torch.Tensor, ...]:
    ids, lengths, labels = batch
    return ids.to(device), lengths, labels.to(device)


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, device: torch.device | None = None) -> dict[str, float]:
    """Mean cross-entropy and accuracy of a classifier over ``loader``.

    Args:
        model: a classifier taking ``(ids, lengths)`` and returning logits.
        loader: batches ``(ids, lengths, labels)``.
        device: where to run (default: the model's device).

    Returns:
        ``{"loss": …, "accuracy": …}`` over all examples. The model's mode is restored.
    """
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    loss_sum, correct, count = 0.0, 0, 0
    for batch in loader:
        ids, lengths, labels = _to(batch, device)
        logits = model(ids, lengths)
        loss_sum += nn.functional.cross_entropy(logits, labels, reduction="sum").item()
        correct += (logits.argmax(-1) == labels).sum().item()
        count += labels.numel()
    model.train(was_training)
    return {"loss": loss_sum / count, "accuracy": correct / count}


def fit(model: nn.Module, train: DataLoader, valid: DataLoader | None = None, *, epochs: int = 1,
        lr: float = 1e-3, weight_decay: float = 0.0, clip: float | None = 1.0,
        masks: Mapping[str, torch.Tensor] | None = None,
        penalty: Callable[[nn.Module], torch.Tensor] | None = None,
        on_step: Callable[[int], None] | None = None,
        loss_fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        seed: int | None = 0, device: torch.device | None = None, progress: bool | None = None,
        desc: str = "train") -> list[dict[str, float]]:
    """Train a classifier with Adam; return one record per epoch.

    * ``masks``: pruned weights (mask ``False``) are zeroed before training and stay exactly
      zero: their gradients are zeroed after ``backward`` and the masks re-applied after every
      optimizer step.
    * ``penalty``: a function of the model added to the loss (e.g. an L1 term).
    * ``on_step``: called with the global step number before each step (used by schedules).
    * ``loss_fn``: ``loss_fn(logits, labels, ids, lengths)`` replaces the cross-entropy, e.g. a
      :class:`nlprune.distill.DistillationLoss` that also asks a teacher model. The recorded
      ``train_loss`` is then that loss.
    * ``seed``: an integer re-seeds torch's **global** generator with ``torch.manual_seed(seed)``
      at the start of every call. The loader's shuffling order and the dropout masks both draw
      from that generator, so the same call gives the same model whatever ran before it; the
      price is that the caller's global random state is replaced (afterwards it is wherever
      this training left it). Pass ``seed=None`` to leave the global generator alone.
    * ``progress``: show a tqdm bar per epoch; ``None`` (default) shows it unless the
      environment variable ``NLPRUNE_PROGRESS`` is ``0`` (set when notebooks are executed to
      store their outputs, so the book does not show stale bars).
    * With ``valid``, the weights of the epoch with the best validation accuracy are restored
      at the end (best-on-validation checkpointing, kept in memory). When ``on_step`` changes
      the masks during training (gradual pruning), only epochs that ended with the final masks
      are candidates, so the restored model has the sparsity that training ended with.

    Returns:
        A list of dicts (epoch, train_loss, seconds, and valid_loss/valid_accuracy with ``valid``).

    Raises:
        ValueError: ``epochs < 1``, or bad ``masks`` (see :func:`nlprune.prune.apply_masks`).

    Example:
        >>> from nlprune import data
        >>> from nlprune.models import RNNClassifier
        >>> items = [([2, 3], 1), ([4, 5], 0)] * 8
        >>> loader = DataLoader(items, batch_size=4, collate_fn=data.collate_padded)
        >>> model = RNNClassifier(6, kind="gru", embed_dim=4, hidden=4)
        >>> masks = prune.compute_masks(prune.magnitude_scores(model), 0.5)
        >>> history = fit(model, loader, loader, epochs=2, masks=masks, progress=False)
        >>> [sorted(record) for record in history][0]
        ['epoch', 'seconds', 'train_loss', 'valid_accuracy', 'valid_loss']
        >>> prune.check_masks(model, masks)   # pruned weights are still exactly zero
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs!r}")
    if seed is not None:
        torch.manual_seed(seed)
    device = device or default_device()
    model.to(device)
    if masks is not None:
        prune.apply_masks(model, masks)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    progress = _show_progress(progress)
    history: list[dict[str, float]] = []
    best: dict[tuple[int, ...], tuple[float, dict]] = {}  # masks' pruned counts -> best (accuracy, state)
    step = 0
    for epoch in range(1, epochs + 1):
        model.train()
        start, loss_sum, count = time.perf_counter(), 0.0, 0
        bar = tqdm(train, desc=f"{desc} epoch {epoch}/{epochs}", leave=False, disable=not progress)
        for batch in bar:
            if on_step is not None:
                on_step(step)
            ids, lengths, labels = _to(batch, device)
            logits = model(ids, lengths)
            if loss_fn is None:
                loss = nn.functional.cross_entropy(logits, labels)
            else:
                loss = loss_fn(logits, labels, ids, lengths)
            total = loss + penalty(model) if penalty is not None else loss
            _masked_step(model, optimizer, total, masks, clip)
            loss_sum += loss.item() * labels.numel()
            count += labels.numel()
            step += 1
        record = {"epoch": epoch, "train_loss": loss_sum / count, "seconds": time.perf_counter() - start}
        if valid is not None:
            metrics = evaluate(model, valid, device)
            record.update(valid_loss=metrics["loss"], valid_accuracy=metrics["accuracy"])
            key = _mask_signature(masks)
            if key not in best or metrics["accuracy"] > best[key][0]:
                best[key] = (metrics["accuracy"], copy.deepcopy(model.state_dict()))
        history.append(record)
    if best:
        model.load_state_dict(best[_mask_signature(masks)][1])
    return history


def _show_progress(progress: bool | None) -> bool:
    """``progress`` itself, or for ``None``: show bars unless ``NLPRUNE_PROGRESS`` is ``0``."""
    return os.environ.get("NLPRUNE_PROGRESS", "1") != "0" if progress is None else progress


def _masked_step(model: nn.Module, optimizer: torch.optim.Optimizer, loss: torch.Tensor,
                 masks: Mapping[str, torch.Tensor] | None, clip: float | None) -> None:
    """One optimizer step that keeps pruned weights at exactly zero: their gradients are zeroed
    after ``backward`` and the masks re-applied after the step (Adam's momentum would move them)."""
    optimizer.zero_grad()
    loss.backward()
    if masks is not None:
        prune.mask_gradients(model, masks)
    if clip is not None:
        nn.utils.clip_grad_norm_(model.parameters(), clip)
    optimizer.step()
    if masks is not None:
        prune.apply_masks(model, masks)


def _mask_signature(masks: Mapping[str, torch.Tensor] | None) -> tuple[int, ...]:
    """Number of pruned entries per mask: tells apart the mask sets of a monotone schedule."""
    return () if masks is None else tuple(int((~m.bool()).sum()) for m in masks.values())


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


def _digest(items: object) -> str:
    """SHA-256 of a JSON-serialisable value (the data a model was trained on)."""
    return hashlib.sha256(json.dumps(items, ensure_ascii=False).encode("utf-8")).hexdigest()


def _task_recipe(task) -> dict:
    """What identifies a classification task: its settings, loader settings and a digest of
    the training and validation examples and of the vocabulary."""
    splits = task.splits
    return {"settings": dict(task.settings),
            "batch_size": task.train.batch_size,
            "max_len": getattr(task.train.dataset, "max_len", None),
            "data": _digest([[(e.text, e.label) for e in part] for part in (splits.train, splits.valid)]),
            "vocab": _digest(task.vocab.itos)}


# The recipe of the course's base classifiers. Changing it changes the cache key.
BASE_RECIPE = {"embed_dim": 64, "hidden": 128, "dropout": 0.5, "epochs": 7, "lr": 2e-3, "weight_decay": 1e-5,
               "seed": 0}


def base_classifier(task, kind: str = "lstm", pool: str = "last") -> tuple[nn.Module, dict]:
    """The course's trained RNN classifier for a :class:`nlprune.data.TextTask`, from the cache.

    Trained once, deterministically (seed, recipe :data:`BASE_RECIPE`), with
    best-on-validation checkpointing; later calls load it. The cache key is a hash of the full
    recipe: :data:`BASE_RECIPE`, ``kind``, the task's settings, loader settings, a digest of its
    training and validation data and vocabulary, and the package version; the recipe is stored
    beside the weights and checked on load.

    Args:
        task: from :func:`nlprune.data.make_loaders`.
        kind: ``"rnn"``, ``"gru"`` or ``"lstm"``.
        pool: how the states become one vector (:class:`nlprune.models.RNNClassifier`);
            the course's base model uses ``"last"``, chapter 1 compares ``"max"``.

    Returns:
        ``(model, info)``: the model in evaluation mode on the CPU, and the cache's info.
    """
    r = BASE_RECIPE
    recipe = {"model": "RNNClassifier", "kind": kind, **r, "task": _task_recipe(task), "nlprune": __version__}
    if pool != "last":  # the base model's key stays what it was before pooling existed
        recipe["pool"] = pool
    key = recipe_key(f"clf-{kind}" + ("" if pool == "last" else f"-{pool}"), recipe)

    def build() -> nn.Module:
        torch.manual_seed(r["seed"])
        return RNNClassifier(len(task.vocab), kind=kind, embed_dim=r["embed_dim"], hidden=r["hidden"],
                             dropout=r["dropout"], pool=pool)

    def train_fn(model: nn.Module) -> list[dict[str, float]]:
        return fit(model, task.train, task.valid, epochs=r["epochs"], lr=r["lr"],
                   weight_decay=r["weight_decay"], seed=r["seed"],
                   device=torch.device("cpu"), desc=f"base {kind} ({pool})")

    model, info = cached_model(key, build, train_fn, recipe=recipe)
    return model.eval(), info


@torch.no_grad()
def perplexity(model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """``exp`` of the mean next-word cross-entropy of a language model over consecutive
    ``(input, target)`` windows (from :func:`nlprune.data.lm_batches`), carrying the state.

    Raises:
        ValueError: ``batches`` is empty.

    A model that predicts every word with probability ``1/V`` has perplexity ``V``.
    """
    if len(batches) == 0:
        raise ValueError("batches is empty")
    was_training = model.training
    model.eval()
    state, loss_sum, count = None, 0.0, 0
    for x, y in batches:
        logits, state = model(x, state)
        loss_sum += nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum").item()
        count += y.numel()
    model.train(was_training)
    return float(np.exp(loss_sum / count))


def fit_language_model(model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]], *,
                       epochs: int = 1, lr: float = 2e-3, clip: float = 0.5,
                       masks: Mapping[str, torch.Tensor] | None = None, seed: int | None = 0,
                       on_step: Callable[[int], None] | None = None,
                       progress: bool | None = None, desc: str = "LM") -> list[dict[str, float]]:
    """Train a language model with truncated backpropagation through time.

    The windows are visited in order, the state is carried from one window to the next and
    detached (so gradients flow back at most one window). ``masks`` are kept as in :func:`fit`;
    ``seed`` re-seeds torch's global generator (dropout) as in :func:`fit`; ``on_step`` is
    called with the global step number before each step, as in :func:`fit` (e.g. a
    :class:`nlprune.prune.GradualPruner` whose ``masks`` are passed as ``masks``).

    Returns:
        One record per epoch with the training perplexity and the seconds it took.

    Raises:
        ValueError: ``epochs < 1`` or bad ``masks``.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs!r}")
    if seed is not None:
        torch.manual_seed(seed)
    if masks is not None:
        prune.apply_masks(model, masks)
    progress = _show_progress(progress)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    history, step = [], 0
    for epoch in range(1, epochs + 1):
        model.train()
        state, loss_sum, count, start = None, 0.0, 0, time.perf_counter()
        for x, y in tqdm(batches, desc=f"{desc} epoch {epoch}/{epochs}", leave=False, disable=not progress):
            if on_step is not None:
                on_step(step)
            step += 1
            if state is not None:
                state = tuple(s.detach() for s in state)
            logits, state = model(x, state)
            loss = nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten())
            _masked_step(model, optimizer, loss, masks, clip)
            loss_sum += loss.item() * y.numel()
            count += y.numel()
        history.append({"epoch": epoch, "train_perplexity": float(np.exp(loss_sum / count)),
                        "seconds": time.perf_counter() - start})
    return history


# The recipe of the course's Hamlet language model. Changing it changes the cache key.
LM_RECIPE = {"embed_dim": 128, "hidden": 256, "dropout": 0.3, "epochs": 6, "lr": 3e-3, "batch_size": 32,
             "bptt": 35, "seed": 0}


def base_language_model(train_stream: torch.Tensor, vocab_size: int) -> tuple[nn.Module, dict]:
    """The course's word-level LSTM language model, trained on ``train_stream`` with
    :data:`LM_RECIPE` (deterministically) and cached like :func:`base_classifier`: the key is a
    hash of the recipe, the vocabulary size, a digest of the stream and the package version.

    Returns:
        ``(model, info)``: the model in evaluation mode, and the cache's info.
    """
    r = LM_RECIPE
    recipe = {"model": "LSTMLanguageModel", **r, "vocab_size": vocab_size,
              "stream": _digest(train_stream.tolist()), "nlprune": __version__}
    key = recipe_key("lm-lstm", recipe)

    def build() -> nn.Module:
        torch.manual_seed(r["seed"])
        return LSTMLanguageModel(vocab_size, embed_dim=r["embed_dim"], hidden=r["hidden"], dropout=r["dropout"])

    def train_fn(model: nn.Module) -> list[dict[str, float]]:
        batches = lm_batches(train_stream, batch_size=r["batch_size"], bptt=r["bptt"])
        return fit_language_model(model, batches, epochs=r["epochs"], lr=r["lr"], seed=r["seed"],
                                  desc="base LM")

    model, info = cached_model(key, build, train_fn, recipe=recipe)
    return model.eval(), info
