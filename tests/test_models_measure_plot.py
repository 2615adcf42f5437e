import matplotlib.pyplot as plt
import pytest
import torch
from torch import nn

from nlprune import measure, models, plot


def test_classifiers_output_shapes_and_ignore_padding():
    ids = torch.tensor([[4, 5, 6, 0, 0], [7, 8, 0, 0, 0]])
    lengths = torch.tensor([3, 2])
    for m in (models.BowMLP(10), models.RNNClassifier(10, kind="gru"), models.RNNClassifier(10, kind="lstm")):
        m.eval()
        out = m(ids, lengths)
        assert out.shape == (2, 2)
        # trailing padding must not change the result
        assert torch.allclose(m(ids[:, :3], lengths), out, atol=1e-6)


@pytest.mark.parametrize("kind", ["rnn", "gru", "lstm"])
def test_rnn_classifier_matches_packed_sequences_and_their_gradients(kind):
    """The classifier runs its RNN over the padded batch; its vectors and gradients are those of
    PyTorch's packed sequences, which never see the padding."""
    torch.manual_seed(0)
    ids = torch.tensor([[4, 5, 6, 2, 0, 0], [7, 8, 0, 0, 0, 0], [3, 9, 9, 9, 9, 1]])
    lengths = torch.tensor([4, 2, 6])
    m = models.RNNClassifier(10, kind=kind, embed_dim=4, hidden=6, num_layers=2)
    loss = m(ids, lengths).logsumexp(-1).sum()
    grads = torch.autograd.grad(loss, list(m.parameters()))

    packed = nn.utils.rnn.pack_padded_sequence(m.embedding(ids), lengths, batch_first=True, enforce_sorted=False)
    _, state = m.rnn(packed)
    top = (state[0] if kind == "lstm" else state)[-1]
    torch.testing.assert_close(m.features(ids, lengths), top)
    reference = torch.autograd.grad(m.out(top).logsumexp(-1).sum(), list(m.parameters()))
    for g, r in zip(grads, reference):
        torch.testing.assert_close(g, r)


@pytest.mark.parametrize("lengths, match", [([3, 0], "between 1 and 5"), ([3, 6], "between 1 and 5"),
                                             ([3], "one length per sequence")])
def test_rnn_classifier_rejects_bad_lengths(lengths, match):
    ids = torch.tensor([[4, 5, 6, 0, 0], [7, 8, 0, 0, 0]])
    with pytest.raises(ValueError, match=match):
        models.RNNClassifier(10)(ids, torch.tensor(lengths))


def test_valid_steps():
    assert models.valid_steps(torch.tensor([2, 1]), 3).tolist() == [[True, True, False], [True, False, False]]


def test_rnn_classifier_unknown_kind():
    with pytest.raises(ValueError, match="kind must be one of"):
        models.RNNClassifier(10, kind="transformer")


def test_language_model_shapes():
    lm = models.LSTMLanguageModel(30, embed_dim=8, hidden=12)
    logits, (h, c) = lm(torch.randint(0, 30, (3, 7)))
    assert logits.shape == (3, 7, 30) and h.shape == (1, 3, 12) and c.shape == (1, 3, 12)


def test_counts_and_sparsity_table():
    m = nn.Linear(4, 3)
    with torch.no_grad():
        m.weight[0].zero_()
    assert measure.count_parameters(m) == 15
    assert measure.count_nonzero(m) == 15 - 4 - int((m.bias == 0).sum())
    table = measure.sparsity_table(m, ["weight"]).set_index("tensor")
    assert table.loc["weight", "zeros"] == 4 and table.loc["total", "sparsity"] == pytest.approx(4 / 12)
    with pytest.raises(ValueError):
        measure.sparsity_table(m, ["nope"])


def test_size_on_disk_compresses_zeros():
    m = nn.Linear(200, 200)
    dense = measure.size_on_disk(m)
    with torch.no_grad():
        m.weight.mul_(torch.rand_like(m.weight) > 0.9)
    sparse = measure.size_on_disk(m)
    assert abs(sparse["dense"] - dense["dense"]) < 64  # zeros cost the same uncompressed
    assert sparse["compressed"] < 0.4 * dense["compressed"]


