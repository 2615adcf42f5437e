import math

import pytest
import torch
from torch.utils.data import DataLoader

from nlprune import data, measure, models, prune, schedules, train
from nlprune.models import RNNClassifier


@pytest.mark.parametrize("kind", ["rnn", "gru", "lstm"])
def test_masked_weights_stay_zero_after_fine_tuning(kind, toy_loaders):
    train_dl, valid_dl = toy_loaders
    model = RNNClassifier(10, kind=kind, embed_dim=8, hidden=8)
    masks = prune.compute_masks(prune.magnitude_scores(model), 0.7)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    train.fit(model, train_dl, valid_dl, epochs=3, lr=1e-2, weight_decay=1e-3, masks=masks, progress=False)
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        assert torch.all(params[name][~mask] == 0), name
        # the kept weights did train
        assert not torch.equal(params[name][mask], before[name][mask]), name


def test_fit_learns_and_restores_best_validation_state(toy_loaders):
    train_dl, valid_dl = toy_loaders
    model = RNNClassifier(10, kind="gru", embed_dim=8, hidden=16)
    start = train.evaluate(model, valid_dl)["accuracy"]
    history = train.fit(model, train_dl, valid_dl, epochs=8, lr=2e-2, progress=False)
    final = train.evaluate(model, valid_dl)["accuracy"]
    assert final == max(r["valid_accuracy"] for r in history)
    assert final > max(start, 0.85)


