"""nlprune.keras_cut: cutting units of Keras Dense and recurrent layers, checked by equivalence."""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

keras = pytest.importorskip("tf_keras")

from nlprune import keras_cut  # noqa: E402

LAYERS = {"simple_rnn": (keras.layers.SimpleRNN, 1), "gru": (keras.layers.GRU, 3),
          "lstm": (keras.layers.LSTM, 4)}


def build(kind: str) -> keras.Sequential:
    keras.utils.set_random_seed(0)
    cls, _ = LAYERS[kind]
    model = keras.Sequential([keras.Input((5, 3)), cls(8, name="rec"), keras.layers.Dropout(0.3, name="drop"),
                              keras.layers.Dense(6, activation="relu", name="hidden"),
                              keras.layers.Dense(2, name="logits")])
    for layer in model.layers:  # non-zero biases, so the bias slicing is exercised
        layer.set_weights([w + 0.1 * np.random.default_rng(1).standard_normal(w.shape).astype(w.dtype)
                           for w in layer.get_weights()])
    return model


@pytest.mark.parametrize("kind", LAYERS)
def test_cut_recurrent_units_keeps_outputs(kind):
    model = build(kind)
    keep = [7, 2, 4]
    dropped = [i for i in range(8) if i not in keep]
    rec, hidden = model.get_layer("rec"), model.get_layer("hidden")
    kernel, recurrent, *bias = rec.get_weights()
    recurrent[dropped] = 0            # the dropped units send nothing to the recurrence ...
    rec.set_weights([kernel, recurrent, *bias])
    k, b = hidden.get_weights()
    k[dropped] = 0                    # ... nor to the next layer
    hidden.set_weights([k, b])
    x = np.random.default_rng(0).standard_normal((4, 5, 3)).astype("float32")
    small = keras_cut.cut_units(model, "rec", keep)
    assert small.get_layer("rec").units == 3 and model.get_layer("rec").units == 8
    np.testing.assert_allclose(small(x).numpy(), model(x).numpy(), rtol=1e-5, atol=1e-6)
    sub = keras.Model(model.inputs, model.get_layer("rec").output)
    small_sub = keras.Model(small.inputs, small.get_layer("rec").output)
    np.testing.assert_allclose(small_sub(x).numpy(), sub(x).numpy()[:, keep], rtol=1e-5, atol=1e-6)
    gates = LAYERS[kind][1]
    expected = gates * (3 * 3 + 3 * 3 + 3) + (gates * 3 if kind == "gru" else 0)  # GRU: 2 bias rows
    assert small.get_layer("rec").count_params() == expected


def test_cut_dense_units_keeps_outputs():
    model = build("lstm")
    keep = [0, 5]
    logits = model.get_layer("logits")
    k, b = logits.get_weights()
    k[[1, 2, 3, 4]] = 0
    logits.set_weights([k, b])
    x = np.random.default_rng(0).standard_normal((4, 5, 3)).astype("float32")
    small = keras_cut.cut_units(model, "hidden", keep)
    assert small.get_layer("logits").get_weights()[0].shape == (2, 2)
    np.testing.assert_allclose(small(x).numpy(), model(x).numpy(), rtol=1e-5, atol=1e-6)


def test_cut_units_rejects_bad_input():
    model = build("gru")
    with pytest.raises(ValueError, match="not a layer"):
        keras_cut.cut_units(model, "nope", [0])
    with pytest.raises(ValueError, match="empty"):
        keras_cut.cut_units(model, "rec", [])
    with pytest.raises(ValueError, match="duplicate"):
        keras_cut.cut_units(model, "rec", [1, 1])
    with pytest.raises(ValueError, match=r"\[0, 7\]"):
        keras_cut.cut_units(model, "rec", [8])
    with pytest.raises(TypeError, match="Dense, SimpleRNN, GRU and LSTM"):
        keras_cut.cut_units(model, "drop", [0])
    bi = keras.Sequential([keras.Input((5, 3)), keras.layers.Bidirectional(keras.layers.LSTM(4), name="bi"),
                           keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="Bidirectional"):
        keras_cut.cut_units(bi, "bi", [0])
    flat = keras.Sequential([keras.Input((5, 3)), keras.layers.Dense(4, name="d"), keras.layers.Flatten(),
                             keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="would mix units"):
        keras_cut.cut_units(flat, "d", [0])
    with pytest.raises(TypeError, match="Sequential"):
        keras_cut.cut_units(keras.Model(model.inputs, model.outputs), "rec", [0])


@pytest.mark.parametrize("kind", LAYERS)
def test_unit_norms_match_a_loop_over_each_units_weights(kind):
    model = build(kind)
    gates = LAYERS[kind][1]
    kernel, recurrent = model.get_layer("rec").get_weights()[:2]
    reader = model.get_layer("hidden").get_weights()[0]
    for p in (1, 2):
        expected = []
        for j in range(8):
            cols = [g * 8 + j for g in range(gates)]
            others = [c for c in range(gates * 8) if c not in cols]
            parts = [kernel[:, cols], recurrent[:, cols], recurrent[j, others], reader[j]]
            expected.append(np.linalg.norm(np.concatenate([x.ravel() for x in parts]), ord=p))
        np.testing.assert_allclose(keras_cut.unit_norms(model, "rec", p=p), expected, rtol=1e-5)
    dense_norms = keras_cut.unit_norms(model, "hidden")
    k_hidden, k_logits = model.get_layer("hidden").get_weights()[0], model.get_layer("logits").get_weights()[0]
    np.testing.assert_allclose(dense_norms, np.sqrt((k_hidden**2).sum(0) + (k_logits**2).sum(1)), rtol=1e-5)
    with pytest.raises(ValueError, match="p must be"):
        keras_cut.unit_norms(model, "rec", p=-1)
