import math
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from nlprune import data, measure, models, prune, train
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


def test_fit_penalty_is_added(toy_loaders):
    train_dl, _ = toy_loaders
    model = RNNClassifier(10, kind="rnn", embed_dim=8, hidden=8)
    calls = []

    def penalty(m):
        calls.append(1)
        return 0.0 * m.out.weight.sum()

    train.fit(model, train_dl, epochs=1, penalty=penalty, progress=False)
    assert len(calls) == len(train_dl)


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


def test_cached_model_writes_through_a_file_of_its_own(tmp_cache):
    # a file another process is still writing is neither read nor overwritten
    stranger = Path(tmp_cache) / "toy.pt.99999.tmp"
    stranger.write_bytes(b"half")
    train.cached_model("toy", lambda: torch.nn.Linear(3, 2), lambda m: None)
    assert stranger.read_bytes() == b"half"
    assert sorted(p.name for p in Path(tmp_cache).iterdir()) == ["toy.json", "toy.pt", "toy.pt.99999.tmp"]


def test_cached_model_trains_once_then_loads(tmp_cache):
    calls = []

    def build():
        torch.manual_seed(0)
        return torch.nn.Linear(3, 2)

    def train_fn(model):
        calls.append(1)
        with torch.no_grad():
            model.weight.fill_(0.5)
        return {"note": "trained"}

    m1, info1 = train.cached_model("toy", build, train_fn)
    m2, info2 = train.cached_model("toy", build, train_fn)
    assert calls == [1]
    assert torch.equal(m2.weight, torch.full((2, 3), 0.5))
    assert info1["result"] == info2["result"] == {"note": "trained"}
    with pytest.raises(ValueError, match="key"):
        train.cached_model("a/b", build, train_fn)


def test_default_device_is_cpu_without_cuda():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert train.default_device().type == expected


def test_reproducible_seeds_generators():
    import random

    import numpy as np

    train.reproducible(5, threads=1)
    first = (random.random(), np.random.rand(), torch.rand(1).item(), torch.get_num_threads())
    train.reproducible(5, threads=1)
    assert (random.random(), np.random.rand(), torch.rand(1).item(), torch.get_num_threads()) == first
    assert first[3] == 1
    train.reproducible(0, threads=2)


def test_base_classifier_trains_once_then_loads_from_cache(tmp_cache, monkeypatch):
    monkeypatch.setitem(train.BASE_RECIPE, "epochs", 1)
    monkeypatch.setitem(train.BASE_RECIPE, "hidden", 8)
    monkeypatch.setitem(train.BASE_RECIPE, "embed_dim", 4)
    examples = [data.Example(t, int("good" in t)) for t in
                ["good film", "bad film", "very good", "very bad", "good good", "bad plot"] * 4]
    splits = data.Splits(train=examples[:16], valid=examples[16:20], test=examples[20:])
    vocab = data.Vocab(tok for e in splits.train for tok in data.tokenize_en(e.text))
    loader = lambda part: DataLoader(data.TextDataset(part, vocab, data.tokenize_en), batch_size=4,
                                     collate_fn=data.collate_padded)
    task = data.TextTask(splits, vocab, loader(splits.train), loader(splits.valid), loader(splits.test))
    model1, info1 = train.base_classifier(task, kind="gru")
    model2, info2 = train.base_classifier(task, kind="gru")
    assert not model1.training and not model2.training
    assert info1 == info2 and len(info1["result"]) == 1
    assert all(torch.equal(a, b) for a, b in zip(model1.state_dict().values(), model2.state_dict().values()))
    assert len(list(Path(tmp_cache).glob("clf-gru-*.pt"))) == 1


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


def test_store_and_load_results_need_the_same_recipe_and_version(tmp_cache, monkeypatch):
    rows = [{"schedule": "gradual", "seed": 0, "test accuracy": 0.76}]
    recipe = {"base": "clf-lstm-abc", "sparsity": 0.9, "seeds": [0]}
    assert train.load_results("schedules", recipe) is None  # nothing stored yet
    path = train.store_results("schedules", recipe, rows)
    assert str(path.parent) == tmp_cache and path.name.startswith("results-schedules-")
    assert train.load_results("schedules", recipe) == rows
    assert train.load_results("schedules", {**recipe, "sparsity": 0.8}) is None
    assert train.load_results("other", recipe) is None
    monkeypatch.setattr(train, "__version__", "0.0.0-other")
    assert train.load_results("schedules", recipe) is None  # another package version


def test_language_model_training_runs_a_gradual_pruner():
    text = "\n".join(["the cat sat on the mat", "the dog sat on the log"] * 20)
    stream, vocab = data.lm_stream(text, min_freq=1)
    batches = data.lm_batches(stream, batch_size=4, bptt=5)
    torch.manual_seed(0)
    lm = models.LSTMLanguageModel(len(vocab), embed_dim=8, hidden=16)
    steps = []
    pruner = prune.GradualPruner(lm, final=0.8, begin=0, end=len(batches), frequency=2)
    train.fit_language_model(lm, batches, epochs=2, masks=pruner.masks,
                             on_step=lambda s: (steps.append(s), pruner(s)), progress=False)
    assert steps == list(range(2 * len(batches)))  # global steps across epochs
    assert pruner.history[-1] == (len(batches), 0.8)
    prune.check_masks(lm, pruner.masks)
    table = measure.sparsity_table(lm, pruner.names)
    assert abs(table["sparsity"].iloc[-1] - 0.8) < 1e-3
