from pathlib import Path

import pytest
import torch

from torch.utils.data import DataLoader

from nlprune import data, zoo


def _stub_fit(calls):
    def fit(model, *args, **kwargs):
        calls.append(kwargs.get("desc"))
        return [{"epoch": 1}]
    return fit


def test_base_classifier_cache_is_keyed_by_the_loader_settings(tmp_cache, monkeypatch):
    calls = []
    monkeypatch.setattr(zoo, "fit", _stub_fit(calls))
    default = data.make_loaders("en")
    other = data.make_loaders("en", max_len=16, batch_size=256)
    zoo.base_classifier(default)
    zoo.base_classifier(other)  # a different recipe: must train, not load the first model
    assert len(calls) == 2
    zoo.base_classifier(data.make_loaders("en"))  # the same recipe again: loads
    assert len(calls) == 2


def test_base_classifier_trains_once_then_loads_from_cache(tmp_cache, monkeypatch):
    monkeypatch.setitem(zoo.BASE_RECIPE, "epochs", 1)
    monkeypatch.setitem(zoo.BASE_RECIPE, "hidden", 8)
    monkeypatch.setitem(zoo.BASE_RECIPE, "embed_dim", 4)
    examples = [data.Example(t, int("good" in t)) for t in
                ["good film", "bad film", "very good", "very bad", "good good", "bad plot"] * 4]
    splits = data.Splits(train=examples[:16], valid=examples[16:20], test=examples[20:])
    vocab = data.Vocab(tok for e in splits.train for tok in data.tokenize_en(e.text))
    loader = lambda part: DataLoader(data.TextDataset(part, vocab, data.tokenize_en), batch_size=4,
                                     collate_fn=data.collate_padded)
    task = data.TextTask(splits, vocab, loader(splits.train), loader(splits.valid), loader(splits.test))
    model1, info1 = zoo.base_classifier(task, kind="gru")
    model2, info2 = zoo.base_classifier(task, kind="gru")
    assert not model1.training and not model2.training
    assert info1 == info2 and len(info1["result"]) == 1
    assert all(torch.equal(a, b) for a, b in zip(model1.state_dict().values(), model2.state_dict().values()))
    assert len(list(Path(tmp_cache).glob("clf-gru-*.pt"))) == 1