def test_median_latency():
    t = measure.median_latency(lambda: sum(range(1000)), repeats=5, warmup=1)
    assert 0 < t < 0.1
    with pytest.raises(ValueError):
        measure.median_latency(lambda: None, repeats=0)
    with pytest.raises(ValueError, match="threads"):
        measure.median_latency(lambda: None, threads=0)


def test_median_latency_sets_and_restores_threads():
    torch.set_num_threads(2)
    seen = []
    measure.median_latency(lambda: seen.append(torch.get_num_threads()), repeats=2, warmup=0, threads=1)
    assert seen == [1, 1] and torch.get_num_threads() == 2


def test_check_timing_prints_a_note_or_raises_when_strict(monkeypatch, capsys):
    import numpy as np

    monkeypatch.delenv("NLPRUNE_STRICT_TIMING", raising=False)
    measure.check_timing(True, "fast")
    assert capsys.readouterr().out == ""
    measure.check_timing(False, "fast")
    assert '"fast" does not hold' in capsys.readouterr().out
    monkeypatch.setenv("NLPRUNE_STRICT_TIMING", "1")
    measure.check_timing(np.float64(2.0) > 1.7, "fast")  # NumPy's bool: no error
    with pytest.raises(AssertionError, match="fast"):
        measure.check_timing(False, "fast")
    with pytest.raises(TypeError, match="holds"):
        measure.check_timing(1.7, "fast")
    with pytest.raises(TypeError, match="claim"):
        measure.check_timing(True, 3)


def test_plots():
    axes = plot.weight_histograms({"a": torch.randn(100), "b": torch.randn(5, 5)})
    assert [ax.get_title() for ax in axes] == ["a", "b"]
    ax = plot.sparsity_accuracy({"x": ([0.5, 0.9], [0.7, 0.6])}, dense=0.75, baseline=0.57)
    assert ax.get_xlabel().startswith("sparsity") and len(ax.lines) == 3
    with pytest.raises(ValueError):
        plot.sparsity_accuracy({"x": ([0.5], [0.7, 0.6])})
    with pytest.raises(ValueError):
        plot.weight_histograms({})
    plt.close("all")


def test_seed_summary_groups_and_measures_spread():
    import pandas as pd

    runs = pd.DataFrame({"schedule": ["g", "g", "g", "o", "o", "o"], "sparsity": [0.9] * 6,
                         "accuracy": [0.76, 0.75, 0.77, 0.70, 0.73, 0.71]})
    table = measure.seed_summary(runs, ["schedule", "sparsity"], "accuracy")
    assert table.loc[("g", 0.9), "mean"] == pytest.approx(0.76)
    assert table.loc[("o", 0.9), "sd"] == pytest.approx(0.0152753, rel=1e-4)  # sample sd (n - 1)
    assert table.loc[("o", 0.9), "min"] == 0.70 and table.loc[("g", 0.9), "max"] == 0.77
    assert list(table["runs"]) == [3, 3]
    assert list(table.index.get_level_values(0)) == ["g", "o"]  # order of first appearance
    with pytest.raises(ValueError, match="acc"):
        measure.seed_summary(runs, "schedule", "acc")
    with pytest.raises(TypeError, match="runs"):
        measure.seed_summary(runs.to_dict(), "schedule", "accuracy")


def test_clearly_above_needs_ranges_that_do_not_overlap():
    assert measure.clearly_above([0.76, 0.75], [0.74, 0.70])
    assert not measure.clearly_above([0.76, 0.75], [0.75, 0.70])  # a tie at the edge is no order
    assert not measure.clearly_above([0.70], [0.80])
    with pytest.raises(ValueError, match="at least one"):
        measure.clearly_above([], [0.5])


