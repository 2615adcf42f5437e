"""The course's base models: the trained classifiers and language model that chapters share.

Each is trained once, deterministically, from a fixed recipe (:data:`BASE_RECIPE`,
:data:`LM_RECIPE`) with :mod:`nlprune.train`'s loops, and kept in :mod:`nlprune.cache`; later
calls, in the same chapter or another one, load it.
"""

from __future__ import annotations

import torch
from torch import nn

from . import __version__
from .cache import cached_model, digest, recipe_key
from .data import TextTask, lm_batches
from .models import LSTMLanguageModel, RNNClassifier
from .train import fit, fit_language_model

__all__ = ["BASE_RECIPE", "LM_RECIPE", "base_classifier", "base_language_model"]


def _task_recipe(task) -> dict:
    """What identifies a classification task: its settings, loader settings and a digest of
    the training and validation examples and of the vocabulary."""
    splits = task.splits
    return {"settings": dict(task.settings),
            "batch_size": task.train.batch_size,
            "max_len": getattr(task.train.dataset, "max_len", None),
            "data": digest([[(e.text, e.label) for e in part] for part in (splits.train, splits.valid)]),
            "vocab": digest(task.vocab.itos)}


# The recipe of the course's base classifiers. Changing it changes the cache key.
BASE_RECIPE = {"embed_dim": 64, "hidden": 128, "dropout": 0.5, "epochs": 7, "lr": 2e-3, "weight_decay": 1e-5,
               "seed": 0}


def base_classifier(task: TextTask, kind: str = "lstm", pool: str = "last") -> tuple[nn.Module, dict]:
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
    recipe = {"model": "RNNClassifier", "kind": kind, "pool": pool, **r, "task": _task_recipe(task),
              "nlprune": __version__}
    key = recipe_key(f"clf-{kind}-{pool}", recipe)

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
              "stream": digest(train_stream.tolist()), "nlprune": __version__}
    key = recipe_key("lm-lstm", recipe)

    def build() -> nn.Module:
        torch.manual_seed(r["seed"])
        return LSTMLanguageModel(vocab_size, embed_dim=r["embed_dim"], hidden=r["hidden"], dropout=r["dropout"])

    def train_fn(model: nn.Module) -> list[dict[str, float]]:
        batches = lm_batches(train_stream, batch_size=r["batch_size"], bptt=r["bptt"])
        return fit_language_model(model, batches, epochs=r["epochs"], lr=r["lr"], seed=r["seed"],
                                  device=torch.device("cpu"), desc="base LM")

    model, info = cached_model(key, build, train_fn, recipe=recipe)
    return model.eval(), info
