import json
import threading
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from nlprune import cache


def test_cached_model_stores_and_checks_the_recipe(tmp_cache):
    def build():
        torch.manual_seed(0)
        return nn.Linear(3, 2)

    recipe = {"lr": 0.1, "epochs": 1}
    model, info = cache.cached_model("toy", build, lambda m: "trained", recipe=recipe)
    assert info["recipe"] == recipe
    stored = json.loads(next(p for p in cache.cache_dir().glob("toy*.json")).read_text())
    assert stored["recipe"] == recipe
    again, _ = cache.cached_model("toy", build, lambda m: pytest.fail("must load"), recipe=recipe)
    assert torch.equal(again.weight, model.weight)
    # a file whose stored recipe is not the one asked for is not used silently
    path = next(p for p in cache.cache_dir().glob("toy*.json"))
    stored["recipe"] = {"lr": 0.2, "epochs": 1}
    path.write_text(json.dumps(stored))
    with pytest.raises(ValueError, match="recipe"):
        cache.cached_model("toy", build, lambda m: "trained", recipe=recipe)


def test_cached_model_writes_through_a_file_of_its_own(tmp_cache):
    # a file another process is still writing is neither read nor overwritten
    stranger = Path(tmp_cache) / "toy.pt.99999.tmp"
    stranger.write_bytes(b"half")
    cache.cached_model("toy", lambda: torch.nn.Linear(3, 2), lambda m: None)
    assert stranger.read_bytes() == b"half"
    assert sorted(p.name for p in Path(tmp_cache).iterdir()) == [
        "toy.json", "toy.lock", "toy.pt", "toy.pt.99999.tmp"]


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

    m1, info1 = cache.cached_model("toy", build, train_fn)
    m2, info2 = cache.cached_model("toy", build, train_fn)
    assert calls == [1]
    assert torch.equal(m2.weight, torch.full((2, 3), 0.5))
    assert info1["result"] == info2["result"] == {"note": "trained"}
    with pytest.raises(ValueError, match="key"):
        cache.cached_model("a/b", build, train_fn)


@pytest.mark.skipif(cache.fcntl is None, reason="no file locks on this system")
def test_two_at_once_train_once(tmp_cache):
    # two notebooks asking for the same uncached model at once: one trains, the other waits and
    # loads what it stored
    calls, results = [], []

    def train_fn(model):
        calls.append(1)
        time.sleep(0.5)  # the second caller arrives while the first is training
        with torch.no_grad():
            model.weight.fill_(0.25)

    def ask():
        model, _ = cache.cached_model("toy", lambda: torch.nn.Linear(3, 2), train_fn)
        results.append(model.weight.detach().clone())

    threads = [threading.Thread(target=ask) for _ in range(2)]
    threads[0].start()
    time.sleep(0.1)
    threads[1].start()
    for thread in threads:
        thread.join()
    assert calls == [1]
    assert len(results) == 2 and all(torch.equal(w, torch.full((2, 3), 0.25)) for w in results)


def test_store_and_load_results_need_the_same_recipe_and_version(tmp_cache, monkeypatch):
    rows = [{"schedule": "gradual", "seed": 0, "test accuracy": 0.76}]
    recipe = {"base": "clf-lstm-abc", "sparsity": 0.9, "seeds": [0]}
    assert cache.load_results("schedules", recipe) is None  # nothing stored yet
    path = cache.store_results("schedules", recipe, rows)
    assert str(path.parent) == tmp_cache and path.name.startswith("results-schedules-")
    assert cache.load_results("schedules", recipe) == rows
    assert cache.load_results("schedules", {**recipe, "sparsity": 0.8}) is None
    assert cache.load_results("other", recipe) is None
    monkeypatch.setattr(cache, "__version__", "0.0.0-other")
    assert cache.load_results("schedules", recipe) is None  # another package version
