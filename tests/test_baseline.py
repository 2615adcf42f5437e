import numpy as np
import pytest
import torch

from nlprune import baseline, data


def test_ngrams_and_vocab():
    assert baseline.ngrams(["a", "b", "c"], (1, 3)) == ["a", "b", "c", "a b c"]
    with pytest.raises(ValueError, match="orders"):
        baseline.ngrams(["a"], (0,))
    vocab = baseline.NgramVocab(["a b", "a b", "c"], str.split, orders=(1, 2), min_freq=2)
    assert set(vocab.index) == {"a", "b", "a b"} and len(vocab) == 4
    assert vocab.encode("c d") == [0]  # no known n-gram: the reserved id


def test_linear_classifier_is_a_linear_model_on_ngram_counts():
    torch.manual_seed(0)
    model = baseline.LinearNgramClassifier(6, num_classes=3)
    torch.nn.init.normal_(model.weights.weight)
    texts = [[1, 1, 4], [2, 5]]  # n-gram 1 occurs twice in the first text
    ids = torch.tensor([i for t in texts for i in t])
    offsets = torch.tensor([0, 3])
    counts = torch.zeros(2, 6)
    for row, t in enumerate(texts):
        for i in t:
            counts[row, i] += 1
    expected = counts @ model.weights.weight + model.bias
    assert torch.allclose(model(ids, offsets), expected, atol=1e-6)


def test_fit_ngram_baseline_learns_a_bigram_rule():
    # every word occurs equally often in both classes: only the bigrams decide
    texts = [("very good", 1), ("not bad", 1), ("very bad", 0), ("not good", 0)] * 18
    examples = [data.Example(t, y) for t, y in texts]
    splits = data.Splits(train=examples[:48], valid=examples[48:60], test=examples[60:])
    unigrams = baseline.fit_ngram_baseline(splits, str.split, orders=(1,), min_freq=1, epochs=20)
    bigrams = baseline.fit_ngram_baseline(splits, str.split, orders=(1, 2), min_freq=1, epochs=20)
    assert bigrams["test_accuracy"] == 1.0
    assert unigrams["test_accuracy"] <= 0.75
    assert bigrams["features"] > unigrams["features"]
    assert bigrams["parameters"] == 2 * (bigrams["features"] + 1) + 2
    with pytest.raises(ValueError, match="l2_strengths"):
        baseline.fit_ngram_baseline(splits, str.split, l2_strengths=())
    with pytest.raises(ValueError, match="epochs"):
        baseline.fit_ngram_baseline(splits, str.split, epochs=0)
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1, got 0"):
        baseline.fit_ngram_baseline(splits, str.split, batch_size=0)
    with pytest.raises(TypeError, match="batch_size must be an integer"):
        baseline.fit_ngram_baseline(splits, str.split, batch_size=16.0)


def test_ngram_vocab_checks_min_freq():
    assert set(baseline.NgramVocab(["a b", "a"], str.split, orders=(1,), min_freq=np.int64(2)).index) == {"a"}
    with pytest.raises(ValueError, match="min_freq must be an integer >= 1, got 0"):
        baseline.NgramVocab(["a b"], str.split, min_freq=0)
    with pytest.raises(TypeError, match="min_freq must be an integer"):
        baseline.NgramVocab(["a b"], str.split, min_freq=1.5)
