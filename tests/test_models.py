"""nlprune.models: the classifiers against packed sequences, padding, pooling and sampling."""

import numpy as np
import pytest
import torch
from torch import nn

from nlprune import models


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


def test_language_model_shapes():
    lm = models.LSTMLanguageModel(30, embed_dim=8, hidden=12)
    logits, (h, c) = lm(torch.randint(0, 30, (3, 7)))
    assert logits.shape == (3, 7, 30) and h.shape == (1, 3, 12) and c.shape == (1, 3, 12)


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


def test_sample_text_checks_its_numbers_and_restores_the_mode():
    from nlprune import data

    stream, vocab = data.lm_stream("to be or not to be", min_freq=1)
    torch.manual_seed(0)
    lm = models.LSTMLanguageModel(len(vocab), embed_dim=4, hidden=8)
    assert len(models.sample_text(lm, vocab, ["to"], words=np.int64(3))) == 3
    with pytest.raises(TypeError, match="words must be an integer"):
        models.sample_text(lm, vocab, ["to"], words=2.5)
    with pytest.raises(ValueError, match="words must be an integer >= 1"):
        models.sample_text(lm, vocab, ["to"], words=0)
    with pytest.raises(TypeError, match="temperature must be a real number"):
        models.sample_text(lm, vocab, ["to"], temperature="hot")

    class Broken(models.LSTMLanguageModel):
        def forward(self, ids, state=None):
            raise RuntimeError("broken")

    broken = Broken(len(vocab), embed_dim=4, hidden=8).train()
    with pytest.raises(RuntimeError, match="broken"):
        models.sample_text(broken, vocab, ["to"])
    assert broken.training  # the mode is restored on the error path too
