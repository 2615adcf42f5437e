"""The Keras counterpart: masks equal nlprune's and TF-MOT's, stay applied through fit,
and gradient scores agree with finite differences."""
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("tf_keras")
tfmot = pytest.importorskip("tensorflow_model_optimization")

import torch  # noqa: E402

from nlprune import keras_prune, prune  # noqa: E402


def small_model(seed=0):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([
        keras.layers.Embedding(30, 6),
        keras.layers.LSTM(5),
        keras.layers.Dense(3),
    ])
    model.build((None, 7))
    return model


def data(n=32, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(1, 30, size=(n, 7)), rng.integers(0, 3, size=(n,))


def test_prunable_variables_are_the_matrices():
    names = list(keras_prune.prunable_variables(small_model()))
    assert len(names) == 4
    assert any("embeddings" in n for n in names) and any("recurrent_kernel" in n for n in names)
    with pytest.raises(TypeError):
        keras_prune.prunable_variables("not a model")


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_magnitude_masks_equal_nlprune_on_the_same_numbers(scope):
    model = small_model()
    masks = keras_prune.magnitude_masks(model, 0.7, scope=scope)
    scores = {n: torch.from_numpy(np.abs(v.numpy())) for n, v in keras_prune.prunable_variables(model).items()}
    ours = prune.compute_masks(scores, 0.7, scope=scope)
    assert all(np.array_equal(masks[n], ours[n].numpy()) for n in masks)


def test_masks_stay_applied_through_fit():
    model = small_model()
    masks = keras_prune.magnitude_masks(model, 0.8)
    model.compile(optimizer=keras.optimizers.Adam(0.05),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = data()
    before = {n: v.numpy().copy() for n, v in keras_prune.prunable_variables(model).items()}
    model.fit(x, y, epochs=2, batch_size=8, verbose=0, callbacks=[keras_prune.KeepMasks(masks)])
    for name, var in keras_prune.prunable_variables(model).items():
        w = var.numpy()
        assert np.all(w[~masks[name]] == 0), name
        assert not np.allclose(w[masks[name]], before[name][masks[name]]), name


def test_without_the_callback_pruned_weights_regrow():
    model = small_model()
    masks = keras_prune.magnitude_masks(model, 0.8)
    keras_prune.apply_masks(model, masks)
    model.compile(optimizer=keras.optimizers.Adam(0.05),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = data()
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    kernel = [v for n, v in keras_prune.prunable_variables(model).items() if "recurrent_kernel" in n][0]
    name = kernel.name
    assert np.mean(kernel.numpy()[~masks[name]] == 0) < 0.1


def test_apply_masks_bad_inputs():
    model = small_model()
    name = next(iter(keras_prune.prunable_variables(model)))
    with pytest.raises(ValueError, match="has shape"):
        keras_prune.apply_masks(model, {name: np.ones((2, 2), dtype=bool)})
    with pytest.raises(ValueError, match="names no weight"):
        keras_prune.apply_masks(model, {"nope:0": np.ones((2, 2), dtype=bool)})
    with pytest.raises(ValueError, match="does not have"):
        keras_prune.magnitude_masks(model, 0.5, names=["nope:0"])


def test_masks_equal_tfmot_prune_low_magnitude():
    keras.utils.set_random_seed(1)
    inner = keras.Sequential([keras.layers.Dense(16, input_shape=(10,)), keras.layers.Dense(4)])
    weights = [v.numpy().copy() for v in inner.weights]
    schedule = tfmot.sparsity.keras.ConstantSparsity(0.7, begin_step=0, frequency=1)
    pruned = tfmot.sparsity.keras.prune_low_magnitude(inner, pruning_schedule=schedule)
    pruned.compile(optimizer=keras.optimizers.SGD(0.0),  # lr 0: the weights do not move
                   loss=keras.losses.MeanSquaredError())
    x = np.random.default_rng(0).normal(size=(8, 10)).astype("float32")
    pruned.fit(x, np.zeros((8, 4), "float32"), epochs=1, batch_size=8, verbose=0,
               callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
    theirs = [v.numpy().astype(bool) for v in pruned.weights if "mask" in v.name]
    reference = keras.Sequential([keras.layers.Dense(16, input_shape=(10,)), keras.layers.Dense(4)])
    reference.set_weights(weights)
    ours = keras_prune.magnitude_masks(reference, 0.7)
    assert len(theirs) == len(ours) == 2
    for mask_tfmot, mask_ours in zip(theirs, ours.values()):
        assert np.array_equal(mask_tfmot, mask_ours)


def test_gradient_scores_match_finite_differences():
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    batches = [(rng.normal(size=(8, 5)).astype("float64"), rng.integers(0, 3, size=8)) for _ in range(2)]
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model = keras.Sequential([keras.layers.Dense(4, activation="tanh", input_shape=(5,), dtype="float64"),
                              keras.layers.Dense(3, dtype="float64")])
    grads = keras_prune.gradient_scores(model, batches, loss)
    taylor = keras_prune.taylor_scores(model, batches, loss)
    kernel = model.layers[0].kernel
    name = kernel.name

    def mean_loss():
        return np.mean([loss(y, model(x)).numpy() for x, y in batches])

    eps = 1e-6
    for idx in [(0, 0), (2, 3), (4, 1)]:
        w = kernel.numpy()
        up, down = w.copy(), w.copy()
        up[idx] += eps
        down[idx] -= eps
        kernel.assign(up)
        l_up = mean_loss()
        kernel.assign(down)
        l_down = mean_loss()
        kernel.assign(w)
        assert grads[name][idx] == pytest.approx(abs((l_up - l_down) / (2 * eps)), rel=1e-5, abs=1e-9)
        assert taylor[name][idx] == pytest.approx(abs(w[idx]) * grads[name][idx], rel=1e-9)
