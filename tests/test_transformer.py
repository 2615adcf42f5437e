import copy
import numpy as np
import pytest
import torch
from torch import nn

from nlprune import transformer as tr


@pytest.fixture(scope="module")
def minilm():
    return tr.load_minilm()


@pytest.fixture(scope="module")
def batch():
    return tr.Tokenizer()(["A gripping, beautifully acted film.", "Dull and far too long; I left early."])


def test_forward_matches_transformers(minilm, batch):
    from transformers import AutoModel

    ids, mask = batch
    reference = AutoModel.from_pretrained(str(tr.model_dir())).eval()
    with torch.no_grad():
        ours = minilm(ids, mask)
        theirs = reference(input_ids=ids, attention_mask=mask).last_hidden_state
    assert (ours - theirs).abs().max() < 1e-4  # measured: about 2e-6
    assert tr.mean_pool(ours, mask).shape == (2, 384)


def test_hub_is_offline_after_import():
    import os

    assert os.environ["HF_HUB_OFFLINE"] == "1" and os.environ["TRANSFORMERS_OFFLINE"] == "1"


def test_batches_keep_order_and_labels():
    from nlprune.data import Example

    tokenizer = tr.Tokenizer(max_len=16)
    examples = [Example(text, i % 2) for i, text in enumerate(["Good.", "A long, dull film.", "Bad.",
                                                             "Fine", "Superb acting."])]
    batches = tokenizer.batches(examples, size=2)
    assert [len(y) for *_, y in batches] == [2, 2, 1]
    assert torch.cat([y for *_, y in batches]).tolist() == [0, 1, 0, 1, 0]
    ids, mask, _ = batches[0]
    assert torch.equal(ids, tokenizer(["Good.", "A long, dull film."])[0])
    assert mask.sum(1).tolist() == [4, 8]  # [CLS] good . [SEP]; [CLS] a long , dull film . [SEP]
    with pytest.raises(ValueError, match="size"):
        tokenizer.batches(examples, size=0)
    with pytest.raises(TypeError, match="size"):
        tokenizer.batches(examples, size=2.5)


def test_chinese_is_mostly_unknown():
    tokens = tr.Tokenizer().tokens("这部电影很好看")
    assert tokens.count("[UNK]") >= 5


def gated_outputs(model, ids, mask, head_zero=None, ffn_zero=None):
    model = copy.deepcopy(model)
    with torch.no_grad():
        for i, heads in (head_zero or {}).items():
            model.layers[i].head_gate[heads] = 0
        for i, units in (ffn_zero or {}).items():
            model.layers[i].ffn_gate[units] = 0
        return model(ids, mask)


def test_cut_heads_and_units_equal_the_gated_model(minilm, batch):
    ids, mask = batch
    keep_heads = {0: [0, 3, 5], 4: [11]}
    drop = {i: [h for h in range(12) if h not in k] for i, k in keep_heads.items()}
    cut = tr.cut_heads(minilm, keep_heads)
    assert cut.layers[0].heads == 3 and cut.layers[0].query.out_features == 96
    assert cut.layers[4].output.in_features == 32 and cut.layers[1].heads == 12
    with torch.no_grad():
        torch.testing.assert_close(cut(ids, mask), gated_outputs(minilm, ids, mask, head_zero=drop),
                                   atol=1e-5, rtol=1e-5)
    keep_units = {2: list(range(0, 1536, 3))}
    drop_units = {2: [u for u in range(1536) if u % 3]}
    cut = tr.cut_ffn_units(minilm, keep_units)
    assert cut.layers[2].ffn_in.out_features == 512
    with torch.no_grad():
        torch.testing.assert_close(cut(ids, mask), gated_outputs(minilm, ids, mask, ffn_zero=drop_units),
                                   atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="empty"):
        tr.cut_heads(minilm, {0: []})
    with pytest.raises(ValueError, match="layers 0..5"):
        tr.cut_ffn_units(minilm, {6: [0]})


class ToyAttention(nn.Module):
    """Gated multi-head self-attention whose loss is linear in the gates."""

    def __init__(self, heads=4, dim=3):
        super().__init__()
        self.heads, self.dim = heads, dim
        self.qkv = nn.Linear(heads * dim, 3 * heads * dim)
        self.gate = nn.Parameter(torch.ones(heads), requires_grad=False)

    def forward(self, x):
        b, t, _ = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, self.dim).permute(2, 0, 3, 1, 4)
        heads = torch.softmax(q @ k.transpose(-1, -2), -1) @ v
        return (heads * self.gate[None, :, None, None]).sum((0, 2, 3))  # one number per head, summed