def test_rnn_classifier_pooling_over_the_sequence_own_steps():
    torch.manual_seed(0)
    ids = torch.tensor([[4, 5, 6, 0, 0], [7, 8, 0, 0, 0]])
    lengths = torch.tensor([3, 2])
    for pool in ("max", "mean"):
        m = models.RNNClassifier(10, kind="lstm", embed_dim=4, hidden=6, pool=pool).eval()
        # the hidden states of each sequence alone, without padding
        states = [m.rnn(m.embedding(ids[i:i + 1, :n]))[0][0] for i, n in enumerate(lengths.tolist())]
        expected = torch.stack([s.max(0).values if pool == "max" else s.mean(0) for s in states])
        assert torch.allclose(m.features(ids, lengths), expected, atol=1e-6)
        assert torch.allclose(m(ids[:, :3], lengths), m(ids, lengths), atol=1e-6)  # padding ignored
    last = models.RNNClassifier(10, kind="gru", embed_dim=4, hidden=6).eval()
    assert last.pool == "last"
    with pytest.raises(ValueError, match="pool must be one of"):
        models.RNNClassifier(10, pool="sum")


def test_results_table_measures_every_model():
    torch.manual_seed(0)
    dense, pruned = nn.Linear(50, 50), nn.Linear(50, 50)
    with torch.no_grad():
        pruned.weight[:, 25:] = 0
    calls = []
    table = measure.results_table({"dense": dense, "pruned": pruned},
                                  lambda m: calls.append(m) or m(torch.ones(1, 50)),
                                  {"dense": 0.9, "pruned": 0.8}, metric_name="exact match", repeats=4)
    assert list(table.index) == ["dense", "pruned"]
    assert table.loc["dense", "nonzeros"] == 2550 and table.loc["pruned", "nonzeros"] == 2550 - 1250
    assert (table["parameters"] == 2550).all()
    assert table.loc["pruned", "gzip (KB)"] < table.loc["dense", "gzip (KB)"]
    assert table.loc["pruned", "exact match"] == 0.8 and (table["latency (ms)"] > 0).all()
    assert len(calls) == 2 * (4 + 3)  # repeats + warm-up calls per model
    with pytest.raises(ValueError, match="metric must have the names"):
        measure.results_table({"dense": dense}, lambda m: m, {"other": 1.0})
    with pytest.raises(ValueError, match="models is empty"):
        measure.results_table({}, lambda m: m, {})


def test_text_degradation_measures():
    scores = measure.text_degradation("the king the king the king <unk>".split(),
                                      "long live the king".split(), n=2)
    assert scores["repeated n-grams"] == 5 / 6  # "the king" x3 and "king the" x2 of 6 bigrams
    assert scores["distinct words"] == 3 / 7 and scores["unknown"] == 1 / 7
    assert scores["copied n-grams"] == 3 / 6  # only "the king" occurs in the training text
    with pytest.raises(ValueError, match="at least n=3"):
        measure.text_degradation(["a", "b"], ["a"], n=3)


def test_sample_text_is_seeded_and_checks_input():
    from nlprune import data

    stream, vocab = data.lm_stream("to be or not to be that is the question", min_freq=1)
    torch.manual_seed(0)
    lm = models.LSTMLanguageModel(len(vocab), embed_dim=4, hidden=8)
    a = models.sample_text(lm, vocab, ["to", "be"], words=12, seed=3)
    assert a == models.sample_text(lm, vocab, ["to", "be"], words=12, seed=3)
    assert len(a) == 12 and set(a) <= set(vocab.itos)
    greedy = models.sample_text(lm, vocab, ["to"], words=5, temperature=1e-4, seed=1)
    assert greedy == models.sample_text(lm, vocab, ["to"], words=5, temperature=1e-4, seed=2)
    with pytest.raises(ValueError, match="temperature"):
        models.sample_text(lm, vocab, ["to"], temperature=0)
    with pytest.raises(ValueError, match="prompt"):
        models.sample_text(lm, vocab, [])


def test_style_results_formats_every_column():
    table = measure.results_table({"m": nn.Linear(3000, 1)}, lambda m: m(torch.ones(1, 3000)),
                                  {"m": 0.123456}, repeats=2)
    html = measure.style_results(table, digits=3).to_html()
    assert "3,001" in html and "0.123" in html and "0.1235" not in html
