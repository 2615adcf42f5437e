"""Training and evaluation loops, reproducibility, and devices.

One loop (:func:`fit`) serves every classifier of the course: plain training, fine-tuning
under fixed keep-masks (``masks=``), pruning during training (``pruner=``, any
:class:`nlprune.masks.Pruner` such as :class:`nlprune.schedules.GradualPruner`), and training
with a penalty term or another criterion. :func:`fit_language_model` is its counterpart for
language models (truncated backpropagation through time). Both keep pruned weights at exactly
zero with :func:`nlprune.masks.masked_step`, run on the model's device, and leave torch's global
random generator as they found it.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import os
import random
import sys
import time
from collections.abc import Callable, Iterator, Mapping

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from . import _checks
from .masks import Pruner, apply_masks, loop_masks, masked_step

__all__ = [
    "reproducible",
    "thread_count",
    "default_device",
    "model_device",
    "seeded",
    "evaluate",
    "correct_predictions",
    "fit",
    "perplexity",
    "fit_language_model",
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
    """CUDA when a GPU is present, otherwise the CPU (the course's reference device).

    The loops do not call it: they run where the model is. Move a model there yourself,
    ``model.to(default_device())``, to train on a GPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (the CPU for a model without parameters)."""
    first = next(model.parameters(), None)
    return torch.device("cpu") if first is None else first.device


@contextlib.contextmanager
def seeded(seed: int | None, device: torch.device | None = None) -> Iterator[None]:
    """Run a block with torch's global generator seeded with ``seed``, and restore the caller's
    generator state afterwards; ``seed=None`` runs the block on the caller's generator as it is.

    The loaders' shuffling order and the dropout masks draw from torch's global generator, so
    ``with seeded(0): ...`` makes a training run the same whatever ran before it, without
    changing the random numbers the caller draws afterwards. On a CUDA ``device``, that
    device's generator is forked and seeded too.

    Example:
        >>> _ = torch.manual_seed(1); expected = torch.rand(1); _ = torch.manual_seed(1)
        >>> with seeded(0):
        ...     inside = torch.rand(1)
        >>> torch.equal(torch.rand(1), expected)   # the caller's sequence goes on untouched
        True
    """
    if seed is None:
        yield
        return
    seed = _checks.integer(seed, "seed")
    devices = [device] if device is not None and device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def _to(batch: tuple[torch.Tensor, ...], device: torch.device) -> tuple[torch.Tensor, ...]:
    """A classifier batch ``(ids, lengths, labels)`` on ``device``."""
    ids, lengths, labels = batch
    return ids.to(device), lengths.to(device), labels.to(device)


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, device: torch.device | None = None) -> dict[str, float]:
    """Mean cross-entropy and accuracy of a classifier over ``loader``.

    Args:
        model: a classifier taking ``(ids, lengths)`` and returning logits.
        loader: batches ``(ids, lengths, labels)``.
        device: where to run (default: the model's device).

    Returns:
        ``{"loss": …, "accuracy": …}`` over all examples. The model's mode is restored.

    Raises:
        ValueError: ``loader`` holds no example.
    """
    device = device or model_device(model)
    was_training = model.training
    model.eval()
    loss_sum, correct, count = 0.0, 0, 0
    try:
        for batch in loader:
            ids, lengths, labels = _to(batch, device)
            logits = model(ids, lengths)
            loss_sum += nn.functional.cross_entropy(logits, labels, reduction="sum").item()
            correct += (logits.argmax(-1) == labels).sum().item()
            count += labels.numel()
    finally:
        model.train(was_training)
    if count == 0:
        raise ValueError("loader holds no example: there is nothing to evaluate")
    return {"loss": loss_sum / count, "accuracy": correct / count}


@torch.no_grad()
def correct_predictions(model: nn.Module, loader: DataLoader, device: torch.device | None = None) -> torch.Tensor:
    """One boolean per example of ``loader``, in its order: ``True`` where the classifier's
    prediction is right. Two models compared on the same loader (not shuffled) give the paired
    data of :func:`nlprune.measure.paired_comparison`.

    Raises:
        ValueError: ``loader`` holds no example.
    """
    device = device or model_device(model)
    was_training = model.training
    model.eval()
    right = []
    try:
        for batch in loader:
            ids, lengths, labels = _to(batch, device)
            right.append((model(ids, lengths).argmax(-1) == labels).cpu())
    finally:
        model.train(was_training)
    if not right:
        raise ValueError("loader holds no example: there is nothing to predict")
    return torch.cat(right)


def _prepare(model: nn.Module, masks: Mapping[str, torch.Tensor] | None, pruner: Pruner | None,
             on_step: Callable[[int], None] | None, device: torch.device | None
             ) -> tuple[torch.device, Callable[[], Mapping[str, torch.Tensor] | None]]:
    """What :func:`fit` and :func:`fit_language_model` do first: check ``masks``, ``pruner`` and
    ``on_step``, move the model to ``device`` (if given), and apply the starting masks. Returns
    the device the model is on and a function that gives the masks to keep at each step."""
    if on_step is not None and isinstance(on_step, Pruner):
        raise TypeError(f"on_step is a pruner with its own masks ({type(on_step).__name__}): pass it "
                        "as pruner=, so that the loop keeps its masks between updates")
    current = loop_masks(masks, pruner)
    if device is not None:
        model.to(device)
    if current() is not None:
        apply_masks(model, current())
    return model_device(model), current


def _mask_key(masks: Mapping[str, torch.Tensor] | None) -> tuple[str, ...]:
    """A digest of the masks' contents: equal keys mean the same pruned entries."""
    if masks is None:
        return ()
    return tuple(hashlib.sha256(m.detach().cpu().numpy().tobytes()).hexdigest() for m in masks.values())


def fit(model: nn.Module, train: DataLoader, valid: DataLoader | None = None, *, epochs: int = 1,
        lr: float = 1e-3, weight_decay: float = 0.0, clip: float | None = 1.0,
        masks: Mapping[str, torch.Tensor] | None = None, pruner: Pruner | None = None,
        penalty: Callable[[nn.Module], torch.Tensor] | None = None,
        on_step: Callable[[int], None] | None = None,
        criterion: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        seed: int | None = 0, device: torch.device | None = None, progress: bool | None = None,
        desc: str = "train") -> list[dict[str, float]]:
    """Train a classifier with Adam; return one record per epoch.

    * ``masks``: fixed keep-masks. Pruned weights (mask ``False``) are zeroed before training
      and stay exactly zero (:func:`nlprune.masks.masked_step`).
    * ``pruner``: masks that change during training (an :class:`nlprune.masks.Pruner`, e.g. a
      :class:`nlprune.schedules.GradualPruner`), handed over once: ``pruner(step)`` is called
      before each step and ``pruner.masks`` kept like ``masks``. Give ``masks`` or ``pruner``.
    * ``penalty``: a function of the model added to the loss (e.g. an L1 term).
    * ``on_step``: any other callback, called with the global step number before each step
      (e.g. a :class:`nlprune.movement.MovementPruner`, whose masks live in the model).
    * ``criterion``: ``criterion(logits, labels, ids, lengths)`` replaces the cross-entropy, e.g.
      a :class:`nlprune.distill.DistillationLoss` that also asks a teacher model. The recorded
      ``train_loss`` is then that loss.
    * ``seed``: the loaders' shuffling and the dropout masks draw from torch's global generator;
      an integer runs the training on it seeded with ``seed`` (:func:`seeded`), so the same call
      gives the same model whatever ran before it, and the caller's generator is restored
      afterwards. ``seed=None`` trains on the caller's generator as it is (and moves it on).
    * ``device``: where to train (default: where the model is); the model is moved there.
    * ``progress``: show a tqdm bar per epoch; ``None`` (default) shows it unless the
      environment variable ``NLPRUNE_PROGRESS`` is ``0`` (set when notebooks are executed to
      store their outputs, so the book does not show stale bars).
    * With ``valid``, the weights of the epoch with the best validation accuracy are restored
      at the end (best-on-validation checkpointing, kept in memory). When a ``pruner`` changes
      the masks, only epochs that ended with exactly the final masks are candidates, so the
      restored model has the sparsity that training ended with. With ``on_step``, whose state
      ``fit`` cannot see, the last epoch is kept.

    Returns:
        A list of dicts (epoch, train_loss, seconds, and valid_loss/valid_accuracy with ``valid``).

    Raises:
        TypeError: ``pruner`` is not a pruner, or ``on_step`` is one (pass it as ``pruner=``).
        ValueError: ``epochs < 1``, both ``masks`` and ``pruner``, or bad masks (see
            :func:`nlprune.masks.apply_masks`). A :class:`~nlprune.schedules.GradualPruner`
            raises ``RuntimeError`` if its masks did not hold between its updates.

    Example:
        >>> from nlprune import data, prune
        >>> from nlprune.models import RNNClassifier
        >>> items = [([2, 3], 1), ([4, 5], 0)] * 8
        >>> loader = DataLoader(items, batch_size=4, collate_fn=data.collate_padded)
        >>> model = RNNClassifier(6, kind="gru", embed_dim=4, hidden=4)
        >>> pruner = prune.GradualPruner(model, final=0.5, begin=0, end=6, frequency=2)
        >>> history = fit(model, loader, loader, epochs=2, pruner=pruner, progress=False)
        >>> [sorted(record) for record in history][0]
        ['epoch', 'seconds', 'train_loss', 'valid_accuracy', 'valid_loss']
        >>> prune.check_masks(model, pruner.masks)   # pruned weights are still exactly zero
        >>> round(prune.overall_sparsity(pruner.masks), 2)
        0.5
    """
    epochs = _checks.at_least(epochs, "epochs", 1)
    device, current = _prepare(model, masks, pruner, on_step, device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    progress = _show_progress(progress)
    history: list[dict[str, float]] = []
    best: dict[tuple[str, ...], tuple[float, dict]] = {}  # masks' digest -> best (accuracy, state)
    step = 0
    with seeded(seed, device):
        for epoch in range(1, epochs + 1):
            model.train()
            start, loss_sum, count = time.perf_counter(), 0.0, 0
            bar = tqdm(train, desc=f"{desc} epoch {epoch}/{epochs}", leave=False, disable=not progress)
            for batch in bar:
                if pruner is not None:
                    pruner(step)
                if on_step is not None:
                    on_step(step)
                ids, lengths, labels = _to(batch, device)
                logits = model(ids, lengths)
                if criterion is None:
                    loss = nn.functional.cross_entropy(logits, labels)
                else:
                    loss = criterion(logits, labels, ids, lengths)
                total = loss + penalty(model) if penalty is not None else loss
                masked_step(model, optimizer, total, current(), clip)
                loss_sum += loss.item() * labels.numel()
                count += labels.numel()
                step += 1
            record = {"epoch": epoch, "train_loss": loss_sum / count, "seconds": time.perf_counter() - start}
            if valid is not None:
                metrics = evaluate(model, valid, device)
                record.update(valid_loss=metrics["loss"], valid_accuracy=metrics["accuracy"])
                key = _mask_key(current())
                if on_step is None and (key not in best or metrics["accuracy"] > best[key][0]):
                    best[key] = (metrics["accuracy"], copy.deepcopy(model.state_dict()))
            history.append(record)
    if best:
        model.load_state_dict(best[_mask_key(current())][1])
    return history


def _show_progress(progress: bool | None) -> bool:
    """``progress`` itself, or for ``None``: show bars unless ``NLPRUNE_PROGRESS`` is ``0``."""
    return os.environ.get("NLPRUNE_PROGRESS", "1") != "0" if progress is None else progress


@torch.no_grad()
def perplexity(model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """``exp`` of the mean next-word cross-entropy of a language model over consecutive
    ``(input, target)`` windows (from :func:`nlprune.data.lm_batches`), carrying the state.

    Raises:
        ValueError: ``batches`` is empty.

    A model that predicts every word with probability ``1/V`` has perplexity ``V``. (The same
    quantity as :func:`nlprune.llm.perplexity`, for the course's LSTM and its carried state.)
    """
    if len(batches) == 0:
        raise ValueError("batches is empty")
    device = model_device(model)
    was_training = model.training
    model.eval()
    state, loss_sum, count = None, 0.0, 0
    try:
        for x, y in batches:
            x, y = x.to(device), y.to(device)
            logits, state = model(x, state)
            loss_sum += nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum").item()
            count += y.numel()
    finally:
        model.train(was_training)
    return float(np.exp(loss_sum / count))


def fit_language_model(model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]], *,
                       epochs: int = 1, lr: float = 2e-3, clip: float = 0.5,
                       masks: Mapping[str, torch.Tensor] | None = None, pruner: Pruner | None = None,
                       seed: int | None = 0, on_step: Callable[[int], None] | None = None,
                       device: torch.device | None = None, progress: bool | None = None,
                       desc: str = "LM") -> list[dict[str, float]]:
    """Train a language model with truncated backpropagation through time.

    The windows are visited in order, the state is carried from one window to the next and
    detached (so gradients flow back at most one window). ``masks`` (fixed) or ``pruner``
    (changing, e.g. a :class:`nlprune.schedules.GradualPruner`) are kept as in :func:`fit`;
    ``seed``, ``on_step`` and ``device`` mean what they mean in :func:`fit`.

    Returns:
        One record per epoch with the training perplexity and the seconds it took.

    Raises:
        TypeError, ValueError: as :func:`fit` (``epochs < 1``, both ``masks`` and ``pruner``,
            bad masks).
    """
    epochs = _checks.at_least(epochs, "epochs", 1)
    device, current = _prepare(model, masks, pruner, on_step, device)
    progress = _show_progress(progress)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    history, step = [], 0
    with seeded(seed, device):
        for epoch in range(1, epochs + 1):
            model.train()
            state, loss_sum, count, start = None, 0.0, 0, time.perf_counter()
            for x, y in tqdm(batches, desc=f"{desc} epoch {epoch}/{epochs}", leave=False, disable=not progress):
                if pruner is not None:
                    pruner(step)
                if on_step is not None:
                    on_step(step)
                step += 1
                if state is not None:
                    state = tuple(s.detach() for s in state)
                x, y = x.to(device), y.to(device)
                logits, state = model(x, state)
                loss = nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten())
                masked_step(model, optimizer, loss, current(), clip)
                loss_sum += loss.item() * y.numel()
                count += y.numel()
            history.append({"epoch": epoch, "train_perplexity": float(np.exp(loss_sum / count)),
                            "seconds": time.perf_counter() - start})
    return history
