import numpy as np
import pytest
import torch

from nlprune import data


@pytest.fixture(scope="module")
def en():
    return data.load_english_reviews()


def test_english_reviews_size_and_balance(en):
    assert 12_000 < len(en) < 13_500
    pos = sum(e.label for e in en) / len(en)
    assert 0.55 < pos < 0.60  # fresh is the majority class
    assert len({e.text for e in en}) == len(en)
    assert all(e.text.strip() for e in en)


def test_chinese_reviews_size_and_balance():
    zh = data.load_chinese_reviews()
    # the two files hold 35,123 lines but only 17,457 distinct ones; 47 lines stand in both
    assert 17_300 < len(zh) < 17_400
    pos = sum(e.label for e in zh) / len(zh)
    assert 0.46 < pos < 0.50
    assert len({e.text for e in zh}) == len(zh)


def test_hamlet_text():
    text = data.load_hamlet()
    assert text.startswith("ACT I")
    assert "To be, or not to be" in text


def test_splits_are_disjoint_complete_and_fixed(en):
    s = data.split_examples(en, seed=0)
    assert len(s.train) + len(s.valid) + len(s.test) == len(en)
    assert abs(len(s.valid) - 0.1 * len(en)) <= 1 and abs(len(s.test) - 0.1 * len(en)) <= 1
    texts = [{e.text for e in part} for part in (s.train, s.valid, s.test)]
    assert not (texts[0] & texts[1]) and not (texts[0] & texts[2]) and not (texts[1] & texts[2])
    again = data.split_examples(en, seed=0)
    assert again.test == s.test
    assert data.split_examples(en, seed=1).test != s.test


def test_split_label_balance(en):
    s = data.split_examples(en, seed=0)
    rate = sum(e.label for e in en) / len(en)
    for part in (s.train, s.valid, s.test):
        assert abs(sum(e.label for e in part) / len(part) - rate) < 0.03


@pytest.mark.parametrize("kwargs", [{"valid": 0.0}, {"test": 1.2}, {"valid": 0.6, "test": 0.5}])
def test_split_bad_fractions(kwargs):
    with pytest.raises(ValueError):
        data.split_examples(list(range(10)), **kwargs)


@pytest.mark.parametrize("n, kwargs, match", [
    (4, {}, r"valid=0.1 of 4 items leaves the validation split empty"),
    (4, {"valid": 0.25}, r"test=0.1 of 4 items leaves the test split empty"),
    (4, {"valid": 0.5, "test": 0.45}, r"valid \+ test leaves the training split empty"),
    (0, {}, r"valid=0.1 of 0 items"),
])
def test_split_refuses_an_empty_split(n, kwargs, match):
    with pytest.raises(ValueError, match=match):
        data.split_examples(list(range(n)), **kwargs)


def test_smallest_splits_that_are_not_empty():
    s = data.split_examples(list(range(5)), valid=0.2, test=0.2)
    assert (len(s.train), len(s.valid), len(s.test)) == (3, 1, 1)
    assert sorted(s.train + s.valid + s.test) == list(range(5))
    with pytest.raises(TypeError, match="valid must be a real number"):
        data.split_examples(list(range(10)), valid="0.1")


def test_tokenizers():
    assert data.tokenize_en("It's not bad -- GREAT!") == ["it's", "not", "bad", "-", "-", "great", "!"]
    assert data.tokenize_zh("很好 看！") == ["很", "好", "看", "！"]
    with pytest.raises(TypeError):
        data.tokenize_en(None)


def test_vocab():
    v = data.Vocab("a b b c c c".split(), min_freq=2)
    assert v.itos == ["<pad>", "<unk>", "c", "b"]
    assert v.encode(["c", "a", "zz"]) == [2, 1, 1]
    assert v.decode([3, 2]) == ["b", "c"]
    with pytest.raises(ValueError, match="min_freq"):
        data.Vocab([], min_freq=0)


