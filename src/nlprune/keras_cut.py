"""The Keras counterpart of :mod:`nlprune.cut`: removing units of ``Dense`` and recurrent layers.

Keras stores kernels as inputs × outputs, the transpose of PyTorch, and stacks the gates along
the *columns*: ``LSTM`` kernels hold blocks ``[i, f, c, o]`` of ``units`` columns, ``GRU``
kernels ``[z, r, h]`` (note: not PyTorch's ``[r, z, n]``), ``SimpleRNN`` one block. A unit's
outgoing weights are its *row* of the recurrent kernel and its row of the next layer's kernel.

:func:`cut_units` works on ``keras.Sequential`` models: it rebuilds the model with fewer units
in one layer and copies the weights, cutting the next layer's inputs to match. Works with
Keras 2 (``tf-keras``). Importing this module sets ``TF_USE_LEGACY_KERAS=1`` and
``TF_CPP_MIN_LOG_LEVEL=2`` unless they are set already: import it before TensorFlow. It does not
import PyTorch.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

# Keras 2 (tf-keras) must be chosen before TensorFlow is imported, and its C++ start-up log is
# kept quiet; a value the caller set first wins.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tf_keras as keras  # noqa: E402

from . import _checks  # noqa: E402  (argument checks, and the check of `keep`, shared with PyTorch)

__all__ = ["keras_gate_count", "unit_norms", "cut_units"]

# Layers that may sit between the cut layer and the layer that reads its units: they act on
# each feature separately, so they keep the unit layout.
_ELEMENTWISE = (keras.layers.Dropout, keras.layers.Activation, keras.layers.ReLU)


def keras_gate_count(layer: keras.layers.Layer) -> int:
    """Column blocks per kernel: 1 (``Dense``, ``SimpleRNN``), 3 (``GRU``), 4 (``LSTM``).

    Raises ``ValueError`` for ``Bidirectional`` wrappers and ``TypeError`` for other layers.
    """
    if isinstance(layer, keras.layers.Bidirectional):
        raise ValueError(f"Bidirectional layers are not supported (layer {layer.name!r})")
    if isinstance(layer, keras.layers.LSTM):
        return 4
    if isinstance(layer, keras.layers.GRU):
        return 3
    if isinstance(layer, (keras.layers.SimpleRNN, keras.layers.Dense)):
        return 1
    raise TypeError(f"layer {layer.name!r} is a {type(layer).__name__}; units can be cut from Dense, "
                    "SimpleRNN, GRU and LSTM layers")


def _cut_own_units(layer: keras.layers.Layer, keep: np.ndarray) -> list[np.ndarray]:
    """The weights of ``layer`` restricted to the units in ``keep`` (every gate block)."""
    gates, units = keras_gate_count(layer), layer.units
    cols = np.concatenate([g * units + keep for g in range(gates)])
    weights = layer.get_weights()
    new = [weights[0][:, cols]]  # kernel: inputs × (gates · units)
    rest = weights[1:]
    if not isinstance(layer, keras.layers.Dense):
        new.append(rest[0][keep][:, cols])  # recurrent kernel: units × (gates · units)
        rest = rest[1:]
    if rest:  # bias: (gates · units,) or, for GRU with reset_after, (2, gates · units)
        new.append(rest[0][..., cols])
    return new


def unit_norms(model: keras.Sequential, layer_name: str, *, p: int | float = 2) -> np.ndarray:
    """The Lp norm of each unit's weights in layer ``layer_name``: its columns in every gate block
    of the kernel (and of the recurrent kernel), its row of the recurrent kernel (what it sends
    to the other units; the entries it sends to itself are counted once) and its row of the next
    weighted layer's kernel. The Keras counterpart of :func:`nlprune.scores.unit_norms`."""
    p = _checks.positive(p, "p")
    layer, reader = _layer_and_reader(model, layer_name)
    gates, units = keras_gate_count(layer), layer.units
    weights = [np.abs(w) ** p for w in layer.get_weights()]
    total = weights[0].reshape(-1, gates, units).sum(axis=(0, 1))
    if not isinstance(layer, keras.layers.Dense):
        recurrent = weights[1].reshape(units, gates, units)
        own = recurrent[np.arange(units), :, np.arange(units)].sum(axis=1)
        total = total + recurrent.sum(axis=(0, 1)) + recurrent.sum(axis=(1, 2)) - own
    if reader is not None:
        total = total + (np.abs(reader.get_weights()[0]) ** p).sum(axis=1)
    return total ** (1.0 / p)


def _layer_and_reader(model: keras.Sequential, layer_name: str
                      ) -> tuple[keras.layers.Layer, keras.layers.Layer | None]:
    """The layer to cut and the next weighted layer that reads its units (``None`` if last)."""
    if not isinstance(model, keras.Sequential):
        raise TypeError(f"model must be a tf_keras Sequential model, got {type(model).__name__}")
    names = [layer.name for layer in model.layers]
    if layer_name not in names:
        raise ValueError(f"layer_name {layer_name!r} is not a layer of the model; layers are {names}")
    position = names.index(layer_name)
    layer = model.layers[position]
    keras_gate_count(layer)
    for later in model.layers[position + 1:]:
        if later.weights:
            return layer, later
        if not isinstance(later, _ELEMENTWISE):
            raise ValueError(f"layer {later.name!r} ({type(later).__name__}) between {layer_name!r} and the "
                             "next weighted layer would mix units; only Dropout/Activation may sit there")
    return layer, None


def _cut_inputs(layer: keras.layers.Layer, keep: np.ndarray) -> list[np.ndarray]:
    """The weights of the layer reading the cut units, restricted to those inputs."""
    keras_gate_count(layer)
    weights = layer.get_weights()
    return [weights[0][keep]] + weights[1:]


def cut_units(model: keras.Sequential, layer_name: str, keep: Sequence[int]) -> keras.Sequential:
    """A new ``Sequential`` model in which layer ``layer_name`` keeps only the units in ``keep``.

    The next layer with weights (after any ``Dropout``/``Activation``) loses the matching
    inputs. When the dropped units' outgoing weights (rows of the recurrent kernel and of the
    next kernel) are zero, the new model computes the same outputs as the old one.
    """
    layer, reader = _layer_and_reader(model, layer_name)
    index = np.array(_checks.indices(keep, layer.units), dtype=np.int64)
    config = model.get_config()
    for entry in config["layers"]:
        if entry["config"]["name"] == layer_name:
            entry["config"]["units"] = int(index.size)
    new = keras.Sequential.from_config(config)
    new.build(model.input_shape)
    for old_layer, new_layer in zip(model.layers, new.layers):
        if old_layer is layer:
            new_layer.set_weights(_cut_own_units(layer, index))
        elif old_layer is reader:
            new_layer.set_weights(_cut_inputs(reader, index))
        else:
            new_layer.set_weights(old_layer.get_weights())
    return new