def test_gate_importance_equals_brute_force_head_removal_for_a_linear_loss():
    torch.manual_seed(0)
    toy = ToyAttention().double()
    weights = torch.randn(4, dtype=torch.double)
    batches = [torch.randn(2, 5, 12, dtype=torch.double) for _ in range(3)]

    def loss_fn(model, x):
        return (model(x) * weights).sum()

    (scores,) = tr._gate_importance(toy, [toy.gate], batches, loss_fn)
    brute = torch.zeros(4, dtype=torch.double)
    for x in batches:
        full = loss_fn(toy, x)
        for h in range(4):
            with torch.no_grad():
                toy.gate[h] = 0
                brute[h] += (full - loss_fn(toy, x)).abs()
                toy.gate[h] = 1
    torch.testing.assert_close(scores, brute)
    assert not toy.gate.requires_grad  # gates are restored


def test_head_importance_is_the_gradient_of_the_loss(minilm, batch):
    torch.manual_seed(0)
    small = tr.MiniLM(vocab=50, hidden=16, layers=2, heads=4, ffn=8).double().eval()
    ids = torch.randint(1, 50, (3, 6))
    mask = torch.ones_like(ids)
    readout = torch.randn(16, dtype=torch.double)

    def loss_fn(model, b):
        return torch.tanh(tr.mean_pool(model(*b), b[1]) @ readout).sum()

    scores = tr.head_importance(small, [(ids, mask)], loss_fn, normalize=False)
    eps = 1e-6
    for layer, head in [(0, 1), (1, 3)]:
        gate = small.layers[layer].head_gate
        with torch.no_grad():
            gate[head] += eps
            up = loss_fn(small, (ids, mask))
            gate[head] -= 2 * eps
            down = loss_fn(small, (ids, mask))
            gate[head] += eps
        assert abs(scores[layer, head] - abs(up - down) / (2 * eps)) < 1e-6
    normalized = tr.head_importance(small, [(ids, mask)], loss_fn)
    torch.testing.assert_close(normalized.norm(dim=1), torch.ones(2, dtype=torch.double))
    assert tr.ffn_importance(small, [(ids, mask)], loss_fn).shape == (2, 8)
    assert tr.head_weight_norms(small).shape == (2, 4)


def test_cut_layer_indices_must_be_integers():
    torch.manual_seed(0)
    small = tr.MiniLM(vocab=50, hidden=16, layers=2, heads=4, ffn=8)
    assert tr.cut_heads(small, {np.int64(1): [0, 2]}).layers[1].heads == 2
    with pytest.raises(TypeError, match="keep's layer index must be an integer, got float 0.0"):
        tr.cut_heads(small, {0.0: [1]})
    with pytest.raises(ValueError, match="keep has layer -1, the model has layers 0..1"):
        tr.cut_ffn_units(small, {-1: [1]})


def _probe_data(n=200, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    w = torch.randn(d, generator=g, dtype=torch.float64)
    y = (x @ w + 0.5 * torch.randn(n, generator=g, dtype=torch.float64) > 0).long()
    return x, y


def test_fit_probe_reaches_the_optimum_of_its_objective():
    x, y = _probe_data()
    state = torch.get_rng_state()
    probe = tr.fit_probe(x, y, l2=1e-2)
    assert torch.equal(state, torch.get_rng_state())  # the global generator is untouched
    assert probe.weight.dtype == torch.float64 and not probe.weight.requires_grad
    params = [p.detach().clone().requires_grad_(True) for p in (probe.weight, probe.bias)]
    loss = nn.functional.cross_entropy(x @ params[0].T + params[1], y) + 1e-2 * params[0].pow(2).sum()
    grads = torch.autograd.grad(loss, params)
    assert max(g.abs().max().item() for g in grads) < 1e-5  # stationary: the convex optimum
    # a converged probe does not depend on its starting point
    other = tr.fit_probe(x, y, l2=1e-2, seed=1)
    assert torch.allclose(other.weight, probe.weight, atol=1e-4)
    assert (probe(x).argmax(1) == y).float().mean() > 0.8


def test_fit_probe_rejects_bad_input():
    x, y = _probe_data(n=10)
    with pytest.raises(ValueError, match="labels"):
        tr.fit_probe(x, y[:5])
    with pytest.raises(ValueError, match="labels"):
        tr.fit_probe(x, y.float())
    with pytest.raises(ValueError, match="features"):
        tr.fit_probe(x.long(), y)
    with pytest.raises(ValueError, match="l2"):
        tr.fit_probe(x, y, l2=-1.0)
    with pytest.raises(ValueError, match="max_iter"):
        tr.fit_probe(x, y, max_iter=0)