def test_fit_is_deterministic_given_seed(toy_loaders):
    train_dl, valid_dl = toy_loaders
    states = []
    for _ in range(2):
        torch.manual_seed(1)
        model = RNNClassifier(10, kind="lstm", embed_dim=8, hidden=8, dropout=0.3)
        torch.rand(7)  # disturb the global generator: fit must reseed it
        train.fit(model, train_dl, epochs=2, progress=False, seed=3)
        states.append(model.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_fit_penalty_is_added_to_the_loss_it_minimises(toy_loaders):
    """A strong L1 penalty must shrink the weights that plain training leaves large: a penalty
    that was computed and then dropped would leave both runs equal."""
    train_dl, _ = toy_loaders
    norms = {}
    for strength in (0.0, 0.05):
        torch.manual_seed(0)
        model = RNNClassifier(10, kind="rnn", embed_dim=8, hidden=8)
        penalty = (lambda m, s=strength: prune.l1_penalty(m, s)) if strength else None
        train.fit(model, train_dl, epochs=3, lr=1e-2, penalty=penalty, progress=False)
        norms[strength] = sum(float(w.abs().sum()) for w in prune.magnitude_scores(model).values())
    assert norms[0.05] < 0.8 * norms[0.0]  # measured: 0.66


def test_fit_rejects_zero_epochs(toy_loaders):
    train_dl, _ = toy_loaders
    with pytest.raises(ValueError, match="epochs"):
        train.fit(RNNClassifier(10), train_dl, epochs=0)


def test_reproducible_rejects_bad_threads():
    with pytest.raises(ValueError, match="threads"):
        train.reproducible(0, threads=0)


def test_nlprune_threads_replaces_the_thread_count(monkeypatch):
    monkeypatch.setenv("NLPRUNE_THREADS", "1")
    train.reproducible(0, threads=2)
    assert torch.get_num_threads() == 1
    monkeypatch.setenv("NLPRUNE_THREADS", "two")
    with pytest.raises(ValueError, match="NLPRUNE_THREADS"):
        train.reproducible(0, threads=2)
    monkeypatch.delenv("NLPRUNE_THREADS")
    train.reproducible(0, threads=2)
    assert torch.get_num_threads() == 2


def test_default_device_follows_cuda_availability(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert train.default_device() == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert train.default_device() == torch.device("cuda")


def test_fit_trains_where_the_model_is_and_never_moves_it_unasked(toy_loaders, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU "present": fit must not move to it
    train_dl, valid_dl = toy_loaders
    model = RNNClassifier(10, kind="gru", embed_dim=4, hidden=4)
    train.fit(model, train_dl, valid_dl, epochs=1, progress=False)
    assert train.model_device(model) == torch.device("cpu")


def test_reproducible_seeds_generators():
    import random

    import numpy as np

    train.reproducible(5, threads=1)
    first = (random.random(), np.random.rand(), torch.rand(1).item(), torch.get_num_threads())
    train.reproducible(5, threads=1)
    assert (random.random(), np.random.rand(), torch.rand(1).item(), torch.get_num_threads()) == first
    assert first[3] == 1
    train.reproducible(0, threads=2)


def test_language_model_training_lowers_perplexity_and_keeps_masks(tmp_cache):
    text = "\n".join(["the cat sat on the mat", "the dog sat on the log"] * 20)
    stream, vocab = data.lm_stream(text, min_freq=1)
    batches = data.lm_batches(stream, batch_size=4, bptt=5)
    torch.manual_seed(0)
    lm = models.LSTMLanguageModel(len(vocab), embed_dim=8, hidden=16)
    before = train.perplexity(lm, batches)
    assert abs(before - len(vocab)) < 0.5 * len(vocab)   # an untrained model is near uniform
    masks = prune.compute_masks(prune.magnitude_scores(lm), 0.5)
    history = train.fit_language_model(lm, batches, epochs=15, lr=1e-2, masks=masks, progress=False)
    after = train.perplexity(lm, batches)
    assert after < 3 and after < history[0]["train_perplexity"]  # the text is almost deterministic
    for name, mask in masks.items():
        assert (lm.get_parameter(name)[~mask] == 0).all()
    # by hand: exp of the mean cross-entropy with the state carried across windows
    state, losses = None, []
    with torch.no_grad():
        for x, y in batches:
            logits, state = lm(x, state)
            losses.append(torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum"))
    assert abs(math.exp(sum(losses).item() / sum(y.numel() for _, y in batches)) - after) < 1e-3 * after
    with pytest.raises(ValueError, match="empty"):
        train.perplexity(lm, [])
    with pytest.raises(ValueError, match="epochs"):
        train.fit_language_model(lm, batches, epochs=0)


def test_language_model_training_runs_a_gradual_pruner():
    text = "\n".join(["the cat sat on the mat", "the dog sat on the log"] * 20)
    stream, vocab = data.lm_stream(text, min_freq=1)
    batches = data.lm_batches(stream, batch_size=4, bptt=5)
    torch.manual_seed(0)
    lm = models.LSTMLanguageModel(len(vocab), embed_dim=8, hidden=16)
    steps = []
    pruner = schedules.GradualPruner(lm, final=0.8, begin=0, end=len(batches), frequency=2)
    train.fit_language_model(lm, batches, epochs=2, pruner=pruner, on_step=steps.append, progress=False)
    assert steps == list(range(2 * len(batches)))  # global steps across epochs
    assert pruner.history[-1] == (len(batches), 0.8)
    prune.check_masks(lm, pruner.masks)
    table = measure.sparsity_table(lm, pruner.names)
    assert abs(table["sparsity"].iloc[-1] - 0.8) < 1e-3


def test_fit_restores_best_epoch_only_among_final_masks(toy_loaders):
    loader, _ = toy_loaders
    model = RNNClassifier(10, kind="lstm", embed_dim=8, hidden=8)
    pruner = schedules.GradualPruner(model, final=0.95, begin=0, end=len(loader) * 2, frequency=1)
    history = train.fit(model, loader, loader, epochs=4, lr=1e-2, pruner=pruner,
                        progress=False)
    assert len(history) == 4
    params = dict(model.named_parameters())
    for name, mask in pruner.masks.items():
        assert int((params[name] == 0).sum()) >= round(0.95 * mask.numel()), name


def test_fit_with_a_seed_trains_alike_and_leaves_the_callers_generator_alone(toy_loaders):
    train_dl, _ = toy_loaders
    states, after = [], []
    for disturb in (1, 50):
        torch.manual_seed(0)
        model = RNNClassifier(10, kind="gru", embed_dim=4, hidden=4, dropout=0.3)
        torch.rand(disturb)  # whatever ran before, fit(seed=...) trains the same model
        expected = torch.random.get_rng_state()
        train.fit(model, train_dl, epochs=1, progress=False, seed=7)
        assert torch.equal(torch.random.get_rng_state(), expected)  # the caller's state is back
        states.append(model.state_dict())
        after.append(torch.rand(3))
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    assert not torch.equal(after[0], after[1])  # the caller's sequences went on where each was


def test_fit_without_seed_draws_from_the_callers_generator(toy_loaders):
    train_dl, _ = toy_loaders
    results = []
    for seed in (0, 0, 1):
        torch.manual_seed(0)
        model = RNNClassifier(10, kind="gru", embed_dim=4, hidden=4, dropout=0.3)
        torch.manual_seed(seed)
        before = torch.random.get_rng_state()
        train.fit(model, train_dl, epochs=1, progress=False, seed=None)
        assert not torch.equal(torch.random.get_rng_state(), before)  # shuffling and dropout drew from it
        results.append(model.out.weight.detach().clone())
    assert torch.equal(results[0], results[1])  # the caller's seed decides the run
    assert not torch.equal(results[0], results[2])


def test_seeded_restores_the_state_also_when_the_block_raises():
    torch.manual_seed(3)
    before = torch.random.get_rng_state()
    with pytest.raises(RuntimeError):
        with train.seeded(0):
            torch.rand(5)
            raise RuntimeError("stop")
    assert torch.equal(torch.random.get_rng_state(), before)


def test_best_epoch_needs_the_same_masks_not_just_the_same_counts(toy_loaders):
    """Two mask sets with equal pruned counts are different models: an epoch trained under the
    first must not be restored when training ended under the second (review finding D5)."""
    loader, _ = toy_loaders
    torch.manual_seed(0)
    model = RNNClassifier(10, kind="gru", embed_dim=8, hidden=8)
    first = prune.compute_masks(prune.random_scores(model, seed=0), 0.5)
    second = prune.compute_masks(prune.random_scores(model, seed=1), 0.5)

    class Swap:
        """A pruner that uses `first` for the first two epochs, then `second` (same counts)."""

        def __init__(self):
            self.masks = dict(first)

        def __call__(self, step):
            if step == 2 * len(loader):
                self.masks.update(second)
                prune.apply_masks(model, self.masks)

    pruner = Swap()
    history = train.fit(model, loader, loader, epochs=3, lr=1e-2, pruner=pruner, progress=False)
    assert len(history) == 3
    prune.check_masks(model, second)  # whatever epoch was restored, it was trained under `second`


def test_fit_with_on_step_keeps_the_last_epoch(toy_loaders):
    """A callback's state is invisible to fit (a MovementPruner's scores): no earlier epoch may be
    restored under it."""
    loader, _ = toy_loaders
    torch.manual_seed(0)
    model = RNNClassifier(10, kind="gru", embed_dim=8, hidden=8)
    history = train.fit(model, loader, loader, epochs=3, lr=5e-2, on_step=lambda step: None, progress=False)
    assert train.evaluate(model, loader)["accuracy"] == pytest.approx(history[-1]["valid_accuracy"])


def test_evaluate_refuses_an_empty_loader():
    model = RNNClassifier(10, kind="gru", embed_dim=4, hidden=4)
    with pytest.raises(ValueError, match="no example"):
        train.evaluate(model, DataLoader([], batch_size=4, collate_fn=data.collate_padded))


def test_correct_predictions_are_the_examples_evaluate_counts(toy_loaders):
    _, ordered = toy_loaders
    torch.manual_seed(0)
    model = RNNClassifier(10, kind="gru", embed_dim=4, hidden=4)
    right = train.correct_predictions(model, ordered)
    assert right.dtype == torch.bool and right.numel() == len(ordered.dataset)
    assert right.float().mean().item() == pytest.approx(train.evaluate(model, ordered)["accuracy"])
    labels = torch.tensor([label for _, label in ordered.dataset])
    predicted = torch.cat([model(ids, lengths).argmax(-1) for ids, lengths, _ in ordered])
    assert torch.equal(right, predicted == labels)