def test_vocab_takes_numpy_integers_and_names_its_arguments():
    tokens = "a b b c c c".split()
    assert data.Vocab(tokens, min_freq=np.int64(2)).itos == data.Vocab(tokens, min_freq=2).itos
    assert data.Vocab(tokens, max_size=np.int64(3)).itos == ["<pad>", "<unk>", "c"]
    with pytest.raises(TypeError, match="min_freq must be an integer, got float"):
        data.Vocab(tokens, min_freq=2.0)
    with pytest.raises(ValueError, match="min_freq must be an integer >= 1, got 0"):
        data.Vocab(tokens, min_freq=0)
    with pytest.raises(ValueError, match="max_size must be None or an integer >= 2, got 1"):
        data.Vocab(tokens, max_size=1)
    with pytest.raises(TypeError, match="max_size must be an integer"):
        data.Vocab(tokens, max_size="3")


def test_collate_padded():
    ids, lengths, labels = data.collate_padded([([4, 5, 6], 1), ([7], 0)])
    assert ids.tolist() == [[4, 5, 6], [7, 0, 0]]
    assert lengths.tolist() == [3, 1] and labels.tolist() == [1, 0]


@pytest.mark.parametrize("corpus", ["en", "zh"])
def test_make_loaders(corpus):
    task = data.make_loaders(corpus, batch_size=32, max_len=40)
    ids, lengths, labels = next(iter(task.test))
    assert ids.shape[0] == 32 and ids.shape[1] == int(lengths.max()) <= 40
    assert set(labels.tolist()) <= {0, 1}
    assert len(task.train.dataset) == len(task.splits.train)
    # the vocabulary is built on the training split only
    train_tokens = {t for e in task.splits.train
                    for t in (data.tokenize_en if corpus == "en" else data.tokenize_zh)(e.text)}
    assert set(task.vocab.itos[2:]) <= train_tokens


def test_make_loaders_unknown_corpus():
    with pytest.raises(ValueError, match="corpus must be one of"):
        data.make_loaders("fr")


def test_missing_data_package_names_it():
    with pytest.raises(ModuleNotFoundError, match="no_such_data_pkg"):
        data.package_data_dir("no_such_data_pkg")


def test_lm_stream_and_batches():
    stream, vocab = data.lm_stream("to be or not\nto be", min_freq=1)
    assert vocab.decode(stream.tolist()) == ["to", "be", "or", "not", "<eos>", "to", "be", "<eos>"]
    batches = data.lm_batches(stream, batch_size=2, bptt=2)
    x, y = batches[0]
    assert x.shape == (2, 2) and torch.equal(x[:, 1], y[:, 0])
    with pytest.raises(ValueError):
        data.lm_batches(stream, batch_size=100, bptt=2)


def test_padded_arrays():
    vocab = data.Vocab("a b c d".split())
    ds = data.TextDataset([data.Example("a b c d", 1), data.Example("b", 0)], vocab, data.tokenize_en)
    x, y = data.padded_arrays(ds, 3)
    assert x.tolist() == [vocab.encode(["a", "b", "c"]), [vocab.stoi["b"], 0, 0]]
    assert y.tolist() == [1, 0] and str(x.dtype) == "int32"
    with pytest.raises(ValueError, match="length"):
        data.padded_arrays(ds, 0)


def test_integer_settings_name_the_argument():
    vocab = data.Vocab("a b".split())
    examples = [data.Example("a b", 1)]
    assert data.TextDataset(examples, vocab, data.tokenize_en, max_len=np.int64(1)).ids == [[vocab.stoi["a"]]]
    with pytest.raises(ValueError, match="max_len must be an integer >= 1, got 0"):
        data.TextDataset(examples, vocab, data.tokenize_en, max_len=0)
    with pytest.raises(TypeError, match="max_len must be an integer"):
        data.TextDataset(examples, vocab, data.tokenize_en, max_len=2.5)
    ds = data.TextDataset(examples, vocab, data.tokenize_en)
    with pytest.raises(TypeError, match="length must be an integer"):
        data.padded_arrays(ds, 2.5)
    stream = torch.arange(20)
    with pytest.raises(ValueError, match="bptt must be an integer >= 1, got 0"):
        data.lm_batches(stream, batch_size=2, bptt=0)
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1, got 0"):
        data.lm_batches(stream, batch_size=0, bptt=2)
    with pytest.raises(TypeError, match="batch_size must be an integer"):
        data.lm_batches(stream, batch_size=2.0, bptt=2)
