"""The Keras counterpart of :mod:`nlprune.prune`: masks for Keras weights, kept through ``fit``.

Works with Keras 2 (the ``tf-keras`` package), which TensorFlow Model Optimization needs.
Importing this module sets ``TF_USE_LEGACY_KERAS=1`` and ``TF_CPP_MIN_LOG_LEVEL=2`` unless they
are set already, so import it before TensorFlow. Masks are chosen by the same rule as
in PyTorch — :func:`nlprune.prune.compute_masks` is called on the weights' scores — so the two
frameworks prune exactly the same entries of the same numbers.

Weights are addressed by their variable names (``"dense/kernel:0"``,
``"lstm/lstm_cell/recurrent_kernel:0"``, …). Keras stores a Dense kernel as inputs × outputs,
the transpose of PyTorch's ``nn.Linear.weight``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping

# Keras 2 (tf-keras) must be chosen before TensorFlow is imported, and its C++ start-up log is
# kept quiet; a value the caller set first wins.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402
import torch  # noqa: E402

from . import _checks  # noqa: E402
from .masks import compute_masks  # noqa: E402

__all__ = ["prunable_variables", "magnitude_masks", "apply_masks", "KeepMasks", "gradient_scores",
           "taylor_scores", "masks_from_scores"]


def prunable_variables(model: keras.Model) -> dict[str, tf.Variable]:
    """The weight matrices of ``model`` by name: trainable variables with two or more dimensions
    (Dense and RNN kernels, recurrent kernels, embeddings); biases are left out."""
    if not isinstance(model, (keras.Model, keras.layers.Layer)):
        raise TypeError(f"model must be a tf_keras Model or Layer, got {type(model).__name__}")
    return {v.name: v for v in model.trainable_weights if len(v.shape) >= 2}


def _select(model: keras.Model, names: Iterable[str] | None) -> dict[str, tf.Variable]:
    variables = prunable_variables(model)
    if names is None:
        return variables
    return {n: variables[n] for n in _checks.known_names(names, variables, "variables")}


def masks_from_scores(scores: Mapping[str, np.ndarray | tf.Tensor], sparsity: float, *,
                      scope: str = "layer") -> dict[str, np.ndarray]:
    """Boolean keep-masks (NumPy) from scores, by :func:`nlprune.prune.compute_masks`."""
    as_torch = {n: torch.from_numpy(np.asarray(s, dtype=np.float32)) for n, s in scores.items()}
    return {n: m.numpy() for n, m in compute_masks(as_torch, sparsity, scope=scope).items()}


def magnitude_masks(model: keras.Model, sparsity: float, *, scope: str = "layer",
                    names: Iterable[str] | None = None) -> dict[str, np.ndarray]:
    """Keep-masks that prune the ``round(sparsity * n)`` smallest ``|w|`` (per variable or global)."""
    return masks_from_scores({n: np.abs(v.numpy()) for n, v in _select(model, names).items()},
                             sparsity, scope=scope)


def apply_masks(model: keras.Model, masks: Mapping[str, np.ndarray]) -> keras.Model:
    """Assign ``w * mask`` to every masked variable and return ``model``.

    Raises:
        TypeError: a mask is not a boolean NumPy array.
        ValueError: a mask names no weight matrix of the model, or its shape differs.
    """
    variables = prunable_variables(model)
    for name, mask in masks.items():
        if not isinstance(mask, np.ndarray) or mask.dtype != np.bool_:
            raise TypeError(f"mask {name!r} must be a boolean NumPy array (True = keep), got "
                            f"{type(mask).__name__} of dtype {getattr(mask, 'dtype', None)}")
        _checks.mask_matches(name, mask.shape, variables[name].shape if name in variables else (),
                             variables, "weight matrix")
        var = variables[name]
        var.assign(tf.where(tf.constant(mask), var, tf.zeros_like(var)))
    return model


class KeepMasks(keras.callbacks.Callback):
    """Re-apply the masks after every training batch, so pruned weights stay exactly zero
    during ``model.fit`` (an optimizer step would otherwise move them: a zeroed weight still
    has a gradient). The masks are applied once when training begins."""

    def __init__(self, masks: Mapping[str, np.ndarray]) -> None:
        super().__init__()
        self.masks = dict(masks)

    def on_train_begin(self, logs: dict | None = None) -> None:
        apply_masks(self.model, self.masks)

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        apply_masks(self.model, self.masks)


def _mean_gradients(model: keras.Model, batches: Iterable, loss: Callable,
                    names: Iterable[str] | None) -> tuple[dict[str, tf.Variable], dict[str, tf.Tensor]]:
    variables = _select(model, names)
    totals = {n: tf.zeros_like(v) for n, v in variables.items()}
    count = 0
    for x, y in batches:
        with tf.GradientTape() as tape:
            value = loss(y, model(x, training=False))
        grads = tape.gradient(value, list(variables.values()))
        for n, g in zip(variables, grads):
            if g is not None:
                totals[n] += tf.convert_to_tensor(g)  # embeddings give IndexedSlices
        count += 1
    if count == 0:
        raise ValueError("batches is empty: the gradient needs at least one batch")
    return variables, {n: t / count for n, t in totals.items()}


def gradient_scores(model: keras.Model, batches: Iterable, loss: Callable,
                    names: Iterable[str] | None = None) -> dict[str, np.ndarray]:
    """``|g|`` of the mean loss over ``batches`` (pairs ``(x, y)``), computed with ``tf.GradientTape``.

    ``loss(y_true, y_pred)`` returns the mean loss of a batch, e.g.
    ``keras.losses.SparseCategoricalCrossentropy(from_logits=True)``.
    """
    _, grads = _mean_gradients(model, batches, loss, names)
    return {n: np.abs(g.numpy()) for n, g in grads.items()}


def taylor_scores(model: keras.Model, batches: Iterable, loss: Callable,
                  names: Iterable[str] | None = None) -> dict[str, np.ndarray]:
    """First-order Taylor scores ``|w * g|``, element by element (no product along a row)."""
    variables, grads = _mean_gradients(model, batches, loss, names)
    return {n: np.abs(variables[n].numpy() * g.numpy()) for n, g in grads.items()}
