"""Training and evaluation loops, reproducibility, and a cache of trained base models.

One loop (:func:`fit`) serves every chapter: plain training, fine-tuning under pruning
masks (pruned weights stay exactly zero), and training with a penalty term.
"""

from __future__ import annotations

import copy
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

from . import prune
from .data import lm_batches
from .models import LSTMLanguageModel, RNNClassifier

__all__ = [
    "reproducible",
    "default_device",
    "evaluate",
    "fit",
    "cache_dir",
    "cached_model",
    "perplexity",
    "fit_language_model",
    "LM_RECIPE",
    "base_language_model",
    "base_classifier",
]


def reproducible(seed: int = 0, threads: int = 2) -> None:
    """Seed Python, NumPy, PyTorch (and TensorFlow if already imported) and fix torch's thread count."""
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads!r}")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    if "tensorflow" in sys.modules:
        sys.modules["tensorflow"].random.set_seed(seed)


def default_device() -> torch.device:
    """CUDA when a GPU is present, otherwise the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _to(batch: tuple[torch.Tensor, ...], device: torch.device) -> tuple[torch.Tensor, ...]:
    ids, lengths, labels = batch
    return ids.to(device), lengths, labels.to(device)


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, device: torch.device | None = None) -> dict[str, float]:
    """Mean cross-entropy and accuracy of a classifier over ``loader``."""
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
        seed: int | None = 0, device: torch.device | None = None, progress: bool | None = None,
        desc: str = "train") -> list[dict[str, float]]:
    """Train a classifier with Adam; return one record per epoch.

    * ``masks``: pruned weights (mask ``False``) are zeroed before training and stay exactly
      zero: their gradients are zeroed after ``backward`` and the masks re-applied after every
      optimizer step.
    * ``penalty``: a function of the model added to the loss (e.g. an L1 term).
    * ``on_step``: called with the global step number before each step (used by schedules).
    * ``seed``: seeds torch's global generator first, which fixes the shuffling order and the
      dropout masks, so the same call gives the same model whatever ran before it.
    * ``progress``: show a tqdm bar per epoch; ``None`` (default) shows it unless the
      environment variable ``NLPRUNE_PROGRESS`` is ``0`` (set when notebooks are executed to
      store their outputs, so the book does not show stale bars).
    * With ``valid``, the weights of the epoch with the best validation accuracy are restored
      at the end (best-on-validation checkpointing, kept in memory). When ``on_step`` changes
      the masks during training (gradual pruning), only epochs that ended with the final masks
      are candidates, so the restored model has the sparsity that training ended with.
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
            loss = nn.functional.cross_entropy(model(ids, lengths), labels)
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


def cached_model(key: str, build: Callable[[], nn.Module], train_fn: Callable[[nn.Module], object]
                 ) -> tuple[nn.Module, dict]:
    """Return ``(model, info)``: loaded from the cache when ``key`` is there, otherwise built,
    trained by ``train_fn(model)`` and saved (``state_dict`` + a JSON file of ``info``).

    Loading uses ``torch.load(..., weights_only=True)``. ``info`` holds what ``train_fn``
    returned (e.g. its history) and the training time in seconds.
    """
    if not key or any(c in key for c in "/\\"):
        raise ValueError(f"key must be a non-empty name without slashes, got {key!r}")
    weights, meta = cache_dir() / f"{key}.pt", cache_dir() / f"{key}.json"
    model = build()
    if weights.exists() and meta.exists():
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        return model, json.loads(meta.read_text())
    start = time.perf_counter()
    result = train_fn(model)
    info = {"key": key, "train_seconds": time.perf_counter() - start, "result": result}
    model.cpu()
    tmp = weights.with_suffix(".tmp")
    torch.save(model.state_dict(), tmp)
    tmp.replace(weights)
    meta.write_text(json.dumps(info, indent=1))
    return model, info


# The recipe of the course's base classifiers. Changing it changes the cache key.
BASE_RECIPE = {"embed_dim": 64, "hidden": 128, "dropout": 0.5, "epochs": 7, "lr": 2e-3, "weight_decay": 1e-5,
               "seed": 0}


def base_classifier(task, kind: str = "lstm") -> tuple[nn.Module, dict]:
    """The course's trained RNN classifier for a :class:`nlprune.data.TextTask`, from the cache.

    Trained once, deterministically (seed, recipe :data:`BASE_RECIPE`), with
    best-on-validation checkpointing; later calls load it. Returns ``(model, info)``.
    """
    r = BASE_RECIPE
    key = (f"clf-{kind}-v{len(task.vocab)}-n{len(task.splits.train)}-e{r['embed_dim']}-h{r['hidden']}"
           f"-d{r['dropout']}-ep{r['epochs']}-lr{r['lr']}-wd{r['weight_decay']}-s{r['seed']}")

    def build() -> nn.Module:
        torch.manual_seed(r["seed"])
        return RNNClassifier(len(task.vocab), kind=kind, embed_dim=r["embed_dim"], hidden=r["hidden"],
                             dropout=r["dropout"])

    def train_fn(model: nn.Module) -> list[dict[str, float]]:
        return fit(model, task.train, task.valid, epochs=r["epochs"], lr=r["lr"],
                   weight_decay=r["weight_decay"], seed=r["seed"],
                   device=torch.device("cpu"), desc=f"base {kind}")

    model, info = cached_model(key, build, train_fn)
    return model.eval(), info


@torch.no_grad()
def perplexity(model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """``exp`` of the mean next-word cross-entropy of a language model over consecutive
    ``(input, target)`` windows (from :func:`nlprune.data.lm_batches`), carrying the state."""
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
                       progress: bool | None = None, desc: str = "LM") -> list[dict[str, float]]:
    """Train a language model with truncated backpropagation through time.

    The windows are visited in order, the state is carried from one window to the next and
    detached (so gradients flow back at most one window). ``masks`` are kept as in :func:`fit`.
    Returns one record per epoch with the training perplexity.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs!r}")
    if seed is not None:
        torch.manual_seed(seed)
    if masks is not None:
        prune.apply_masks(model, masks)
    progress = _show_progress(progress)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    history = []
    for epoch in range(1, epochs + 1):
        model.train()
        state, loss_sum, count, start = None, 0.0, 0, time.perf_counter()
        for x, y in tqdm(batches, desc=f"{desc} epoch {epoch}/{epochs}", leave=False, disable=not progress):
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
    :data:`LM_RECIPE` (deterministically) and cached like :func:`base_classifier`."""
    r = LM_RECIPE
    key = (f"lm-lstm-v{vocab_size}-n{train_stream.numel()}-e{r['embed_dim']}-h{r['hidden']}-d{r['dropout']}"
           f"-ep{r['epochs']}-lr{r['lr']}-b{r['batch_size']}-t{r['bptt']}-s{r['seed']}")

    def build() -> nn.Module:
        torch.manual_seed(r["seed"])
        return LSTMLanguageModel(vocab_size, embed_dim=r["embed_dim"], hidden=r["hidden"], dropout=r["dropout"])

    def train_fn(model: nn.Module) -> list[dict[str, float]]:
        batches = lm_batches(train_stream, batch_size=r["batch_size"], bptt=r["bptt"])
        return fit_language_model(model, batches, epochs=r["epochs"], lr=r["lr"], seed=r["seed"],
                                  desc="base LM")

    model, info = cached_model(key, build, train_fn)
    return model.eval(), info
